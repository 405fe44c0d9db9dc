-- The admin API finds a user's thread by PSID alone when neither `?page=` nor FB_PAGE_ID
-- names the Page (the primary key leads with page_id).
CREATE INDEX threads_psid ON threads (psid);

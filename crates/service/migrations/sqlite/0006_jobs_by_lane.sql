-- A thread's jobs are found by their lanes (`jobs_thread`: thread_key, status, ord), which
-- name the thread. This index kept the same rows a second time, and each job moved in it
-- three times (queued, claimed, finished) at a random place: a third of the store's write
-- work per webhook event.
DROP INDEX jobs_page_psid;

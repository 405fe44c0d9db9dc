//! The admin API's and page's pure parts: query parameters read into typed values (each
//! problem names its field), the JSON shapes of threads and jobs with what looks stuck, and
//! the page with its Content-Security-Policy. The handlers are in `routes/admin.rs`.

pub mod page;
pub mod query;
pub mod view;

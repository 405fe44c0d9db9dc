//! The job queue's worker: it claims due jobs, runs them and records how they ended.

pub mod backoff;
pub mod payload;
pub mod run;
pub mod sync_contexts;
pub mod worker;

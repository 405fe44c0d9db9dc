//! The job queue's worker: it claims due jobs, runs them and records how they ended.

pub mod backoff;
mod notify;
pub mod run;
mod settle;
pub mod worker;

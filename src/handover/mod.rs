//! The conversation state machine and its policies, as pure functions: no I/O here.

pub mod machine;
pub mod text;
pub mod thread;

pub use machine::{Decision, Failure, Input, Owner, Policy, WelcomePlan, decide, welcome_plan};
pub use thread::{ReturnReason, State, Thread};

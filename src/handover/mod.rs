//! The conversation state machine and its policies, as pure functions: no I/O here.

pub mod machine;
pub mod text;
pub mod thread;

pub use machine::{
    CallOutcome, Decision, Failure, Input, Owner, OwnerCheck, Policy, WelcomePlan, call_metadata,
    decide, welcome_plan,
};
pub use thread::{ReturnReason, State, Thread};

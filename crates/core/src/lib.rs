//! The pure core of messenger-handover: the conversation state machine, its policies and the
//! types it speaks (threads, events, the jobs it asks for). No I/O here: no clock, no
//! network, no store; the service feeds it inputs and carries out its decisions.

pub mod contexts;
pub mod event;
pub mod jobs;
pub mod machine;
pub mod text;
pub mod thread;
pub mod time;
pub mod turns;

pub use machine::{
    CallOutcome, Decision, Failure, Input, NotifyPolicy, Owner, OwnerCheck, Policy, WelcomePlan,
    call_metadata, cancelled_by_return, decide, welcome_plan,
};
pub use thread::{ReturnReason, State, Thread};

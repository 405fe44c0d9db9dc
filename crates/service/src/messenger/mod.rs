//! The Messenger Platform side: webhook events, signatures and the Graph API client.

pub mod graph;
pub mod signature;
pub mod webhook;

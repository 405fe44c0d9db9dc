//! The Dialogflow side: fulfillment webhook types, the REST API client and Google auth.

pub mod api;
pub mod auth;
pub mod webhook;

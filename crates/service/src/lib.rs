//! messenger-handover: hands a Dialogflow Messenger bot's conversation to the Facebook Page
//! Inbox and reliably takes it back, with the bot's Dialogflow contexts synced on return.

pub mod admin;
pub mod allocator;
pub mod app;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod dialogflow;
pub mod doctor;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod jobs;
pub mod limits;
pub mod messenger;
pub mod metrics;
pub mod notify;
#[cfg(feature = "otel")]
pub mod otel;
#[cfg(test)]
mod properties;
pub mod routes;
pub mod secret;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod tls;

/// Unit tests build HTTP clients directly: install the TLS provider before any test runs.
#[cfg(test)]
#[ctor::ctor(unsafe)]
fn install_tls_for_unit_tests() {
    tls::install();
}

pub mod app;
pub mod chaos;
pub mod db;
pub mod emulated;
pub mod google;
pub mod graph_api;
pub mod mocks;
pub mod process;
pub mod storm;

/// Tests build HTTP clients directly: install the one TLS provider (rustls with ring) before
/// any test runs, as the service's own startup does.
#[ctor::ctor(unsafe)]
fn install_tls() {
    messenger_handover::tls::install();
}

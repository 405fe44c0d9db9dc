//! The one TLS provider: rustls with ring, installed process-wide.
//!
//! reqwest is built without a provider of its own (so aws-lc-rs, a long C build, is not
//! compiled), so every process installs ring before building an HTTP client. Installing it
//! again is a no-op.

/// Installs ring as rustls' process-wide crypto provider, once.
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only if another provider was installed first, which works as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

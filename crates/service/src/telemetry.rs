//! Logging: JSON lines (default) or human-readable, filtered by `RUST_LOG`.
//!
//! What each HTTP request adds (its span and its one log line) is in `routes::observe`.

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global subscriber once, writing to stderr; later calls (tests) are ignored.
pub fn init(format: LogFormat, filter: &str) {
    let _ = subscriber(format, filter, std::io::stderr).try_init();
}

/// The subscriber `init` installs, writing to `writer` (tests capture the logs with it).
pub fn subscriber<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let mut filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // These crates log request URLs or token responses at debug level, and Graph API URLs
    // carry the access token: they are capped whatever RUST_LOG says.
    for directive in [
        "yup_oauth2=warn",
        "reqwest=info",
        "hyper=info",
        "hyper_util=info",
    ] {
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .finish(),
        ),
        LogFormat::Pretty => Box::new(builder.finish()),
    }
}

//! Logging: JSON lines (default) or human-readable, filtered by `RUST_LOG`.
//!
//! What each HTTP request adds (its span and its one log line) is in `routes::observe`.

use tracing::Subscriber;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global subscriber once, writing to stderr; later calls (tests) are ignored.
/// `pretty` lines are coloured only when stderr is a terminal (not in a file, a pipe or a
/// log collector).
pub fn init(format: LogFormat, filter: &str) {
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = build(format, filter, std::io::stderr, colour).try_init();
}

/// The subscriber `init` installs, writing to `writer` without colour (tests capture the logs
/// with it).
pub fn subscriber<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    build(format, filter, writer, false)
}

fn build<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
    colour: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // `target=level` directives and a default level (`Targets`: no regex engine to build;
    // span and field filters are not needed here). An unreadable filter falls back to info.
    let mut filter = filter
        .parse::<Targets>()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO));
    // These crates log request URLs or token responses at debug level, and Graph API URLs
    // carry the access token: they are capped whatever RUST_LOG says.
    for target in ["reqwest", "hyper", "hyper_util"] {
        let level = filter.iter().find(|(t, _)| *t == target).map(|(_, l)| l);
        let capped = level.map_or(LevelFilter::INFO, |l| l.min(LevelFilter::INFO));
        filter = filter.with_target(target, capped);
    }
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .finish()
                .with(filter),
        ),
        LogFormat::Pretty => Box::new(builder.with_ansi(colour).finish().with(filter)),
    }
}

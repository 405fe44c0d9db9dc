//! Logging: JSON lines as Google Cloud Logging reads them (default) or human-readable,
//! filtered by `RUST_LOG`; and the pseudonyms that stand for users in logs.
//!
//! A JSON line is one object: `time` (RFC 3339), `severity` (`DEBUG`, `INFO`, `WARNING`,
//! `ERROR`), `message`, `target`, then the fields of every span the event is in (outermost
//! first: a job's `job`, `kind`, `thread`, `attempt`; a request's `method`, `path`, …) and
//! the event's own fields, which win on a clash. A request's trace id becomes
//! `logging.googleapis.com/trace` (`projects/P/traces/T`) when `GOOGLE_CLOUD_PROJECT` is set,
//! which Cloud Logging links to Cloud Trace; without it, a plain `trace_id` field.
//!
//! What each HTTP request adds (its span and its one log line) is in `routes::observe`.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use sha2::Sha256;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// The field a span or event carries a request's trace id in (`routes::observe`).
pub const TRACE_ID: &str = "trace_id";

/// Installs the global subscriber once, writing to stderr; later calls (tests) are ignored.
/// `project`: `GOOGLE_CLOUD_PROJECT`, for the trace field; `otlp`:
/// `OTEL_EXPORTER_OTLP_ENDPOINT`, where spans are exported to (cargo feature `otel`).
/// `pretty` lines are coloured only when stderr is a terminal (not in a file, a pipe or a log
/// collector).
pub fn init(format: LogFormat, filter: &str, project: Option<&str>, otlp: Option<&str>) {
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = build(format, filter, project, otlp, std::io::stderr, colour).try_init();
    if otlp.is_some() && !cfg!(feature = "otel") {
        tracing::warn!(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set, but this build exports no traces: build with `--features otel`"
        );
    }
}

/// The subscriber `init` installs, writing to `writer` (tests capture the logs with it).
pub fn subscriber<W>(
    format: LogFormat,
    filter: &str,
    project: Option<&str>,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    build(format, filter, project, None, writer, false)
}

fn build<W>(
    format: LogFormat,
    filter: &str,
    project: Option<&str>,
    otlp: Option<&str>,
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
    // carry the access token; the PostgreSQL driver logs every statement's parameters (users'
    // ids and messages) at debug level: they are capped whatever RUST_LOG says.
    for target in [
        "reqwest",
        "hyper",
        "hyper_util",
        "tokio_postgres",
        "postgres",
    ] {
        let level = filter.iter().find(|(t, _)| *t == target).map(|(_, l)| l);
        let capped = level.map_or(LevelFilter::INFO, |l| l.min(LevelFilter::INFO));
        filter = filter.with_target(target, capped);
    }
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(writer);
    match format {
        LogFormat::Json => {
            let fmt = builder
                .fmt_fields(JsonFields::new())
                .event_format(CloudJson {
                    project: project.map(str::to_owned),
                })
                .finish();
            with_export(fmt, otlp, filter)
        }
        LogFormat::Pretty => with_export(builder.with_ansi(colour).finish(), otlp, filter),
    }
}

/// `subscriber` with the trace exporter (feature `otel`, when an endpoint is set) and
/// `filter`, which both obey.
fn with_export<S>(
    subscriber: S,
    otlp: Option<&str>,
    filter: Targets,
) -> Box<dyn Subscriber + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    #[cfg(feature = "otel")]
    let export = otlp.and_then(|endpoint| {
        crate::otel::layer(endpoint)
            .map_err(|e| eprintln!("traces are not exported: {e}"))
            .ok()
    });
    #[cfg(not(feature = "otel"))]
    let export: Option<tracing_subscriber::layer::Identity> = {
        let _ = otlp; // said by `init`
        None
    };
    Box::new(subscriber.with(export).with(filter))
}

/// Cloud Logging's name for a level (it has no TRACE).
fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// The JSON line format. Hand-written: `tracing-subscriber`'s JSON format has no `severity`
/// and nests span fields under `spans`; `tracing-stackdriver` takes the trace only from
/// OpenTelemetry and keeps span fields apart too.
struct CloudJson {
    project: Option<String>,
}

impl<S> FormatEvent<S, JsonFields> for CloudJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let mut line = Line::default();
        line.set("time", Value::String(time));
        line.set("severity", severity(meta.level()).into());
        line.set("message", Value::Null);
        line.set("target", meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<JsonFields>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                    for (key, value) in fields {
                        line.set(&key, value);
                    }
                }
            }
        }
        event.record(&mut line);
        line.remove_null("message");
        if let Some(Value::String(trace)) = line.take(TRACE_ID) {
            match &self.project {
                Some(p) => line.set(
                    "logging.googleapis.com/trace",
                    format!("projects/{p}/traces/{trace}").into(),
                ),
                None => line.set(TRACE_ID, trace.into()),
            }
        }
        let json = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{json}")
    }
}

/// A log line's fields in order; setting a field again replaces its value in place.
#[derive(Default)]
struct Line(Vec<(String, Value)>);

impl Line {
    fn set(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, slot)) => *slot = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(at).1)
    }

    fn remove_null(&mut self, key: &str) {
        self.0.retain(|(k, v)| k != key || !v.is_null());
    }
}

impl Serialize for Line {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Line {
    /// Events bridged from the `log` crate carry their origin in `log.*` fields: its target
    /// is the line's target, the rest (file, line, module) is left out.
    fn field(&mut self, field: &Field, value: Value) {
        match field.name() {
            "log.target" => self.set("target", value),
            name if name.starts_with("log.") => {}
            name => self.set(name, value),
        }
    }
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, value.to_string().into());
    }
}

/// The trace id of a request: from a W3C `traceparent` header
/// (`00-{32 hex}-{16 hex}-{2 hex}`), else from Google's `X-Cloud-Trace-Context`
/// (`{32 hex}/{span};o=1`). Anything else is ignored: a client cannot put text of its
/// choosing in the logs this way.
pub fn trace_id(traceparent: Option<&str>, cloud_trace: Option<&str>) -> Option<String> {
    let w3c = traceparent.and_then(|v| {
        let mut parts = v.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let valid = version.len() == 2
            && version != "ff"
            && is_hex(version)
            && is_trace_id(trace)
            && span.len() == 16
            && is_hex(span)
            && flags.len() == 2
            && is_hex(flags)
            && (version != "00" || parts.next().is_none());
        valid.then(|| trace.to_owned())
    });
    w3c.or_else(|| {
        let trace = cloud_trace?.trim().split('/').next()?;
        is_trace_id(trace).then(|| trace.to_ascii_lowercase())
    })
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// 32 hex digits (lowercase in `traceparent`, either case from Google), not all zero.
fn is_trace_id(s: &str) -> bool {
    s.len() == 32 && is_hex(s) && s.bytes().any(|b| b != b'0')
}

/// Stand-ins for users in logs: a user's id (a PSID) is never logged, only a keyed hash of
/// it. The key is derived from a secret the deployment already has (`FB_APP_SECRET`), so a
/// user keeps one pseudonym across lines, replicas and restarts of a deployment, and someone
/// with the logs but not the secret cannot test a guessed PSID against them.
#[derive(Clone)]
pub struct Pseudonyms {
    key: [u8; 32],
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl Pseudonyms {
    /// The derivation's label: a key for this use only, never the secret itself.
    const LABEL: &'static [u8] = b"messenger-handover log pseudonyms v1";

    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac(secret, Self::LABEL),
        }
    }

    /// A user's pseudonym: HMAC-SHA256 of the id, 16 hex digits.
    pub fn user(&self, user_id: &str) -> String {
        let mut hex = hex::encode(hmac(&self.key, user_id.as_bytes()));
        hex.truncate(16);
        hex
    }

    /// A thread as logged: `{account}/{user's pseudonym}` (the account, a Page id, is the
    /// business's, not a person's).
    pub fn thread(&self, account_id: &str, user_id: &str) -> String {
        format!("{account_id}/{}", self.user(user_id))
    }
}

impl fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonyms([redacted])")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects everything a subscriber writes (also used by the route tests).
    #[derive(Clone, Default)]
    pub(crate) struct Captured(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(project: Option<&str>, f: impl FnOnce()) -> Vec<serde_json::Map<String, Value>> {
        let logs = Captured::default();
        let sink = logs.clone();
        let subscriber = subscriber(LogFormat::Json, "debug", project, move || sink.clone());
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| match serde_json::from_str(l) {
                Ok(Value::Object(m)) => m,
                _ => panic!("not a JSON object: {l}"),
            })
            .collect()
    }

    #[test]
    fn lines_carry_severity_and_every_span_field() {
        let got = lines(None, || {
            let request = tracing::info_span!("request", method = "POST", trace_id = "abc");
            let _r = request.enter();
            let job = tracing::info_span!("job", job = 7, kind = "take", thread = "p/1f2e");
            let _j = job.enter();
            tracing::warn!(
                endpoint = "take_thread_control",
                kind = "mine",
                "call failed"
            );
            tracing::trace!("not at debug");
            tracing::debug!(n = 1.5, ok = true, "detail");
        });
        assert_eq!(got.len(), 2, "{got:?}");
        let warn = &got[0];
        assert_eq!(warn["severity"], "WARNING");
        assert_eq!(warn["message"], "call failed");
        assert_eq!(warn["job"], 7);
        assert_eq!(warn["thread"], "p/1f2e");
        assert_eq!(warn["method"], "POST");
        assert_eq!(warn["kind"], "mine", "the event's own field wins");
        assert_eq!(warn["trace_id"], "abc");
        assert!(warn["time"].as_str().unwrap().ends_with('Z'), "{warn:?}");
        let keys: Vec<&str> = warn.keys().map(String::as_str).collect();
        assert!(
            !keys.contains(&"level") && !keys.contains(&"spans"),
            "{keys:?}"
        );
        assert_eq!(got[1]["severity"], "DEBUG");
        assert_eq!(got[1]["n"], 1.5);
        assert_eq!(got[1]["ok"], true);
    }

    #[test]
    fn the_trace_goes_where_cloud_logging_reads_it_when_the_project_is_known() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let got = lines(Some("shop-prod"), || {
            tracing::info!(trace_id = trace, status = 200u16, "request");
            tracing::info!("no trace");
        });
        assert_eq!(
            got[0]["logging.googleapis.com/trace"],
            format!("projects/shop-prod/traces/{trace}")
        );
        assert!(!got[0].contains_key("trace_id"));
        assert_eq!(got[0]["severity"], "INFO");
        assert!(!got[1].contains_key("logging.googleapis.com/trace"));
    }

    #[test]
    fn trace_ids_come_from_traceparent_or_the_cloud_header_and_nothing_else() {
        let t = "4bf92f3577b34da6a3ce929d0e0e4736";
        let parent = format!("00-{t}-00f067aa0ba902b7-01");
        assert_eq!(trace_id(Some(&parent), None).as_deref(), Some(t));
        let cloud = "105445AA7843BC8BF206B12000100000/1;o=1";
        assert_eq!(
            trace_id(Some(&parent), Some(cloud)).as_deref(),
            Some(t),
            "traceparent first"
        );
        assert_eq!(
            trace_id(None, Some(cloud)).as_deref(),
            Some("105445aa7843bc8bf206b12000100000")
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "00-\"},\"severity\":\"ERROR-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id(Some(bad), None), None, "{bad}");
        }
        assert_eq!(trace_id(None, Some("not-a-trace/1;o=1")), None);
        assert_eq!(trace_id(None, None), None);
    }

    #[test]
    fn pseudonyms_are_keyed_stable_and_short() {
        let a = Pseudonyms::new(b"app-secret");
        let psid = "1534862223272449";
        let p = a.user(psid);
        assert_eq!(p.len(), 16);
        assert!(is_hex(&p) && !p.contains(psid));
        assert_eq!(p, Pseudonyms::new(b"app-secret").user(psid), "stable");
        assert_ne!(p, Pseudonyms::new(b"other-secret").user(psid), "keyed");
        assert_ne!(p, a.user("1534862223272450"));
        assert_eq!(
            a.thread("958823367603818", psid),
            format!("958823367603818/{p}")
        );
        // The documented derivation, computed independently.
        let key = hmac(b"app-secret", b"messenger-handover log pseudonyms v1");
        assert_eq!(p, hex::encode(hmac(&key, psid.as_bytes()))[..16]);
        assert_eq!(format!("{a:?}"), "Pseudonyms([redacted])");
    }
}

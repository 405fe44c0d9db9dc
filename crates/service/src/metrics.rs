//! What `/metrics` shows (Prometheus text format): counters, gauges and latency histograms,
//! recorded through the `metrics` facade into a `metrics-exporter-prometheus` recorder.
//!
//! Each [`Metrics`] owns its recorder (no global one): the tests run many apps in one process,
//! and each app's `/metrics` shows only its own numbers. Recording goes through
//! [`metrics::with_local_recorder`], which is synchronous, so it never spans an `.await`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::http::Method;
use handover_core::Decision;
use handover_core::jobs::{JobKind, NoticeEvent};
use handover_core::machine::{Cause, Direction};
use metrics::{
    Recorder, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram, with_local_recorder,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use strum::IntoEnumIterator;

const WEBHOOK_DELIVERIES: &str = "handover_webhook_deliveries_total";
const WEBHOOK_EVENTS: &str = "handover_webhook_events_total";
const WEBHOOK_EVENTS_REFUSED: &str = "handover_webhook_events_refused_total";
const WEBHOOK_FIELDS_TRUNCATED: &str = "handover_webhook_fields_truncated_total";
const WEBHOOK_EVENT_KINDS: &str = "handover_webhook_events_by_kind_total";
const FULFILLMENT_REQUESTS: &str = "handover_fulfillment_requests_total";
const JOBS_FINISHED: &str = "handover_jobs_finished_total";
const GRAPH_CALLS: &str = "handover_graph_calls_total";
const DIALOGFLOW_CALLS: &str = "handover_dialogflow_calls_total";
const GRAPH_ERRORS: &str = "handover_graph_errors_total";
const DIALOGFLOW_ERRORS: &str = "handover_dialogflow_errors_total";
const NOTIFICATIONS: &str = "handover_notifications_total";
const HANDOVERS: &str = "handover_handovers_total";
const HUMAN_STAY: &str = "handover_human_stay_seconds";
const THREADS: &str = "handover_threads";
const JOBS: &str = "handover_jobs";
const JOBS_DUE: &str = "handover_jobs_due";
const OLDEST_DUE: &str = "handover_oldest_due_job_age_seconds";
const BUILD_INFO: &str = "handover_build_info";
const HTTP_DURATION: &str = "handover_http_request_duration_seconds";
const GRAPH_DURATION: &str = "handover_graph_call_duration_seconds";
const DIALOGFLOW_DURATION: &str = "handover_dialogflow_call_duration_seconds";

/// Upper bounds (seconds) of every latency histogram's buckets: from a local answer (ms) to
/// an upstream call that ran into `HTTP_TIMEOUT_MS` (10 s by default).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds (seconds) of the time-with-a-human histogram: a minute to a week (Messenger
/// gives an inactive thread back after a day; the reconciler checks `HUMAN` for up to a week).
const HUMAN_STAY_BUCKETS: &[f64] = &[
    60.0, 300.0, 900.0, 1_800.0, 3_600.0, 7_200.0, 14_400.0, 28_800.0, 86_400.0, 172_800.0,
    604_800.0,
];

/// The outcomes of a job (`jobs::settle::Outcome`, and a store error), set to 0 at start.
const JOB_OUTCOMES: &[&str] = &[
    "done",
    "skipped",
    "retry",
    "failed",
    "lost_lease",
    "store_error",
];

/// The results of a `POST /messenger` delivery, set to 0 at start.
const DELIVERY_RESULTS: &[&str] = &[
    "stored",
    "bad_signature",
    "bad_json",
    "not_page",
    "too_large",
    "store_error",
];

/// The outcomes of webhook events, set to 0 at start.
const EVENT_OUTCOMES: &[&str] = &["stored", "duplicate", "ignored", "refused"];

/// The outcomes of a `POST /fulfillment` call, set to 0 at start.
const FULFILLMENT_OUTCOMES: &[&str] = &[
    "handover",
    "return",
    "passthrough",
    "no_messenger_user",
    "unauthorized",
    "bad_request",
    "store_error",
];

/// The results of an agent notification's POST, set to 0 at start: taken by the endpoint,
/// to be tried again, given up (a dead letter).
pub const NOTIFICATION_RESULTS: &[&str] = &["sent", "retry", "failed"];

/// The label value of events whose kinds cannot be told apart (below).
pub const MIXED: &str = "mixed";

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The route label of a request that matched no route (never the raw path: unbounded).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// One app's metrics. Cheap to clone (the clones share the recorder).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

/// A metric name and its labels.
type Series = (&'static str, Vec<(&'static str, String)>);

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Store gauge series set by earlier scrapes: a series that is gone from the store is
    /// set to 0 rather than left at its last value.
    store_series: Mutex<HashSet<Series>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        // Cannot fail: the buckets are a non-empty constant (the fallback renders summaries).
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(HUMAN_STAY.into()), HUMAN_STAY_BUCKETS)
            })
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        with_local_recorder(&recorder, || {
            describe_counter!(WEBHOOK_DELIVERIES, "Messenger webhook deliveries by result");
            describe_counter!(WEBHOOK_EVENTS, "Messenger webhook events by outcome");
            describe_counter!(
                WEBHOOK_EVENTS_REFUSED,
                "Messenger webhook events not stored (malformed), by reason"
            );
            describe_counter!(
                WEBHOOK_FIELDS_TRUNCATED,
                "Messenger webhook event fields stored cut to their cap, by field"
            );
            describe_counter!(
                WEBHOOK_EVENT_KINDS,
                "Messenger webhook events by kind, channel (messaging, standby) and outcome"
            );
            describe_counter!(
                GRAPH_ERRORS,
                "Failed Graph API requests by endpoint, error code and subcode"
            );
            describe_counter!(
                DIALOGFLOW_ERRORS,
                "Failed Dialogflow API requests by operation and HTTP status"
            );
            describe_counter!(
                NOTIFICATIONS,
                "Agent notifications (NOTIFY_WEBHOOK_URL) by event and result (sent, retry, failed)"
            );
            describe_counter!(
                HANDOVERS,
                "Handovers by direction (to_human, to_bot) and cause"
            );
            describe_histogram!(
                HUMAN_STAY,
                Unit::Seconds,
                "How long a conversation stayed with a human, observed when it left HUMAN"
            );
            describe_gauge!(JOBS_DUE, "Pending jobs whose time has come");
            describe_gauge!(
                OLDEST_DUE,
                "How long the oldest due pending job has waited (0 when none)"
            );
            describe_gauge!(BUILD_INFO, "Always 1; the version of the running service");
            describe_counter!(
                FULFILLMENT_REQUESTS,
                "Dialogflow fulfillment calls by outcome"
            );
            describe_counter!(JOBS_FINISHED, "Jobs run by kind and outcome");
            describe_counter!(GRAPH_CALLS, "Graph API calls by endpoint and result");
            describe_counter!(
                DIALOGFLOW_CALLS,
                "Dialogflow API calls by operation and result"
            );
            describe_gauge!(THREADS, "Conversations by state");
            describe_gauge!(JOBS, "Jobs in the store by kind and status");
            describe_histogram!(
                HTTP_DURATION,
                Unit::Seconds,
                "Time to answer an HTTP request, by route pattern, method and status"
            );
            describe_histogram!(
                GRAPH_DURATION,
                Unit::Seconds,
                "Time of one Graph API request, by endpoint"
            );
            describe_histogram!(
                DIALOGFLOW_DURATION,
                Unit::Seconds,
                "Time of one Dialogflow API request, by operation"
            );
        });
        let metrics = Self {
            inner: Arc::new(Inner {
                recorder,
                handle,
                store_series: Mutex::default(),
            }),
        };
        metrics.set_known_series_to_zero();
        metrics
    }

    /// Every counter series whose labels are known in advance exists from the start, at 0: a
    /// series that appears with its first event would make `increase()` miss that event, so an
    /// alert on the first dead letter or signature failure would never fire.
    fn set_known_series_to_zero(&self) {
        for kind in JobKind::iter() {
            for outcome in JOB_OUTCOMES {
                self.add(
                    JOBS_FINISHED,
                    &[("kind", kind.as_str()), ("outcome", outcome)],
                    0,
                );
            }
        }
        for result in DELIVERY_RESULTS {
            self.add(WEBHOOK_DELIVERIES, &[("result", result)], 0);
        }
        for outcome in EVENT_OUTCOMES {
            self.add(WEBHOOK_EVENTS, &[("outcome", outcome)], 0);
        }
        for outcome in FULFILLMENT_OUTCOMES {
            self.add(FULFILLMENT_REQUESTS, &[("outcome", outcome)], 0);
        }
        for direction in Direction::ALL {
            for cause in Cause::all_for(direction) {
                let labels = [("direction", direction.as_str()), ("cause", cause.as_str())];
                self.add(HANDOVERS, &labels, 0);
            }
        }
        for event in NoticeEvent::iter() {
            for result in NOTIFICATION_RESULTS {
                self.add(
                    NOTIFICATIONS,
                    &[("event", event.as_str()), ("result", result)],
                    0,
                );
            }
        }
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        self.record(|| gauge!(BUILD_INFO, &version).set(1.0));
    }

    fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        with_local_recorder(&self.inner.recorder as &dyn Recorder, f)
    }

    fn add(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        let labels: Vec<(&'static str, String)> =
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        self.record(|| counter!(name, &labels).increment(n));
    }

    /// A `POST /messenger` delivery ended with `result` (`stored`, `bad_signature`, …).
    pub fn webhook_delivery(&self, result: &str) {
        self.add(WEBHOOK_DELIVERIES, &[("result", result)], 1);
    }

    /// `n` events of one delivery ended with `outcome` (`stored`, `duplicate`, `ignored`).
    pub fn webhook_events(&self, outcome: &str, n: u64) {
        self.add(WEBHOOK_EVENTS, &[("outcome", outcome)], n);
    }

    /// An event of a delivery was not stored: `reason` (`no_user`, `bad_user_id`, …).
    pub fn webhook_event_refused(&self, reason: &str) {
        self.add(WEBHOOK_EVENTS_REFUSED, &[("reason", reason)], 1);
    }

    /// A field of an event (`text`, `payload`, `title`, `metadata`) was stored cut.
    pub fn webhook_field_truncated(&self, field: &str) {
        self.add(WEBHOOK_FIELDS_TRUNCATED, &[("field", field)], 1);
    }

    /// A `POST /fulfillment` call ended with `outcome` (`handover`, `unauthorized`, …).
    pub fn fulfillment_request(&self, outcome: &str) {
        self.add(FULFILLMENT_REQUESTS, &[("outcome", outcome)], 1);
    }

    /// The events of one stored delivery, by kind and channel: `stored` of them new,
    /// `duplicates` already stored. The store counts both for the delivery as a whole, so when
    /// the delivery mixes kinds and only some events were duplicates the kinds cannot be told
    /// apart: those are counted with kind and channel `mixed` (the totals stay exact).
    pub fn webhook_events_ingested(
        &self,
        events: &[(&'static str, &'static str)],
        stored: usize,
        duplicates: usize,
    ) {
        let one_kind = events.windows(2).all(|w| w[0] == w[1]);
        if duplicates == 0 || stored == 0 {
            let outcome = if duplicates == 0 {
                "stored"
            } else {
                "duplicate"
            };
            self.webhook_events_as(events, outcome);
        } else if let (true, Some(&(kind, channel))) = (one_kind, events.first()) {
            let labels = |outcome| [("kind", kind), ("channel", channel), ("outcome", outcome)];
            self.add(WEBHOOK_EVENT_KINDS, &labels("stored"), stored as u64);
            self.add(WEBHOOK_EVENT_KINDS, &labels("duplicate"), duplicates as u64);
        } else {
            let labels = |outcome| [("kind", MIXED), ("channel", MIXED), ("outcome", outcome)];
            self.add(WEBHOOK_EVENT_KINDS, &labels("stored"), stored as u64);
            self.add(WEBHOOK_EVENT_KINDS, &labels("duplicate"), duplicates as u64);
        }
    }

    /// Events, by kind and channel, that all ended with `outcome` (`ignored`: not worth
    /// storing; `refused`: the store failed, so the delivery was refused and Meta retries it).
    pub fn webhook_events_as(&self, events: &[(&'static str, &'static str)], outcome: &str) {
        for (kind, channel) in events {
            let labels = [("kind", *kind), ("channel", *channel), ("outcome", outcome)];
            self.add(WEBHOOK_EVENT_KINDS, &labels, 1);
        }
    }

    /// A decision was stored: the handover it started and the stay with a human it ended.
    pub fn decision(&self, d: &Decision) {
        if let Some(h) = d.handover {
            let labels = [
                ("direction", h.direction.as_str()),
                ("cause", h.cause.as_str()),
            ];
            self.add(HANDOVERS, &labels, 1);
        }
        if let Some(ms) = d.human_stay_ms {
            let seconds = ms as f64 / 1000.0;
            self.record(|| histogram!(HUMAN_STAY).record(seconds));
        }
    }

    /// A Graph API request failed: Meta's error `code` and `subcode` (`none` when the answer
    /// had none), or for a failure without an answer from Meta the kind of failure as the code
    /// (`timeout`, `connect`, `transport`, `decode`, `http_{status}`).
    pub fn graph_error(&self, endpoint: &str, code: &str, subcode: &str) {
        let labels = [("endpoint", endpoint), ("code", code), ("subcode", subcode)];
        self.add(GRAPH_ERRORS, &labels, 1);
    }

    /// A Dialogflow API request failed with HTTP `status` (or `timeout`, `transport`, `auth`).
    pub fn dialogflow_error(&self, operation: &str, status: &str) {
        let labels = [("operation", operation), ("status", status)];
        self.add(DIALOGFLOW_ERRORS, &labels, 1);
    }

    pub fn job_finished(&self, kind: &str, outcome: &str) {
        self.add(JOBS_FINISHED, &[("kind", kind), ("outcome", outcome)], 1);
    }

    pub fn graph_call(&self, endpoint: &str, result: &str) {
        self.add(
            GRAPH_CALLS,
            &[("endpoint", endpoint), ("result", result)],
            1,
        );
    }

    /// An agent notification's POST ended (`result`: one of [`NOTIFICATION_RESULTS`]).
    pub fn notification(&self, event: NoticeEvent, result: &str) {
        self.add(
            NOTIFICATIONS,
            &[("event", event.as_str()), ("result", result)],
            1,
        );
    }

    pub fn dialogflow_call(&self, operation: &str, result: &str) {
        self.add(
            DIALOGFLOW_CALLS,
            &[("operation", operation), ("result", result)],
            1,
        );
    }

    /// An HTTP request was answered. `route` is the matched pattern ([`UNMATCHED_ROUTE`] for
    /// none), never the raw path or the query.
    pub fn http_request(&self, route: &str, method: &Method, status: u16, took: Duration) {
        let labels = [
            ("route", route.to_owned()),
            ("method", method_label(method).to_owned()),
            ("status", status.to_string()),
        ];
        self.record(|| histogram!(HTTP_DURATION, &labels).record(took));
    }

    /// Times one Graph API request until the returned guard is dropped.
    pub fn time_graph_request(&self, endpoint: &'static str) -> CallTimer {
        CallTimer::new(self, GRAPH_DURATION, "endpoint", endpoint)
    }

    /// Times one Dialogflow API request until the returned guard is dropped.
    pub fn time_dialogflow_request(&self, operation: &'static str) -> CallTimer {
        CallTimer::new(self, DIALOGFLOW_DURATION, "operation", operation)
    }

    /// Sets `handover_threads{state}` from the store's counts.
    pub fn set_thread_counts(&self, counts: &[(String, i64)]) {
        let series = counts
            .iter()
            .map(|(state, n)| (vec![("state", state.clone())], *n));
        self.set_store_gauge(THREADS, series);
    }

    /// Sets `handover_jobs{kind,status}` from the store's counts.
    pub fn set_job_counts(&self, counts: &[(String, String, i64)]) {
        let series = counts.iter().map(|(kind, status, n)| {
            (vec![("kind", kind.clone()), ("status", status.clone())], *n)
        });
        self.set_store_gauge(JOBS, series);
    }

    /// Sets `handover_jobs_due` and `handover_oldest_due_job_age_seconds` from the store: the
    /// pending jobs due at `now` (epoch ms) and the due time of the oldest of them.
    pub fn set_due_jobs(&self, due: i64, oldest_run_at: Option<i64>, now: i64) {
        let age = oldest_run_at.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
        self.record(|| {
            gauge!(JOBS_DUE).set(due as f64);
            gauge!(OLDEST_DUE).set(age);
        });
    }

    /// Sets the series of one gauge read from the store. A series that an earlier scrape saw
    /// and the store no longer has (no thread left in that state) is set to 0.
    fn set_store_gauge(
        &self,
        name: &'static str,
        series: impl Iterator<Item = (Vec<(&'static str, String)>, i64)>,
    ) {
        // Held while setting, so concurrent scrapes cannot interleave their updates.
        let mut seen = self
            .inner
            .store_series
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut now = HashSet::new();
        self.record(|| {
            for (labels, n) in series {
                gauge!(name, &labels).set(n as f64);
                now.insert((name, labels));
            }
            for (_, labels) in seen.iter().filter(|s| s.0 == name && !now.contains(*s)) {
                gauge!(name, labels).set(0.0);
            }
        });
        seen.extend(now);
    }

    /// The Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        self.inner.handle.render()
    }

    /// Folds histogram samples into their buckets (also done by every render).
    pub fn run_upkeep(&self) {
        self.inner.handle.run_upkeep();
    }

    /// Runs [`Metrics::run_upkeep`] every [`UPKEEP_EVERY`], until aborted.
    pub async fn keep_up(self) {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            self.run_upkeep();
        }
    }

    /// The value of one counter as rendered, `labels` exactly as in the text
    /// (`kind="pass",outcome="done"`); 0 when absent. For tests and benchmarks.
    pub fn get(&self, name: &str, labels: &str) -> u64 {
        let series = format!("{name}{{{labels}}} ");
        self.render()
            .lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Records the time from its creation to its drop in a latency histogram: an outbound call is
/// timed however it ends (an answer, an error, or its caller giving up on it).
pub struct CallTimer {
    metrics: Metrics,
    name: &'static str,
    label: (&'static str, &'static str),
    started: Instant,
}

impl CallTimer {
    fn new(metrics: &Metrics, name: &'static str, key: &'static str, value: &'static str) -> Self {
        Self {
            metrics: metrics.clone(),
            name,
            label: (key, value),
            started: Instant::now(),
        }
    }
}

impl Drop for CallTimer {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        let labels = [self.label];
        self.metrics
            .record(|| histogram!(self.name, &labels).record(took));
    }
}

/// The standard methods by name, anything else as `other`: a label never takes a value a
/// client made up.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_render_in_prometheus_text_format() {
        let m = Metrics::new();
        m.job_finished("pass", "done");
        m.add(JOBS_FINISHED, &[("kind", "pass"), ("outcome", "done")], 2);
        m.set_thread_counts(&[("HUMAN".into(), 4)]);
        let text = m.render();
        assert!(text.contains("# HELP handover_jobs_finished_total Jobs run by kind and outcome"));
        assert!(text.contains("# TYPE handover_jobs_finished_total counter"));
        assert!(text.contains(r#"handover_jobs_finished_total{kind="pass",outcome="done"} 3"#));
        assert!(text.contains("# TYPE handover_threads gauge"));
        assert!(text.contains(r#"handover_threads{state="HUMAN"} 4"#));
        assert_eq!(
            m.get(JOBS_FINISHED, r#"kind="pass",outcome="done""#),
            3,
            "{text}"
        );
        assert_eq!(m.get(JOBS_FINISHED, r#"kind="take",outcome="done""#), 0);
    }

    #[test]
    fn a_store_series_that_is_gone_drops_to_zero() {
        let m = Metrics::new();
        m.set_thread_counts(&[("HUMAN".into(), 2), ("BOT".into(), 5)]);
        m.set_job_counts(&[("pass".into(), "pending".into(), 1)]);
        m.set_thread_counts(&[("BOT".into(), 6)]);
        m.set_job_counts(&[]);
        let text = m.render();
        assert!(
            text.contains(r#"handover_threads{state="HUMAN"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"handover_threads{state="BOT"} 6"#),
            "{text}"
        );
        assert!(
            text.contains(r#"handover_jobs{kind="pass",status="pending"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.graph_call("say \"hi\"\nback\\slash", "ok");
        let text = m.render();
        assert!(
            text.contains(
                r#"handover_graph_calls_total{endpoint="say \"hi\"\nback\\slash",result="ok"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn latency_histograms_have_buckets_and_bounded_labels() {
        let m = Metrics::new();
        let method = Method::from_bytes(b"BREW").unwrap();
        m.http_request("/messenger", &Method::POST, 200, Duration::from_millis(30));
        m.http_request(UNMATCHED_ROUTE, &method, 404, Duration::from_millis(1));
        drop(m.time_graph_request("pass_thread_control"));
        let timer = m.time_dialogflow_request("contexts.list");
        std::thread::sleep(Duration::from_millis(30));
        drop(timer);
        m.run_upkeep();
        let text = m.render();
        assert!(
            text.contains("# TYPE handover_http_request_duration_seconds histogram"),
            "{text}"
        );
        assert!(text.contains(
            r#"handover_http_request_duration_seconds_bucket{route="/messenger",method="POST",status="200",le="0.05"} 1"#
        ));
        assert!(text.contains(
            r#"handover_http_request_duration_seconds_bucket{route="/messenger",method="POST",status="200",le="0.025"} 0"#
        ));
        assert!(text.contains(
            r#"handover_http_request_duration_seconds_count{route="unmatched",method="other",status="404"} 1"#
        ));
        assert!(text.contains(
            r#"handover_graph_call_duration_seconds_bucket{endpoint="pass_thread_control",le="0.005"} 1"#
        ));
        assert!(text.contains(
            r#"handover_dialogflow_call_duration_seconds_bucket{operation="contexts.list",le="0.025"} 0"#
        ));
        assert!(text.contains(
            r#"handover_dialogflow_call_duration_seconds_bucket{operation="contexts.list",le="30"} 1"#
        ));
    }

    #[test]
    fn each_instance_counts_alone() {
        let (a, b) = (Metrics::new(), Metrics::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let a = a.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        a.fulfillment_request("handover");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        b.fulfillment_request("handover");
        assert_eq!(a.get(FULFILLMENT_REQUESTS, r#"outcome="handover""#), 400);
        assert_eq!(b.get(FULFILLMENT_REQUESTS, r#"outcome="handover""#), 1);
    }

    #[test]
    fn known_series_exist_at_zero_from_the_start() {
        let text = Metrics::new().render();
        for series in [
            r#"handover_jobs_finished_total{kind="take",outcome="failed"} 0"#,
            r#"handover_jobs_finished_total{kind="sync_contexts",outcome="retry"} 0"#,
            r#"handover_webhook_deliveries_total{result="bad_signature"} 0"#,
            r#"handover_webhook_events_total{outcome="refused"} 0"#,
            r#"handover_fulfillment_requests_total{outcome="unauthorized"} 0"#,
            r#"handover_handovers_total{direction="to_bot",cause="idle_timeout"} 0"#,
            r#"handover_handovers_total{direction="to_human",cause="inbox_request"} 0"#,
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
        let version = format!(
            r#"handover_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&version), "{text}");
        assert!(!text.contains(r#"direction="to_human",cause="idle_timeout""#));
    }

    #[test]
    fn webhook_events_by_kind_are_exact_or_mixed() {
        let m = Metrics::new();
        let msg = ("message", "standby");
        let echo = ("echo", "messaging");
        m.webhook_events_ingested(&[msg, echo], 2, 0);
        m.webhook_events_ingested(&[msg, echo], 0, 2);
        // One kind, some duplicates: still exact.
        m.webhook_events_ingested(&[msg, msg, msg], 2, 1);
        // Kinds mixed and some duplicates: which ones the store cannot say.
        m.webhook_events_ingested(&[msg, echo, echo], 1, 2);
        m.webhook_events_as(&[("read", "messaging")], "ignored");
        let get = |labels: &str| m.get(WEBHOOK_EVENT_KINDS, labels);
        assert_eq!(
            get(r#"kind="message",channel="standby",outcome="stored""#),
            3
        );
        assert_eq!(
            get(r#"kind="message",channel="standby",outcome="duplicate""#),
            2
        );
        assert_eq!(
            get(r#"kind="echo",channel="messaging",outcome="stored""#),
            1
        );
        assert_eq!(
            get(r#"kind="echo",channel="messaging",outcome="duplicate""#),
            1
        );
        assert_eq!(get(r#"kind="mixed",channel="mixed",outcome="stored""#), 1);
        assert_eq!(
            get(r#"kind="mixed",channel="mixed",outcome="duplicate""#),
            2
        );
        assert_eq!(
            get(r#"kind="read",channel="messaging",outcome="ignored""#),
            1
        );
    }

    #[test]
    fn handovers_and_the_time_with_a_human() {
        use handover_core::machine::Handover;
        use handover_core::{State, Thread};
        let m = Metrics::new();
        let mut d = Decision::set(Thread::new("p", "u", 0), "test", Vec::new());
        d.thread.state = State::Returning;
        d.handover = Some(Handover {
            direction: Direction::ToBot,
            cause: Cause::IdleTimeout,
        });
        d.human_stay_ms = Some(2 * 3_600_000 + 1);
        m.decision(&d);
        d.handover = None;
        d.human_stay_ms = Some(30_000);
        m.decision(&d);
        m.run_upkeep();
        let text = m.render();
        assert_eq!(
            m.get(HANDOVERS, r#"direction="to_bot",cause="idle_timeout""#),
            1,
            "{text}"
        );
        for series in [
            r#"handover_human_stay_seconds_bucket{le="60"} 1"#,
            r#"handover_human_stay_seconds_bucket{le="7200"} 1"#,
            r#"handover_human_stay_seconds_bucket{le="14400"} 2"#,
            r#"handover_human_stay_seconds_count 2"#,
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
    }

    #[test]
    fn due_jobs_and_api_errors() {
        let m = Metrics::new();
        m.set_due_jobs(3, Some(10_000), 72_500);
        m.graph_error("take_thread_control", "10", "2018300");
        m.dialogflow_error("contexts.list", "503");
        let text = m.render();
        assert!(text.contains("handover_jobs_due 3"), "{text}");
        assert!(
            text.contains("handover_oldest_due_job_age_seconds 62.5"),
            "{text}"
        );
        assert_eq!(
            m.get(
                GRAPH_ERRORS,
                r#"endpoint="take_thread_control",code="10",subcode="2018300""#
            ),
            1
        );
        assert_eq!(
            m.get(
                DIALOGFLOW_ERRORS,
                r#"operation="contexts.list",status="503""#
            ),
            1
        );
        m.set_due_jobs(0, None, 80_000);
        assert!(m.render().contains("handover_oldest_due_job_age_seconds 0"));
    }
}

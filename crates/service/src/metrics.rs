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
use metrics::{
    Recorder, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram, with_local_recorder,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

const WEBHOOK_DELIVERIES: &str = "handover_webhook_deliveries_total";
const WEBHOOK_EVENTS: &str = "handover_webhook_events_total";
const WEBHOOK_EVENTS_REFUSED: &str = "handover_webhook_events_refused_total";
const WEBHOOK_FIELDS_TRUNCATED: &str = "handover_webhook_fields_truncated_total";
const FULFILLMENT_REQUESTS: &str = "handover_fulfillment_requests_total";
const JOBS_FINISHED: &str = "handover_jobs_finished_total";
const GRAPH_CALLS: &str = "handover_graph_calls_total";
const DIALOGFLOW_CALLS: &str = "handover_dialogflow_calls_total";
const THREADS: &str = "handover_threads";
const JOBS: &str = "handover_jobs";
const HTTP_DURATION: &str = "handover_http_request_duration_seconds";
const GRAPH_DURATION: &str = "handover_graph_call_duration_seconds";
const DIALOGFLOW_DURATION: &str = "handover_dialogflow_call_duration_seconds";

/// Upper bounds (seconds) of every latency histogram's buckets: from a local answer (ms) to
/// an upstream call that ran into `HTTP_TIMEOUT_MS` (10 s by default).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

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
        Self {
            inner: Arc::new(Inner {
                recorder,
                handle,
                store_series: Mutex::default(),
            }),
        }
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
}

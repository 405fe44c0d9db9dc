//! Counters for `/metrics` (Prometheus text format). Store-backed gauges (threads per
//! state, jobs per status) are read from the store when scraped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// A gauge family read from the store: name, help text, (labels, value) pairs.
pub type Gauge<'a> = (&'a str, &'a str, Vec<(String, i64)>);

#[derive(Default, Debug)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
}

const HELP: &[(&str, &str)] = &[
    (
        "handover_webhook_deliveries_total",
        "Messenger webhook deliveries by result",
    ),
    (
        "handover_webhook_events_total",
        "Messenger webhook events by outcome",
    ),
    (
        "handover_fulfillment_requests_total",
        "Dialogflow fulfillment calls by outcome",
    ),
    (
        "handover_jobs_finished_total",
        "Jobs run by kind and outcome",
    ),
    (
        "handover_graph_calls_total",
        "Graph API calls by endpoint and result",
    ),
    (
        "handover_dialogflow_calls_total",
        "Dialogflow API calls by operation and result",
    ),
];

impl Metrics {
    /// Adds `n` to the counter `name` with the label set `labels` (already formatted,
    /// e.g. `kind="pass",outcome="done"`).
    pub fn add(&self, name: &'static str, labels: String, n: u64) {
        if let Ok(mut map) = self.counters.lock() {
            *map.entry((name, labels)).or_insert(0) += n;
        }
    }

    pub fn inc(&self, name: &'static str, labels: String) {
        self.add(name, labels, 1);
    }

    pub fn get(&self, name: &'static str, labels: &str) -> u64 {
        self.counters
            .lock()
            .ok()
            .and_then(|m| m.get(&(name, labels.to_owned())).copied())
            .unwrap_or(0)
    }

    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        let counters = self.counters.lock().map(|m| m.clone()).unwrap_or_default();
        for (name, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((n, labels), value) in counters.iter().filter(|((n, _), _)| n == name) {
                let _ = writeln!(out, "{n}{{{labels}}} {value}");
            }
        }
        for (name, help, values) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, value) in values {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_prometheus_text_format() {
        let m = Metrics::default();
        m.inc(
            "handover_jobs_finished_total",
            r#"kind="pass",outcome="done""#.into(),
        );
        m.add(
            "handover_jobs_finished_total",
            r#"kind="pass",outcome="done""#.into(),
            2,
        );
        let text = m.render(&[(
            "handover_threads",
            "Threads by state",
            vec![(r#"state="HUMAN""#.into(), 4)],
        )]);
        assert!(text.contains("# TYPE handover_jobs_finished_total counter"));
        assert!(text.contains(r#"handover_jobs_finished_total{kind="pass",outcome="done"} 3"#));
        assert!(text.contains(r#"handover_threads{state="HUMAN"} 4"#));
    }
}

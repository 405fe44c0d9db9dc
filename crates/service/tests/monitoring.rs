//! The shipped dashboard (`deploy/grafana/handover.json`) and alert rules
//! (`deploy/prometheus/alerts.yaml`): promtool checks the rules and runs their unit tests,
//! every dashboard query is valid PromQL, and every metric either names is one the service
//! exports after a conversation (scraped from its `/metrics`), which the dashboard shows all of.
//!
//! promtool comes from Debian's `prometheus` package; `.ci/run` installs it and sets
//! `HANDOVER_REQUIRE_PROMTOOL=1`, so in CI these never skip.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::db::Db;
use common::emulated::Emulated;
use handover_core::State;
use handover_emulator::Chaos;
use serde_json::Value;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

const USER: &str = "7004000000000001";

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// promtool, or `None` (with the reason printed) where it is not installed and not required.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PROMTOOL").map(PathBuf::from).or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let required = std::env::var("HANDOVER_REQUIRE_PROMTOOL").is_ok_and(|v| !v.is_empty());
        assert!(
            !required,
            "promtool is not installed and HANDOVER_REQUIRE_PROMTOOL is set (apt-get install prometheus)"
        );
        eprintln!(
            "SKIPPED: promtool is not installed (Debian: apt-get install prometheus); CI installs it"
        );
    }
    found
}

fn run_promtool(promtool: &Path, args: &[&str], dir: &Path) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    assert!(text.contains("SUCCESS"), "promtool {args:?}:\n{text}");
}

#[test]
fn promtool_checks_the_alert_rules_and_runs_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let dir = deploy("prometheus");
    run_promtool(&promtool, &["check", "rules", "alerts.yaml"], &dir);
    run_promtool(&promtool, &["test", "rules", "alerts.test.yaml"], &dir);
}

fn dashboard() -> Value {
    serde_json::from_str(&read("grafana/handover.json")).expect("the dashboard is JSON")
}

/// The panels that show data (rows left out).
fn data_panels(dashboard: &Value) -> Vec<&Value> {
    let panels = dashboard["panels"].as_array().expect("panels");
    panels.iter().filter(|p| p["type"] != "row").collect()
}

/// Every query of the dashboard, as Prometheus would get it (Grafana's `$__rate_interval`
/// filled in).
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    data_panels(dashboard)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| {
            let expr = t["expr"].as_str().expect("every target has an expr");
            expr.replace("$__rate_interval", "5m")
        })
        .collect()
}

#[test]
fn the_dashboard_is_grafana_json_over_a_chosen_prometheus() {
    let d = dashboard();
    assert_eq!(d["uid"], "messenger-handover");
    let variables = d["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "datasource" && v["query"] == "prometheus")
    );
    let panels = data_panels(&d);
    assert!(panels.len() >= 15, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id {}",
            p["id"]
        );
        let g = &p["gridPos"];
        let right = g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap();
        assert!(right <= 24, "{} is wider than the grid", p["title"]);
    }
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(
            !p["description"].as_str().unwrap_or("").is_empty(),
            "{title}"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    // The subjects the dashboard is for.
    let titles: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for want in [
        "Requests by route and status",
        "Latency p99 by route",
        "Events by kind and outcome",
        "Handovers by cause",
        "Time with a human",
        "Queue",
        "Oldest due job",
        "Dead letters",
        "Graph API errors by code",
        "Dialogflow API errors by status",
    ] {
        assert!(titles.contains(&want), "{want} in {titles:?}");
    }
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let Some(promtool) = promtool() else { return };
    // promtool checks PromQL in rule files: each query becomes a recording rule.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in dashboard_queries(&dashboard()).iter().enumerate() {
        let quoted = serde_json::to_string(q).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.yaml"), rules).unwrap();
    run_promtool(&promtool, &["check", "rules", "dashboard.yaml"], dir.path());
}

/// The `handover_…` names in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("handover_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The series names of a Prometheus text exposition, and its metric families.
fn exported(scrape: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let series = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect();
    let families = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    (series, families)
}

async fn scrape(w: &Emulated) -> String {
    let resp = reqwest::get(format!("{}/metrics", w.base)).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// The value of one series in `scrape` (0 when absent).
fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A conversation with a Graph outage during the pass and a Dialogflow that always fails, a
/// forged delivery and a refused fulfillment call: then the dashboard's and the alerts'
/// metrics are all in `/metrics`, with the numbers the conversation implies.
async fn dashboard_and_alerts_use_only_metrics_the_service_exports(db: Db) {
    let dialogflow = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(503).set_body_string(
            r#"{"error":{"code":503,"message":"unavailable","status":"UNAVAILABLE"}}"#,
        ))
        .mount(&dialogflow)
        .await;
    let w = Emulated::start(
        db,
        &[
            ("DIALOGFLOW_API_BASE", dialogflow.uri().as_str()),
            ("JOB_MAX_ATTEMPTS", "2"),
            ("JOB_RETRY_BASE_MS", "10"),
            ("HANDOVER_PASS_DELAY_MS", "0"),
        ],
    )
    .await;
    w.emulator.user_says(USER, "Where is my order 1042?").await;
    // Meta fails every call for a while: the pass is retried until it is back.
    w.emulator.set_chaos(Chaos {
        graph_error_500: 1.0,
        ..Chaos::default()
    });
    w.emulator
        .user_says(USER, "I want to talk to a human")
        .await;
    let failed_pass =
        r#"handover_graph_errors_total{endpoint="pass_thread_control",code="2",subcode="none"}"#;
    common::app::eventually("a failed pass", || async {
        value(&scrape(&w).await, failed_pass) > 0.0
    })
    .await;
    w.emulator.set_chaos(Chaos::default());
    w.settled_in(USER, State::Human).await;
    w.emulator.agent_replies(USER, "Hello, Sam here.").await;
    w.emulator.user_says(USER, "back to bot").await;
    // The context sync fails twice and is kept as a dead letter; the welcome goes out.
    w.settled_in(USER, State::Bot).await;
    assert_eq!(w.welcomes(USER), 1);

    let http = reqwest::Client::new();
    let forged = http
        .post(format!("{}/messenger", w.base))
        .header("x-hub-signature-256", "sha256=00")
        .body(r#"{"object":"page","entry":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let refused = http
        .post(format!("{}/fulfillment", w.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let text = scrape(&w).await;
    // What the conversation implies.
    for (series, want) in [
        (
            r#"handover_handovers_total{direction="to_human",cause="fulfillment"}"#,
            1.0,
        ),
        (
            r#"handover_handovers_total{direction="to_bot",cause="user_asked"}"#,
            1.0,
        ),
        ("handover_human_stay_seconds_count", 1.0),
        (
            r#"handover_jobs_finished_total{kind="sync_contexts",outcome="failed"}"#,
            1.0,
        ),
        (
            r#"handover_jobs_finished_total{kind="sync_contexts",outcome="retry"}"#,
            1.0,
        ),
        (
            r#"handover_webhook_deliveries_total{result="bad_signature"}"#,
            1.0,
        ),
        (
            r#"handover_fulfillment_requests_total{outcome="unauthorized"}"#,
            1.0,
        ),
        (r#"handover_threads{state="BOT"}"#, 1.0),
        ("handover_jobs_due", 0.0),
        ("handover_oldest_due_job_age_seconds", 0.0),
    ] {
        assert_eq!(value(&text, series), want, "{series}:\n{text}");
    }
    assert!(value(&text, failed_pass) >= 1.0);
    let standby = r#"handover_webhook_events_by_kind_total{kind="message",channel="standby",outcome="stored"}"#;
    assert!(value(&text, standby) >= 1.0, "{text}");
    let df_errors = text
        .lines()
        .filter(|l| {
            l.starts_with("handover_dialogflow_errors_total{") && l.contains(r#"status="503""#)
        })
        .count();
    assert!(df_errors >= 1, "{text}");
    w.stop().await;

    let (series, families) = exported(&text);
    let dashboard_text = read("grafana/handover.json");
    let alerts_text = read("prometheus/alerts.yaml");
    for (file, used) in [
        ("handover.json", metric_names(&dashboard_text)),
        ("alerts.yaml", metric_names(&alerts_text)),
        (
            "alerts.test.yaml",
            metric_names(&read("prometheus/alerts.test.yaml")),
        ),
    ] {
        assert!(!used.is_empty(), "{file} uses no metric");
        let unknown: Vec<_> = used.difference(&series).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the service does not export: {unknown:?}"
        );
    }
    // And the dashboard shows every family the service exports.
    let shown = metric_names(&dashboard_text);
    let base = |s: &String| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| s.strip_suffix(suffix))
            .unwrap_or(s)
            .to_owned()
    };
    let shown: BTreeSet<String> = shown.iter().map(base).collect();
    let missing: Vec<_> = families.difference(&shown).collect();
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");
}
both_backends!(dashboard_and_alerts_use_only_metrics_the_service_exports);

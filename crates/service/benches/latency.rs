//! Latency benchmark: does `/fulfillment` ever wait on the Graph API?
//!
//! Two instances of the service run side by side in this process, each on its own temporary
//! SQLite file: A talks to a mock Graph API that answers at once, B to one that takes 2 s per
//! call. Both get the same sequential requests, interleaved request by request (A then B, then
//! B then A, ...) so machine noise hits both equally:
//!
//! 1. `BENCH_N` `POST /fulfillment` handover requests (distinct PSIDs; each queues a
//!    `pass_thread_control` Graph call with `HANDOVER_PASS_DELAY_MS=0`),
//! 2. `BENCH_N` plain-intent `POST /fulfillment` requests,
//! 3. `BENCH_N` signed `POST /messenger` deliveries (a `standby` user message, unique `mid`).
//!
//! If an answer waited on the Graph API, B's latencies would be at least 2 s; the claim holds
//! when B/A is about 1 and no answer of B comes near the Graph delay. Then a concurrent run
//! (`BENCH_CLIENTS` clients, `BENCH_CONCURRENT` plain-intent requests) measures throughput.
//!
//! Run with `cargo bench --bench latency`. Without `--bench` on the command line (e.g.
//! `cargo test --benches`) it runs a short smoke version. Exits with code 1 if the claim fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use messenger_handover::config::{RawSettings, Settings};
use messenger_handover::messenger::signature;
use messenger_handover::startup::Application;
use serde_json::{Value, json};
use wiremock::matchers::{any, method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const APP_ID: &str = "111111111111111";
const APP_SECRET: &str = "bench-app-secret";
const PAGE_TOKEN: &str = "EAAbenchpagetoken";
const VERIFY_TOKEN: &str = "bench-verify-token-123";
const PAGE_ID: &str = "958823367603818";
const INBOX: &str = "263902037430900";
const FULFILLMENT_TOKEN: &str = "bench-fulfillment-token-0123456789";
const GRAPH_VERSION: &str = "v25.0";
/// How long B's mock Graph API takes for every call.
const SLOW_GRAPH: Duration = Duration::from_secs(2);
/// Dialogflow's fulfillment deadline.
const DIALOGFLOW_DEADLINE: Duration = Duration::from_secs(5);

/// One running service with its own store and mock Graph API.
struct Instance {
    label: &'static str,
    base: String,
    client: reqwest::Client,
    app: Application,
    graph: MockServer,
    _dir: tempfile::TempDir,
}

impl Instance {
    async fn start(label: &'static str, graph_delay: Duration) -> Instance {
        let graph = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path_regex("/thread_owner$"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"data": [{"thread_owner": {"app_id": INBOX}}]}))
                    .set_delay(graph_delay),
            )
            .with_priority(1)
            .mount(&graph)
            .await;
        Mock::given(any())
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(
                        json!({"success": true, "recipient_id": "0", "message_id": "m_0"}),
                    )
                    .set_delay(graph_delay),
            )
            .mount(&graph)
            .await;
        let dir = tempfile::tempdir().expect("temp dir");
        let db_url = format!("sqlite://{}", dir.path().join("handover.db").display());
        let graph_uri = graph.uri();
        let raw = RawSettings::from_pairs([
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("DATABASE_URL", db_url.as_str()),
            ("FB_APP_ID", APP_ID),
            ("FB_APP_SECRET", APP_SECRET),
            ("FB_PAGE_ACCESS_TOKEN", PAGE_TOKEN),
            ("FB_VERIFY_TOKEN", VERIFY_TOKEN),
            ("FB_PAGE_ID", PAGE_ID),
            ("GRAPH_API_BASE", graph_uri.as_str()),
            ("GRAPH_API_VERSION", GRAPH_VERSION),
            ("FULFILLMENT_TOKEN", FULFILLMENT_TOKEN),
            ("HANDOVER_PASS_DELAY_MS", "0"),
        ]);
        let settings = Settings::from_raw(&raw).expect("bench settings are valid");
        let app = Application::build(settings).await.expect("the app starts");
        Instance {
            label,
            base: format!("http://127.0.0.1:{}", app.port()),
            client: reqwest::Client::new(),
            app,
            graph,
            _dir: dir,
        }
    }

    /// Sends one request and returns how long it took until the whole answer was read.
    async fn send(&self, req: &Req) -> Duration {
        let started = Instant::now();
        let builder = match req {
            Req::Fulfillment { body, .. } => self
                .client
                .post(format!("{}/fulfillment", self.base))
                .bearer_auth(FULFILLMENT_TOKEN)
                .header("content-type", "application/json")
                .body(body.clone()),
            Req::Delivery { body, signature } => self
                .client
                .post(format!("{}/messenger", self.base))
                .header("x-hub-signature-256", signature.as_str())
                .body(body.clone()),
        };
        let resp = builder
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: request failed: {e}", self.label));
        let status = resp.status();
        let text = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{}: reading the answer failed: {e}", self.label));
        let elapsed = started.elapsed();
        assert_eq!(status, 200, "{}: unexpected answer {text}", self.label);
        match req {
            Req::Fulfillment {
                expect: Some(needle),
                ..
            } => assert!(
                text.contains(needle),
                "{}: answer lacks {needle}: {text}",
                self.label
            ),
            Req::Delivery { .. } => {
                assert!(text.contains("\"stored\":1"), "{}: {text}", self.label)
            }
            Req::Fulfillment { expect: None, .. } => {}
        }
        elapsed
    }

    fn pass_calls_done(&self) -> u64 {
        self.app.services().metrics.get(
            "handover_graph_calls_total",
            "endpoint=\"pass_thread_control\",result=\"ok\"",
        )
    }

    async fn graph_requests_received(&self) -> usize {
        self.graph
            .received_requests()
            .await
            .map(|r| r.len())
            .unwrap_or(0)
    }
}

/// A prepared request (built and signed before the clock starts).
enum Req {
    Fulfillment {
        body: String,
        /// A string the answer must contain.
        expect: Option<&'static str>,
    },
    Delivery {
        body: String,
        signature: String,
    },
}

fn fixture_json(path: &str) -> Value {
    let file = format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A 16-digit PSID, distinct for every (range, i).
fn psid(range: u64, i: usize) -> String {
    format!(
        "{}",
        9_000_000_000_000_000u64 + range * 10_000_000 + i as u64
    )
}

/// A Dialogflow webhook request from `template` for Messenger user `psid`, with its own session
/// (the output contexts are renamed to that session too).
fn fulfillment_body(template: &Value, psid: &str) -> String {
    let mut v = template.clone();
    let old_session = v["session"].as_str().expect("session").to_owned();
    let (agent, _) = old_session.rsplit_once('/').expect("session path");
    let session = format!("{agent}/bench-{psid}");
    v["session"] = json!(session);
    v["originalDetectIntentRequest"]["payload"]["data"]["sender"]["id"] = json!(psid);
    if let Some(contexts) = v["queryResult"]["outputContexts"].as_array_mut() {
        for c in contexts {
            let name = c["name"]
                .as_str()
                .unwrap_or("")
                .replace(&old_session, &session);
            c["name"] = json!(name);
            if c["parameters"].get("facebook_sender_id").is_some() {
                c["parameters"]["facebook_sender_id"] = json!(psid);
            }
        }
    }
    v.to_string()
}

/// A signed `standby` delivery of a user message with a unique `mid`.
fn delivery(template: &Value, psid: &str, i: usize) -> Req {
    let mut v = template.clone();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let entry = &mut v["entry"][0];
    entry["time"] = json!(now);
    let event = &mut entry["standby"][0];
    event["sender"]["id"] = json!(psid);
    event["timestamp"] = json!(now);
    event["message"]["mid"] = json!(format!("m_bench_{psid}_{i}_{now}"));
    let body = v.to_string();
    let signature = signature::sign(APP_SECRET, body.as_bytes());
    Req::Delivery { body, signature }
}

/// Sends `n` requests to each instance, alternating which goes first.
async fn interleaved(
    a: &Instance,
    b: &Instance,
    n: usize,
    make: impl Fn(usize) -> Req,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut ta, mut tb) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        // Each instance gets its own copy; building it is not timed.
        let (ra, rb) = (make(i), make(i));
        if i % 2 == 0 {
            ta.push(a.send(&ra).await);
            tb.push(b.send(&rb).await);
        } else {
            tb.push(b.send(&rb).await);
            ta.push(a.send(&ra).await);
        }
    }
    (ta, tb)
}

/// `clients` concurrent loops share `total` plain-intent requests; returns (wall time, latencies).
async fn concurrent(
    inst: &Instance,
    template: &Value,
    clients: usize,
    total: usize,
    range: u64,
) -> (Duration, Vec<Duration>) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let next = Arc::clone(&next);
        let client = inst.client.clone();
        let url = format!("{}/fulfillment", inst.base);
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return times;
                }
                let body = fulfillment_body(&template, &psid(range, i));
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .bearer_auth(FULFILLMENT_TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("request");
                let status = resp.status();
                let _ = resp.bytes().await.expect("answer");
                times.push(t.elapsed());
                assert_eq!(status, 200);
            }
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    (started.elapsed(), all)
}

struct Stats {
    n: usize,
    p50: Duration,
    p95: Duration,
    p99: Duration,
    max: Duration,
}

/// Nearest-rank percentiles.
fn stats(times: &[Duration]) -> Stats {
    let mut s = times.to_vec();
    s.sort_unstable();
    let pick = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    Stats {
        n: s.len(),
        p50: pick(0.50),
        p95: pick(0.95),
        p99: pick(0.99),
        max: s[s.len() - 1],
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: not a number: {v:?}")),
        Err(_) => default,
    }
}

#[tokio::main]
async fn main() {
    messenger_handover::tls::install();
    // `cargo bench` passes --bench; anything else (e.g. `cargo test --benches`) gets a smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let n = env_usize("BENCH_N", if full { 400 } else { 20 }).max(1);
    let clients = env_usize("BENCH_CLIENTS", 8).max(1);
    let total = env_usize("BENCH_CONCURRENT", if full { 2000 } else { 200 }).max(1);

    let handover = fixture_json("dialogflow/handover.json");
    let plain = fixture_json("dialogflow/plain_intent.json");
    let standby = fixture_json("messenger/standby_user_message.json");

    let a = Instance::start("A", Duration::ZERO).await;
    let b = Instance::start("B", SLOW_GRAPH).await;

    // Warm-up (not measured): connections, SQLite pages, code paths.
    let _ = interleaved(&a, &b, 50.min(n), |i| Req::Fulfillment {
        body: fulfillment_body(&plain, &psid(9, i)),
        expect: None,
    })
    .await;

    let run_started = Instant::now();
    let (ha, hb) = interleaved(&a, &b, n, |i| Req::Fulfillment {
        body: fulfillment_body(&handover, &psid(1, i)),
        expect: Some("human_handover"),
    })
    .await;
    let handover_secs = run_started.elapsed().as_secs_f64();
    let (pass_a, pass_b) = (a.pass_calls_done(), b.pass_calls_done());
    let (pa, pb) = interleaved(&a, &b, n, |i| Req::Fulfillment {
        body: fulfillment_body(&plain, &psid(2, i)),
        expect: None,
    })
    .await;
    // Deliveries for the users just handed over: their messages now arrive on `standby`.
    let (ma, mb) = interleaved(&a, &b, n, |i| delivery(&standby, &psid(1, i), i)).await;
    let graph_a = a.graph_requests_received().await;
    let graph_b = b.graph_requests_received().await;
    let (pass_a_end, pass_b_end) = (a.pass_calls_done(), b.pass_calls_done());

    let (wall_a, ca) = concurrent(&a, &plain, clients, total, 3).await;
    let (wall_b, cb) = concurrent(&b, &plain, clients, total, 3).await;

    let rows = [
        ("POST /fulfillment (handover)", &ha, &hb),
        ("POST /fulfillment (plain intent)", &pa, &pb),
        ("POST /messenger (signed delivery)", &ma, &mb),
    ];

    println!();
    println!(
        "## Latency, sequential, interleaved A/B (n = {n} per endpoint and instance; client-side, until the answer is read)"
    );
    println!();
    println!(
        "A: mock Graph API answers at once. B: every Graph API call takes {} s.",
        SLOW_GRAPH.as_secs()
    );
    println!();
    println!("| endpoint | instance | n | p50 ms | p95 ms | p99 ms | max ms |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (name, ta, tb) in rows {
        for (label, t) in [("A (Graph instant)", ta), ("B (Graph 2 s)", tb)] {
            let s = stats(t);
            println!(
                "| {name} | {label} | {} | {} | {} | {} | {} |",
                s.n,
                ms(s.p50),
                ms(s.p95),
                ms(s.p99),
                ms(s.max)
            );
        }
    }
    println!();
    println!("## B / A (≈ 1 means the slow Graph API does not slow the answers)");
    println!();
    println!("| endpoint | p50 B/A | p99 B/A |");
    println!("|---|---:|---:|");
    let ratio = |x: Duration, y: Duration| x.as_secs_f64() / y.as_secs_f64().max(1e-9);
    for (name, ta, tb) in rows {
        let (sa, sb) = (stats(ta), stats(tb));
        println!(
            "| {name} | {:.2} | {:.2} |",
            ratio(sb.p50, sa.p50),
            ratio(sb.p99, sa.p99)
        );
    }
    println!();
    println!(
        "## Throughput, {clients} concurrent clients, {total} plain-intent `POST /fulfillment`"
    );
    println!();
    println!("| instance | requests | wall s | req/s | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, wall, t) in [
        ("A (Graph instant)", wall_a, &ca),
        ("B (Graph 2 s)", wall_b, &cb),
    ] {
        let s = stats(t);
        println!(
            "| {label} | {} | {:.2} | {:.0} | {} | {} | {} |",
            s.n,
            wall.as_secs_f64(),
            s.n as f64 / wall.as_secs_f64(),
            ms(s.p50),
            ms(s.p99),
            ms(s.max)
        );
    }
    println!();
    println!("## Graph API work behind the answers");
    println!();
    println!(
        "| instance | pass_thread_control done after the {n} handovers ({handover_secs:.1} s) | done after all {} sequential requests | Graph requests received by the mock |",
        3 * n
    );
    println!("|---|---:|---:|---:|");
    println!("| A | {pass_a} | {pass_a_end} | {graph_a} |");
    println!("| B | {pass_b} | {pass_b_end} | {graph_b} |");
    println!();

    // The check: had any answer of B waited on a Graph call, it would have taken >= 2 s.
    let worst_b = [&hb, &pb, &mb]
        .iter()
        .map(|t| stats(t).max)
        .max()
        .unwrap_or_default();
    let worst_fulfillment = [&ha, &hb, &pa, &pb, &ca, &cb]
        .iter()
        .map(|t| stats(t).max)
        .max()
        .unwrap_or_default();
    let mut ok = true;
    if worst_b >= SLOW_GRAPH {
        ok = false;
        println!(
            "FAILED: an answer of B took {} ms, as long as a Graph API call: it waited on Graph.",
            ms(worst_b)
        );
    }
    if worst_fulfillment >= DIALOGFLOW_DEADLINE {
        ok = false;
        println!(
            "FAILED: a /fulfillment answer took {} ms, past Dialogflow's 5 s deadline.",
            ms(worst_fulfillment)
        );
    }
    if pass_b_end >= pass_a_end && n > 16 {
        ok = false;
        println!(
            "FAILED: B's Graph API was not slower than A's ({pass_b_end} vs {pass_a_end} passes done): the comparison shows nothing."
        );
    }
    if ok {
        println!(
            "OK: slowest /fulfillment answer {} ms (deadline {} ms); slowest answer of B {} ms while its Graph API takes {} ms per call.",
            ms(worst_fulfillment),
            DIALOGFLOW_DEADLINE.as_millis(),
            ms(worst_b),
            SLOW_GRAPH.as_millis()
        );
    }

    a.app.stop().await;
    // B's worker may be in the middle of 2 s Graph calls; do not wait long for them.
    let _ = tokio::time::timeout(Duration::from_secs(10), b.app.stop()).await;
    if !ok {
        std::process::exit(1);
    }
}

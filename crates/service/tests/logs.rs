//! The logs of a whole conversation, as the real binary writes them at `RUST_LOG=trace`
//! against the emulator: every line is JSON that Cloud Logging reads (severity, trace), the
//! lines of a job carry the job and its thread, and no secret, token, verify token, query
//! string or clear PSID is in them, while the user's pseudonym is.

mod common;

use std::time::{Duration, Instant};

use common::db::{Db, TestDb};
use common::process::Process;
use handover_emulator::{Emulator, EmulatorConfig, PAGE_INBOX_APP_ID};
use hmac::{Hmac, KeyInit, Mac};
use messenger_handover::config::KNOWN_SETTINGS;
use messenger_handover::demo::settings_for;
use messenger_handover::messenger::signature;
use serde_json::Value;
use sha2::Sha256;

const USER: &str = "7003000000000001";
const VERIFY_TOKEN: &str = "verify-token-never-logged-5d1c";
const FULFILLMENT_TOKEN: &str = "fulfillment-token-never-logged-77ab";
/// Agent notifications go to a URL that is a credential (its path holds the key), signed
/// with a secret: neither may be logged.
const NOTIFY_PATH: &str = "/hooks/notify-key-never-logged-e61b";
const NOTIFY_SECRET: &str = "notify-secret-never-logged-0d4c";
const PROJECT: &str = "shop-prod";
const W3C_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLOUD_TRACE: &str = "105445aa7843bc8bf206b12000100000";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The pseudonym of `psid` as the README documents it, computed here on its own:
/// HMAC-SHA256 keyed with HMAC-SHA256(FB_APP_SECRET, label), 16 hex digits.
fn pseudonym(app_secret: &str, psid: &str) -> String {
    let mac = |key: &[u8], data: &[u8]| {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().to_vec()
    };
    let key = mac(
        app_secret.as_bytes(),
        b"messenger-handover log pseudonyms v1",
    );
    hex::encode(mac(&key, psid.as_bytes()))[..16].to_owned()
}

/// The service binary and the address it serves on.
struct Service {
    process: Process,
    base: String,
}

impl Service {
    fn start(env: Vec<(String, String)>, port: u16) -> Service {
        Service {
            process: Process::spawn(&["serve"], &env),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// SIGTERM, then everything it logged.
    async fn stop(self) -> String {
        self.process.stop().await
    }
}

async fn metric(http: &reqwest::Client, base: &str, series: &str) -> Option<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits (10 s at most) until `series` of `/metrics` has `value`.
async fn wait_metric(http: &reqwest::Client, base: &str, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(http, base, series).await != Some(value) {
        assert!(Instant::now() < deadline, "{series} never {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_whole_conversation_logs_no_secret_and_no_clear_psid(db: Db) {
    let db = TestDb::new(db).await;
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let cfg = emulator.config();
    let port = free_port();
    let port_text = port.to_string();
    let team = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&team)
        .await;
    let notify_url = format!("{}{NOTIFY_PATH}", team.uri());
    let raw = settings_for(
        &emulator,
        &db.url,
        FULFILLMENT_TOKEN,
        &[
            ("PORT", port_text.as_str()),
            ("FB_VERIFY_TOKEN", VERIFY_TOKEN),
            ("HANDOVER_PASS_DELAY_MS", "0"),
            ("RUST_LOG", "trace"),
            ("LOG_FORMAT", "json"),
            ("GOOGLE_CLOUD_PROJECT", PROJECT),
            ("NOTIFY_WEBHOOK_URL", notify_url.as_str()),
            ("NOTIFY_WEBHOOK_SECRET", NOTIFY_SECRET),
        ],
    );
    let env: Vec<(String, String)> = KNOWN_SETTINGS
        .iter()
        .filter_map(|k| raw.get(k).map(|v| (k.to_string(), v.to_owned())))
        .collect();
    let service = Service::start(env, port);
    let base = service.base.clone();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the service never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    emulator.set_companion_webhook(&format!("{base}/messenger"));
    emulator.set_fulfillment(
        &format!("{base}/fulfillment"),
        Some(format!("Bearer {FULFILLMENT_TOKEN}")),
    );

    // Meta's verification, with the verify token in the query.
    let verify = http
        .get(format!(
            "{base}/messenger?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=challenge-never-logged-3c9f"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(verify.text().await.unwrap(), "challenge-never-logged-3c9f");
    // A request traced by the caller (W3C), and one by Google's own header.
    let empty = r#"{"object":"page","entry":[]}"#;
    let traced = http
        .post(format!("{base}/messenger"))
        .header("traceparent", format!("00-{W3C_TRACE}-00f067aa0ba902b7-01"))
        .header(
            "x-hub-signature-256",
            signature::sign(&cfg.companion_app_secret, empty.as_bytes()),
        )
        .body(empty)
        .send()
        .await
        .unwrap();
    assert_eq!(traced.status(), 200);
    let forged = http
        .post(format!("{base}/messenger"))
        .header("x-cloud-trace-context", format!("{CLOUD_TRACE}/1;o=1"))
        .header("x-hub-signature-256", "sha256=00")
        .body(empty)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    // The conversation: a question, a handover, an agent, the way back, the welcome.
    emulator.user_says(USER, "Where is my order 1042?").await;
    emulator.user_says(USER, "I want to talk to a human").await;
    wait_metric(&http, &base, r#"handover_threads{state="HUMAN"}"#, 1.0).await;
    assert_eq!(emulator.owner(USER).as_deref(), Some(PAGE_INBOX_APP_ID));
    emulator.agent_replies(USER, "Hello, Sam here.").await;
    emulator.user_says(USER, "back to bot").await;
    wait_metric(&http, &base, r#"handover_threads{state="BOT"}"#, 1.0).await;
    let welcome = raw
        .get("WELCOME_BACK_MESSAGE")
        .unwrap_or("Welcome back! You're chatting with the bot again. How can I help?");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !emulator
        .messages_to_user(USER)
        .iter()
        .any(|m| m.text == welcome)
    {
        assert!(Instant::now() < deadline, "no welcome back");
        emulator.flush().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_metric(&http, &base, "handover_jobs_due", 0.0).await;
    assert_eq!(emulator.errors(), Vec::<String>::new());
    // The team was told of the handover and the return (so their calls are in the logs).
    let told = team.received_requests().await.unwrap_or_default();
    assert_eq!(told.len(), 2, "{told:?}");

    let logs = service.stop().await;
    emulator.stop().await;
    db.close().await;

    // What must never be written.
    let never = [
        cfg.bot_app_secret.as_str(),
        cfg.companion_app_secret.as_str(),
        cfg.page_token.as_str(),
        cfg.companion_page_token.as_str(),
        VERIFY_TOKEN,
        FULFILLMENT_TOKEN,
        NOTIFY_PATH,
        "notify-key-never-logged",
        NOTIFY_SECRET,
        "hub.verify_token",
        "hub.challenge",
        "challenge-never-logged-3c9f",
        "access_token",
        "appsecret_proof",
        USER,
    ];
    for leak in never {
        let line = logs.lines().find(|l| l.contains(leak));
        assert!(line.is_none(), "{leak:?} reached the logs: {line:?}");
    }

    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str(l) {
            Ok(v @ Value::Object(_)) => v,
            _ => panic!("not a JSON object: {l}"),
        })
        .collect();
    let has = |l: &Value, key: &str| l.get(key).is_some();
    assert!(lines.len() > 100, "trace level logs much: {}", lines.len());
    for line in &lines {
        let severity = line["severity"].as_str().unwrap_or_default();
        assert!(
            ["DEBUG", "INFO", "WARNING", "ERROR"].contains(&severity),
            "{line:?}"
        );
        assert!(line["time"].is_string(), "{line:?}");
    }
    assert!(lines.iter().any(|l| l["severity"] == "DEBUG"));
    // Lines bridged from the `log` crate name their own target, without the `log.*` fields.
    assert!(
        lines
            .iter()
            .any(|l| l["target"].as_str().is_some_and(|t| t.starts_with("mio")))
    );
    assert!(
        !lines
            .iter()
            .any(|l| l["target"] == "log" || has(l, "log.file"))
    );
    assert!(
        lines.iter().any(|l| l["severity"] == "WARNING"),
        "the forged delivery"
    );

    // Every line of a job names the job and its thread, the user pseudonymized.
    let thread = format!("{}/{}", cfg.page_id, pseudonym(&cfg.bot_app_secret, USER));
    let job_lines: Vec<_> = lines.iter().filter(|l| has(l, "job")).collect();
    let kinds_of_user: std::collections::BTreeSet<&str> = job_lines
        .iter()
        .filter(|l| l["thread"] == thread.as_str())
        .filter_map(|l| l["kind"].as_str())
        .collect();
    for kind in [
        "process_event",
        "pass",
        "take",
        "sync_contexts",
        "send_welcome",
    ] {
        assert!(kinds_of_user.contains(kind), "{kind} in {kinds_of_user:?}");
    }
    for line in &job_lines {
        assert!(line["job"].is_u64(), "{line:?}");
        assert!(
            line["kind"].is_string() && line["attempt"].is_u64(),
            "{line:?}"
        );
        let t = line["thread"].as_str().expect("a thread on every job line");
        assert!(
            t == thread || (t.is_empty() && line["kind"] == "reconcile"),
            "{line:?}"
        );
    }
    // The conversation's decisions are among them.
    assert!(job_lines.iter().any(|l| l["message"] == "thread updated"
        && l["thread"] == thread.as_str()
        && l["state"] == "BOT"));
    // Fulfillment requests name the thread too.
    let requests: Vec<_> = lines.iter().filter(|l| l["message"] == "request").collect();
    assert!(
        requests
            .iter()
            .any(|l| l["path"] == "/fulfillment" && l["thread"] == thread.as_str())
    );

    // The callers' traces, where Cloud Logging reads them.
    let trace = |t: &str| format!("projects/{PROJECT}/traces/{t}");
    for (t, status) in [(W3C_TRACE, 200), (CLOUD_TRACE, 403)] {
        let line = requests
            .iter()
            .find(|l| l["logging.googleapis.com/trace"] == trace(t).as_str());
        let line = line.unwrap_or_else(|| panic!("no request line with trace {t}"));
        assert_eq!(line["path"], "/messenger");
        assert_eq!(line["status"], status);
    }
    assert!(!lines.iter().any(|l| has(l, "trace_id")));
}
both_backends!(a_whole_conversation_logs_no_secret_and_no_clear_psid);

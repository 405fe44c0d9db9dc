//! The command line: settings errors, `migrate`, `healthcheck`, and what `serve` logs.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_messenger-handover");

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_settings_exit_2_with_one_line_per_variable() {
    let (code, _, stderr) = run(
        &["serve"],
        &[("PORT", "not-a-port"), ("CONTEXT_ON_RETURN", "nope")],
    );
    assert_eq!(code, 2, "{stderr}");
    for var in [
        "FB_APP_ID:",
        "FB_APP_SECRET:",
        "FB_PAGE_ACCESS_TOKEN:",
        "FB_VERIFY_TOKEN:",
        "FULFILLMENT_TOKEN:",
        "PORT:",
        "CONTEXT_ON_RETURN:",
    ] {
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with(var)).count(),
            1,
            "{var} in {stderr}"
        );
    }
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
    // No subcommand means serve.
    let (code, _, _) = run(&[], &[]);
    assert_eq!(code, 2);
}

/// A notification URL without its signing key stops `serve` with one line, and the URL (a
/// credential: Slack's and Google Chat's carry their key) is not repeated.
#[test]
fn a_notification_url_without_its_key_exits_2_without_showing_it() {
    let url = "https://hooks.slack.com/services/T000/B000/key-never-shown-41d7";
    let (code, stdout, stderr) = run(
        &["serve"],
        &[
            ("FB_APP_ID", "111111111111111"),
            ("FB_APP_SECRET", "app-secret"),
            ("FB_PAGE_ACCESS_TOKEN", "EAAB-page-token"),
            ("FB_VERIFY_TOKEN", "verify-me"),
            ("FULFILLMENT_TOKEN", "0123456789abcdef0123"),
            ("NOTIFY_WEBHOOK_URL", url),
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    let problems: Vec<&str> = stderr.lines().filter(|l| l.contains(": ")).collect();
    assert!(
        problems
            .iter()
            .any(|l| l.starts_with("NOTIFY_WEBHOOK_SECRET: required")),
        "{stderr}"
    );
    assert!(!stderr.contains("key-never-shown") && !stdout.contains("key-never-shown"));
}

#[test]
fn a_bad_config_file_is_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("settings.toml");
    std::fs::write(&file, "FB_APP_ID = \n").unwrap();
    let (code, _, stderr) = run(&["--config", file.to_str().unwrap(), "serve"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not valid TOML"), "{stderr}");
    let (code, _, stderr) = run(&["--config", "/nonexistent.toml", "migrate"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["serve", "migrate", "healthcheck"] {
        let (code, stdout, _) = run(&[sub, "--help"], &[]);
        assert_eq!(code, 0, "{sub}");
        assert!(stdout.contains("Usage"), "{sub}: {stdout}");
    }
}

#[test]
fn migrate_creates_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("handover.db");
    let url = format!("sqlite://{}", db.display());
    let (code, stdout, stderr) = run(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("migrations applied: 6"), "{stdout}");
    assert!(db.exists());
    let (code, stdout, _) = run(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 0);
    assert!(stdout.contains("migrations applied: 0"), "{stdout}");
    let (code, _, stderr) = run(&["migrate"], &[("DATABASE_URL", "mysql://x")]);
    assert_eq!(code, 2);
    assert!(stderr.starts_with("DATABASE_URL:"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn serve_logs_no_secrets_and_answers_healthcheck() {
    const SECRETS: [&str; 4] = [
        "app-secret-do-not-log",
        "EAApage-token-do-not-log",
        "verify-token-do-not-log",
        "fulfillment-token-do-not-log",
    ];
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let url = format!("sqlite://{}", dir.path().join("h.db").display());
    let env = [
        ("HOST", "127.0.0.1"),
        ("PORT", port.as_str()),
        ("DATABASE_URL", url.as_str()),
        ("FB_APP_ID", "111111111111111"),
        ("FB_APP_SECRET", SECRETS[0]),
        ("FB_PAGE_ACCESS_TOKEN", SECRETS[1]),
        ("FB_VERIFY_TOKEN", SECRETS[2]),
        ("FULFILLMENT_TOKEN", SECRETS[3]),
        // Nothing listens there: the pass fails and is retried, with errors logged.
        ("GRAPH_API_BASE", "http://127.0.0.1:9"),
        ("HANDOVER_PASS_DELAY_MS", "0"),
        ("JOB_RETRY_BASE_MS", "10"),
        ("JOB_MAX_ATTEMPTS", "2"),
        ("RUST_LOG", "debug"),
    ];
    let (code, _, _) = run(&["healthcheck"], &[("PORT", port.as_str())]);
    assert_eq!(code, 1, "nothing is running yet");

    let mut child = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the logs while the service runs: at debug level they outgrow a pipe's buffer, and a
    // service blocked writing its logs would never stop.
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut logs = String::new();
        stderr.read_to_string(&mut logs).map(|_| logs)
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while run(&["healthcheck"], &[("PORT", port.as_str())]).0 != 0 {
        assert!(Instant::now() < deadline, "the service did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let base = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        messenger_handover::tls::install();
        let client = reqwest::Client::new();
        let verify = client
            .get(format!(
                "{base}/messenger?hub.mode=subscribe&hub.verify_token={}&hub.challenge=42",
                SECRETS[2]
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(verify.text().await.unwrap(), "42");
        let fixture = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/dialogflow/handover.json"
        ))
        .unwrap();
        let resp = client
            .post(format!("{base}/fulfillment"))
            .bearer_auth(SECRETS[3])
            .header("content-type", "application/json")
            .body(fixture)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
        let text = metrics.text().await.unwrap();
        assert!(
            text.contains("handover_fulfillment_requests_total{outcome=\"handover\"} 1"),
            "{text}"
        );
        let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
    });
    // Let the failing pass be tried and logged.
    std::thread::sleep(Duration::from_millis(700));
    // SIGTERM: a graceful stop.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    let logs = reader.join().unwrap().unwrap();
    assert!(
        status.success(),
        "graceful stop on SIGTERM: {status:?}\n{logs}"
    );
    assert!(logs.contains("thread control call failed"), "{logs}");
    assert!(
        logs.contains("\"endpoint\":\"pass_thread_control\""),
        "{logs}"
    );
    assert!(logs.contains("\"path\":\"/messenger\""), "{logs}");
    for secret in SECRETS {
        assert!(!logs.contains(secret), "a secret reached the logs:\n{logs}");
    }
    // The request line names the route, never the query the verify token came in.
    assert!(
        !logs.contains("hub."),
        "a query string reached the logs:\n{logs}"
    );
}

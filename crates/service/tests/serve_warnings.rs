//! What `serve` says at start about a risky setup (the webhook app is the bot app in companion
//! mode, fulfillment without authentication, context sync off), and that `LOG_FORMAT=pretty`
//! colours its lines only on a terminal. The binary runs on SQLite: the warnings come from the
//! settings alone.

mod common;

use std::process::{Command, Stdio};

use common::app::*;
use common::process::{Process, env, message, severity};
use serde_json::Value;

const COMPANION_APP_ID: &str = "222222222222222";

/// A setup with nothing to warn about: a second app with its own secret, a token, Dialogflow
/// (its metadata token URL is only checked for shape at start).
fn healthy(dir: &std::path::Path) -> Vec<(String, String)> {
    let url = format!("sqlite://{}", dir.join("h.db").display());
    env(&[
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("DATABASE_URL", &url),
        ("FB_APP_ID", APP_ID),
        ("FB_APP_SECRET", APP_SECRET),
        ("FB_PAGE_ACCESS_TOKEN", PAGE_TOKEN),
        ("FB_VERIFY_TOKEN", VERIFY_TOKEN),
        ("FB_WEBHOOK_APP_ID", COMPANION_APP_ID),
        ("FB_WEBHOOK_APP_SECRET", "companion-app-secret"),
        ("FULFILLMENT_TOKEN", FULFILLMENT_TOKEN),
        ("DIALOGFLOW_PROJECT_ID", "my-agent"),
        ("GOOGLE_METADATA_TOKEN_URL", "http://127.0.0.1:9/token"),
    ])
}

fn with(mut env: Vec<(String, String)>, changes: &[(&str, &str)]) -> Vec<(String, String)> {
    for (k, v) in changes {
        env.retain(|(name, _)| name != k);
        if !v.is_empty() {
            env.push((k.to_string(), v.to_string()));
        }
    }
    env
}

/// The warnings `serve` logged before it listened; it is stopped with SIGTERM after.
async fn startup_warnings(env: &[(String, String)]) -> Vec<Value> {
    let (mut service, _) = Process::serve(env).await;
    let lines = service.json_lines();
    service.signal("TERM");
    let (status, _) = service.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{}", service.logs());
    lines
        .into_iter()
        .take_while(|l| message(l) != Some("listening"))
        .filter(|l| severity(l) == Some("WARNING"))
        .collect()
}

fn texts(warnings: &[Value]) -> Vec<String> {
    warnings
        .iter()
        .map(|w| message(w).unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_starts_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let warnings = startup_warnings(&healthy(dir.path())).await;
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companion_mode_whose_webhook_app_is_the_bot_app_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    // Unset (it defaults to FB_APP_ID), or set to FB_APP_ID itself.
    for id in ["", APP_ID] {
        let env = with(
            healthy(dir.path()),
            &[("FB_WEBHOOK_APP_ID", id), ("FB_WEBHOOK_APP_SECRET", "")],
        );
        let warnings = startup_warnings(&env).await;
        assert_eq!(warnings.len(), 1, "{id:?}: {warnings:?}");
        let text = &texts(&warnings)[0];
        assert!(
            text.contains(&format!("FB_WEBHOOK_APP_ID is the bot app {APP_ID} itself")),
            "{text}"
        );
        assert!(
            warnings[0]["fix"]
                .as_str()
                .is_some_and(|f| f.contains("second Meta app")),
            "{warnings:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fulfillment_without_authentication_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let env = with(
        healthy(dir.path()),
        &[("FULFILLMENT_TOKEN", ""), ("FULFILLMENT_AUTH", "none")],
    );
    let warnings = startup_warnings(&env).await;
    assert_eq!(texts(&warnings).len(), 1, "{warnings:?}");
    assert!(texts(&warnings)[0].starts_with("FULFILLMENT_AUTH=none"));
    assert!(
        warnings[0]["fix"]
            .as_str()
            .unwrap()
            .contains("FULFILLMENT_TOKEN")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_sync_off_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let env = with(
        healthy(dir.path()),
        &[
            ("DIALOGFLOW_PROJECT_ID", ""),
            ("GOOGLE_METADATA_TOKEN_URL", ""),
        ],
    );
    let warnings = startup_warnings(&env).await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(texts(&warnings)[0].contains("context sync is off"));
    assert!(
        warnings[0]["fix"]
            .as_str()
            .unwrap()
            .contains("DIALOGFLOW_PROJECT_ID")
    );
}

/// `serve` with pretty logs and a store it cannot open: it warns (context sync off), fails to
/// start and exits, so its whole output can be read. `through_terminal` runs it under a
/// pseudo-terminal (util-linux `script`), as in a person's shell.
fn pretty_output(through_terminal: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let env = with(
        healthy(dir.path()),
        &[
            ("LOG_FORMAT", "pretty"),
            ("DIALOGFLOW_PROJECT_ID", ""),
            ("GOOGLE_METADATA_TOKEN_URL", ""),
            ("DATABASE_URL", "sqlite:///nonexistent-dir/h.db"),
        ],
    );
    let mut cmd = if through_terminal {
        let mut cmd = Command::new("script");
        cmd.args(["--quiet", "--return", "--command"])
            .arg(format!("{} serve", common::process::BIN))
            .arg("/dev/null");
        cmd
    } else {
        let mut cmd = Command::new(common::process::BIN);
        cmd.arg("serve");
        cmd
    };
    let out = cmd
        .env_clear()
        .envs(env)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .expect("it runs");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("context sync is off"), "{text}");
    assert!(text.contains("cannot start"), "{text}");
    text
}

#[test]
fn pretty_logs_are_coloured_only_on_a_terminal() {
    const ESC: char = '\x1b';
    let piped = pretty_output(false);
    assert!(
        !piped.contains(ESC),
        "colour codes in piped logs: {piped:?}"
    );
    assert!(piped.contains("WARN"), "{piped}");
    let terminal = pretty_output(true);
    assert!(
        terminal.contains(ESC),
        "no colour on a terminal: {terminal:?}"
    );
}

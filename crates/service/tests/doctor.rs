//! `messenger-handover doctor [--fix]` against the emulated Messenger Platform and Dialogflow:
//! a healthy setup, each kind of problem, `--fix`, and the real binary's exit codes.

use std::path::Path;
use std::process::Command;

use handover_emulator::{Emulator, EmulatorConfig};
use messenger_handover::config::{RawSettings, Settings};
use messenger_handover::doctor::{Finding, run};
use messenger_handover::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_messenger-handover");
const FULFILLMENT_TOKEN: &str = "doctor-fulfillment-token-0123456789";

/// Settings for a healthy companion setup on `emu`, as (name, value) pairs.
fn pairs(emu: &Emulator, database_url: &str) -> Vec<(String, String)> {
    let cfg = emu.config();
    let base = emu.base_url();
    [
        ("DATABASE_URL", database_url.to_owned()),
        ("FB_APP_ID", cfg.bot_app_id.clone()),
        ("FB_APP_SECRET", cfg.bot_app_secret.clone()),
        ("FB_PAGE_ACCESS_TOKEN", cfg.page_token.clone()),
        ("FB_WEBHOOK_APP_ID", cfg.companion_app_id.clone()),
        ("FB_WEBHOOK_APP_SECRET", cfg.companion_app_secret.clone()),
        (
            "FB_WEBHOOK_PAGE_ACCESS_TOKEN",
            cfg.companion_page_token.clone(),
        ),
        ("FB_VERIFY_TOKEN", "doctor-verify-token".to_owned()),
        ("FB_PAGE_ID", cfg.page_id.clone()),
        ("GRAPH_API_BASE", base.clone()),
        ("GRAPH_API_VERSION", cfg.graph_version.clone()),
        ("DIALOGFLOW_PROJECT_ID", cfg.dialogflow_project.clone()),
        ("DIALOGFLOW_API_BASE", base.clone()),
        ("GOOGLE_METADATA_TOKEN_URL", emu.metadata_token_url()),
        ("FULFILLMENT_TOKEN", FULFILLMENT_TOKEN.to_owned()),
        ("HTTP_TIMEOUT_MS", "5000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Every secret the settings hold: none may ever be printed.
fn secrets(emu: &Emulator) -> Vec<String> {
    let cfg = emu.config();
    vec![
        cfg.bot_app_secret,
        cfg.page_token,
        cfg.companion_app_secret,
        cfg.companion_page_token,
        "doctor-verify-token".into(),
        FULFILLMENT_TOKEN.into(),
    ]
}

fn settings(emu: &Emulator, database_url: &str, overrides: &[(&str, &str)]) -> Settings {
    let mut raw = RawSettings::from_pairs(pairs(emu, database_url));
    for (k, v) in overrides {
        raw.set(*k, *v);
    }
    Settings::from_raw(&raw).expect("valid settings")
}

async fn migrated_store(dir: &Path) -> String {
    let url = format!("sqlite://{}", dir.join("handover.db").display());
    let store = Store::connect(&url).await.expect("store");
    store.migrate().await.expect("migrate");
    store.close().await;
    url
}

fn report(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(Finding::line)
        .collect::<Vec<_>>()
        .join("\n")
}

fn failed(findings: &[Finding]) -> Vec<&Finding> {
    findings.iter().filter(|f| !f.ok).collect()
}

/// Every ✗ says how to fix it, and nothing shows a secret.
fn check_shape(emu: &Emulator, findings: &[Finding]) {
    let text = report(findings);
    for f in findings {
        assert!(
            f.ok || f.fix.as_deref().is_some_and(|fix| !fix.is_empty()),
            "a ✗ without a fix: {f:?}"
        );
    }
    for secret in secrets(emu) {
        assert!(!text.contains(&secret), "{secret} printed:\n{text}");
    }
}

fn assert_all_ok(emu: &Emulator, findings: &[Finding]) {
    check_shape(emu, findings);
    assert!(failed(findings).is_empty(), "{}", report(findings));
}

/// Exactly one ✗, whose text contains `needle`; returns it.
fn only_failure<'a>(emu: &Emulator, findings: &'a [Finding], needle: &str) -> &'a Finding {
    check_shape(emu, findings);
    let failed = failed(findings);
    assert_eq!(failed.len(), 1, "{}", report(findings));
    assert!(failed[0].text.contains(needle), "{}", report(findings));
    failed[0]
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_passes_every_check() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = migrated_store(dir.path()).await;
    let findings = run(&settings(&emu, &url, &[]), false).await;
    println!("{}", report(&findings));
    assert_all_ok(&emu, &findings);
    let text = report(&findings);
    for expected in [
        "MESSENGER_MODE=companion",
        "GET /me is Page \"Demo Shop\"",
        "FB_PAGE_ID=104857600000001 is the Page of the token",
        "pages_messaging_handover permission does not exist",
        "GRAPH_API_VERSION=v25.0 is available until 2028-07-29",
        "Conversation Routing is on",
        "standby, messaging_handovers, message_echoes",
        "Page Inbox (263902037430900)",
        "yield an access token",
        "agent \"demo-agent\"",
        "fulfillment auth",
        "reachable and migrated",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    // Nothing was changed on the Page.
    assert_eq!(
        emu.subscribed_fields(&emu.config().companion_app_id),
        vec!["standby", "messaging_handovers", "message_echoes"]
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_field_is_reported_and_fix_subscribes_it() {
    let emu = Emulator::start(EmulatorConfig {
        companion_fields: vec!["messaging_handovers".into(), "message_echoes".into()],
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let companion = emu.config().companion_app_id;
    let dir = tempfile::tempdir().unwrap();
    let url = migrated_store(dir.path()).await;
    let s = settings(&emu, &url, &[]);

    let findings = run(&s, false).await;
    let f = only_failure(&emu, &findings, "not subscribed to standby");
    assert!(f.fix.as_deref().unwrap().contains("doctor --fix"), "{f:?}");
    assert!(
        !emu.subscribed_fields(&companion)
            .contains(&"standby".to_owned())
    );

    let findings = run(&s, true).await;
    println!("{}", report(&findings));
    assert_all_ok(&emu, &findings);
    assert!(
        report(&findings).contains("--fix subscribed standby with FB_WEBHOOK_PAGE_ACCESS_TOKEN"),
        "{}",
        report(&findings)
    );
    // The companion's fields now include standby, and kept the others.
    let fields = emu.subscribed_fields(&companion);
    for f in ["standby", "messaging_handovers", "message_echoes"] {
        assert!(fields.iter().any(|have| have == f), "{fields:?}");
    }
    // The bot app's own subscription is untouched.
    assert_eq!(
        emu.subscribed_fields(&emu.config().bot_app_id),
        vec!["messages", "messaging_postbacks"]
    );

    assert_all_ok(&emu, &run(&s, false).await);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_without_the_webhook_apps_token_says_which_variable_to_set() {
    let emu = Emulator::start(EmulatorConfig {
        companion_fields: vec!["messaging_handovers".into()],
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = migrated_store(dir.path()).await;
    let s = settings(&emu, &url, &[("FB_WEBHOOK_PAGE_ACCESS_TOKEN", "")]);
    let findings = run(&s, true).await;
    let f = only_failure(&emu, &findings, "FB_WEBHOOK_PAGE_ACCESS_TOKEN is not set");
    assert!(f.text.contains("standby, message_echoes"), "{f:?}");
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .contains("FB_WEBHOOK_PAGE_ACCESS_TOKEN")
    );
    assert_eq!(
        emu.subscribed_fields(&emu.config().companion_app_id),
        vec!["messaging_handovers"]
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_with_a_token_that_cannot_subscribe_explains_the_permission() {
    let emu = Emulator::start(EmulatorConfig {
        companion_fields: vec!["messaging_handovers".into(), "message_echoes".into()],
        companion_page_scopes: vec!["pages_messaging".into()],
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = migrated_store(dir.path()).await;
    let findings = run(&settings(&emu, &url, &[]), true).await;
    let f = only_failure(&emu, &findings, "--fix could not subscribe");
    assert!(
        f.fix.as_deref().unwrap().contains("pages_manage_metadata"),
        "{f:?}"
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_mode_is_not_served_yet_and_fix_uses_the_bot_apps_token() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let cfg = emu.config();
    let dir = tempfile::tempdir().unwrap();
    let url = migrated_store(dir.path()).await;
    // In bridge mode the bot app's webhook is /messenger.
    let s = settings(
        &emu,
        &url,
        &[
            ("MESSENGER_MODE", "bridge"),
            ("FB_WEBHOOK_APP_ID", ""),
            ("FB_WEBHOOK_APP_SECRET", ""),
            ("FB_WEBHOOK_PAGE_ACCESS_TOKEN", ""),
        ],
    );
    let findings = run(&s, false).await;
    check_shape(&emu, &findings);
    let failed = failed(&findings);
    assert_eq!(failed.len(), 2, "{}", report(&findings));
    assert!(failed[0].text.contains("MESSENGER_MODE=bridge"));
    assert!(
        failed[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("MESSENGER_MODE=companion")
    );
    assert!(
        failed[1]
            .text
            .contains("standby, messaging_handovers, message_echoes")
    );

    let findings = run(&s, true).await;
    check_shape(&emu, &findings);
    assert_eq!(failed_count(&findings), 1, "{}", report(&findings));
    assert!(report(&findings).contains("with FB_PAGE_ACCESS_TOKEN"));
    let fields = emu.subscribed_fields(&cfg.bot_app_id);
    for f in [
        "messages",
        "messaging_postbacks",
        "standby",
        "messaging_handovers",
        "message_echoes",
    ] {
        assert!(fields.iter().any(|have| have == f), "{fields:?}");
    }
    emu.stop().await;
}

fn failed_count(findings: &[Finding]) -> usize {
    failed(findings).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_token_without_pages_messaging_fails() {
    let emu = Emulator::start(EmulatorConfig {
        page_scopes: vec!["pages_show_list".into(), "pages_manage_metadata".into()],
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = migrated_store(dir.path()).await;
    let findings = run(&settings(&emu, &url, &[]), false).await;
    let f = only_failure(&emu, &findings, "lacks pages_messaging");
    assert!(
        f.text
            .contains("pages_messaging_handover permission does not exist")
    );
    assert!(f.fix.as_deref().unwrap().contains("pages_messaging"));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_page_token_fails_with_a_fix() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = migrated_store(dir.path()).await;
    let findings = run(
        &settings(
            &emu,
            &url,
            &[("FB_PAGE_ACCESS_TOKEN", "EAAB-not-the-token")],
        ),
        false,
    )
    .await;
    println!("{}", report(&findings));
    check_shape(&emu, &findings);
    let text = report(&findings);
    assert!(!text.contains("EAAB-not-the-token"), "{text}");
    let me = findings
        .iter()
        .find(|f| f.text.contains("GET /me"))
        .expect("a /me finding");
    assert!(!me.ok);
    assert!(
        me.fix.as_deref().unwrap().contains("FB_PAGE_ACCESS_TOKEN"),
        "{me:?}"
    );
    assert!(text.contains("debug_token says FB_PAGE_ACCESS_TOKEN is not valid"));
    // Dialogflow, fulfillment and the store do not depend on it.
    for ok in [
        "yield an access token",
        "fulfillment auth",
        "reachable and migrated",
    ] {
        assert!(
            findings.iter().any(|f| f.ok && f.text.contains(ok)),
            "{ok}: {text}"
        );
    }
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_page_id_fails() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = migrated_store(dir.path()).await;
    let findings = run(
        &settings(&emu, &url, &[("FB_PAGE_ID", "104857600000999")]),
        false,
    )
    .await;
    check_shape(&emu, &findings);
    let f = failed(&findings)[0];
    assert!(
        f.text
            .contains("FB_PAGE_ID=104857600000999 is not the Page"),
        "{}",
        report(&findings)
    );
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .contains("FB_PAGE_ID=104857600000001")
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_graph_version_fails() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = migrated_store(dir.path()).await;
    let findings = run(
        &settings(&emu, &url, &[("GRAPH_API_VERSION", "v18.0")]),
        false,
    )
    .await;
    let f = only_failure(
        &emu,
        &findings,
        "GRAPH_API_VERSION=v18.0 expired on 2026-01-26",
    );
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .contains("GRAPH_API_VERSION=v25.0")
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_routing_off_fails() {
    let emu = Emulator::start(EmulatorConfig {
        messaging_feature_status: serde_json::json!({
            "hop_v2": true, "msgr_multi_app": false, "ig_multi_app": false
        }),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = migrated_store(dir.path()).await;
    let findings = run(&settings(&emu, &url, &[]), false).await;
    let f = only_failure(&emu, &findings, "Conversation Routing is not set up");
    assert!(f.fix.as_deref().unwrap().contains("default app"));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fulfillment_auth_fails() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = migrated_store(dir.path()).await;
    let findings = run(
        &settings(
            &emu,
            &url,
            &[("FULFILLMENT_TOKEN", ""), ("FULFILLMENT_AUTH", "none")],
        ),
        false,
    )
    .await;
    let f = only_failure(&emu, &findings, "FULFILLMENT_AUTH=none");
    assert!(f.fix.as_deref().unwrap().contains("FULFILLMENT_TOKEN"));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_not_migrated_fails() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("empty.db").display());
    let store = Store::connect(&url).await.unwrap();
    store.close().await;
    let findings = run(&settings(&emu, &url, &[]), false).await;
    let f = only_failure(&emu, &findings, "not ready");
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .contains("messenger-handover migrate")
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_sqlite_file_fails_and_is_not_created() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("missing.db");
    let url = format!("sqlite://{}", file.display());
    let findings = run(&settings(&emu, &url, &[]), false).await;
    let f = only_failure(&emu, &findings, "does not exist");
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .contains("messenger-handover migrate")
    );
    assert!(!file.exists(), "doctor created the SQLite file");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_store_fails() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let findings = run(&settings(&emu, "sqlite::memory:", &[]), false).await;
    let f = only_failure(&emu, &findings, "in-memory");
    assert!(f.fix.as_deref().unwrap().contains("migrate"));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_google_token_endpoint_fails() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = migrated_store(dir.path()).await;
    let metadata = format!("http://127.0.0.1:{}/token", closed_port());
    let findings = run(
        &settings(&emu, &url, &[("GOOGLE_METADATA_TOKEN_URL", &metadata)]),
        false,
    )
    .await;
    println!("{}", report(&findings));
    check_shape(&emu, &findings);
    let failed = failed(&findings);
    assert_eq!(failed.len(), 2, "{}", report(&findings));
    assert!(failed[0].text.contains("yield no access token"));
    assert!(
        failed[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("GOOGLE_METADATA_TOKEN_URL")
    );
    assert!(failed[1].text.contains("not checked"));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_dialogflow_project_fails() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = migrated_store(dir.path()).await;
    let findings = run(
        &settings(&emu, &url, &[("DIALOGFLOW_PROJECT_ID", "someone-else")]),
        false,
    )
    .await;
    let f = only_failure(&emu, &findings, "cannot read the Dialogflow agent");
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .contains("roles/dialogflow.client"),
        "{f:?}"
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dialogflow_context_sync_is_off_by_choice() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = migrated_store(dir.path()).await;
    let findings = run(
        &settings(&emu, &url, &[("DIALOGFLOW_PROJECT_ID", "")]),
        false,
    )
    .await;
    assert_all_ok(&emu, &findings);
    assert!(
        findings
            .iter()
            .any(|f| f.ok && f.text.contains("context sync is off by choice"))
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_target_that_is_not_on_the_page_fails() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = migrated_store(dir.path()).await;
    let findings = run(
        &settings(&emu, &url, &[("HANDOVER_TARGET_APP_ID", "333333333333333")]),
        false,
    )
    .await;
    let f = only_failure(&emu, &findings, "is not the Page Inbox");
    assert!(f.fix.as_deref().unwrap().contains("Page Inbox"));
    emu.stop().await;
}

/// Runs the binary with exactly these environment variables.
async fn doctor_binary(env: Vec<(String, String)>, args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(BIN)
            .arg("doctor")
            .args(&args)
            .env_clear()
            .envs(env)
            .output()
            .expect("the binary runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_0_when_healthy_1_on_problems_2_on_bad_settings() {
    let emu = Emulator::start(EmulatorConfig {
        companion_fields: vec!["messaging_handovers".into(), "message_echoes".into()],
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = migrated_store(dir.path()).await;
    let env = pairs(&emu, &url);

    let lines_start_with_marks = |stdout: &str| {
        assert!(!stdout.trim().is_empty());
        for line in stdout.lines() {
            assert!(
                line.starts_with("✓ ") || line.starts_with("✗ "),
                "line {line:?} in\n{stdout}"
            );
        }
        for secret in secrets(&emu) {
            assert!(!stdout.contains(&secret), "{secret} printed:\n{stdout}");
        }
    };

    // The companion lacks standby: exit 1.
    let (code, stdout, stderr) = doctor_binary(env.clone(), &[]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    lines_start_with_marks(&stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("✗ ")).count(),
        1,
        "{stdout}"
    );
    assert!(stdout.contains("not subscribed to standby"), "{stdout}");

    // --fix subscribes it: exit 0, every line ✓.
    let (code, stdout, stderr) = doctor_binary(env.clone(), &["--fix"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    lines_start_with_marks(&stdout);
    assert!(stdout.lines().all(|l| l.starts_with("✓ ")), "{stdout}");
    assert!(stdout.contains("--fix subscribed standby"), "{stdout}");

    // Healthy now, without --fix.
    let (code, stdout, stderr) = doctor_binary(env.clone(), &[]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    println!("{stdout}");
    assert!(stdout.lines().all(|l| l.starts_with("✓ ")), "{stdout}");

    // An expired Graph API version: exit 1.
    let mut expired = env.clone();
    expired.push(("GRAPH_API_VERSION".into(), "v18.0".into()));
    let (code, stdout, stderr) = doctor_binary(expired, &[]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    lines_start_with_marks(&stdout);
    assert!(
        stdout.contains("✗ GRAPH_API_VERSION=v18.0 expired"),
        "{stdout}"
    );

    // Invalid settings: exit 2, one line per problem naming the variable.
    let bad: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "FB_APP_ID")
        .cloned()
        .collect();
    let (code, stdout, stderr) = doctor_binary(bad, &[]).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.lines().any(|l| l.starts_with("FB_APP_ID:")),
        "{stderr}"
    );
    emu.stop().await;
}

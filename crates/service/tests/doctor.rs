//! `messenger-handover doctor [--fix]` against the emulated Messenger Platform and Dialogflow:
//! a healthy setup, each kind of problem, `--fix`, the real binary's exit codes, and
//! `demo --serve`'s printed settings.
//!
//! [`DoctorWorld`] describes a healthy companion setup (the emulator's answers, the settings,
//! a migrated SQLite store); each test changes the one thing it checks, starts it and reads the
//! [`Report`].

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use handover_emulator::{Emulator, EmulatorConfig};
use messenger_handover::config::{RawSettings, Settings};
use messenger_handover::doctor::{Finding, run};
use messenger_handover::store::Store;
use serde_json::Value;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_messenger-handover");
const FULFILLMENT_TOKEN: &str = "doctor-fulfillment-token-0123456789";
const VERIFY_TOKEN: &str = "doctor-verify-token";

/// The store doctor is pointed at.
#[derive(Clone, Copy)]
enum StoreKind {
    /// `handover.db`, migrated.
    Migrated,
    /// `empty.db`, created but never migrated.
    NotMigrated,
    /// `missing.db`, which does not exist.
    Missing,
    InMemory,
}

/// What the emulated Meta and Google answer, the settings, and the store: healthy unless a
/// method changes it.
struct DoctorWorld {
    emulator: EmulatorConfig,
    overrides: Vec<(String, String)>,
    store: StoreKind,
}

impl DoctorWorld {
    fn healthy() -> DoctorWorld {
        DoctorWorld {
            emulator: EmulatorConfig::default(),
            overrides: Vec::new(),
            store: StoreKind::Migrated,
        }
    }

    /// The fields the companion app (`FB_WEBHOOK_APP_ID`) is subscribed to.
    fn companion_fields(mut self, fields: &[&str]) -> Self {
        self.emulator.companion_fields = strings(fields);
        self
    }

    /// The scopes `debug_token` reports for the bot app's Page token.
    fn page_scopes(mut self, scopes: &[&str]) -> Self {
        self.emulator.page_scopes = strings(scopes);
        self
    }

    /// The scopes of the companion app's Page token (`POST subscribed_apps` needs
    /// `pages_manage_metadata`).
    fn companion_page_scopes(mut self, scopes: &[&str]) -> Self {
        self.emulator.companion_page_scopes = strings(scopes);
        self
    }

    /// `GET /me?fields=messaging_feature_status`.
    fn feature_status(mut self, status: Value) -> Self {
        self.emulator.messaging_feature_status = status;
        self
    }

    /// A setting that differs from the healthy one (`""` unsets it).
    fn set(mut self, name: &str, value: &str) -> Self {
        self.overrides.push((name.to_owned(), value.to_owned()));
        self
    }

    fn store(mut self, store: StoreKind) -> Self {
        self.store = store;
        self
    }

    async fn start(self) -> Doctor {
        let emu = Emulator::start(self.emulator).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sqlite = |file: &str| format!("sqlite://{}", dir.path().join(file).display());
        let database_url = match self.store {
            StoreKind::Migrated => {
                let url = sqlite("handover.db");
                let store = Store::connect(&url).await.expect("store");
                store.migrate().await.expect("migrate");
                store.close().await;
                url
            }
            StoreKind::NotMigrated => {
                let url = sqlite("empty.db");
                Store::connect(&url).await.unwrap().close().await;
                url
            }
            StoreKind::Missing => sqlite("missing.db"),
            StoreKind::InMemory => "sqlite::memory:".to_owned(),
        };
        let mut env = healthy_settings(&emu, &database_url);
        env.retain(|(k, _)| !self.overrides.iter().any(|(o, _)| o == k));
        env.extend(self.overrides);
        Doctor { emu, dir, env }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Settings for a healthy companion setup on `emu`, as (name, value) pairs.
fn healthy_settings(emu: &Emulator, database_url: &str) -> Vec<(String, String)> {
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
        ("FB_VERIFY_TOKEN", VERIFY_TOKEN.to_owned()),
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

/// A started [`DoctorWorld`].
struct Doctor {
    emu: Emulator,
    dir: TempDir,
    /// The settings, as the binary's environment.
    env: Vec<(String, String)>,
}

impl Doctor {
    fn settings(&self) -> Settings {
        Settings::from_raw(&RawSettings::from_pairs(self.env.clone())).expect("valid settings")
    }

    /// `doctor`.
    async fn check(&self) -> Report {
        self.report(run(&self.settings(), false).await)
    }

    /// `doctor --fix`.
    async fn fix(&self) -> Report {
        self.report(run(&self.settings(), true).await)
    }

    fn report(&self, findings: Vec<Finding>) -> Report {
        Report {
            findings,
            secrets: secrets(&self.emu),
        }
    }

    /// The fields `app_id` is subscribed to now.
    fn fields_of(&self, app_id: &str) -> Vec<String> {
        self.emu.subscribed_fields(app_id)
    }

    fn config(&self) -> EmulatorConfig {
        self.emu.config()
    }

    fn store_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn stop(self) {
        self.emu.stop().await;
    }
}

/// Every secret the settings hold: none may ever be printed.
fn secrets(emu: &Emulator) -> Vec<String> {
    let cfg = emu.config();
    vec![
        cfg.bot_app_secret,
        cfg.page_token,
        cfg.companion_app_secret,
        cfg.companion_page_token,
        VERIFY_TOKEN.into(),
        FULFILLMENT_TOKEN.into(),
    ]
}

/// What doctor found.
struct Report {
    findings: Vec<Finding>,
    secrets: Vec<String>,
}

impl Report {
    fn text(&self) -> String {
        self.findings
            .iter()
            .map(Finding::line)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn failed(&self) -> Vec<&Finding> {
        self.findings.iter().filter(|f| !f.ok).collect()
    }

    /// Every ✗ says how to fix it, and nothing shows a secret.
    fn check_shape(&self) {
        let text = self.text();
        for f in &self.findings {
            assert!(
                f.ok || f.fix.as_deref().is_some_and(|fix| !fix.is_empty()),
                "a ✗ without a fix: {f:?}"
            );
        }
        for secret in &self.secrets {
            assert!(!text.contains(secret), "{secret} printed:\n{text}");
        }
    }

    fn assert_all_ok(&self) {
        self.check_shape();
        assert!(self.failed().is_empty(), "{}", self.text());
    }

    /// Exactly one ✗, whose text contains `needle`; returns it.
    fn only_failure(&self, needle: &str) -> &Finding {
        self.check_shape();
        let failed = self.failed();
        assert_eq!(failed.len(), 1, "{}", self.text());
        assert!(failed[0].text.contains(needle), "{}", self.text());
        failed[0]
    }

    /// An ✓ line contains `needle`.
    fn passes(&self, needle: &str) -> bool {
        self.findings
            .iter()
            .any(|f| f.ok && f.text.contains(needle))
    }
}

/// The fix of a ✗.
fn fix(f: &Finding) -> &str {
    f.fix.as_deref().unwrap()
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_passes_every_check() {
    let world = DoctorWorld::healthy().start().await;
    let report = world.check().await;
    println!("{}", report.text());
    report.assert_all_ok();
    let text = report.text();
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
        world.fields_of(&world.config().companion_app_id),
        vec!["standby", "messaging_handovers", "message_echoes"]
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_field_is_reported_and_fix_subscribes_it() {
    let world = DoctorWorld::healthy()
        .companion_fields(&["messaging_handovers", "message_echoes"])
        .start()
        .await;
    let companion = world.config().companion_app_id;

    let report = world.check().await;
    let f = report.only_failure("not subscribed to standby");
    assert!(fix(f).contains("doctor --fix"), "{f:?}");
    assert!(!world.fields_of(&companion).contains(&"standby".to_owned()));

    let report = world.fix().await;
    println!("{}", report.text());
    report.assert_all_ok();
    assert!(
        report
            .text()
            .contains("--fix subscribed standby with FB_WEBHOOK_PAGE_ACCESS_TOKEN"),
        "{}",
        report.text()
    );
    // The companion's fields now include standby, and kept the others.
    let fields = world.fields_of(&companion);
    for f in ["standby", "messaging_handovers", "message_echoes"] {
        assert!(fields.iter().any(|have| have == f), "{fields:?}");
    }
    // The bot app's own subscription is untouched.
    assert_eq!(
        world.fields_of(&world.config().bot_app_id),
        vec!["messages", "messaging_postbacks"]
    );

    world.check().await.assert_all_ok();
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_without_the_webhook_apps_token_says_which_variable_to_set() {
    let world = DoctorWorld::healthy()
        .companion_fields(&["messaging_handovers"])
        .set("FB_WEBHOOK_PAGE_ACCESS_TOKEN", "")
        .start()
        .await;
    let report = world.fix().await;
    let f = report.only_failure("FB_WEBHOOK_PAGE_ACCESS_TOKEN is not set");
    assert!(f.text.contains("standby, message_echoes"), "{f:?}");
    assert!(fix(f).contains("FB_WEBHOOK_PAGE_ACCESS_TOKEN"));
    assert_eq!(
        world.fields_of(&world.config().companion_app_id),
        vec!["messaging_handovers"]
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_with_a_token_that_cannot_subscribe_explains_the_permission() {
    let world = DoctorWorld::healthy()
        .companion_fields(&["messaging_handovers", "message_echoes"])
        .companion_page_scopes(&["pages_messaging"])
        .start()
        .await;
    let report = world.fix().await;
    let f = report.only_failure("--fix could not subscribe");
    assert!(fix(f).contains("pages_manage_metadata"), "{f:?}");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_mode_is_not_served_yet_and_fix_uses_the_bot_apps_token() {
    // In bridge mode the bot app's webhook is /messenger.
    let world = DoctorWorld::healthy()
        .set("MESSENGER_MODE", "bridge")
        .set("FB_WEBHOOK_APP_ID", "")
        .set("FB_WEBHOOK_APP_SECRET", "")
        .set("FB_WEBHOOK_PAGE_ACCESS_TOKEN", "")
        .start()
        .await;
    let report = world.check().await;
    report.check_shape();
    let failed = report.failed();
    assert_eq!(failed.len(), 2, "{}", report.text());
    assert!(failed[0].text.contains("MESSENGER_MODE=bridge"));
    assert!(fix(failed[0]).contains("MESSENGER_MODE=companion"));
    assert!(
        failed[1]
            .text
            .contains("standby, messaging_handovers, message_echoes")
    );

    let report = world.fix().await;
    report.check_shape();
    assert_eq!(report.failed().len(), 1, "{}", report.text());
    assert!(report.text().contains("with FB_PAGE_ACCESS_TOKEN"));
    let fields = world.fields_of(&world.config().bot_app_id);
    for f in [
        "messages",
        "messaging_postbacks",
        "standby",
        "messaging_handovers",
        "message_echoes",
    ] {
        assert!(fields.iter().any(|have| have == f), "{fields:?}");
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_token_without_pages_messaging_fails() {
    let world = DoctorWorld::healthy()
        .page_scopes(&["pages_show_list", "pages_manage_metadata"])
        .start()
        .await;
    let report = world.check().await;
    let f = report.only_failure("lacks pages_messaging");
    assert!(
        f.text
            .contains("pages_messaging_handover permission does not exist")
    );
    assert!(fix(f).contains("pages_messaging"));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_page_token_fails_with_a_fix() {
    let world = DoctorWorld::healthy()
        .set("FB_PAGE_ACCESS_TOKEN", "EAAB-not-the-token")
        .start()
        .await;
    let report = world.check().await;
    println!("{}", report.text());
    report.check_shape();
    let text = report.text();
    assert!(!text.contains("EAAB-not-the-token"), "{text}");
    let me = report
        .findings
        .iter()
        .find(|f| f.text.contains("GET /me"))
        .expect("a /me finding");
    assert!(!me.ok);
    assert!(fix(me).contains("FB_PAGE_ACCESS_TOKEN"), "{me:?}");
    assert!(text.contains("debug_token says FB_PAGE_ACCESS_TOKEN is not valid"));
    // Dialogflow, fulfillment and the store do not depend on it.
    for ok in [
        "yield an access token",
        "fulfillment auth",
        "reachable and migrated",
    ] {
        assert!(report.passes(ok), "{ok}: {text}");
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_page_id_fails() {
    let world = DoctorWorld::healthy()
        .set("FB_PAGE_ID", "104857600000999")
        .start()
        .await;
    let report = world.check().await;
    report.check_shape();
    let f = report.failed()[0];
    assert!(
        f.text
            .contains("FB_PAGE_ID=104857600000999 is not the Page"),
        "{}",
        report.text()
    );
    assert!(fix(f).contains("FB_PAGE_ID=104857600000001"));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_graph_version_fails() {
    let world = DoctorWorld::healthy()
        .set("GRAPH_API_VERSION", "v18.0")
        .start()
        .await;
    let report = world.check().await;
    let f = report.only_failure("GRAPH_API_VERSION=v18.0 expired on 2026-01-26");
    assert!(fix(f).contains("GRAPH_API_VERSION=v25.0"));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_routing_off_fails() {
    let world = DoctorWorld::healthy()
        .feature_status(serde_json::json!({
            "hop_v2": true, "msgr_multi_app": false, "ig_multi_app": false
        }))
        .start()
        .await;
    let report = world.check().await;
    let f = report.only_failure("Conversation Routing is not set up");
    assert!(fix(f).contains("default app"));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fulfillment_auth_fails() {
    let world = DoctorWorld::healthy()
        .set("FULFILLMENT_TOKEN", "")
        .set("FULFILLMENT_AUTH", "none")
        .start()
        .await;
    let report = world.check().await;
    let f = report.only_failure("FULFILLMENT_AUTH=none");
    assert!(fix(f).contains("FULFILLMENT_TOKEN"));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_not_migrated_fails() {
    let world = DoctorWorld::healthy()
        .store(StoreKind::NotMigrated)
        .start()
        .await;
    let report = world.check().await;
    let f = report.only_failure("not ready");
    assert!(fix(f).contains("messenger-handover migrate"));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_sqlite_file_fails_and_is_not_created() {
    let world = DoctorWorld::healthy()
        .store(StoreKind::Missing)
        .start()
        .await;
    let report = world.check().await;
    let f = report.only_failure("does not exist");
    assert!(fix(f).contains("messenger-handover migrate"));
    assert!(
        !world.store_file("missing.db").exists(),
        "doctor created the SQLite file"
    );
    assert_eq!(std::fs::read_dir(world.dir.path()).unwrap().count(), 0);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_store_fails() {
    let world = DoctorWorld::healthy()
        .store(StoreKind::InMemory)
        .start()
        .await;
    let report = world.check().await;
    let f = report.only_failure("in-memory");
    assert!(fix(f).contains("migrate"));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_google_token_endpoint_fails() {
    let metadata = format!("http://127.0.0.1:{}/token", closed_port());
    let world = DoctorWorld::healthy()
        .set("GOOGLE_METADATA_TOKEN_URL", &metadata)
        .start()
        .await;
    let report = world.check().await;
    println!("{}", report.text());
    report.check_shape();
    let failed = report.failed();
    assert_eq!(failed.len(), 2, "{}", report.text());
    assert!(failed[0].text.contains("yield no access token"));
    assert!(fix(failed[0]).contains("GOOGLE_METADATA_TOKEN_URL"));
    assert!(failed[1].text.contains("not checked"));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_dialogflow_project_fails() {
    let world = DoctorWorld::healthy()
        .set("DIALOGFLOW_PROJECT_ID", "someone-else")
        .start()
        .await;
    let report = world.check().await;
    let f = report.only_failure("cannot read the Dialogflow agent");
    assert!(fix(f).contains("roles/dialogflow.client"), "{f:?}");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companion_mode_whose_webhook_app_is_the_bot_app_fails() {
    // FB_WEBHOOK_APP_ID unset: it defaults to FB_APP_ID, whose webhook is Dialogflow's.
    let world = DoctorWorld::healthy()
        .set("FB_WEBHOOK_APP_ID", "")
        .set("FB_WEBHOOK_APP_SECRET", "")
        .set("FB_WEBHOOK_PAGE_ACCESS_TOKEN", "")
        .start()
        .await;
    let report = world.check().await;
    report.check_shape();
    let failed = report.failed();
    let bot = world.config().bot_app_id;
    let mode = failed
        .iter()
        .find(|f| f.text.contains("MESSENGER_MODE=companion"))
        .unwrap_or_else(|| panic!("no ✗ for the mode:\n{}", report.text()));
    assert!(
        mode.text
            .contains(&format!("FB_WEBHOOK_APP_ID is the bot app {bot} itself")),
        "{mode:?}"
    );
    assert!(fix(mode).contains("second Meta app"), "{mode:?}");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dialogflow_context_sync_is_off_and_fails() {
    let world = DoctorWorld::healthy()
        .set("DIALOGFLOW_PROJECT_ID", "")
        .start()
        .await;
    let report = world.check().await;
    let f = report.only_failure("context sync is off");
    assert!(fix(f).contains("DIALOGFLOW_PROJECT_ID"), "{f:?}");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_target_that_is_not_on_the_page_fails() {
    let world = DoctorWorld::healthy()
        .set("HANDOVER_TARGET_APP_ID", "333333333333333")
        .start()
        .await;
    let report = world.check().await;
    let f = report.only_failure("is not the Page Inbox");
    assert!(fix(f).contains("Page Inbox"));
    world.stop().await;
}

/// Runs the binary's `doctor` with exactly these environment variables.
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

/// Every line is a ✓ or ✗ finding, and no secret is among them.
fn lines_start_with_marks(stdout: &str, secrets: &[String]) {
    assert!(!stdout.trim().is_empty());
    for line in stdout.lines() {
        assert!(
            line.starts_with("✓ ") || line.starts_with("✗ "),
            "line {line:?} in\n{stdout}"
        );
    }
    for secret in secrets {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_0_when_healthy_1_on_problems_2_on_bad_settings() {
    let world = DoctorWorld::healthy()
        .companion_fields(&["messaging_handovers", "message_echoes"])
        .start()
        .await;
    let env = world.env.clone();
    let secrets = secrets(&world.emu);

    // The companion lacks standby: exit 1.
    let (code, stdout, stderr) = doctor_binary(env.clone(), &[]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    lines_start_with_marks(&stdout, &secrets);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("✗ ")).count(),
        1,
        "{stdout}"
    );
    assert!(stdout.contains("not subscribed to standby"), "{stdout}");

    // --fix subscribes it: exit 0, every line ✓.
    let (code, stdout, stderr) = doctor_binary(env.clone(), &["--fix"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    lines_start_with_marks(&stdout, &secrets);
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
    lines_start_with_marks(&stdout, &secrets);
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
    world.stop().await;
}

/// `messenger-handover demo --serve`, stopped (gracefully where possible) when dropped.
struct DemoServe {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl DemoServe {
    fn start() -> DemoServe {
        let mut child = Command::new(BIN)
            .args(["demo", "--serve"])
            .env_clear()
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        DemoServe { child, lines }
    }

    /// The printed lines up to the first one `last` accepts.
    fn read_until(&self, last: impl Fn(&str) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("demo --serve stopped printing after:\n{out:#?}"));
            let done = last(&line);
            out.push(line);
            if done {
                return out;
            }
        }
    }
}

impl Drop for DemoServe {
    fn drop(&mut self) {
        // SIGTERM lets the demo remove its store; a kill is the fallback.
        #[cfg(unix)]
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn doctor_passes_against_demo_serve_with_the_settings_it_prints() {
    let demo = DemoServe::start();
    let printed = demo.read_until(|line| line.ends_with(" doctor"));

    // `   export NAME=value` lines, then the command.
    let mut env = Vec::new();
    for line in &printed {
        if let Some(export) = line.trim().strip_prefix("export ") {
            let words = shlex::split(export).expect("a shell word");
            let (name, value) = words[0].split_once('=').expect("NAME=value");
            env.push((name.to_owned(), value.to_owned()));
        }
    }
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    for name in [
        "DATABASE_URL",
        "FB_APP_ID",
        "FB_APP_SECRET",
        "FB_PAGE_ACCESS_TOKEN",
        "FB_VERIFY_TOKEN",
        "FB_PAGE_ID",
        "FB_WEBHOOK_APP_ID",
        "FB_WEBHOOK_APP_SECRET",
        "FB_WEBHOOK_PAGE_ACCESS_TOKEN",
        "GRAPH_API_BASE",
        "GRAPH_API_VERSION",
        "DIALOGFLOW_PROJECT_ID",
        "DIALOGFLOW_API_BASE",
        "GOOGLE_METADATA_TOKEN_URL",
        "FULFILLMENT_TOKEN",
    ] {
        assert!(names.contains(&name), "{name} not printed:\n{printed:#?}");
    }
    let command = shlex::split(printed.last().unwrap()).expect("a command");
    assert_eq!(command[1..], ["doctor"], "{command:?}");

    let out = Command::new(&command[0])
        .args(&command[1..])
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .expect("the printed command runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.lines().all(|l| l.starts_with("✓ ")), "{stdout}");
    for expected in [
        "GET /me is Page \"Demo Shop\" (104857600000001)",
        "GRAPH_API_VERSION=v25.0 is available until 2028-07-29",
        "Conversation Routing is on for Messenger",
        "is subscribed to standby, messaging_handovers, message_echoes",
        "the Dialogflow agent \"demo-agent\" of project demo-agent (location global) can be \
         read: context sync (restore) can work",
        "(SQLite, sqlite://",
        "is reachable and migrated",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing:\n{stdout}");
    }
    assert!(stderr.contains("doctor: all 14 checks passed"), "{stderr}");
    let secrets = ["FB_APP_SECRET", "FB_PAGE_ACCESS_TOKEN", "FULFILLMENT_TOKEN"];
    for (name, value) in env.iter().filter(|(k, _)| secrets.contains(&k.as_str())) {
        assert!(
            !stdout.contains(value.as_str()),
            "{name} printed:\n{stdout}"
        );
    }
}

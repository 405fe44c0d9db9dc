//! Starting the real service on port 0 against a temporary store and mock servers.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use handover_core::Thread;
use messenger_handover::app::Shared;
use messenger_handover::config::{RawSettings, Settings};
use messenger_handover::messenger::signature;
use messenger_handover::startup::Application;
use messenger_handover::store::{JobRow, Store};
use serde_json::Value;
use wiremock::MockServer;

pub const APP_ID: &str = "111111111111111";
pub const APP_SECRET: &str = "test-app-secret";
pub const PAGE_TOKEN: &str = "EAAtestpagetoken";
pub const VERIFY_TOKEN: &str = "test-verify-token-123";
pub const PAGE_ID: &str = "958823367603818";
pub const PSID: &str = "1534862223272449";
pub const PSID_2: &str = "2031835813581292";
pub const INBOX: &str = "263902037430900";
pub const FULFILLMENT_TOKEN: &str = "fulfillment-token-0123456789abcdef";
pub const GRAPH_VERSION: &str = "v25.0";

/// Which store backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A fresh, empty database for one test; dropped (PostgreSQL) or deleted (SQLite) at the end.
pub struct TestDb {
    pub url: String,
    dir: tempfile::TempDir,
    admin_url: Option<String>,
    name: Option<String>,
}

impl TestDb {
    /// `None` when the backend is not available here (PostgreSQL without TEST_POSTGRES_URL).
    pub async fn new(db: Db) -> Option<TestDb> {
        let dir = tempfile::tempdir().expect("temp dir");
        match db {
            Db::Sqlite => Some(TestDb {
                url: format!("sqlite://{}", dir.path().join("handover.db").display()),
                dir,
                admin_url: None,
                name: None,
            }),
            Db::Postgres => {
                let Ok(admin_url) = std::env::var("TEST_POSTGRES_URL") else {
                    eprintln!(
                        "skipped: TEST_POSTGRES_URL is not set, so the PostgreSQL variant of this test did not run"
                    );
                    return None;
                };
                let name = format!("handover_test_{:016x}", rand::random::<u64>());
                run_admin(&admin_url, &format!("CREATE DATABASE {name}")).await;
                let (base, _) = admin_url
                    .rsplit_once('/')
                    .expect("TEST_POSTGRES_URL has a database");
                Some(TestDb {
                    url: format!("{base}/{name}"),
                    dir,
                    admin_url: Some(admin_url),
                    name: Some(name),
                })
            }
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub async fn drop_db(self) {
        if let (Some(admin), Some(name)) = (&self.admin_url, &self.name) {
            run_admin(
                admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
            .await;
        }
    }
}

async fn run_admin(url: &str, sql: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .expect("TEST_POSTGRES_URL is set but the server cannot be reached");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .expect(sql);
    let _ = conn.close().await;
}

/// The settings every test starts from.
pub fn base_settings(db_url: &str, graph: &str) -> RawSettings {
    RawSettings::from_pairs([
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("DATABASE_URL", db_url),
        ("FB_APP_ID", APP_ID),
        ("FB_APP_SECRET", APP_SECRET),
        ("FB_PAGE_ACCESS_TOKEN", PAGE_TOKEN),
        ("FB_VERIFY_TOKEN", VERIFY_TOKEN),
        ("FB_PAGE_ID", PAGE_ID),
        ("GRAPH_API_BASE", graph),
        ("GRAPH_API_VERSION", GRAPH_VERSION),
        ("FULFILLMENT_TOKEN", FULFILLMENT_TOKEN),
        ("HANDOVER_PASS_DELAY_MS", "0"),
        ("JOB_RETRY_BASE_MS", "20"),
        ("JOB_MAX_ATTEMPTS", "5"),
        ("HTTP_TIMEOUT_MS", "3000"),
    ])
}

pub struct TestApp {
    pub base: String,
    pub services: Shared,
    pub client: reqwest::Client,
    app: Option<Application>,
}

impl TestApp {
    pub async fn start(raw: &RawSettings) -> TestApp {
        let settings = Settings::from_raw(raw).expect("test settings are valid");
        let app = Application::build(settings).await.expect("the app starts");
        TestApp {
            base: format!("http://127.0.0.1:{}", app.port()),
            services: app.services(),
            client: reqwest::Client::new(),
            app: Some(app),
        }
    }

    pub fn store(&self) -> &Store {
        &self.services.store
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }

    pub async fn kill(mut self) {
        if let Some(app) = self.app.take() {
            app.kill().await;
        }
    }

    pub async fn fulfillment(&self, body: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/fulfillment", self.base))
            .bearer_auth(FULFILLMENT_TOKEN)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
    }

    /// A delivery signed like Meta signs it.
    pub async fn deliver(&self, body: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/messenger", self.base))
            .header("content-type", "application/json")
            .header(
                "x-hub-signature-256",
                signature::sign(APP_SECRET, body.as_bytes()),
            )
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
    }

    pub async fn thread(&self, psid: &str) -> Option<Thread> {
        self.store().thread(PAGE_ID, psid).await.expect("store")
    }

    pub async fn jobs(&self, psid: &str) -> Vec<JobRow> {
        self.store().jobs_for(PAGE_ID, psid).await.expect("store")
    }

    /// Waits until the thread satisfies `pred` (or panics after 10 s with the last state).
    pub async fn wait_thread(
        &self,
        psid: &str,
        what: &str,
        pred: impl Fn(&Thread) -> bool,
    ) -> Thread {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let t = self.thread(psid).await;
            if let Some(t) = t.as_ref().filter(|t| pred(t)) {
                return t.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; thread is {t:?}; jobs {:?}",
                    self.jobs(psid).await
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until no job of `psid` is pending or running.
    pub async fn wait_idle(&self, psid: &str) {
        use messenger_handover::store::JobStatus;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let jobs = self.jobs(psid).await;
            if jobs
                .iter()
                .all(|j| !matches!(j.status, JobStatus::Pending | JobStatus::Running))
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("jobs still unfinished: {jobs:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            // A test that panicked: stop without waiting.
            drop(app);
        }
    }
}

pub fn fixture(path: &str) -> String {
    std::fs::read_to_string(format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

pub fn fixture_json(path: &str) -> Value {
    serde_json::from_str(&fixture(path)).expect("fixture is JSON")
}

/// Requests the mock received on `path_suffix` (e.g. "/pass_thread_control"), in order.
pub async fn requests_to(server: &MockServer, path_suffix: &str) -> Vec<wiremock::Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path().ends_with(path_suffix))
        .collect()
}

pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn query_param(req: &wiremock::Request, name: &str) -> Option<String> {
    req.url
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Runs `$body` (an async fn taking a `Db`) once per backend: SQLite always, PostgreSQL when
/// TEST_POSTGRES_URL is set.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::common::app::Db::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::common::app::Db::Postgres).await;
            }
        }
    };
}

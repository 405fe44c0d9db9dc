//! Starting the real service on port 0 against a temporary store and mock servers.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use handover_core::{State, Thread};
use messenger_handover::app::Shared;
use messenger_handover::config::{RawSettings, Settings};
use messenger_handover::messenger::signature;
use messenger_handover::startup::Application;
use messenger_handover::store::{JobRow, Store};
use serde_json::Value;
use wiremock::MockServer;

pub use super::db::{Db, TestDb};

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

/// [`base_settings`] on `db` against `graph` (no Dialogflow), with `overrides`.
pub fn settings(db: &TestDb, graph: &MockServer, overrides: &[(&str, &str)]) -> RawSettings {
    let mut raw = base_settings(&db.url, &graph.uri());
    for (key, value) in overrides {
        raw.set(*key, *value);
    }
    raw
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

    /// The service on `db` against `graph` (no Dialogflow), with `overrides`.
    pub async fn against(db: &TestDb, graph: &MockServer, overrides: &[(&str, &str)]) -> TestApp {
        TestApp::start(&settings(db, graph, overrides)).await
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

    /// Dialogflow calls `/fulfillment` with `fixtures/dialogflow/{name}`; the call succeeds.
    pub async fn fulfill(&self, name: &str) -> reqwest::Response {
        let resp = self
            .fulfillment(&fixture(&format!("dialogflow/{name}")))
            .await;
        assert_eq!(resp.status(), 200, "fulfillment of {name}");
        resp
    }

    /// Meta delivers `body`, and the service acknowledges it.
    pub async fn deliver_ok(&self, body: &str) -> reqwest::Response {
        let resp = self.deliver(body).await;
        assert_eq!(resp.status(), 200, "delivery of {body}");
        resp
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

    /// Waits until `psid`'s thread is in `state`.
    pub async fn wait_state(&self, psid: &str, state: State) -> Thread {
        self.wait_thread(psid, state.as_str(), |t| t.state == state)
            .await
    }

    /// Waits until `psid`'s thread is in `state` and then until its jobs have run; returns
    /// the thread as it was when it reached `state`.
    pub async fn settled_in(&self, psid: &str, state: State) -> Thread {
        let thread = self.wait_state(psid, state).await;
        self.wait_idle(psid).await;
        thread
    }

    /// The audit trail of `psid`'s thread as `FROM->TO` steps.
    pub async fn audit(&self, psid: &str) -> Vec<String> {
        self.store()
            .transitions(PAGE_ID, psid)
            .await
            .expect("store")
            .into_iter()
            .map(|t| format!("{}->{}", t.from_state, t.to_state))
            .collect()
    }

    /// `psid`'s jobs of one kind, oldest first.
    pub async fn jobs_of(&self, psid: &str, kind: &str) -> Vec<JobRow> {
        let mut jobs = self.jobs(psid).await;
        jobs.retain(|j| j.kind == kind);
        jobs
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

/// Waits until `f` gives a value (or panics after 10 s).
pub async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
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

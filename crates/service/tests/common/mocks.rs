//! A mock Graph API and a mock Dialogflow API for tests that drive `/messenger` and
//! `/fulfillment` with signed fixture deliveries.
#![allow(dead_code)]

use handover_core::{State, Thread};
use messenger_handover::config::RawSettings;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use wiremock::matchers::{header, method, path, path_regex, query_param};

use wiremock::{Mock, MockBuilder, MockServer, Request, Respond, ResponseTemplate};

use super::app::*;
use super::google::write_service_account_key;

pub const SESSION: &str =
    "projects/handover-demo-4f2a1/agent/sessions/3c32f610-3f2b-4bd8-9712-43eb69c06c43";
pub const GOOGLE_TOKEN: &str = "ya29.test-access-token";

/// A 200 answer with a JSON body.
pub fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

/// Meta's answer to a thread-control call that worked.
pub fn success() -> ResponseTemplate {
    ok(json!({"success": true}))
}

/// A Graph API error answer, as Meta shapes it.
pub fn graph_error(
    status: u16,
    code: i64,
    subcode: Option<i64>,
    message: &str,
) -> ResponseTemplate {
    let mut error = json!({
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "AQ2lKD7UqnvqCrMs16fUNLk",
    });
    if let Some(sub) = subcode {
        error["error_subcode"] = json!(sub);
    }
    ResponseTemplate::new(status).set_body_json(json!({ "error": error }))
}

/// The path of a Page edge as the service calls it: `/v25.0/{PAGE_ID}/{edge}`.
pub fn graph_path(edge: &str) -> String {
    format!("/{GRAPH_VERSION}/{PAGE_ID}/{edge}")
}

/// A mock of `METHOD /v25.0/{PAGE_ID}/{edge}`.
pub fn edge(verb: &str, edge: &str) -> MockBuilder {
    Mock::given(method(verb)).and(path(graph_path(edge)))
}

/// A Graph API that accepts every POST (`{"success": true}`) and knows no GET.
pub async fn graph_ok() -> MockServer {
    let graph = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(success())
        .mount(&graph)
        .await;
    graph
}

/// `thread_owner` about `psid` answers `owner` (the app, or idle when `None`). It wins over
/// any other `thread_owner` answer.
pub async fn mount_owner(graph: &MockServer, psid: &str, owner: Option<&str>) {
    edge("GET", "thread_owner")
        .and(query_param("recipient", psid))
        .respond_with(owner_is(owner))
        .with_priority(1)
        .mount(graph)
        .await;
}

/// Every POST the mocks above do not answer succeeds, as a sent message.
pub async fn accept_posts(graph: &MockServer) {
    Mock::given(method("POST"))
        .respond_with(ok(json!({"message_id": "m_1"})))
        .mount(graph)
        .await;
}

/// Who `thread_owner` was asked about, in the order the mock received the requests.
pub async fn owner_asked(graph: &MockServer) -> Vec<String> {
    requests_to(graph, "/thread_owner")
        .await
        .iter()
        .filter_map(|r| super::app::query_param(r, "recipient"))
        .collect()
}

/// The reconciler every second, and a thread stuck after two minutes.
pub const RECONCILE_EVERY_SECOND: [(&str, &str); 2] = [
    ("RECONCILE_INTERVAL_SECS", "1"),
    ("STUCK_AFTER_SECS", "120"),
];

/// A fixture delivery with its timestamps moved to now (the welcome-back needs a user
/// message inside the last 24 hours).
pub fn delivery(name: &str) -> String {
    let mut v = fixture_json(&format!("messenger/{name}"));
    let now = messenger_handover::time::now_ms();
    if let Some(entries) = v["entry"].as_array_mut() {
        for entry in entries {
            entry["time"] = json!(now);
            for channel in ["messaging", "standby"] {
                if let Some(events) = entry[channel].as_array_mut() {
                    for e in events {
                        e["timestamp"] = json!(now);
                    }
                }
            }
        }
    }
    v.to_string()
}

/// Who owns the thread at the mock Meta: moved by the pass and take calls the mock receives,
/// set by a test when it delivers an event of someone else's move (the inbox's "Done").
#[derive(Clone, Debug, Default)]
pub struct MetaOwner(Arc<Mutex<Option<String>>>);

impl MetaOwner {
    pub fn set(&self, app: Option<&str>) {
        *self.0.lock().unwrap() = app.map(str::to_owned);
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Pass and take succeed and move [`MetaOwner`].
struct ThreadControl(MetaOwner);

impl Respond for ThreadControl {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if request.url.path().ends_with("/take_thread_control") {
            self.0.set(Some(APP_ID));
        } else if let Ok(body) = serde_json::from_slice::<Value>(&request.body) {
            let target = match &body["target_app_id"] {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            self.0.set(target.as_deref());
        }
        success()
    }
}

/// `thread_owner` answers what [`MetaOwner`] says.
struct ThreadOwner(MetaOwner);

impl Respond for ThreadOwner {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        owner_is(self.0.get().as_deref())
    }
}

/// A Graph API where pass, take and the Send API succeed, and `thread_owner` follows them.
/// A test's own mocks win over these (they have a lower priority).
pub async fn graph_mock() -> (MockServer, MetaOwner) {
    let graph = MockServer::start().await;
    let owner = MetaOwner::default();
    owner.set(Some(APP_ID));
    Mock::given(method("POST"))
        .and(path_regex(r"/(pass|take)_thread_control$"))
        .respond_with(ThreadControl(owner.clone()))
        .with_priority(10)
        .mount(&graph)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"/thread_owner$"))
        .respond_with(ThreadOwner(owner.clone()))
        .with_priority(10)
        .mount(&graph)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/messages$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"recipient_id": PSID, "message_id": "m_welcome"})),
        )
        .with_priority(10)
        .mount(&graph)
        .await;
    (graph, owner)
}

/// Dialogflow API + OAuth token endpoint. The session holds these contexts.
pub async fn dialogflow_mock() -> MockServer {
    let df = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": GOOGLE_TOKEN, "expires_in": 3600, "token_type": "Bearer"
        })))
        .mount(&df)
        .await;
    let ctx = |id: &str, lifespan: i64| json!({"name": format!("{SESSION}/contexts/{id}"), "lifespanCount": lifespan});
    Mock::given(method("GET"))
        .and(path(format!("/v2/{SESSION}/contexts")))
        .and(header("authorization", format!("Bearer {GOOGLE_TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"contexts": [
            ctx("generic", 4), ctx("human_handover", 45), ctx("small-talk", 2), ctx("__system_counters__", 1)
        ]})))
        .mount(&df)
        .await;
    Mock::given(method("DELETE"))
        .and(header(
            "authorization",
            format!("Bearer {GOOGLE_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&df)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v2/{SESSION}/contexts")))
        .and(header(
            "authorization",
            format!("Bearer {GOOGLE_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&df)
        .await;
    df
}

/// The service's settings pointed at a mock Graph API and a mock Dialogflow API (with its
/// OAuth token endpoint and a service-account key), on a fresh database.
pub struct World {
    pub db: TestDb,
    pub graph: MockServer,
    /// Who owns the thread at the mock Meta.
    pub meta: MetaOwner,
    pub df: MockServer,
    pub raw: RawSettings,
}

impl World {
    pub async fn new(db: Db) -> World {
        let db = TestDb::new(db).await;
        let (graph, meta) = graph_mock().await;
        let df = dialogflow_mock().await;
        let key = write_service_account_key(&db.dir(), &format!("{}/token", df.uri()));
        let mut raw = base_settings(&db.url, &graph.uri());
        raw.set("DIALOGFLOW_PROJECT_ID", "handover-demo-4f2a1");
        raw.set("DIALOGFLOW_API_BASE", df.uri());
        raw.set("GOOGLE_APPLICATION_CREDENTIALS", key.display().to_string());
        World {
            db,
            graph,
            meta,
            df,
            raw,
        }
    }

    /// The same world with one setting changed.
    pub fn with(mut self, key: &str, value: &str) -> World {
        self.raw.set(key, value);
        self
    }

    /// The service in this world.
    pub async fn start(&self) -> TestApp {
        TestApp::start(&self.raw).await
    }

    /// Fulfillment handover, then wait until the pass went through.
    pub async fn handed_over(&self, app: &TestApp) {
        app.fulfill("handover.json").await;
        app.settled_in(PSID, State::Human).await;
    }

    /// The user writes "Back to bot!" while the inbox has the thread (Meta delivers it on
    /// `standby`); waits until the thread is the bot's and its jobs have run.
    pub async fn user_returned(&self, app: &TestApp) -> Thread {
        app.deliver_ok(&delivery("standby_back_to_bot.json")).await;
        app.settled_in(PSID, State::Bot).await
    }

    pub async fn graph_calls(&self) -> Vec<String> {
        self.graph
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| r.url.path().rsplit('/').next().unwrap().to_owned())
            .collect()
    }

    pub async fn df_calls(&self) -> Vec<String> {
        self.df
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.url.path() != "/token")
            .map(|r| {
                let path = r.url.path();
                let tail = path.rsplit_once("/contexts").map_or("", |(_, t)| t);
                format!("{} contexts{}", r.method, tail)
            })
            .collect()
    }

    /// The bodies of the Dialogflow calls with `method` (the token endpoint's left out).
    pub async fn df_bodies(&self, method: &str) -> Vec<Value> {
        self.df
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.method.as_str() == method && r.url.path() != "/token")
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
            .collect()
    }

    pub async fn welcome_texts(&self) -> Vec<Value> {
        requests_to(&self.graph, "/messages")
            .await
            .iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
            .collect()
    }
}

/// `thread_owner`'s answer: that app, or idle (`None`).
pub fn owner_is(app: Option<&str>) -> ResponseTemplate {
    let body = match app {
        Some(id) => {
            json!({"data": [{"thread_owner": {"app_id": id, "expiration": 1_900_000_000}}]})
        }
        None => json!({"data": []}),
    };
    ResponseTemplate::new(200).set_body_json(body)
}

/// Puts threads in a state since some time ago, with no job queued, as the state machine
/// leaves them: the decision that led there, and when the reconciler looks first
/// (`STUCK_AFTER_SECS=120`, or a day in `HUMAN`).
pub async fn put_threads(url: &str, threads: &[(String, State, i64)]) {
    use handover_core::{Decision, Thread};
    use messenger_handover::time::{DAY_MS, now_ms};
    let store = messenger_handover::store::Store::connect(url)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    for (psid, state, age_ms) in threads {
        let (state, age_ms) = (*state, *age_ms);
        let now = now_ms();
        store
            .apply(PAGE_ID, psid, now, move |t: &Thread| {
                let mut thread = t.clone();
                thread.state = state;
                thread.state_since = now - age_ms;
                thread.last_user_msg_at = Some(now - 60_000);
                thread.epoch = 1;
                thread.state_at = now - age_ms;
                let first_look = if state == State::Human {
                    DAY_MS
                } else {
                    120_000
                };
                thread.next_check_at = Some(now - age_ms + first_look);
                Decision::set(thread, "test setup", vec![])
            })
            .await
            .unwrap();
    }
    store.close().await;
}

/// The events of one signed-fixture standby message from `psid` (its `mid` and text given),
/// as the webhook parser makes them: what store-level tests ingest.
pub fn standby_events(
    psid: &str,
    mid: &str,
    text: &str,
) -> Vec<handover_core::event::IncomingEvent> {
    let mut body: Value = serde_json::from_str(include_str!(
        "../../fixtures/messenger/standby_user_message.json"
    ))
    .unwrap();
    let event = &mut body["entry"][0]["standby"][0];
    event["sender"]["id"] = psid.into();
    event["message"]["mid"] = mid.into();
    event["message"]["text"] = text.into();
    messenger_handover::messenger::webhook::parse_delivery(body.to_string().as_bytes())
        .unwrap()
        .events
}

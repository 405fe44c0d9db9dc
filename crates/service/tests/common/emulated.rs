//! Everything that runs against the project's emulator: the service wired to it on a test
//! database ([`Emulated`]), a raw Graph client acting as the bot app ([`BotGraph`]), and
//! wiremock stand-ins for the service's endpoints when the test plays the service itself.
#![allow(dead_code)]

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use handover_core::State;
use handover_emulator::{Emulator, EmulatorConfig, PAGE_INBOX_APP_ID};
use messenger_handover::demo::World;
use messenger_handover::messenger::signature::{appsecret_proof, verify};
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::db::{Db, TestDb};

/// The service on a fresh database of `db`, wired to a fresh emulator (`demo::World`).
/// Stopping it, or dropping it, also drops the database.
pub struct Emulated {
    world: World,
    db: TestDb,
}

impl Emulated {
    pub async fn start(db: Db, overrides: &[(&str, &str)]) -> Emulated {
        let db = TestDb::new(db).await;
        let mut all = vec![("DATABASE_URL", db.url.as_str())];
        all.extend_from_slice(overrides);
        let world = World::start(&all)
            .await
            .expect("the service and the emulator start");
        Emulated { world, db }
    }

    pub async fn stop(self) {
        self.world.stop().await;
        self.db.close().await;
    }

    /// Waits until the service has `user`'s thread in `state` and has finished its work.
    pub async fn settled_in(&self, user: &str, state: State) {
        assert!(
            self.wait_for_state(user, state).await,
            "{user} never {state:?}"
        );
        assert!(self.settle(user).await, "{user}'s jobs never finished");
    }

    /// `user` asks about an order, then for a person; the inbox gets the thread.
    pub async fn handed_over(&self, user: &str) {
        self.emulator
            .user_says(user, "Where is my order 1042?")
            .await;
        self.emulator
            .user_says(user, "I want to talk to a human")
            .await;
        self.settled_in(user, State::Human).await;
        assert_eq!(
            self.emulator.owner(user).as_deref(),
            Some(PAGE_INBOX_APP_ID)
        );
        assert!(
            self.context_ids(user)
                .contains(&"human_handover".to_owned())
        );
    }

    /// The bot app's id.
    pub fn bot(&self) -> String {
        self.emulator.config().bot_app_id
    }

    /// The ids of `user`'s active Dialogflow contexts.
    pub fn context_ids(&self, user: &str) -> Vec<String> {
        self.emulator
            .contexts(user)
            .into_iter()
            .map(|(id, _, _)| id)
            .collect()
    }

    /// The texts `user` received, in order.
    pub fn texts(&self, user: &str) -> Vec<String> {
        self.emulator
            .messages_to_user(user)
            .into_iter()
            .map(|m| m.text)
            .collect()
    }

    /// How many welcome-back messages `user` received.
    pub fn welcomes(&self, user: &str) -> usize {
        let welcome = &self.services.settings.welcome_back_message;
        self.texts(user).iter().filter(|t| *t == welcome).count()
    }

    /// The calls the emulator saw, in order (`take_thread_control`, `thread_owner`, …).
    pub fn calls(&self) -> Vec<String> {
        self.emulator.log().into_iter().map(|e| e.call).collect()
    }
}

impl Deref for Emulated {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl DerefMut for Emulated {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.world
    }
}

/// Graph API calls as the service makes them, to the emulator: the bot app's Page token and
/// its appsecret_proof.
pub struct BotGraph {
    /// `{emulator}/v25.0/{page}`.
    node: String,
    pub token: String,
    pub proof: String,
    pub http: reqwest::Client,
}

/// How a call through [`BotGraph::try_post`] ended: the HTTP status, or `timeout` /
/// `transport`; the `Retry-After` header; the body (`Null` when there is none).
pub type Outcome = (String, Option<String>, Value);

impl BotGraph {
    pub fn new(emu: &Emulator) -> BotGraph {
        BotGraph::with_client(emu, reqwest::Client::new())
    }

    /// A client that gives up after `timeout`, as the service does (`HTTP_TIMEOUT_MS`).
    pub fn with_timeout(emu: &Emulator, timeout: Duration) -> BotGraph {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("an HTTP client");
        BotGraph::with_client(emu, http)
    }

    fn with_client(emu: &Emulator, http: reqwest::Client) -> BotGraph {
        let cfg = emu.config();
        BotGraph {
            node: format!("{}/v25.0/{}", emu.base_url(), cfg.page_id),
            proof: appsecret_proof(&cfg.bot_app_secret, &cfg.page_token),
            token: cfg.page_token,
            http,
        }
    }

    pub async fn post(&self, edge: &str, body: Value) -> (u16, Value) {
        self.post_as(edge, &self.token, &self.proof, body).await
    }

    /// A POST with another token or proof than the bot app's.
    pub async fn post_as(&self, edge: &str, token: &str, proof: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/{edge}", self.node))
            .query(&[("access_token", token), ("appsecret_proof", proof)])
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, edge: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}/{edge}", self.node))
            .query(&[
                ("access_token", self.token.as_str()),
                ("appsecret_proof", &self.proof),
            ])
            .query(query)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A POST that may time out or lose its connection (the emulator's injected faults).
    pub async fn try_post(&self, edge: &str, body: Value) -> Outcome {
        let r = self
            .http
            .post(format!("{}/{edge}", self.node))
            .query(&[
                ("access_token", &self.token),
                ("appsecret_proof", &self.proof),
            ])
            .json(&body)
            .send()
            .await;
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                "timeout"
            } else {
                "transport"
            }
        };
        match r {
            Err(e) => (failed(e).into(), None, Value::Null),
            Ok(r) => {
                let status = r.status().as_u16().to_string();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                match r.bytes().await {
                    Ok(b) => (
                        status,
                        retry,
                        serde_json::from_slice(&b).unwrap_or(Value::Null),
                    ),
                    Err(e) => (failed(e).into(), retry, Value::Null),
                }
            }
        }
    }
}

/// A wiremock "service" whose `/messenger` answers 200.
pub async fn companion() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/messenger"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// The companion app's webhook as a wiremock server: what the emulator delivered to it.
pub struct Companion {
    pub server: MockServer,
    secret: String,
}

impl Companion {
    /// The deliveries so far: (entry key `messaging`/`standby`, event), each checked to be
    /// signed with the companion app's secret.
    pub async fn deliveries(&self) -> Vec<(String, Value)> {
        deliveries(&self.server, &self.secret).await
    }

    /// The one delivery so far of a `kind` of event (`pass_thread_control`, `postback`, …):
    /// its entry key and the event's `kind` object.
    pub async fn only(&self, kind: &str) -> (String, Value) {
        let all = self.deliveries().await;
        let found = find(&all, kind);
        assert_eq!(found.len(), 1, "one {kind} in {all:?}");
        (found[0].0.clone(), found[0].1[kind].clone())
    }
}

/// An emulator whose companion webhook is [`companion`].
pub async fn start_with_companion() -> (Emulator, Companion) {
    let server = companion().await;
    let emu = Emulator::start(EmulatorConfig {
        companion_webhook_url: Some(format!("{}/messenger", server.uri())),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let secret = emu.config().companion_app_secret;
    (emu, Companion { server, secret })
}

/// A wiremock `/fulfillment` answering `response`.
pub async fn fulfillment(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/fulfillment"))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

/// The deliveries the companion received: (entry key `messaging`/`standby`, event). Each
/// must carry a valid signature by `secret`.
pub async fn deliveries(server: &MockServer, secret: &str) -> Vec<(String, Value)> {
    let requests = server.received_requests().await.unwrap_or_default();
    requests
        .iter()
        .filter(|r| r.url.path() == "/messenger")
        .map(|r| {
            let sig = r
                .headers
                .get("x-hub-signature-256")
                .and_then(|v| v.to_str().ok());
            verify(secret, &r.body, sig).expect("a valid X-Hub-Signature-256");
            let body: Value = serde_json::from_slice(&r.body).expect("json body");
            assert_eq!(body["object"], "page");
            let entry = &body["entry"][0];
            let key = if entry.get("messaging").is_some() {
                "messaging"
            } else {
                "standby"
            };
            (key.to_string(), entry[key][0].clone())
        })
        .collect()
}

/// The deliveries of one kind of event (`pass_thread_control`, `postback`, …).
fn find<'a>(ds: &'a [(String, Value)], kind: &str) -> Vec<&'a (String, Value)> {
    ds.iter().filter(|(_, e)| e.get(kind).is_some()).collect()
}

/// Sends `request` and reads its answer as JSON.
pub async fn json_of(request: reqwest::RequestBuilder) -> Value {
    let resp = request.send().await.expect("request");
    resp.json().await.expect("a JSON answer")
}

/// An access token from the emulator's OAuth token endpoint (a jwt-bearer grant).
pub async fn token(emu: &Emulator) -> String {
    let r = reqwest::Client::new()
        .post(emu.token_uri())
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    body["access_token"].as_str().unwrap().to_string()
}

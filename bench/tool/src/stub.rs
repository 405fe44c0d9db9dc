//! A Graph API stub: answers every call at once, in memory, without a log line per request.
//!
//! - `POST …/pass_thread_control`, `…/take_thread_control`, `…/release_thread_control`,
//!   `…/request_thread_control`: `{"success":true}`; a pass gives the thread to the inbox, a take
//!   or a release to the bot (so `thread_owner` tells the truth).
//! - `GET …/thread_owner?recipient=PSID`: `{"data":[{"thread_owner":{"app_id":"…"}}]}`, the inbox
//!   after a pass, else the bot app.
//! - `POST …/messages` (Send API): `{"recipient_id":"…","message_id":"m_…"}`.
//! - Anything else: `{"success":true}`.
//!
//! Optionally it records when each user's first pass, take and message arrived (for `e2e`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use actix_web::dev::Server;
use actix_web::http::Method;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

/// The Page Inbox's app id.
pub const INBOX_APP_ID: &str = "263902037430900";
/// The bot app's id used by the benchmark.
pub const BOT_APP_ID: &str = "111111111111111";

/// When each user's first pass, first take and first message reached the stub.
#[derive(Default)]
pub struct Arrivals {
    pub passes: HashMap<String, Instant>,
    pub takes: HashMap<String, Instant>,
    /// In `e2e`, the welcome back that follows the take.
    pub messages: HashMap<String, Instant>,
}

/// Which of a user's calls `Stub::record` notes.
#[derive(Clone, Copy)]
enum Call {
    Pass,
    Take,
    Message,
}

pub struct Stub {
    bot_app: String,
    inbox_app: String,
    /// PSID → the inbox has the thread.
    with_inbox: Mutex<HashMap<String, bool>>,
    /// Kept only when asked for (`e2e`).
    arrivals: Option<Mutex<Arrivals>>,
    messages: AtomicU64,
}

impl Stub {
    pub fn new(bot_app: &str, inbox_app: &str, record: bool) -> Stub {
        Stub {
            bot_app: bot_app.to_owned(),
            inbox_app: inbox_app.to_owned(),
            with_inbox: Mutex::new(HashMap::new()),
            arrivals: record.then(|| Mutex::new(Arrivals::default())),
            messages: AtomicU64::new(0),
        }
    }

    /// Reads the recorded arrivals (empty when the stub does not record).
    pub fn with_arrivals<T>(&self, f: impl FnOnce(&Arrivals) -> T) -> T {
        match &self.arrivals {
            Some(m) => f(&m.lock().unwrap_or_else(PoisonError::into_inner)),
            None => f(&Arrivals::default()),
        }
    }

    fn set_owner(&self, psid: &str, inbox: bool) {
        self.with_inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(psid.to_owned(), inbox);
    }

    fn owner(&self, psid: &str) -> &str {
        let inbox = self
            .with_inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(psid)
            .copied()
            .unwrap_or(false);
        if inbox {
            &self.inbox_app
        } else {
            &self.bot_app
        }
    }

    fn record(&self, psid: &str, call: Call, at: Instant) {
        if let Some(m) = &self.arrivals {
            let mut a = m.lock().unwrap_or_else(PoisonError::into_inner);
            let map = match call {
                Call::Pass => &mut a.passes,
                Call::Take => &mut a.takes,
                Call::Message => &mut a.messages,
            };
            map.entry(psid.to_owned()).or_insert(at);
        }
    }
}

/// A Graph API error body, as Meta writes it.
fn graph_error(code: u16, message: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({
        "error": { "message": message, "type": "OAuthException", "code": code }
    }))
}

fn recipient(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    match &v["recipient"]["id"] {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The value of `name` in a query string (PSIDs are digits: no percent-decoding needed).
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(k, v)| (k == name && !v.is_empty()).then_some(v))
}

async fn graph(req: HttpRequest, body: web::Bytes, stub: web::Data<Stub>) -> HttpResponse {
    let arrived = Instant::now();
    let endpoint = req.path().rsplit('/').next().unwrap_or_default();
    let success = || HttpResponse::Ok().json(json!({ "success": true }));
    match (req.method(), endpoint) {
        (&Method::POST, control @ ("pass_thread_control" | "take_thread_control"))
        | (&Method::POST, control @ ("release_thread_control" | "request_thread_control")) => {
            let Some(psid) = recipient(&body) else {
                return graph_error(100, "(#100) The parameter recipient is required");
            };
            match control {
                "pass_thread_control" => {
                    stub.set_owner(&psid, true);
                    stub.record(&psid, Call::Pass, arrived);
                }
                "take_thread_control" => {
                    stub.set_owner(&psid, false);
                    stub.record(&psid, Call::Take, arrived);
                }
                "release_thread_control" => stub.set_owner(&psid, false),
                _ => {}
            }
            success()
        }
        (&Method::GET, "thread_owner") => match query_param(req.query_string(), "recipient") {
            Some(psid) => HttpResponse::Ok().json(json!({
                "data": [{ "thread_owner": { "app_id": stub.owner(psid) } }]
            })),
            None => graph_error(100, "(#100) The parameter recipient is required"),
        },
        (&Method::POST, "messages") => {
            let Some(psid) = recipient(&body) else {
                return graph_error(100, "(#100) The parameter recipient is required");
            };
            stub.record(&psid, Call::Message, arrived);
            let n = stub.messages.fetch_add(1, Ordering::Relaxed);
            HttpResponse::Ok()
                .json(json!({ "recipient_id": psid, "message_id": format!("m_stub_{n}") }))
        }
        _ => success(),
    }
}

/// Binds `listen` and returns the server (not yet polled: await or spawn it).
pub fn server(stub: Arc<Stub>, listen: &str) -> std::io::Result<Server> {
    let data = web::Data::from(stub);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(1 << 20))
            .default_service(web::to(graph))
    })
    .bind(listen)?
    .shutdown_timeout(1)
    .run())
}

/// `handover-bench stub`: serves until stopped.
pub async fn main(listen: &str, bot_app: &str, inbox_app: &str) -> std::io::Result<()> {
    let stub = Arc::new(Stub::new(bot_app, inbox_app, false));
    let srv = server(stub, listen)?;
    eprintln!("stub: Graph API stub on http://{listen}");
    srv.await
}

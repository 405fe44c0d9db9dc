//! The Graph API endpoints: `/{version}/{PAGE_ID|me}/…` and `/{version}/debug_token`.
//! Parameters are read from the query string, a JSON body or a form body (Meta accepts all
//! three); every call must carry the bot app's (or the companion app's) Page token and that app's
//! `appsecret_proof`.

use std::sync::Arc;

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Map, Value, json};

use super::Inner;
use super::chaos::GraphFault;
use super::platform::{GraphError, SendRequest, State, Via};
use crate::signing::appsecret_proof;

/// Request parameters from the query string and the body.
#[derive(Debug, Default)]
pub(crate) struct Params(Map<String, Value>);

impl Params {
    pub fn parse(query: &str, content_type: &str, body: &[u8]) -> Result<Params, GraphError> {
        let mut map = Map::new();
        if !body.is_empty() {
            let looks_json = !content_type.starts_with("application/x-www-form-urlencoded")
                && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            if content_type.starts_with("application/json") || looks_json {
                match serde_json::from_slice::<Value>(body) {
                    Ok(Value::Object(o)) => map = o,
                    _ => {
                        return Err(GraphError::new(
                            100,
                            None,
                            "(#100) The request body is not a JSON object",
                        ));
                    }
                }
            } else {
                for (k, v) in url::form_urlencoded::parse(body) {
                    map.insert(k.into_owned(), Value::String(v.into_owned()));
                }
            }
        }
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            map.entry(k.into_owned())
                .or_insert(Value::String(v.into_owned()));
        }
        Ok(Params(map))
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// A scalar parameter as a string (numbers as their decimal form).
    pub fn str(&self, key: &str) -> Option<String> {
        match self.0.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// An object parameter: a JSON object, or a string holding one (`recipient={"id":"…"}`).
    pub fn obj(&self, key: &str) -> Option<Value> {
        match self.0.get(key)? {
            Value::Object(o) => Some(Value::Object(o.clone())),
            Value::String(s) => serde_json::from_str::<Value>(s)
                .ok()
                .filter(Value::is_object),
            _ => None,
        }
    }

    /// `recipient.id` from `recipient` (object or JSON string) or a plain `recipient` PSID.
    pub fn recipient(&self) -> Option<String> {
        if let Some(o) = self.obj("recipient") {
            return match o.get("id")? {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
        }
        self.str("recipient").filter(|s| !s.is_empty())
    }
}

fn is_version(seg: &str) -> bool {
    let Some(rest) = seg.strip_prefix('v') else {
        return false;
    };
    let mut parts = rest.splitn(2, '.');
    let major = parts.next().unwrap_or_default();
    let minor = parts.next().unwrap_or("0");
    !major.is_empty()
        && major.chars().all(|c| c.is_ascii_digit())
        && !minor.is_empty()
        && minor.chars().all(|c| c.is_ascii_digit())
}

fn error_response(e: &GraphError) -> HttpResponse {
    HttpResponse::build(StatusCode::BAD_REQUEST).json(e.body())
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// The access token (query, body, or `Authorization: Bearer|OAuth`) must be the bot app's or
/// the companion app's Page token, with that app's `appsecret_proof`. Returns the calling app.
fn authenticate(st: &State, p: &Params, req: &HttpRequest) -> Result<String, GraphError> {
    let token = p.str("access_token").or_else(|| {
        header(req, "authorization").and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("OAuth "))
                .map(|t| t.trim().to_string())
        })
    });
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(GraphError::new(
            190,
            None,
            "An active access token must be used to query information about the current user.",
        ));
    };
    let Some((app, secret)) = page_token_app(st, &token) else {
        return Err(GraphError::new(
            190,
            None,
            "Invalid OAuth access token - Cannot parse access token",
        ));
    };
    let Some(proof) = p.str("appsecret_proof") else {
        return Err(GraphError::new(
            100,
            None,
            "API calls from the server require an appsecret_proof argument",
        ));
    };
    if proof != appsecret_proof(secret, &token) {
        return Err(GraphError::new(
            100,
            None,
            "Invalid appsecret_proof provided in the API argument",
        ));
    }
    Ok(app.to_string())
}

/// The app a Page token belongs to, and that app's secret.
fn page_token_app<'a>(st: &'a State, token: &str) -> Option<(&'a str, &'a str)> {
    if token == st.cfg.page_token {
        Some((&st.cfg.bot_app_id, &st.cfg.bot_app_secret))
    } else if token == st.cfg.companion_page_token {
        Some((&st.cfg.companion_app_id, &st.cfg.companion_app_secret))
    } else {
        None
    }
}

/// Handles one Graph API request. `path` is the request path.
pub(crate) async fn handle(
    inner: &Arc<Inner>,
    req: &HttpRequest,
    body: &[u8],
    path: &str,
) -> HttpResponse {
    let mut segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let version = if segs.first().is_some_and(|s| is_version(s)) {
        segs.remove(0).to_string()
    } else {
        String::new()
    };
    let content_type = header(req, "content-type").unwrap_or_default();
    let params = match Params::parse(req.query_string(), &content_type, body) {
        Ok(p) => p,
        Err(e) => return reject(inner, "graph", &version, &e),
    };
    let method = req.method().clone();
    inner.lock().versions.insert(version.clone());
    let node = segs.first().copied().unwrap_or_default();
    if node == "debug_token" && segs.len() == 1 {
        return debug_token(inner, &params, &version);
    }
    let (call, edge) = match segs.get(1).copied() {
        None => ("page", ""),
        Some("messages") => ("send_api", "messages"),
        Some("subscribed_apps") => ("subscribed_apps", "subscribed_apps"),
        Some(e) => (e, e),
    };
    // Node: the Page, or `me` (the Page when a Page token is used).
    {
        let st = inner.lock();
        if node != "me" && node != st.cfg.page_id {
            drop(st);
            let e = GraphError::new(
                100,
                Some(33),
                format!(
                    "Unsupported {} request. Object with ID '{node}' does not exist, cannot be loaded due to missing permissions, or does not support this operation.",
                    method.as_str().to_lowercase()
                ),
            );
            return reject(inner, call, &version, &e);
        }
    }
    let caller = {
        let st = inner.lock();
        authenticate(&st, &params, req)
    };
    let caller = match caller {
        Ok(c) => c,
        Err(e) => return reject(inner, call, &version, &e),
    };
    if segs.len() > 2 {
        let e = GraphError::new(
            2500,
            None,
            format!("Unknown path components: /{}", segs[2..].join("/")),
        );
        return reject(inner, call, &version, &e);
    }
    let fault = roll_fault(inner, &caller, edge, &method, &params);
    if fault == GraphFault::None {
        return apply(inner, &caller, edge, &method, &params, call, &version);
    }
    let psid = params.recipient().unwrap_or_default();
    let note = |what: String| {
        let mut st = inner.lock();
        let detail = with_version(&st, &version, format!("{psid}: [chaos] {what}"));
        st.record("service", call, detail, false);
        st.note(&psid, format!("service {call}: [chaos] {what}"));
    };
    match fault {
        GraphFault::None => unreachable!("handled above"),
        GraphFault::Error500 => {
            note("HTTP 500 (#2), not applied".into());
            HttpResponse::InternalServerError().json(
                GraphError::new(2, None, "(#2) Service temporarily unavailable").body_transient(),
            )
        }
        GraphFault::RateLimited => {
            note("HTTP 429 (#613) Retry-After: 1, not applied".into());
            HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", "1"))
                .json(
                    GraphError::new(
                        613,
                        None,
                        "(#613) Calls to this api have exceeded the rate limit.",
                    )
                    .body_transient(),
                )
        }
        GraphFault::Dropped(hang_ms) => {
            note(format!(
                "dropped before applying (connection dropped after {hang_ms} ms)"
            ));
            lost_answer(hang_ms).await
        }
        GraphFault::AppliedThenLost(hang_ms) => {
            let applied = apply(inner, &caller, edge, &method, &params, call, &version);
            note(format!(
                "applied (HTTP {}), then the answer was lost (connection dropped after {hang_ms} ms)",
                applied.status().as_u16()
            ));
            lost_answer(hang_ms).await
        }
        GraphFault::Slow(ms) => {
            let applied = apply(inner, &caller, edge, &method, &params, call, &version);
            {
                let mut st = inner.lock();
                st.note(
                    &psid,
                    format!(
                        "service {call}: [chaos] applied (HTTP {}), answer delayed {ms} ms",
                        applied.status().as_u16()
                    ),
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            applied
        }
    }
}

/// The calls the service makes with the bot app's Page token that chaos may disturb.
fn roll_fault(
    inner: &Arc<Inner>,
    caller: &str,
    edge: &str,
    method: &Method,
    params: &Params,
) -> GraphFault {
    let mut st = inner.lock();
    if caller != st.cfg.bot_app_id || !st.chaos.affects_graph() {
        return GraphFault::None;
    }
    let disturbed = matches!(
        (edge, method),
        ("messages", &Method::POST)
            | ("pass_thread_control", &Method::POST)
            | ("take_thread_control", &Method::POST)
            | ("thread_owner", &Method::GET)
    );
    if !disturbed {
        return GraphFault::None;
    }
    let psid = params.recipient().unwrap_or_default();
    let chaos = st.chaos.clone();
    GraphFault::roll(&chaos, &mut st.dice, &psid)
}

/// Hangs for `hang_ms`, then answers with a body that breaks off: the client sees the
/// connection dropped (a transport error), or has given up already.
async fn lost_answer(hang_ms: u64) -> HttpResponse {
    if hang_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(hang_ms)).await;
    }
    let broken = futures_util::stream::once(async {
        Err::<actix_web::web::Bytes, actix_web::Error>(actix_web::error::ErrorInternalServerError(
            "chaos: connection dropped",
        ))
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(broken)
}

/// Applies one authenticated Graph call and records it (the emulator without chaos).
fn apply(
    inner: &Arc<Inner>,
    caller: &str,
    edge: &str,
    method: &Method,
    params: &Params,
    call: &str,
    version: &str,
) -> HttpResponse {
    let caller = caller.to_string();
    let result = match (edge, method) {
        ("", &Method::GET) => page_fields(inner, params),
        ("messages", &Method::POST) => send(inner, &caller, params),
        ("pass_thread_control", &Method::POST) => pass(inner, &caller, params),
        ("take_thread_control", &Method::POST) => take(inner, &caller, params),
        ("release_thread_control", &Method::POST) => release(inner, &caller, params),
        ("request_thread_control", &Method::POST) => request(inner, &caller, params),
        ("extend_thread_control", &Method::POST) => extend(inner, &caller, params),
        ("thread_owner", &Method::GET) => thread_owner(inner, params),
        ("subscribed_apps", &Method::GET) => Ok(list_subscribed_apps(inner)),
        ("subscribed_apps", &Method::POST) => subscribe(inner, &caller, params),
        ("subscribed_apps", &Method::DELETE) => unsubscribe(inner, &caller),
        (
            ""
            | "messages"
            | "pass_thread_control"
            | "take_thread_control"
            | "release_thread_control"
            | "request_thread_control"
            | "extend_thread_control"
            | "thread_owner"
            | "subscribed_apps",
            m,
        ) => Err(GraphError::new(
            100,
            None,
            format!("(#100) Unsupported {} request", m.as_str().to_lowercase()),
        )),
        (e, _) => Err(GraphError::new(
            2500,
            None,
            format!("Unknown path components: /{e}"),
        )),
    };
    let psid = params.recipient();
    match result {
        Ok((value, detail)) => {
            let mut st = inner.lock();
            let detail = with_version(&st, version, detail);
            if let Some(psid) = psid.as_deref()
                && st.threads.contains_key(psid)
            {
                let who = st.app_name(&caller);
                st.note(psid, format!("{who} {call}: ok {detail}"));
            }
            st.record("service", call, detail, true);
            HttpResponse::Ok().json(value)
        }
        Err(e) => {
            if let Some(psid) = psid.as_deref() {
                let mut st = inner.lock();
                if st.threads.contains_key(psid) {
                    st.observe(
                        psid,
                        None,
                        super::chaos::Observed::Refused {
                            app_id: caller.clone(),
                            call: call.to_string(),
                            error: e.short(),
                            by_integration: false,
                        },
                    );
                }
            }
            reject(inner, call, version, &e)
        }
    }
}

fn with_version(st: &State, version: &str, detail: String) -> String {
    if version == st.cfg.graph_version {
        detail
    } else if version.is_empty() {
        format!(
            "{detail} (unversioned call; expected {})",
            st.cfg.graph_version
        )
    } else {
        format!(
            "{detail} (version {version}; expected {})",
            st.cfg.graph_version
        )
    }
}

fn reject(inner: &Arc<Inner>, call: &str, version: &str, e: &GraphError) -> HttpResponse {
    let mut st = inner.lock();
    let detail = with_version(&st, version, e.short());
    st.record("service", call, detail, false);
    st.violation(format!("graph {call}: {}", e.short()));
    error_response(e)
}

type Outcome = Result<(Value, String), GraphError>;

fn require_recipient(p: &Params) -> Result<String, GraphError> {
    p.recipient()
        .ok_or_else(|| GraphError::new(100, None, "(#100) The parameter recipient is required"))
}

fn metadata(p: &Params) -> String {
    p.str("metadata").unwrap_or_default()
}

fn pass(inner: &Arc<Inner>, caller: &str, p: &Params) -> Outcome {
    let psid = require_recipient(p)?;
    let Some(target) = p.str("target_app_id").filter(|t| !t.is_empty()) else {
        return Err(GraphError::new(
            100,
            None,
            "(#100) The parameter target_app_id is required",
        ));
    };
    let mut st = inner.lock();
    let deliveries = st.pass(caller, &psid, &target, &metadata(p), Via::Graph)?;
    let detail = format!("{psid} → {} ({target})", st.app_name(&target));
    // Queued under the state lock, so deliveries keep the order of the state changes.
    inner.enqueue(deliveries);
    Ok((json!({ "success": true }), detail))
}

fn take(inner: &Arc<Inner>, caller: &str, p: &Params) -> Outcome {
    if p.has("target_app_id") {
        return Err(GraphError::new(
            100,
            None,
            "(#100) Param target_app_id is not supported by take_thread_control",
        ));
    }
    let psid = require_recipient(p)?;
    let mut st = inner.lock();
    let previous = st.owner_of(&psid);
    let deliveries = st.take(caller, &psid, &metadata(p), Via::Graph)?;
    let detail = format!(
        "{psid}: {} → {}",
        previous
            .as_deref()
            .map(|o| st.app_name(o))
            .unwrap_or_else(|| "idle".into()),
        st.app_name(caller)
    );
    inner.enqueue(deliveries);
    Ok((json!({ "success": true }), detail))
}

fn release(inner: &Arc<Inner>, caller: &str, p: &Params) -> Outcome {
    let psid = require_recipient(p)?;
    inner.lock().release(caller, &psid)?;
    Ok((json!({ "success": true }), format!("{psid} → idle")))
}

fn request(inner: &Arc<Inner>, caller: &str, p: &Params) -> Outcome {
    let psid = require_recipient(p)?;
    let mut st = inner.lock();
    let deliveries = st.request(caller, &psid, &metadata(p))?;
    inner.enqueue(deliveries);
    Ok((json!({ "success": true }), psid))
}

fn extend(inner: &Arc<Inner>, caller: &str, p: &Params) -> Outcome {
    let psid = require_recipient(p)?;
    let duration = p
        .str("duration")
        .and_then(|d| d.parse::<i64>().ok())
        .ok_or_else(|| GraphError::new(100, None, "(#100) The parameter duration is required"))?;
    inner.lock().extend(caller, &psid, duration)?;
    Ok((json!({ "success": true }), format!("{psid} +{duration}s")))
}

fn thread_owner(inner: &Arc<Inner>, p: &Params) -> Outcome {
    let psid = require_recipient(p)?;
    let mut st = inner.lock();
    let value = st.thread_owner(&psid);
    let detail = match st.owner_of(&psid) {
        Some(o) => format!("{psid} → {}", st.app_name(&o)),
        None => format!("{psid} → idle"),
    };
    Ok((value, detail))
}

fn send(inner: &Arc<Inner>, caller: &str, p: &Params) -> Outcome {
    let psid = require_recipient(p)?;
    let message = p.obj("message");
    let sender_action = p.str("sender_action");
    if message.is_none() && sender_action.is_none() {
        return Err(GraphError::new(
            100,
            None,
            "(#100) Param message or sender_action is required",
        ));
    }
    if message.is_some() && sender_action.is_some() {
        return Err(GraphError::new(
            100,
            None,
            "(#100) sender_action must be sent in a separate request without message",
        ));
    }
    let metadata = message
        .as_ref()
        .and_then(|m| m.get("metadata"))
        .and_then(Value::as_str)
        .map(String::from);
    let req = SendRequest {
        messaging_type: p.str("messaging_type"),
        tag: p.str("tag"),
        message: message.clone(),
        metadata,
    };
    let mut st = inner.lock();
    let (value, mut deliveries) = st.send(caller, &psid, &req, Via::Graph)?;
    let mut detail = match &message {
        Some(m) => format!(
            "{psid}: {:?} → {}",
            super::dialogflow::message_text(m),
            value["message_id"].as_str().unwrap_or_default()
        ),
        None => format!("{psid}: {}", sender_action.unwrap_or_default()),
    };
    // Conversation Routing's thread_control on the Send API.
    if let Some(tc) = p.obj("thread_control") {
        let control = tc
            .get("control_type")
            .and_then(Value::as_str)
            .unwrap_or("release");
        let result = if control == "pass" {
            let target = match tc.get("app_id") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => st.cfg.bot_app_id.clone(),
            };
            st.pass(caller, &psid, &target, "", Via::SendApi)
                .map(|d| deliveries.extend(d))
        } else {
            st.release(caller, &psid)
        };
        detail.push_str(&match result {
            Ok(()) => format!(", thread_control {control} ok"),
            Err(e) => format!(", thread_control {control} failed: {}", e.short()),
        });
    }
    inner.enqueue(deliveries);
    Ok((value, detail))
}

fn page_fields(inner: &Arc<Inner>, p: &Params) -> Outcome {
    let st = inner.lock();
    let fields: Vec<String> = p
        .str("fields")
        .map(|f| {
            f.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_else(|| vec!["name".into(), "id".into()]);
    let mut out = Map::new();
    for f in &fields {
        let v = match f.as_str() {
            "id" => json!(st.cfg.page_id),
            "name" => json!(st.cfg.page_name),
            "messaging_feature_status" => st.cfg.messaging_feature_status.clone(),
            other => {
                return Err(GraphError::new(
                    100,
                    None,
                    format!(
                        "(#100) Tried accessing nonexisting field ({other}) on node type (Page)"
                    ),
                ));
            }
        };
        out.insert(f.clone(), v);
    }
    out.insert("id".into(), json!(st.cfg.page_id));
    Ok((Value::Object(out), format!("fields={}", fields.join(","))))
}

fn list_subscribed_apps(inner: &Arc<Inner>) -> (Value, String) {
    let st = inner.lock();
    let mut data = Vec::new();
    for (id, name) in [
        (&st.cfg.bot_app_id, "Demo bot (Dialogflow)"),
        (&st.cfg.companion_app_id, "Handover companion"),
    ] {
        let fields = st.fields_of(id);
        if !fields.is_empty() {
            data.push(json!({ "id": id, "name": name, "subscribed_fields": fields }));
        }
    }
    let detail = format!("companion app: {}", st.cfg.companion_fields.join(","));
    (json!({ "data": data }), detail)
}

/// `POST subscribed_apps` subscribes the app whose Page token is used (as on Meta), replacing
/// its fields.
fn subscribe(inner: &Arc<Inner>, caller: &str, p: &Params) -> Outcome {
    if !inner
        .lock()
        .scopes_of(caller)
        .iter()
        .any(|s| s == "pages_manage_metadata")
    {
        return Err(GraphError::new(
            200,
            None,
            "(#200) Requires pages_manage_metadata permission to manage the object",
        ));
    }
    let fields: Vec<String> = p
        .str("subscribed_fields")
        .map(|f| {
            f.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if fields.is_empty() {
        return Err(GraphError::new(
            100,
            None,
            "(#100) Param subscribed_fields is required",
        ));
    }
    const KNOWN: [&str; 12] = [
        "messages",
        "messaging_postbacks",
        "messaging_optins",
        "messaging_referrals",
        "messaging_handovers",
        "standby",
        "message_echoes",
        "message_deliveries",
        "message_reads",
        "message_reactions",
        "messaging_policy_enforcement",
        "messaging_account_linking",
    ];
    if let Some(bad) = fields.iter().find(|f| !KNOWN.contains(&f.as_str())) {
        return Err(GraphError::new(
            100,
            None,
            format!("(#100) Param subscribed_fields[{bad}] must be one of the Page webhook fields"),
        ));
    }
    let mut st = inner.lock();
    let detail = format!("{} ← {}", st.app_name(caller), fields.join(","));
    if caller == st.cfg.bot_app_id {
        st.bot_fields = fields;
    } else {
        st.cfg.companion_fields = fields;
    }
    Ok((json!({ "success": true }), detail))
}

/// `DELETE subscribed_apps` unsubscribes the app whose Page token is used.
fn unsubscribe(inner: &Arc<Inner>, caller: &str) -> Outcome {
    let mut st = inner.lock();
    let detail = format!("{} unsubscribed", st.app_name(caller));
    if caller == st.cfg.bot_app_id {
        st.bot_fields.clear();
    } else {
        st.cfg.companion_fields.clear();
    }
    Ok((json!({ "success": true }), detail))
}

/// `GET /debug_token?input_token=…&access_token={app_id}|{app_secret}` (an app token of the
/// bot or companion app, or one of the two Page tokens with its proof).
fn debug_token(inner: &Arc<Inner>, p: &Params, version: &str) -> HttpResponse {
    let (value, detail) = {
        let st = inner.lock();
        let token = p.str("access_token").unwrap_or_default();
        let app_token_ok = [
            (&st.cfg.bot_app_id, &st.cfg.bot_app_secret),
            (&st.cfg.companion_app_id, &st.cfg.companion_app_secret),
        ]
        .iter()
        .any(|(id, secret)| token == format!("{id}|{secret}"));
        let page_token_ok = page_token_app(&st, &token).is_some_and(|(_, secret)| {
            p.str("appsecret_proof").as_deref() == Some(appsecret_proof(secret, &token).as_str())
        });
        if !app_token_ok && !page_token_ok {
            drop(st);
            let e = GraphError::new(
                190,
                None,
                "Invalid OAuth access token - Cannot parse access token",
            );
            return reject(inner, "debug_token", version, &e);
        }
        let input = p.str("input_token").unwrap_or_default();
        if let Some((app, _)) = page_token_app(&st, &input) {
            let scopes = st.scopes_of(app);
            let application = if app == st.cfg.bot_app_id {
                "Demo bot (Dialogflow)"
            } else {
                "Handover companion"
            };
            (
                json!({ "data": {
                    "app_id": app,
                    "type": "PAGE",
                    "application": application,
                    "expires_at": 0,
                    "is_valid": true,
                    "scopes": scopes,
                    "profile_id": st.cfg.page_id,
                } }),
                format!(
                    "{} page token valid, scopes {}",
                    st.app_name(app),
                    scopes.join(",")
                ),
            )
        } else {
            (
                json!({ "data": {
                    "is_valid": false,
                    "error": { "code": 190, "message": "Invalid OAuth access token." },
                    "scopes": [],
                } }),
                "unknown input_token → is_valid false".to_string(),
            )
        }
    };
    let mut st = inner.lock();
    let detail = with_version(&st, version, detail);
    st.record("service", "debug_token", detail, true);
    HttpResponse::Ok().json(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_vnn_dot_n() {
        assert!(is_version("v25.0"));
        assert!(is_version("v2.6"));
        assert!(is_version("v19"));
        assert!(!is_version("v"));
        assert!(!is_version("v25."));
        assert!(!is_version("me"));
    }

    #[test]
    fn params_come_from_json_form_and_query() {
        let p = Params::parse(
            "access_token=t&recipient=%7B%22id%22%3A%22123%22%7D",
            "application/x-www-form-urlencoded",
            b"target_app_id=263902037430900",
        )
        .unwrap();
        assert_eq!(p.recipient().as_deref(), Some("123"));
        assert_eq!(p.str("target_app_id").as_deref(), Some("263902037430900"));
        let j = Params::parse(
            "",
            "application/json",
            br#"{"recipient":{"id":"9"},"target_app_id":263902037430900}"#,
        )
        .unwrap();
        assert_eq!(j.recipient().as_deref(), Some("9"));
        assert_eq!(j.str("target_app_id").as_deref(), Some("263902037430900"));
        assert!(Params::parse("", "application/json", b"[1]").is_err());
    }
}

//! Google endpoints: the OAuth token endpoint (service-account JWT grant), the metadata
//! server's token URL, and the Dialogflow ES v2 REST API (agent, contexts, detectIntent).

use std::sync::Arc;

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Value, json};

use super::Inner;
use super::delivery::call_fulfillment;
use super::dialogflow::{
    QueryInput, SessionName, context_id, context_json, lifespan_of, response_contexts,
    webhook_request,
};
use super::platform::{random_hex, random_uuid};

const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

fn issue(inner: &Inner, how: &str) -> HttpResponse {
    let token = format!("ya29.emulated-{}", random_hex(16));
    let mut st = inner.lock();
    if st.token_outage {
        st.record(
            "service",
            "oauth.token",
            format!("{how} → 503 (outage)"),
            false,
        );
        return google_error(503, "UNAVAILABLE", "The service is currently unavailable.");
    }
    st.tokens.insert(token.clone());
    st.record(
        "service",
        "oauth.token",
        format!("{how} → token issued"),
        true,
    );
    HttpResponse::Ok().json(json!({
        "access_token": token,
        "expires_in": 3600,
        "token_type": "Bearer",
    }))
}

fn oauth_error(inner: &Inner, error: &str, description: &str) -> HttpResponse {
    let mut st = inner.lock();
    st.record(
        "service",
        "oauth.token",
        format!("{error}: {description}"),
        false,
    );
    st.violation(format!("oauth.token: {error}: {description}"));
    HttpResponse::BadRequest().json(json!({ "error": error, "error_description": description }))
}

/// `POST /token` with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=…`.
pub(crate) fn token(inner: &Arc<Inner>, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    if req.method() != Method::POST {
        return oauth_error(inner, "invalid_request", "the token endpoint takes POST");
    }
    let is_json = header(req, "content-type").is_some_and(|c| c.starts_with("application/json"));
    let field = |name: &str| -> Option<String> {
        if is_json {
            serde_json::from_slice::<Value>(body)
                .ok()?
                .get(name)?
                .as_str()
                .map(String::from)
        } else {
            url::form_urlencoded::parse(body)
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        }
    };
    match field("grant_type").as_deref() {
        Some(JWT_GRANT) => {}
        Some(other) => {
            return oauth_error(
                inner,
                "unsupported_grant_type",
                &format!("Invalid grant_type: {other}"),
            );
        }
        None => {
            return oauth_error(
                inner,
                "invalid_request",
                "Missing required parameter: grant_type",
            );
        }
    }
    if field("assertion").is_none_or(|a| a.trim().is_empty()) {
        return oauth_error(
            inner,
            "invalid_request",
            "Missing required parameter: assertion",
        );
    }
    issue(inner, "jwt-bearer grant")
}

/// `GET /computeMetadata/v1/instance/service-accounts/default/token` with
/// `Metadata-Flavor: Google`.
pub(crate) fn metadata_token(inner: &Arc<Inner>, req: &HttpRequest) -> HttpResponse {
    if header(req, "metadata-flavor").as_deref() != Some("Google") {
        let mut st = inner.lock();
        st.record(
            "service",
            "oauth.token",
            "metadata server: missing Metadata-Flavor: Google header → 403",
            false,
        );
        st.violation("metadata token request without Metadata-Flavor: Google");
        return HttpResponse::Forbidden()
            .content_type("text/html; charset=UTF-8")
            .body("Missing Metadata-Flavor:Google header.");
    }
    issue(inner, "metadata server")
}

fn google_error(code: u16, status: &str, message: &str) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST))
        .json(json!({ "error": { "code": code, "message": message, "status": status } }))
}

/// Records a rejected Dialogflow call (log + errors) and answers Google's error shape.
fn reject(inner: &Inner, call: &str, code: u16, status: &str, message: &str) -> HttpResponse {
    let mut st = inner.lock();
    st.record(
        "service",
        call,
        format!("{code} {status}: {message}"),
        false,
    );
    st.violation(format!("dialogflow {call}: {code} {status}: {message}"));
    google_error(code, status, message)
}

/// What a `/v2/…` path asks for.
enum Op {
    Agent,
    DetectIntent(String),
    Contexts(String),
    Context(String, String),
}

fn call_name(op: &Op, method: &Method) -> &'static str {
    match (op, method) {
        (Op::Agent, _) => "agent.get",
        (Op::DetectIntent(_), _) => "detectIntent",
        (Op::Contexts(_), &Method::GET) => "contexts.list",
        (Op::Contexts(_), &Method::POST) => "contexts.create",
        (Op::Contexts(_), _) => "contexts.delete",
        (Op::Context(..), &Method::GET) => "contexts.get",
        (Op::Context(..), &Method::PATCH) => "contexts.patch",
        (Op::Context(..), _) => "contexts.delete",
    }
}

fn parse_op(rest: &str) -> Option<Op> {
    let rest = rest.trim_end_matches('/');
    if let Some(session) = rest
        .strip_suffix(":detectIntent")
        .or_else(|| rest.strip_suffix("%3AdetectIntent"))
        .or_else(|| rest.strip_suffix("%3adetectIntent"))
    {
        return Some(Op::DetectIntent(session.to_string()));
    }
    if let Some(session) = rest.strip_suffix("/contexts") {
        return Some(Op::Contexts(session.to_string()));
    }
    if let Some(pos) = rest.rfind("/contexts/") {
        let id = &rest[pos + "/contexts/".len()..];
        if !id.contains('/') {
            return Some(Op::Context(rest[..pos].to_string(), id.to_string()));
        }
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let is_agent = matches!(parts.as_slice(), ["projects", p, "agent"] if !p.is_empty())
        || matches!(parts.as_slice(), ["projects", p, "locations", l, "agent"] if !p.is_empty() && !l.is_empty());
    is_agent.then_some(Op::Agent)
}

/// Handles `/v2/{rest}`.
pub(crate) async fn dialogflow(
    inner: &Arc<Inner>,
    req: &HttpRequest,
    body: &[u8],
    rest: &str,
) -> HttpResponse {
    let method = req.method().clone();
    let Some(op) = parse_op(rest) else {
        return reject(
            inner,
            "dialogflow",
            404,
            "NOT_FOUND",
            &format!("Unknown Dialogflow resource /v2/{rest}"),
        );
    };
    let call = call_name(&op, &method);
    // Authentication: a bearer token this emulator issued.
    let token = header(req, "authorization")
        .and_then(|h| h.strip_prefix("Bearer ").map(|t| t.trim().to_string()));
    let known = token
        .as_ref()
        .is_some_and(|t| inner.lock().tokens.contains(t));
    if !known {
        return reject(
            inner,
            call,
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        );
    }
    let project = inner.lock().cfg.dialogflow_project.clone();
    // The resource must be in our project and the global location.
    let session = match &op {
        Op::Agent => None,
        Op::DetectIntent(s) | Op::Contexts(s) | Op::Context(s, _) => match SessionName::parse(s) {
            Some(n) => Some((s.clone(), n)),
            None => {
                return reject(
                    inner,
                    call,
                    400,
                    "INVALID_ARGUMENT",
                    &format!("Resource name '{s}' does not match 'projects/*/agent/sessions/*'."),
                );
            }
        },
    };
    let (path_project, location) = match &session {
        Some((_, n)) => (n.project.clone(), n.location.clone()),
        None => {
            let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
            (
                parts.get(1).copied().unwrap_or_default().to_string(),
                (parts.get(2) == Some(&"locations"))
                    .then(|| parts.get(3).copied().unwrap_or_default().to_string()),
            )
        }
    };
    if path_project != project {
        return reject(
            inner,
            call,
            403,
            "PERMISSION_DENIED",
            &format!(
                "IAM permission denied on 'projects/{path_project}/agent' (the agent lives in project '{project}')."
            ),
        );
    }
    if let Some(l) = location.filter(|l| l != "global") {
        return reject(
            inner,
            call,
            404,
            "NOT_FOUND",
            &format!("No agent in location '{l}' (the agent is global)."),
        );
    }
    match (op, session) {
        (Op::Agent, _) if method == Method::GET => {
            inner
                .lock()
                .record("service", call, format!("projects/{project}/agent"), true);
            HttpResponse::Ok().json(json!({
                "parent": format!("projects/{project}"),
                "displayName": "demo-agent",
                "defaultLanguageCode": "en",
                "timeZone": "Europe/Paris",
            }))
        }
        (Op::Contexts(_), Some((path, name))) if method == Method::GET => {
            let mut st = inner.lock();
            let list = st.agent.output_contexts(&path, &name.key());
            st.record(
                "service",
                call,
                format!("{} → {} context(s)", name.session, list.len()),
                true,
            );
            if list.is_empty() {
                HttpResponse::Ok().json(json!({}))
            } else {
                HttpResponse::Ok().json(json!({ "contexts": list }))
            }
        }
        (Op::Contexts(_), Some((_, name))) if method == Method::DELETE => {
            let mut st = inner.lock();
            let n = st.agent.clear(&name.key());
            st.record(
                "service",
                call,
                format!("{}: all ({n} removed)", name.session),
                true,
            );
            HttpResponse::Ok().json(json!({}))
        }
        (Op::Contexts(_), Some((path, name))) if method == Method::POST => {
            let ctx: Value = match serde_json::from_slice(body) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    return reject(
                        inner,
                        call,
                        400,
                        "INVALID_ARGUMENT",
                        "The body must be a Context JSON object.",
                    );
                }
            };
            let Some(id) = ctx.get("name").and_then(Value::as_str).and_then(context_id) else {
                return reject(
                    inner,
                    call,
                    400,
                    "INVALID_ARGUMENT",
                    "Context name must be '<session>/contexts/<id>' with an id of [a-zA-Z0-9_%-].",
                );
            };
            let lifespan = lifespan_of(&ctx);
            let params = ctx.get("parameters").cloned().unwrap_or_else(|| json!({}));
            let mut st = inner.lock();
            let key = name.key();
            st.agent.set(&key, &id, lifespan, params.clone());
            st.record(
                "service",
                call,
                format!("{}: {id} lifespan {lifespan}", name.session),
                true,
            );
            let stored = st.agent.get(&key, &id);
            let out = match stored {
                Some(c) => context_json(&path, &id, &c),
                None => json!({
                    "name": format!("{path}/contexts/{id}"),
                    "parameters": params,
                }),
            };
            HttpResponse::Ok().json(out)
        }
        (Op::Context(_, raw), Some((path, name))) => {
            let Some(id) = context_id(&raw) else {
                return reject(inner, call, 400, "INVALID_ARGUMENT", "Invalid context id.");
            };
            let key = name.key();
            let mut st = inner.lock();
            let Some(current) = st.agent.get(&key, &id) else {
                drop(st);
                return reject(
                    inner,
                    call,
                    404,
                    "NOT_FOUND",
                    &format!("Context '{path}/contexts/{id}' not found."),
                );
            };
            if method == Method::GET {
                st.record("service", call, format!("{}: {id}", name.session), true);
                HttpResponse::Ok().json(context_json(&path, &id, &current))
            } else if method == Method::DELETE {
                st.agent.delete(&key, &id);
                st.record("service", call, format!("{}: {id}", name.session), true);
                HttpResponse::Ok().json(json!({}))
            } else if method == Method::PATCH {
                drop(st);
                let patch: Value = match serde_json::from_slice(body) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => {
                        return reject(
                            inner,
                            call,
                            400,
                            "INVALID_ARGUMENT",
                            "The body must be a Context JSON object.",
                        );
                    }
                };
                let mask: Vec<String> = url::form_urlencoded::parse(req.query_string().as_bytes())
                    .find(|(k, _)| k == "updateMask")
                    .map(|(_, v)| v.split(',').map(|s| s.trim().to_string()).collect())
                    .unwrap_or_else(|| vec!["lifespanCount".into(), "parameters".into()]);
                let lifespan = if mask
                    .iter()
                    .any(|m| m == "lifespanCount" || m == "lifespan_count")
                {
                    lifespan_of(&patch)
                } else {
                    current.lifespan
                };
                let params = if mask.iter().any(|m| m == "parameters") {
                    patch
                        .get("parameters")
                        .cloned()
                        .unwrap_or_else(|| json!({}))
                } else {
                    current.params.clone()
                };
                let mut st = inner.lock();
                st.agent.set(&key, &id, lifespan, params.clone());
                st.record(
                    "service",
                    call,
                    format!("{}: {id} lifespan {lifespan}", name.session),
                    true,
                );
                HttpResponse::Ok().json(json!({
                    "name": format!("{path}/contexts/{id}"),
                    "lifespanCount": lifespan,
                    "parameters": params,
                }))
            } else {
                drop(st);
                reject(
                    inner,
                    call,
                    405,
                    "METHOD_NOT_ALLOWED",
                    "Unsupported method.",
                )
            }
        }
        (Op::DetectIntent(_), Some((path, name))) if method == Method::POST => {
            detect_intent(inner, body, &path, &name).await
        }
        _ => reject(
            inner,
            call,
            405,
            "METHOD_NOT_ALLOWED",
            "Unsupported method.",
        ),
    }
}

/// `POST …:detectIntent` with a text query. Runs the fulfillment webhook when the intent has
/// it on (like Dialogflow does); sends nothing to Messenger.
async fn detect_intent(
    inner: &Arc<Inner>,
    body: &[u8],
    path: &str,
    name: &SessionName,
) -> HttpResponse {
    let call = "detectIntent";
    let req: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return reject(
                inner,
                call,
                400,
                "INVALID_ARGUMENT",
                "The body must be a DetectIntentRequest JSON object.",
            );
        }
    };
    let Some(text) = req.pointer("/queryInput/text/text").and_then(Value::as_str) else {
        return reject(
            inner,
            call,
            400,
            "INVALID_ARGUMENT",
            "queryInput.text.text is required (the emulator supports text queries only).",
        );
    };
    if text.chars().count() > 256 {
        return reject(
            inner,
            call,
            400,
            "INVALID_ARGUMENT",
            "Text length must not exceed 256 characters.",
        );
    }
    let language = req
        .pointer("/queryInput/text/languageCode")
        .and_then(Value::as_str)
        .unwrap_or("en")
        .to_string();
    let params = req.get("queryParams").cloned().unwrap_or(Value::Null);
    let input_contexts: Vec<(String, i32, Value)> = response_contexts(&json!({
        "outputContexts": params.get("contexts").cloned().unwrap_or(Value::Null)
    }));
    let reset = params
        .get("resetContexts")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let key = name.key();
    let (mut outcome, webhook) = {
        let mut st = inner.lock();
        let project = st.cfg.dialogflow_project.clone();
        let outcome = st.agent.detect(
            &project,
            path,
            &key,
            QueryInput {
                text,
                language: &language,
                reset,
                contexts: input_contexts,
            },
        );
        st.record(
            "service",
            call,
            format!(
                "{}: {text:?} → {} ({})",
                name.session, outcome.intent.display_name, outcome.intent.action
            ),
            true,
        );
        let webhook = if outcome.intent.webhook {
            st.cfg
                .fulfillment_url
                .clone()
                .map(|u| (u, st.cfg.fulfillment_auth_header.clone()))
        } else {
            None
        };
        (outcome, webhook)
    };
    let response_id = random_uuid();
    let mut webhook_status = Value::Null;
    if let Some((url, auth)) = webhook {
        let original = match params.get("payload") {
            Some(p) if p.is_object() => json!({ "payload": p }),
            _ => json!({}),
        };
        let request = webhook_request(&response_id, path, &outcome.query_result, original);
        match call_fulfillment(inner, &url, auth.as_deref(), &request).await {
            Ok(resp) => {
                let mut st = inner.lock();
                for (id, lifespan, p) in response_contexts(&resp) {
                    st.agent.set(&key, &id, lifespan, p);
                }
                let qr = &mut outcome.query_result;
                if let Some(t) = resp.get("fulfillmentText") {
                    qr["fulfillmentText"] = t.clone();
                }
                if let Some(m) = resp.get("fulfillmentMessages") {
                    qr["fulfillmentMessages"] = m.clone();
                }
                qr["outputContexts"] = json!(st.agent.output_contexts(path, &key));
                qr["webhookSource"] = resp.get("source").cloned().unwrap_or(json!(""));
                if let Some(p) = resp.get("payload") {
                    qr["webhookPayload"] = p.clone();
                }
                st.record(
                    "dialogflow",
                    "fulfillment",
                    format!("{} → 200", outcome.intent.action),
                    true,
                );
                webhook_status = json!({ "code": 0, "message": "Webhook execution successful" });
            }
            Err(why) => {
                inner.lock().record(
                    "dialogflow",
                    "fulfillment",
                    format!("{} → {why}", outcome.intent.action),
                    false,
                );
                webhook_status =
                    json!({ "code": 14, "message": format!("Webhook call failed. Error: {why}.") });
            }
        }
    }
    let mut out = json!({ "responseId": response_id, "queryResult": outcome.query_result });
    if !webhook_status.is_null() {
        out["webhookStatus"] = webhook_status;
    }
    HttpResponse::Ok().json(out)
}

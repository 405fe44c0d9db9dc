//! Webhook delivery as Meta does it (signed HTTP POSTs with retries), and the emulated
//! Dialogflow "Messenger from Facebook" integration, which is the bot app's webhook when no
//! `bot_webhook_url` is configured.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Inner;
use super::dialogflow::{
    GENERIC_LIFESPAN, QueryInput, render_messages, response_contexts, webhook_request,
};
use super::platform::{Delivery, SendRequest, random_uuid};
use crate::messenger::signature::sign;

/// Where an app's webhook deliveries go.
enum Sink {
    Http {
        url: String,
        secret: String,
        label: &'static str,
    },
    Integration,
    Nowhere,
}

/// Delivers in order. A delivery that makes the in-process integration react (a user message
/// or postback on `messaging` to the bot) is handled after the other deliveries of the batch;
/// what its reply causes (echoes) is queued behind this batch, so one queue orders everything.
pub(crate) async fn process(inner: &Arc<Inner>, deliveries: Vec<Delivery>) {
    let mut reactions = Vec::new();
    for d in deliveries {
        match sink_of(inner, &d.app_id) {
            Sink::Http { url, secret, label } => {
                deliver_http(inner, &d, &url, &secret, label).await;
            }
            Sink::Integration if reacts(&d) => reactions.push(d),
            Sink::Integration => {
                inner.lock().record(
                    "messenger",
                    "webhook → bot",
                    format!(
                        "{} {} (ignored by the Dialogflow integration)",
                        d.channel.key(),
                        d.summary
                    ),
                    true,
                );
            }
            Sink::Nowhere => {}
        }
    }
    for r in reactions {
        integration(inner, &r).await;
    }
}

fn sink_of(inner: &Inner, app_id: &str) -> Sink {
    let st = inner.lock();
    let cfg = &st.cfg;
    if app_id == cfg.companion_app_id {
        match &cfg.companion_webhook_url {
            Some(url) => Sink::Http {
                url: url.clone(),
                secret: cfg.companion_app_secret.clone(),
                label: "webhook → companion",
            },
            None => Sink::Nowhere,
        }
    } else if app_id == cfg.bot_app_id {
        match &cfg.bot_webhook_url {
            Some(url) => Sink::Http {
                url: url.clone(),
                secret: cfg.bot_app_secret.clone(),
                label: "webhook → bot",
            },
            None => Sink::Integration,
        }
    } else {
        Sink::Nowhere
    }
}

/// The integration reacts to user messages and postbacks on `messaging`, nothing else.
fn reacts(d: &Delivery) -> bool {
    d.channel == super::platform::Channel::Messaging
        && (d.event.get("postback").is_some()
            || d.event
                .get("message")
                .is_some_and(|m| m.get("is_echo").is_none()))
}

fn envelope(page_id: &str, ts: i64, d: &Delivery) -> Value {
    let mut entry = json!({ "id": page_id, "time": ts });
    entry[d.channel.key()] = json!([d.event]);
    json!({ "object": "page", "entry": [entry] })
}

async fn deliver_http(inner: &Arc<Inner>, d: &Delivery, url: &str, secret: &str, label: &str) {
    let (body, retries) = {
        let mut st = inner.lock();
        let ts = st.next_ts();
        let body = envelope(&st.cfg.page_id, ts, d).to_string().into_bytes();
        (body, st.cfg.webhook_retries)
    };
    let signature = sign(secret, &body);
    let mut statuses: Vec<String> = Vec::new();
    let mut ok = false;
    for attempt in 0..=retries {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 << (attempt - 1).min(4))).await;
        }
        let res = inner
            .http
            .post(url)
            .timeout(Duration::from_secs(5))
            .header("Content-Type", "application/json")
            .header("X-Hub-Signature-256", &signature)
            .header("User-Agent", "facebookexternalua")
            .body(body.clone())
            .send()
            .await;
        match res {
            Ok(r) if r.status().as_u16() == 200 => {
                statuses.push("200".into());
                ok = true;
                break;
            }
            Ok(r) => statuses.push(r.status().as_u16().to_string()),
            Err(e) => statuses.push(if e.is_timeout() {
                "timeout".into()
            } else {
                "unreachable".into()
            }),
        }
    }
    let outcome = if ok {
        statuses.join(", ")
    } else {
        format!("{} (gave up)", statuses.join(", "))
    };
    inner.lock().record(
        "messenger",
        label,
        format!("{} {} → {outcome}", d.channel.key(), d.summary),
        ok,
    );
}

/// The Dialogflow Messenger integration handling one user message or postback the bot app
/// received on `messaging`: detectIntent (with its `generic` context), the fulfillment webhook
/// when the intent has it on, then the reply through the Send API as the bot app.
async fn integration(inner: &Arc<Inner>, d: &Delivery) {
    let psid = d
        .event
        .pointer("/sender/id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let query_text = d
        .event
        .pointer("/message/text")
        .or_else(|| d.event.pointer("/postback/payload"))
        .or_else(|| d.event.pointer("/postback/title"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // detectIntent, in process.
    let (outcome, session, webhook) = {
        let mut st = inner.lock();
        st.record(
            "messenger",
            "webhook → bot",
            format!(
                "{} {} (to the Dialogflow integration)",
                d.channel.key(),
                d.summary
            ),
            true,
        );
        let session = st.session_path(&psid);
        let key = st.session_key(&psid);
        let project = st.cfg.dialogflow_project.clone();
        let generic = (
            "generic".to_string(),
            GENERIC_LIFESPAN,
            json!({ "facebook_sender_id": psid }),
        );
        let outcome = st.agent.detect(
            &project,
            &session,
            &key,
            QueryInput {
                text: &query_text,
                language: "en",
                reset: false,
                contexts: vec![generic],
            },
        );
        st.record(
            "messenger integration",
            "detectIntent",
            format!(
                "{query_text:?} → {} ({})",
                outcome.intent.display_name, outcome.intent.action
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
        (outcome, session, webhook)
    };
    let mut messages = vec![json!({ "text": outcome.text })];
    if let Some((url, auth)) = webhook {
        let original = json!({
            "source": "facebook",
            "payload": { "source": "facebook", "data": d.event },
        });
        let request = webhook_request(&random_uuid(), &session, &outcome.query_result, original);
        match call_fulfillment(inner, &url, auth.as_deref(), &request).await {
            Ok(resp) => {
                let mut st = inner.lock();
                let key = st.session_key(&psid);
                for (id, lifespan, params) in response_contexts(&resp) {
                    st.agent.set(&key, &id, lifespan, params);
                }
                let rendered = render_messages(&resp);
                st.record(
                    "dialogflow",
                    "fulfillment",
                    format!(
                        "{} → 200, {} message(s), {} context change(s)",
                        outcome.intent.action,
                        rendered.len(),
                        response_contexts(&resp).len()
                    ),
                    true,
                );
                if !rendered.is_empty() {
                    messages = rendered;
                }
            }
            Err(why) => {
                inner.lock().record(
                    "dialogflow",
                    "fulfillment",
                    format!(
                        "{} → {why}; the intent's static response is used",
                        outcome.intent.action
                    ),
                    false,
                );
            }
        }
    }
    // The reply, through the same Send API rules as everyone else.
    let bot = inner.lock().cfg.bot_app_id.clone();
    for message in messages {
        let req = SendRequest {
            messaging_type: Some("RESPONSE".into()),
            tag: None,
            message: Some(message),
            metadata: None,
        };
        let mut st = inner.lock();
        let text = super::dialogflow::message_text(req.message.as_ref().unwrap_or(&Value::Null));
        match st.send(&bot, &psid, &req) {
            Ok((resp, deliveries)) => {
                let mid = resp["message_id"].as_str().unwrap_or_default().to_string();
                st.record("bot app", "send_api", format!("{text:?} → {mid}"), true);
                inner.enqueue(deliveries);
            }
            Err(e) => {
                st.record(
                    "bot app",
                    "send_api",
                    format!("{text:?} → {}", e.short()),
                    false,
                );
                st.violation(format!(
                    "send_api by the bot app (Dialogflow integration) for {psid}: {}",
                    e.short()
                ));
            }
        }
    }
}

/// POSTs a WebhookRequest with Dialogflow's 5 s deadline; Ok only for 200 + a JSON object.
pub(crate) async fn call_fulfillment(
    inner: &Inner,
    url: &str,
    auth: Option<&str>,
    request: &Value,
) -> Result<Value, String> {
    let mut rb = inner
        .http
        .post(url)
        .timeout(Duration::from_secs(5))
        .header("Content-Type", "application/json")
        .body(request.to_string());
    if let Some(a) = auth {
        rb = rb.header("Authorization", a);
    }
    let resp = rb.send().await.map_err(|e| {
        if e.is_timeout() {
            "DEADLINE_EXCEEDED".to_string()
        } else {
            "webhook unreachable".to_string()
        }
    })?;
    let status = resp.status().as_u16();
    let bytes = resp
        .bytes()
        .await
        .map_err(|_| format!("{status}, body unreadable"))?;
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err("200 but the body is not a JSON WebhookResponse".into()),
    }
}

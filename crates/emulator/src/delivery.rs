//! Webhook delivery as Meta does it (signed HTTP POSTs with retries), and the emulated
//! Dialogflow "Messenger from Facebook" integration, which is the bot app's webhook when no
//! `bot_webhook_url` is configured.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rand::seq::SliceRandom;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Inner;
use super::chaos::{DeliveryOutcome, DeliveryRecord, HeldDelivery, Observed};
use super::dialogflow::{
    GENERIC_LIFESPAN, QueryInput, render_messages, response_contexts, webhook_request,
};
use super::platform::State;
use super::platform::{Delivery, SendRequest, Via, random_uuid};
use crate::signing::webhook_signature as sign;

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
            Sink::Http { secret, label, .. } if label == COMPANION && diverted(inner) => {
                divert(inner, &d, &secret);
            }
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
        let delay = {
            let mut st = inner.lock();
            let max = st.chaos.bot_max_delay_ms;
            let psid = psid_of(&st.cfg.page_id, &r);
            st.dice.upto(&psid, "bot delay", max)
        };
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        integration(inner, &r).await;
    }
}

const COMPANION: &str = "webhook → companion";

/// The user a delivery is about: the sender, or the recipient of an echo (sent by the Page).
fn psid_of(page_id: &str, d: &Delivery) -> String {
    let sender = d
        .event
        .pointer("/sender/id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if sender == page_id {
        d.event
            .pointer("/recipient/id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    } else {
        sender.to_string()
    }
}

/// A companion delivery, signed and ready to send (its body never changes afterwards, so a
/// duplicate is byte-identical).
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    pub psid: String,
    pub channel: &'static str,
    pub summary: String,
    pub event_ts: i64,
    pub mid: Option<String>,
    pub body: Vec<u8>,
    pub signature: String,
    /// A description of what chaos did to it, for the log (`delayed 120 ms, duplicate`).
    pub chaos: String,
}

#[derive(Debug)]
pub(crate) struct Pooled {
    pub due: Instant,
    pub item: Prepared,
}

/// Companion deliveries that are not sent inline: held by a test, or waiting for their chaos
/// delay. Behind its own mutex; never locked while the state lock is held.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    pub holding: bool,
    pub held: Vec<Prepared>,
    pub waiting: Vec<Pooled>,
    /// Pooled deliveries being sent right now.
    pub in_flight: usize,
    /// Without reordering, due times never go backwards.
    pub last_due: Option<Instant>,
}

/// Deliveries to the companion are held or pooled instead of sent inline.
fn diverted(inner: &Inner) -> bool {
    let holding = inner.pool().holding;
    holding || inner.lock().chaos.affects_webhooks()
}

fn mid_of(d: &Delivery) -> Option<String> {
    d.event
        .pointer("/message/mid")
        .or_else(|| d.event.pointer("/postback/mid"))
        .and_then(Value::as_str)
        .map(String::from)
}

fn prepare(inner: &Inner, d: &Delivery, secret: &str) -> Prepared {
    let mut st = inner.lock();
    let ts = st.next_ts();
    let body = envelope(&st.cfg.page_id, ts, d).to_string().into_bytes();
    let psid = psid_of(&st.cfg.page_id, d);
    Prepared {
        psid,
        channel: d.channel.key(),
        summary: d.summary.clone(),
        event_ts: d
            .event
            .get("timestamp")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        mid: mid_of(d),
        signature: sign(secret, &body),
        body,
        chaos: String::new(),
    }
}

/// Records what became of a companion delivery in its user's timeline.
pub(crate) fn observe(st: &mut State, p: &Prepared, outcome: DeliveryOutcome, detail: String) {
    let record = DeliveryRecord {
        channel: p.channel.to_string(),
        summary: p.summary.clone(),
        event_ts: p.event_ts,
        mid: p.mid.clone(),
        outcome,
        detail,
    };
    st.observe(&p.psid, None, Observed::Delivery(record));
}

/// Holds the delivery, or rolls the chaos dice for it: dropped, or pooled (with a delay,
/// perhaps twice).
fn divert(inner: &Arc<Inner>, d: &Delivery, secret: &str) {
    let mut item = prepare(inner, d, secret);
    {
        let mut pool = inner.pool();
        if pool.holding {
            pool.held.push(item.clone());
            drop(pool);
            let mut st = inner.lock();
            st.record(
                "messenger",
                COMPANION,
                format!("{} {} → held", item.channel, item.summary),
                true,
            );
            observe(&mut st, &item, DeliveryOutcome::Held, String::new());
            return;
        }
    }
    let (drop_it, delay, duplicate, reorder) = {
        let mut st = inner.lock();
        let chaos = st.chaos.clone();
        let psid = item.psid.clone();
        let drop_it = st.dice.chance(&psid, "webhook", chaos.webhook_drop);
        let delay = st.dice.upto(&psid, "webhook", chaos.webhook_max_delay_ms);
        let duplicate = if st.dice.chance(&psid, "webhook", chaos.webhook_duplicate) {
            Some(
                10 + st
                    .dice
                    .upto(&psid, "webhook", chaos.webhook_max_delay_ms + 100),
            )
        } else {
            None
        };
        if drop_it {
            st.record(
                "messenger",
                COMPANION,
                format!("{} {} → [chaos] dropped", item.channel, item.summary),
                false,
            );
            observe(&mut st, &item, DeliveryOutcome::Dropped, String::new());
        }
        (drop_it, delay, duplicate, chaos.webhook_reorder)
    };
    if drop_it {
        return;
    }
    let now = Instant::now();
    let mut pool = inner.pool();
    let mut due = now + Duration::from_millis(delay);
    if !reorder {
        due = due.max(pool.last_due.unwrap_or(now));
        pool.last_due = Some(due);
    }
    item.chaos = format!("delayed {delay} ms");
    if let Some(extra) = duplicate {
        let mut dup = item.clone();
        dup.chaos = format!("duplicate, {} ms after the original", extra);
        let mut dup_due = due + Duration::from_millis(extra);
        if !reorder {
            dup_due = dup_due.max(pool.last_due.unwrap_or(now));
            pool.last_due = Some(dup_due);
        }
        pool.waiting.push(Pooled {
            due: dup_due,
            item: dup,
        });
    }
    pool.waiting.push(Pooled { due, item });
    drop(pool);
    inner.pool_wake.notify_one();
}

/// Sends pooled deliveries when they are due: concurrently and in random order with
/// `webhook_reorder`, else one at a time in due order.
pub(crate) async fn pool_worker(inner: Weak<Inner>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let next = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let now = Instant::now();
            let (mut due, next) = {
                let mut pool = inner.pool();
                let mut due = Vec::new();
                let mut i = 0;
                while i < pool.waiting.len() {
                    if pool.waiting[i].due <= now {
                        due.push(pool.waiting.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
                pool.in_flight += due.len();
                let next = pool.waiting.iter().map(|p| p.due).min();
                (due, next)
            };
            let reorder = inner.lock().chaos.webhook_reorder;
            if reorder {
                let psid = due.first().map(|p| p.item.psid.clone()).unwrap_or_default();
                let mut st = inner.lock();
                due.shuffle(st.dice.stream(&psid, "reorder"));
                drop(st);
                for p in due {
                    let inner = inner.clone();
                    tokio::spawn(async move {
                        send_prepared(&inner, &p.item).await;
                        inner.pool().in_flight -= 1;
                    });
                }
            } else {
                due.sort_by_key(|p| p.due);
                for p in due {
                    send_prepared(&inner, &p.item).await;
                    inner.pool().in_flight -= 1;
                }
            }
            next
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// Sends a prepared companion delivery to the companion's webhook URL as it is now (the
/// service may have restarted on another port), with Meta-like retries.
pub(crate) async fn send_prepared(inner: &Arc<Inner>, item: &Prepared) {
    const ATTEMPTS: u32 = 9;
    let url = || inner.lock().cfg.companion_webhook_url.clone();
    let (statuses, ok) = post_with_retries(inner, ATTEMPTS, url, &item.signature, &item.body).await;
    let outcome = outcome_of(&statuses, ok);
    let chaos = if item.chaos.is_empty() {
        String::new()
    } else {
        format!(" [chaos: {}]", item.chaos)
    };
    let mut st = inner.lock();
    st.record(
        "messenger",
        COMPANION,
        format!("{} {} → {outcome}{chaos}", item.channel, item.summary),
        ok,
    );
    let result = if ok {
        DeliveryOutcome::Delivered
    } else {
        DeliveryOutcome::GaveUp
    };
    observe(&mut st, item, result, format!("{statuses}{chaos}"));
}

/// The held deliveries, in the order they were held.
pub(crate) fn held(inner: &Inner) -> Vec<HeldDelivery> {
    inner
        .pool()
        .held
        .iter()
        .enumerate()
        .map(|(index, p)| HeldDelivery {
            index,
            psid: p.psid.clone(),
            channel: p.channel.to_string(),
            summary: p.summary.clone(),
            body: String::from_utf8_lossy(&p.body).into_owned(),
        })
        .collect()
}

/// Takes the held deliveries at `order` (indices into `held()`, in that order; unknown or
/// repeated indices are ignored) out of the hold; the others stay held.
pub(crate) fn take_held(inner: &Inner, order: &[usize]) -> Vec<Prepared> {
    let mut pool = inner.pool();
    let mut seen = std::collections::HashSet::new();
    let picked: Vec<usize> = order
        .iter()
        .copied()
        .filter(|i| *i < pool.held.len() && seen.insert(*i))
        .collect();
    let out: Vec<Prepared> = picked.iter().map(|i| pool.held[*i].clone()).collect();
    let mut index = 0;
    pool.held.retain(|_| {
        let keep = !seen.contains(&index);
        index += 1;
        keep
    });
    out
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
    let url_now = || Some(url.to_owned());
    let (statuses, ok) = post_with_retries(inner, retries + 1, url_now, &signature, &body).await;
    let outcome = outcome_of(&statuses, ok);
    let mut st = inner.lock();
    st.record(
        "messenger",
        label,
        format!("{} {} → {outcome}", d.channel.key(), d.summary),
        ok,
    );
    if label == COMPANION {
        let psid = psid_of(&st.cfg.page_id, d);
        if st.threads.contains_key(&psid) {
            let record = DeliveryRecord {
                channel: d.channel.key().to_string(),
                summary: d.summary.clone(),
                event_ts: d
                    .event
                    .get("timestamp")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                mid: mid_of(d),
                outcome: if ok {
                    DeliveryOutcome::Delivered
                } else {
                    DeliveryOutcome::GaveUp
                },
                detail: statuses.clone(),
            };
            st.observe(&psid, None, Observed::Delivery(record));
        }
    }
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
        st.observe(
            &psid,
            None,
            Observed::Intent {
                action: outcome.intent.action.to_string(),
                webhook: webhook.is_some(),
            },
        );
        (outcome, session, webhook)
    };
    let mut messages = vec![json!({ "text": outcome.text })];
    let mut fulfilled = None;
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
                fulfilled = Some(true);
            }
            Err(why) => {
                fulfilled = Some(false);
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
    if let Some(ok) = fulfilled {
        inner.lock().observe(
            &psid,
            None,
            Observed::Fulfillment {
                action: outcome.intent.action.to_string(),
                ok,
            },
        );
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
        match st.send(&bot, &psid, &req, Via::Integration) {
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
                st.observe(
                    &psid,
                    None,
                    Observed::Refused {
                        app_id: bot.clone(),
                        call: format!("send_api {text:?}"),
                        error: e.short(),
                        by_integration: true,
                    },
                );
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

/// Up to `attempts` signed POSTs with Meta-like backoff until one gets a 200; the URL is looked
/// up before each (`None`: no webhook). The statuses seen (comma-separated), and whether it
/// was delivered.
async fn post_with_retries(
    inner: &Inner,
    attempts: u32,
    url: impl Fn() -> Option<String>,
    signature: &str,
    body: &[u8],
) -> (String, bool) {
    let mut statuses: Vec<String> = Vec::new();
    let mut ok = false;
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 << (attempt - 1).min(4))).await;
        }
        let Some(url) = url() else {
            statuses.push("no webhook".into());
            break;
        };
        let status = post_signed(inner, &url, signature, body).await;
        ok = status == "200";
        statuses.push(status);
        if ok {
            break;
        }
    }
    (statuses.join(", "), ok)
}

/// How a delivery ended, for the log: the statuses, and whether Meta gave up.
fn outcome_of(statuses: &str, ok: bool) -> String {
    if ok {
        statuses.to_owned()
    } else {
        format!("{statuses} (gave up)")
    }
}

/// One signed webhook POST, as Meta makes it: the HTTP status, `timeout` or `unreachable`.
async fn post_signed(inner: &Inner, url: &str, signature: &str, body: &[u8]) -> String {
    let res = inner
        .http
        .post(url)
        .timeout(Duration::from_secs(5))
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", signature)
        .header("User-Agent", "facebookexternalua")
        .body(body.to_vec())
        .send()
        .await;
    match res {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) if e.is_timeout() => "timeout".into(),
        Err(_) => "unreachable".into(),
    }
}

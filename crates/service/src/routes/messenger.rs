//! `GET /messenger` (webhook verification) and `POST /messenger` (deliveries).
//!
//! A delivery is acknowledged only after every event in it is stored (deduplicated) with its
//! processing job, in one transaction: an acknowledged event is never lost.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;
use tracing::{error, info, warn};

use super::body::{self, BodyLimits};
use super::json_error;
use crate::app::Services;
use crate::messenger::signature::{self, SignatureError};
use crate::messenger::webhook::{Delivery, DeliveryError, parse_delivery};
use crate::time::now_ms;
use handover_core::State;
use handover_core::event::{EventKind, IncomingEvent};

/// Meta's verification request. The verify token is compared in constant time and never logged.
pub async fn verify(req: HttpRequest, svc: web::Data<Services>) -> HttpResponse {
    // Parsed leniently by hand: a malformed query is simply a failed verification.
    let query: HashMap<String, String> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let mode = query.get("hub.mode").map(String::as_str);
    let token = query
        .get("hub.verify_token")
        .map(String::as_str)
        .unwrap_or("");
    let challenge = query.get("hub.challenge");
    let token_ok = svc.settings.fb_verify_token.matches(token.as_bytes());
    match (mode, challenge) {
        (Some("subscribe"), Some(challenge)) if token_ok => {
            info!("webhook verification succeeded");
            HttpResponse::Ok()
                .content_type("text/plain; charset=utf-8")
                .body(challenge.clone())
        }
        _ => {
            warn!("webhook verification refused");
            json_error(
                StatusCode::FORBIDDEN,
                "verification failed: hub.mode must be subscribe and hub.verify_token must match FB_VERIFY_TOKEN",
            )
        }
    }
}

pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    svc: web::Data<Services>,
) -> HttpResponse {
    let delivery = |result: &str| svc.metrics.webhook_delivery(result);
    let body = match body::read(&req, payload, BodyLimits::of(&svc.settings.server)).await {
        Ok(body) => body,
        Err(e) => {
            delivery(e.label());
            return e.response();
        }
    };
    let header = req
        .headers()
        .get("x-hub-signature-256")
        .and_then(|h| h.to_str().ok());
    if let Err(e) = signature::verify(svc.settings.fb_webhook_app_secret.expose(), &body, header) {
        delivery("bad_signature");
        warn!(error = %e, "webhook delivery refused");
        let status = match e {
            SignatureError::Missing => StatusCode::UNAUTHORIZED,
            SignatureError::Malformed | SignatureError::Mismatch => StatusCode::FORBIDDEN,
        };
        return json_error(status, e.to_string());
    }
    let parsed = match parse_delivery(&body) {
        Ok(parsed) => parsed,
        Err(e @ DeliveryError::Json(_)) => {
            delivery("bad_json");
            return json_error(StatusCode::BAD_REQUEST, e.to_string());
        }
        Err(e @ DeliveryError::NotPage(_)) => {
            delivery("not_page");
            return json_error(StatusCode::NOT_FOUND, e.to_string());
        }
    };
    note_refusals(&svc, &parsed);
    let events = parsed.events;
    let total = events.len();
    // Reads and deliveries never change a conversation: not stored. The bot's own echoes only
    // matter while the service believes another app has the thread (they prove the bot has it
    // back); otherwise they are dropped without a write.
    let app_id = svc.settings.fb_app_id.as_str();
    let mut relevant = Vec::with_capacity(events.len());
    let mut ignored_kinds = Vec::new();
    for e in events.into_iter() {
        if !e.kind.is_relevant() {
            ignored_kinds.push(kind_of(&e));
            continue;
        }
        if matches!(&e.kind, EventKind::Echo { app_id: Some(a), .. } if a == app_id) {
            match svc.store.thread_state(&e.account_id, &e.user_id).await {
                Ok(Some(State::Human | State::Returning | State::Idle)) => {}
                Ok(_) => {
                    ignored_kinds.push(kind_of(&e));
                    continue;
                }
                Err(err) => {
                    delivery("store_error");
                    error!(error = %err, "could not read a thread; Meta will retry the delivery");
                    return json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the store is not available; retry later",
                    );
                }
            }
        }
        relevant.push(e);
    }
    let ignored = total - relevant.len();
    let kinds: Vec<_> = relevant.iter().map(kind_of).collect();
    svc.metrics.webhook_events_as(&ignored_kinds, "ignored");
    match svc.store.ingest(relevant, now_ms()).await {
        Ok(report) => {
            delivery("stored");
            let m = &svc.metrics;
            m.webhook_events("stored", report.stored as u64);
            m.webhook_events("duplicate", report.duplicates as u64);
            m.webhook_events("ignored", ignored as u64);
            m.webhook_events_ingested(&kinds, report.stored, report.duplicates);
            if report.stored > 0 {
                svc.wake.notify_one();
            }
            HttpResponse::Ok().json(json!({
                "stored": report.stored,
                "duplicates": report.duplicates,
                "ignored": ignored,
            }))
        }
        Err(e) => {
            delivery("store_error");
            svc.metrics.webhook_events("refused", kinds.len() as u64);
            svc.metrics.webhook_events_as(&kinds, "refused");
            error!(error = %e, "could not store a webhook delivery; Meta will retry it");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is not available; retry later",
            )
        }
    }
}

/// Counts and logs the events of a delivery that are not stored, and the fields stored cut.
/// The log line says where the event was and why, never its content.
fn note_refusals(svc: &Services, parsed: &Delivery) {
    for refused in &parsed.refused {
        svc.metrics.webhook_event_refused(refused.reason.as_str());
        warn!(
            entry = refused.entry,
            channel = refused.channel.map(|c| c.as_str()),
            kind = refused.kind,
            reason = refused.reason.as_str(),
            "webhook event not stored"
        );
    }
    for field in &parsed.truncated {
        svc.metrics.webhook_field_truncated(field);
    }
    if !parsed.truncated.is_empty() {
        info!(
            fields = ?parsed.truncated,
            "webhook fields over their caps were stored cut"
        );
    }
}

/// An event's kind and channel, as the metrics label them.
fn kind_of(e: &IncomingEvent) -> (&'static str, &'static str) {
    (e.kind.name(), e.channel.as_str())
}

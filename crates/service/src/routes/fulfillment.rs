//! `POST /fulfillment`: the Dialogflow ES agent's fulfillment webhook.
//!
//! It answers from what it has (the intent's own texts, the stored snapshot) and queues the
//! Graph API work, so it never waits on Meta: Dialogflow's 5 s deadline is never at risk.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{Header, TryIntoHeaderValue, WWW_AUTHENTICATE};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use actix_web_httpauth::headers::authorization::{Authorization, Basic, Bearer};
use actix_web_httpauth::headers::www_authenticate::{WwwAuthenticate, basic};
use serde_json::Value;
use tracing::{error, info};

use super::body::{self, BodyLimits};
use super::json_error;
use crate::app::Services;
use crate::config::FulfillmentAuth;
use crate::dialogflow::webhook::{
    Context, WebhookRequest, WebhookResponse, context_id, context_name,
};
use crate::secret::constant_time_eq;
use crate::store::StoreError;
use crate::time::now_ms;
use handover_core::contexts::{HANDOVER_CONTEXT, on_return, restorable};
use handover_core::{Decision, Input, decide};

/// Lifespan of the `human_handover` output context (in conversational turns).
const HANDOVER_CONTEXT_LIFESPAN: i32 = 50;

/// Checks the `Authorization` header (parsed by `actix-web-httpauth`) against the configured
/// credentials, in constant time.
fn authorized(auth: &FulfillmentAuth, req: &HttpRequest) -> bool {
    match auth {
        FulfillmentAuth::None => true,
        FulfillmentAuth::Bearer(token) => Authorization::<Bearer>::parse(req)
            .is_ok_and(|h| token.matches(h.as_ref().token().trim().as_bytes())),
        FulfillmentAuth::Basic { username, password } => {
            let Ok(header) = Authorization::<Basic>::parse(req) else {
                return false;
            };
            let given = header.as_ref();
            // Both comparisons always run, so timing does not tell which part was wrong.
            let user_ok =
                constant_time_eq(username.expose().as_bytes(), given.user_id().as_bytes());
            let pass_ok = constant_time_eq(
                password.expose().as_bytes(),
                given.password().unwrap_or_default().as_bytes(),
            );
            user_ok & pass_ok
        }
    }
}

fn unauthorized(auth: &FulfillmentAuth) -> HttpResponse {
    let mut resp = json_error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong credentials for /fulfillment",
    );
    if matches!(auth, FulfillmentAuth::Basic { .. }) {
        let challenge = WwwAuthenticate(basic::Basic::with_realm("fulfillment"));
        if let Ok(value) = challenge.try_into_value() {
            resp.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
    }
    resp
}

/// Dialogflow sends `application/json` (with or without `charset=utf-8`); JSON is UTF-8.
fn is_json(req: &HttpRequest) -> bool {
    match req.mime_type() {
        Ok(Some(mime)) => {
            mime.essence_str() == "application/json"
                && mime
                    .get_param("charset")
                    .is_none_or(|c| c.as_str().eq_ignore_ascii_case("utf-8"))
        }
        _ => false,
    }
}

pub async fn fulfillment(
    req: HttpRequest,
    payload: web::Payload,
    svc: web::Data<Services>,
) -> HttpResponse {
    let outcome = |o: &str| svc.metrics.fulfillment_request(o);
    if !authorized(&svc.settings.fulfillment_auth, &req) {
        outcome("unauthorized");
        return unauthorized(&svc.settings.fulfillment_auth);
    }
    if !is_json(&req) {
        outcome("unsupported_media_type");
        // The body is not read; `body::hold_unread` has the connection closed after this.
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON, with Content-Type: application/json",
        );
    }
    let body = match body::read(&req, payload, BodyLimits::of(&svc.settings.server)).await {
        Ok(body) => body,
        Err(e) => {
            outcome(e.label());
            return e.response();
        }
    };
    let request = match WebhookRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            outcome("bad_request");
            return match e.field {
                Some(field) => super::field_error(&field, e.message),
                None => json_error(StatusCode::BAD_REQUEST, e.message),
            };
        }
    };
    let Some(psid) = request.psid() else {
        // The console simulator or another channel: no Messenger user to hand over.
        outcome("no_messenger_user");
        return HttpResponse::Ok().json(request.own_response());
    };
    let page_id = request
        .page_id()
        .or_else(|| svc.settings.fb_page_id.clone())
        .unwrap_or_else(|| "unknown".to_owned());
    super::observe::record_thread(&req, svc.pseudonyms.thread(&page_id, &psid));
    let action = request.action().unwrap_or("");
    let settings = &svc.settings;
    let result = if settings.handover_actions.iter().any(|a| a == action) {
        handover(&svc, &request, &page_id, &psid).await
    } else if settings.return_actions.iter().any(|a| a == action) {
        return_to_bot(&svc, &request, &page_id, &psid).await
    } else {
        remember(&svc, &request, &page_id, &psid).await
    };
    match result {
        Ok((kind, response)) => {
            outcome(kind);
            HttpResponse::Ok().json(response)
        }
        Err(e) => {
            outcome("store_error");
            error!(error = %e, "fulfillment could not reach the store");
            // Dialogflow falls back to the intent's static response.
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is not available; try again",
            )
        }
    }
}

type Answer = Result<(&'static str, WebhookResponse), StoreError>;

/// Feeds `input` to the state machine in one store transaction; wakes the worker for new jobs.
async fn apply(
    svc: &Services,
    page_id: &str,
    psid: &str,
    input: Input<'static>,
) -> Result<Decision, StoreError> {
    let now = now_ms();
    let policy = Arc::clone(&svc.policy);
    let decision = svc
        .store
        .apply(page_id, psid, now, move |t| decide(t, &input, &policy, now))
        .await?;
    svc.metrics.decision(&decision);
    if !decision.jobs.is_empty() {
        svc.wake.notify_one();
    }
    Ok(decision)
}

fn own_or(request: &WebhookRequest, fallback: &str) -> WebhookResponse {
    if request.own_text().is_some() {
        request.own_response()
    } else {
        WebhookResponse::text(fallback)
    }
}

fn handover_context(session: &str, lifespan: i32) -> Context {
    Context {
        name: context_name(session, HANDOVER_CONTEXT),
        lifespan_count: Some(lifespan),
        parameters: None,
    }
}

async fn handover(svc: &Services, request: &WebhookRequest, page_id: &str, psid: &str) -> Answer {
    let snapshot: Vec<Value> = request
        .output_contexts()
        .iter()
        .filter(|c| context_id(&c.name) != HANDOVER_CONTEXT)
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    let input = Input::Handover {
        session: request.session.clone(),
        snapshot: Value::Array(snapshot).into(),
        asked_at: request.messenger_timestamp(),
    };
    let decision = apply(svc, page_id, psid, input).await?;
    info!(
        state = decision.thread.state.as_str(),
        delay_ms = svc.settings.handover_pass_delay_ms,
        "handover requested by fulfillment"
    );
    let mut response = own_or(request, &svc.settings.handover_message);
    response.output_contexts = Some(vec![handover_context(
        &request.session,
        HANDOVER_CONTEXT_LIFESPAN,
    )]);
    Ok(("handover", response))
}

async fn return_to_bot(
    svc: &Services,
    request: &WebhookRequest,
    page_id: &str,
    psid: &str,
) -> Answer {
    let input = Input::ReturnByFulfillment {
        session: request.session.clone(),
        heard_at: request
            .is_messenger_message()
            .then(|| request.messenger_timestamp())
            .flatten(),
    };
    let decision = apply(svc, page_id, psid, input).await?;
    // The contexts are set in this very response (in-band), so no API call is needed.
    let session = &request.session;
    let snapshot = decision.thread.snapshot.as_ref();
    // Without an API call this answer cannot list the session: it zeroes every context that
    // may be alive (this request's, the snapshot's, `human_handover`) that the policy drops.
    let mode = svc.settings.context_on_return;
    let request_contexts = request.output_contexts();
    let captured = restorable(snapshot);
    let may_be_alive = request_contexts
        .iter()
        .map(|c| c.name.as_str())
        .chain(captured.iter().map(|c| c.id.as_str()))
        .chain([HANDOVER_CONTEXT]);
    let change = on_return(mode, may_be_alive, snapshot);
    let recreated = |id: &str| change.create.iter().any(|c| c.id == id);
    let mut contexts: Vec<Context> = change
        .delete
        .iter()
        .filter(|id| !recreated(id))
        .map(|id| Context {
            name: context_name(session, id),
            lifespan_count: Some(0),
            parameters: None,
        })
        .collect();
    contexts.extend(change.create.iter().map(|c| Context::restored(session, c)));
    // The welcome (the intent's own text, or WELCOME_BACK_MESSAGE) is in this answer only when
    // the integration can deliver it (the bot owns the thread) and it is this return's first;
    // otherwise the service welcomes after the take (this answer is then refused by Meta while
    // another app has the thread), or already did.
    let mut response = if decision.welcome_in_band {
        own_or(request, &svc.settings.welcome_back_message)
    } else {
        // Not the intent's own text (usually a welcome, which would be a second one when it
        // crosses the service's after the take): Dialogflow would fall back to it on an empty
        // answer, so a neutral one.
        WebhookResponse::text(&svc.settings.already_with_bot_message)
    };
    response.output_contexts = Some(contexts);
    info!(
        state = decision.thread.state.as_str(),
        "return to the bot requested by fulfillment"
    );
    Ok(("return", response))
}

/// A plain turn: usually no write at all (`store::turns`), nor any other work.
async fn remember(svc: &Services, request: &WebhookRequest, page_id: &str, psid: &str) -> Answer {
    if !svc
        .store
        .turn_changes_nothing(page_id, psid, &request.session, now_ms())
    {
        let input = Input::RememberSession {
            session: request.session.clone(),
        };
        apply(svc, page_id, psid, input).await?;
    }
    Ok(("passthrough", request.own_response()))
}

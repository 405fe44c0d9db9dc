//! `/admin`: the operators' JSON API and page, registered only when `ADMIN_TOKEN` is set
//! (otherwise every `/admin` route is the service's plain 404).
//!
//! Every API call carries `Authorization: Bearer <ADMIN_TOKEN>` (parsed by
//! `actix-web-httpauth`, compared in constant time): none gives 401 with a `Bearer` challenge,
//! a wrong one 403. The page itself holds no data and is served without the token. The
//! actions are state-machine decisions (`Input::AdminReturn`, `Input::AdminHandover`) applied
//! like any other; they and job retries are recorded in the audit trail, cause `admin: …`.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, Header, TryIntoHeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use actix_web_httpauth::headers::authorization::{Authorization, Bearer};
use actix_web_httpauth::headers::www_authenticate::{WwwAuthenticate, bearer};
use serde_json::{Value, json};
use tracing::{error, info};

use crate::admin::query::{self, FieldError};
use crate::admin::{page, view};
use crate::app::Services;
use crate::routes::body::{self, BodyError, BodyLimits};
use crate::routes::other_methods;
use crate::store::{Retry, StoreError, ThreadCursor};
use crate::time::now_ms;
use handover_core::{Input, decide};

/// The audit rows and jobs a thread's page shows (the newest).
const THREAD_TRANSITIONS: i64 = 200;
const THREAD_JOBS: i64 = 100;

/// The admin routes, if `enabled`.
pub fn configure(cfg: &mut web::ServiceConfig, enabled: bool) {
    if !enabled {
        return;
    }
    // Each answers its other methods with a JSON 405 and `Allow`, like the other routes.
    let get = |path: &str, route| {
        web::resource(path)
            .route(route)
            .default_service(other_methods("GET"))
    };
    let post = |path: &str, route| {
        web::resource(path)
            .route(route)
            .default_service(other_methods("POST"))
    };
    cfg.service(get("/admin", web::get().to(admin_page)))
        .service(get("/admin/threads", web::get().to(list_threads)))
        .service(get("/admin/threads/{psid}", web::get().to(show_thread)))
        .service(post(
            "/admin/threads/{psid}/return",
            web::post().to(give_back),
        ))
        .service(post(
            "/admin/threads/{psid}/handover",
            web::post().to(hand_over),
        ))
        .service(get("/admin/jobs", web::get().to(list_jobs)))
        .service(post("/admin/jobs/{id}/retry", web::post().to(retry_job)));
}

/// Why an admin call is refused; each is a JSON `{"error": ...}` (with `field` when a field
/// of the request is wrong).
#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error("missing credentials: send Authorization: Bearer <ADMIN_TOKEN>")]
    Unauthorized,
    #[error("wrong admin token")]
    Forbidden,
    #[error("{0}")]
    Bad(FieldError),
    #[error("{0}")]
    NotFound(FieldError),
    #[error("{0}")]
    Conflict(String),
    #[error("the store is not available; try again")]
    Store,
    /// The body was too large, too slow or broken (`routes::body`).
    #[error("{0}")]
    Body(BodyError),
}

impl From<FieldError> for AdminError {
    fn from(e: FieldError) -> Self {
        AdminError::Bad(e)
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        error!(error = %e, "admin API: store error");
        AdminError::Store
    }
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden => StatusCode::FORBIDDEN,
            AdminError::Bad(_) => StatusCode::BAD_REQUEST,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Store => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Body(e) => e.status(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({ "error": self.to_string() });
        if let AdminError::Bad(e) | AdminError::NotFound(e) = self {
            body["field"] = json!(e.field);
        }
        let mut resp = HttpResponse::build(self.status_code())
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(body);
        if let AdminError::Unauthorized = self {
            let challenge = WwwAuthenticate(bearer::Bearer::build().realm("admin").finish());
            if let Ok(value) = challenge.try_into_value() {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, value);
            }
        }
        resp
    }
}

type Answer = Result<HttpResponse, AdminError>;

/// The bearer token against `ADMIN_TOKEN`, in constant time.
fn authorize(req: &HttpRequest, svc: &Services) -> Result<(), AdminError> {
    let Some(token) = &svc.settings.admin_token else {
        // Not reached: the routes exist only with a token.
        return Err(AdminError::Forbidden);
    };
    let header = Authorization::<Bearer>::parse(req).map_err(|_| AdminError::Unauthorized)?;
    if token.matches(header.as_ref().token().trim().as_bytes()) {
        Ok(())
    } else {
        Err(AdminError::Forbidden)
    }
}

fn json_answer(status: StatusCode, body: Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

fn context(svc: &Services, now: i64) -> view::Context<'_> {
    view::Context {
        now,
        stuck_after_ms: svc.policy.stuck_after_ms,
        bot_app_id: &svc.policy.app_id,
        inbox_app_id: &svc.policy.target_app_id,
    }
}

async fn admin_page(svc: web::Data<Services>) -> HttpResponse {
    match page::render(svc.settings.fb_page_id.as_deref()) {
        Ok(html) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header((
                header::CONTENT_SECURITY_POLICY,
                page::CONTENT_SECURITY_POLICY.as_str(),
            ))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .insert_header((header::REFERRER_POLICY, "no-referrer"))
            .insert_header((header::X_FRAME_OPTIONS, "DENY"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(html),
        Err(e) => {
            error!(error = %e, "the admin page could not be rendered");
            json_answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "the admin page could not be rendered" }),
            )
        }
    }
}

async fn list_threads(req: HttpRequest, svc: web::Data<Services>) -> Answer {
    authorize(&req, &svc)?;
    let params = query::params(req.query_string(), &["state", "limit", "cursor"])?;
    let get = |name: &str| params.get(name).map(String::as_str);
    let states = query::states(get("state"))?;
    let limit = query::limit(get("limit"))?;
    let after = query::thread_cursor(get("cursor"))?;
    let mut rows = svc.store.admin_threads(&states, after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more.then(|| rows.last()).flatten().map(|last| {
        query::encode_thread_cursor(&ThreadCursor {
            state_since: last.thread.state_since,
            page_id: last.thread.account_id.clone(),
            psid: last.thread.user_id.clone(),
        })
    });
    let now = now_ms();
    let cx = context(&svc, now);
    let threads: Vec<Value> = rows.iter().map(|t| view::thread(t, &cx)).collect();
    Ok(json_answer(
        StatusCode::OK,
        json!({
            "threads": threads,
            "next_cursor": next_cursor,
            "now": now,
            "stuck_after_secs": svc.settings.stuck_after_secs,
        }),
    ))
}

/// The Page of `psid`'s thread: `?page=`, else `FB_PAGE_ID`, else the one Page the store has
/// a thread of this PSID on.
async fn page_of(svc: &Services, psid: &str, page: Option<&str>) -> Result<String, AdminError> {
    query::identifier("psid", psid)?;
    if let Some(page) = page {
        query::identifier("page", page)?;
        return Ok(page.to_owned());
    }
    if let Some(page) = &svc.settings.fb_page_id {
        return Ok(page.clone());
    }
    let pages = svc.store.pages_of(psid).await?;
    match pages.as_slice() {
        [] => Err(AdminError::NotFound(FieldError::new(
            "psid",
            format!("no thread of {psid}"),
        ))),
        [one] => Ok(one.clone()),
        several => Err(AdminError::Bad(FieldError::new(
            "page",
            format!(
                "{psid} has threads on several pages ({}); name one with ?page=",
                several.join(", ")
            ),
        ))),
    }
}

fn no_thread(psid: &str, page: &str) -> AdminError {
    AdminError::NotFound(FieldError::new(
        "psid",
        format!("no thread of {psid} on page {page}"),
    ))
}

async fn show_thread(
    req: HttpRequest,
    path: web::Path<String>,
    svc: web::Data<Services>,
) -> Answer {
    authorize(&req, &svc)?;
    let params = query::params(req.query_string(), &["page"])?;
    let psid = path.into_inner();
    let page = page_of(&svc, &psid, params.get("page").map(String::as_str)).await?;
    let Some(thread) = svc.store.admin_thread(&page, &psid).await? else {
        return Err(no_thread(&psid, &page));
    };
    let transitions = svc
        .store
        .recent_transitions(&page, &psid, THREAD_TRANSITIONS)
        .await?;
    let jobs = svc.store.recent_jobs(&page, &psid, THREAD_JOBS).await?;
    let now = now_ms();
    Ok(json_answer(
        StatusCode::OK,
        json!({
            "thread": view::thread(&thread, &context(&svc, now)),
            "transitions": transitions.iter().map(view::transition).collect::<Vec<_>>(),
            "jobs": jobs.iter().map(view::job).collect::<Vec<_>>(),
            "now": now,
        }),
    ))
}

#[derive(Clone, Copy)]
enum Action {
    Return,
    Handover,
}

async fn give_back(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
    svc: web::Data<Services>,
) -> Answer {
    act(req, path.into_inner(), body, svc, Action::Return).await
}

async fn hand_over(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
    svc: web::Data<Services>,
) -> Answer {
    act(req, path.into_inner(), body, svc, Action::Handover).await
}

/// An operator's decision on one thread: applied through the state machine and stored like
/// any other decision; 202 with the thread as it now is (the take or pass runs in a job).
async fn act(
    req: HttpRequest,
    psid: String,
    body: web::Payload,
    svc: web::Data<Services>,
    action: Action,
) -> Answer {
    authorize(&req, &svc)?;
    let params = query::params(req.query_string(), &["page"])?;
    // Read only once the caller is known, within the same limits as the webhooks' bodies.
    let body = body::read(&req, body, BodyLimits::of(&svc.settings.server))
        .await
        .map_err(AdminError::Body)?;
    let note = query::note(&body)?;
    let page = page_of(&svc, &psid, params.get("page").map(String::as_str)).await?;
    let input = match action {
        Action::Return => Input::AdminReturn { note },
        Action::Handover => Input::AdminHandover { note },
    };
    let now = now_ms();
    let policy = Arc::clone(&svc.policy);
    let decision = svc
        .store
        .apply_admin(&page, &psid, now, move |t| decide(t, &input, &policy, now))
        .await?
        .ok_or_else(|| no_thread(&psid, &page))?;
    svc.metrics.decision(&decision);
    let acted = !decision.jobs.is_empty();
    if acted {
        svc.wake.notify_one();
    }
    info!(
        action = match action {
            Action::Return => "return",
            Action::Handover => "handover",
        },
        state = decision.thread.state.as_str(),
        acted,
        "admin decision"
    );
    let thread = svc
        .store
        .admin_thread(&page, &psid)
        .await?
        .ok_or_else(|| no_thread(&psid, &page))?;
    Ok(json_answer(
        StatusCode::ACCEPTED,
        json!({
            "thread": view::thread(&thread, &context(&svc, now_ms())),
            "decision": { "cause": decision.cause, "acted": acted },
        }),
    ))
}

async fn list_jobs(req: HttpRequest, svc: web::Data<Services>) -> Answer {
    authorize(&req, &svc)?;
    let params = query::params(req.query_string(), &["status", "limit", "cursor"])?;
    let get = |name: &str| params.get(name).map(String::as_str);
    let statuses = query::statuses(get("status"))?;
    let limit = query::limit(get("limit"))?;
    let before = query::job_cursor(get("cursor"))?;
    let mut jobs = svc.store.admin_jobs(&statuses, before, limit + 1).await?;
    let more = jobs.len() as i64 > limit;
    jobs.truncate(limit as usize);
    let next_cursor = more
        .then(|| jobs.last())
        .flatten()
        .map(|j| j.id.to_string());
    Ok(json_answer(
        StatusCode::OK,
        json!({
            "jobs": jobs.iter().map(view::job).collect::<Vec<_>>(),
            "next_cursor": next_cursor,
            "now": now_ms(),
        }),
    ))
}

async fn retry_job(req: HttpRequest, path: web::Path<String>, svc: web::Data<Services>) -> Answer {
    authorize(&req, &svc)?;
    query::params(req.query_string(), &[])?;
    let id = query::job_id(&path.into_inner())?;
    match svc.store.retry_job(id, now_ms()).await? {
        Retry::Retried(job) => {
            svc.wake.notify_one();
            info!(
                job = id,
                kind = job.kind.as_str(),
                "admin retry of a failed job"
            );
            Ok(json_answer(
                StatusCode::ACCEPTED,
                json!({ "job": view::job(&job) }),
            ))
        }
        Retry::NotFound => Err(AdminError::NotFound(FieldError::new(
            "id",
            format!("no job {id}"),
        ))),
        Retry::NotFailed(status) => Err(AdminError::Conflict(format!(
            "job {id} is {}, not failed: only a failed job can be retried",
            status.as_str()
        ))),
        Retry::NoThread => Err(AdminError::Conflict(format!(
            "job {id} belongs to no stored thread (the service queues its own periodic jobs again itself)"
        ))),
        Retry::Busy(other) => Err(AdminError::Conflict(format!(
            "job {other} of the same kind for this thread is under way; job {id} stays failed"
        ))),
    }
}

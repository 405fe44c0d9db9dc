//! `/healthz` (alive), `/readyz` (store reachable and migrated), `/metrics` (Prometheus).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde_json::json;

use super::json_error;
use crate::app::Services;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(svc: web::Data<Services>) -> HttpResponse {
    match svc.store.readiness().await {
        Ok(()) => HttpResponse::Ok().json(json!({
            "status": "ready",
            "store": svc.store.backend().as_str(),
        })),
        Err(why) => json_error(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

pub async fn metrics(svc: web::Data<Services>) -> HttpResponse {
    let threads = svc
        .store
        .thread_counts()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(state, n)| (format!("state=\"{state}\""), n))
        .collect();
    let jobs = svc
        .store
        .job_counts()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(kind, status, n)| (format!("kind=\"{kind}\",status=\"{status}\""), n))
        .collect();
    let body = svc.metrics.render(&[
        ("handover_threads", "Conversations by state", threads),
        (
            "handover_jobs",
            "Jobs in the store by kind and status",
            jobs,
        ),
    ]);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}

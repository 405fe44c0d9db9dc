//! `/healthz` (alive), `/readyz` (store reachable and migrated), `/metrics` (Prometheus).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde_json::json;

use super::json_error;
use crate::app::Services;
use crate::time::now_ms;

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
    // Without the store the gauges keep their last values (`/readyz` tells the store is down).
    if let Ok(threads) = svc.store.thread_counts().await {
        svc.metrics.set_thread_counts(&threads);
    }
    if let Ok(jobs) = svc.store.job_counts().await {
        svc.metrics.set_job_counts(&jobs);
    }
    let now = now_ms();
    if let Ok((due, oldest)) = svc.store.due_jobs(now).await {
        svc.metrics.set_due_jobs(due, oldest, now);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(svc.metrics.render())
}

//! The floor: the least a server must do for the service's routes, with nothing durable.
//!
//! - `POST /fulfillment`: checks the bearer token (if one is given, in constant time), parses
//!   the JSON body and reads `queryResult.action`. A plain intent is answered with
//!   `{"fulfillmentText": …}`; `input.handover` first makes one inline
//!   `POST {graph}/v25.0/me/pass_thread_control` and then answers with the `human_handover`
//!   context. Nothing is stored, nothing is retried.
//! - `POST /messenger`: verifies `X-Hub-Signature-256` on the raw body (constant time), parses
//!   the JSON, answers 200 `{}`.
//! - `GET /readyz`: 200.
//!
//! Same actix-web setup as the service: default number of workers (one per core), 1 MiB
//! bodies.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::fixtures;

const HANDOVER_ACTION: &str = "input.handover";
const GRAPH_VERSION: &str = "v25.0";

pub struct Floor {
    pub secret: String,
    pub token: Option<String>,
    /// Graph API base URL, without a trailing slash.
    pub graph: String,
    pub inbox_app: String,
}

/// One HTTP client per actix worker (each worker has its own runtime).
struct Http(Option<reqwest::Client>);

fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .build()
}

fn error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}

fn authorized(floor: &Floor, req: &HttpRequest) -> bool {
    let Some(token) = &floor.token else {
        return true;
    };
    let Some(given) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    else {
        return false;
    };
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

async fn fulfillment(
    req: HttpRequest,
    body: web::Bytes,
    floor: web::Data<Floor>,
    http: web::Data<Http>,
) -> HttpResponse {
    if !authorized(&floor, &req) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let query = &v["queryResult"];
    let text = query["fulfillmentText"].as_str().unwrap_or("ok");
    if query["action"].as_str() != Some(HANDOVER_ACTION) {
        return HttpResponse::Ok().json(json!({ "fulfillmentText": text }));
    }
    let sender = &v["originalDetectIntentRequest"]["payload"]["data"]["sender"]["id"];
    let Some(psid) = sender.as_str() else {
        // No Messenger user (the console simulator): nothing to hand over.
        return HttpResponse::Ok().json(json!({ "fulfillmentText": text }));
    };
    let Some(client) = &http.0 else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "no HTTP client");
    };
    let target: Value = floor
        .inbox_app
        .parse::<u64>()
        .map_or_else(|_| json!(floor.inbox_app), |n| json!(n));
    let url = format!("{}/{GRAPH_VERSION}/me/pass_thread_control", floor.graph);
    let pass = client
        .post(url)
        .json(&json!({ "recipient": { "id": psid }, "target_app_id": target, "metadata": "floor" }))
        .send()
        .await;
    match pass {
        Ok(resp) if resp.status().is_success() => {
            // Read the answer, so the connection goes back to the pool.
            let _ = resp.bytes().await;
        }
        Ok(resp) => {
            return error(
                StatusCode::BAD_GATEWAY,
                &format!("pass_thread_control: HTTP {}", resp.status()),
            );
        }
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                &format!("pass_thread_control: {}", e.without_url()),
            );
        }
    }
    let session = v["session"].as_str().unwrap_or_default();
    HttpResponse::Ok().json(json!({
        "fulfillmentText": text,
        "outputContexts": [{
            "name": format!("{session}/contexts/human_handover"),
            "lifespanCount": 50,
        }],
    }))
}

fn signature_ok(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_part) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(given) = hex::decode(hex_part) else {
        return false;
    };
    let expected = fixtures::hmac(secret, body);
    // ct_eq is false for slices of different lengths.
    bool::from(given.ct_eq(&expected))
}

async fn messenger(req: HttpRequest, body: web::Bytes, floor: web::Data<Floor>) -> HttpResponse {
    let header = req
        .headers()
        .get("x-hub-signature-256")
        .and_then(|h| h.to_str().ok());
    if !signature_ok(&floor.secret, &body, header) {
        return error(StatusCode::FORBIDDEN, "bad signature");
    }
    if serde_json::from_slice::<Value>(&body).is_err() {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    }
    HttpResponse::Ok().json(json!({}))
}

async fn readyz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ready" }))
}

async fn not_found() -> HttpResponse {
    error(StatusCode::NOT_FOUND, "not found")
}

/// `handover-bench floor`: serves until stopped.
pub async fn main(listen: &str, floor: Floor) -> std::io::Result<()> {
    // Fail at start, not per request, if a client cannot be built.
    http_client().map_err(std::io::Error::other)?;
    let floor = web::Data::new(Floor {
        graph: floor.graph.trim_end_matches('/').to_owned(),
        ..floor
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(floor.clone())
            .app_data(web::Data::new(Http(http_client().ok())))
            .app_data(web::PayloadConfig::new(1 << 20))
            .route("/fulfillment", web::post().to(fulfillment))
            .route("/messenger", web::post().to(messenger))
            .route("/readyz", web::get().to(readyz))
            .default_service(web::to(not_found))
    })
    .bind(listen)?
    .shutdown_timeout(1)
    .run();
    eprintln!("floor: listening on http://{listen}");
    server.await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_signature_passes() {
        let body = br#"{"object":"page","entry":[]}"#;
        let good = fixtures::sign("s3cret", body);
        assert!(signature_ok("s3cret", body, Some(&good)));
        assert!(!signature_ok("other", body, Some(&good)));
        assert!(!signature_ok("s3cret", b"{}", Some(&good)));
        assert!(!signature_ok("s3cret", body, Some("sha256=zz")));
        assert!(!signature_ok("s3cret", body, Some("sha256=abcd")));
        assert!(!signature_ok("s3cret", body, None));
    }
}

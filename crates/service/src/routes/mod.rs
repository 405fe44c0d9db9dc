//! HTTP handlers: thin, they parse, authenticate and hand over to the store and state machine.

pub mod admin;
pub mod fulfillment;
pub mod health;
pub mod messenger;
pub mod observe;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde_json::json;

/// Largest body accepted (`web::PayloadConfig`). Real webhook deliveries and fulfillment
/// requests are a few KiB.
pub const MAX_BODY: usize = 1024 * 1024;

/// The JSON error for a body actix could not read within `MAX_BODY` (handlers take the raw
/// body as `Result<web::Bytes, actix_web::Error>`: the signature covers its exact bytes).
pub fn body_error(error: actix_web::Error) -> HttpResponse {
    if error.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {MAX_BODY} bytes"),
        )
    } else {
        json_error(
            StatusCode::BAD_REQUEST,
            format!("could not read the body: {error}"),
        )
    }
}

/// Any route or method this service does not have.
pub async fn not_found() -> HttpResponse {
    json_error(StatusCode::NOT_FOUND, "no such route")
}

/// A JSON error body `{"error": "..."}` with the given status.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message.into() }))
}

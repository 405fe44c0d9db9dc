//! HTTP handlers: thin, they parse, authenticate and hand over to the store and state machine.

pub mod fulfillment;
pub mod health;
pub mod messenger;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde_json::json;

/// A JSON error body `{"error": "..."}` with the given status.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message.into() }))
}

//! HTTP handlers: thin, they parse, authenticate and hand over to the store and state machine.

pub mod fulfillment;
pub mod health;
pub mod messenger;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use futures_util::StreamExt;
use serde_json::json;

/// Largest body accepted. Real webhook deliveries and fulfillment requests are a few KiB.
pub const MAX_BODY: usize = 1024 * 1024;

/// Reads the raw body (the signature is computed over these exact bytes), refusing bodies
/// over `MAX_BODY` with a JSON 413.
pub async fn read_body(mut payload: web::Payload) -> Result<web::Bytes, HttpResponse> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            json_error(
                StatusCode::BAD_REQUEST,
                format!("could not read the body: {e}"),
            )
        })?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {MAX_BODY} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Any route or method this service does not have.
pub async fn not_found() -> HttpResponse {
    json_error(StatusCode::NOT_FOUND, "no such route")
}

/// A JSON error body `{"error": "..."}` with the given status.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message.into() }))
}

//! HTTP handlers: thin, they parse, authenticate and hand over to the store and state machine.

pub mod admin;
pub mod body;
pub mod conn;
pub mod fulfillment;
pub mod health;
pub mod messenger;
pub mod observe;

use actix_web::http::StatusCode;
use actix_web::http::header::ALLOW;
use actix_web::{HttpRequest, HttpResponse, Route, web};
use serde_json::json;

pub use body::MAX_BODY;

/// The reason a refused request was given (the `error` of its JSON body), kept in the
/// response's extensions so that the request's log line can say it (`observe`).
#[derive(Clone, Debug)]
pub struct Refusal(pub String);

/// Longest reason a request's log line carries, in characters.
const MAX_LOGGED_REASON: usize = 300;

/// Any route this service does not have.
pub async fn not_found() -> HttpResponse {
    json_error(StatusCode::NOT_FOUND, "no such route")
}

/// The handler of a known route for the methods it does not have: a JSON 405 with `Allow`.
pub fn other_methods(allow: &'static str) -> Route {
    web::to(move |req: HttpRequest| async move {
        let mut response = json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {} is not allowed on {}; use {allow}",
                req.method(),
                req.match_pattern().unwrap_or_default()
            ),
        );
        response.headers_mut().insert(
            ALLOW,
            actix_web::http::header::HeaderValue::from_static(allow),
        );
        response
    })
}

/// A JSON error body `{"error": "..."}` with the given status.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    let message = message.into();
    refused(status, json!({ "error": message }), message)
}

/// A JSON 400 that names the field at fault: `{"error": "field `session`: …", "field":
/// "session"}`.
pub fn field_error(field: &str, message: impl Into<String>) -> HttpResponse {
    let message = message.into();
    let body = json!({ "error": message, "field": field });
    refused(StatusCode::BAD_REQUEST, body, message)
}

/// The response, with the reason kept for the request's log line.
fn refused(status: StatusCode, body: serde_json::Value, message: String) -> HttpResponse {
    let mut response = HttpResponse::build(status).json(body);
    let mut logged = message;
    // Parse errors may quote the body; a log line stays a line.
    if crate::limits::truncate_chars(&mut logged, MAX_LOGGED_REASON) {
        logged.push('…');
    }
    response.extensions_mut().insert(Refusal(logged));
    response
}

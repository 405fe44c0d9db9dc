//! Reading a request body whole, bounded in size and in time, and closing the connection of
//! a request whose body was not read to its end.
//!
//! Both webhooks need the exact bytes (the signature covers them), so they read the raw
//! payload here rather than through an extractor. actix-web bounds the time to the end of the
//! headers (`client_request_timeout`) but not the body: a body that stops part-way would hold
//! its connection for as long as the client likes. Hand-written because no extractor has both
//! limits: a total (`REQUEST_BODY_TIMEOUT_MS`, from the end of the headers) and an idle limit
//! between two pieces (`REQUEST_BODY_IDLE_TIMEOUT_MS`), for plain and chunked bodies alike.
//!
//! After a response, actix reads the rest of an unread chunked body to reuse the connection,
//! with no time limit, unless the body's reader is still alive when the response is sent:
//! then it closes the connection (after at most `DISCONNECT_TIMEOUT_MS` for the client to take
//! the response). [`hold_unread`] keeps every request's reader alive that long, so a refused
//! request (401, 405, 408, 413, 415, …) never waits for a body that may never end.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse, web};
use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, timeout_at};

use super::json_error;
use crate::config::ServerLimits;

/// Largest body accepted. Real webhook deliveries and fulfillment requests are a few KiB.
pub const MAX_BODY: usize = 1024 * 1024;

/// What the buffer reserves before the body arrives, whatever `Content-Length` claims: a client
/// announcing 1 MiB and sending nothing must not cost 1 MiB.
const FIRST_RESERVE: usize = 16 * 1024;

/// The limits a body is read with.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// From the end of the headers to the end of the body.
    pub total: Duration,
    /// Longest pause between two pieces of the body.
    pub idle: Duration,
}

impl BodyLimits {
    pub fn of(server: &ServerLimits) -> Self {
        Self {
            max_bytes: MAX_BODY,
            total: Duration::from_millis(server.body_timeout_ms),
            idle: Duration::from_millis(server.body_idle_timeout_ms),
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body stopped arriving: nothing for {0} ms")]
    Stalled(u128),
    #[error("the body did not arrive within {0} ms")]
    TooSlow(u128),
    /// A broken chunked encoding, a connection closed part-way, …
    #[error("could not read the body: {0}")]
    Broken(String),
}

impl BodyError {
    /// The metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            BodyError::TooLarge(_) => "too_large",
            BodyError::Stalled(_) | BodyError::TooSlow(_) => "body_timeout",
            BodyError::Broken(_) => "bad_body",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Stalled(_) | BodyError::TooSlow(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Broken(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// A JSON error. The rest of the body is not read, so the connection is closed after it
    /// ([`hold_unread`]): a client that stalls is not given the chance to go on.
    pub fn response(&self) -> HttpResponse {
        json_error(self.status(), self.to_string())
    }
}

/// The whole body of `req`, within `limits`. A `Content-Length` over the limit is refused
/// before anything is read.
pub async fn read(
    req: &HttpRequest,
    mut payload: web::Payload,
    limits: BodyLimits,
) -> Result<Bytes, BodyError> {
    let announced = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > limits.max_bytes as u64) {
        return Err(BodyError::TooLarge(limits.max_bytes));
    }
    let reserve = announced.map_or(FIRST_RESERVE, |n| (n as usize).min(FIRST_RESERVE));
    let mut body = BytesMut::with_capacity(reserve);
    let deadline = Instant::now() + limits.total;
    loop {
        let idle_deadline = Instant::now() + limits.idle;
        let wait = idle_deadline.min(deadline);
        match timeout_at(wait, payload.next()).await {
            Err(_) if wait == deadline => {
                return Err(BodyError::TooSlow(limits.total.as_millis()));
            }
            Err(_) => return Err(BodyError::Stalled(limits.idle.as_millis())),
            Ok(None) => return Ok(body.freeze()),
            Ok(Some(Err(e))) => return Err(BodyError::Broken(e.to_string())),
            Ok(Some(Ok(chunk))) => {
                if body.len() + chunk.len() > limits.max_bytes {
                    return Err(BodyError::TooLarge(limits.max_bytes));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

/// The request's payload, shared by the handler (which reads it) and the response body (which
/// keeps it alive until the response is sent).
#[derive(Clone)]
struct SharedPayload(Rc<RefCell<Payload>>);

impl Stream for SharedPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_next(cx)
    }
}

/// A response body that holds the request's payload until it has been sent (see the module
/// doc): a body read to its end changes nothing, an unread one makes actix close the
/// connection instead of draining it.
pub struct Holding {
    body: BoxBody,
    _payload: Option<SharedPayload>,
}

impl MessageBody for Holding {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

/// Middleware: every request that has a body gets its payload held by its response's body.
pub async fn hold_unread(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<Holding>, Error> {
    let has_body = req.headers().contains_key(TRANSFER_ENCODING)
        || req
            .headers()
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let held = has_body.then(|| {
        let shared = SharedPayload(Rc::new(RefCell::new(req.take_payload())));
        let stream: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> =
            Box::pin(shared.clone());
        req.set_payload(Payload::from(stream));
        shared
    });
    let response = next.call(req).await?;
    Ok(response.map_into_boxed_body().map_body(|_, body| Holding {
        body,
        _payload: held,
    }))
}

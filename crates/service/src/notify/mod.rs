//! Agent notifications: the signed POST to `NOTIFY_WEBHOOK_URL`. The `notify` job
//! (`jobs/notify.rs`) sends one and retries it; what it says is in `body.rs`.

pub mod body;

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};

use crate::config::NotifySettings;
use crate::messenger::signature;
use crate::secret::Secret;
pub use body::{Format, Notice};

/// The header a receiver checks the body with: `sha256=` and the hex HMAC-SHA256 of the raw
/// body under `NOTIFY_WEBHOOK_SECRET` (the form Meta signs its webhooks with).
pub const SIGNATURE_HEADER: &str = "X-Handover-Signature-256";
/// The notice's event, for receivers that route on a header.
pub const EVENT_HEADER: &str = "X-Handover-Event";

pub struct Notifier {
    http: reqwest::Client,
    /// A credential: never logged, never in an error.
    url: Secret,
    secret: Secret,
    format: Format,
    timeout: Duration,
}

/// Why a notification was not taken. Never names the URL (it holds the endpoint's key).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("the notification endpoint answered HTTP {status}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("the notification endpoint could not be reached: {0}")]
    Transport(String),
}

impl NotifyError {
    /// Worth trying again: no answer, a timeout, a rate limit, a server error. Another 4xx
    /// (a wrong URL, a refused body) will not change by itself.
    pub fn is_transient(&self) -> bool {
        match self {
            NotifyError::Transport(_) => true,
            NotifyError::Status { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            NotifyError::Status { retry_after, .. } => *retry_after,
            NotifyError::Transport(_) => None,
        }
    }
}

impl Notifier {
    pub fn new(settings: &NotifySettings, http: &reqwest::Client, timeout: Duration) -> Self {
        Notifier {
            http: http.clone(),
            format: Format::for_url(settings.url.expose()),
            url: settings.url.clone(),
            secret: settings.secret.clone(),
            timeout,
        }
    }

    /// POSTs the notice, signed. A 2xx is success.
    pub async fn send(&self, notice: &Notice<'_>) -> Result<(), NotifyError> {
        let body = body::body(notice, self.format);
        let signature = signature::sign(self.secret.expose(), &body);
        let response = self
            .http
            .post(self.url.expose())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_HEADER, notice.event.as_str())
            .body(body)
            .send()
            .await
            // reqwest's message names the URL: stripped.
            .map_err(|e| NotifyError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(NotifyError::Status {
            status: status.as_u16(),
            retry_after: retry_after(&response, status),
        })
    }
}

/// `Retry-After` (seconds or a date), on a 429 or 503.
fn retry_after(response: &reqwest::Response, status: StatusCode) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    crate::messenger::graph::parse_retry_after(value, std::time::SystemTime::now())
}

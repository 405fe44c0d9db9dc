//! Graph API client for the Messenger Platform: handover (thread control), Send API, and the few
//! read calls the `doctor` command needs.
//!
//! Every request carries `access_token` and `appsecret_proof` (HMAC-SHA256 of the token actually
//! sent, keyed by the app secret) as query parameters; POST bodies are JSON.
//!
//! The access token travels in the URL (as Meta documents it), so no URL is ever formatted into
//! an error or a log line: the client's own texts never hold the URL or a secret, and reqwest
//! errors are stripped with [`reqwest::Error::without_url`]. Only text that came from the other
//! side (an error body, Graph's `message`) could echo a token back: that text, and only that,
//! goes through [`crate::secret::redact`] before it is quoted in a [`GraphError`].

use std::fmt::Write as _;
use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::{Value, json};

use crate::messenger::signature::appsecret_proof;
use crate::metrics::Metrics;
use crate::secret::Secret;

pub use crate::config::PAGE_INBOX_APP_ID;

/// Longest response body kept in [`GraphError::Http`], in characters.
const MAX_ERROR_BODY_CHARS: usize = 300;

/// Graph error codes that are worth retrying whatever the HTTP status:
/// 1 unknown/unexpected, 2 service unavailable, 4 app rate limit, 17 user rate limit,
/// 32 page rate limit, 613 rate limit, 1200 temporary send failure.
const TRANSIENT_CODES: &[i64] = &[1, 2, 4, 17, 32, 613, 1200];

/// Graph error codes that are permanent even if Meta answers them with a 5xx/429 status.
const PERMANENT_CODES: &[i64] = &[10, 100, 190, 200, 230, 551];

/// Graph error codes that mean "rate limited": 4 app, 17 user, 32 page, 613 call rate limit.
const RATE_LIMIT_CODES: &[i64] = &[4, 17, 32, 613];

/// Longest `Retry-After` honoured (one day), so a wild value cannot overflow a deadline.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

#[derive(Clone, Debug)]
pub struct GraphSettings {
    /// e.g. `https://graph.facebook.com` (a trailing slash is tolerated).
    pub base: String,
    /// e.g. `v25.0`.
    pub version: String,
    /// `Some` => paths `/{version}/{page_id}/...`, `None` => `/{version}/me/...`.
    pub page_id: Option<String>,
    pub page_token: Secret,
    pub app_secret: Secret,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Graph API client. Cheap to clone.
#[derive(Clone)]
pub struct GraphClient {
    settings: std::sync::Arc<GraphSettings>,
    http: reqwest::Client,
    /// Where each request's time goes (`handover_graph_call_duration_seconds`), if anywhere.
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // GraphSettings' Debug already redacts the secrets.
        f.debug_struct("GraphClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Who owns a thread, as `thread_owner` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ThreadOwner {
    /// Empty `data` (or no `thread_owner`): nobody owns the thread.
    Idle,
    /// The owner's app id.
    App(String),
    /// A `thread_owner` without `app_id`: someone else owns it and we may not see who.
    Hidden,
}

/// Send API `messaging_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessagingType {
    Response,
    Update,
}

impl MessagingType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessagingType::Response => "RESPONSE",
            MessagingType::Update => "UPDATE",
        }
    }
}

/// A text quick reply (`content_type: "text"`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuickReply {
    pub title: String,
    pub payload: String,
}

/// The Send API's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentMessage {
    pub message_id: Option<String>,
}

/// A failed Graph call.
///
/// For a call that changes something (pass/take/release, Send API), [`GraphError::outcome_unknown`]
/// tells whether Meta may have applied it anyway; [`GraphError::is_transient`] whether retrying
/// may help, and [`GraphError::retry_after`] how long Meta asked to wait.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    /// A Graph error body `{"error":{...}}`: Meta refused the call, nothing was applied.
    #[error("{}", fmt_api(*status, *code, *subcode, kind, message, fbtrace_id.as_deref()))]
    Api {
        status: u16,
        code: i64,
        subcode: Option<i64>,
        kind: String,
        message: String,
        fbtrace_id: Option<String>,
        /// The response's `Retry-After` header, if any.
        retry_after: Option<Duration>,
    },
    /// A non-2xx answer without a Graph error body (body truncated to 300 characters), e.g. from
    /// a gateway.
    #[error("Graph API HTTP {status}: {body}")]
    Http {
        status: u16,
        body: String,
        /// The response's `Retry-After` header, if any.
        retry_after: Option<Duration>,
    },
    /// No answer within the timeout; the request may have reached Meta.
    #[error("Graph API request timed out")]
    Timeout,
    /// The request was never sent: no connection could be made (refused, DNS, TLS handshake)
    /// or the Graph base URL is invalid.
    #[error("Graph API connection failed: {0}")]
    Connect(String),
    /// The connection failed after it was made (reset, body read error): the request may have
    /// reached Meta.
    #[error("Graph API transport error: {0}")]
    Transport(String),
    /// A 2xx answer whose body could not be understood (not JSON, unexpected shape, or
    /// `"success": false`).
    #[error("Graph API response could not be decoded: {0}")]
    Decode(String),
}

fn fmt_api(
    status: u16,
    code: i64,
    subcode: Option<i64>,
    kind: &str,
    message: &str,
    fbtrace_id: Option<&str>,
) -> String {
    let mut out = format!("Graph API error (#{code}");
    if let Some(sub) = subcode {
        let _ = write!(out, "/{sub}");
    }
    let _ = write!(out, ") {kind}: {message} (");
    if let Some(trace) = fbtrace_id {
        let _ = write!(out, "fbtrace_id {trace}; ");
    }
    let _ = write!(out, "HTTP {status})");
    out
}

impl GraphError {
    /// Worth retrying later: 5xx, HTTP 429, timeouts, connection and transport failures, rate
    /// limits ([`GraphError::is_rate_limited`]) and the Graph codes 1, 2, 4, 17, 32, 613, 1200
    /// (whatever the status). Everything else is permanent.
    pub fn is_transient(&self) -> bool {
        if self.is_rate_limited() {
            return true;
        }
        match self {
            GraphError::Api { status, code, .. } => {
                TRANSIENT_CODES.contains(code)
                    || (is_transient_status(*status) && !PERMANENT_CODES.contains(code))
            }
            GraphError::Http { status, .. } => is_transient_status(*status),
            GraphError::Timeout | GraphError::Connect(_) | GraphError::Transport(_) => true,
            GraphError::Decode(_) => false,
        }
    }

    /// Meta is throttling us: Graph codes 4, 17, 32, 613, or HTTP 429 (with or without a Graph
    /// error body). Always transient; see [`GraphError::retry_after`] for how long to wait.
    pub fn is_rate_limited(&self) -> bool {
        match self {
            GraphError::Api { status, code, .. } => {
                *status == 429 || RATE_LIMIT_CODES.contains(code)
            }
            GraphError::Http { status, .. } => *status == 429,
            _ => false,
        }
    }

    /// The `Retry-After` header of the error response (delta-seconds or an HTTP-date; a date in
    /// the past gives zero; at most one day). `None` when there was no response or no usable
    /// header.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GraphError::Api { retry_after, .. } | GraphError::Http { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// Whether the request may have reached Meta and been applied although no clear answer came
    /// back, so a state-changing call must be verified (e.g. with `thread_owner`) before it is
    /// repeated: a timeout, a transport failure after the connection was made, a 2xx answer that
    /// could not be decoded, or an HTTP 5xx without a Graph error body (a gateway 502/504).
    ///
    /// False when Meta answered with a Graph error body (it refused the call), for any other
    /// non-2xx answer without one (4xx, including 429), and when no connection could be made
    /// ([`GraphError::Connect`]).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            GraphError::Timeout | GraphError::Transport(_) | GraphError::Decode(_) => true,
            GraphError::Http { status, .. } => (500..=599).contains(status),
            GraphError::Api { .. } | GraphError::Connect(_) => false,
        }
    }

    /// `(#10) ... another app is controlling this thread now` (code 10, subcode 2018300).
    pub fn is_not_thread_owner(&self) -> bool {
        self.code() == Some(10) && self.subcode() == Some(2018300)
    }

    /// `(#10) This message is sent outside of allowed window` (code 10, subcode 2018278).
    pub fn is_outside_window(&self) -> bool {
        self.code() == Some(10) && self.subcode() == Some(2018278)
    }

    pub fn code(&self) -> Option<i64> {
        match self {
            GraphError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn subcode(&self) -> Option<i64> {
        match self {
            GraphError::Api { subcode, .. } => *subcode,
            _ => None,
        }
    }

    /// The `code` and `subcode` labels of `handover_graph_errors_total`: Meta's, `none` for a
    /// missing subcode; without a Graph error body, the kind of failure as the code.
    pub fn metric_labels(&self) -> (String, String) {
        let none = || "none".to_owned();
        match self {
            GraphError::Api { code, subcode, .. } => (
                code.to_string(),
                subcode.map_or_else(none, |s| s.to_string()),
            ),
            GraphError::Http { status, .. } => (format!("http_{status}"), none()),
            GraphError::Timeout => ("timeout".into(), none()),
            GraphError::Connect(_) => ("connect".into(), none()),
            GraphError::Transport(_) => ("transport".into(), none()),
            GraphError::Decode(_) => ("decode".into(), none()),
        }
    }

    /// HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            GraphError::Api { status, .. } | GraphError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn is_transient_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

impl GraphClient {
    pub fn new(settings: GraphSettings, http: reqwest::Client) -> Self {
        Self {
            settings: std::sync::Arc::new(settings),
            http,
            metrics: None,
        }
    }

    /// Times every request in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn settings(&self) -> &GraphSettings {
        &self.settings
    }

    /// `/me` or `/{page_id}`.
    fn node(&self) -> &str {
        match self.settings.page_id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => id,
            _ => "me",
        }
    }

    /// Passes the thread to `target_app_id` (e.g. [`PAGE_INBOX_APP_ID`]).
    pub async fn pass_thread_control(
        &self,
        psid: &str,
        target_app_id: &str,
        metadata: &str,
    ) -> Result<(), GraphError> {
        let body = json!({
            "recipient": { "id": psid },
            "target_app_id": app_id_value(target_app_id),
            "metadata": metadata,
        });
        self.control("pass_thread_control", body).await
    }

    /// Takes the thread for this app. Never carries a `target_app_id`.
    pub async fn take_thread_control(&self, psid: &str, metadata: &str) -> Result<(), GraphError> {
        self.control("take_thread_control", control_body(psid, metadata))
            .await
    }

    pub async fn release_thread_control(
        &self,
        psid: &str,
        metadata: &str,
    ) -> Result<(), GraphError> {
        self.control("release_thread_control", control_body(psid, metadata))
            .await
    }

    pub async fn request_thread_control(
        &self,
        psid: &str,
        metadata: &str,
    ) -> Result<(), GraphError> {
        self.control("request_thread_control", control_body(psid, metadata))
            .await
    }

    /// `GET /{v}/{node}/thread_owner?recipient=PSID`.
    pub async fn thread_owner(&self, psid: &str) -> Result<ThreadOwner, GraphError> {
        let node = self.node().to_owned();
        let value = self
            .call(
                "thread_owner",
                Method::GET,
                &[node.as_str(), "thread_owner"],
                &[("recipient", psid)],
                None,
                None,
            )
            .await?;
        parse_thread_owner(&value)
    }

    /// Sends a text message, with optional text quick replies.
    pub async fn send_text(
        &self,
        psid: &str,
        text: &str,
        quick_replies: &[QuickReply],
        messaging_type: MessagingType,
    ) -> Result<SentMessage, GraphError> {
        self.send_message(psid, text_message(text, quick_replies), messaging_type)
            .await
    }

    /// Sends a raw Send API `message` object.
    pub async fn send_message(
        &self,
        psid: &str,
        message: Value,
        messaging_type: MessagingType,
    ) -> Result<SentMessage, GraphError> {
        let body = json!({
            "recipient": { "id": psid },
            "messaging_type": messaging_type.as_str(),
            "message": message,
        });
        let node = self.node().to_owned();
        let value = self
            .call(
                "messages",
                Method::POST,
                &[node.as_str(), "messages"],
                &[],
                Some(&body),
                None,
            )
            .await?;
        Ok(SentMessage {
            message_id: value
                .get("message_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// `GET /{v}/me?fields=...` (always `/me`: with a Page token it is the Page).
    pub async fn me(&self, fields: &str) -> Result<Value, GraphError> {
        self.call(
            "me",
            Method::GET,
            &["me"],
            &[("fields", fields)],
            None,
            None,
        )
        .await
    }

    /// `GET /{v}/{node}/subscribed_apps`.
    pub async fn subscribed_apps(&self) -> Result<Value, GraphError> {
        let node = self.node().to_owned();
        self.call(
            "subscribed_apps",
            Method::GET,
            &[node.as_str(), "subscribed_apps"],
            &[],
            None,
            None,
        )
        .await
    }

    /// `POST /{v}/{node}/subscribed_apps?subscribed_fields=a,b`.
    pub async fn subscribe_fields(&self, fields: &[&str]) -> Result<(), GraphError> {
        let joined = fields.join(",");
        let node = self.node().to_owned();
        let value = self
            .call(
                "subscribe_fields",
                Method::POST,
                &[node.as_str(), "subscribed_apps"],
                &[("subscribed_fields", joined.as_str())],
                Some(&json!({})),
                None,
            )
            .await?;
        check_success(&value)
    }

    /// `GET /{v}/debug_token?input_token=<page token>`, authenticated with the app access token
    /// `{app_id}|{app_secret}` (and an `appsecret_proof` computed for that token).
    pub async fn debug_token(&self, app_id: &str) -> Result<Value, GraphError> {
        let app_token = Secret::new(format!(
            "{}|{}",
            app_id.trim(),
            self.settings.app_secret.expose()
        ));
        let page_token = self.settings.page_token.clone();
        self.call(
            "debug_token",
            Method::GET,
            &["debug_token"],
            &[("input_token", page_token.expose())],
            None,
            Some(&app_token),
        )
        .await
    }

    async fn control(&self, endpoint: &'static str, body: Value) -> Result<(), GraphError> {
        let node = self.node().to_owned();
        let value = self
            .call(
                endpoint,
                Method::POST,
                &[node.as_str(), endpoint],
                &[],
                Some(&body),
                None,
            )
            .await?;
        check_success(&value)
    }

    fn url(&self, segments: &[&str]) -> Result<Url, GraphError> {
        let base = self.settings.base.trim();
        let mut url = Url::parse(base)
            .map_err(|e| GraphError::Connect(format!("invalid Graph base URL: {e}")))?;
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| GraphError::Connect("invalid Graph base URL".to_owned()))?;
            path.pop_if_empty();
            path.push(self.settings.version.trim().trim_matches('/'));
            for segment in segments {
                path.push(segment);
            }
        }
        Ok(url)
    }

    /// One Graph call. `token` overrides the Page token (used by `debug_token`).
    /// Returns the JSON body of a 2xx answer (`Value::Null` for an empty body). A failure is
    /// counted in `handover_graph_errors_total`.
    async fn call(
        &self,
        endpoint: &'static str,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        token: Option<&Secret>,
    ) -> Result<Value, GraphError> {
        let result = self
            .call_once(endpoint, method, segments, query, body, token)
            .await;
        if let (Err(e), Some(metrics)) = (&result, &self.metrics) {
            let (code, subcode) = e.metric_labels();
            metrics.graph_error(endpoint, &code, &subcode);
        }
        result
    }

    async fn call_once(
        &self,
        endpoint: &'static str,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        token: Option<&Secret>,
    ) -> Result<Value, GraphError> {
        let token = token.unwrap_or(&self.settings.page_token);
        let redactor = Redactor([
            token.expose(),
            self.settings.page_token.expose(),
            self.settings.app_secret.expose(),
        ]);
        let proof = appsecret_proof(self.settings.app_secret.expose(), token.expose());
        let url = self.url(segments)?;

        let mut request = self
            .http
            .request(method.clone(), url)
            .timeout(self.settings.timeout)
            .query(query)
            .query(&[
                ("access_token", token.expose()),
                ("appsecret_proof", proof.as_str()),
            ]);
        if let Some(body) = body {
            // `.json` sets `Content-Type: application/json`.
            request = request.json(body);
        }

        tracing::debug!(endpoint, method = %method, "graph request");
        let _timer = self
            .metrics
            .as_ref()
            .map(|m| m.time_graph_request(endpoint));
        let response = request.send().await.map_err(|e| {
            let err = map_reqwest_error(e);
            tracing::info!(endpoint, error = %err, "graph request failed");
            err
        })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        let bytes = response.bytes().await.map_err(|e| {
            let err = map_reqwest_error(e);
            tracing::info!(endpoint, status, error = %err, "graph response body failed");
            err
        })?;

        let result = interpret(status, retry_after, &bytes, &redactor);
        match &result {
            Ok(_) => tracing::debug!(endpoint, status, "graph response"),
            Err(err) => tracing::info!(
                endpoint,
                status,
                code = err.code(),
                subcode = err.subcode(),
                "graph error response"
            ),
        }
        result
    }
}

/// The token sent, the Page token and the app secret, replaced in text the other side wrote
/// (an error body, Graph's error fields) before it is quoted.
struct Redactor<'a>([&'a str; 3]);

impl Redactor<'_> {
    fn clean(&self, text: &str) -> String {
        crate::secret::redact(text, &self.0)
    }
}

/// A connection that could not be made (refused, DNS, TLS handshake, connect timeout) is
/// [`GraphError::Connect`], checked first so a connect timeout is not an unknown outcome; any
/// other timeout is [`GraphError::Timeout`]; the rest is [`GraphError::Transport`]. The text is
/// reqwest's and its causes' (the OS, hyper, rustls) without the URL: it holds no secret, so it
/// is not searched for one.
fn map_reqwest_error(err: reqwest::Error) -> GraphError {
    let err = err.without_url();
    let connect = err.is_connect();
    if !connect && err.is_timeout() {
        return GraphError::Timeout;
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    if connect {
        GraphError::Connect(text)
    } else {
        GraphError::Transport(text)
    }
}

/// A `Retry-After` value: delta-seconds, or an HTTP-date (as seen from `now`; a date in the
/// past gives zero), capped at [`MAX_RETRY_AFTER`]. Anything else is ignored.
pub(crate) fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digit strings too long for a u64 are "a very long time" too.
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        let date = httpdate::parse_http_date(value).ok()?;
        date.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Turns a status + body into the result of a call.
fn interpret(
    status: u16,
    retry_after: Option<Duration>,
    bytes: &[u8],
    redactor: &Redactor<'_>,
) -> Result<Value, GraphError> {
    let success = (200..300).contains(&status);
    let trimmed = bytes.trim_ascii();
    let parsed: Option<Value> = if trimmed.is_empty() {
        None
    } else {
        serde_json::from_slice(trimmed).ok()
    };

    if let Some(err) = parsed
        .as_ref()
        .and_then(|v| api_error(status, retry_after, v, redactor))
    {
        return Err(err);
    }
    if !success {
        let text = String::from_utf8_lossy(bytes);
        return Err(GraphError::Http {
            status,
            body: truncate_chars(&redactor.clean(&text), MAX_ERROR_BODY_CHARS),
            retry_after,
        });
    }
    match parsed {
        Some(value) => Ok(value),
        None if trimmed.is_empty() => Ok(Value::Null),
        None => {
            let text = String::from_utf8_lossy(bytes);
            Err(GraphError::Decode(format!(
                "HTTP {status} body is not JSON: {}",
                truncate_chars(&redactor.clean(&text), MAX_ERROR_BODY_CHARS)
            )))
        }
    }
}

/// `{"error":{"message","type","code","error_subcode","fbtrace_id"}}` → [`GraphError::Api`].
fn api_error(
    status: u16,
    retry_after: Option<Duration>,
    value: &Value,
    redactor: &Redactor<'_>,
) -> Option<GraphError> {
    let error = value.get("error")?.as_object()?;
    let code = error.get("code").and_then(as_i64)?;
    let text = |key: &str| {
        error
            .get(key)
            .and_then(Value::as_str)
            .map(|s| redactor.clean(s))
    };
    Some(GraphError::Api {
        status,
        code,
        subcode: error.get("error_subcode").and_then(as_i64),
        kind: text("type").unwrap_or_default(),
        message: text("message").unwrap_or_default(),
        fbtrace_id: text("fbtrace_id"),
        retry_after,
    })
}

/// An integer given as a JSON number or a numeric string.
fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A 2xx answer to a control/subscribe call: anything without `error` is success, except an
/// explicit `"success": false` (or `"false"`).
fn check_success(value: &Value) -> Result<(), GraphError> {
    match value.get("success") {
        Some(Value::Bool(false)) => Err(GraphError::Decode(
            "Graph API answered success=false".to_owned(),
        )),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Err(GraphError::Decode(
            "Graph API answered success=false".to_owned(),
        )),
        _ => Ok(()),
    }
}

fn control_body(psid: &str, metadata: &str) -> Value {
    json!({ "recipient": { "id": psid }, "metadata": metadata })
}

/// `target_app_id` as a JSON number when it is a plain unsigned integer, else as a string.
fn app_id_value(app_id: &str) -> Value {
    match app_id.trim().parse::<u64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::from(app_id),
    }
}

fn text_message(text: &str, quick_replies: &[QuickReply]) -> Value {
    let mut message = serde_json::Map::new();
    message.insert("text".to_owned(), Value::from(text));
    if !quick_replies.is_empty() {
        let replies = quick_replies
            .iter()
            .map(|qr| json!({ "content_type": "text", "title": qr.title, "payload": qr.payload }))
            .collect();
        message.insert("quick_replies".to_owned(), Value::Array(replies));
    }
    Value::Object(message)
}

/// `{"data":[{"thread_owner":{"app_id":123 or "123","expiration":...}}]}`.
fn parse_thread_owner(value: &Value) -> Result<ThreadOwner, GraphError> {
    let object = match value {
        Value::Null => return Ok(ThreadOwner::Idle),
        Value::Object(o) => o,
        _ => {
            return Err(GraphError::Decode(
                "thread_owner answer is not a JSON object".to_owned(),
            ));
        }
    };
    let first = match object.get("data") {
        None | Some(Value::Null) => return Ok(ThreadOwner::Idle),
        Some(Value::Array(items)) => items.first(),
        Some(_) => {
            return Err(GraphError::Decode(
                "thread_owner `data` is not an array".to_owned(),
            ));
        }
    };
    let owner = match first.and_then(|item| item.get("thread_owner")) {
        None | Some(Value::Null) => return Ok(ThreadOwner::Idle),
        Some(owner) => owner,
    };
    match owner.get("app_id") {
        Some(Value::Number(n)) => Ok(ThreadOwner::App(n.to_string())),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(ThreadOwner::App(s.trim().to_owned())),
        _ => Ok(ThreadOwner::Hidden),
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((idx, _)) => format!("{}…", &text[..idx]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: i64, subcode: Option<i64>) -> GraphError {
        GraphError::Api {
            status,
            code,
            subcode,
            kind: "OAuthException".into(),
            message: "m".into(),
            fbtrace_id: None,
            retry_after: None,
        }
    }

    fn http(status: u16) -> GraphError {
        GraphError::Http {
            status,
            body: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn api_error_display_has_code_subcode_trace_and_status() {
        let err = GraphError::Api {
            status: 400,
            code: 10,
            subcode: Some(2018300),
            kind: "OAuthException".into(),
            message: "(#10) another app is controlling this thread now.".into(),
            fbtrace_id: Some("AQ2lKD7".into()),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            err.to_string(),
            "Graph API error (#10/2018300) OAuthException: (#10) another app is controlling this \
             thread now. (fbtrace_id AQ2lKD7; HTTP 400)"
        );
        assert_eq!(
            api(400, 190, None).to_string(),
            "Graph API error (#190) OAuthException: m (HTTP 400)"
        );
    }

    #[test]
    fn classification() {
        assert!(api(400, 613, None).is_transient());
        assert!(api(400, 4, None).is_transient());
        assert!(api(400, 1200, None).is_transient());
        assert!(api(500, 1, None).is_transient());
        assert!(api(503, 9999, None).is_transient());
        assert!(api(429, 9999, None).is_transient());
        assert!(!api(400, 190, None).is_transient());
        assert!(!api(500, 190, None).is_transient());
        assert!(!api(400, 100, None).is_transient());
        assert!(!api(400, 551, None).is_transient());
        let owner = api(400, 10, Some(2018300));
        assert!(!owner.is_transient());
        assert!(owner.is_not_thread_owner());
        assert!(!owner.is_outside_window());
        let window = api(400, 10, Some(2018278));
        assert!(window.is_outside_window());
        assert!(!window.is_not_thread_owner());
        assert!(!api(400, 10, None).is_not_thread_owner());

        assert!(http(502).is_transient());
        assert!(http(429).is_transient());
        assert!(!http(404).is_transient());
        assert!(GraphError::Timeout.is_transient());
        assert!(GraphError::Connect("x".into()).is_transient());
        assert!(GraphError::Transport("x".into()).is_transient());
        assert!(!GraphError::Decode("x".into()).is_transient());
        assert_eq!(GraphError::Timeout.code(), None);
        assert_eq!(api(400, 10, Some(5)).subcode(), Some(5));
    }

    #[test]
    fn target_app_id_is_a_number_when_it_can_be() {
        assert_eq!(app_id_value("263902037430900"), json!(263902037430900u64));
        assert_eq!(app_id_value("abc"), json!("abc"));
        assert_eq!(app_id_value("-5"), json!("-5"));
    }

    #[test]
    fn quick_replies_are_omitted_when_empty() {
        assert_eq!(text_message("hi", &[]), json!({"text": "hi"}));
        let qr = [QuickReply {
            title: "Yes".into(),
            payload: "YES".into(),
        }];
        assert_eq!(
            text_message("hi", &qr),
            json!({"text": "hi", "quick_replies": [
                {"content_type": "text", "title": "Yes", "payload": "YES"}
            ]})
        );
    }

    #[test]
    fn thread_owner_shapes() {
        let p = |v: Value| parse_thread_owner(&v).unwrap();
        assert_eq!(
            p(json!({"data":[{"thread_owner":{"app_id":263902037430900u64,"expiration":1}}]})),
            ThreadOwner::App("263902037430900".into())
        );
        assert_eq!(
            p(json!({"data":[{"thread_owner":{"app_id":"111","expiration":1}}]})),
            ThreadOwner::App("111".into())
        );
        assert_eq!(p(json!({"data":[]})), ThreadOwner::Idle);
        assert_eq!(p(json!({"data":[], "paging":{}})), ThreadOwner::Idle);
        assert_eq!(p(json!({})), ThreadOwner::Idle);
        assert_eq!(p(Value::Null), ThreadOwner::Idle);
        assert_eq!(p(json!({"data":[{}]})), ThreadOwner::Idle);
        assert_eq!(
            p(json!({"data":[{"thread_owner":{"expiration":1}}]})),
            ThreadOwner::Hidden
        );
        assert!(matches!(
            parse_thread_owner(&json!({"data": 5})),
            Err(GraphError::Decode(_))
        ));
        assert!(matches!(
            parse_thread_owner(&json!([1])),
            Err(GraphError::Decode(_))
        ));
    }

    #[test]
    fn interpret_parses_errors_and_redacts_the_token() {
        let r = Redactor(["TOKEN123xyz", "TOKEN123xyz", "APPSECRET9"]);
        let body = br#"{"error":{"message":"bad token TOKEN123xyz","type":"OAuthException","code":"190","error_subcode":460,"fbtrace_id":"x"}}"#;
        let err = interpret(400, None, body, &r).unwrap_err();
        assert_eq!(err.code(), Some(190));
        assert_eq!(err.subcode(), Some(460));
        assert!(!err.to_string().contains("TOKEN123"));
        assert!(err.to_string().contains("bad token [redacted]"), "{err}");

        // An error key on a 200 is still an error.
        let err =
            interpret(200, None, br#"{"error":{"code":613,"message":"slow"}}"#, &r).unwrap_err();
        assert!(err.is_transient());

        let long = "é".repeat(1000) + "TOKEN123xyz";
        let err = interpret(502, None, long.as_bytes(), &r).unwrap_err();
        match &err {
            GraphError::Http { status, body, .. } => {
                assert_eq!(*status, 502);
                assert_eq!(body.chars().count(), MAX_ERROR_BODY_CHARS + 1);
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = interpret(404, None, b"not found TOKEN123xyz APPSECRET9", &r).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Graph API HTTP 404: not found [redacted] [redacted]"
        );

        assert_eq!(interpret(200, None, b"", &r).unwrap(), Value::Null);
        assert!(matches!(
            interpret(200, None, b"<html>", &r),
            Err(GraphError::Decode(_))
        ));
        assert_eq!(
            interpret(200, None, br#"{"success":true}"#, &r).unwrap(),
            json!({"success": true})
        );
    }

    #[test]
    fn success_false_is_not_success() {
        assert!(check_success(&json!({"success": true})).is_ok());
        assert!(check_success(&json!({"success": "true"})).is_ok());
        assert!(check_success(&json!({"data": [{"thread_owner": {"app_id": 1}}]})).is_ok());
        assert!(check_success(&Value::Null).is_ok());
        assert!(check_success(&json!({"success": false})).is_err());
    }

    #[test]
    fn url_building_tolerates_a_trailing_slash_and_encodes_segments() {
        let client = |base: &str, page: Option<&str>| {
            GraphClient::new(
                GraphSettings {
                    base: base.into(),
                    version: "v25.0".into(),
                    page_id: page.map(Into::into),
                    page_token: Secret::new("t"),
                    app_secret: Secret::new("s"),
                    timeout: Duration::from_secs(5),
                },
                reqwest::Client::new(),
            )
        };
        let c = client("https://graph.facebook.com/", Some("958823367603818"));
        assert_eq!(
            c.url(&[c.node(), "messages"]).unwrap().as_str(),
            "https://graph.facebook.com/v25.0/958823367603818/messages"
        );
        let c = client("https://graph.facebook.com", None);
        assert_eq!(
            c.url(&[c.node(), "thread_owner"]).unwrap().as_str(),
            "https://graph.facebook.com/v25.0/me/thread_owner"
        );
        let c = client("not a url", None);
        let err = c.url(&["me"]).unwrap_err();
        assert!(matches!(err, GraphError::Connect(_)), "{err:?}");
        assert!(!err.outcome_unknown());
        assert!(!format!("{c:?}").contains("\"t\""));
    }

    #[test]
    fn rate_limits() {
        for code in [4, 17, 32, 613] {
            let err = api(400, code, None);
            assert!(err.is_rate_limited(), "{code}");
            assert!(err.is_transient(), "{code}");
        }
        // HTTP 429 is a rate limit whatever the body, and then always transient.
        assert!(http(429).is_rate_limited());
        assert!(api(429, 100, None).is_rate_limited());
        assert!(api(429, 100, None).is_transient());
        for err in [
            api(400, 1, None),
            api(400, 1200, None),
            api(500, 2, None),
            api(400, 10, Some(2018300)),
            http(503),
            GraphError::Timeout,
            GraphError::Connect("x".into()),
            GraphError::Transport("x".into()),
            GraphError::Decode("x".into()),
        ] {
            assert!(!err.is_rate_limited(), "{err:?}");
        }
    }

    #[test]
    fn outcome_unknown_classification() {
        assert!(GraphError::Timeout.outcome_unknown());
        assert!(GraphError::Transport("connection reset".into()).outcome_unknown());
        assert!(GraphError::Decode("not JSON".into()).outcome_unknown());
        assert!(http(500).outcome_unknown());
        assert!(http(502).outcome_unknown());
        assert!(http(504).outcome_unknown());
        assert!(!http(404).outcome_unknown());
        assert!(!http(429).outcome_unknown());
        assert!(!GraphError::Connect("refused".into()).outcome_unknown());
        // A Graph error body is Meta's refusal, whatever the status.
        assert!(!api(400, 10, Some(2018300)).outcome_unknown());
        assert!(!api(500, 2, None).outcome_unknown());
        assert!(!api(429, 613, None).outcome_unknown());
    }

    #[test]
    fn retry_after_is_carried_by_api_and_http_errors() {
        let r = Redactor(["TOKEN123xyz", "TOKEN123xyz", "APPSECRET9"]);
        let wait = Some(Duration::from_secs(7));
        let err = interpret(429, wait, b"", &r).unwrap_err();
        assert!(
            matches!(err, GraphError::Http { status: 429, .. }),
            "{err:?}"
        );
        assert_eq!(err.retry_after(), wait);
        let err =
            interpret(400, wait, br#"{"error":{"code":613,"message":"slow"}}"#, &r).unwrap_err();
        assert_eq!(err.code(), Some(613));
        assert_eq!(err.retry_after(), wait);
        assert_eq!(api(400, 613, None).retry_after(), None);
        assert_eq!(GraphError::Timeout.retry_after(), None);
        // The Display texts do not change.
        assert_eq!(
            interpret(404, wait, b"nope", &r).unwrap_err().to_string(),
            "Graph API HTTP 404: nope"
        );
    }

    #[test]
    fn retry_after_header_values() {
        use std::time::{SystemTime, UNIX_EPOCH};
        // Sun, 06 Nov 1994 08:49:37 GMT
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let p = |v: &str| parse_retry_after(v, now);
        assert_eq!(p("7"), Some(Duration::from_secs(7)));
        assert_eq!(p(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(p("0"), Some(Duration::ZERO));
        assert_eq!(p("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(p("86401"), Some(MAX_RETRY_AFTER));
        assert_eq!(p("99999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(p("Fri, 31 Dec 9999 23:59:59 GMT"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            p("Sun, 06 Nov 1994 08:50:07 GMT"),
            Some(Duration::from_secs(30))
        );
        // A date in the past: retry now.
        assert_eq!(p("Sun, 06 Nov 1994 08:00:00 GMT"), Some(Duration::ZERO));
        for bad in ["", "-5", "1.5", "soon", "7s"] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        assert!(parse_retry_after("5", SystemTime::now()).is_some());
    }
}

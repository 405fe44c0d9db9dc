//! Dialogflow ES v2 REST client: session contexts, agent lookup and text detectIntent.
//!
//! Session and context names are used verbatim in the path, so sessions under
//! `environments/…/users/…` or `locations/…` work unchanged. The API host is chosen per call
//! from the name ([`api_base_for`]): a session under `projects/P/locations/L/…` with a
//! non-global `L` goes to `L`'s regional host, unless the base was set explicitly.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::auth::TokenSource;
use super::webhook::{Context, context_id, context_name};
use crate::metrics::Metrics;

/// Upper bound on `contexts.list` pages followed (Dialogflow keeps far fewer contexts).
const MAX_LIST_PAGES: usize = 50;

/// Dialogflow ES v2 REST client. Cheap to clone.
#[derive(Clone)]
pub struct DialogflowClient {
    http: reqwest::Client,
    /// The default base, without a trailing `/`.
    base: String,
    /// `true`: `base` serves every call; `false`: sessions in a non-global location go to that
    /// location's regional host.
    explicit_base: bool,
    auth: Arc<TokenSource>,
    timeout: Duration,
    /// Where each request's time goes (`handover_dialogflow_call_duration_seconds`), if anywhere.
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for DialogflowClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialogflowClient")
            .field("base", &self.base)
            .field("explicit_base", &self.explicit_base)
            .field("auth", &self.auth.describe())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Errors from Dialogflow API calls.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialogflowError {
    /// No usable access token (permanent: bad key, rejected grant, …). Token fetches that
    /// failed at the transport level are reported as [`DialogflowError::Transport`] instead.
    #[error("Dialogflow authentication failed: {0}")]
    Auth(String),
    /// Dialogflow answered with an error status. `message` is the Google error message when the
    /// body has one. Status 400 is also used for resource names rejected before sending.
    #[error("Dialogflow API error (HTTP {status}): {message}")]
    Api { status: u16, message: String },
    #[error("Dialogflow request timed out")]
    Timeout,
    #[error("Dialogflow request failed: {0}")]
    Transport(String),
    #[error("unexpected Dialogflow response: {0}")]
    Decode(String),
}

impl DialogflowError {
    /// The `status` label of `handover_dialogflow_errors_total`: the HTTP status, or the kind
    /// of failure when there is none.
    pub fn metric_status(&self) -> String {
        match self {
            DialogflowError::Api { status, .. } => status.to_string(),
            DialogflowError::Auth(_) => "auth".into(),
            DialogflowError::Timeout => "timeout".into(),
            DialogflowError::Transport(_) => "transport".into(),
            DialogflowError::Decode(_) => "decode".into(),
        }
    }

    /// Whether retrying later may help: 408, 429, 5xx, timeouts and transport failures
    /// (including transport-level failures to get a token).
    pub fn is_transient(&self) -> bool {
        match self {
            DialogflowError::Api { status, .. } => {
                *status == 408 || *status == 429 || (500..=599).contains(status)
            }
            DialogflowError::Timeout | DialogflowError::Transport(_) => true,
            DialogflowError::Auth(_) | DialogflowError::Decode(_) => false,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListContextsResponse {
    #[serde(default)]
    contexts: Option<Vec<Context>>,
    #[serde(default)]
    next_page_token: Option<String>,
}

impl DialogflowClient {
    /// `base` is e.g. `https://dialogflow.googleapis.com` (no `/v2`; a trailing `/` is ignored).
    /// `timeout` applies to each HTTP request.
    ///
    /// A `base` on a Dialogflow host ([`DialogflowClient::base_for_location`], the default that
    /// follows `DIALOGFLOW_LOCATION`) is only a default: a session or context under a non-global
    /// `locations/L` goes to `L`'s regional host. Any other `base` (`DIALOGFLOW_API_BASE`
    /// pointing at a test server or a private endpoint) serves every call. Use
    /// [`DialogflowClient::with_explicit_base`] to say so when it is known.
    pub fn new(
        http: reqwest::Client,
        base: String,
        auth: Arc<TokenSource>,
        timeout: Duration,
    ) -> Self {
        let base = base.trim_end_matches('/').to_owned();
        let explicit_base = !is_dialogflow_base(&base);
        Self {
            http,
            base,
            explicit_base,
            auth,
            timeout,
            metrics: None,
        }
    }

    /// Times every request in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// `true`: the base given to [`DialogflowClient::new`] was set explicitly
    /// (`DIALOGFLOW_API_BASE`) and serves every call, even one on a Dialogflow host; `false`:
    /// it is the default, and sessions in another location go to their regional host.
    pub fn with_explicit_base(mut self, explicit: bool) -> Self {
        self.explicit_base = explicit;
        self
    }

    /// The base a call on `resource` (a session, context or agent name) goes to.
    pub fn base_for(&self, resource: &str) -> String {
        api_base_for(resource, &self.base, self.explicit_base)
    }

    /// The API host for an agent location: `global` (or empty) uses the global host, anything
    /// else the regional `https://{location}-dialogflow.googleapis.com`.
    pub fn base_for_location(location: &str) -> String {
        let location = location.trim();
        if location.is_empty() || location.eq_ignore_ascii_case("global") {
            "https://dialogflow.googleapis.com".to_owned()
        } else {
            format!("https://{location}-dialogflow.googleapis.com")
        }
    }

    /// All active contexts of a session (follows `nextPageToken`).
    pub async fn list_contexts(&self, session: &str) -> Result<Vec<Context>, DialogflowError> {
        let url = self.url(session, "/contexts")?;
        let mut contexts = Vec::new();
        let mut page_token: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let mut query = vec![("pageSize", "100".to_owned())];
            if let Some(token) = &page_token {
                query.push(("pageToken", token.clone()));
            }
            let body = self
                .send("contexts.list", Method::GET, &url, &query, None)
                .await?;
            let page: ListContextsResponse = decode(&body, "contexts.list")?;
            contexts.extend(page.contexts.unwrap_or_default());
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) if page_token.as_deref() == Some(next.as_str()) => {
                    return Err(DialogflowError::Decode(
                        "contexts.list returned the same nextPageToken twice".into(),
                    ));
                }
                Some(next) => page_token = Some(next),
                None => return Ok(contexts),
            }
        }
        Err(DialogflowError::Decode(format!(
            "contexts.list did not finish within {MAX_LIST_PAGES} pages"
        )))
    }

    /// Creates (or overrides) a context in `session`. The context is always created under that
    /// session: its name's id part (after the last `/contexts/`, or the whole name if it has
    /// none) is combined with `session`.
    pub async fn create_context(
        &self,
        session: &str,
        ctx: &Context,
    ) -> Result<(), DialogflowError> {
        let id = context_id(&ctx.name);
        check_segment("context id", id)?;
        let url = self.url(session, "/contexts")?;
        let body = Context {
            name: context_name(session, id),
            ..ctx.clone()
        };
        let body = serde_json::to_value(&body)
            .map_err(|e| DialogflowError::Decode(format!("cannot encode the context: {e}")))?;
        self.send("contexts.create", Method::POST, &url, &[], Some(&body))
            .await?;
        Ok(())
    }

    /// Deletes one context by full name. A missing context (404) counts as success.
    pub async fn delete_context(&self, context_name: &str) -> Result<(), DialogflowError> {
        let url = self.url(context_name, "")?;
        ok_if_missing(
            self.send("contexts.delete", Method::DELETE, &url, &[], None)
                .await,
        )
    }

    /// Deletes all active contexts of a session (`sessions.deleteContexts`). 404 counts as success.
    pub async fn delete_all_contexts(&self, session: &str) -> Result<(), DialogflowError> {
        let url = self.url(session, "/contexts")?;
        ok_if_missing(
            self.send("sessions.deleteContexts", Method::DELETE, &url, &[], None)
                .await,
        )
    }

    /// The agent of a project (`projects/{p}/agent`, or `projects/{p}/locations/{l}/agent` for a
    /// non-global location). Useful as a startup credentials check.
    pub async fn get_agent(&self, project: &str, location: &str) -> Result<Value, DialogflowError> {
        check_segment("project", project)?;
        let location = location.trim();
        let parent = if location.is_empty() || location.eq_ignore_ascii_case("global") {
            format!("projects/{project}")
        } else {
            check_segment("location", location)?;
            format!("projects/{project}/locations/{location}")
        };
        let url = self.url(&parent, "/agent")?;
        let body = self.send("agent.get", Method::GET, &url, &[], None).await?;
        decode(&body, "agent.get")
    }

    /// `sessions.detectIntent` with a text query. Not idempotent: it may change contexts and
    /// runs the agent's webhook.
    pub async fn detect_intent_text(
        &self,
        session: &str,
        text: &str,
        language_code: &str,
    ) -> Result<Value, DialogflowError> {
        let url = self.url(session, ":detectIntent")?;
        let body = json!({
            "queryInput": { "text": { "text": text, "languageCode": language_code } }
        });
        let response = self
            .send(
                "sessions.detectIntent",
                Method::POST,
                &url,
                &[],
                Some(&body),
            )
            .await?;
        decode(&response, "sessions.detectIntent")
    }

    /// `{base}/v2/{resource}{suffix}`, with `resource` used verbatim after a sanity check and
    /// `base` chosen for it by [`DialogflowClient::base_for`].
    fn url(&self, resource: &str, suffix: &str) -> Result<String, DialogflowError> {
        check_resource_name(resource)?;
        Ok(format!("{}/v2/{resource}{suffix}", self.base_for(resource)))
    }

    /// Sends one request with a bearer token; on HTTP 401 fetches a fresh token and retries once.
    /// Returns the response body of a 2xx answer. A failure is counted in
    /// `handover_dialogflow_errors_total`.
    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        url: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Vec<u8>, DialogflowError> {
        let result = self.send_once(operation, method, url, query, body).await;
        if let (Err(e), Some(metrics)) = (&result, &self.metrics) {
            metrics.dialogflow_error(operation, &e.metric_status());
        }
        result
    }

    async fn send_once(
        &self,
        operation: &'static str,
        method: Method,
        url: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Vec<u8>, DialogflowError> {
        let token = self.token(false).await?;
        let (status, bytes) = self
            .attempt(operation, &method, url, query, body, &token)
            .await?;
        let (status, bytes, token) = if status == StatusCode::UNAUTHORIZED {
            tracing::info!(
                source = self.auth.describe(),
                "Dialogflow answered 401; retrying once with a refreshed access token"
            );
            let token = self.token(true).await?;
            let (status, bytes) = self
                .attempt(operation, &method, url, query, body, &token)
                .await?;
            (status, bytes, token)
        } else {
            (status, bytes, token)
        };
        if status.is_success() {
            Ok(bytes)
        } else {
            // Google's text, quoted: the one place a token could come back (the token itself
            // travels in a header, never in the URL or our own texts).
            let message = google_error_message(status, &bytes);
            Err(DialogflowError::Api {
                status: status.as_u16(),
                message: crate::secret::redact(&message, &[token.as_str()]),
            })
        }
    }

    async fn attempt(
        &self,
        operation: &'static str,
        method: &Method,
        url: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        token: &str,
    ) -> Result<(StatusCode, Vec<u8>), DialogflowError> {
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(token)
            .timeout(self.timeout);
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let _timer = self
            .metrics
            .as_ref()
            .map(|m| m.time_dialogflow_request(operation));
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport_error)?;
        Ok((status, bytes.to_vec()))
    }

    async fn token(&self, force_refresh: bool) -> Result<String, DialogflowError> {
        self.auth.fetch(force_refresh).await.map_err(|failure| {
            if failure.transient {
                DialogflowError::Transport(failure.error.to_string())
            } else {
                DialogflowError::Auth(failure.error.to_string())
            }
        })
    }
}

/// The API base for a call on `resource` (a session, context or agent name).
///
/// - `explicit`: `default_base`, always.
/// - `projects/P/locations/L/…` with `L` not `global`: `L`'s regional host
///   ([`DialogflowClient::base_for_location`]). When `default_base` is itself on a Dialogflow host,
///   only its host is replaced, so its scheme and port are kept.
/// - `global`, no `locations/` segment, or a malformed name: `default_base`.
///
/// The result has no trailing `/`.
pub fn api_base_for(resource: &str, default_base: &str, explicit: bool) -> String {
    let default_base = default_base.trim().trim_end_matches('/');
    let location = match resource_location(resource) {
        Some(location) if !explicit => location,
        _ => return default_base.to_owned(),
    };
    let regional = DialogflowClient::base_for_location(location);
    let Ok(mut url) = reqwest::Url::parse(default_base) else {
        return regional;
    };
    let regional_host = reqwest::Url::parse(&regional)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned));
    match regional_host {
        Some(host) if is_dialogflow_base(default_base) && url.set_host(Some(&host)).is_ok() => {
            url.as_str().trim_end_matches('/').to_owned()
        }
        _ => regional,
    }
}

/// The `L` of `projects/P/locations/L/…` when it is a non-global location id (lowercase
/// letters, digits and `-`); `None` for `global`, for names without a location and for
/// malformed ones.
fn resource_location(resource: &str) -> Option<&str> {
    let mut segments = resource.trim().split('/');
    let (Some("projects"), Some(project), Some("locations"), Some(location)) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return None;
    };
    let global = location.eq_ignore_ascii_case("global");
    (!project.is_empty() && !global && is_location_id(location)).then_some(location)
}

fn is_location_id(location: &str) -> bool {
    !location.is_empty()
        && !location.starts_with('-')
        && !location.ends_with('-')
        && location
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Whether `base` is the global or a regional Dialogflow base (as
/// [`DialogflowClient::base_for_location`] makes them), whatever its scheme and port.
fn is_dialogflow_base(base: &str) -> bool {
    let Some(host) = reqwest::Url::parse(base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
    else {
        return false;
    };
    let host_for = |location: &str| {
        reqwest::Url::parse(&DialogflowClient::base_for_location(location))
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
    };
    if host_for("global").as_deref() == Some(host.as_str()) {
        return true;
    }
    // A regional host starts with its location: try every prefix that ends before a `-`.
    host.match_indices('-').any(|(i, _)| {
        let location = &host[..i];
        is_location_id(location) && host_for(location).as_deref() == Some(host.as_str())
    })
}

fn ok_if_missing(result: Result<Vec<u8>, DialogflowError>) -> Result<(), DialogflowError> {
    match result {
        Ok(_) | Err(DialogflowError::Api { status: 404, .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn transport_error(err: reqwest::Error) -> DialogflowError {
    if err.is_timeout() {
        return DialogflowError::Timeout;
    }
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    DialogflowError::Transport(message)
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, DialogflowError> {
    // Empty bodies count as `{}` (google.protobuf.Empty / no contexts).
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| DialogflowError::Decode(format!("{what} response: {e}")))
}

/// The `error.message` of a Google error body (with `error.status` when present), else a short
/// excerpt of the body, else the HTTP reason phrase.
fn google_error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        let error = value.get("error");
        let message = error
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty());
        let code = error
            .and_then(|e| e.get("status"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        match (message, code) {
            (Some(m), Some(c)) => return format!("{m} ({c})"),
            (Some(m), None) => return m.to_owned(),
            (None, Some(c)) => return c.to_owned(),
            (None, None) => {}
        }
        // OAuth-style `{"error": "invalid_token", "error_description": "..."}`
        if let Some(e) = error.and_then(Value::as_str) {
            return match value.get("error_description").and_then(Value::as_str) {
                Some(d) => format!("{e}: {d}"),
                None => e.to_owned(),
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status.canonical_reason().unwrap_or("no details").to_owned()
    } else {
        let excerpt: String = text.chars().take(200).collect();
        if excerpt.len() < text.len() {
            format!("{excerpt}…")
        } else {
            excerpt
        }
    }
}

/// A resource name such as `projects/p/agent/sessions/s` (or a context name): must start with
/// `projects/` and contain only plain path segments, so it cannot change the URL's meaning.
fn check_resource_name(name: &str) -> Result<(), DialogflowError> {
    let invalid = |why: &str| DialogflowError::Api {
        status: 400,
        message: format!("invalid Dialogflow resource name {name:?}: {why}"),
    };
    if !name.starts_with("projects/") {
        return Err(invalid("must start with `projects/`"));
    }
    if name
        .chars()
        .any(|c| !c.is_ascii_graphic() || matches!(c, '?' | '#' | '\\'))
    {
        return Err(invalid(
            "must not contain spaces, control characters, `?`, `#` or `\\`",
        ));
    }
    if name
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(invalid("has an empty, `.` or `..` path segment"));
    }
    Ok(())
}

/// One path segment (project id, location, context id).
fn check_segment(what: &str, value: &str) -> Result<(), DialogflowError> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | '?' | '#' | '\\' | ':'));
    if ok {
        Ok(())
    } else {
        Err(DialogflowError::Api {
            status: 400,
            message: format!("invalid {what} {value:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogflow::auth::TokenSourceConfig;
    use crate::secret::Secret;
    use wiremock::matchers::{body_json, header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    async fn client(base: &str) -> DialogflowClient {
        let auth = TokenSource::build(TokenSourceConfig::Static(Secret::new("ya29.static")))
            .await
            .unwrap();
        DialogflowClient::new(
            reqwest::Client::new(),
            format!("{base}/"),
            Arc::new(auth),
            Duration::from_secs(5),
        )
    }

    const SESSION: &str = "projects/handover-demo-4f2a1/agent/sessions/3c32f610";

    #[test]
    fn base_for_location() {
        assert_eq!(
            DialogflowClient::base_for_location("global"),
            "https://dialogflow.googleapis.com"
        );
        assert_eq!(
            DialogflowClient::base_for_location(""),
            "https://dialogflow.googleapis.com"
        );
        assert_eq!(
            DialogflowClient::base_for_location("europe-west2"),
            "https://europe-west2-dialogflow.googleapis.com"
        );
    }

    #[test]
    fn api_base_for_derives_the_regional_host_from_the_name() {
        const GLOBAL: &str = "https://dialogflow.googleapis.com";
        const LONDON: &str = "https://europe-west2-dialogflow.googleapis.com";
        let derived = |name: &str| api_base_for(name, GLOBAL, false);
        // Agent session and environment/user session without a location: the default.
        assert_eq!(derived(SESSION), GLOBAL);
        assert_eq!(
            derived("projects/p/agent/environments/production/users/-/sessions/s"),
            GLOBAL
        );
        // Regional session, agent session and context names, and agents.
        for name in [
            "projects/p/locations/europe-west2/agent/sessions/s",
            "projects/p/locations/europe-west2/agent/environments/production/users/-/sessions/s",
            "projects/p/locations/europe-west2/agent/sessions/s/contexts/human_handover",
            "projects/p/locations/europe-west2/agent",
        ] {
            assert_eq!(derived(name), LONDON, "{name}");
        }
        // `global` uses the default, whatever DIALOGFLOW_LOCATION made it.
        assert_eq!(
            derived("projects/p/locations/global/agent/sessions/s"),
            GLOBAL
        );
        assert_eq!(
            api_base_for(
                "projects/p/locations/global/agent/sessions/s",
                LONDON,
                false
            ),
            LONDON
        );
        assert_eq!(
            api_base_for(
                "projects/p/agent/sessions/s",
                "https://us-central1-dialogflow.googleapis.com/",
                false
            ),
            "https://us-central1-dialogflow.googleapis.com"
        );
        // Another location than the default's.
        assert_eq!(
            api_base_for(
                "projects/p/locations/asia-northeast1/agent/sessions/s",
                LONDON,
                false
            ),
            "https://asia-northeast1-dialogflow.googleapis.com"
        );
        // Malformed names fall back to the default.
        for name in [
            "",
            "projects/p/locations",
            "projects/p/locations/",
            "projects/p/locations//agent/sessions/s",
            "projects//locations/europe-west2/agent/sessions/s",
            "projects/p/locations/Europe-West2/agent/sessions/s",
            "projects/p/locations/evil.example.com/agent/sessions/s",
            "projects/p/locations/-x/agent",
            "projects/p/agent/sessions/locations/europe-west2",
            "sessions/s/locations/europe-west2",
        ] {
            assert_eq!(derived(name), GLOBAL, "{name:?}");
        }
        // An explicit base always wins, even a Dialogflow host.
        for base in ["http://127.0.0.1:8080", GLOBAL] {
            assert_eq!(
                api_base_for(
                    "projects/p/locations/europe-west2/agent/sessions/s",
                    base,
                    true
                ),
                base
            );
        }
        // A default on a Dialogflow host keeps its scheme and port; any other default that is
        // not explicit gets the plain regional base.
        assert_eq!(
            api_base_for(
                "projects/p/locations/europe-west2/agent/sessions/s",
                "http://dialogflow.googleapis.com:8080/",
                false
            ),
            "http://europe-west2-dialogflow.googleapis.com:8080"
        );
        assert_eq!(
            api_base_for(
                "projects/p/locations/europe-west2/agent/sessions/s",
                "http://127.0.0.1:8080",
                false
            ),
            LONDON
        );
    }

    #[test]
    fn dialogflow_bases_are_recognised() {
        for base in [
            "https://dialogflow.googleapis.com",
            "https://dialogflow.googleapis.com/",
            "https://europe-west2-dialogflow.googleapis.com",
            "https://us-central1-dialogflow.googleapis.com",
            "http://dialogflow.googleapis.com:8080",
        ] {
            assert!(is_dialogflow_base(base), "{base}");
        }
        for base in [
            "http://127.0.0.1:8080",
            "https://dialogflow-psc.p.googleapis.com",
            "https://europe-west2-dialogflow.p.googleapis.com",
            "https://-dialogflow.googleapis.com",
            "https://dialogflow.googleapis.com.example.com",
            "not a url",
        ] {
            assert!(!is_dialogflow_base(base), "{base}");
        }
    }

    #[tokio::test]
    async fn the_client_infers_whether_its_base_is_explicit() {
        let regional = "projects/p/locations/europe-west2/agent/sessions/s";
        let df = client("https://dialogflow.googleapis.com").await;
        assert_eq!(
            df.base_for(regional),
            "https://europe-west2-dialogflow.googleapis.com"
        );
        assert_eq!(df.base_for(SESSION), "https://dialogflow.googleapis.com");
        let df = df.with_explicit_base(true);
        assert_eq!(df.base_for(regional), "https://dialogflow.googleapis.com");
        let df = client("http://127.0.0.1:9").await;
        assert_eq!(df.base_for(regional), "http://127.0.0.1:9");
    }

    #[test]
    fn transient_classification() {
        let api = |status| DialogflowError::Api {
            status,
            message: String::new(),
        };
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(api(s).is_transient(), "{s}");
        }
        for s in [400, 401, 403, 404, 409] {
            assert!(!api(s).is_transient(), "{s}");
        }
        assert!(DialogflowError::Timeout.is_transient());
        assert!(DialogflowError::Transport("x".into()).is_transient());
        assert!(!DialogflowError::Auth("x".into()).is_transient());
        assert!(!DialogflowError::Decode("x".into()).is_transient());
    }

    #[test]
    fn google_error_messages() {
        let body = br#"{"error":{"code":403,"message":"IAM permission 'dialogflow.contexts.delete' on 'projects/p/agent' denied.","status":"PERMISSION_DENIED","details":[]}}"#;
        assert_eq!(
            google_error_message(StatusCode::FORBIDDEN, body),
            "IAM permission 'dialogflow.contexts.delete' on 'projects/p/agent' denied. (PERMISSION_DENIED)"
        );
        assert_eq!(
            google_error_message(StatusCode::UNAUTHORIZED, br#"{"error":"invalid_token"}"#),
            "invalid_token"
        );
        assert_eq!(
            google_error_message(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
        assert_eq!(
            google_error_message(StatusCode::SERVICE_UNAVAILABLE, b""),
            "Service Unavailable"
        );
        let long = "x".repeat(1000);
        assert_eq!(
            google_error_message(StatusCode::BAD_GATEWAY, long.as_bytes())
                .chars()
                .count(),
            201
        );
    }

    #[test]
    fn resource_names_are_checked() {
        for ok in [
            SESSION,
            "projects/p/locations/europe-west2/agent/environments/production/users/-/sessions/s",
            "projects/p/agent/sessions/s/contexts/generic",
        ] {
            assert!(check_resource_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "sessions/s",
            "projects/p/agent/sessions/s?x=1",
            "projects/p/agent/sessions/a b",
            "projects/p/agent/sessions/../../x",
            "projects/p//agent",
            "projects/p/agent/sessions/s#f",
        ] {
            let err = check_resource_name(bad).unwrap_err();
            assert!(
                matches!(err, DialogflowError::Api { status: 400, .. }),
                "{bad}: {err}"
            );
            assert!(!err.is_transient());
        }
    }

    #[tokio::test]
    async fn an_error_echoing_the_access_token_is_quoted_without_it() {
        let server = MockServer::start().await;
        Mock::given(method("DELETE"))
            .respond_with(ResponseTemplate::new(403).set_body_json(json!({"error": {
                "code": 403, "status": "PERMISSION_DENIED",
                "message": "Bearer ya29.static may not delete contexts"
            }})))
            .mount(&server)
            .await;
        let err = client(&server.uri())
            .await
            .delete_all_contexts(SESSION)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Dialogflow API error (HTTP 403): Bearer [redacted] may not delete contexts \
             (PERMISSION_DENIED)"
        );
    }

    #[tokio::test]
    async fn invalid_session_is_rejected_without_a_request() {
        let server = MockServer::start().await;
        let client = client(&server.uri()).await;
        let err = client.list_contexts("not-a-session").await.unwrap_err();
        assert!(
            matches!(err, DialogflowError::Api { status: 400, .. }),
            "{err}"
        );
        assert!(server.received_requests().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn list_contexts_follows_pages_and_accepts_empty_pages() {
        let server = MockServer::start().await;
        let ctx =
            |id: &str| json!({"name": format!("{SESSION}/contexts/{id}"), "lifespanCount": 2});
        Mock::given(method("GET"))
            .and(path(format!("/v2/{SESSION}/contexts")))
            .and(query_param("pageToken", "p2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"contexts": [ctx("c")]})))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("/v2/{SESSION}/contexts")))
            .and(header("authorization", "Bearer ya29.static"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(
                    json!({"contexts": [ctx("a"), ctx("b")], "nextPageToken": "p2"}),
                ),
            )
            .mount(&server)
            .await;
        let client = client(&server.uri()).await;
        let contexts = client.list_contexts(SESSION).await.unwrap();
        let ids: Vec<&str> = contexts.iter().map(|c| context_id(&c.name)).collect();
        assert_eq!(ids, ["a", "b", "c"]);

        let other = "projects/p/agent/sessions/empty";
        Mock::given(method("GET"))
            .and(path(format!("/v2/{other}/contexts")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .mount(&server)
            .await;
        assert!(client.list_contexts(other).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn list_contexts_stops_on_a_repeated_page_token() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"contexts": [], "nextPageToken": "same"})),
            )
            .mount(&server)
            .await;
        let client = client(&server.uri()).await;
        let err = client.list_contexts(SESSION).await.unwrap_err();
        assert!(matches!(err, DialogflowError::Decode(_)), "{err}");
    }

    #[tokio::test]
    async fn create_context_puts_bare_or_foreign_names_under_the_session() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(format!("/v2/{SESSION}/contexts")))
            .and(body_json(json!({
                "name": format!("{SESSION}/contexts/bot_active"),
                "lifespanCount": 50
            })))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(2)
            .mount(&server)
            .await;
        let client = client(&server.uri()).await;
        for name in [
            "bot_active",
            "projects/other/agent/sessions/x/contexts/bot_active",
        ] {
            client
                .create_context(
                    SESSION,
                    &Context {
                        name: name.into(),
                        lifespan_count: Some(50),
                        parameters: None,
                    },
                )
                .await
                .unwrap();
        }
        let err = client
            .create_context(
                SESSION,
                &Context {
                    name: "projects/p/agent/sessions/s/contexts/".into(),
                    lifespan_count: None,
                    parameters: None,
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, DialogflowError::Api { status: 400, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn get_agent_paths_and_decode_errors() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v2/projects/p/agent"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"displayName": "Demo"})))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v2/projects/p/locations/europe-west2/agent"))
            .respond_with(ResponseTemplate::new(200).set_body_string("not json"))
            .mount(&server)
            .await;
        let client = client(&server.uri()).await;
        assert_eq!(
            client.get_agent("p", "global").await.unwrap()["displayName"],
            "Demo"
        );
        let err = client.get_agent("p", "europe-west2").await.unwrap_err();
        assert!(matches!(err, DialogflowError::Decode(_)), "{err}");
        assert!(client.get_agent("p/../x", "global").await.is_err());
    }

    #[tokio::test]
    async fn detect_intent_text_body() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(format!("/v2/{SESSION}:detectIntent")))
            .and(body_json(json!({
                "queryInput": {"text": {"text": "hello", "languageCode": "en"}}
            })))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "responseId": "r1",
                "queryResult": {"action": "input.welcome"}
            })))
            .expect(1)
            .mount(&server)
            .await;
        let client = client(&server.uri()).await;
        let response = client
            .detect_intent_text(SESSION, "hello", "en")
            .await
            .unwrap();
        assert_eq!(response["queryResult"]["action"], "input.welcome");
    }

    #[tokio::test]
    async fn timeouts_and_connection_failures_are_transient() {
        let server = MockServer::start().await;
        Mock::given(method("DELETE"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
            .mount(&server)
            .await;
        let auth = TokenSource::build(TokenSourceConfig::Static(Secret::new("t")))
            .await
            .unwrap();
        let slow = DialogflowClient::new(
            reqwest::Client::new(),
            server.uri(),
            Arc::new(auth),
            Duration::from_millis(200),
        );
        let err = slow.delete_all_contexts(SESSION).await.unwrap_err();
        assert!(matches!(err, DialogflowError::Timeout), "{err}");
        assert!(err.is_transient());

        let unreachable = client("http://127.0.0.1:9").await;
        let err = unreachable.delete_all_contexts(SESSION).await.unwrap_err();
        assert!(matches!(err, DialogflowError::Transport(_)), "{err}");
        assert!(err.is_transient());
    }
}

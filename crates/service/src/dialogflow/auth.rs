//! Google OAuth2 access tokens for the Dialogflow API, via yup-oauth2.
//!
//! Token values are never logged: errors and `Debug` output only describe where a token comes from.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use yup_oauth2::authenticator::{ApplicationDefaultCredentialsTypes, DefaultAuthenticator};
use yup_oauth2::error::AuthErrorCode;
use yup_oauth2::{
    ApplicationDefaultCredentialsAuthenticator, ApplicationDefaultCredentialsFlowOpts,
    ServiceAccountAuthenticator,
};

use crate::secret::Secret;

/// Scopes requested for every token; both are accepted by the Sessions/Contexts methods.
pub const SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/dialogflow",
];

/// The GCE / Cloud Run metadata server's token URL (same default as yup-oauth2).
const DEFAULT_METADATA_TOKEN_URL: &str =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token";

/// Per-request timeout for token fetches.
const TOKEN_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where access tokens come from.
#[derive(Debug, Clone)]
pub enum TokenSourceConfig {
    /// A Google service-account key JSON file (its `token_uri` is honoured).
    ServiceAccountFile(PathBuf),
    /// The GCE / Cloud Run / GKE metadata server. `url` overrides the full token URL
    /// (default `http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token`);
    /// `?scopes=…` is appended to it.
    MetadataServer { url: Option<String> },
    /// A fixed bearer token (tests, emulators).
    Static(Secret),
}

/// Errors from building a [`TokenSource`] or fetching a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("Google auth configuration error: {0}")]
    Config(String),
    #[error("could not get a Google access token: {0}")]
    Fetch(String),
}

/// A token fetch failure with its retry classification (used by the API client).
#[derive(Debug, Clone)]
pub(crate) struct TokenFailure {
    pub(crate) error: AuthError,
    /// The failure is transport-level (connection, timeout, unreadable answer, server-side
    /// OAuth error) and may succeed on a later attempt.
    pub(crate) transient: bool,
}

impl TokenFailure {
    fn permanent(message: String) -> Self {
        Self {
            error: AuthError::Fetch(message),
            transient: false,
        }
    }

    fn transient(message: String) -> Self {
        Self {
            error: AuthError::Fetch(message),
            transient: true,
        }
    }
}

/// Supplies bearer tokens for the Dialogflow API. Build once and share in an `Arc`.
pub struct TokenSource {
    kind: Kind,
}

enum Kind {
    /// yup-oauth2 (service account, or the metadata server), cached in memory by yup-oauth2.
    Yup {
        auth: DefaultAuthenticator,
        describe: &'static str,
    },
    /// The metadata server queried directly; used only when `GOOGLE_APPLICATION_CREDENTIALS`
    /// is set, because yup-oauth2 then insists on the key file instead.
    Metadata(MetadataFlow),
    Static(Secret),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("source", &self.describe())
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// Builds a token source. Service-account keys are read and parsed here, so a bad key file
    /// fails at startup rather than on the first API call.
    pub async fn build(cfg: TokenSourceConfig) -> Result<Self, AuthError> {
        let kind = match cfg {
            TokenSourceConfig::ServiceAccountFile(path) => {
                let key = yup_oauth2::read_service_account_key(&path)
                    .await
                    .map_err(|e| {
                        AuthError::Config(format!(
                            "cannot read service account key file {}: {e}",
                            path.display()
                        ))
                    })?;
                check_url("token_uri", &key.token_uri).map_err(|e| {
                    AuthError::Config(format!("service account key file {}: {e}", path.display()))
                })?;
                let auth = ServiceAccountAuthenticator::builder(key)
                    .with_timeout(TOKEN_FETCH_TIMEOUT)
                    .build()
                    .await
                    .map_err(|e| {
                        AuthError::Config(format!(
                            "service account key file {} is not usable: {e}",
                            path.display()
                        ))
                    })?;
                Kind::Yup {
                    auth,
                    describe: "service account key file",
                }
            }
            TokenSourceConfig::MetadataServer { url } => {
                if let Some(url) = &url {
                    check_url("metadata server URL", url).map_err(AuthError::Config)?;
                }
                let opts = ApplicationDefaultCredentialsFlowOpts {
                    metadata_url: url.clone(),
                };
                // yup-oauth2 12.1 has no public way to build the metadata flow directly: its ADC
                // builder picks the key file whenever GOOGLE_APPLICATION_CREDENTIALS is set.
                match ApplicationDefaultCredentialsAuthenticator::builder(opts).await {
                    ApplicationDefaultCredentialsTypes::InstanceMetadata(builder) => {
                        let auth = builder
                            .with_timeout(TOKEN_FETCH_TIMEOUT)
                            .build()
                            .await
                            .map_err(|e| {
                                AuthError::Config(format!(
                                    "cannot set up the metadata server client: {e}"
                                ))
                            })?;
                        Kind::Yup {
                            auth,
                            describe: "metadata server",
                        }
                    }
                    ApplicationDefaultCredentialsTypes::ServiceAccount(_) => {
                        tracing::warn!(
                            "GOOGLE_APPLICATION_CREDENTIALS is set but the metadata server was \
                             configured; querying the metadata server directly and ignoring it"
                        );
                        Kind::Metadata(MetadataFlow::new(url)?)
                    }
                }
            }
            TokenSourceConfig::Static(token) => {
                if token.expose().trim().is_empty() {
                    return Err(AuthError::Config("the static access token is empty".into()));
                }
                Kind::Static(token)
            }
        };
        Ok(Self { kind })
    }

    /// A metadata-server source that never goes through yup-oauth2 (tests of the fallback).
    #[cfg(test)]
    fn direct_metadata(url: Option<String>) -> Result<Self, AuthError> {
        Ok(Self {
            kind: Kind::Metadata(MetadataFlow::new(url)?),
        })
    }

    /// A valid access token, cached until shortly before it expires.
    pub async fn token(&self) -> Result<String, AuthError> {
        self.fetch(false).await.map_err(|f| f.error)
    }

    /// A freshly fetched access token, bypassing the cache (use once after an HTTP 401).
    pub async fn refreshed_token(&self) -> Result<String, AuthError> {
        self.fetch(true).await.map_err(|f| f.error)
    }

    /// Where tokens come from, for logs.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Yup { describe, .. } => describe,
            Kind::Metadata(_) => "metadata server",
            Kind::Static(_) => "static token",
        }
    }

    /// Token fetch with its retry classification.
    pub(crate) async fn fetch(&self, force_refresh: bool) -> Result<String, TokenFailure> {
        match &self.kind {
            Kind::Yup { auth, .. } => {
                let result = if force_refresh {
                    auth.force_refreshed_token(SCOPES).await
                } else {
                    auth.token(SCOPES).await
                };
                let token = result.map_err(classify_yup_error)?;
                match token.token() {
                    Some(t) if !t.is_empty() => Ok(t.to_owned()),
                    _ => Err(TokenFailure::permanent(
                        "the token endpoint answered without an access_token".into(),
                    )),
                }
            }
            Kind::Metadata(flow) => flow.token(force_refresh).await,
            Kind::Static(token) => Ok(token.expose().to_owned()),
        }
    }
}

fn classify_yup_error(err: yup_oauth2::Error) -> TokenFailure {
    use yup_oauth2::Error as E;
    let message = err.to_string();
    match &err {
        // connection failures and timeouts
        E::HttpError(_) | E::HttpClientError(_) => TokenFailure::transient(message),
        // a non-JSON answer: typically a proxy or load balancer error page
        E::JSONError(_) => TokenFailure::transient(message),
        E::AuthError(auth) => match &auth.error {
            AuthErrorCode::Other(code)
                if code == "server_error" || code == "temporarily_unavailable" =>
            {
                TokenFailure::transient(message)
            }
            _ => TokenFailure::permanent(message),
        },
        _ => TokenFailure::permanent(message),
    }
}

/// Rejects URLs that yup-oauth2 could not turn into a request (it would panic on them).
fn check_url(what: &str, url: &str) -> Result<(), String> {
    if url.is_empty() || !url.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "{what} must be a non-empty URL without spaces or non-ASCII characters"
        ));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{what} {url:?} is invalid: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{what} {url:?} must be an http(s) URL with a host"));
    }
    if url.contains('?') || url.contains('#') {
        return Err(format!(
            "{what} {url:?} must not contain a query or fragment"
        ));
    }
    Ok(())
}

/// Direct metadata-server token flow (same request as yup-oauth2's: `GET <url>?scopes=a,b`
/// with `Metadata-Flavor: Google`), with an in-memory cache and a single fetch in flight.
struct MetadataFlow {
    http: reqwest::Client,
    url: String,
    cache: tokio::sync::Mutex<Option<CachedToken>>,
}

struct CachedToken {
    token: Secret,
    refresh_after: Instant,
}

#[derive(serde::Deserialize)]
struct MetadataToken {
    access_token: Option<String>,
    expires_in: Option<u64>,
    token_type: Option<String>,
}

impl MetadataFlow {
    fn new(url: Option<String>) -> Result<Self, AuthError> {
        let http = reqwest::Client::builder()
            .timeout(TOKEN_FETCH_TIMEOUT)
            .build()
            .map_err(|e| {
                AuthError::Config(format!(
                    "cannot set up the metadata server client: {}",
                    e.without_url()
                ))
            })?;
        Ok(Self {
            http,
            url: url.unwrap_or_else(|| DEFAULT_METADATA_TOKEN_URL.to_owned()),
            cache: tokio::sync::Mutex::new(None),
        })
    }

    async fn token(&self, force_refresh: bool) -> Result<String, TokenFailure> {
        let mut cache = self.cache.lock().await;
        if !force_refresh
            && let Some(cached) = cache.as_ref()
            && Instant::now() < cached.refresh_after
        {
            return Ok(cached.token.expose().to_owned());
        }
        let (token, lifetime) = self.fetch().await?;
        *cache = Some(CachedToken {
            token: Secret::new(token.clone()),
            refresh_after: Instant::now() + lifetime,
        });
        Ok(token)
    }

    async fn fetch(&self) -> Result<(String, Duration), TokenFailure> {
        let response = self
            .http
            .get(&self.url)
            .query(&[("scopes", SCOPES.join(","))])
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|e| {
                TokenFailure::transient(format!(
                    "metadata server request failed: {}",
                    e.without_url()
                ))
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            TokenFailure::transient(format!(
                "reading the metadata server answer failed: {}",
                e.without_url()
            ))
        })?;
        if !status.is_success() {
            let message = format!("metadata server answered HTTP {}", status.as_u16());
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                TokenFailure::transient(message)
            } else {
                TokenFailure::permanent(message)
            });
        }
        let parsed: MetadataToken = serde_json::from_slice(&body).map_err(|e| {
            TokenFailure::transient(format!("metadata server answer is not a token: {e}"))
        })?;
        if let Some(kind) = parsed.token_type.as_deref()
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(TokenFailure::permanent(format!(
                "metadata server returned token type {kind:?}, expected Bearer"
            )));
        }
        let token = parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                TokenFailure::permanent("metadata server answered without an access_token".into())
            })?;
        // like yup-oauth2: refresh one minute early; without expires_in, re-fetch after 5 minutes
        let lifetime = parsed.expires_in.map_or(Duration::from_secs(300), |secs| {
            Duration::from_secs(secs.saturating_sub(60))
        });
        Ok((token, lifetime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    #[test]
    fn token_source_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<TokenSource>();
        check::<AuthError>();
    }

    #[tokio::test]
    async fn static_token() {
        let source = TokenSource::build(TokenSourceConfig::Static(Secret::new("ya29.static")))
            .await
            .unwrap();
        assert_eq!(source.describe(), "static token");
        assert_eq!(source.token().await.unwrap(), "ya29.static");
        assert_eq!(source.refreshed_token().await.unwrap(), "ya29.static");
        assert!(!format!("{source:?}").contains("ya29"));
    }

    #[tokio::test]
    async fn empty_static_token_is_a_config_error() {
        let err = TokenSource::build(TokenSourceConfig::Static(Secret::new(" ")))
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::Config(_)), "{err}");
    }

    #[tokio::test]
    async fn missing_key_file_is_a_config_error_naming_the_file() {
        let err = TokenSource::build(TokenSourceConfig::ServiceAccountFile(
            "/nonexistent/sa-key.json".into(),
        ))
        .await
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, AuthError::Config(_)), "{msg}");
        assert!(msg.contains("/nonexistent/sa-key.json"), "{msg}");
    }

    #[tokio::test]
    async fn malformed_key_files_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("not-json.json", "this is not json".to_owned()),
            ("missing.json", r#"{"type":"service_account"}"#.to_owned()),
            (
                "bad-pem.json",
                r#"{"private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n","client_email":"a@b.iam.gserviceaccount.com","token_uri":"https://oauth2.googleapis.com/token"}"#.to_owned(),
            ),
            (
                "bad-uri.json",
                r#"{"private_key":"x","client_email":"a@b","token_uri":"not a url"}"#.to_owned(),
            ),
        ];
        for (name, content) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            let err = TokenSource::build(TokenSourceConfig::ServiceAccountFile(path))
                .await
                .unwrap_err();
            assert!(matches!(err, AuthError::Config(_)), "{name}: {err}");
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
    }

    #[tokio::test]
    async fn bad_metadata_url_is_a_config_error() {
        for url in ["", "metadata server", "ftp://x/token", "http://x/token?a=b"] {
            let err = TokenSource::build(TokenSourceConfig::MetadataServer {
                url: Some(url.to_owned()),
            })
            .await
            .unwrap_err();
            assert!(matches!(err, AuthError::Config(_)), "{url:?}: {err}");
        }
    }

    #[tokio::test]
    async fn direct_metadata_flow_caches_and_refreshes() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/token"))
            .and(header("Metadata-Flavor", "Google"))
            .and(query_param("scopes", SCOPES.join(",")))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": "ya29.meta", "expires_in": 3599, "token_type": "Bearer"
            })))
            .expect(2)
            .mount(&server)
            .await;
        let source = TokenSource::direct_metadata(Some(format!("{}/token", server.uri()))).unwrap();
        assert_eq!(source.describe(), "metadata server");
        assert_eq!(source.token().await.unwrap(), "ya29.meta");
        assert_eq!(source.token().await.unwrap(), "ya29.meta");
        assert_eq!(source.refreshed_token().await.unwrap(), "ya29.meta");
    }

    #[tokio::test]
    async fn direct_metadata_flow_classifies_failures() {
        let server = MockServer::start().await;
        Mock::given(path("/unavailable"))
            .respond_with(ResponseTemplate::new(503).set_body_string("try later"))
            .mount(&server)
            .await;
        Mock::given(path("/forbidden"))
            .respond_with(ResponseTemplate::new(403).set_body_string("no"))
            .mount(&server)
            .await;
        Mock::given(path("/empty"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({})))
            .mount(&server)
            .await;

        let source =
            TokenSource::direct_metadata(Some(format!("{}/unavailable", server.uri()))).unwrap();
        let failure = source.fetch(false).await.unwrap_err();
        assert!(failure.transient);
        assert!(
            failure.error.to_string().contains("HTTP 503"),
            "{:?}",
            failure.error
        );

        let source =
            TokenSource::direct_metadata(Some(format!("{}/forbidden", server.uri()))).unwrap();
        assert!(!source.fetch(false).await.unwrap_err().transient);

        let source = TokenSource::direct_metadata(Some(format!("{}/empty", server.uri()))).unwrap();
        let failure = source.fetch(false).await.unwrap_err();
        assert!(!failure.transient);
        assert!(matches!(failure.error, AuthError::Fetch(_)));

        // nothing listening: transport-level, transient
        let source =
            TokenSource::direct_metadata(Some("http://127.0.0.1:9/token".to_owned())).unwrap();
        assert!(source.fetch(false).await.unwrap_err().transient);
    }
}

//! Google OAuth2 access tokens for the Dialogflow API: a service-account key (a JWT signed
//! with RS256, exchanged at the key's `token_uri`) or the metadata server.
//!
//! Hand-written over `reqwest` and `ring` rather than with an OAuth crate: the flow is one
//! signed POST, and yup-oauth2 brought a second HTTP stack (hyper server, HTTP/2) and a
//! second TLS provider into every build. Token values are never logged: errors and `Debug`
//! output only describe where a token comes from.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::json;

use crate::secret::Secret;

/// Scopes requested for every token; both are accepted by the Sessions/Contexts methods.
pub const SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/dialogflow",
];

/// The GCE / Cloud Run metadata server's token URL.
const DEFAULT_METADATA_TOKEN_URL: &str =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token";

/// Per-request timeout for token fetches.
const TOKEN_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a signed assertion is valid (Google's maximum).
const ASSERTION_LIFETIME_SECS: u64 = 3600;

const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

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
    ServiceAccount {
        flow: Box<ServiceAccountFlow>,
        cache: TokenCache,
    },
    Metadata {
        flow: MetadataFlow,
        cache: TokenCache,
    },
    Static(Secret),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("source", &self.describe())
            .finish_non_exhaustive()
    }
}

fn token_http_client(what: &str) -> Result<reqwest::Client, AuthError> {
    crate::tls::install();
    reqwest::Client::builder()
        .timeout(TOKEN_FETCH_TIMEOUT)
        .build()
        .map_err(|e| {
            AuthError::Config(format!(
                "cannot set up the {what} client: {}",
                e.without_url()
            ))
        })
}

impl TokenSource {
    /// Builds a token source. Service-account keys are read and parsed here, so a bad key file
    /// fails at startup rather than on the first API call.
    pub async fn build(cfg: TokenSourceConfig) -> Result<Self, AuthError> {
        let kind = match cfg {
            TokenSourceConfig::ServiceAccountFile(path) => Kind::ServiceAccount {
                flow: Box::new(ServiceAccountFlow::from_file(&path).await?),
                cache: TokenCache::default(),
            },
            TokenSourceConfig::MetadataServer { url } => {
                if let Some(url) = &url {
                    check_url("metadata server URL", url).map_err(AuthError::Config)?;
                }
                Kind::Metadata {
                    flow: MetadataFlow::new(url)?,
                    cache: TokenCache::default(),
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

    /// A metadata-server source built without checking the URL (tests of the flow).
    #[cfg(test)]
    fn direct_metadata(url: Option<String>) -> Result<Self, AuthError> {
        Ok(Self {
            kind: Kind::Metadata {
                flow: MetadataFlow::new(url)?,
                cache: TokenCache::default(),
            },
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
            Kind::ServiceAccount { .. } => "service account key file",
            Kind::Metadata { .. } => "metadata server",
            Kind::Static(_) => "static token",
        }
    }

    /// Token fetch with its retry classification.
    pub(crate) async fn fetch(&self, force_refresh: bool) -> Result<String, TokenFailure> {
        match &self.kind {
            Kind::ServiceAccount { flow, cache } => cache.get(force_refresh, || flow.fetch()).await,
            Kind::Metadata { flow, cache } => cache.get(force_refresh, || flow.fetch()).await,
            Kind::Static(token) => Ok(token.expose().to_owned()),
        }
    }
}

/// The last token and when to fetch a new one; one fetch in flight at a time.
#[derive(Default)]
struct TokenCache(tokio::sync::Mutex<Option<CachedToken>>);

struct CachedToken {
    token: Secret,
    refresh_after: Instant,
}

impl TokenCache {
    async fn get<F, Fut>(&self, force_refresh: bool, fetch: F) -> Result<String, TokenFailure>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(String, Duration), TokenFailure>>,
    {
        let mut cache = self.0.lock().await;
        if !force_refresh
            && let Some(cached) = cache.as_ref()
            && Instant::now() < cached.refresh_after
        {
            return Ok(cached.token.expose().to_owned());
        }
        let (token, lifetime) = fetch().await?;
        *cache = Some(CachedToken {
            token: Secret::new(token.clone()),
            refresh_after: Instant::now() + lifetime,
        });
        Ok(token)
    }
}

/// A token endpoint's answer (the OAuth token endpoint and the metadata server alike).
#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    expires_in: Option<u64>,
    token_type: Option<String>,
}

impl TokenAnswer {
    /// The token and how long to use it: until a minute before it expires, or 5 minutes when
    /// the answer does not say.
    fn into_token(self, from: &str) -> Result<(String, Duration), TokenFailure> {
        if let Some(kind) = self.token_type.as_deref()
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(TokenFailure::permanent(format!(
                "{from} returned token type {kind:?}, expected Bearer"
            )));
        }
        let token = self.access_token.filter(|t| !t.is_empty()).ok_or_else(|| {
            TokenFailure::permanent(format!("{from} answered without an access_token"))
        })?;
        let lifetime = self.expires_in.map_or(Duration::from_secs(300), |secs| {
            Duration::from_secs(secs.saturating_sub(60))
        });
        Ok((token, lifetime))
    }
}

/// The fields of a service-account key file this flow needs.
#[derive(serde::Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    token_uri: String,
    private_key_id: Option<String>,
}

/// The service-account flow: a JWT (RS256, signed with the key) exchanged for a token.
struct ServiceAccountFlow {
    http: reqwest::Client,
    client_email: String,
    token_uri: String,
    key_id: Option<String>,
    key: RsaKeyPair,
}

impl ServiceAccountFlow {
    async fn from_file(path: &Path) -> Result<Self, AuthError> {
        let bad = |what: String| {
            AuthError::Config(format!(
                "service account key file {}: {what}",
                path.display()
            ))
        };
        let text = tokio::fs::read_to_string(path).await.map_err(|e| {
            AuthError::Config(format!(
                "cannot read service account key file {}: {e}",
                path.display()
            ))
        })?;
        let file: KeyFile = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a service account key: {e}")))?;
        check_url("token_uri", &file.token_uri).map_err(bad)?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(file.private_key.as_bytes())
            .map_err(|e| bad(format!("private_key is not a PKCS#8 PEM key: {e}")))?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| bad(format!("private_key is not a usable RSA key: {e}")))?;
        Ok(Self {
            http: token_http_client("token endpoint")?,
            client_email: file.client_email,
            token_uri: file.token_uri,
            key_id: file.private_key_id,
            key,
        })
    }

    /// The signed JWT asking `token_uri` for a token with [`SCOPES`], issued at `now` (epoch s).
    fn assertion(&self, now: u64) -> Result<String, TokenFailure> {
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPES.join(" "),
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .map_err(|_| TokenFailure::permanent("signing the token request failed".into()))?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    async fn fetch(&self) -> Result<(String, Duration), TokenFailure> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let assertion = self.assertion(now)?;
        let response = self
            .http
            .post(&self.token_uri)
            .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
            .send()
            .await
            .map_err(|e| {
                TokenFailure::transient(format!("token request failed: {}", e.without_url()))
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            TokenFailure::transient(format!(
                "reading the token answer failed: {}",
                e.without_url()
            ))
        })?;
        if !status.is_success() {
            return Err(oauth_error(status, &body));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            // typically a proxy or load balancer error page
            TokenFailure::transient(format!("the token endpoint's answer is not a token: {e}"))
        })?;
        answer.into_token("the token endpoint")
    }
}

/// An OAuth error answer (RFC 6749 §5.2): server-side trouble is worth a retry, a rejected
/// grant or client is not.
fn oauth_error(status: reqwest::StatusCode, body: &[u8]) -> TokenFailure {
    #[derive(serde::Deserialize)]
    struct OAuthError {
        error: Option<String>,
        error_description: Option<String>,
    }
    let parsed: Option<OAuthError> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|e| e.error.clone())
        .unwrap_or_default();
    let description = parsed.and_then(|e| e.error_description).unwrap_or_default();
    let message = format!(
        "the token endpoint answered HTTP {}: {code} {description}",
        status.as_u16()
    )
    .trim_end()
    .to_owned();
    let server_side = matches!(code.as_str(), "server_error" | "temporarily_unavailable");
    if server_side || status.is_server_error() || status.as_u16() == 429 {
        TokenFailure::transient(message)
    } else {
        TokenFailure::permanent(message)
    }
}

/// Rejects URLs that cannot be a token endpoint: no host, a query, spaces, another scheme.
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

/// The metadata-server flow: `GET <url>?scopes=a,b` with `Metadata-Flavor: Google`.
struct MetadataFlow {
    http: reqwest::Client,
    url: String,
}

impl MetadataFlow {
    fn new(url: Option<String>) -> Result<Self, AuthError> {
        Ok(Self {
            http: token_http_client("metadata server")?,
            url: url.unwrap_or_else(|| DEFAULT_METADATA_TOKEN_URL.to_owned()),
        })
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
        let parsed: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            TokenFailure::transient(format!("metadata server answer is not a token: {e}"))
        })?;
        parsed.into_token("metadata server")
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

    /// The assertion is a JWT that Google can verify: RS256 over `header.claims` with the
    /// key file's key (checked here with the `rsa` crate, independent of `ring`).
    #[tokio::test]
    async fn the_assertion_is_an_rs256_jwt_signed_with_the_key() {
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        use rsa::signature::Verifier;

        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.json");
        let file = json!({
            "type": "service_account",
            "client_email": "bot@p.iam.gserviceaccount.com",
            "private_key": pem.as_str(),
            "private_key_id": "k1",
            "token_uri": "https://oauth2.example/token",
        });
        std::fs::write(&path, file.to_string()).unwrap();
        let flow = ServiceAccountFlow::from_file(&path).await.unwrap();

        let jwt = flow.assertion(1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&decode(parts[0])).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&decode(parts[1])).unwrap();
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "kid": "k1"}));
        assert_eq!(claims["iss"], "bot@p.iam.gserviceaccount.com");
        assert_eq!(claims["aud"], "https://oauth2.example/token");
        assert_eq!(claims["scope"], SCOPES.join(" "));
        assert_eq!(claims["exp"], 1_700_000_000u64 + ASSERTION_LIFETIME_SECS);

        let verifier = VerifyingKey::<rsa::sha2::Sha256>::new(private.to_public_key());
        let signature = Signature::try_from(decode(parts[2]).as_slice()).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        verifier.verify(signed.as_bytes(), &signature).unwrap();
        assert!(verifier.verify(b"tampered", &signature).is_err());
    }
}

//! Google test support: throwaway service-account key files pointing at a mock token endpoint,
//! the token endpoint's and the Dialogflow API's answers, and the Dialogflow client on them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use messenger_handover::dialogflow::api::DialogflowClient;
use messenger_handover::dialogflow::auth::{TokenSource, TokenSourceConfig};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockBuilder, MockServer, ResponseTemplate};

/// The client email written into generated key files.
#[allow(dead_code)]
pub const TEST_CLIENT_EMAIL: &str = "handover-test@handover-demo-4f2a1.iam.gserviceaccount.com";

/// A 2048-bit RSA key generated once per test binary (generation takes a moment), as PKCS#8 PEM.
fn throwaway_private_key_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| {
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
            .expect("generate a throwaway RSA key");
        key.to_pkcs8_pem(LineEnding::LF)
            .expect("encode the throwaway RSA key as PKCS#8 PEM")
            .to_string()
    })
}

/// Writes a Google service-account key JSON file into `dir` with a freshly generated throwaway
/// 2048-bit RSA key (PKCS#8 PEM) and the given `token_uri`; returns its path.
#[allow(dead_code)]
pub fn write_service_account_key(dir: &Path, token_uri: &str) -> PathBuf {
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "handover-demo-4f2a1",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": throwaway_private_key_pem(),
        "client_email": TEST_CLIENT_EMAIL,
        "client_id": "104857600000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/handover-test%40handover-demo-4f2a1.iam.gserviceaccount.com",
        "universe_domain": "googleapis.com"
    });
    let path = dir.join("service-account.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&key).expect("serialize the key file"),
    )
    .expect("write the service account key file");
    path
}

/// The OAuth token endpoint's answer issuing `token`.
#[allow(dead_code)]
pub fn token_response(token: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": token,
        "expires_in": 3600,
        "token_type": "Bearer"
    }))
}

/// A Google API error answer.
#[allow(dead_code)]
pub fn google_error(code: u16, status: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "error": { "code": code, "message": message, "status": status }
    }))
}

/// The mock token endpoint (`POST /token`) issuing `token`.
#[allow(dead_code)]
pub fn token_endpoint(token: &str) -> Mock {
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token_response(token))
}

/// A mock of `METHOD /v2/{session}/contexts`.
#[allow(dead_code)]
pub fn contexts_of(verb: &str, session: &str) -> MockBuilder {
    Mock::given(method(verb)).and(path(format!("/v2/{session}/contexts")))
}

/// A mock of `METHOD /v2/{session}/contexts/{id}`.
#[allow(dead_code)]
pub fn context_of(verb: &str, session: &str, id: &str) -> MockBuilder {
    Mock::given(method(verb)).and(path(format!("/v2/{session}/contexts/{id}")))
}

/// A token source reading a fresh key file whose `token_uri` is `{server}/token`; the key
/// file lives as long as the returned directory.
#[allow(dead_code)]
pub async fn service_account_source(server: &MockServer) -> (tempfile::TempDir, Arc<TokenSource>) {
    let dir = tempfile::tempdir().unwrap();
    let key = write_service_account_key(dir.path(), &format!("{}/token", server.uri()));
    let source = TokenSource::build(TokenSourceConfig::ServiceAccountFile(key))
        .await
        .unwrap();
    (dir, Arc::new(source))
}

/// A Dialogflow client of `server` (also its token endpoint) with a service-account key; the
/// key file lives as long as the returned directory.
#[allow(dead_code)]
pub async fn service_account_client(server: &MockServer) -> (DialogflowClient, tempfile::TempDir) {
    let (dir, auth) = service_account_source(server).await;
    (dialogflow_client(server, auth), dir)
}

/// A Dialogflow client of `server` with `auth`.
#[allow(dead_code)]
pub fn dialogflow_client(server: &MockServer, auth: Arc<TokenSource>) -> DialogflowClient {
    DialogflowClient::new(
        reqwest::Client::new(),
        server.uri(),
        auth,
        Duration::from_secs(5),
    )
}

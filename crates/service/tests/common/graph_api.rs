//! The Graph API client under test against a wiremock Graph API: the client's settings and
//! secrets, and mocks of Page edges with or without the signature every call must carry.
#![allow(dead_code)]

use std::time::Duration;

use messenger_handover::messenger::graph::{GraphClient, GraphError, GraphSettings};
use messenger_handover::messenger::signature::appsecret_proof;
use messenger_handover::secret::Secret;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockBuilder, MockServer, ResponseTemplate};

use super::mocks::edge;

/// Secrets that must never show in an error (they say so, to be found if they do).
pub const TOKEN: &str = "EAAGpagetokenSECRET123";
pub const APP_SECRET: &str = "appsecretVALUE456";
pub const PAGE: &str = super::app::PAGE_ID;
pub const BOT: &str = super::app::APP_ID;

/// The client's settings for a Graph API at `base`, with a 5 s timeout.
pub fn settings_at(base: String, page_id: Option<&str>) -> GraphSettings {
    GraphSettings {
        base,
        version: "v25.0".to_owned(),
        page_id: page_id.map(str::to_owned),
        page_token: Secret::new(TOKEN),
        app_secret: Secret::new(APP_SECRET),
        timeout: Duration::from_secs(5),
    }
}

/// The client's settings for `server`, for `page_id` (`None`: the token's Page, `me`).
pub fn settings(server: &MockServer, page_id: Option<&str>) -> GraphSettings {
    settings_at(format!("{}/", server.uri()), page_id)
}

/// A client of `server` for [`PAGE`].
pub fn client(server: &MockServer) -> GraphClient {
    GraphClient::new(settings(server, Some(PAGE)), reqwest::Client::new())
}

/// The client on `settings`.
pub fn client_with(settings: GraphSettings) -> GraphClient {
    GraphClient::new(settings, reqwest::Client::new())
}

/// The appsecret_proof of [`TOKEN`].
pub fn proof() -> String {
    appsecret_proof(APP_SECRET, TOKEN)
}

/// A mock of `METHOD {path}` that also checks the page token and its appsecret_proof.
pub fn signed_at(verb: &str, at: impl Into<String>) -> MockBuilder {
    Mock::given(method(verb))
        .and(path(at.into()))
        .and(query_param("access_token", TOKEN))
        .and(query_param("appsecret_proof", proof()))
}

/// A mock of `METHOD /v25.0/{PAGE}/{edge}` that also checks the page token and its proof.
pub fn signed(verb: &str, edge: &str) -> MockBuilder {
    signed_at(verb, format!("/v25.0/{PAGE}/{edge}"))
}

/// A Graph API that answers every `verb` call with `answer`.
pub async fn answering(verb: &str, answer: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method(verb))
        .respond_with(answer)
        .mount(&server)
        .await;
    server
}

/// A Graph API that answers `verb` calls to the Page's `edge` with `answer`.
pub async fn answering_on(verb: &str, on: &str, answer: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    edge(verb, on).respond_with(answer).mount(&server).await;
    server
}

/// Neither secret shows in the error's message or its debug form.
pub fn assert_no_secret(err: &GraphError) {
    let shown = format!("{err} / {err:?}");
    assert!(!shown.contains(TOKEN), "token leaked: {shown}");
    assert!(!shown.contains(APP_SECRET), "app secret leaked: {shown}");
}

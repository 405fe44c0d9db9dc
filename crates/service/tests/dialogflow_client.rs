//! Dialogflow REST client + Google auth against wiremock: a service-account key whose
//! `token_uri` is the mock, and a mock metadata server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::google::*;
use common::mocks::ok;
use messenger_handover::dialogflow::api::{DialogflowClient, DialogflowError};
use messenger_handover::dialogflow::auth::{SCOPES, TokenSource, TokenSourceConfig};
use messenger_handover::dialogflow::webhook::{Context, context_id};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const SESSION: &str =
    "projects/handover-demo-4f2a1/agent/sessions/3c32f610-3f2b-4bd8-9712-43eb69c06c43";
const REGIONAL_SESSION: &str = "projects/handover-demo-4f2a1/locations/europe-west2/agent/environments/production/users/-/sessions/7f9c2e41-5b8d-4a3e-9c6f-0d1e2f3a4b5c";

fn context(id: &str, lifespan: i32) -> Value {
    json!({ "name": format!("{SESSION}/contexts/{id}"), "lifespanCount": lifespan })
}

/// Decodes the JWT claims of a jwt-bearer token request.
fn jwt_claims(request: &Request) -> Value {
    let body = String::from_utf8_lossy(&request.body).into_owned();
    let assertion = body
        .split('&')
        .find_map(|pair| pair.strip_prefix("assertion="))
        .expect("an assertion parameter");
    let claims = assertion.split('.').nth(1).expect("a JWT with claims");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .expect("base64url claims");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test]
async fn service_account_token_is_fetched_once_and_sent_as_bearer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string_contains(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
        ))
        .respond_with(token_response("ya29.first"))
        .expect(1)
        .named("token endpoint")
        .mount(&server)
        .await;
    contexts_of("GET", SESSION)
        .and(header("authorization", "Bearer ya29.first"))
        .respond_with(ok(json!({
            "contexts": [context("generic", 4), context("order-followup", 3)]
        })))
        .expect(1)
        .mount(&server)
        .await;
    contexts_of("POST", SESSION)
        .and(header("authorization", "Bearer ya29.first"))
        .and(body_json(json!({
            "name": format!("{SESSION}/contexts/bot_active"),
            "lifespanCount": 50,
            "parameters": { "returned_at": "2026-01-01T10:00:00Z" }
        })))
        .respond_with(ok(context("bot_active", 50)))
        .expect(1)
        .mount(&server)
        .await;
    context_of("DELETE", SESSION, "order-followup")
        .and(header("authorization", "Bearer ya29.first"))
        .respond_with(ok(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    contexts_of("DELETE", SESSION)
        .and(header("authorization", "Bearer ya29.first"))
        .respond_with(ok(json!({})))
        .expect(1)
        .mount(&server)
        .await;

    let (_dir, auth) = service_account_source(&server).await;
    assert_eq!(auth.describe(), "service account key file");
    let df = dialogflow_client(&server, auth.clone());

    let contexts = df.list_contexts(SESSION).await.unwrap();
    let ids: Vec<&str> = contexts.iter().map(|c| context_id(&c.name)).collect();
    assert_eq!(ids, ["generic", "order-followup"]);
    assert_eq!(contexts[0].lifespan_count, Some(4));

    df.create_context(
        SESSION,
        &Context {
            name: format!("{SESSION}/contexts/bot_active"),
            lifespan_count: Some(50),
            parameters: Some(json!({ "returned_at": "2026-01-01T10:00:00Z" })),
        },
    )
    .await
    .unwrap();
    df.delete_context(&contexts[1].name).await.unwrap();
    df.delete_all_contexts(SESSION).await.unwrap();
    assert_eq!(auth.token().await.unwrap(), "ya29.first");

    // The JWT is addressed to the key file's token_uri and asks for both scopes.
    let requests = server.received_requests().await.unwrap();
    let token_request = requests
        .iter()
        .find(|r| r.url.path() == "/token")
        .expect("a token request");
    let claims = jwt_claims(token_request);
    assert_eq!(claims["aud"], format!("{}/token", server.uri()));
    assert_eq!(claims["iss"], TEST_CLIENT_EMAIL);
    assert_eq!(claims["scope"], SCOPES.join(" "));
}

#[tokio::test]
async fn a_401_forces_exactly_one_refresh_and_one_retry() {
    let server = MockServer::start().await;
    token_endpoint("ya29.first")
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    token_endpoint("ya29.second").expect(1).mount(&server).await;
    contexts_of("DELETE", SESSION)
        .and(header("authorization", "Bearer ya29.first"))
        .respond_with(google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        ))
        .expect(1)
        .mount(&server)
        .await;
    contexts_of("DELETE", SESSION)
        .and(header("authorization", "Bearer ya29.second"))
        .respond_with(ok(json!({})))
        .expect(2)
        .mount(&server)
        .await;

    let (df, _key) = service_account_client(&server).await;
    df.delete_all_contexts(SESSION).await.unwrap();
    // the refreshed token is cached for later calls
    df.delete_all_contexts(SESSION).await.unwrap();
}

#[tokio::test]
async fn a_second_401_is_a_permanent_error_without_further_refreshes() {
    let server = MockServer::start().await;
    token_endpoint("ya29.first").expect(2).mount(&server).await;
    contexts_of("GET", SESSION)
        .respond_with(google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        ))
        .expect(2)
        .mount(&server)
        .await;

    let (_dir, auth) = service_account_source(&server).await;
    let err = dialogflow_client(&server, auth)
        .list_contexts(SESSION)
        .await
        .unwrap_err();
    match &err {
        DialogflowError::Api { status, message } => {
            assert_eq!(*status, 401);
            assert!(
                message.contains("invalid authentication credentials"),
                "{message}"
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(!err.is_transient());
}

#[tokio::test]
async fn deleting_a_missing_context_succeeds() {
    let server = MockServer::start().await;
    token_endpoint("ya29.first").mount(&server).await;
    Mock::given(method("DELETE"))
        .respond_with(google_error(
            404,
            "NOT_FOUND",
            "Context 'awaiting_agent' does not exist.",
        ))
        .expect(2)
        .mount(&server)
        .await;

    let (df, _key) = service_account_client(&server).await;
    df.delete_context(&format!("{SESSION}/contexts/awaiting_agent"))
        .await
        .unwrap();
    df.delete_all_contexts(SESSION).await.unwrap();
}

#[tokio::test]
async fn server_errors_are_transient_and_client_errors_permanent() {
    let server = MockServer::start().await;
    token_endpoint("ya29.first").expect(1).mount(&server).await;
    contexts_of("GET", SESSION)
        .respond_with(google_error(
            503,
            "UNAVAILABLE",
            "The service is currently unavailable.",
        ))
        .mount(&server)
        .await;
    contexts_of("POST", SESSION)
        .respond_with(google_error(
            400,
            "INVALID_ARGUMENT",
            "Resource name does not match 'projects/*/agent/sessions/*'.",
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/projects/handover-demo-4f2a1/agent"))
        .respond_with(google_error(
            403,
            "PERMISSION_DENIED",
            "IAM permission 'dialogflow.agents.get' on 'projects/handover-demo-4f2a1/agent' denied.",
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(
            "/v2/projects/handover-demo-4f2a1/locations/europe-west2/agent",
        ))
        .respond_with(google_error(404, "NOT_FOUND", "No agent."))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v2/projects/other/agent"))
        .respond_with(google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded."))
        .mount(&server)
        .await;

    let (df, _key) = service_account_client(&server).await;

    let err = df.list_contexts(SESSION).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        matches!(&err, DialogflowError::Api { status: 503, message } if message.contains("currently unavailable")),
        "{err}"
    );

    let err = df
        .create_context(
            SESSION,
            &Context {
                name: "bot_active".into(),
                lifespan_count: Some(5),
                parameters: None,
            },
        )
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(
        matches!(&err, DialogflowError::Api { status: 400, message } if message.contains("INVALID_ARGUMENT")),
        "{err}"
    );

    let err = df
        .get_agent("handover-demo-4f2a1", "global")
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("HTTP 403"), "{err}");

    // a 404 is only "success" for deletes
    let err = df
        .get_agent("handover-demo-4f2a1", "europe-west2")
        .await
        .unwrap_err();
    assert!(
        matches!(err, DialogflowError::Api { status: 404, .. }),
        "{err}"
    );
    assert!(!err.is_transient());

    let err = df.get_agent("other", "").await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn regional_session_paths_are_used_verbatim() {
    let server = MockServer::start().await;
    token_endpoint("ya29.first").mount(&server).await;
    contexts_of("GET", REGIONAL_SESSION)
        .and(header("authorization", "Bearer ya29.first"))
        .respond_with(ok(json!({
            "contexts": [{
                "name": format!("{REGIONAL_SESSION}/contexts/order-followup"),
                "lifespanCount": "2"
            }]
        })))
        .expect(1)
        .mount(&server)
        .await;
    context_of("DELETE", REGIONAL_SESSION, "order-followup")
        .respond_with(ok(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    contexts_of("DELETE", REGIONAL_SESSION)
        .respond_with(ok(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v2/{REGIONAL_SESSION}:detectIntent")))
        .and(body_json(json!({
            "queryInput": { "text": { "text": "hi", "languageCode": "en-gb" } }
        })))
        .respond_with(ok(json!({
            "responseId": "r-1",
            "queryResult": { "queryText": "hi", "action": "input.welcome" }
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(
            "/v2/projects/handover-demo-4f2a1/locations/europe-west2/agent",
        ))
        .respond_with(ok(json!({
            "parent": "projects/handover-demo-4f2a1/locations/europe-west2",
            "displayName": "Handover demo"
        })))
        .expect(1)
        .mount(&server)
        .await;

    let (df, _key) = service_account_client(&server).await;
    let contexts = df.list_contexts(REGIONAL_SESSION).await.unwrap();
    assert_eq!(contexts.len(), 1);
    assert_eq!(context_id(&contexts[0].name), "order-followup");
    assert_eq!(contexts[0].lifespan_count, Some(2));
    df.delete_context(&contexts[0].name).await.unwrap();
    df.delete_all_contexts(REGIONAL_SESSION).await.unwrap();
    let answer = df
        .detect_intent_text(REGIONAL_SESSION, "hi", "en-gb")
        .await
        .unwrap();
    assert_eq!(answer["queryResult"]["action"], "input.welcome");
    let agent = df
        .get_agent("handover-demo-4f2a1", "europe-west2")
        .await
        .unwrap();
    assert_eq!(agent["displayName"], "Handover demo");
    assert_eq!(
        DialogflowClient::base_for_location("europe-west2"),
        "https://europe-west2-dialogflow.googleapis.com"
    );
}

#[tokio::test]
async fn metadata_server_flow() {
    let server = MockServer::start().await;
    let token_path = "/computeMetadata/v1/instance/service-accounts/default/token";
    Mock::given(method("GET"))
        .and(path(token_path))
        .and(header("Metadata-Flavor", "Google"))
        .and(query_param("scopes", SCOPES.join(",")))
        .respond_with(token_response("ya29.metadata"))
        .expect(1)
        .mount(&server)
        .await;
    contexts_of("DELETE", SESSION)
        .and(header("authorization", "Bearer ya29.metadata"))
        .respond_with(ok(json!({})))
        .expect(2)
        .mount(&server)
        .await;

    let auth = TokenSource::build(TokenSourceConfig::MetadataServer {
        url: Some(format!("{}{token_path}", server.uri())),
    })
    .await
    .unwrap();
    assert_eq!(auth.describe(), "metadata server");
    let df = dialogflow_client(&server, Arc::new(auth));
    df.delete_all_contexts(SESSION).await.unwrap();
    df.delete_all_contexts(SESSION).await.unwrap();
}

#[tokio::test]
async fn rejected_grant_is_a_permanent_auth_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant",
            "error_description": "Invalid JWT Signature."
        })))
        .mount(&server)
        .await;

    let (_dir, auth) = service_account_source(&server).await;
    let err = dialogflow_client(&server, auth.clone())
        .delete_all_contexts(SESSION)
        .await
        .unwrap_err();
    assert!(matches!(err, DialogflowError::Auth(_)), "{err}");
    assert!(err.to_string().contains("invalid_grant"), "{err}");
    assert!(!err.is_transient());
    // nothing was sent to Dialogflow
    let requests = server.received_requests().await.unwrap();
    assert!(requests.iter().all(|r| r.url.path() == "/token"));
    assert!(auth.token().await.is_err());
}

#[tokio::test]
async fn unreachable_token_endpoint_is_transient() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // nothing listens on the discard port
    let key = write_service_account_key(dir.path(), "http://127.0.0.1:9/token");
    let auth = TokenSource::build(TokenSourceConfig::ServiceAccountFile(key))
        .await
        .unwrap();
    let err = dialogflow_client(&server, Arc::new(auth))
        .list_contexts(SESSION)
        .await
        .unwrap_err();
    assert!(matches!(err, DialogflowError::Transport(_)), "{err}");
    assert!(err.is_transient());
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn static_token_source() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/projects/handover-demo-4f2a1/agent"))
        .and(header("authorization", "Bearer emulator-token"))
        .respond_with(ok(json!({ "displayName": "x" })))
        .expect(1)
        .mount(&server)
        .await;
    let auth = TokenSource::build(TokenSourceConfig::Static(
        messenger_handover::secret::Secret::new("emulator-token"),
    ))
    .await
    .unwrap();
    let df = dialogflow_client(&server, Arc::new(auth));
    assert_eq!(
        df.get_agent("handover-demo-4f2a1", "global").await.unwrap()["displayName"],
        "x"
    );
}

/// A reqwest client that sends the global and the europe-west2 Dialogflow hosts to `server`
/// (plain HTTP), so the `Host` header shows which host a call was made for.
fn resolving_client(server: &MockServer) -> reqwest::Client {
    let addr = *server.address();
    reqwest::Client::builder()
        .no_proxy()
        .resolve("dialogflow.googleapis.com", addr)
        .resolve("europe-west2-dialogflow.googleapis.com", addr)
        .build()
        .unwrap()
}

async fn static_auth() -> Arc<TokenSource> {
    Arc::new(
        TokenSource::build(TokenSourceConfig::Static(
            messenger_handover::secret::Secret::new("ya29.static"),
        ))
        .await
        .unwrap(),
    )
}

#[tokio::test]
async fn a_regional_session_goes_to_its_regional_host() {
    let server = MockServer::start().await;
    // The regional session's calls, on the europe-west2 host only.
    contexts_of("GET", REGIONAL_SESSION)
        .and(header("host", "europe-west2-dialogflow.googleapis.com"))
        .and(header("authorization", "Bearer ya29.static"))
        .respond_with(ok(json!({
            "contexts": [{ "name": format!("{REGIONAL_SESSION}/contexts/human_handover"), "lifespanCount": 5 }]
        })))
        .expect(1)
        .mount(&server)
        .await;
    context_of("DELETE", REGIONAL_SESSION, "human_handover")
        .and(header("host", "europe-west2-dialogflow.googleapis.com"))
        .respond_with(ok(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    // A session without a location, on the default (global) host.
    contexts_of("DELETE", SESSION)
        .and(header("host", "dialogflow.googleapis.com"))
        .respond_with(ok(json!({})))
        .expect(1)
        .mount(&server)
        .await;

    // The default base (DIALOGFLOW_LOCATION=global, no DIALOGFLOW_API_BASE), over plain HTTP.
    let df = DialogflowClient::new(
        resolving_client(&server),
        "http://dialogflow.googleapis.com".to_owned(),
        static_auth().await,
        Duration::from_secs(5),
    );
    let contexts = df.list_contexts(REGIONAL_SESSION).await.unwrap();
    assert_eq!(context_id(&contexts[0].name), "human_handover");
    df.delete_context(&contexts[0].name).await.unwrap();
    df.delete_all_contexts(SESSION).await.unwrap();

    let hosts: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.headers["host"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        hosts,
        [
            "europe-west2-dialogflow.googleapis.com",
            "europe-west2-dialogflow.googleapis.com",
            "dialogflow.googleapis.com",
        ]
    );
}

#[tokio::test]
async fn an_explicit_base_serves_every_location() {
    let server = MockServer::start().await;
    contexts_of("DELETE", REGIONAL_SESSION)
        .respond_with(ok(json!({})))
        .expect(2)
        .mount(&server)
        .await;

    // DIALOGFLOW_API_BASE pointing at a test server or a private endpoint: inferred explicit.
    let df = DialogflowClient::new(
        reqwest::Client::builder().no_proxy().build().unwrap(),
        server.uri(),
        static_auth().await,
        Duration::from_secs(5),
    );
    df.delete_all_contexts(REGIONAL_SESSION).await.unwrap();

    // DIALOGFLOW_API_BASE set to the global Dialogflow host: explicit because the caller says so.
    let df = DialogflowClient::new(
        resolving_client(&server),
        "http://dialogflow.googleapis.com".to_owned(),
        static_auth().await,
        Duration::from_secs(5),
    )
    .with_explicit_base(true);
    df.delete_all_contexts(REGIONAL_SESSION).await.unwrap();
    let hosts: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.headers["host"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(hosts[1], "dialogflow.googleapis.com");
}

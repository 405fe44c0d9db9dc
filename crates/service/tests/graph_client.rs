//! Graph API client against a wiremock server.

mod common;

use std::time::Duration;

use common::app::{INBOX, PSID};
use common::graph_api::*;
use common::mocks::{edge, graph_error, ok, success};
use messenger_handover::messenger::graph::{
    GraphError, MessagingType, QuickReply, SentMessage, ThreadOwner,
};
use messenger_handover::messenger::signature::appsecret_proof;
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

#[tokio::test]
async fn pass_sends_the_exact_body_with_token_and_proof() {
    let server = MockServer::start().await;
    signed("POST", "pass_thread_control")
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "recipient": { "id": PSID },
            "target_app_id": 263902037430900u64,
            "metadata": "handover:user_asked_for_agent",
        })))
        .respond_with(success())
        .expect(1)
        .mount(&server)
        .await;

    client(&server)
        .pass_thread_control(PSID, INBOX, "handover:user_asked_for_agent")
        .await
        .unwrap();
}

#[tokio::test]
async fn pass_with_a_non_numeric_app_id_sends_a_string() {
    let server = MockServer::start().await;
    edge("POST", "pass_thread_control")
        .and(body_json(json!({
            "recipient": { "id": PSID },
            "target_app_id": "app-x",
            "metadata": "",
        })))
        .respond_with(success())
        .expect(1)
        .mount(&server)
        .await;

    client(&server)
        .pass_thread_control(PSID, "app-x", "")
        .await
        .unwrap();
}

#[tokio::test]
async fn without_page_id_paths_use_me() {
    let server = MockServer::start().await;
    signed_at("POST", "/v25.0/me/pass_thread_control")
        .respond_with(success())
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v25.0/me/thread_owner"))
        .and(query_param("recipient", PSID))
        .respond_with(ok(json!({"data": []})))
        .expect(1)
        .mount(&server)
        .await;

    let client = client_with(settings(&server, None));
    client.pass_thread_control(PSID, INBOX, "m").await.unwrap();
    assert_eq!(client.thread_owner(PSID).await.unwrap(), ThreadOwner::Idle);
}

#[tokio::test]
async fn take_release_request_never_carry_a_target_app_id() {
    let server = MockServer::start().await;
    for endpoint in [
        "take_thread_control",
        "release_thread_control",
        "request_thread_control",
    ] {
        signed("POST", endpoint)
            .and(header("content-type", "application/json"))
            .and(body_json(json!({
                "recipient": { "id": PSID },
                "metadata": "back to bot",
            })))
            .respond_with(success())
            .expect(1)
            .mount(&server)
            .await;
    }
    let c = client(&server);
    c.take_thread_control(PSID, "back to bot").await.unwrap();
    c.release_thread_control(PSID, "back to bot").await.unwrap();
    c.request_thread_control(PSID, "back to bot").await.unwrap();

    for request in server.received_requests().await.unwrap() {
        let body: serde_json::Value = request.body_json().unwrap();
        assert!(body.get("target_app_id").is_none(), "{body}");
    }
}

#[tokio::test]
async fn take_accepts_the_thread_owner_shaped_answer() {
    let server = answering_on(
        "POST",
        "take_thread_control",
        ok(json!({
            "data": [{ "thread_owner": { "app_id": 111111111111111u64, "expiration": 1763990000 } }]
        })),
    )
    .await;
    client(&server)
        .take_thread_control(PSID, "back to bot")
        .await
        .unwrap();
}

async fn owner_for(body: serde_json::Value) -> ThreadOwner {
    let server = MockServer::start().await;
    edge("GET", "thread_owner")
        .and(query_param("recipient", PSID))
        .and(query_param("access_token", TOKEN))
        .and(query_param("appsecret_proof", proof()))
        .respond_with(ok(body))
        .expect(1)
        .mount(&server)
        .await;
    client(&server).thread_owner(PSID).await.unwrap()
}

#[tokio::test]
async fn thread_owner_shapes() {
    assert_eq!(
        owner_for(
            json!({"data":[{"thread_owner":{"app_id":263902037430900u64,"expiration":1763990000}}]})
        )
        .await,
        ThreadOwner::App(INBOX.to_owned())
    );
    assert_eq!(
        owner_for(json!({"data":[{"thread_owner":{"app_id":BOT,"expiration":1763990000}}]})).await,
        ThreadOwner::App(BOT.to_owned())
    );
    assert_eq!(
        owner_for(json!({"data":[], "paging": {}})).await,
        ThreadOwner::Idle
    );
    assert_eq!(
        owner_for(json!({"data":[{"thread_owner":{"expiration":1763990000}}]})).await,
        ThreadOwner::Hidden
    );
}

#[tokio::test]
async fn send_text_with_and_without_quick_replies() {
    let server = MockServer::start().await;
    signed("POST", "messages")
        .and(body_json(json!({
            "recipient": { "id": PSID },
            "messaging_type": "RESPONSE",
            "message": {
                "text": "Anything else?",
                "quick_replies": [
                    { "content_type": "text", "title": "Talk to a human", "payload": "HUMAN" },
                    { "content_type": "text", "title": "No thanks", "payload": "DONE" }
                ]
            }
        })))
        .respond_with(ok(
            json!({"recipient_id": PSID, "message_id": "m_AG5Hz2Uq"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    edge("POST", "messages")
        .and(body_json(json!({
            "recipient": { "id": PSID },
            "messaging_type": "UPDATE",
            "message": { "text": "You are back with the bot." }
        })))
        .respond_with(ok(json!({"recipient_id": PSID})))
        .expect(1)
        .mount(&server)
        .await;

    let c = client(&server);
    let quick = [
        QuickReply {
            title: "Talk to a human".into(),
            payload: "HUMAN".into(),
        },
        QuickReply {
            title: "No thanks".into(),
            payload: "DONE".into(),
        },
    ];
    let sent = c
        .send_text(PSID, "Anything else?", &quick, MessagingType::Response)
        .await
        .unwrap();
    assert_eq!(
        sent,
        SentMessage {
            message_id: Some("m_AG5Hz2Uq".into())
        }
    );
    let sent = c
        .send_text(
            PSID,
            "You are back with the bot.",
            &[],
            MessagingType::Update,
        )
        .await
        .unwrap();
    assert_eq!(sent.message_id, None);
}

#[tokio::test]
async fn send_message_passes_a_raw_message_object() {
    let server = MockServer::start().await;
    let message = json!({"attachment": {"type": "template", "payload": {"template_type": "button",
        "text": "Done?", "buttons": [{"type": "postback", "title": "Back to bot", "payload": "BACK_TO_BOT"}]}}});
    edge("POST", "messages")
        .and(body_json(json!({
            "recipient": { "id": PSID },
            "messaging_type": "RESPONSE",
            "message": message.clone(),
        })))
        .respond_with(ok(json!({"message_id": "m_x"})))
        .expect(1)
        .mount(&server)
        .await;
    let sent = client(&server)
        .send_message(PSID, message, MessagingType::Response)
        .await
        .unwrap();
    assert_eq!(sent.message_id.as_deref(), Some("m_x"));
}

#[tokio::test]
async fn not_thread_owner_is_permanent() {
    let server = answering_on(
        "POST",
        "messages",
        graph_error(
            400,
            10,
            Some(2018300),
            "(#10) Message failed to send because another app is controlling this thread now.",
        ),
    )
    .await;
    let err = client(&server)
        .send_text(PSID, "hi", &[], MessagingType::Response)
        .await
        .unwrap_err();
    assert!(err.is_not_thread_owner());
    assert!(!err.is_outside_window());
    assert!(!err.is_transient());
    // Meta refused it: nothing was applied, so there is nothing to verify.
    assert!(!err.outcome_unknown());
    assert!(!err.is_rate_limited());
    assert_eq!(err.retry_after(), None);
    assert_eq!(err.code(), Some(10));
    assert_eq!(err.subcode(), Some(2018300));
    match &err {
        GraphError::Api {
            status,
            kind,
            fbtrace_id,
            ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(kind, "OAuthException");
            assert_eq!(fbtrace_id.as_deref(), Some("AQ2lKD7UqnvqCrMs16fUNLk"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let shown = err.to_string();
    assert!(shown.starts_with("Graph API error (#10/2018300) OAuthException: "));
    assert!(shown.ends_with("(fbtrace_id AQ2lKD7UqnvqCrMs16fUNLk; HTTP 400)"));
    assert_no_secret(&err);
}

#[tokio::test]
async fn outside_window_is_recognised() {
    let server = answering(
        "POST",
        graph_error(
            400,
            10,
            Some(2018278),
            "(#10) This message is sent outside of allowed window.",
        ),
    )
    .await;
    let err = client(&server)
        .send_text(PSID, "hi", &[], MessagingType::Response)
        .await
        .unwrap_err();
    assert!(err.is_outside_window());
    assert!(!err.is_not_thread_owner());
    assert!(!err.is_transient());
}

#[tokio::test]
async fn rate_limit_613_is_transient_and_190_is_permanent() {
    let server = answering_on(
        "POST",
        "take_thread_control",
        graph_error(
            400,
            613,
            None,
            "Calls to this api have exceeded the rate limit.",
        ),
    )
    .await;
    edge("POST", "pass_thread_control")
        .respond_with(graph_error(
            400,
            190,
            Some(463),
            "Error validating access token: Session has expired.",
        ))
        .mount(&server)
        .await;
    let c = client(&server);

    let err = c.take_thread_control(PSID, "m").await.unwrap_err();
    assert_eq!(err.code(), Some(613));
    assert!(err.is_transient());
    assert!(err.is_rate_limited());
    assert!(!err.outcome_unknown());
    assert_no_secret(&err);

    let err = c.pass_thread_control(PSID, INBOX, "m").await.unwrap_err();
    assert_eq!(err.code(), Some(190));
    assert!(!err.is_transient());
    assert!(!err.is_rate_limited());
    assert_no_secret(&err);
}

#[tokio::test]
async fn server_errors_without_a_graph_body_are_transient_http_errors() {
    let server = answering(
        "GET",
        ResponseTemplate::new(500).set_body_string("x".repeat(1000)),
    )
    .await;
    let err = client(&server).thread_owner(PSID).await.unwrap_err();
    match &err {
        GraphError::Http { status, body, .. } => {
            assert_eq!(*status, 500);
            assert!(body.chars().count() <= 301);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.is_transient());
    assert_eq!(err.code(), None);
}

#[tokio::test]
async fn a_graph_error_on_http_500_is_transient() {
    let server = answering(
        "POST",
        graph_error(500, 2, None, "Service temporarily unavailable"),
    )
    .await;
    let err = client(&server)
        .release_thread_control(PSID, "m")
        .await
        .unwrap_err();
    assert!(err.is_transient());
    assert_eq!(err.code(), Some(2));
}

#[tokio::test]
async fn a_404_without_graph_body_is_permanent() {
    let server = MockServer::start().await;
    let err = client(&server)
        .subscribed_apps()
        .await
        .expect_err("no mock mounted -> 404");
    assert!(matches!(err, GraphError::Http { status: 404, .. }));
    assert!(!err.is_transient());
}

#[tokio::test]
async fn timeout_maps_to_timeout() {
    let server = answering(
        "POST",
        ok(json!({"success": true})).set_delay(Duration::from_millis(1500)),
    )
    .await;
    let mut s = settings(&server, Some(PAGE));
    s.timeout = Duration::from_millis(100);
    let c = client_with(s);
    let err = c.take_thread_control(PSID, "m").await.unwrap_err();
    assert!(matches!(err, GraphError::Timeout), "{err:?}");
    assert!(err.is_transient());
    // The take may have reached Meta and been applied.
    assert!(err.outcome_unknown());
    assert_eq!(err.retry_after(), None);
    assert_no_secret(&err);
}

#[tokio::test]
async fn connection_refused_is_a_transient_connect_error_that_never_reached_meta() {
    // Bind then drop a listener so the port is (very likely) closed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let c = client_with(settings_at(format!("http://127.0.0.1:{port}"), Some(PAGE)));
    let err = c.take_thread_control(PSID, "m").await.unwrap_err();
    assert!(matches!(err, GraphError::Connect(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(!err.outcome_unknown());
    assert!(!err.is_rate_limited());
    let shown = format!("{err} / {err:?}");
    assert!(!shown.contains("access_token"), "{shown}");
    assert!(!shown.contains("127.0.0.1"), "{shown}");
    assert_no_secret(&err);
}

#[tokio::test]
async fn a_graph_error_echoing_the_token_is_redacted() {
    let server = answering(
        "GET",
        graph_error(400, 190, None, &format!("Malformed access token {TOKEN}")),
    )
    .await;
    let err = client(&server).me("id,name").await.unwrap_err();
    assert_eq!(err.code(), Some(190));
    assert_no_secret(&err);
}

#[tokio::test]
async fn doctor_calls() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v25.0/me"))
        .and(query_param("fields", "id,name,messaging_feature_status"))
        .and(query_param("access_token", TOKEN))
        .and(query_param("appsecret_proof", proof()))
        .respond_with(ok(json!({
            "id": PAGE, "name": "Acme",
            "messaging_feature_status": {"hop_v2": false, "msgr_multi_app": true, "ig_multi_app": false}
        })))
        .expect(1)
        .mount(&server)
        .await;
    signed("GET", "subscribed_apps")
        .respond_with(ok(json!({
            "data": [{"id": BOT, "name": "Bot", "subscribed_fields": ["messages", "standby"]}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    edge("POST", "subscribed_apps")
        .and(query_param(
            "subscribed_fields",
            "messages,messaging_postbacks,messaging_handovers,standby,message_echoes",
        ))
        .and(query_param("access_token", TOKEN))
        .and(query_param("appsecret_proof", proof()))
        .respond_with(ok(json!({"success": "true"})))
        .expect(1)
        .mount(&server)
        .await;
    let app_token = format!("{BOT}|{APP_SECRET}");
    Mock::given(method("GET"))
        .and(path("/v25.0/debug_token"))
        .and(query_param("input_token", TOKEN))
        .and(query_param("access_token", app_token.as_str()))
        .and(query_param(
            "appsecret_proof",
            appsecret_proof(APP_SECRET, &app_token),
        ))
        .respond_with(ok(json!({
            "data": {"app_id": BOT, "type": "PAGE", "is_valid": true,
                     "scopes": ["pages_messaging", "pages_manage_metadata"]}
        })))
        .expect(1)
        .mount(&server)
        .await;

    let c = client(&server);
    let me = c.me("id,name,messaging_feature_status").await.unwrap();
    assert_eq!(
        me["messaging_feature_status"]["msgr_multi_app"],
        json!(true)
    );
    let apps = c.subscribed_apps().await.unwrap();
    assert_eq!(apps["data"][0]["id"], json!(BOT));
    c.subscribe_fields(&[
        "messages",
        "messaging_postbacks",
        "messaging_handovers",
        "standby",
        "message_echoes",
    ])
    .await
    .unwrap();
    let debug = c.debug_token(BOT).await.unwrap();
    assert_eq!(debug["data"]["is_valid"], json!(true));
}

#[tokio::test]
async fn debug_token_errors_do_not_show_the_app_secret() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v25.0/debug_token"))
        .respond_with(
            ResponseTemplate::new(400).set_body_string(format!("bad app token {BOT}|{APP_SECRET}")),
        )
        .mount(&server)
        .await;
    let err = client(&server).debug_token(BOT).await.unwrap_err();
    assert!(matches!(err, GraphError::Http { status: 400, .. }));
    assert_no_secret(&err);
}

#[tokio::test]
async fn every_request_has_token_and_proof_and_no_token_elsewhere() {
    let server = answering("POST", success()).await;
    Mock::given(method("GET"))
        .and(query_param_is_missing("nothing"))
        .respond_with(ok(json!({"data": []})))
        .mount(&server)
        .await;
    let c = client(&server);
    c.pass_thread_control(PSID, BOT, "x").await.unwrap();
    c.take_thread_control(PSID, "x").await.unwrap();
    c.thread_owner(PSID).await.unwrap();
    c.subscribe_fields(&["messages"]).await.unwrap();
    let requests: Vec<Request> = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 4);
    for r in requests {
        let pairs: Vec<(String, String)> = r.url.query_pairs().into_owned().collect();
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("access_token").as_deref(), Some(TOKEN));
        assert_eq!(get("appsecret_proof"), Some(proof()));
        assert!(!String::from_utf8_lossy(&r.body).contains(TOKEN));
    }
}

#[tokio::test]
async fn success_false_is_an_error() {
    let server = answering("POST", ok(json!({"success": false}))).await;
    let err = client(&server)
        .take_thread_control(PSID, "m")
        .await
        .unwrap_err();
    assert!(matches!(err, GraphError::Decode(_)));
}

#[tokio::test]
async fn http_429_with_retry_after_is_a_rate_limit() {
    let server = answering_on(
        "POST",
        "take_thread_control",
        ResponseTemplate::new(429)
            .insert_header("Retry-After", "7")
            .set_body_string("Too Many Requests"),
    )
    .await;
    let err = client(&server)
        .take_thread_control(PSID, "m")
        .await
        .unwrap_err();
    assert!(
        matches!(err, GraphError::Http { status: 429, .. }),
        "{err:?}"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert!(err.is_rate_limited());
    assert!(err.is_transient());
    assert!(!err.outcome_unknown());
    assert_eq!(err.to_string(), "Graph API HTTP 429: Too Many Requests");
}

#[tokio::test]
async fn a_graph_rate_limit_body_carries_retry_after() {
    let server = answering_on(
        "POST",
        "messages",
        graph_error(
            400,
            613,
            None,
            "Calls to this api have exceeded the rate limit.",
        )
        .insert_header("Retry-After", "120"),
    )
    .await;
    let err = client(&server)
        .send_text(PSID, "hi", &[], MessagingType::Response)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(613));
    assert!(err.is_rate_limited());
    assert!(err.is_transient());
    assert!(!err.outcome_unknown());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
}

#[tokio::test]
async fn a_garbage_2xx_body_on_pass_is_an_unknown_outcome() {
    let server = MockServer::start().await;
    edge("POST", "pass_thread_control")
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>ok?</html"))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server)
        .pass_thread_control(PSID, INBOX, "m")
        .await
        .unwrap_err();
    assert!(matches!(err, GraphError::Decode(_)), "{err:?}");
    assert!(err.outcome_unknown());
    assert!(!err.is_transient());
    assert!(!err.is_rate_limited());
    assert_no_secret(&err);
}

#[tokio::test]
async fn a_gateway_502_with_html_is_an_unknown_outcome() {
    let server = answering_on(
        "POST",
        "take_thread_control",
        ResponseTemplate::new(502)
            .insert_header("content-type", "text/html")
            .set_body_string("<html><body><h1>502 Bad Gateway</h1></body></html>"),
    )
    .await;
    let err = client(&server)
        .take_thread_control(PSID, "m")
        .await
        .unwrap_err();
    assert!(
        matches!(err, GraphError::Http { status: 502, .. }),
        "{err:?}"
    );
    assert!(err.outcome_unknown());
    assert!(err.is_transient());
    assert!(!err.is_rate_limited());
    assert_eq!(err.retry_after(), None);
}

#[tokio::test]
async fn a_graph_error_on_a_5xx_is_not_an_unknown_outcome() {
    let server = answering(
        "POST",
        graph_error(503, 2, None, "Service temporarily unavailable"),
    )
    .await;
    let err = client(&server)
        .pass_thread_control(PSID, INBOX, "m")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(2));
    assert!(err.is_transient());
    assert!(!err.outcome_unknown());
}

/// A server that accepts connections, reads the request head, then writes `reply` (possibly
/// nothing) and closes the connection. Plain threads, so it needs no extra tokio features.
fn broken_server(reply: &'static [u8]) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut socket) = stream else { break };
            std::thread::spawn(move || {
                // Read the whole request (head + content-length body), so closing the socket
                // sends a FIN rather than a reset.
                let mut buf = [0u8; 16 * 1024];
                let mut seen = Vec::new();
                loop {
                    if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if seen.len() >= end + 4 + length {
                            break;
                        }
                    }
                    match socket.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket.write_all(reply);
                let _ = socket.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_connection_lost_after_it_was_made_is_an_unknown_outcome() {
    for reply in [
        // Closed without an answer.
        &b""[..],
        // Headers promise a body that never comes.
        &b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"succ"
            [..],
    ] {
        let c = client_with(settings_at(broken_server(reply), Some(PAGE)));
        let err = c.take_thread_control(PSID, "m").await.unwrap_err();
        assert!(matches!(err, GraphError::Transport(_)), "{err:?}");
        assert!(err.is_transient());
        assert!(err.outcome_unknown());
        let shown = format!("{err} / {err:?}");
        assert!(!shown.contains("access_token"), "{shown}");
        assert_no_secret(&err);
    }
}

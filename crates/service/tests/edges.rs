//! Hardened at the edges (issue 11): every phase of a request is bounded in time and the
//! connections in number; what becomes a path, a key or a row is checked; refusals are clear
//! JSON and logged with their reason; secrets stay out of messages, even short ones.
//!
//! The timing tests set small limits and assert what happens (the status, the JSON, the closed
//! connection), never how long it took.

mod common;

use std::process::Command;
use std::time::Duration;

use common::app::*;
use common::mocks::{accept_posts, graph_ok};
use common::process::{self, Process};
use handover_core::jobs::JobPayload;
use messenger_handover::messenger::signature;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Longest a test waits for the service to answer or close; only a broken service gets here.
const SAFETY: Duration = Duration::from_secs(30);

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.base.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

/// Everything the service sends until it closes the connection (a reset after the answer
/// counts as closed).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("read: {e}"),
            }
        }
    };
    tokio::time::timeout(SAFETY, read)
        .await
        .expect("the service never closed the connection");
    String::from_utf8_lossy(&received).into_owned()
}

/// One response on a connection that stays open: its head and its `Content-Length` body.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let n = tokio::time::timeout(SAFETY, stream.read(&mut buf))
            .await
            .expect("no response")
            .expect("read");
        assert!(n > 0, "closed before the response was complete: {text}");
        received.extend_from_slice(&buf[..n]);
    }
}

/// The status and the JSON body of a raw response.
fn status_and_json(response: &str) -> (u16, Value) {
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, json)
}

fn header_of<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split_once("\r\n\r\n").map_or(response, |(h, _)| h);
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The headers of a POST to `path` that passes every check before the body: the bearer token
/// and content type of `/fulfillment` (a delivery's signature is checked after the body).
fn post_head(path: &str, framing: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {FULFILLMENT_TOKEN}\r\nX-Hub-Signature-256: sha256=00\r\n\
         {framing}\r\n\r\n"
    )
}

async fn metrics(app: &TestApp) -> String {
    app.client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A body that stops part-way, plain (`Content-Length`) or chunked, on either webhook: a JSON
/// 408 that says so, and the connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_a_json_408_and_its_connection_closed() {
    let db = TestDb::new(Db::Sqlite).await;
    let graph = graph_ok().await;
    let app = TestApp::against(
        &db,
        &graph,
        &[
            ("REQUEST_BODY_IDLE_TIMEOUT_MS", "300"),
            ("REQUEST_BODY_TIMEOUT_MS", "300000"),
        ],
    )
    .await;
    for path in ["/messenger", "/fulfillment"] {
        for (framing, part) in [
            ("Content-Length: 500", "{\"object\":"),
            ("Transfer-Encoding: chunked", "a\r\n{\"object\":\r\n"),
        ] {
            let mut stream = connect(&app).await;
            let request = post_head(path, framing) + part;
            stream.write_all(request.as_bytes()).await.unwrap();
            // Nothing more is sent; the service answers and closes.
            let response = read_until_closed(&mut stream).await;
            let (status, body) = status_and_json(&response);
            assert_eq!(status, 408, "{path} {framing}: {response}");
            assert_eq!(
                body["error"], "the body stopped arriving: nothing for 300 ms",
                "{path} {framing}: {response}"
            );
            assert_eq!(
                header_of(&response, "connection"),
                Some("close"),
                "{response}"
            );
        }
    }
    // A request refused before its body is read (401, 405) does not wait for that body either:
    // actix would read the rest of a chunked body for ever to reuse the connection.
    for (request, status) in [
        (
            "POST /fulfillment HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            401,
        ),
        (
            "POST /healthz HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            405,
        ),
    ] {
        let mut stream = connect(&app).await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = read_until_closed(&mut stream).await;
        assert_eq!(status_and_json(&response).0, status, "{response}");
    }
    let text = metrics(&app).await;
    assert!(
        text.contains(r#"handover_webhook_deliveries_total{result="body_timeout"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"handover_fulfillment_requests_total{outcome="body_timeout"} 2"#),
        "{text}"
    );
    assert!(app.thread(PSID).await.is_none());
    app.stop().await;
}

/// A body that keeps trickling in, a byte at a time (never idle for long), is cut off at the
/// total limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_is_cut_off_at_the_total_limit() {
    let db = TestDb::new(Db::Sqlite).await;
    let graph = graph_ok().await;
    let app = TestApp::against(
        &db,
        &graph,
        &[
            ("REQUEST_BODY_IDLE_TIMEOUT_MS", "300000"),
            ("REQUEST_BODY_TIMEOUT_MS", "500"),
        ],
    )
    .await;
    for framing in ["Content-Length: 100000", "Transfer-Encoding: chunked"] {
        let stream = connect(&app).await;
        let (mut reader, mut writer) = stream.into_split();
        let chunked = framing.contains("chunked");
        let head = post_head("/messenger", framing);
        let trickle = tokio::spawn(async move {
            writer.write_all(head.as_bytes()).await?;
            for _ in 0..1000 {
                let piece: &[u8] = if chunked { b"1\r\nx\r\n" } else { b"x" };
                writer.write_all(piece).await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok::<_, std::io::Error>(())
        });
        let mut received = Vec::new();
        let read = async {
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::time::timeout(SAFETY, read)
            .await
            .expect("the service never closed the connection");
        trickle.abort();
        let response = String::from_utf8_lossy(&received).into_owned();
        let (status, body) = status_and_json(&response);
        assert_eq!(status, 408, "{framing}: {response}");
        assert_eq!(
            body["error"], "the body did not arrive within 500 ms",
            "{response}"
        );
    }
    app.stop().await;
}

/// A `Content-Length` over the limit is refused before the body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_body_over_the_limit_is_refused_unread() {
    let db = TestDb::new(Db::Sqlite).await;
    let graph = graph_ok().await;
    let app = TestApp::against(&db, &graph, &[]).await;
    for path in ["/messenger", "/fulfillment"] {
        let mut stream = connect(&app).await;
        let request = post_head(path, "Content-Length: 2000000");
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = read_until_closed(&mut stream).await;
        let (status, body) = status_and_json(&response);
        assert_eq!(status, 413, "{response}");
        assert_eq!(body["error"], "body larger than 1048576 bytes");
    }
    app.stop().await;
}

/// Headers that stop part-way get actix's 408 (no body) and the connection is closed; an idle
/// kept-alive connection is closed after `KEEP_ALIVE_SECS`; a later request whose headers stop
/// part-way has its connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_headers_and_idle_connections_are_closed() {
    let db = TestDb::new(Db::Sqlite).await;
    let graph = graph_ok().await;
    let app = TestApp::against(
        &db,
        &graph,
        &[
            ("REQUEST_HEADER_TIMEOUT_MS", "1000"),
            ("KEEP_ALIVE_SECS", "1"),
        ],
    )
    .await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"POST /messenger HTTP/1.1\r\nHost: test\r\nContent-Ty")
        .await
        .unwrap();
    let response = read_until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");

    // A connection that never sends a byte is a request whose headers never come.
    let mut silent = connect(&app).await;
    let response = read_until_closed(&mut silent).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");

    let mut kept = connect(&app).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let response = read_until_closed(&mut kept).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert!(response.ends_with(r#"{"status":"ok"}"#), "{response:?}");

    let mut second = connect(&app).await;
    second
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut second).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first:?}");
    // The next request's headers stop part-way: the connection is closed too (no response:
    // there is no request to answer).
    second.write_all(b"GET /hea").await.unwrap();
    let response = read_until_closed(&mut second).await;
    assert_eq!(response, "");
    app.stop().await;
}

/// With `MAX_CONNECTIONS=2`, a third connection is not served while two are open (it waits in
/// the listen queue), and is served as soon as one of them closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let db = TestDb::new(Db::Sqlite).await;
    let graph = graph_ok().await;
    let app = TestApp::against(
        &db,
        &graph,
        &[
            ("MAX_CONNECTIONS", "2"),
            ("KEEP_ALIVE_SECS", "300"),
            ("REQUEST_HEADER_TIMEOUT_MS", "300000"),
        ],
    )
    .await;
    let health = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&app).await;
        stream.write_all(health).await.unwrap();
        let response = read_response(&mut stream).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
        open.push(stream);
    }
    // The third connects (the kernel queues it) but is not served.
    let mut third = connect(&app).await;
    third.write_all(health).await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(700), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond the cap: {early:?}");
    // The first two still are.
    open[1].write_all(health).await.unwrap();
    assert!(
        read_response(&mut open[1])
            .await
            .starts_with("HTTP/1.1 200")
    );
    // One closes: the third is served.
    drop(open.remove(0));
    let response = read_response(&mut third).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    drop(open);
    drop(third);
    app.stop().await;
}

/// `/fulfillment` takes JSON only (415 otherwise; `charset=utf-8` is fine), answers other
/// methods with 405 and `Allow`, and every route's refusal is JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fulfillment_takes_json_only_and_other_methods_get_405() {
    let db = TestDb::new(Db::Sqlite).await;
    let graph = graph_ok().await;
    let app = TestApp::against(&db, &graph, &[]).await;
    let body = fixture("dialogflow/plain_intent.json");
    let post = |content_type: Option<&'static str>| {
        let mut req = app
            .client
            .post(format!("{}/fulfillment", app.base))
            .bearer_auth(FULFILLMENT_TOKEN)
            .body(body.clone());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    for refused in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/json; charset=utf-16"),
        Some("application/jsonx"),
    ] {
        let resp = post(refused).await.unwrap();
        assert_eq!(resp.status(), 415, "{refused:?}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(
            err["error"],
            "the body must be JSON, with Content-Type: application/json"
        );
    }
    for accepted in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON; charset=UTF-8",
    ] {
        assert_eq!(
            post(Some(accepted)).await.unwrap().status(),
            200,
            "{accepted}"
        );
    }
    for (method, path, allow) in [
        ("GET", "/fulfillment", "POST"),
        ("PUT", "/fulfillment", "POST"),
        ("DELETE", "/messenger", "GET, POST"),
        ("POST", "/healthz", "GET"),
        ("POST", "/readyz", "GET"),
        ("DELETE", "/metrics", "GET"),
    ] {
        let resp = app
            .client
            .request(method.parse().unwrap(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(
            err["error"],
            format!("method {method} is not allowed on {path}; use {allow}")
        );
    }
    let text = metrics(&app).await;
    assert!(
        text.contains(r#"handover_fulfillment_requests_total{outcome="unsupported_media_type"} 5"#),
        "{text}"
    );
    assert!(
        text.contains(r#"handover_http_request_duration_seconds_count{route="/fulfillment",method="GET",status="405"} 1"#),
        "{text}"
    );
    app.stop().await;
}

/// A handover request whose `field` is replaced by `value`.
fn handover_with(pointer: &str, value: Value) -> String {
    let mut request = fixture_json("dialogflow/handover.json");
    *request
        .pointer_mut(pointer)
        .expect("the fixture has the field") = value;
    request.to_string()
}

/// What becomes a URL path, a key or a row is refused at `/fulfillment` with a JSON 400 that
/// names the field; nothing is stored and Meta is not called.
async fn fulfillment_refuses_malformed_ids_naming_the_field(db: Db) {
    let db = TestDb::new(db).await;
    let graph = MockServer::start().await;
    accept_posts(&graph).await;
    let app = TestApp::against(&db, &graph, &[]).await;
    let sender = "originalDetectIntentRequest.payload.data.sender.id";
    let recipient = "originalDetectIntentRequest.payload.data.recipient.id";
    for (body, field) in [
        (
            handover_with(
                "/originalDetectIntentRequest/payload/data/sender/id",
                json!("../../x?y=1#z"),
            ),
            sender,
        ),
        (
            handover_with(
                "/originalDetectIntentRequest/payload/data/sender/id",
                json!("9".repeat(500_000)),
            ),
            sender,
        ),
        (
            handover_with(
                "/originalDetectIntentRequest/payload/data/recipient/id",
                json!("me/../x"),
            ),
            recipient,
        ),
        (
            handover_with("/session", json!("../../etc/passwd")),
            "session",
        ),
        (
            handover_with(
                "/session",
                json!(format!("projects/p/agent/sessions/{}", "s".repeat(500_000))),
            ),
            "session",
        ),
        (
            handover_with(
                "/queryResult/outputContexts/1/name",
                json!("projects/p/agent/sessions/s/contexts/../../x"),
            ),
            "queryResult.outputContexts[1].name",
        ),
        (
            handover_with(
                "/queryResult/outputContexts/0/parameters/facebook_sender_id",
                json!("x#y"),
            ),
            "queryResult.outputContexts[0].parameters.facebook_sender_id",
        ),
    ] {
        let resp = app.fulfillment(&body).await;
        assert_eq!(resp.status(), 400, "{field}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["field"], field);
        let message = err["error"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("field `{field}`: ")),
            "{message}"
        );
        // The value is not echoed back (it may be huge, or hostile).
        assert!(message.len() < 400, "{}", message.len());
        assert!(!message.contains("../"), "{message}");
    }
    assert!(app.thread(PSID).await.is_none());
    assert!(app.jobs(PSID).await.is_empty());
    // The well-formed request still works.
    app.fulfill("handover.json").await;
    app.wait_state(PSID, handover_core::State::Human).await;
    let text = metrics(&app).await;
    assert!(
        text.contains(r#"handover_fulfillment_requests_total{outcome="bad_request"} 7"#),
        "{text}"
    );
    app.stop().await;
}
both_backends!(fulfillment_refuses_malformed_ids_naming_the_field);

/// A `standby` message event from `sender` with `message`, in a delivery of `events`.
fn standby(events: &[Value]) -> String {
    json!({
        "object": "page",
        "entry": [{"id": PAGE_ID, "time": 1763900030900u64, "standby": events}]
    })
    .to_string()
}

fn message_from(sender: Value, mid: &str, text: &str) -> Value {
    json!({
        "sender": {"id": sender},
        "recipient": {"id": PAGE_ID},
        "timestamp": 1763900030555u64,
        "message": {"mid": mid, "text": text}
    })
}

/// At `/messenger` a delivery with malformed events is still acknowledged (Meta would retry
/// it forever); the bad events are counted by reason and never stored or queued; a text over
/// its cap is stored cut, and counted.
async fn bad_events_are_acknowledged_counted_and_never_stored(db: Db) {
    let db = TestDb::new(db).await;
    let graph = MockServer::start().await;
    accept_posts(&graph).await;
    let app = TestApp::against(&db, &graph, &[]).await;
    let long_mid = format!("m_{}", "a".repeat(600));
    let long_text = "é".repeat(90_000);
    let no_sender = json!({
        "recipient": {"id": PAGE_ID},
        "timestamp": 1763900030555u64,
        "message": {"mid": "m_nosender", "text": "hi"}
    });
    let body = standby(&[
        message_from(json!("../../x?y=1#z"), "m_badpsid", "back to bot"),
        message_from(json!(PSID_2), &long_mid, "hi"),
        no_sender,
        message_from(json!(PSID), "m_long_text", &long_text),
    ]);
    let resp = app.deliver(&body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["stored"], 1, "{answer}");

    assert!(app.thread("../../x?y=1#z").await.is_none());
    assert!(app.thread(PSID_2).await.is_none());
    assert!(app.jobs(PSID_2).await.is_empty());
    // The long text is stored, cut to 2000 characters.
    let jobs = app.jobs(PSID).await;
    let event_id = jobs
        .iter()
        .find_map(|j| match j.payload {
            Some(JobPayload::ProcessEvent { event_id }) => Some(event_id),
            _ => None,
        })
        .expect("a process_event job");
    let event = app.store().event(event_id).await.unwrap().unwrap();
    match event.kind {
        handover_core::event::EventKind::Message { text, .. } => {
            assert_eq!(text.unwrap().chars().count(), 2000)
        }
        other => panic!("unexpected {other:?}"),
    }
    let text = metrics(&app).await;
    for line in [
        r#"handover_webhook_events_refused_total{reason="bad_user_id"} 1"#,
        r#"handover_webhook_events_refused_total{reason="mid_too_long"} 1"#,
        r#"handover_webhook_events_refused_total{reason="no_user"} 1"#,
        r#"handover_webhook_fields_truncated_total{field="text"} 1"#,
        r#"handover_webhook_deliveries_total{result="stored"} 1"#,
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    app.stop().await;
}
both_backends!(bad_events_are_acknowledged_counted_and_never_stored);

/// Meta's answer to a call, quoting the call's access token back (a misbehaving proxy would):
/// the token must not reach the error, the rest of the answer must stay readable.
struct EchoToken;

impl Respond for EchoToken {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let token = query_param(request, "access_token").unwrap_or_default();
        ResponseTemplate::new(400).set_body_string(format!(
            "upstream refused access_token={token} for this request"
        ))
    }
}

/// Short-ish but valid secrets (8 characters of common letters): a failing pass leaves an
/// error that reads as written, with the echoed token alone replaced; the logs carry the
/// reason of each refused request and no secret; a 7-character secret stops `serve` with a
/// line naming the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_secrets_stay_out_of_errors_and_logs_which_stay_readable() {
    const BIN: &str = env!("CARGO_BIN_EXE_messenger-handover");
    const APP_SECRET_8: &str = "etaoinsr";
    const PAGE_TOKEN_8: &str = "srniotae";
    const VERIFY_TOKEN_8: &str = "aoeuidht";
    const FULFILLMENT_TOKEN_16: &str = "tnseaoirtnseaoir";
    let secrets = [
        APP_SECRET_8,
        PAGE_TOKEN_8,
        VERIFY_TOKEN_8,
        FULFILLMENT_TOKEN_16,
    ];

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("h.db").display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let graph = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(EchoToken)
        .mount(&graph)
        .await;
    let graph_uri = graph.uri();
    let env = [
        ("HOST", "127.0.0.1"),
        ("PORT", port.as_str()),
        ("DATABASE_URL", url.as_str()),
        ("FB_APP_ID", APP_ID),
        ("FB_PAGE_ID", PAGE_ID),
        ("FB_APP_SECRET", APP_SECRET_8),
        ("FB_PAGE_ACCESS_TOKEN", PAGE_TOKEN_8),
        ("FB_VERIFY_TOKEN", VERIFY_TOKEN_8),
        ("FULFILLMENT_TOKEN", FULFILLMENT_TOKEN_16),
        ("GRAPH_API_BASE", graph_uri.as_str()),
        ("HANDOVER_PASS_DELAY_MS", "0"),
        ("JOB_RETRY_BASE_MS", "10"),
        ("RUST_LOG", "info"),
    ];

    // Seven characters: refused, naming the variable, without showing the value.
    let out = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .envs(env)
        .env("FB_APP_SECRET", "etaoins")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("FB_APP_SECRET: shorter than 8 characters")),
        "{stderr}"
    );
    assert!(!stderr.contains("etaoins"), "{stderr}");

    let service = Process::spawn(&["serve"], &process::env(&env));
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_for("the service to come up", || {
        let health = client.get(format!("{base}/healthz")).send();
        async move { health.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
    // A handover: its pass fails with Meta's (echoing) answer, and so does the message that
    // tells the user.
    let resp = client
        .post(format!("{base}/fulfillment"))
        .bearer_auth(FULFILLMENT_TOKEN_16)
        .header("content-type", "application/json")
        .body(fixture("dialogflow/handover.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Refused requests, each logged with its reason.
    let body = fixture("messenger/standby_back_to_bot.json");
    let resp = client
        .post(format!("{base}/messenger"))
        .header(
            "x-hub-signature-256",
            signature::sign("not-the-secret", body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = client
        .post(format!("{base}/fulfillment"))
        .bearer_auth(FULFILLMENT_TOKEN_16)
        .header("content-type", "application/json")
        .body(handover_with("/session", json!("../../etc/passwd")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // A bad event in a good delivery: acknowledged, logged without its content.
    let bad = standby(&[message_from(
        json!("12ab-not-a-psid"),
        "m_x",
        "secret words",
    )]);
    let resp = client
        .post(format!("{base}/messenger"))
        .header(
            "x-hub-signature-256",
            signature::sign(APP_SECRET_8, bad.as_bytes()),
        )
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let verify = client
        .get(format!(
            "{base}/messenger?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN_8}&hub.challenge=7"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(verify.text().await.unwrap(), "7");
    // The pass fails, then the message telling the user so.
    wait_for("the failed handover's message", || {
        let graph = &graph;
        async move {
            let calls = requests_to(graph, "/messages").await;
            (!calls.is_empty()).then_some(())
        }
    })
    .await;
    let logs = service.stop().await;

    for secret in secrets {
        assert!(!logs.contains(secret), "{secret:?} in the logs:\n{logs}");
    }
    let expected = "Graph API HTTP 400: upstream refused access_token=[redacted] for this request";
    assert!(logs.contains(expected), "{logs}");
    // `[redacted]` stands for the echoed token and nothing else: the rest reads as written.
    assert_eq!(
        logs.matches("[redacted]").count(),
        logs.matches("access_token=[redacted] for this request")
            .count(),
        "{logs}"
    );
    for reason in [
        r#""reason":"X-Hub-Signature-256 does not match the body""#,
        r#""reason":"field `session`: not a Dialogflow ES session name: it does not start with `projects/<project>/`"#,
        r#""message":"webhook event not stored""#,
        r#""reason":"bad_user_id""#,
    ] {
        assert!(logs.contains(reason), "{reason} in\n{logs}");
    }
    assert!(!logs.contains("12ab-not-a-psid"), "{logs}");
    assert!(!logs.contains("secret words"), "{logs}");

    // The job keeps the same readable error.
    let store = messenger_handover::store::Store::connect(&url)
        .await
        .unwrap();
    let jobs = store.jobs_for(PAGE_ID, PSID).await.unwrap();
    let pass = jobs.iter().find(|j| j.kind == "pass").expect("a pass job");
    assert_eq!(pass.last_error.as_deref(), Some(expected), "{jobs:?}");
    store.close().await;
}

//! Bad input (issue 11): a catalogue of malformed requests against the real binary, each with
//! its documented status (README, "Limits" and "What is checked in each request"), and the
//! number of webhook events it may store; at the end the process is still up and never
//! panicked. What `tests/edges.rs` covers in depth (slow bodies, id validation field by field)
//! is only sampled here, through the binary.

mod common;

use common::app::fixture_json;
use common::db::{Db, TestDb, with_conn};
use common::storm::Binary;
use handover_emulator::{Emulator, EmulatorConfig};
use messenger_handover::messenger::signature::sign;
use serde_json::{Value, json};

struct Case {
    name: &'static str,
    route: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    /// `Some(secret)`: signed with it; `None`: no signature.
    signature: Signature,
    status: u16,
    /// Webhook events this case may add to the store.
    stored: i64,
}

enum Signature {
    Right,
    None,
    Of(Vec<u8>),
}

fn delivery(page: &str, events: Value) -> Vec<u8> {
    json!({ "object": "page", "entry": [{ "id": page, "time": 1, "messaging": events }] })
        .to_string()
        .into_bytes()
}

fn message(page: &str, sender: Value, mid: &str, text: Value) -> Value {
    json!({
        "sender": { "id": sender }, "recipient": { "id": page },
        "timestamp": 1_900_000_000_000i64,
        "message": { "mid": mid, "text": text },
    })
}

async fn events(url: &str) -> i64 {
    with_conn(url, |c| {
        c.scalar("SELECT COUNT(*) FROM events", &[])
            .map(|n| n.unwrap_or(0))
    })
    .await
    .unwrap()
}

fn catalogue(page: &str) -> Vec<Case> {
    let psid = "7011000000000001";
    let ok = |name, body, stored| Case {
        name,
        route: "/messenger",
        content_type: "application/json",
        body,
        signature: Signature::Right,
        status: 200,
        stored,
    };
    let refused = |name, body, status| Case {
        name,
        route: "/messenger",
        content_type: "application/json",
        body,
        signature: Signature::Right,
        status,
        stored: 0,
    };
    let good = delivery(
        page,
        json!([message(page, json!(psid), "m.good", json!("hi"))]),
    );
    let mut deep = "[".repeat(100_000).into_bytes();
    deep.extend("]".repeat(100_000).into_bytes());
    let mut over = br#"{"object":"page","entry":[],"pad":""#.to_vec();
    over.extend(std::iter::repeat_n(b'x', 1_100_000));
    over.extend(br#""}"#);
    let mut bad_utf8 = br#"{"object":"page","entry":[{"id":""#.to_vec();
    bad_utf8.extend([0xff, 0xfe]);
    bad_utf8.extend(br#"","messaging":[]}]}"#);
    let mut handover = fixture_json("dialogflow/handover.json");
    handover["session"] = json!("../../etc/passwd");
    let mut fulfillment_ok = fixture_json("dialogflow/handover.json");
    fulfillment_ok["session"] = json!("projects/p/agent/sessions/s1");
    vec![
        ok("a good delivery", good.clone(), 1),
        ok("the same delivery again (duplicate)", good.clone(), 0),
        Case {
            name: "no signature",
            signature: Signature::None,
            status: 401,
            ..refused("", good.clone(), 0)
        },
        Case {
            name: "a stale signature (of another body)",
            signature: Signature::Of(b"{\"object\":\"page\",\"entry\":[]}".to_vec()),
            status: 403,
            ..refused(
                "",
                delivery(
                    page,
                    json!([message(page, json!(psid), "m.stale", json!("x"))]),
                ),
                0,
            )
        },
        refused(
            "truncated JSON",
            br#"{"object":"page","entry":[{"id":"1"#.to_vec(),
            400,
        ),
        refused("100k-deep JSON", deep, 400),
        refused("a body over the limit", over, 413),
        refused("invalid UTF-8", bad_utf8, 400),
        refused(
            "not a Page delivery",
            br#"{"object":"user","entry":[]}"#.to_vec(),
            404,
        ),
        ok(
            "an empty entry",
            br#"{"object":"page","entry":[]}"#.to_vec(),
            0,
        ),
        ok("no entry", br#"{"object":"page"}"#.to_vec(), 0),
        ok(
            "a number for the PSID",
            delivery(
                page,
                json!([message(
                    page,
                    json!(7011000000000002u64),
                    "m.num",
                    json!("hi")
                )]),
            ),
            1,
        ),
        ok(
            "a number for the text",
            delivery(
                page,
                json!([message(
                    page,
                    json!("7011000000000003"),
                    "m.textnum",
                    json!(42)
                )]),
            ),
            1,
        ),
        ok(
            "a string for the timestamp",
            delivery(
                page,
                json!([{
                    "sender": { "id": "7011000000000004" }, "recipient": { "id": page },
                    "timestamp": "1900000000000", "message": { "mid": "m.ts", "text": "hi" },
                }]),
            ),
            1,
        ),
        ok(
            "an unknown event kind",
            delivery(
                page,
                json!([{
                    "sender": { "id": "7011000000000005" }, "recipient": { "id": page },
                    "timestamp": 1_900_000_000_000i64, "brand_new_kind": { "x": 1 },
                }]),
            ),
            0,
        ),
        ok(
            "a huge text (stored cut)",
            delivery(
                page,
                json!([message(
                    page,
                    json!("7011000000000006"),
                    "m.huge",
                    json!("y".repeat(900_000))
                )]),
            ),
            1,
        ),
        ok(
            "a PSID ../../x?y=1#z",
            delivery(
                page,
                json!([message(page, json!("../../x?y=1#z"), "m.path", json!("hi"))]),
            ),
            0,
        ),
        ok(
            "no sender",
            delivery(
                page,
                json!([{
                    "recipient": { "id": page }, "timestamp": 1_900_000_000_000i64,
                    "message": { "mid": "m.nosender", "text": "hi" },
                }]),
            ),
            0,
        ),
        Case {
            name: "fulfillment: a wrong content type",
            route: "/fulfillment",
            content_type: "text/plain",
            ..refused("", fulfillment_ok.to_string().into_bytes(), 415)
        },
        Case {
            name: "fulfillment: truncated JSON",
            route: "/fulfillment",
            ..refused("", b"{\"session\":".to_vec(), 400)
        },
        Case {
            name: "fulfillment: a session ../../etc/passwd",
            route: "/fulfillment",
            ..refused("", handover.to_string().into_bytes(), 400)
        },
    ]
}

async fn bad_input_catalogue(db: Db) {
    let test_db = TestDb::new(db).await;
    let emulator = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let mut binary = Binary::start(&emulator, &test_db.url, &[]).await;
    let cfg = emulator.config();
    let token = binary.token.clone();
    let client = reqwest::Client::new();
    let mut wrong = Vec::new();
    for case in catalogue(&cfg.page_id) {
        let before = events(&test_db.url).await;
        let mut req = client
            .post(format!("{}{}", binary.base(), case.route))
            .header("content-type", case.content_type);
        if case.route == "/fulfillment" {
            req = req.bearer_auth(&token);
        }
        match &case.signature {
            Signature::Right => {
                req = req.header(
                    "x-hub-signature-256",
                    sign(&cfg.companion_app_secret, &case.body),
                )
            }
            Signature::Of(other) => {
                req = req.header(
                    "x-hub-signature-256",
                    sign(&cfg.companion_app_secret, other),
                )
            }
            Signature::None => {}
        }
        let (status, body) = match req.body(case.body.clone()).send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        };
        let stored = events(&test_db.url).await - before;
        let line = format!(
            "{:<45} → {status} (expected {}), stored {stored} (expected {}) {}",
            case.name,
            case.status,
            case.stored,
            body.chars().take(100).collect::<String>()
        );
        println!("{line}");
        if status != case.status || stored != case.stored {
            wrong.push(line);
        }
    }
    let health = client
        .get(format!("{}/healthz", binary.base()))
        .send()
        .await
        .map(|r| r.status().as_u16());
    let logs = binary.logs();
    binary.stop().await;
    emulator.stop().await;
    test_db.close().await;
    assert!(!logs.contains("panicked"), "the service panicked:\n{logs}");
    assert_eq!(
        health.ok(),
        Some(200),
        "the service is not healthy after the catalogue"
    );
    assert!(
        wrong.is_empty(),
        "cases with the wrong answer:\n{}",
        wrong.join("\n")
    );
}
both_backends!(bad_input_catalogue);

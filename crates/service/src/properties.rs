//! Properties of the parsers that read what arrives from outside (proptest): the webhook
//! signature, the Messenger delivery and the Dialogflow fulfillment request. Random JSON is
//! built from the fields these parsers look at, so most cases reach deep into them; every case
//! is also run through the fuzz targets' checks (`crate::fuzzing`).
//!
//! `PROPTEST_CASES=5000 cargo test -p messenger-handover --lib properties` runs more.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::dialogflow::webhook::WebhookRequest;
use crate::fuzzing;
use crate::limits::MAX_TEXT_CHARS;
use crate::messenger::signature::{SignatureError, sign, verify};
use crate::messenger::webhook::parse_delivery;
use handover_core::event::{Channel, EventKind};

// ---------------------------------------------------------------------------------------------
// The signature
// ---------------------------------------------------------------------------------------------

fn flip(bytes: &mut [u8], bit: usize) {
    let i = bit / 8 % bytes.len();
    bytes[i] ^= 1 << (bit % 8);
}

proptest! {
    #[test]
    fn a_body_signed_with_the_secret_verifies(secret in ".{0,40}", body in any::<Vec<u8>>()) {
        prop_assert_eq!(verify(&secret, &body, Some(&sign(&secret, &body))), Ok(()));
    }

    #[test]
    fn any_one_bit_changed_in_the_body_is_refused(
        secret in ".{1,40}",
        body in proptest::collection::vec(any::<u8>(), 1..2000),
        bit in any::<usize>(),
    ) {
        let header = sign(&secret, &body);
        let mut changed = body.clone();
        flip(&mut changed, bit);
        prop_assert_eq!(verify(&secret, &changed, Some(&header)), Err(SignatureError::Mismatch));
    }

    /// Every bit of the MAC counts.
    #[test]
    fn any_one_bit_changed_in_the_signature_is_refused(
        secret in ".{1,40}",
        body in any::<Vec<u8>>(),
        bit in 0usize..256,
    ) {
        let header = sign(&secret, &body);
        let mut mac = hex::decode(header.strip_prefix("sha256=").unwrap()).unwrap();
        flip(&mut mac, bit);
        let changed = format!("sha256={}", hex::encode(mac));
        prop_assert_eq!(verify(&secret, &body, Some(&changed)), Err(SignatureError::Mismatch));
    }

    /// A bit changed anywhere in the header's text is refused too, except one that only turns
    /// a hex letter's case (hex is read either case: the same signature).
    #[test]
    fn any_one_bit_changed_in_the_header_text_is_refused(
        body in any::<Vec<u8>>(),
        bit in 0usize..(71 * 7),
    ) {
        let header = sign("s3cret-s3cret", &body).into_bytes();
        let (i, b) = (bit / 7, bit % 7); // ASCII stays ASCII (the header is text)
        let mut changed = header.clone();
        changed[i] ^= 1 << b;
        let text = String::from_utf8(changed).unwrap();
        let case_only = text.eq_ignore_ascii_case(std::str::from_utf8(&header).unwrap())
            && i >= "sha256=".len();
        let result = verify("s3cret-s3cret", &body, Some(&text));
        if case_only {
            prop_assert_eq!(result, Ok(()));
        } else {
            prop_assert!(result.is_err(), "{text:?} verified");
        }
    }

    /// Any header text at all: an answer, never a panic, and only the right MAC verifies.
    #[test]
    fn any_header_text_gets_an_answer(header in any::<String>(), body in any::<Vec<u8>>()) {
        let result = verify("s3cret-s3cret", &body, Some(&header));
        if result.is_ok() {
            prop_assert_eq!(header.trim().to_ascii_lowercase(), sign("s3cret-s3cret", &body));
        }
        let prefixed = format!("sha256={header}");
        let _ = verify("s3cret-s3cret", &body, Some(&prefixed));
    }
}

// ---------------------------------------------------------------------------------------------
// Random JSON from the fields the parsers read
// ---------------------------------------------------------------------------------------------

const KEYS: &[&str] = &[
    "object",
    "entry",
    "id",
    "time",
    "messaging",
    "standby",
    "sender",
    "recipient",
    "timestamp",
    "message",
    "mid",
    "text",
    "is_echo",
    "app_id",
    "metadata",
    "quick_reply",
    "payload",
    "postback",
    "title",
    "pass_thread_control",
    "take_thread_control",
    "request_thread_control",
    "new_owner_app_id",
    "previous_owner_app_id",
    "requested_owner_app_id",
    "read",
    "delivery",
    "session",
    "queryResult",
    "action",
    "outputContexts",
    "name",
    "lifespanCount",
    "parameters",
    "facebook_sender_id",
    "originalDetectIntentRequest",
    "data",
    "fulfillmentText",
    "fulfillmentMessages",
    "source",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[0-9]{1,22}".prop_map(Value::String),
        Just(json!("page")),
        Just(json!("1534862223272449")),
        Just(json!("projects/p/agent/sessions/s")),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..6).prop_map(
                |pairs| Value::Object(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>()
                )
            ),
        ]
    })
}

fn psid() -> impl Strategy<Value = String> {
    "[1-9][0-9]{14,16}"
}

// ---------------------------------------------------------------------------------------------
// The Messenger delivery
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn any_bytes_get_a_delivery_or_an_error(body in any::<Vec<u8>>()) {
        let _ = parse_delivery(&body);
        fuzzing::messenger_delivery(&body);
    }

    /// Random trees under a Page delivery: what is stored is well formed (`fuzzing` checks).
    #[test]
    fn any_json_under_a_page_delivery_keeps_the_parsers_promises(entry in value()) {
        for root in [json!({"object": "page", "entry": [entry.clone()]}), json!({"object": "page", "entry": entry.clone()}), entry] {
            fuzzing::messenger_delivery(&serde_json::to_vec(&root).unwrap());
        }
    }

    /// Users' messages come out as they went in: one event each, in order, its text cut to
    /// the cap.
    #[test]
    fn messages_are_read_as_sent(
        page in psid(),
        messages in proptest::collection::vec((psid(), ".{0,30}", any::<bool>(), 1u32..3_000), 1..8),
        long in any::<bool>(),
    ) {
        let events: Vec<Value> = messages
            .iter()
            .enumerate()
            .map(|(i, (user, text, _, ts))| {
                let text = if long { text.repeat(100) } else { text.clone() };
                json!({
                    "sender": {"id": user},
                    "recipient": {"id": page},
                    "timestamp": 1_763_900_000_000i64 + i64::from(*ts),
                    "message": {"mid": format!("m_{i}"), "text": text},
                })
            })
            .collect();
        let (standby, messaging): (Vec<_>, Vec<_>) = events
            .into_iter()
            .zip(&messages)
            .partition(|(_, (_, _, on_standby, _))| *on_standby);
        let strip = |v: Vec<(Value, _)>| v.into_iter().map(|(e, _)| e).collect::<Vec<_>>();
        let body = json!({
            "object": "page",
            "entry": [{"id": page, "time": 1, "messaging": strip(messaging), "standby": strip(standby)}],
        });
        let delivery = parse_delivery(&serde_json::to_vec(&body).unwrap()).unwrap();
        prop_assert!(delivery.refused.is_empty(), "{:?}", delivery.refused);
        prop_assert_eq!(delivery.events.len(), messages.len());
        for e in &delivery.events {
            let i: usize = match &e.kind {
                EventKind::Message { mid, .. } => mid[2..].parse().unwrap(),
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            };
            let (user, text, on_standby, ts) = &messages[i];
            prop_assert_eq!(&e.user_id, user);
            prop_assert_eq!(&e.account_id, &page);
            prop_assert_eq!(e.channel == Channel::Standby, *on_standby);
            prop_assert_eq!(e.timestamp_ms, 1_763_900_000_000i64 + i64::from(*ts));
            let full = if long { text.repeat(100) } else { text.clone() };
            let expected: String = full.chars().take(MAX_TEXT_CHARS).collect();
            if let EventKind::Message { text: Some(got), .. } = &e.kind {
                prop_assert_eq!(got, &expected);
            } else {
                prop_assert!(expected.is_empty(), "text lost: {:?}", e.kind);
            }
        }
    }

    /// A user id that is not a Meta id is refused, never stored.
    #[test]
    fn a_user_id_that_is_not_a_meta_id_is_refused(user in "[0-9]{0,3}[a-zA-Z.,+-][ -~]{0,10}|[0-9]{21,30}") {
        let body = json!({
            "object": "page",
            "entry": [{"id": "958823367603818", "messaging": [{
                "sender": {"id": user},
                "recipient": {"id": "958823367603818"},
                "timestamp": 1_763_900_000_000i64,
                "message": {"mid": "m_1", "text": "hello"},
            }]}],
        });
        let delivery = parse_delivery(&serde_json::to_vec(&body).unwrap()).unwrap();
        prop_assert!(delivery.events.is_empty());
        prop_assert_eq!(delivery.refused.len(), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// The fulfillment request
// ---------------------------------------------------------------------------------------------

fn request(session: &str, sender: &Value, timestamp: &Value) -> Value {
    json!({
        "session": session,
        "queryResult": {
            "action": "input.handover",
            "outputContexts": [
                {"name": format!("{session}/contexts/generic"), "parameters": {"facebook_sender_id": sender}},
                {"name": format!("{session}/contexts/order-followup"), "lifespanCount": 3},
            ],
        },
        "originalDetectIntentRequest": {"payload": {"data": {
            "sender": {"id": sender},
            "recipient": {"id": "958823367603818"},
            "message": {"text": "hi"},
            "timestamp": timestamp,
        }}},
    })
}

proptest! {
    #[test]
    fn any_bytes_get_a_request_or_an_error(body in any::<Vec<u8>>()) {
        let _ = WebhookRequest::parse(&body);
        fuzzing::fulfillment_request(&body);
    }

    #[test]
    fn any_json_under_a_request_keeps_the_parsers_promises(
        query_result in value(),
        original in value(),
        session in prop_oneof![Just(json!("projects/p/agent/sessions/s")), leaf()],
    ) {
        let body = json!({
            "session": session,
            "queryResult": query_result,
            "originalDetectIntentRequest": original,
        });
        fuzzing::fulfillment_request(&serde_json::to_vec(&body).unwrap());
    }

    /// A well-formed request is read with its user, and any timestamp at all gets an answer.
    #[test]
    fn a_well_formed_request_is_read_with_its_user(
        project in "[a-z][a-z0-9-]{5,28}[a-z0-9]",
        location in proptest::option::of("[a-z]{2,8}-[a-z]{2,8}[0-9]"),
        session_id in "[A-Za-z0-9_-]{1,36}",
        user in psid(),
        timestamp in prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(|t| Value::String(t.to_string())),
            any::<f64>().prop_map(|f| json!(f)),
        ],
    ) {
        let session = match &location {
            Some(l) => format!("projects/{project}/locations/{l}/agent/sessions/{session_id}"),
            None => format!("projects/{project}/agent/sessions/{session_id}"),
        };
        let body = request(&session, &json!(user), &timestamp);
        let parsed = WebhookRequest::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        prop_assert_eq!(parsed.psid(), Some(user));
        prop_assert_eq!(parsed.page_id(), Some("958823367603818".to_owned()));
        let _ = parsed.messenger_timestamp();
        fuzzing::fulfillment_request(&serde_json::to_vec(&body).unwrap());
    }

    /// A sender id that is not a Meta id is refused, naming the field.
    #[test]
    fn a_sender_that_is_not_a_meta_id_is_refused(user in "[0-9]{0,3}[a-zA-Z.,+-][ -~]{0,10}|[0-9]{21,30}") {
        let body = request("projects/p/agent/sessions/s", &json!(user), &json!(1));
        let e = WebhookRequest::parse(&serde_json::to_vec(&body).unwrap()).unwrap_err();
        prop_assert!(e.field.is_some(), "{e:?}");
    }
}

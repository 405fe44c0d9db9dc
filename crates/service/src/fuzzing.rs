//! What the `cargo fuzz` targets in `fuzz/` run, one function per endpoint's parsing: the
//! same functions the routes call, on arbitrary bytes, with the promises they make checked
//! (a broken promise panics, which is what the fuzzer looks for). Built only with the
//! `fuzzing` feature and in this crate's own tests, which replay every input the fuzzer ever
//! found (`fixtures/fuzz/<target>/`).

use handover_core::contexts::{
    ContextOnReturn, HANDOVER_CONTEXT, context_id, on_return, restorable,
};
use serde_json::Value;

use crate::admin::query;
use crate::config::{RawSettings, Settings};
use crate::dialogflow::webhook::{WebhookRequest, context_name};
use crate::limits::{MAX_LABEL_CHARS, MAX_MID_CHARS, MAX_TEXT_CHARS, is_meta_id};
use crate::messenger::signature;
use crate::messenger::webhook::parse_delivery;
use handover_core::event::EventKind;

const APP_SECRET: &str = "fuzzing-app-secret";

/// Splits at the first newline: the first part a header or query, the rest a body.
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

/// `POST /messenger`: the signature check on the raw bytes, then the parse. Input: the body.
/// The headers tried: the body's first line as it is (any text), the body's signature, and
/// that signature with one digit changed.
pub fn messenger_delivery(data: &[u8]) {
    let body = data;
    let first_line = String::from_utf8_lossy(split(data).0);
    let signed = signature::sign(APP_SECRET, body);
    // Any header gets an answer, never a panic; only the body's own signature verifies.
    if signature::verify(APP_SECRET, body, Some(&first_line)).is_ok() {
        let given = first_line.trim().to_ascii_lowercase();
        assert_eq!(given, signed, "a wrong signature verified");
    }
    assert_eq!(signature::verify(APP_SECRET, body, Some(&signed)), Ok(()));
    let mut changed = signed.clone().into_bytes();
    let at = "sha256=".len() + usize::from(data.first().copied().unwrap_or(0)) % 64;
    changed[at] = if changed[at] == b'0' { b'1' } else { b'0' };
    let changed = String::from_utf8(changed).expect("hex is ASCII");
    assert!(signature::verify(APP_SECRET, body, Some(&changed)).is_err());
    let Ok(delivery) = parse_delivery(body) else {
        return;
    };
    let cut =
        |text: &Option<String>, max: usize| text.as_ref().is_none_or(|t| t.chars().count() <= max);
    for e in &delivery.events {
        // What becomes a key, a row or a URL path is a Meta id.
        assert!(is_meta_id(&e.account_id), "account id {:?}", e.account_id);
        assert!(is_meta_id(&e.user_id), "user id {:?}", e.user_id);
        assert!(!e.dedupe_key.is_empty());
        match &e.kind {
            EventKind::Message {
                mid,
                text,
                quick_reply_payload,
            } => {
                assert!(mid.chars().count() <= MAX_MID_CHARS);
                assert!(cut(text, MAX_TEXT_CHARS) && cut(quick_reply_payload, MAX_LABEL_CHARS));
            }
            EventKind::Echo {
                mid,
                app_id,
                text,
                metadata,
            } => {
                assert!(mid.chars().count() <= MAX_MID_CHARS);
                assert!(app_id.as_deref().is_none_or(is_meta_id));
                assert!(cut(text, MAX_TEXT_CHARS) && cut(metadata, MAX_LABEL_CHARS));
            }
            EventKind::Postback {
                mid,
                title,
                payload,
            } => {
                assert!(
                    mid.as_ref()
                        .is_none_or(|m| m.chars().count() <= MAX_MID_CHARS)
                );
                assert!(cut(title, MAX_LABEL_CHARS) && cut(payload, MAX_LABEL_CHARS));
            }
            EventKind::PassThreadControl {
                new_owner_app_id,
                previous_owner_app_id,
                metadata,
            }
            | EventKind::TakeThreadControl {
                new_owner_app_id,
                previous_owner_app_id,
                metadata,
            } => {
                assert!(new_owner_app_id.as_deref().is_none_or(is_meta_id));
                assert!(previous_owner_app_id.as_deref().is_none_or(is_meta_id));
                assert!(cut(metadata, MAX_LABEL_CHARS));
            }
            EventKind::RequestThreadControl {
                requested_owner_app_id,
                metadata,
            } => {
                assert!(requested_owner_app_id.as_deref().is_none_or(is_meta_id));
                assert!(cut(metadata, MAX_LABEL_CHARS));
            }
            EventKind::Read | EventKind::Delivery | EventKind::Other { .. } => {}
        }
        // Stored as JSON and read back.
        let json = serde_json::to_string(e).expect("an event serializes");
        assert_eq!(
            &serde_json::from_str::<handover_core::event::IncomingEvent>(&json).unwrap(),
            e
        );
    }
}

/// `POST /fulfillment`: the request parse (session form, Meta ids, context ids), then what
/// the route reads from it and the answers it builds.
pub fn fulfillment_request(data: &[u8]) {
    let Ok(request) = WebhookRequest::parse(data) else {
        return;
    };
    let session = &request.session;
    assert!(!session.trim().is_empty());
    if let Some(psid) = request.psid() {
        assert!(is_meta_id(&psid), "psid {psid:?}");
    }
    if let Some(page) = request.page_id() {
        assert!(is_meta_id(&page), "page {page:?}");
    }
    let _ = request.messenger_timestamp();
    let _ = request.is_messenger_message();
    let _ = request.action();
    let _ = request.own_text();
    serde_json::to_vec(&request.own_response()).expect("an answer serializes");
    // The handover's snapshot and the return's in-band contexts.
    let snapshot: Vec<Value> = request
        .output_contexts()
        .iter()
        .filter(|c| context_id(&c.name) != HANDOVER_CONTEXT)
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    let snapshot = Value::Array(snapshot).into();
    let captured = restorable(Some(&snapshot));
    for mode in [
        ContextOnReturn::Reset,
        ContextOnReturn::Restore,
        ContextOnReturn::Keep,
    ] {
        let alive = request
            .output_contexts()
            .iter()
            .map(|c| c.name.as_str())
            .chain(captured.iter().map(|c| c.id.as_str()))
            .chain([HANDOVER_CONTEXT]);
        let change = on_return(mode, alive, Some(&snapshot));
        for id in &change.delete {
            let name = context_name(session, id);
            assert_eq!(context_id(&name), id.as_str());
        }
        for c in &change.create {
            let restored = crate::dialogflow::webhook::Context::restored(session, c);
            serde_json::to_vec(&restored).expect("a context serializes");
        }
    }
}

/// The admin API's inputs: a query string for each route, a path id, an action's body.
/// Input: the query, a newline, the body (also read as the path's id).
pub fn admin_inputs(data: &[u8]) {
    let (query_bytes, body) = split(data);
    let query_text = String::from_utf8_lossy(query_bytes);
    for allowed in [
        &["state", "limit", "cursor"][..],
        &["status", "limit", "cursor"],
        &["page"],
        &[],
    ] {
        let Ok(params) = query::params(&query_text, allowed) else {
            continue;
        };
        assert!(params.keys().all(|k| allowed.contains(&k.as_str())));
        let get = |name: &str| params.get(name).map(String::as_str);
        if let Ok(limit) = query::limit(get("limit")) {
            assert!((1..=query::MAX_LIMIT).contains(&limit));
        }
        let _ = query::states(get("state"));
        let _ = query::statuses(get("status"));
        if let Ok(Some(cursor)) = query::thread_cursor(get("cursor")) {
            // A cursor read back is the one the API would give.
            let again = query::encode_thread_cursor(&cursor);
            assert_eq!(query::thread_cursor(Some(&again)).unwrap(), Some(cursor));
        }
        if let Ok(Some(id)) = query::job_cursor(get("cursor")) {
            assert!(id > 0);
        }
        if let Some(page) = get("page") {
            let _ = query::identifier("page", page);
        }
    }
    let path = String::from_utf8_lossy(body);
    if query::identifier("psid", &path).is_ok() {
        assert!((1..=64).contains(&path.len()));
    }
    if let Ok(id) = query::job_id(&path) {
        assert!(id > 0);
    }
    if let Ok(Some(note)) = query::note(body) {
        assert!(note.chars().count() <= query::MAX_NOTE_CHARS);
        assert!(!note.chars().any(char::is_control));
    }
}

/// The settings: a `--config` TOML file's text, then every setting read and checked.
pub fn settings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut raw = RawSettings::default();
    if raw.merge_toml(text, "fuzz.toml").is_err() {
        return;
    }
    if let Ok(settings) = Settings::from_raw(&raw) {
        // Read twice, the same (no hidden state in the reading).
        let again = Settings::from_raw(&raw).expect("read once, read again");
        assert_eq!(format!("{settings:?}"), format!("{again:?}"));
    }
}

/// What a target runs on one input.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/` and `fixtures/fuzz/` name them.
pub const TARGETS: [(&str, Target); 4] = [
    ("messenger_delivery", messenger_delivery),
    ("fulfillment_request", fulfillment_request),
    ("admin_inputs", admin_inputs),
    ("settings", settings),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every input a fuzzer found (a crash, a hang, or an interesting seed) runs again.
    #[test]
    fn every_input_the_fuzzers_found_runs_clean() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fuzz");
        let mut replayed = 0;
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
            files.sort();
            for file in files {
                let data = std::fs::read(&file).unwrap();
                let result = std::panic::catch_unwind(|| target(&data));
                assert!(result.is_ok(), "{name}: {} fails again", file.display());
                replayed += 1;
            }
        }
        println!("replayed {replayed} fuzz inputs");
        assert!(replayed > 0, "no fuzz inputs under {}", root.display());
    }

    #[test]
    fn the_targets_take_empty_and_odd_inputs() {
        for (_, target) in TARGETS {
            for data in [
                &b""[..],
                b"\n",
                b"\xff\xfe",
                b"{}",
                b"[]",
                b"null",
                b"\n{\"object\":\"page\"}",
            ] {
                target(data);
            }
        }
    }
}

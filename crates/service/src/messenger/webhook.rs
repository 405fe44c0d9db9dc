//! Parsing a Messenger webhook delivery (the raw POST body) into normalized events.
//!
//! The parser walks `serde_json::Value` instead of deriving strict structs, because Meta's
//! payloads vary: app ids come as strings, numbers or `null`, timestamps as milliseconds or a
//! string of seconds, and an entry may carry `messaging`, `standby`, both or neither.

use crate::limits::json_kind;
use serde_json::{Map, Value};

use handover_core::event::{Channel, EventKind, IncomingEvent};

use crate::limits::{MAX_LABEL_CHARS, MAX_MID_CHARS, MAX_TEXT_CHARS, is_meta_id, truncate_chars};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeliveryError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("not a Page delivery: object is {0}")]
    NotPage(String),
}

/// A delivery, parsed: the events to store, and what could not be.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    pub events: Vec<IncomingEvent>,
    /// Events (and entries) that are not stored, with why. Meta's delivery is acknowledged
    /// anyway: it would retry a refused one forever, and it would be refused again.
    pub refused: Vec<Refused>,
    /// Each field stored cut to its cap (`text`, `payload`, `title`, `metadata`), once per
    /// event and field.
    pub truncated: Vec<&'static str>,
}

/// One event (or entry) that is not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Its entry's index in `entry`.
    pub entry: usize,
    /// The array it came in, if it got that far.
    pub channel: Option<Channel>,
    /// What it was (`message`, `postback`, …), when it could be told.
    pub kind: Option<&'static str>,
    pub reason: RefuseReason,
}

/// Why an event is not stored; the `reason` label of `handover_webhook_events_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum RefuseReason {
    /// An entry that is not an object, or a `messaging`/`standby` that is not an array.
    BadEntry,
    /// An event that is not an object.
    NotAnObject,
    /// No sender (or, for an echo, no recipient): no user.
    NoUser,
    /// No Page id (neither `entry.id` nor the Page side of the event).
    NoPage,
    /// The user's id (PSID) is not a Meta id.
    BadUserId,
    /// The Page id is not a Meta id.
    BadPageId,
    /// An app id of the event is not a Meta id.
    BadAppId,
    /// A message id longer than [`MAX_MID_CHARS`].
    MidTooLong,
}

impl RefuseReason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Parses the raw POST body (already signature-checked).
///
/// Iterates every entry and both its `messaging` and `standby` arrays (either may be missing).
/// An event that cannot be stored (no user, malformed ids, an over-long `mid`) is refused,
/// with the reason, and the others are kept; texts over their caps are kept cut.
pub fn parse_delivery(body: &[u8]) -> Result<Delivery, DeliveryError> {
    let root: Value =
        serde_json::from_slice(body).map_err(|e| DeliveryError::Json(capped(e.to_string())))?;
    let object = match root.get("object") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(DeliveryError::NotPage(json_kind(other).to_owned())),
        None if root.is_object() => return Err(DeliveryError::NotPage("missing".to_owned())),
        None => {
            return Err(DeliveryError::NotPage(format!(
                "missing: the body is {}",
                json_kind(&root)
            )));
        }
    };
    if object != "page" {
        return Err(DeliveryError::NotPage(capped(object.to_owned())));
    }

    let mut delivery = Delivery::default();
    let entries = match root.get("entry") {
        Some(Value::Array(entries)) => entries.as_slice(),
        Some(Value::Null) | None => &[],
        Some(_) => {
            delivery.refused.push(Refused {
                entry: 0,
                channel: None,
                kind: None,
                reason: RefuseReason::BadEntry,
            });
            &[]
        }
    };
    for (index, entry) in entries.iter().enumerate() {
        let refuse = |channel, kind, reason| Refused {
            entry: index,
            channel,
            kind,
            reason,
        };
        let Some(entry) = entry.as_object() else {
            delivery
                .refused
                .push(refuse(None, None, RefuseReason::BadEntry));
            continue;
        };
        let entry_id = entry.get("id").and_then(id_string);
        let entry_time = entry.get("time").and_then(timestamp_ms);
        for (key, channel) in [
            ("messaging", Channel::Messaging),
            ("standby", Channel::Standby),
        ] {
            let items = match entry.get(key) {
                Some(Value::Array(items)) => items,
                Some(Value::Null) | None => continue,
                Some(_) => {
                    delivery
                        .refused
                        .push(refuse(Some(channel), None, RefuseReason::BadEntry));
                    continue;
                }
            };
            for item in items {
                let mut truncated = Vec::new();
                match parse_event(
                    item,
                    entry_id.as_deref(),
                    entry_time,
                    channel,
                    &mut truncated,
                ) {
                    Ok(event) => {
                        delivery.events.push(event);
                        delivery.truncated.extend(truncated);
                    }
                    Err((kind, reason)) => {
                        delivery.refused.push(refuse(Some(channel), kind, reason))
                    }
                }
            }
        }
    }
    Ok(delivery)
}

/// A refused event: what it was, if known, and why.
type Refusal = (Option<&'static str>, RefuseReason);

fn parse_event(
    item: &Value,
    entry_id: Option<&str>,
    entry_time: Option<i64>,
    channel: Channel,
    truncated: &mut Vec<&'static str>,
) -> Result<IncomingEvent, Refusal> {
    let event = item.as_object().ok_or((None, RefuseReason::NotAnObject))?;
    let sender = event
        .get("sender")
        .and_then(|s| s.get("id"))
        .and_then(id_string);
    let recipient = event
        .get("recipient")
        .and_then(|r| r.get("id"))
        .and_then(id_string);

    let kind = event_kind(event, truncated);
    let name = kind.name();
    let refuse = |reason| (Some(name), reason);
    check_event_ids(&kind).map_err(refuse)?;
    let is_echo = matches!(kind, EventKind::Echo { .. });
    let sender_is_page = match (&sender, entry_id) {
        (Some(s), Some(page)) => s == page,
        _ => false,
    };
    let (psid, page_side) =
        if is_echo || (matches!(kind, EventKind::RequestThreadControl { .. }) && sender_is_page) {
            (recipient, sender)
        } else {
            (sender, recipient)
        };
    let psid = psid.ok_or_else(|| refuse(RefuseReason::NoUser))?;
    if !is_meta_id(&psid) {
        return Err(refuse(RefuseReason::BadUserId));
    }
    let page_id = entry_id
        .map(str::to_owned)
        .or(page_side)
        .ok_or_else(|| refuse(RefuseReason::NoPage))?;
    if !is_meta_id(&page_id) {
        return Err(refuse(RefuseReason::BadPageId));
    }

    let timestamp_ms = event
        .get("timestamp")
        .and_then(timestamp_ms)
        .or(entry_time)
        .unwrap_or(0);

    let dedupe_key = dedupe_key(&kind, &psid, timestamp_ms);
    Ok(IncomingEvent {
        account_id: page_id,
        user_id: psid,
        channel,
        timestamp_ms,
        kind,
        dedupe_key,
    })
}

/// The event's own ids: app ids are Meta ids, message ids are not over-long.
fn check_event_ids(kind: &EventKind) -> Result<(), RefuseReason> {
    let (mid, app_ids): (Option<&String>, [Option<&String>; 2]) = match kind {
        EventKind::Message { mid, .. } => (Some(mid), [None, None]),
        EventKind::Echo { mid, app_id, .. } => (Some(mid), [app_id.as_ref(), None]),
        EventKind::Postback { mid, .. } => (mid.as_ref(), [None, None]),
        EventKind::PassThreadControl {
            new_owner_app_id,
            previous_owner_app_id,
            ..
        }
        | EventKind::TakeThreadControl {
            new_owner_app_id,
            previous_owner_app_id,
            ..
        } => (
            None,
            [new_owner_app_id.as_ref(), previous_owner_app_id.as_ref()],
        ),
        EventKind::RequestThreadControl {
            requested_owner_app_id,
            ..
        } => (None, [requested_owner_app_id.as_ref(), None]),
        EventKind::Read | EventKind::Delivery | EventKind::Other { .. } => (None, [None, None]),
    };
    if mid.is_some_and(|m| m.chars().count() > MAX_MID_CHARS) {
        return Err(RefuseReason::MidTooLong);
    }
    if app_ids.into_iter().flatten().any(|id| !is_meta_id(id)) {
        return Err(RefuseReason::BadAppId);
    }
    Ok(())
}

fn event_kind(event: &Map<String, Value>, truncated: &mut Vec<&'static str>) -> EventKind {
    // A text field, cut to its cap (and counted once per event and field).
    let mut capped = |value: Option<&Value>, field: &'static str, max: usize| {
        let mut text = string(value)?;
        if truncate_chars(&mut text, max) && !truncated.contains(&field) {
            truncated.push(field);
        }
        Some(text)
    };
    if let Some(message) = event.get("message").and_then(Value::as_object) {
        let mid = string(message.get("mid")).unwrap_or_default();
        let text = capped(message.get("text"), "text", MAX_TEXT_CHARS);
        if message.get("is_echo").and_then(Value::as_bool) == Some(true) {
            return EventKind::Echo {
                mid,
                app_id: message.get("app_id").and_then(id_string),
                text,
                metadata: capped(message.get("metadata"), "metadata", MAX_LABEL_CHARS),
            };
        }
        return EventKind::Message {
            mid,
            text,
            quick_reply_payload: capped(
                message.get("quick_reply").and_then(|q| q.get("payload")),
                "payload",
                MAX_LABEL_CHARS,
            ),
        };
    }
    if let Some(postback) = event.get("postback").and_then(Value::as_object) {
        return EventKind::Postback {
            mid: string(postback.get("mid")),
            title: capped(postback.get("title"), "title", MAX_LABEL_CHARS),
            payload: capped(postback.get("payload"), "payload", MAX_LABEL_CHARS),
        };
    }
    if let Some(pass) = event.get("pass_thread_control").and_then(Value::as_object) {
        return EventKind::PassThreadControl {
            new_owner_app_id: pass.get("new_owner_app_id").and_then(id_string),
            previous_owner_app_id: pass.get("previous_owner_app_id").and_then(id_string),
            metadata: capped(pass.get("metadata"), "metadata", MAX_LABEL_CHARS),
        };
    }
    if let Some(take) = event.get("take_thread_control").and_then(Value::as_object) {
        return EventKind::TakeThreadControl {
            new_owner_app_id: take.get("new_owner_app_id").and_then(id_string),
            previous_owner_app_id: take.get("previous_owner_app_id").and_then(id_string),
            metadata: capped(take.get("metadata"), "metadata", MAX_LABEL_CHARS),
        };
    }
    if let Some(request) = event
        .get("request_thread_control")
        .and_then(Value::as_object)
    {
        return EventKind::RequestThreadControl {
            requested_owner_app_id: request.get("requested_owner_app_id").and_then(id_string),
            metadata: capped(request.get("metadata"), "metadata", MAX_LABEL_CHARS),
        };
    }
    if event.get("read").is_some_and(|v| !v.is_null()) {
        return EventKind::Read;
    }
    if event.get("delivery").is_some_and(|v| !v.is_null()) {
        return EventKind::Delivery;
    }
    // Event payloads are objects (`referral`, `optin`, `app_roles`, `reaction`, ...): prefer an
    // object-valued key over scalar extras, whatever the map's key order.
    let candidates = || {
        event.iter().filter(|(k, v)| {
            !matches!(k.as_str(), "sender" | "recipient" | "timestamp") && !v.is_null()
        })
    };
    let mut key = candidates()
        .find(|(_, v)| v.is_object())
        .or_else(|| candidates().next())
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| "unknown".to_owned());
    // The key goes into the dedupe key: an unknown event's own name is bounded too.
    truncate_chars(&mut key, MAX_LABEL_CHARS);
    EventKind::Other { key }
}

/// An error text, cut to a line's length: serde's may quote the body.
fn capped(mut text: String) -> String {
    if truncate_chars(&mut text, 200) {
        text.push('…');
    }
    text
}

fn dedupe_key(kind: &EventKind, psid: &str, ts: i64) -> String {
    match kind {
        EventKind::Message { mid, .. } | EventKind::Echo { mid, .. } if !mid.is_empty() => {
            format!("mid:{mid}")
        }
        EventKind::Postback { mid: Some(mid), .. } if !mid.is_empty() => format!("mid:{mid}"),
        EventKind::Postback { title, payload, .. } => {
            let label = payload.as_deref().or(title.as_deref()).unwrap_or("");
            format!("postback:{psid}:{ts}:{label}")
        }
        EventKind::Other { key } => format!("{key}:{psid}:{ts}"),
        other => format!("{}:{psid}:{ts}", other.name()),
    }
}

/// A JSON string, as an owned `String`; anything else is `None`.
fn string(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

/// An id given as a JSON string or number (numbers printed as integers); `null`, empty strings
/// and other types are `None`.
fn id_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_owned())
        }
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Some(u.to_string())
            } else if let Some(i) = n.as_i64() {
                Some(i.to_string())
            } else {
                let f = n.as_f64()?;
                if f.is_finite() && f.fract() == 0.0 {
                    Some(format!("{f:.0}"))
                } else {
                    Some(n.to_string())
                }
            }
        }
        _ => None,
    }
}

/// Milliseconds since the epoch from a number or a numeric string; values below 10^12 are
/// taken as seconds.
fn timestamp_ms(value: &Value) -> Option<i64> {
    let raw: f64 = match value {
        Value::Number(n) => match n.as_i64() {
            Some(i) => return Some(normalize_ms(i)),
            None => n.as_f64()?,
        },
        Value::String(s) => {
            let s = s.trim();
            match s.parse::<i64>() {
                Ok(i) => return Some(normalize_ms(i)),
                Err(_) => s.parse::<f64>().ok()?,
            }
        }
        _ => return None,
    };
    if !raw.is_finite() {
        return None;
    }
    if raw < 1e12 {
        // `as` saturates, so absurd values cannot overflow.
        Some((raw * 1000.0) as i64)
    } else {
        Some(raw as i64)
    }
}

fn normalize_ms(value: i64) -> i64 {
    if value < 1_000_000_000_000 {
        value.saturating_mul(1000)
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "958823367603818";
    const USER: &str = "1534862223272449";
    const USER2: &str = "2031835813581292";
    const BOT: &str = "111111111111111";
    const INBOX: &str = "263902037430900";

    fn one(body: &str) -> IncomingEvent {
        let delivery = parse_delivery(body.as_bytes()).expect("fixture parses");
        assert!(delivery.refused.is_empty(), "{delivery:?}");
        assert!(delivery.truncated.is_empty(), "{delivery:?}");
        let mut events = delivery.events;
        assert_eq!(events.len(), 1, "{events:?}");
        events.remove(0)
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn standby_back_to_bot() {
        let e = one(include_str!(
            "../../fixtures/messenger/standby_back_to_bot.json"
        ));
        assert_eq!(e.channel, Channel::Standby);
        assert_eq!(e.account_id, PAGE);
        assert_eq!(e.user_id, USER);
        assert_eq!(e.timestamp_ms, 1763900012345);
        match &e.kind {
            EventKind::Message {
                mid,
                text,
                quick_reply_payload,
            } => {
                assert_eq!(text.as_deref(), Some("Back to bot!"));
                assert_eq!(*quick_reply_payload, None);
                assert_eq!(e.dedupe_key, format!("mid:{mid}"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(e.kind.is_relevant());
        assert_eq!(e.kind.name(), "message");
    }

    #[test]
    fn standby_only_entry() {
        let e = one(include_str!(
            "../../fixtures/messenger/standby_only_entry.json"
        ));
        assert_eq!(e.channel, Channel::Standby);
        assert_eq!(e.user_id, USER);
        assert!(matches!(
            &e.kind,
            EventKind::Message { text: Some(t), .. } if t == "I still need help"
        ));
    }

    #[test]
    fn standby_user_message() {
        let e = one(include_str!(
            "../../fixtures/messenger/standby_user_message.json"
        ));
        assert_eq!(e.channel, Channel::Standby);
        assert!(matches!(
            &e.kind,
            EventKind::Message { text: Some(t), .. } if t == "thanks"
        ));
    }

    #[test]
    fn batch_of_entries_keeps_order_and_channels() {
        let events = parse_delivery(include_bytes!(
            "../../fixtures/messenger/batch_entries.json"
        ))
        .unwrap()
        .events;
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].channel, Channel::Messaging);
        assert_eq!(events[0].user_id, USER);
        assert_eq!(events[0].kind.name(), "message");
        assert_eq!(events[1].channel, Channel::Standby);
        assert_eq!(events[1].user_id, USER2);
        assert_eq!(events[1].kind.name(), "message");
        assert_eq!(events[2].channel, Channel::Messaging);
        assert_eq!(events[2].kind.name(), "pass_thread_control");
        assert_eq!(
            events[2].dedupe_key,
            format!("pass_thread_control:{USER}:{}", events[2].timestamp_ms)
        );
        assert!(events.iter().all(|e| e.account_id == PAGE));
        let mut keys: Vec<_> = events.iter().map(|e| e.dedupe_key.clone()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn postback_back_to_bot() {
        let e = one(include_str!(
            "../../fixtures/messenger/postback_back_to_bot.json"
        ));
        assert_eq!(e.channel, Channel::Messaging);
        assert_eq!(e.user_id, USER);
        match &e.kind {
            EventKind::Postback {
                mid: Some(mid),
                title,
                payload,
            } => {
                assert_eq!(title.as_deref(), Some("Back to bot"));
                assert_eq!(payload.as_deref(), Some("BACK_TO_BOT"));
                assert_eq!(e.dedupe_key, format!("mid:{mid}"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn echo_from_inbox_uses_recipient_as_psid_and_numeric_app_id() {
        let e = one(include_str!(
            "../../fixtures/messenger/echo_from_inbox.json"
        ));
        assert_eq!(e.user_id, USER);
        assert_eq!(e.account_id, PAGE);
        match &e.kind {
            EventKind::Echo {
                mid, app_id, text, ..
            } => {
                assert_eq!(app_id.as_deref(), Some(INBOX));
                assert_eq!(text.as_deref(), Some("Hi, I'm Anna from support"));
                assert_eq!(e.dedupe_key, format!("mid:{mid}"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(e.kind.name(), "echo");
    }

    #[test]
    fn echo_agent_hash_bot() {
        let e = one(include_str!(
            "../../fixtures/messenger/echo_agent_hash_bot.json"
        ));
        assert_eq!(e.user_id, USER);
        assert!(matches!(
            &e.kind,
            EventKind::Echo { app_id: Some(a), text: Some(t), .. } if a == INBOX && t == "#bot"
        ));
    }

    #[test]
    fn echo_from_bot_keeps_metadata() {
        let e = one(include_str!("../../fixtures/messenger/echo_from_bot.json"));
        assert_eq!(e.user_id, USER);
        match &e.kind {
            EventKind::Echo {
                app_id, metadata, ..
            } => {
                assert_eq!(app_id.as_deref(), Some(BOT));
                assert_eq!(metadata.as_deref(), Some("bot:reply"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn pass_to_us_with_string_app_ids() {
        let e = one(include_str!("../../fixtures/messenger/pass_to_us.json"));
        assert_eq!(e.user_id, USER);
        assert_eq!(
            e.kind,
            EventKind::PassThreadControl {
                new_owner_app_id: s(BOT),
                previous_owner_app_id: s(INBOX),
                metadata: s(""),
            }
        );
        assert_eq!(
            e.dedupe_key,
            format!("pass_thread_control:{USER}:{}", e.timestamp_ms)
        );
    }

    #[test]
    fn pass_to_inbox_with_numeric_app_id() {
        let e = one(include_str!("../../fixtures/messenger/pass_to_inbox.json"));
        assert_eq!(
            e.kind,
            EventKind::PassThreadControl {
                new_owner_app_id: s(INBOX),
                previous_owner_app_id: s(BOT),
                metadata: s("handover:user_asked_for_agent"),
            }
        );
    }

    #[test]
    fn take_by_inbox_with_null_previous_owner() {
        let e = one(include_str!("../../fixtures/messenger/take_by_inbox.json"));
        assert_eq!(e.user_id, USER);
        assert_eq!(
            e.kind,
            EventKind::TakeThreadControl {
                new_owner_app_id: s(INBOX),
                previous_owner_app_id: None,
                metadata: s("Information about the conversation"),
            }
        );
        assert_eq!(
            e.dedupe_key,
            format!("take_thread_control:{USER}:{}", e.timestamp_ms)
        );
    }

    #[test]
    fn request_from_inbox_with_numeric_app_id() {
        let e = one(include_str!(
            "../../fixtures/messenger/request_from_inbox.json"
        ));
        assert_eq!(e.user_id, USER);
        assert_eq!(
            e.kind,
            EventKind::RequestThreadControl {
                requested_owner_app_id: s(INBOX),
                metadata: s("Conversation moved to Inbox"),
            }
        );
        assert_eq!(
            e.dedupe_key,
            format!("request_thread_control:{USER}:{}", e.timestamp_ms)
        );
    }

    #[test]
    fn request_with_page_as_sender_uses_recipient() {
        let body = format!(
            r#"{{"object":"page","entry":[{{"id":"{PAGE}","time":1763900000000,"messaging":[{{
                "sender":{{"id":"{PAGE}"}},"recipient":{{"id":"{USER}"}},"timestamp":1763900000001,
                "request_thread_control":{{"requested_owner_app_id":263902037430900}}}}]}}]}}"#
        );
        let e = one(&body);
        assert_eq!(e.user_id, USER);
        assert_eq!(e.account_id, PAGE);
    }

    #[test]
    fn timestamp_as_seconds_string_and_fallbacks() {
        let body = format!(
            r#"{{"object":"page","entry":[{{"id":"{PAGE}","time":1763900000999,"messaging":[
                {{"sender":{{"id":"{USER}"}},"recipient":{{"id":"{PAGE}"}},"timestamp":"1763900000",
                  "postback":{{"title":"Get Started","payload":"GET_STARTED"}}}},
                {{"sender":{{"id":"{USER}"}},"recipient":{{"id":"{PAGE}"}},
                  "read":{{"watermark":1763900000000}}}},
                {{"sender":{{"id":"{USER}"}},"recipient":{{"id":"{PAGE}"}},"timestamp":1763900001.0,
                  "delivery":{{"mids":["m_x"],"watermark":1763900000000}}}}
            ]}},
            {{"id":"{PAGE}","messaging":[{{"sender":{{"id":"{USER}"}},"recipient":{{"id":"{PAGE}"}},
                  "read":{{"watermark":1}}}}]}}]}}"#
        );
        let events = parse_delivery(body.as_bytes()).unwrap().events;
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].timestamp_ms, 1763900000000);
        assert_eq!(
            events[0].dedupe_key,
            format!("postback:{USER}:1763900000000:GET_STARTED")
        );
        // Missing timestamp falls back to entry.time.
        assert_eq!(events[1].kind, EventKind::Read);
        assert_eq!(events[1].timestamp_ms, 1763900000999);
        assert_eq!(events[1].dedupe_key, format!("read:{USER}:1763900000999"));
        assert!(!events[1].kind.is_relevant());
        // A float of seconds.
        assert_eq!(events[2].kind, EventKind::Delivery);
        assert_eq!(events[2].timestamp_ms, 1763900001000);
        // Neither timestamp nor entry.time.
        assert_eq!(events[3].timestamp_ms, 0);
    }

    #[test]
    fn postback_without_payload_or_mid_uses_title() {
        let body = format!(
            r#"{{"object":"page","entry":[{{"id":"{PAGE}","time":1,"standby":[
                {{"sender":{{"id":"{USER}"}},"recipient":{{"id":"{PAGE}"}},"timestamp":1763900000123,
                  "postback":{{"title":"Back to bot"}}}}]}}]}}"#
        );
        let e = one(&body);
        assert_eq!(e.channel, Channel::Standby);
        assert_eq!(
            e.dedupe_key,
            format!("postback:{USER}:1763900000123:Back to bot")
        );
    }

    #[test]
    fn bad_json_and_wrong_object_are_errors() {
        assert!(matches!(
            parse_delivery(b"{not json"),
            Err(DeliveryError::Json(_))
        ));
        assert!(matches!(parse_delivery(b""), Err(DeliveryError::Json(_))));
        assert_eq!(
            parse_delivery(br#"{"object":"user","entry":[]}"#),
            Err(DeliveryError::NotPage("user".to_owned()))
        );
        assert_eq!(
            parse_delivery(br#"{"object":"instagram"}"#),
            Err(DeliveryError::NotPage("instagram".to_owned()))
        );
        assert!(matches!(
            parse_delivery(br#"{"entry":[]}"#),
            Err(DeliveryError::NotPage(_))
        ));
        assert!(matches!(
            parse_delivery(b"[1,2]"),
            Err(DeliveryError::NotPage(_))
        ));
        assert_eq!(
            parse_delivery(br#"{"object":"page"}"#),
            Ok(Delivery::default())
        );
        assert_eq!(
            parse_delivery(br#"{"object":"page","entry":[{"id":"1","time":1}]}"#),
            Ok(Delivery::default())
        );
    }

    #[test]
    fn missing_sender_is_skipped_not_an_error() {
        let body = format!(
            r#"{{"object":"page","entry":[{{"id":"{PAGE}","time":1763900000000,"messaging":[
                {{"recipient":{{"id":"{PAGE}"}},"timestamp":1763900000001,"message":{{"mid":"m_1","text":"x"}}}},
                "garbage",
                {{"recipient":{{"id":"{USER}"}},"timestamp":1763900000002,"app_roles":{{"{BOT}":["primary_receiver"]}}}},
                {{"sender":{{"id":"{USER}"}},"recipient":{{"id":"{PAGE}"}},"timestamp":1763900000003,"message":{{"mid":"m_2","text":"y"}}}}
            ],"standby":"nope"}}, 7]}}"#
        );
        let delivery = parse_delivery(body.as_bytes()).unwrap();
        assert_eq!(delivery.events.len(), 1);
        assert_eq!(delivery.events[0].dedupe_key, "mid:m_2");
        // Each one that is not stored is counted, with why.
        let reasons: Vec<(usize, Option<&str>, RefuseReason)> = delivery
            .refused
            .iter()
            .map(|r| (r.entry, r.kind, r.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                (0, Some("message"), RefuseReason::NoUser),
                (0, None, RefuseReason::NotAnObject),
                (0, Some("other"), RefuseReason::NoUser),
                (0, None, RefuseReason::BadEntry),
                (1, None, RefuseReason::BadEntry),
            ]
        );
    }

    /// What becomes a key or a row: ids are Meta ids, a `mid` is not over-long (refused);
    /// texts, payloads, titles and metadata over their caps are stored cut (counted).
    #[test]
    fn malformed_ids_are_refused_and_long_texts_cut() {
        let event = |sender: &str, recipient: &str, body: &str| {
            format!(
                r#"{{"sender":{{"id":"{sender}"}},"recipient":{{"id":"{recipient}"}},"timestamp":1763900000001,{body}}}"#
            )
        };
        let delivery = |page: &str, events: &[String]| {
            let body = format!(
                r#"{{"object":"page","entry":[{{"id":"{page}","time":1763900000000,"standby":[{}]}}]}}"#,
                events.join(",")
            );
            parse_delivery(body.as_bytes()).unwrap()
        };
        let long_mid = format!("m_{}", "a".repeat(MAX_MID_CHARS));
        let d = delivery(
            PAGE,
            &[
                event(
                    "../../x?y=1#z",
                    PAGE,
                    r#""message":{"mid":"m_1","text":"x"}"#,
                ),
                event(
                    USER,
                    PAGE,
                    &format!(r#""message":{{"mid":"{long_mid}","text":"x"}}"#),
                ),
                event(
                    USER,
                    PAGE,
                    r#""pass_thread_control":{"new_owner_app_id":"x1","metadata":""}"#,
                ),
                event(
                    PAGE,
                    USER,
                    r#""message":{"mid":"m_2","is_echo":true,"app_id":"263902037430900; DROP"}"#,
                ),
                event(USER, PAGE, r#""message":{"mid":"m_3","text":"fine"}"#),
            ],
        );
        let reasons: Vec<RefuseReason> = d.refused.iter().map(|r| r.reason).collect();
        assert_eq!(
            reasons,
            [
                RefuseReason::BadUserId,
                RefuseReason::MidTooLong,
                RefuseReason::BadAppId,
                RefuseReason::BadAppId,
            ]
        );
        assert_eq!(d.events.len(), 1);
        assert!(
            d.refused
                .iter()
                .all(|r| r.channel == Some(Channel::Standby))
        );

        let d = delivery(
            "not-a-page",
            &[event(USER, PAGE, r#""message":{"mid":"m_4"}"#)],
        );
        assert_eq!(d.refused[0].reason, RefuseReason::BadPageId);

        let text = "é".repeat(MAX_TEXT_CHARS + 5);
        let label = "p".repeat(MAX_LABEL_CHARS + 1);
        let d = delivery(
            PAGE,
            &[
                event(
                    USER,
                    PAGE,
                    &format!(
                        r#""message":{{"mid":"m_5","text":"{text}","quick_reply":{{"payload":"{label}"}}}}"#
                    ),
                ),
                event(
                    USER,
                    PAGE,
                    &format!(r#""postback":{{"title":"{label}","payload":"{label}"}}"#),
                ),
                event(
                    PAGE,
                    USER,
                    &format!(
                        r#""message":{{"mid":"m_6","is_echo":true,"text":"{text}","metadata":"{label}"}}"#
                    ),
                ),
            ],
        );
        assert!(d.refused.is_empty(), "{:?}", d.refused);
        assert_eq!(
            d.truncated,
            ["text", "payload", "title", "payload", "text", "metadata"]
        );
        match &d.events[0].kind {
            EventKind::Message {
                text,
                quick_reply_payload,
                ..
            } => {
                assert_eq!(text.as_ref().unwrap().chars().count(), MAX_TEXT_CHARS);
                assert_eq!(quick_reply_payload.as_ref().unwrap().len(), MAX_LABEL_CHARS);
            }
            other => panic!("unexpected {other:?}"),
        }
        // A postback's dedupe key carries its (cut) payload: bounded too.
        assert!(d.events[1].dedupe_key.len() < MAX_LABEL_CHARS + 100);
    }

    #[test]
    fn unknown_events_become_other() {
        let body = format!(
            r#"{{"object":"page","entry":[{{"id":{PAGE},"time":1763900000000,"messaging":[
                {{"sender":{{"id":{USER}}},"recipient":{{"id":{PAGE}}},"timestamp":1763900000001,
                  "referral":{{"ref":"ad","source":"ADS","type":"OPEN_THREAD"}},"extra":1}}]}}]}}"#
        );
        let e = one(&body);
        // Numeric ids are normalized to strings.
        assert_eq!(e.account_id, PAGE);
        assert_eq!(e.user_id, USER);
        assert_eq!(
            e.kind,
            EventKind::Other {
                key: "referral".to_owned()
            }
        );
        assert!(!e.kind.is_relevant());
        assert_eq!(e.dedupe_key, format!("referral:{USER}:1763900000001"));
    }

    #[test]
    fn page_id_falls_back_to_the_page_side() {
        let body = format!(
            r#"{{"object":"page","entry":[{{"messaging":[
                {{"sender":{{"id":"{USER}"}},"recipient":{{"id":"{PAGE}"}},"timestamp":1763900000001,"message":{{"mid":"m_a"}}}},
                {{"sender":{{"id":"{PAGE}"}},"recipient":{{"id":"{USER}"}},"timestamp":1763900000002,
                  "message":{{"mid":"m_b","is_echo":true,"app_id":null}}}}]}}]}}"#
        );
        let events = parse_delivery(body.as_bytes()).unwrap().events;
        assert_eq!(events.len(), 2);
        assert!(
            events
                .iter()
                .all(|e| e.account_id == PAGE && e.user_id == USER)
        );
        assert!(matches!(
            &events[1].kind,
            EventKind::Echo { app_id: None, .. }
        ));
    }

    #[test]
    fn id_and_timestamp_normalization() {
        use serde_json::json;
        assert_eq!(id_string(&json!(263902037430900u64)), s(INBOX));
        assert_eq!(id_string(&json!(263902037430900.0)), s(INBOX));
        assert_eq!(id_string(&json!(" 111 ")), s("111"));
        assert_eq!(id_string(&json!("")), None);
        assert_eq!(id_string(&json!(null)), None);
        assert_eq!(id_string(&json!(true)), None);
        assert_eq!(timestamp_ms(&json!(1763900000123i64)), Some(1763900000123));
        assert_eq!(timestamp_ms(&json!("1763900000")), Some(1763900000000));
        assert_eq!(timestamp_ms(&json!(" 1763900000123 ")), Some(1763900000123));
        assert_eq!(timestamp_ms(&json!("soon")), None);
        assert_eq!(timestamp_ms(&json!(1.0e300)), Some(i64::MAX));
        assert_eq!(timestamp_ms(&json!(u64::MAX)), Some(i64::MAX));
    }

    #[test]
    fn events_round_trip_through_serde() {
        let events = parse_delivery(include_bytes!(
            "../../fixtures/messenger/batch_entries.json"
        ))
        .unwrap()
        .events;
        let text = serde_json::to_string(&events).unwrap();
        assert!(text.contains(r#""type":"pass_thread_control""#));
        assert!(text.contains(r#""channel":"standby""#));
        let back: Vec<IncomingEvent> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, events);
    }

    /// Meta sends app ids as strings or numbers: the parser makes them the same strings, so
    /// the state machine (which compares strings) places a handover to us or to the inbox.
    #[test]
    fn app_ids_given_as_strings_or_numbers() {
        use handover_core::text::PhraseSet;
        use handover_core::{Input, Policy, State, Thread, decide};
        const APP: &str = "111111111111111";
        const INBOX: &str = "263902037430900";
        const TS: i64 = 1_763_900_059_000;
        let body = |field: &str, owner: serde_json::Value| {
            serde_json::json!({
                "object": "page",
                "entry": [{
                    "id": "958823367603818",
                    "time": TS,
                    "messaging": [{
                        "sender": {"id": "1534862223272449"},
                        "recipient": {"id": "958823367603818"},
                        "timestamp": TS,
                        field: {"new_owner_app_id": owner, "previous_owner_app_id": null}
                    }]
                }]
            })
            .to_string()
        };
        let policy = Policy {
            app_id: APP.into(),
            target_app_id: INBOX.into(),
            return_phrases: PhraseSet::new(&["back to bot"]),
            return_payload: "BACK_TO_BOT".into(),
            agent_return_phrases: PhraseSet::new(&["#bot"]),
            idle_timeout_ms: 0,
            pass_delay_ms: 1_500,
            stuck_after_ms: 300_000,
            standby_means_not_bot: true,
            notify: Default::default(),
        };
        let thread = |state: State, owner: &str| {
            let mut t = Thread::new("958823367603818", "1534862223272449", TS - 60_000);
            t.state = state;
            t.epoch = 1;
            t.state_at = TS - 60_000;
            t.owner_app_id = Some(owner.into());
            if state == State::Human {
                t.human_since = Some(TS - 60_000);
            }
            t
        };
        for field in ["pass_thread_control", "take_thread_control"] {
            for ours in [
                serde_json::json!(APP),
                serde_json::json!(111111111111111u64),
                serde_json::json!(" 111111111111111 "),
            ] {
                let mut events = parse_delivery(body(field, ours.clone()).as_bytes())
                    .unwrap()
                    .events;
                assert_eq!(events.len(), 1);
                let e = events.remove(0);
                let d = decide(
                    &thread(State::Human, INBOX),
                    &Input::Event(&e),
                    &policy,
                    TS + 1_000,
                );
                assert_eq!(d.thread.state, State::Bot, "{field} {ours}");
                assert_eq!(d.thread.owner_app_id.as_deref(), Some(APP));
            }
            for inbox in [
                serde_json::json!(INBOX),
                serde_json::json!(263902037430900u64),
            ] {
                let mut events = parse_delivery(body(field, inbox.clone()).as_bytes())
                    .unwrap()
                    .events;
                let e = events.remove(0);
                let d = decide(
                    &thread(State::Bot, APP),
                    &Input::Event(&e),
                    &policy,
                    TS + 1_000,
                );
                assert_eq!(d.thread.state, State::Human, "{field} {inbox}");
                assert_eq!(d.thread.owner_app_id.as_deref(), Some(INBOX));
            }
        }
    }
}

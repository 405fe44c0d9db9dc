//! Events from a messaging platform's webhook, normalized: who, when, which feed, what.
//!
//! The platform's own parser (the service's `messenger::webhook` for Messenger) builds them;
//! the state machine reads them.

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IncomingEvent {
    /// The account the event is for (a Messenger Page id). Stored events written before the
    /// rename say `page_id` and `psid`.
    #[serde(alias = "page_id")]
    pub account_id: String,
    /// The user (a Messenger PSID).
    #[serde(alias = "psid")]
    pub user_id: String,
    pub channel: Channel,
    pub timestamp_ms: i64,
    pub kind: EventKind,
    pub dedupe_key: String,
}

/// Which array of the entry the event came from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Channel {
    Messaging,
    Standby,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    Message {
        mid: String,
        text: Option<String>,
        quick_reply_payload: Option<String>,
    },
    Echo {
        mid: String,
        app_id: Option<String>,
        text: Option<String>,
        metadata: Option<String>,
    },
    Postback {
        mid: Option<String>,
        title: Option<String>,
        payload: Option<String>,
    },
    PassThreadControl {
        new_owner_app_id: Option<String>,
        previous_owner_app_id: Option<String>,
        metadata: Option<String>,
    },
    TakeThreadControl {
        new_owner_app_id: Option<String>,
        previous_owner_app_id: Option<String>,
        metadata: Option<String>,
    },
    RequestThreadControl {
        requested_owner_app_id: Option<String>,
        metadata: Option<String>,
    },
    Read,
    Delivery,
    Other {
        key: String,
    },
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Message { .. } => "message",
            EventKind::Echo { .. } => "echo",
            EventKind::Postback { .. } => "postback",
            EventKind::PassThreadControl { .. } => "pass_thread_control",
            EventKind::TakeThreadControl { .. } => "take_thread_control",
            EventKind::RequestThreadControl { .. } => "request_thread_control",
            EventKind::Read => "read",
            EventKind::Delivery => "delivery",
            EventKind::Other { .. } => "other",
        }
    }

    /// False for reads, deliveries and unknown events.
    pub fn is_relevant(&self) -> bool {
        !matches!(
            self,
            EventKind::Read | EventKind::Delivery | EventKind::Other { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events stored before the core spoke of accounts and users still decode.
    #[test]
    fn events_stored_with_page_and_psid_still_decode() {
        let old = r#"{"page_id":"958823367603818","psid":"1534862223272449","channel":"standby",
            "timestamp_ms":1,"kind":{"type":"read"},"dedupe_key":"k"}"#;
        let e: IncomingEvent = serde_json::from_str(old).unwrap();
        assert_eq!(e.account_id, "958823367603818");
        assert_eq!(e.user_id, "1534862223272449");
        let new = serde_json::to_string(&e).unwrap();
        assert!(new.contains(r#""account_id":"958823367603818""#), "{new}");
        assert_eq!(serde_json::from_str::<IncomingEvent>(&new).unwrap(), e);
    }
}

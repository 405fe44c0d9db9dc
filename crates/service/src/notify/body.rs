//! What an agent notification says: the JSON body and its `text` line. Pure.

use handover_core::jobs::NoticeEvent;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// One notice, as the `notify` job carries it, with its thread.
#[derive(Clone, Copy, Debug)]
pub struct Notice<'a> {
    pub event: NoticeEvent,
    pub page_id: &'a str,
    pub psid: &'a str,
    pub epoch: i64,
    /// When the decision was made (epoch ms).
    pub at_ms: i64,
    pub cause: Option<&'a str>,
    pub waited_ms: Option<i64>,
    pub error: Option<&'a str>,
}

/// What the endpoint takes. Google Chat refuses a message with fields it does not know (HTTP
/// 400 "Unknown name"), and Slack's incoming webhooks read only their own: both get `text`
/// alone. Any other endpoint gets every field, `text` among them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Full,
    TextOnly,
}

impl Format {
    /// By the URL's host: `chat.googleapis.com` and `hooks.slack.com` take `text` alone.
    pub fn for_url(url: &str) -> Format {
        let host = url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        match host.as_deref() {
            Some("chat.googleapis.com" | "hooks.slack.com") => Format::TextOnly,
            _ => Format::Full,
        }
    }
}

#[derive(Serialize)]
struct Full<'a> {
    /// Stable across retries of one notice: a receiver drops a repeat by it.
    id: String,
    event: &'static str,
    at: String,
    page_id: &'a str,
    psid: &'a str,
    epoch: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    waited_secs: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    inbox_url: String,
    text: String,
}

#[derive(Serialize)]
struct TextOnly {
    text: String,
}

/// The body to POST (and sign).
pub fn body(n: &Notice<'_>, format: Format) -> Vec<u8> {
    let text = text(n);
    let json = match format {
        Format::TextOnly => serde_json::to_vec(&TextOnly { text }),
        Format::Full => serde_json::to_vec(&Full {
            id: id(n),
            event: n.event.as_str(),
            at: rfc3339(n.at_ms),
            page_id: n.page_id,
            psid: n.psid,
            epoch: n.epoch,
            cause: n.cause,
            waited_secs: n.waited_ms.map(|ms| ms / 1000),
            error: n.error,
            inbox_url: inbox_url(n.page_id, n.psid),
            text,
        }),
    };
    // Serializing strings and numbers into a Vec cannot fail.
    json.unwrap_or_default()
}

/// `{page}/{psid}/{epoch}/{event}/{at}`: one per notice (a stay can have several waits, each
/// with its own time).
pub fn id(n: &Notice<'_>) -> String {
    format!(
        "{}/{}/{}/{}/{}",
        n.page_id,
        n.psid,
        n.epoch,
        n.event.as_str(),
        n.at_ms
    )
}

/// The conversation in Meta Business Suite's inbox. Meta documents no deep link; this is the
/// form Business Suite itself uses (`asset_id`: the Page, `selected_item_id`: the user).
pub fn inbox_url(page_id: &str, psid: &str) -> String {
    format!(
        "https://business.facebook.com/latest/inbox/all?asset_id={page_id}&selected_item_id={psid}&thread_type=FB_MESSAGE"
    )
}

/// One line for a person, ending with the inbox link.
pub fn text(n: &Notice<'_>) -> String {
    let why = n.cause.map(cause_words).map(|w| format!(" ({w})"));
    let why = why.as_deref().unwrap_or("");
    let what = match n.event {
        NoticeEvent::HandedToInbox => {
            format!("A Messenger user is waiting in the Page Inbox{why}.")
        }
        NoticeEvent::HandoverFailed => {
            let error = n.error.map(|e| format!(": {e}")).unwrap_or_default();
            format!("A handover to the Page Inbox failed; the bot kept the user{error}.")
        }
        NoticeEvent::Waiting => format!(
            "A Messenger user has waited {} for an agent's reply.",
            duration_words(n.waited_ms.unwrap_or(0))
        ),
        NoticeEvent::ReturnedToBot => format!("A conversation is back with the bot{why}."),
    };
    format!("{what} {}", inbox_url(n.page_id, n.psid))
}

fn cause_words(cause: &str) -> &str {
    match cause {
        "user_asked" => "the user asked for the bot",
        "fulfillment" => "asked through Dialogflow",
        "agent_handed_back" => "an agent handed it back",
        "idle_timeout" => "no agent reply within AGENT_IDLE_TIMEOUT_SECS",
        "inbox_request" => "the inbox asked for it",
        "inbox_took" => "an agent took it in the inbox",
        "reconciler" => "found by the reconciler",
        "corrected" => "Meta says the bot has it",
        "admin" => "an operator, through the admin API",
        other => other,
    }
}

fn duration_words(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        _ => format!("{} h", secs / 3600),
    }
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(event: NoticeEvent) -> Notice<'static> {
        Notice {
            event,
            page_id: "958823367603818",
            psid: "1534862223272449",
            epoch: 3,
            at_ms: 1_764_687_845_123,
            cause: None,
            waited_ms: None,
            error: None,
        }
    }

    #[test]
    fn the_full_body_carries_every_field_and_a_text_line() {
        let mut n = notice(NoticeEvent::Waiting);
        n.waited_ms = Some(312_400);
        let v: serde_json::Value = serde_json::from_slice(&body(&n, Format::Full)).unwrap();
        assert_eq!(v["event"], "waiting");
        assert_eq!(
            v["id"],
            "958823367603818/1534862223272449/3/waiting/1764687845123"
        );
        assert_eq!(v["at"], "2025-12-02T15:04:05.123Z");
        assert_eq!(v["psid"], "1534862223272449");
        assert_eq!(v["waited_secs"], 312);
        assert!(v.get("cause").is_none() && v.get("error").is_none(), "{v}");
        let text = v["text"].as_str().unwrap();
        assert!(
            text.starts_with("A Messenger user has waited 5 min"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "asset_id=958823367603818&selected_item_id=1534862223272449&thread_type=FB_MESSAGE"
            ),
            "{text}"
        );
        assert_eq!(
            v["inbox_url"].as_str().unwrap(),
            text.rsplit(' ').next().unwrap()
        );
    }

    #[test]
    fn chat_webhooks_get_text_alone() {
        let google = "https://chat.googleapis.com/v1/spaces/AAAA/messages?key=k&token=t";
        let slack = "https://hooks.slack.com/services/T000/B000/XXXX";
        assert_eq!(Format::for_url(google), Format::TextOnly);
        assert_eq!(Format::for_url(slack), Format::TextOnly);
        assert_eq!(
            Format::for_url("https://agents.example.com/hook"),
            Format::Full
        );
        let mut n = notice(NoticeEvent::HandedToInbox);
        n.cause = Some("inbox_took");
        let v: serde_json::Value = serde_json::from_slice(&body(&n, Format::TextOnly)).unwrap();
        let fields: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(fields, ["text"]);
        assert!(
            v["text"].as_str().unwrap().starts_with(
                "A Messenger user is waiting in the Page Inbox (an agent took it in the inbox)."
            ),
            "{v}"
        );
    }

    #[test]
    fn a_failed_handover_says_why_and_a_return_says_who() {
        let mut n = notice(NoticeEvent::HandoverFailed);
        n.error = Some("pass_thread_control failed: (#100) invalid app");
        assert!(text(&n).contains("the bot kept the user: pass_thread_control failed"));
        let mut n = notice(NoticeEvent::ReturnedToBot);
        n.cause = Some("idle_timeout");
        assert!(text(&n).starts_with(
            "A conversation is back with the bot (no agent reply within AGENT_IDLE_TIMEOUT_SECS)."
        ));
        assert_eq!(duration_words(59_999), "59 s");
        assert_eq!(duration_words(7_200_000), "2 h");
    }
}

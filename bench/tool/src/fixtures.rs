//! Request bodies built from the service's own fixtures, and webhook signatures.
//!
//! The fixtures are compiled in, so the tool needs no path at run time.

use std::sync::LazyLock;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const HANDOVER: &str = include_str!("../../../crates/service/fixtures/dialogflow/handover.json");
const PLAIN: &str = include_str!("../../../crates/service/fixtures/dialogflow/plain_intent.json");
const STANDBY: &str =
    include_str!("../../../crates/service/fixtures/messenger/standby_user_message.json");

/// The Page of the fixtures (`recipient.id`, `entry[].id`).
pub const PAGE_ID: &str = "958823367603818";

/// What the wrk script replaces with a PSID in a fulfillment template.
pub const PSID_PLACEHOLDER: &str = "@PSID@";

/// The two kinds of fulfillment request the benchmark sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Intent {
    /// An ordinary intent (`order.status`): answered with its own text.
    Plain,
    /// The handover action (`input.handover`).
    Handover,
}

fn parse(text: &str) -> Value {
    // The fixtures are part of the repository and are valid JSON (the service's tests read them).
    serde_json::from_str(text).unwrap_or(Value::Null)
}

static HANDOVER_JSON: LazyLock<Value> = LazyLock::new(|| parse(HANDOVER));
static PLAIN_JSON: LazyLock<Value> = LazyLock::new(|| parse(PLAIN));
static STANDBY_JSON: LazyLock<Value> = LazyLock::new(|| parse(STANDBY));

/// A Dialogflow webhook request for Messenger user `psid` on `page_id`, with its own session
/// (`…/sessions/bench-<psid>`, output contexts renamed to it), as one line of JSON.
pub fn fulfillment_body(intent: Intent, psid: &str, page_id: &str) -> String {
    let mut v = match intent {
        Intent::Plain => PLAIN_JSON.clone(),
        Intent::Handover => HANDOVER_JSON.clone(),
    };
    let old_session = v["session"].as_str().unwrap_or_default().to_owned();
    let agent = old_session
        .rsplit_once('/')
        .map_or(old_session.as_str(), |(agent, _)| agent);
    let session = format!("{agent}/bench-{psid}");
    v["session"] = json!(session);
    let data = &mut v["originalDetectIntentRequest"]["payload"]["data"];
    data["sender"]["id"] = json!(psid);
    data["recipient"]["id"] = json!(page_id);
    if let Some(contexts) = v["queryResult"]["outputContexts"].as_array_mut() {
        for c in contexts {
            let name = c["name"]
                .as_str()
                .unwrap_or_default()
                .replace(&old_session, &session);
            c["name"] = json!(name);
            if c["parameters"].get("facebook_sender_id").is_some() {
                c["parameters"]["facebook_sender_id"] = json!(psid);
            }
        }
    }
    v.to_string()
}

/// A `standby` delivery of a user message `text` from `psid`, with message id `mid`, as one
/// line of JSON.
pub fn standby_body(psid: &str, page_id: &str, mid: &str, text: &str, now_ms: u64) -> String {
    let mut v = STANDBY_JSON.clone();
    let entry = &mut v["entry"][0];
    entry["id"] = json!(page_id);
    entry["time"] = json!(now_ms);
    let event = &mut entry["standby"][0];
    event["sender"]["id"] = json!(psid);
    event["recipient"]["id"] = json!(page_id);
    event["timestamp"] = json!(now_ms);
    event["message"] = json!({ "mid": mid, "text": text });
    v.to_string()
}

/// `sha256=<lowercase hex HMAC-SHA256 of body keyed by secret>`, as Meta signs deliveries.
pub fn sign(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac(secret, body)))
}

/// HMAC-SHA256 of `body` keyed by `secret`.
pub fn hmac(secret: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length.
        Err(_) => return Vec::new(),
    };
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// A 16-digit PSID: `base + i`.
pub fn psid(base: u64, i: u64) -> String {
    (base + i).to_string()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fulfillment_body_names_the_user_everywhere() {
        let body = fulfillment_body(Intent::Handover, "9100000000000007", PAGE_ID);
        assert!(!body.contains('\n'));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["queryResult"]["action"], "input.handover");
        assert!(
            v["session"]
                .as_str()
                .unwrap()
                .ends_with("/bench-9100000000000007")
        );
        assert_eq!(
            v["originalDetectIntentRequest"]["payload"]["data"]["sender"]["id"],
            "9100000000000007"
        );
        for c in v["queryResult"]["outputContexts"].as_array().unwrap() {
            assert!(
                c["name"]
                    .as_str()
                    .unwrap()
                    .contains("/bench-9100000000000007/")
            );
        }
        assert!(!body.contains("1534862223272449"));
    }

    #[test]
    fn a_standby_body_carries_its_mid_and_text() {
        let body = standby_body("9100000000000001", PAGE_ID, "m_1", "back to bot", 5);
        let v: Value = serde_json::from_str(&body).unwrap();
        let event = &v["entry"][0]["standby"][0];
        assert_eq!(event["sender"]["id"], "9100000000000001");
        assert_eq!(event["message"]["mid"], "m_1");
        assert_eq!(event["message"]["text"], "back to bot");
    }

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let sig = sign("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

//! Dialogflow ES v2 fulfillment webhook types.
//!
//! Parsing is tolerant: unknown fields are ignored (Dialogflow keeps adding fields such as
//! `diagnosticInfo` or `alternativeQueryResults`), almost everything is optional, and free-form
//! parts (`parameters`, `payload`, rich messages) stay `serde_json::Value`. Only `session` and
//! `queryResult` are required, since nothing useful can be done without them.

use crate::limits::json_kind;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The body Dialogflow ES POSTs to the fulfillment webhook.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    /// Full session name, reused verbatim (may contain `locations/…` or `environments/…/users/…`).
    pub session: String,
    pub query_result: QueryResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_detect_intent_request: Option<OriginalDetectIntentRequest>,
}

/// `queryResult` of a webhook request (the fields this service may look at).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_required_params_present: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfillment_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfillment_messages: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_contexts: Option<Vec<Context>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent_detection_confidence: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnostic_info: Option<Value>,
}

/// The matched intent (Dialogflow fills in only some fields).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// `originalDetectIntentRequest`: for the Facebook integration `payload.data` is the raw
/// Messenger event and `payload.source` is `"facebook"`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OriginalDetectIntentRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// A Dialogflow context (`<session>/contexts/<id>`), as used in webhooks and the REST API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    pub name: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lifespan_number_or_string"
    )]
    pub lifespan_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

impl Context {
    /// A context of the return policy, (re-)created under `session`.
    pub fn restored(session: &str, c: &handover_core::contexts::RestoredContext) -> Self {
        Self {
            name: context_name(session, &c.id),
            lifespan_count: Some(c.lifespan_count),
            parameters: c.parameters.clone(),
        }
    }
}

/// Accepts `4`, `4.0`, `"4"` or `null` (proto3 JSON allows int32 as a string).
fn lifespan_number_or_string<'de, D>(deserializer: D) -> Result<Option<i32>, D::Error>
where
    D: Deserializer<'de>,
{
    use serde::de::Error;

    let value = Option::<Value>::deserialize(deserializer)?;
    let invalid = |shown: &dyn std::fmt::Display| {
        D::Error::custom(format!(
            "invalid lifespanCount {shown}: expected an integer between 0 and {}",
            i32::MAX
        ))
    };
    let number = match &value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                i
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() <= i32::MAX as f64 => f as i64,
                    _ => return Err(invalid(n)),
                }
            }
        }
        Some(Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(i) => i,
            Err(_) => return Err(invalid(&format!("{s:?}"))),
        },
        Some(other) => return Err(invalid(other)),
    };
    i32::try_from(number)
        .ok()
        .filter(|n| *n >= 0)
        .map(Some)
        .ok_or_else(|| invalid(&number))
}

/// Why a webhook body was rejected: what is wrong and, when one field is, which
/// (`session`, `queryResult.outputContexts[2].name`, …).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct WebhookParseError {
    pub field: Option<String>,
    pub message: String,
}

/// Longest error message, in characters: serde's may quote a value of the body.
const MAX_ERROR_CHARS: usize = 300;

impl WebhookParseError {
    fn new(message: String) -> Self {
        let mut message = message;
        if crate::limits::truncate_chars(&mut message, MAX_ERROR_CHARS) {
            message.push('…');
        }
        Self {
            field: None,
            message,
        }
    }

    fn field(field: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self {
            message: format!("field `{field}`: {problem}"),
            field: Some(field),
        }
    }
}

/// Where Dialogflow puts the Messenger event's ids.
const SENDER_ID: &str = "originalDetectIntentRequest.payload.data.sender.id";
const RECIPIENT_ID: &str = "originalDetectIntentRequest.payload.data.recipient.id";

/// Longest context id, in bytes (Dialogflow: "may be at most 250 bytes long").
const MAX_CONTEXT_ID_BYTES: usize = 250;

impl WebhookRequest {
    /// Parses a webhook body. Unknown fields are ignored; `session` and `queryResult` are
    /// required. What becomes a key, a row or a URL path is checked: the session is one of
    /// Dialogflow's session forms, the Messenger ids are Meta ids, the context ids are
    /// Dialogflow's.
    pub fn parse(body: &[u8]) -> Result<Self, WebhookParseError> {
        // Straight into the request (every turn comes here); the body is read as plain JSON
        // only to say what is wrong with one that is not a request.
        let request: WebhookRequest = serde_json::from_slice(body).map_err(|e| {
            let value = match serde_json::from_slice::<Value>(body) {
                Ok(value) => value,
                Err(e) => {
                    return WebhookParseError::new(format!("body is not valid JSON: {e}"));
                }
            };
            if !value.is_object() {
                return WebhookParseError::new(format!(
                    "not a Dialogflow WebhookRequest: expected a JSON object, found {}",
                    json_kind(&value)
                ));
            }
            WebhookParseError::new(format!("not a Dialogflow WebhookRequest: {e}"))
        })?;
        request.check()?;
        Ok(request)
    }

    fn check(&self) -> Result<(), WebhookParseError> {
        if self.session.trim().is_empty() {
            return Err(WebhookParseError::field("session", "is empty"));
        }
        super::session::check(&self.session)
            .map_err(|why| WebhookParseError::field("session", why))?;
        let data = self.messenger_event();
        for (field, key) in [(SENDER_ID, "sender"), (RECIPIENT_ID, "recipient")] {
            check_id(field, data.and_then(|d| d.get(key)?.get("id")))?;
        }
        for (i, context) in self.output_contexts().iter().enumerate() {
            let id = context_id(&context.name);
            if let Some(why) = context_id_problem(id) {
                let field = format!("queryResult.outputContexts[{i}].name");
                return Err(WebhookParseError::field(field, why));
            }
            if id == "generic" {
                let sender = context
                    .parameters
                    .as_ref()
                    .and_then(|p| p.get("facebook_sender_id"));
                let field =
                    format!("queryResult.outputContexts[{i}].parameters.facebook_sender_id");
                check_id(&field, sender)?;
            }
        }
        Ok(())
    }

    fn messenger_event(&self) -> Option<&Value> {
        self.original_detect_intent_request
            .as_ref()?
            .payload
            .as_ref()?
            .get("data")
    }

    /// The Messenger sender PSID: `originalDetectIntentRequest.payload.data.sender.id`, else the
    /// `generic` context's `facebook_sender_id`. Never an empty string.
    pub fn psid(&self) -> Option<String> {
        self.messenger_event()
            .and_then(|data| data.get("sender"))
            .and_then(|sender| sender.get("id"))
            .and_then(id_string)
            .or_else(|| {
                self.output_contexts()
                    .iter()
                    .filter(|c| context_id(&c.name) == "generic")
                    .find_map(|c| {
                        c.parameters
                            .as_ref()
                            .and_then(|p| p.get("facebook_sender_id"))
                            .and_then(id_string)
                    })
            })
    }

    /// Whether Dialogflow answered a user's message (text or quick reply), which Meta
    /// delivers only to the app that owns the thread, rather than a postback, which goes to
    /// the app that sent the button whoever owns the thread.
    pub fn is_messenger_message(&self) -> bool {
        self.messenger_event().is_some_and(|data| {
            data.get("message").is_some_and(|m| m.is_object()) && data.get("postback").is_none()
        })
    }

    /// Meta's timestamp (epoch ms) of the Messenger event Dialogflow answered:
    /// `originalDetectIntentRequest.payload.data.timestamp`.
    pub fn messenger_timestamp(&self) -> Option<i64> {
        let ts = self.messenger_event()?.get("timestamp")?;
        let ms = ts.as_i64().or_else(|| ts.as_str()?.trim().parse().ok())?;
        // Seconds are not what Meta sends here, but cost nothing to accept. Saturating: an
        // absurd negative number overflowed (found by the property tests).
        Some(if ms < 1_000_000_000_000 {
            ms.saturating_mul(1000)
        } else {
            ms
        })
    }

    /// The Facebook Page id: `originalDetectIntentRequest.payload.data.recipient.id`.
    pub fn page_id(&self) -> Option<String> {
        self.messenger_event()
            .and_then(|data| data.get("recipient"))
            .and_then(|recipient| recipient.get("id"))
            .and_then(id_string)
    }

    /// `queryResult.action`, if non-empty.
    pub fn action(&self) -> Option<&str> {
        self.query_result
            .action
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
    }

    /// `queryResult.outputContexts` (empty if absent).
    pub fn output_contexts(&self) -> &[Context] {
        self.query_result.output_contexts.as_deref().unwrap_or(&[])
    }

    /// The matched intent's own console-defined response, unchanged, without `outputContexts`.
    pub fn own_response(&self) -> WebhookResponse {
        WebhookResponse {
            fulfillment_text: self.query_result.fulfillment_text.clone(),
            fulfillment_messages: self.query_result.fulfillment_messages.clone(),
            output_contexts: None,
        }
    }

    /// `fulfillmentText` if non-empty, else the first non-empty text of a `text` message in
    /// `fulfillmentMessages`.
    pub fn own_text(&self) -> Option<String> {
        if let Some(text) = self
            .query_result
            .fulfillment_text
            .as_deref()
            .filter(|t| !t.trim().is_empty())
        {
            return Some(text.to_owned());
        }
        self.query_result
            .fulfillment_messages
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .filter_map(|m| m.get("text")?.get("text")?.as_array())
            .flatten()
            .filter_map(Value::as_str)
            .find(|t| !t.trim().is_empty())
            .map(str::to_owned)
    }
}

/// A Messenger id that may arrive as a string or a number; `None` if empty.
fn id_string(value: &Value) -> Option<String> {
    let s = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

/// A Messenger id field, when present and not empty, must be a Meta id (a digit string or a
/// whole number).
fn check_id(field: &str, value: Option<&Value>) -> Result<(), WebhookParseError> {
    let problem = match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => crate::limits::meta_id_problem(s.trim()),
        Some(Value::Number(n)) if n.is_u64() => None,
        Some(other) => Some(format!("is {}, not a digit string", json_kind(other))),
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(WebhookParseError::field(
            field,
            format!("not a Messenger id: it {why}"),
        )),
    }
}

/// Why `id` cannot be a Dialogflow context id: "may only contain characters in a-zA-Z0-9_-%
/// and may be at most 250 bytes long". Dots alone (also as `%2e`) would be a path step.
fn context_id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        Some("the context id (after `/contexts/`) is empty".to_owned())
    } else if id.len() > MAX_CONTEXT_ID_BYTES {
        Some(format!(
            "the context id is longer than {MAX_CONTEXT_ID_BYTES} bytes"
        ))
    } else if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '%'))
    {
        Some(
            "the context id may only have the characters a-z, A-Z, 0-9, `_`, `-` and `%`"
                .to_owned(),
        )
    } else if id
        .to_ascii_lowercase()
        .replace("%2e", ".")
        .chars()
        .all(|c| c == '.')
    {
        Some("the context id is dots only".to_owned())
    } else {
        None
    }
}

/// The webhook's answer to Dialogflow ES.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfillment_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fulfillment_messages: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_contexts: Option<Vec<Context>>,
}

impl WebhookResponse {
    /// A plain text answer: `fulfillmentText` plus the same text as a `text` message.
    pub fn text(text: &str) -> Self {
        Self {
            fulfillment_text: Some(text.to_owned()),
            fulfillment_messages: Some(vec![serde_json::json!({ "text": { "text": [text] } })]),
            output_contexts: None,
        }
    }
}

/// The full context name `{session}/contexts/{id}`.
pub fn context_name(session: &str, id: &str) -> String {
    format!("{session}/contexts/{id}")
}

pub use handover_core::contexts::{context_id, is_integration_context};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PSID: &str = "1534862223272449";
    const PAGE: &str = "958823367603818";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/dialogflow/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
    }

    fn parse_fixture(name: &str) -> WebhookRequest {
        WebhookRequest::parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn handover_fixture() {
        let req = parse_fixture("handover.json");
        assert_eq!(
            req.session,
            "projects/handover-demo-4f2a1/agent/sessions/3c32f610-3f2b-4bd8-9712-43eb69c06c43"
        );
        assert_eq!(req.action(), Some("input.handover"));
        assert_eq!(req.psid().as_deref(), Some(PSID));
        assert_eq!(req.page_id().as_deref(), Some(PAGE));
        assert_eq!(
            req.query_result.query_text.as_deref(),
            Some("I want to talk to a human")
        );
        let ids: Vec<&str> = req
            .output_contexts()
            .iter()
            .map(|c| context_id(&c.name))
            .collect();
        assert_eq!(ids, ["generic", "order-followup", "__system_counters__"]);
        let generic = &req.output_contexts()[0];
        assert_eq!(generic.lifespan_count, Some(4));
        let order = &req.output_contexts()[1];
        assert_eq!(order.lifespan_count, Some(3));
        assert_eq!(
            order.parameters.as_ref().and_then(|p| p.get("order_id")),
            Some(&json!("A-1042"))
        );
        assert_eq!(
            req.own_text().as_deref(),
            Some("Connecting you with a person…")
        );
        let own = req.own_response();
        assert_eq!(
            own.fulfillment_text.as_deref(),
            Some("Connecting you with a person…")
        );
        assert_eq!(
            own.fulfillment_messages,
            req.query_result.fulfillment_messages
        );
        assert!(own.output_contexts.is_none());
        assert_eq!(
            req.query_result
                .intent
                .as_ref()
                .and_then(|i| i.display_name.as_deref()),
            Some("Handover to human")
        );
    }

    #[test]
    fn return_to_bot_fixture() {
        let req = parse_fixture("return_to_bot.json");
        assert_eq!(req.action(), Some("input.return_to_bot"));
        assert_eq!(req.psid().as_deref(), Some(PSID));
        assert_eq!(req.page_id().as_deref(), Some(PAGE));
        assert_eq!(
            req.own_text().as_deref(),
            Some("Welcome back! The bot is here again.")
        );
    }

    #[test]
    fn plain_intent_fixture() {
        let req = parse_fixture("plain_intent.json");
        assert_eq!(req.action(), Some("order.status"));
        assert_eq!(req.psid().as_deref(), Some(PSID));
        let messages = req.query_result.fulfillment_messages.as_deref().unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1]["platform"], "FACEBOOK");
        assert!(messages[1].get("quickReplies").is_some());
        // no fulfillmentText: falls back to the first text message
        assert_eq!(
            req.own_text().as_deref(),
            Some("Your order A-1042 has shipped and should arrive on Thursday.")
        );
        let own = req.own_response();
        assert_eq!(own.fulfillment_messages.as_deref(), Some(messages));
        assert!(!req.output_contexts().is_empty());
    }

    #[test]
    fn console_simulator_fixture() {
        let req = parse_fixture("console_simulator.json");
        assert_eq!(req.psid(), None);
        assert_eq!(req.page_id(), None);
        assert!(req.action().is_some());
        assert!(
            req.output_contexts()
                .iter()
                .all(|c| context_id(&c.name) != "generic")
        );
    }

    #[test]
    fn regional_session_fixture() {
        let req = parse_fixture("regional_session.json");
        assert!(
            req.session
                .starts_with("projects/handover-demo-4f2a1/locations/europe-west2/agent/environments/production/users/-/sessions/")
        );
        assert_eq!(req.action(), Some("input.handover"));
        // PSID only in the generic context (no originalDetectIntentRequest payload)
        assert_eq!(req.psid().as_deref(), Some(PSID));
        assert_eq!(req.page_id(), None);
        for ctx in req.output_contexts() {
            assert!(ctx.name.starts_with(&req.session), "{}", ctx.name);
        }
        let ids: Vec<&str> = req
            .output_contexts()
            .iter()
            .map(|c| context_id(&c.name))
            .collect();
        assert!(ids.contains(&"generic"));
        assert!(ids.contains(&"order-followup"));
    }

    #[test]
    fn not_a_webhook_request_fixture() {
        let err = WebhookRequest::parse(&fixture("not_a_webhook_request.json")).unwrap_err();
        assert!(
            err.message.starts_with("not a Dialogflow WebhookRequest"),
            "{err}"
        );
        assert!(err.message.contains("missing field `session`"), "{err}");
    }

    #[test]
    fn invalid_json_is_reported_as_such() {
        let err = WebhookRequest::parse(b"{\"session\": ").unwrap_err();
        assert!(err.message.starts_with("body is not valid JSON: "), "{err}");
        let err = WebhookRequest::parse(b"").unwrap_err();
        assert!(err.message.starts_with("body is not valid JSON: "), "{err}");
    }

    #[test]
    fn non_object_bodies_say_what_they_are() {
        let err = WebhookRequest::parse(b"[1,2]").unwrap_err();
        assert_eq!(
            err.message,
            "not a Dialogflow WebhookRequest: expected a JSON object, found an array"
        );
        let err = WebhookRequest::parse(b"null").unwrap_err();
        assert!(err.message.ends_with("found null"), "{err}");
    }

    #[test]
    fn missing_query_result_and_empty_session_are_errors() {
        let err =
            WebhookRequest::parse(br#"{"session":"projects/p/agent/sessions/s"}"#).unwrap_err();
        assert!(err.message.contains("missing field `queryResult`"), "{err}");
        let err = WebhookRequest::parse(br#"{"session":"  ","queryResult":{}}"#).unwrap_err();
        assert_eq!(err.message, "field `session`: is empty");
        assert_eq!(err.field.as_deref(), Some("session"));
        let err = WebhookRequest::parse(br#"{"session":5,"queryResult":{}}"#).unwrap_err();
        assert!(
            err.message.starts_with("not a Dialogflow WebhookRequest: "),
            "{err}"
        );
        assert!(err.message.contains("invalid type"), "{err}");
    }

    #[test]
    fn minimal_request_and_unknown_fields() {
        let req = WebhookRequest::parse(
            br#"{"session":"projects/p/agent/sessions/s","queryResult":{
                "action":"","somethingNew":{"x":1},"cancelsSlotFilling":false,
                "outputContexts":[{"name":"projects/p/agent/sessions/s/contexts/a","extra":true}]},
              "alternativeQueryResults":[],"originalDetectIntentRequest":{"payload":{}}}"#,
        )
        .unwrap();
        assert_eq!(req.action(), None);
        assert_eq!(req.psid(), None);
        assert_eq!(req.page_id(), None);
        assert_eq!(req.own_text(), None);
        assert_eq!(req.own_response(), WebhookResponse::default());
        assert_eq!(req.output_contexts().len(), 1);
        assert_eq!(req.output_contexts()[0].lifespan_count, None);

        let req =
            WebhookRequest::parse(br#"{"session":"projects/p/agent/sessions/s","queryResult":{}}"#)
                .unwrap();
        assert!(req.output_contexts().is_empty());
        assert_eq!(req.own_text(), None);
    }

    #[test]
    fn lifespan_count_accepts_numbers_and_strings() {
        let parse = |v: &str| {
            serde_json::from_str::<Context>(&format!(r#"{{"name":"n","lifespanCount":{v}}}"#))
                .map(|c| c.lifespan_count)
        };
        assert_eq!(parse("4").unwrap(), Some(4));
        assert_eq!(parse("\"5\"").unwrap(), Some(5));
        assert_eq!(parse("\" 6 \"").unwrap(), Some(6));
        assert_eq!(parse("2.0").unwrap(), Some(2));
        assert_eq!(parse("0").unwrap(), Some(0));
        assert_eq!(parse("null").unwrap(), None);
        let ctx: Context = serde_json::from_str(r#"{"name":"n"}"#).unwrap();
        assert_eq!(ctx.lifespan_count, None);
        for bad in ["\"four\"", "2.5", "-1", "99999999999", "true", "[]"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("invalid lifespanCount"), "{bad}: {err}");
        }
        // and through the whole request, with a readable message
        let err = WebhookRequest::parse(
            br#"{"session":"projects/p/agent/sessions/s","queryResult":{"outputContexts":[{"name":"n","lifespanCount":"x"}]}}"#,
        )
        .unwrap_err();
        assert!(err.message.contains("invalid lifespanCount \"x\""), "{err}");
    }

    #[test]
    fn context_serialization_skips_absent_fields() {
        let ctx = Context {
            name: "projects/p/agent/sessions/s/contexts/a".into(),
            lifespan_count: None,
            parameters: None,
        };
        assert_eq!(
            serde_json::to_value(&ctx).unwrap(),
            json!({"name":"projects/p/agent/sessions/s/contexts/a"})
        );
        let ctx = Context {
            lifespan_count: Some(0),
            parameters: Some(json!({"k":"v"})),
            ..ctx
        };
        assert_eq!(
            serde_json::to_value(&ctx).unwrap(),
            json!({"name":"projects/p/agent/sessions/s/contexts/a","lifespanCount":0,"parameters":{"k":"v"}})
        );
    }

    #[test]
    fn psid_prefers_payload_then_generic_context() {
        let mut req = parse_fixture("handover.json");
        // payload sender wins over the generic context
        req.query_result.output_contexts.as_mut().unwrap()[0].parameters =
            Some(json!({"facebook_sender_id": "999"}));
        assert_eq!(req.psid().as_deref(), Some(PSID));

        // empty sender id falls back to the generic context
        req.original_detect_intent_request
            .as_mut()
            .unwrap()
            .payload
            .as_mut()
            .unwrap()["data"]["sender"]["id"] = json!("");
        assert_eq!(req.psid().as_deref(), Some("999"));

        // numeric ids are accepted
        req.query_result.output_contexts.as_mut().unwrap()[0].parameters =
            Some(json!({"facebook_sender_id": 1234}));
        assert_eq!(req.psid().as_deref(), Some("1234"));

        // empty everywhere: None, never ""
        req.query_result.output_contexts.as_mut().unwrap()[0].parameters =
            Some(json!({"facebook_sender_id": ""}));
        assert_eq!(req.psid(), None);

        // a context whose id merely ends in "generic" does not count
        req.query_result.output_contexts = Some(vec![Context {
            name: "projects/p/agent/sessions/s/contexts/not-generic".into(),
            lifespan_count: Some(1),
            parameters: Some(json!({"facebook_sender_id": "777"})),
        }]);
        assert_eq!(req.psid(), None);
    }

    #[test]
    fn page_id_accepts_numbers() {
        let req = WebhookRequest::parse(
            br#"{"session":"projects/p/agent/sessions/s","queryResult":{},"originalDetectIntentRequest":{"payload":{"data":{"recipient":{"id":958823367603818},"sender":{"id":1534862223272449}}}}}"#,
        )
        .unwrap();
        assert_eq!(req.page_id().as_deref(), Some(PAGE));
        assert_eq!(req.psid().as_deref(), Some(PSID));
    }

    #[test]
    fn own_text_skips_empty_and_non_text_messages() {
        let req = WebhookRequest::parse(
            br#"{"session":"projects/p/agent/sessions/s","queryResult":{"fulfillmentText":"",
                "fulfillmentMessages":[{"payload":{"facebook":{"text":"p"}}},{"text":{"text":[""]}},{"text":{"text":["second"]}}]}}"#,
        )
        .unwrap();
        assert_eq!(req.own_text().as_deref(), Some("second"));
    }

    #[test]
    fn text_response_shape() {
        let resp = WebhookResponse::text("Hi there");
        assert_eq!(
            serde_json::to_value(&resp).unwrap(),
            json!({"fulfillmentText":"Hi there","fulfillmentMessages":[{"text":{"text":["Hi there"]}}]})
        );
        assert_eq!(
            serde_json::to_value(WebhookResponse::default()).unwrap(),
            json!({})
        );
    }

    #[test]
    fn context_ids_and_names() {
        assert_eq!(
            context_id("projects/p/agent/sessions/s/contexts/generic"),
            "generic"
        );
        assert_eq!(
            context_id(
                "projects/p/locations/europe-west2/agent/environments/production/users/-/sessions/s/contexts/order-followup"
            ),
            "order-followup"
        );
        // a session id that itself contains "contexts" does not confuse it
        assert_eq!(
            context_id("projects/p/agent/sessions/contexts/contexts/x"),
            "x"
        );
        assert_eq!(context_id("bare-id"), "bare-id");
        let session = "projects/p/locations/europe-west2/agent/sessions/abc";
        let name = context_name(session, "awaiting_agent");
        assert_eq!(
            name,
            "projects/p/locations/europe-west2/agent/sessions/abc/contexts/awaiting_agent"
        );
        assert_eq!(context_id(&name), "awaiting_agent");
        assert!(is_integration_context("generic"));
        assert!(is_integration_context("__system_counters__"));
        assert!(!is_integration_context("order-followup"));
        assert!(!is_integration_context("generic-2"));
    }

    /// What becomes a key, a row or a URL path is refused when malformed, naming the field.
    #[test]
    fn ids_sessions_and_context_ids_are_checked_naming_the_field() {
        let request = |session: &str, sender: Value, recipient: Value, contexts: Value| {
            json!({
                "session": session,
                "queryResult": {"action": "input.handover", "outputContexts": contexts},
                "originalDetectIntentRequest": {"payload": {"data": {
                    "sender": {"id": sender}, "recipient": {"id": recipient}
                }}}
            })
            .to_string()
        };
        let session = "projects/p/agent/sessions/s";
        let fine = request(session, json!(PSID), json!(PAGE), json!([]));
        assert!(WebhookRequest::parse(fine.as_bytes()).is_ok());
        let refused = |body: String| WebhookRequest::parse(body.as_bytes()).unwrap_err();

        let err = refused(request(
            "../../etc/passwd",
            json!(PSID),
            json!(PAGE),
            json!([]),
        ));
        assert_eq!(err.field.as_deref(), Some("session"));
        assert!(
            err.message
                .starts_with("field `session`: not a Dialogflow ES session"),
            "{err}"
        );
        let err = refused(request(
            "projects/p/agent/sessions/../../x",
            json!(PSID),
            json!(PAGE),
            json!([]),
        ));
        assert_eq!(err.field.as_deref(), Some("session"));

        for bad in [
            json!("../../x?y=1#z"),
            json!("9".repeat(500_000)),
            json!(-5),
            json!(1.5),
            json!({}),
        ] {
            let err = refused(request(session, bad.clone(), json!(PAGE), json!([])));
            assert_eq!(err.field.as_deref(), Some(SENDER_ID), "{bad}");
            assert!(err.message.len() < 200, "{err}");
            let err = refused(request(session, json!(PSID), bad.clone(), json!([])));
            assert_eq!(err.field.as_deref(), Some(RECIPIENT_ID), "{bad}");
        }
        // Absent or empty ids are no Messenger user, not an error.
        assert!(
            WebhookRequest::parse(request(session, json!(""), Value::Null, json!([])).as_bytes())
                .is_ok()
        );

        let generic = |id: Value| {
            json!([{"name": format!("{session}/contexts/other")},
                   {"name": format!("{session}/contexts/generic"),
                    "parameters": {"facebook_sender_id": id}}])
        };
        let err = refused(request(
            session,
            json!(""),
            json!(PAGE),
            generic(json!("x/../y")),
        ));
        assert_eq!(
            err.field.as_deref(),
            Some("queryResult.outputContexts[1].parameters.facebook_sender_id")
        );
        assert!(
            WebhookRequest::parse(
                request(session, json!(""), json!(PAGE), generic(json!(PSID))).as_bytes()
            )
            .is_ok()
        );

        for bad_id in ["", "a/b", "a b", "%2e%2E", &"x".repeat(251), "é"] {
            let contexts = json!([{"name": format!("{session}/contexts/{bad_id}")}]);
            let err = refused(request(session, json!(PSID), json!(PAGE), contexts));
            assert_eq!(
                err.field.as_deref(),
                Some("queryResult.outputContexts[0].name"),
                "{bad_id:?}: {err}"
            );
        }
        let contexts = json!([{"name": format!("{session}/contexts/__system_counters__")},
                              {"name": format!("{session}/contexts/order-followup%20x")}]);
        assert!(
            WebhookRequest::parse(
                request(session, json!(PSID), json!(PAGE), contexts)
                    .to_string()
                    .as_bytes()
            )
            .is_ok()
        );
    }

    /// Found by the property tests: a timestamp of absurd seconds overflowed.
    #[test]
    fn any_timestamp_gets_an_answer() {
        for (ts, expected) in [
            (json!(i64::MIN), i64::MIN),
            (json!(-10_000_000_000_000_000i64), i64::MIN),
            (json!("-9223372036854776"), i64::MIN),
            (json!(1_515_189_036i64), 1_515_189_036_000),
            (json!(1_515_189_036_665i64), 1_515_189_036_665),
        ] {
            let body = json!({
                "session": "projects/p/agent/sessions/s",
                "queryResult": {},
                "originalDetectIntentRequest": {"payload": {"data": {"timestamp": ts}}},
            });
            let request = WebhookRequest::parse(body.to_string().as_bytes()).unwrap();
            assert_eq!(request.messenger_timestamp(), Some(expected), "{ts}");
        }
    }
}

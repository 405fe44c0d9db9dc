//! The emulated Dialogflow ES agent: a small rule-based intent matcher, per-session contexts
//! with lifespans, and the JSON shapes of `queryResult`, `WebhookRequest` and
//! `WebhookResponse` (see `reference/dialogflow.md` §1, §2, §4). Pure: no I/O.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

/// One intent of the demo agent.
#[derive(Debug)]
pub(crate) struct IntentDef {
    pub id: &'static str,
    pub display_name: &'static str,
    pub action: &'static str,
    /// "Enable webhook call for this intent".
    pub webhook: bool,
    /// The intent's static (console) text response.
    pub text: &'static str,
}

pub(crate) const WELCOME: IntentDef = IntentDef {
    id: "7f5b2f0e-0c1e-4d5a-9a51-6a1d2e3f4a01",
    display_name: "Default Welcome Intent",
    action: "input.welcome",
    webhook: false,
    text: "Hi! I'm the demo bot. Ask me about an order, or ask for a human.",
};
pub(crate) const ORDER_STATUS: IntentDef = IntentDef {
    id: "7f5b2f0e-0c1e-4d5a-9a51-6a1d2e3f4a02",
    display_name: "order.status",
    action: "order.status",
    webhook: false,
    text: "Order A-1042 is on its way.",
};
pub(crate) const HUMAN_HANDOVER: IntentDef = IntentDef {
    id: "7f5b2f0e-0c1e-4d5a-9a51-6a1d2e3f4a03",
    display_name: "Human handover",
    action: "input.handover",
    webhook: true,
    text: "Connecting you with a person…",
};
pub(crate) const RETURN_TO_BOT: IntentDef = IntentDef {
    id: "7f5b2f0e-0c1e-4d5a-9a51-6a1d2e3f4a04",
    display_name: "Return to bot",
    action: "input.return_to_bot",
    webhook: true,
    text: "Welcome back!",
};
pub(crate) const FALLBACK: IntentDef = IntentDef {
    id: "7f5b2f0e-0c1e-4d5a-9a51-6a1d2e3f4a05",
    display_name: "Default Fallback Intent",
    action: "input.unknown",
    webhook: false,
    text: "Sorry, I didn't get that.",
};

/// Lifespan of the `order-followup` output context of `order.status`.
pub(crate) const ORDER_FOLLOWUP_LIFESPAN: i32 = 5;
/// Lifespan of the Messenger integration's `generic` context.
pub(crate) const GENERIC_LIFESPAN: i32 = 4;

/// The result of matching one query against the rules.
#[derive(Debug)]
pub(crate) struct Matched {
    pub intent: &'static IntentDef,
    pub text: String,
    pub parameters: Map<String, Value>,
    /// Output contexts set by the intent: (id, lifespan, parameters).
    pub contexts: Vec<(String, i32, Value)>,
}

/// Lowercases, turns every run of non-alphanumeric characters (punctuation, `_`) into one
/// space, and trims. `"BACK_TO_BOT!"` → `"back to bot"`.
pub(crate) fn normalize(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_lowercase().next().unwrap_or(c)
            } else {
                ' '
            }
        })
        .collect();
    mapped.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn has_phrase(norm: &str, phrase: &str) -> bool {
    format!(" {norm} ").contains(&format!(" {phrase} "))
}

fn has_word(norm: &str, words: &[&str]) -> bool {
    norm.split(' ').any(|w| words.contains(&w))
}

/// Case-insensitive keyword rules, tried in this order: return to bot, human handover, order
/// status, welcome, fallback.
pub(crate) fn match_intent(text: &str) -> Matched {
    let norm = normalize(text);
    let simple = |intent: &'static IntentDef| Matched {
        intent,
        text: intent.text.to_string(),
        parameters: Map::new(),
        contexts: Vec::new(),
    };
    const RETURN_PHRASES: [&str; 5] = [
        "back to bot",
        "back to the bot",
        "talk to bot",
        "talk to the bot",
        "return to bot",
    ];
    if RETURN_PHRASES.iter().any(|p| has_phrase(&norm, p)) {
        return simple(&RETURN_TO_BOT);
    }
    if has_word(&norm, &["human", "agent", "person", "operator", "someone"]) {
        return simple(&HUMAN_HANDOVER);
    }
    if norm.split(' ').any(|w| w.starts_with("order")) {
        let number: String = text
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let shown = if number.is_empty() { "1042" } else { &number };
        let mut parameters = Map::new();
        parameters.insert("order_id".into(), Value::String(number.clone()));
        let ctx_params = json!({ "order_id": number, "order_id.original": number });
        return Matched {
            intent: &ORDER_STATUS,
            text: format!("Order A-{shown} is on its way."),
            parameters,
            contexts: vec![("order-followup".into(), ORDER_FOLLOWUP_LIFESPAN, ctx_params)],
        };
    }
    if has_word(&norm, &["hi", "hello", "hey"]) {
        return simple(&WELCOME);
    }
    simple(&FALLBACK)
}

/// A parsed Dialogflow ES session name. Accepts the four documented patterns:
/// `projects/P/agent/sessions/S`, `projects/P/agent/environments/E/users/U/sessions/S`, and the
/// same two with `locations/L/` after the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionName {
    pub project: String,
    pub location: Option<String>,
    pub environment: Option<String>,
    pub user: Option<String>,
    pub session: String,
}

impl SessionName {
    pub fn parse(name: &str) -> Option<SessionName> {
        let parts: Vec<&str> = name.split('/').collect();
        let seg = |i: usize| parts.get(i).copied().filter(|s| !s.is_empty());
        if seg(0)? != "projects" {
            return None;
        }
        let project = seg(1)?.to_string();
        let mut i = 2;
        let mut location = None;
        if seg(i) == Some("locations") {
            location = Some(seg(i + 1)?.to_string());
            i += 2;
        }
        if seg(i)? != "agent" {
            return None;
        }
        i += 1;
        let (mut environment, mut user) = (None, None);
        if seg(i) == Some("environments") {
            environment = Some(seg(i + 1)?.to_string());
            if seg(i + 2)? != "users" {
                return None;
            }
            user = Some(seg(i + 3)?.to_string());
            i += 4;
        }
        if seg(i)? != "sessions" {
            return None;
        }
        let session = seg(i + 1)?.to_string();
        if i + 2 != parts.len() {
            return None;
        }
        Some(SessionName {
            project,
            location,
            environment,
            user,
            session,
        })
    }

    /// The storage key: the draft environment and user `-` are the defaults, so
    /// `…/agent/sessions/S` and `…/agent/environments/draft/users/-/sessions/S` are one session.
    pub fn key(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.project,
            self.environment.as_deref().unwrap_or("draft"),
            self.user.as_deref().unwrap_or("-"),
            self.session
        )
    }
}

/// The context id from a full context name: the segment after the last `/contexts/`
/// (or the whole string when it has no slash), lowercased. `None` when it is not a valid id
/// (`a-zA-Z0-9_-%`, at most 250 bytes).
pub(crate) fn context_id(name: &str) -> Option<String> {
    let id = match name.rfind("/contexts/") {
        Some(pos) => &name[pos + "/contexts/".len()..],
        None if !name.contains('/') => name,
        None => return None,
    };
    let valid = !id.is_empty()
        && id.len() <= 250
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '%'));
    valid.then(|| id.to_ascii_lowercase())
}

/// `lifespanCount` as proto3 JSON allows it: a number or a numeric string; absent = 0.
pub(crate) fn lifespan_of(ctx: &Value) -> i32 {
    match ctx.get("lifespanCount") {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .unwrap_or(0)
            .clamp(i32::MIN as i64, i32::MAX as i64) as i32,
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// One active context.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ctx {
    pub lifespan: i32,
    pub params: Value,
}

/// Per-session contexts of the agent.
#[derive(Debug, Default)]
pub(crate) struct Agent {
    sessions: HashMap<String, BTreeMap<String, Ctx>>,
}

impl Agent {
    pub fn contexts(&self, key: &str) -> Vec<(String, Ctx)> {
        self.sessions
            .get(key)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    pub fn get(&self, key: &str, id: &str) -> Option<Ctx> {
        self.sessions.get(key).and_then(|m| m.get(id)).cloned()
    }

    /// Creates or overrides a context; a lifespan of 0 (or less) removes it.
    pub fn set(&mut self, key: &str, id: &str, lifespan: i32, params: Value) {
        let ctxs = self.sessions.entry(key.to_string()).or_default();
        if lifespan <= 0 {
            ctxs.remove(id);
        } else {
            let params = if params.is_object() {
                params
            } else {
                json!({})
            };
            ctxs.insert(id.to_string(), Ctx { lifespan, params });
        }
    }

    pub fn delete(&mut self, key: &str, id: &str) -> bool {
        self.sessions
            .get_mut(key)
            .is_some_and(|m| m.remove(id).is_some())
    }

    /// Removes every context of the session; returns how many there were.
    pub fn clear(&mut self, key: &str) -> usize {
        self.sessions.remove(key).map(|m| m.len()).unwrap_or(0)
    }

    /// One conversational query: every active context loses one unit of lifespan (and is
    /// dropped at 0), `reset` clears the session, the query's input contexts are set, the rules
    /// pick an intent, and its output contexts are set.
    pub fn detect(
        &mut self,
        project: &str,
        session_path: &str,
        key: &str,
        input: QueryInput<'_>,
    ) -> QueryOutcome {
        let ctxs = self.sessions.entry(key.to_string()).or_default();
        ctxs.retain(|_, c| {
            c.lifespan -= 1;
            c.lifespan > 0
        });
        if input.reset {
            ctxs.clear();
        }
        for (id, lifespan, params) in input.contexts {
            self.set(key, &id, lifespan, params);
        }
        let matched = match_intent(input.text);
        for (id, lifespan, params) in &matched.contexts {
            self.set(key, id, *lifespan, params.clone());
        }
        let query_result = json!({
            "queryText": input.text,
            "action": matched.intent.action,
            "parameters": Value::Object(matched.parameters.clone()),
            "allRequiredParamsPresent": true,
            "fulfillmentText": matched.text,
            "fulfillmentMessages": [ { "text": { "text": [ matched.text ] } } ],
            "outputContexts": self.output_contexts(session_path, key),
            "intent": {
                "name": format!("projects/{project}/agent/intents/{}", matched.intent.id),
                "displayName": matched.intent.display_name,
            },
            "intentDetectionConfidence": 1.0,
            "languageCode": input.language,
        });
        QueryOutcome {
            query_result,
            intent: matched.intent,
            text: matched.text,
        }
    }

    /// The session's active contexts as `Context` JSON with full names.
    pub fn output_contexts(&self, session_path: &str, key: &str) -> Vec<Value> {
        self.contexts(key)
            .iter()
            .map(|(id, c)| context_json(session_path, id, c))
            .collect()
    }
}

/// The input of one query.
#[derive(Debug)]
pub(crate) struct QueryInput<'a> {
    pub text: &'a str,
    pub language: &'a str,
    pub reset: bool,
    /// Input contexts (id, lifespan, parameters), applied before matching.
    pub contexts: Vec<(String, i32, Value)>,
}

#[derive(Debug)]
pub(crate) struct QueryOutcome {
    pub query_result: Value,
    pub intent: &'static IntentDef,
    /// The static text response of the match.
    pub text: String,
}

pub(crate) fn context_json(session_path: &str, id: &str, c: &Ctx) -> Value {
    json!({
        "name": format!("{session_path}/contexts/{id}"),
        "lifespanCount": c.lifespan,
        "parameters": c.params,
    })
}

/// A Dialogflow ES v2 `WebhookRequest`.
pub(crate) fn webhook_request(
    response_id: &str,
    session: &str,
    query_result: &Value,
    original: Value,
) -> Value {
    json!({
        "responseId": response_id,
        "session": session,
        "queryResult": query_result,
        "originalDetectIntentRequest": original,
    })
}

/// The contexts a `WebhookResponse` sets or deletes: (id, lifespan, parameters). Entries with
/// an invalid name are skipped. A missing `lifespanCount` is 0 (proto3 default: expires now).
pub(crate) fn response_contexts(resp: &Value) -> Vec<(String, i32, Value)> {
    resp.get("outputContexts")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| {
                    let id = context_id(c.get("name")?.as_str()?)?;
                    let params = c.get("parameters").cloned().unwrap_or_else(|| json!({}));
                    Some((id, lifespan_of(c), params))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What the Messenger integration sends for a `WebhookResponse` (or a `queryResult`): Send API
/// `message` objects. `fulfillmentMessages` win over `fulfillmentText`; when some messages are
/// for the `FACEBOOK` platform only those are used, else the platform-less ones.
pub(crate) fn render_messages(resp: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let messages = resp
        .get("fulfillmentMessages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let platform = |m: &Value| {
        m.get("platform")
            .and_then(Value::as_str)
            .unwrap_or("PLATFORM_UNSPECIFIED")
            .to_string()
    };
    let any_facebook = messages.iter().any(|m| platform(m) == "FACEBOOK");
    for m in &messages {
        let p = platform(m);
        let wanted = if any_facebook {
            p == "FACEBOOK"
        } else {
            p == "PLATFORM_UNSPECIFIED"
        };
        if !wanted {
            continue;
        }
        if let Some(texts) = m.pointer("/text/text").and_then(Value::as_array) {
            for t in texts.iter().filter_map(Value::as_str) {
                if !t.is_empty() {
                    out.push(json!({ "text": t }));
                }
            }
        } else if let Some(fb) = m.pointer("/payload/facebook") {
            if fb.is_object() {
                out.push(fb.clone());
            }
        } else if let Some(qr) = m.get("quickReplies") {
            let title = qr
                .get("title")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .unwrap_or("Choose an option:");
            let replies: Vec<Value> = qr
                .get("quickReplies")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(Value::as_str)
                        .map(|t| json!({ "content_type": "text", "title": t, "payload": t }))
                        .collect()
                })
                .unwrap_or_default();
            out.push(json!({ "text": title, "quick_replies": replies }));
        } else if let Some(card) = m.get("card") {
            let buttons: Vec<Value> = card
                .get("buttons")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .map(|b| {
                            let title = b.get("text").and_then(Value::as_str).unwrap_or("");
                            let pb = b.get("postback").and_then(Value::as_str).unwrap_or(title);
                            if pb.starts_with("http://") || pb.starts_with("https://") {
                                json!({ "type": "web_url", "title": title, "url": pb })
                            } else {
                                json!({ "type": "postback", "title": title, "payload": pb })
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(json!({ "attachment": { "type": "template", "payload": {
                "template_type": "generic",
                "elements": [ {
                    "title": card.get("title").cloned().unwrap_or(Value::Null),
                    "subtitle": card.get("subtitle").cloned().unwrap_or(Value::Null),
                    "image_url": card.get("imageUri").cloned().unwrap_or(Value::Null),
                    "buttons": buttons,
                } ],
            } } }));
        } else if let Some(url) = m.pointer("/image/imageUri").and_then(Value::as_str) {
            out.push(json!({ "attachment": { "type": "image", "payload": { "url": url } } }));
        }
    }
    if out.is_empty()
        && let Some(t) = resp.get("fulfillmentText").and_then(Value::as_str)
        && !t.is_empty()
    {
        out.push(json!({ "text": t }));
    }
    out
}

/// A short human-readable form of a Send API `message` object, for transcripts.
pub(crate) fn message_text(message: &Value) -> String {
    if let Some(t) = message.get("text").and_then(Value::as_str) {
        return t.to_string();
    }
    if let Some(a) = message.get("attachment") {
        if let Some(title) = a
            .pointer("/payload/elements/0/title")
            .and_then(Value::as_str)
        {
            return format!("[card] {title}");
        }
        if let Some(text) = a.pointer("/payload/text").and_then(Value::as_str) {
            return format!("[buttons] {text}");
        }
        let kind = a
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("attachment");
        return format!("[{kind}]");
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_pick_the_documented_intents() {
        assert_eq!(match_intent("Hello there").intent.action, "input.welcome");
        assert_eq!(match_intent("this").intent.action, "input.unknown");
        assert_eq!(
            match_intent("I want a HUMAN!").intent.action,
            "input.handover"
        );
        assert_eq!(
            match_intent("BACK_TO_BOT").intent.action,
            "input.return_to_bot"
        );
        let m = match_intent("where is order 77?");
        assert_eq!(m.intent.action, "order.status");
        assert_eq!(m.text, "Order A-77 is on its way.");
        assert_eq!(m.contexts[0].0, "order-followup");
        assert_eq!(m.parameters["order_id"], "77");
    }

    #[test]
    fn session_names_of_every_documented_form_parse() {
        let s = SessionName::parse("projects/p/agent/sessions/abc").unwrap();
        assert_eq!(s.session, "abc");
        let e =
            SessionName::parse("projects/p/agent/environments/draft/users/-/sessions/abc").unwrap();
        assert_eq!(e.key(), s.key());
        let l = SessionName::parse(
            "projects/p/locations/europe-west1/agent/environments/prod/users/u/sessions/abc",
        )
        .unwrap();
        assert_eq!(l.location.as_deref(), Some("europe-west1"));
        assert_eq!(l.environment.as_deref(), Some("prod"));
        assert!(SessionName::parse("projects/p/agent/sessions/").is_none());
        assert!(SessionName::parse("projects/p/agent/sessions/a/b").is_none());
        assert!(SessionName::parse("projects//agent/sessions/a").is_none());
    }

    #[test]
    fn lifespans_decrement_per_query_and_contexts_drop_at_zero() {
        let mut a = Agent::default();
        a.set("k", "x", 2, json!({}));
        let q = |text| QueryInput {
            text,
            language: "en",
            reset: false,
            contexts: vec![],
        };
        a.detect("p", "projects/p/agent/sessions/s", "k", q("hmm"));
        assert_eq!(a.get("k", "x").unwrap().lifespan, 1);
        a.detect("p", "projects/p/agent/sessions/s", "k", q("hmm"));
        assert!(a.get("k", "x").is_none());
    }

    #[test]
    fn webhook_responses_render_facebook_messages_first() {
        let resp = json!({
            "fulfillmentText": "plain",
            "fulfillmentMessages": [
                { "text": { "text": ["generic"] } },
                { "payload": { "facebook": { "text": "fb" } }, "platform": "FACEBOOK" }
            ],
            "outputContexts": [
                { "name": "projects/p/agent/sessions/s/contexts/Human_Handover", "lifespanCount": "3" },
                { "name": "projects/p/agent/sessions/s/contexts/old", "lifespanCount": 0 },
                { "name": "bad name/x" }
            ]
        });
        assert_eq!(render_messages(&resp), vec![json!({ "text": "fb" })]);
        let ctxs = response_contexts(&resp);
        assert_eq!(ctxs.len(), 2);
        assert_eq!(ctxs[0].0, "human_handover");
        assert_eq!(ctxs[0].1, 3);
        assert_eq!(ctxs[1].1, 0);
        assert_eq!(
            render_messages(&json!({ "fulfillmentText": "only text" })),
            vec![json!({ "text": "only text" })]
        );
    }
}

//! The one context-on-return policy: which of the bot's Dialogflow contexts go and which come
//! back when the conversation returns to the bot. `/fulfillment` applies it in its answer
//! (in-band), the sync job through the Dialogflow API; both ask this module.

use serde_json::Value;

use crate::thread::Snapshot;

/// The output context `/fulfillment` sets at handover.
pub const HANDOVER_CONTEXT: &str = "human_handover";

/// Lifespan for a snapshot context that had none (Dialogflow's default for intents).
pub const DEFAULT_LIFESPAN: i32 = 5;

/// `CONTEXT_ON_RETURN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum ContextOnReturn {
    /// Delete the session's contexts, except the integration's own.
    Reset,
    /// Start from a clean session and re-create the contexts that were active at handover.
    Restore,
    /// Only clear `human_handover`.
    Keep,
}

impl ContextOnReturn {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A context to (re-)create, by id (the last segment of its name).
#[derive(Clone, Debug, PartialEq)]
pub struct RestoredContext {
    pub id: String,
    pub lifespan_count: i32,
    pub parameters: Option<Value>,
}

/// What a return does to the session's contexts. An id may be both deleted and created:
/// the session starts clean and the context comes back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContextChange {
    /// Context ids to delete, sorted.
    pub delete: Vec<String>,
    pub create: Vec<RestoredContext>,
}

/// The id of a context from its full name `…/sessions/S/contexts/ID` (or an id as is).
pub fn context_id(name: &str) -> &str {
    name.rsplit_once("/contexts/").map_or(name, |(_, id)| id)
}

/// Contexts owned by the Dialogflow integration / runtime, not by the agent's intents:
/// `generic` (Facebook integration) and anything starting with `__` (e.g. `__system_counters__`).
pub fn is_integration_context(id: &str) -> bool {
    id == "generic" || id.starts_with("__")
}

/// The contexts of a handover snapshot (Dialogflow's JSON contexts) worth restoring: not the
/// integration's own, not `human_handover`; a missing or zero lifespan becomes the default.
pub fn restorable(snapshot: Option<&Snapshot>) -> Vec<RestoredContext> {
    let Some(Value::Array(items)) = snapshot.and_then(Snapshot::value) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let id = context_id(item.get("name")?.as_str()?);
            if is_integration_context(id) || id == HANDOVER_CONTEXT {
                return None;
            }
            Some(RestoredContext {
                id: id.to_owned(),
                lifespan_count: match lifespan(item.get("lifespanCount")) {
                    Some(n) if n > 0 => n,
                    _ => DEFAULT_LIFESPAN,
                },
                parameters: item.get("parameters").filter(|p| !p.is_null()).cloned(),
            })
        })
        .collect()
}

/// proto3 JSON allows an int32 as a number or a string.
fn lifespan(value: Option<&Value>) -> Option<i32> {
    match value? {
        Value::Number(n) => n.as_f64().map(|f| f as i32),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The change a return makes. `active`: the contexts (names or ids) that may be alive in the
/// session, as far as the caller can know (the API's list, or the fulfillment request's
/// contexts and the snapshot's). The integration's own contexts are never touched.
pub fn on_return<'a>(
    mode: ContextOnReturn,
    active: impl IntoIterator<Item = &'a str>,
    snapshot: Option<&Snapshot>,
) -> ContextChange {
    match mode {
        ContextOnReturn::Keep => ContextChange {
            delete: vec![HANDOVER_CONTEXT.to_owned()],
            create: Vec::new(),
        },
        ContextOnReturn::Reset | ContextOnReturn::Restore => {
            let mut delete: Vec<String> = active
                .into_iter()
                .map(context_id)
                .filter(|id| !is_integration_context(id))
                .map(str::to_owned)
                .collect();
            delete.sort();
            delete.dedup();
            let create = if mode == ContextOnReturn::Restore {
                restorable(snapshot)
            } else {
                Vec::new()
            };
            ContextChange { delete, create }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn restorable_skips_integration_and_handover_contexts() {
        let snapshot = json!([
            {"name": "projects/p/agent/sessions/old/contexts/order-followup", "lifespanCount": 3, "parameters": {"order_id": "A-1042"}},
            {"name": "projects/p/agent/sessions/old/contexts/generic", "lifespanCount": 4},
            {"name": "projects/p/agent/sessions/old/contexts/__system_counters__"},
            {"name": "projects/p/agent/sessions/old/contexts/human_handover", "lifespanCount": 50},
            {"name": "projects/p/agent/sessions/old/contexts/weather"},
            {"name": "projects/p/agent/sessions/old/contexts/size", "lifespanCount": "2"}
        ]);
        let got = restorable(Some(&snapshot.into()));
        let ids: Vec<_> = got
            .iter()
            .map(|c| (c.id.as_str(), c.lifespan_count))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("order-followup", 3),
                ("weather", DEFAULT_LIFESPAN),
                ("size", 2)
            ]
        );
        assert_eq!(got[0].parameters, Some(json!({"order_id": "A-1042"})));
        assert!(restorable(None).is_empty());
    }

    #[test]
    fn keep_only_clears_the_handover_context() {
        let change = on_return(ContextOnReturn::Keep, ["a", "b"], None);
        assert_eq!(change.delete, vec![HANDOVER_CONTEXT]);
        assert!(change.create.is_empty());
    }

    #[test]
    fn reset_deletes_everything_but_the_integrations_own() {
        let active = [
            "projects/p/agent/sessions/s/contexts/order",
            "projects/p/agent/sessions/s/contexts/generic",
            "projects/p/agent/sessions/s/contexts/__system_counters__",
            "projects/p/agent/sessions/s/contexts/human_handover",
            "order",
        ];
        let change = on_return(ContextOnReturn::Reset, active, None);
        assert_eq!(change.delete, vec!["human_handover", "order"]);
        assert!(change.create.is_empty());
    }

    #[test]
    fn restore_starts_clean_and_brings_the_snapshot_back() {
        let snapshot = json!([{"name": "x/contexts/order", "lifespanCount": 3}]);
        let change = on_return(
            ContextOnReturn::Restore,
            [
                "x/contexts/order",
                "x/contexts/weather",
                "x/contexts/human_handover",
            ],
            Some(&snapshot.into()),
        );
        assert_eq!(change.delete, vec!["human_handover", "order", "weather"]);
        assert_eq!(change.create.len(), 1);
        assert_eq!(change.create[0].id, "order");
    }

    #[test]
    fn modes_parse_case_insensitively() {
        assert_eq!(
            "Restore".parse::<ContextOnReturn>(),
            Ok(ContextOnReturn::Restore)
        );
        assert!("forget".parse::<ContextOnReturn>().is_err());
        assert_eq!(ContextOnReturn::Keep.as_str(), "keep");
    }
}

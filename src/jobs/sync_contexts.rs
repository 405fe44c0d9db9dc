//! Bringing a Dialogflow session's contexts to `CONTEXT_ON_RETURN` when the bot is back.

use serde_json::Value;

use crate::config::ContextOnReturn;
use crate::dialogflow::api::{DialogflowClient, DialogflowError};
use crate::dialogflow::webhook::{Context, context_id, context_name, is_integration_context};

/// The output context `/fulfillment` sets at handover.
pub const HANDOVER_CONTEXT: &str = "human_handover";

/// Lifespan for a snapshot context that had none (Dialogflow's default for intents).
const DEFAULT_LIFESPAN: i32 = 5;

/// What the sync did, for logs and the demo transcript.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub deleted: Vec<String>,
    pub created: Vec<String>,
}

/// The contexts of a handover snapshot worth restoring, renamed under `session`.
pub fn restorable(snapshot: Option<&Value>, session: &str) -> Vec<Context> {
    let Some(items) = snapshot.and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|v| serde_json::from_value::<Context>(v.clone()).ok())
        .filter(|c| {
            let id = context_id(&c.name);
            !is_integration_context(id) && id != HANDOVER_CONTEXT
        })
        .map(|c| Context {
            name: context_name(session, context_id(&c.name)),
            lifespan_count: Some(match c.lifespan_count {
                Some(n) if n > 0 => n,
                _ => DEFAULT_LIFESPAN,
            }),
            parameters: c.parameters,
        })
        .collect()
}

pub async fn sync(
    client: &DialogflowClient,
    session: &str,
    snapshot: Option<&Value>,
    mode: ContextOnReturn,
) -> Result<SyncReport, DialogflowError> {
    let mut report = SyncReport::default();
    if mode == ContextOnReturn::Keep {
        client
            .delete_context(&context_name(session, HANDOVER_CONTEXT))
            .await?;
        report.deleted.push(HANDOVER_CONTEXT.to_owned());
        return Ok(report);
    }
    // reset and restore both start from a clean session (keeping the integration's own).
    for ctx in client.list_contexts(session).await? {
        let id = context_id(&ctx.name);
        if is_integration_context(id) {
            continue;
        }
        client.delete_context(&ctx.name).await?;
        report.deleted.push(id.to_owned());
    }
    if mode == ContextOnReturn::Restore {
        for ctx in restorable(snapshot, session) {
            client.create_context(session, &ctx).await?;
            report.created.push(context_id(&ctx.name).to_owned());
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn restorable_skips_integration_and_handover_contexts_and_renames() {
        let snapshot = json!([
            {"name": "projects/p/agent/sessions/old/contexts/order-followup", "lifespanCount": 3, "parameters": {"order_id": "A-1042"}},
            {"name": "projects/p/agent/sessions/old/contexts/generic", "lifespanCount": 4},
            {"name": "projects/p/agent/sessions/old/contexts/__system_counters__"},
            {"name": "projects/p/agent/sessions/old/contexts/human_handover", "lifespanCount": 50},
            {"name": "projects/p/agent/sessions/old/contexts/weather"}
        ]);
        let got = restorable(Some(&snapshot), "projects/p/agent/sessions/new");
        let names: Vec<_> = got
            .iter()
            .map(|c| (c.name.as_str(), c.lifespan_count))
            .collect();
        assert_eq!(
            names,
            vec![
                (
                    "projects/p/agent/sessions/new/contexts/order-followup",
                    Some(3)
                ),
                (
                    "projects/p/agent/sessions/new/contexts/weather",
                    Some(DEFAULT_LIFESPAN)
                ),
            ]
        );
        assert_eq!(got[0].parameters, Some(json!({"order_id": "A-1042"})));
        assert!(restorable(None, "s").is_empty());
    }
}

//! The Page's apps: the webhook fields each needs, what `--fix` subscribes, the handover
//! target.

use serde_json::Value;

use crate::config::{MessengerMode, PAGE_INBOX_APP_ID, Settings};
use crate::messenger::graph::GraphError;

use super::{BOT_VARS, Finding, TokenVars, graph_fix, id_text, list_or_none};

/// The webhook fields the app whose webhook is `/messenger` must be subscribed to.
pub fn required_fields(mode: MessengerMode) -> &'static [&'static str] {
    match mode {
        MessengerMode::Companion => &["standby", "messaging_handovers", "message_echoes"],
        MessengerMode::Bridge => &[
            "messages",
            "messaging_postbacks",
            "standby",
            "messaging_handovers",
            "message_echoes",
        ],
    }
}

/// The fields Dialogflow's Messenger integration (the bot app, companion mode) needs.
pub const BOT_APP_FIELDS: &[&str] = &["messages", "messaging_postbacks"];

/// One entry of `GET /{page}/subscribed_apps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribedApp {
    pub id: String,
    pub name: Option<String>,
    pub fields: Vec<String>,
}

impl SubscribedApp {
    fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("app {} ({name})", self.id),
            None => format!("app {}", self.id),
        }
    }
}

/// `{"data":[{"id","name","subscribed_fields":[…]}]}` (ids as numbers or strings).
pub fn parse_subscribed_apps(value: &Value) -> Result<Vec<SubscribedApp>, String> {
    let data = match value.get("data") {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(_) => return Err("`data` is not an array".into()),
    };
    Ok(data
        .iter()
        .filter_map(|item| {
            let id = id_text(item.get("id")?)?;
            let name = item
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.trim().is_empty())
                .map(str::to_owned);
            let fields = match item.get("subscribed_fields") {
                Some(Value::Array(fields)) => fields
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                Some(Value::String(fields)) => crate::config::split_list(fields),
                _ => Vec::new(),
            };
            Some(SubscribedApp { id, name, fields })
        })
        .collect())
}

/// The answer of `GET /{page}/subscribed_apps`: the apps, or the finding that says why not.
pub fn subscribed_apps(
    answer: Result<Value, GraphError>,
    base: &str,
) -> Result<Vec<SubscribedApp>, Finding> {
    match answer {
        Ok(value) => parse_subscribed_apps(&value).map_err(|e| {
            Finding::fail(
                format!("GET /{{page}}/subscribed_apps answered in an unexpected shape: {e}"),
                format!("check GRAPH_API_BASE ({base}) and GRAPH_API_VERSION"),
            )
        }),
        Err(e) => Err(Finding::fail(
            format!("cannot read the Page's webhook subscriptions (GET subscribed_apps): {e}"),
            graph_fix(&e, BOT_VARS, base),
        )),
    }
}

/// The required fields `app` lacks (all of them when the app is not subscribed at all).
pub fn missing_fields(required: &[&'static str], app: Option<&SubscribedApp>) -> Vec<&'static str> {
    required
        .iter()
        .copied()
        .filter(|f| !app.is_some_and(|a| a.fields.iter().any(|have| have == f)))
        .collect()
}

/// The app's current fields followed by the missing ones (what `--fix` subscribes: the call
/// replaces the app's fields, so the existing ones must be kept).
pub fn fields_to_subscribe(app: Option<&SubscribedApp>, missing: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = app.map(|a| a.fields.clone()).unwrap_or_default();
    for f in missing {
        if !out.iter().any(|have| have == f) {
            out.push((*f).to_owned());
        }
    }
    out
}

/// How `--fix` can subscribe the webhook app: the variable holding its Page token, or `None`
/// when no usable token is configured.
pub fn webhook_token_var(settings: &Settings) -> Option<&'static str> {
    if settings.fb_webhook_page_access_token.is_some() {
        Some("FB_WEBHOOK_PAGE_ACCESS_TOKEN")
    } else if settings.fb_webhook_app_id == settings.fb_app_id {
        Some("FB_PAGE_ACCESS_TOKEN")
    } else {
        None
    }
}

/// Whether the webhook app has every field the mode needs.
pub fn webhook_fields_finding(
    mode: MessengerMode,
    webhook_app_id: &str,
    app: Option<&SubscribedApp>,
    token_var: Option<&str>,
) -> Finding {
    let required = required_fields(mode);
    let missing = missing_fields(required, app);
    let label = app
        .map(SubscribedApp::label)
        .unwrap_or_else(|| format!("app {webhook_app_id}"));
    if missing.is_empty() {
        return Finding::pass(format!(
            "{label}, whose webhook is /messenger (FB_WEBHOOK_APP_ID), is subscribed to {} \
             ({} mode needs them)",
            required.join(", "),
            mode.as_str()
        ));
    }
    let text = match app {
        None => format!(
            "app {webhook_app_id} (FB_WEBHOOK_APP_ID, whose webhook is /messenger) is not \
             subscribed to the Page at all; {} mode needs {}",
            mode.as_str(),
            required.join(", ")
        ),
        Some(a) => format!(
            "{label}, whose webhook is /messenger (FB_WEBHOOK_APP_ID), is not subscribed to {} \
             ({} mode needs {}; it has {})",
            missing.join(", "),
            mode.as_str(),
            required.join(", "),
            list_or_none(&a.fields)
        ),
    };
    let by_hand = format!(
        "or tick {} in app {webhook_app_id}'s App Dashboard → Messenger → Settings → Webhooks \
         for this Page",
        missing.join(", ")
    );
    let fix = match token_var {
        Some(var) => format!(
            "run `messenger-handover doctor --fix` (it subscribes them with {var}), {by_hand}"
        ),
        None => format!(
            "set FB_WEBHOOK_PAGE_ACCESS_TOKEN to a Page access token of app {webhook_app_id} and \
             run `messenger-handover doctor --fix`, {by_hand}"
        ),
    };
    Finding::fail(text, fix)
}

/// `--fix` without a usable token for the webhook app.
pub fn no_fix_token_finding(webhook_app_id: &str, missing: &[&str]) -> Finding {
    Finding::fail(
        format!(
            "app {webhook_app_id} (FB_WEBHOOK_APP_ID) is not subscribed to {}, and --fix cannot \
             subscribe it: FB_WEBHOOK_PAGE_ACCESS_TOKEN is not set",
            missing.join(", ")
        ),
        format!(
            "set FB_WEBHOOK_PAGE_ACCESS_TOKEN to a Page access token of app {webhook_app_id} \
             (that app's App Dashboard → Messenger → Settings → Access Tokens; the subscription \
             goes to the app whose token is used) and run `messenger-handover doctor --fix` \
             again, or tick {} in that app's webhook settings",
            missing.join(", ")
        ),
    )
}

/// The variables behind the token `--fix` subscribes with (`var`, from [`webhook_token_var`]).
pub fn fix_token_vars(settings: &Settings, var: &'static str) -> TokenVars {
    TokenVars {
        token: var,
        secret: if settings.fb_webhook_app_id == settings.fb_app_id {
            "FB_APP_SECRET"
        } else {
            "FB_WEBHOOK_APP_SECRET"
        },
    }
}

/// `--fix` could not subscribe the webhook app to `missing`.
pub fn fix_failed(
    webhook_app_id: &str,
    missing: &[&str],
    vars: TokenVars,
    err: &GraphError,
    base: &str,
) -> Finding {
    let var = vars.token;
    let mut fix = graph_fix(err, vars, base);
    if matches!(err.code(), Some(10 | 200..=299)) {
        fix = format!(
            "{var} needs pages_manage_metadata and a person with the MODERATE task on the Page: \
             {fix}"
        );
    }
    Finding::fail(
        format!(
            "app {webhook_app_id} is not subscribed to {}, and --fix could not subscribe it with \
             {var}: {err}",
            missing.join(", ")
        ),
        fix,
    )
}

/// `--fix` subscribed `missing` with `var`; `after` is [`webhook_fields_finding`] on the apps
/// read again, or the finding of why they could not be read.
pub fn fix_outcome(
    webhook_app_id: &str,
    missing: &[&str],
    var: &str,
    after: Result<Finding, Finding>,
) -> Finding {
    match after {
        Ok(after) if after.ok => Finding::pass(format!(
            "--fix subscribed {} with {var}: {}",
            missing.join(", "),
            after.text
        )),
        Ok(after) => Finding::fail(
            format!("after --fix with {var}: {}", after.text),
            format!(
                "{var} must be a Page access token of app {webhook_app_id} (the subscription goes \
                 to the app whose token is used)"
            ),
        ),
        Err(unreadable) => Finding {
            text: format!(
                "--fix subscribed {}, but then {}",
                missing.join(", "),
                unreadable.text
            ),
            ..unreadable
        },
    }
}

/// Companion mode: Dialogflow's integration (the bot app) must still get the user's messages.
pub fn bot_app_fields_finding(bot_app_id: &str, app: Option<&SubscribedApp>) -> Finding {
    let missing = missing_fields(BOT_APP_FIELDS, app);
    let label = match app.and_then(|a| a.name.as_deref()) {
        Some(name) => format!("{bot_app_id} ({name})"),
        None => bot_app_id.to_owned(),
    };
    if missing.is_empty() {
        Finding::pass(format!(
            "the bot app {label} (FB_APP_ID, Dialogflow's Messenger integration) is subscribed \
             to {}",
            BOT_APP_FIELDS.join(", ")
        ))
    } else {
        Finding::fail(
            format!(
                "the bot app {label} (FB_APP_ID, Dialogflow's Messenger integration) is not \
                 subscribed to {}: the bot will not see users' messages",
                missing.join(", ")
            ),
            "reconnect the Page in the Dialogflow console → Integrations → Facebook Messenger \
             (it subscribes messages and messaging_postbacks), or tick them in the bot app's \
             webhook settings",
        )
    }
}

/// `HANDOVER_TARGET_APP_ID`; `apps` is the Page's subscribed apps when they could be read.
pub fn target_finding(
    target: &str,
    webhook_app_id: &str,
    bot_app_id: &str,
    apps: Option<&[SubscribedApp]>,
) -> Finding {
    if target == PAGE_INBOX_APP_ID {
        return Finding::pass(format!(
            "HANDOVER_TARGET_APP_ID is the Page Inbox ({PAGE_INBOX_APP_ID}): people answer in \
             Meta Business Suite / the Page Inbox"
        ));
    }
    let back_to_inbox = "or unset HANDOVER_TARGET_APP_ID to hand over to the Page Inbox \
                         (263902037430900)";
    if target == webhook_app_id && webhook_app_id != bot_app_id {
        return Finding::fail(
            format!(
                "HANDOVER_TARGET_APP_ID={target} is the app whose webhook is /messenger: the \
                 bot would hand threads to this service instead of to people"
            ),
            format!("set it to the app your agents use, {back_to_inbox}"),
        );
    }
    match apps.map(|apps| apps.iter().find(|a| a.id == target)) {
        Some(Some(app)) => Finding::pass(format!(
            "HANDOVER_TARGET_APP_ID={target} is not the Page Inbox but another app, {}, which \
             is connected to the Page",
            app.label()
        )),
        Some(None) => Finding::fail(
            format!(
                "HANDOVER_TARGET_APP_ID={target} is not the Page Inbox ({PAGE_INBOX_APP_ID}) \
                 and app {target} is not connected to the Page: passing threads to it fails"
            ),
            format!(
                "connect app {target} to the Page and subscribe it to messaging_handovers, \
                 {back_to_inbox}"
            ),
        ),
        None => Finding::pass(format!(
            "HANDOVER_TARGET_APP_ID={target} is not the Page Inbox but another app (whether it \
             is connected to the Page could not be checked)"
        )),
    }
}

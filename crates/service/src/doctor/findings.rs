//! The rules of doctor: facts in (API answers, errors, settings), [`Finding`]s out, each ✗
//! with how to fix it. Pure: no I/O here, so every rule is unit-tested (`findings/tests.rs`).

use std::path::{Path, PathBuf};

use serde_json::Value;
use time::{Date, OffsetDateTime};

use crate::config::{
    DialogflowSettings, FulfillmentAuth, GoogleCredentials, MessengerMode, PAGE_INBOX_APP_ID,
    Settings,
};
use crate::dialogflow::api::DialogflowError;
use crate::dialogflow::auth::AuthError;
use crate::messenger::graph::GraphError;

use super::versions::days_until;

#[cfg(test)]
mod tests;

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub text: String,
    /// How to fix it; always set when `ok` is false.
    pub fix: Option<String>,
}

impl Finding {
    pub fn pass(text: impl Into<String>) -> Finding {
        Finding {
            ok: true,
            text: text.into(),
            fix: None,
        }
    }

    pub fn fail(text: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            ok: false,
            text: text.into(),
            fix: Some(fix.into()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Settings alone
// ---------------------------------------------------------------------------------------------

/// `MESSENGER_MODE`, and in companion mode whether `/messenger` belongs to a second app.
pub fn mode_finding(settings: &Settings) -> Finding {
    match settings.messenger_mode {
        MessengerMode::Bridge => Finding::fail(
            "MESSENGER_MODE=bridge is not implemented by `serve` yet (it refuses to start)",
            "use MESSENGER_MODE=companion (the default): Dialogflow's Messenger integration \
             stays the bot app's webhook and a second Meta app's webhook points at /messenger",
        ),
        MessengerMode::Companion if settings.fb_webhook_app_id == settings.fb_app_id => {
            Finding::fail(
                format!(
                    "MESSENGER_MODE=companion, but FB_WEBHOOK_APP_ID is the bot app {} itself: \
                     its webhook is Dialogflow's integration, so /messenger needs a second Meta \
                     app",
                    settings.fb_app_id
                ),
                "create a second Meta app, add Messenger, connect it to the Page, point its \
                 webhook at https://<your host>/messenger, and set FB_WEBHOOK_APP_ID, \
                 FB_WEBHOOK_APP_SECRET (and FB_WEBHOOK_PAGE_ACCESS_TOKEN for doctor --fix)",
            )
        }
        MessengerMode::Companion => Finding::pass(format!(
            "MESSENGER_MODE=companion: the bot app {} (FB_APP_ID) answers through Dialogflow's \
             integration; app {} (FB_WEBHOOK_APP_ID) delivers standby, handover and echo events \
             to /messenger",
            settings.fb_app_id, settings.fb_webhook_app_id
        )),
    }
}

/// Companion mode with a second app: `/messenger` events are signed with that app's secret.
pub fn webhook_secret_finding(settings: &Settings) -> Option<Finding> {
    if settings.fb_webhook_app_id == settings.fb_app_id {
        return None;
    }
    let app = &settings.fb_webhook_app_id;
    Some(
        if settings.fb_webhook_app_secret == settings.fb_app_secret {
            Finding::fail(
                format!(
                    "FB_WEBHOOK_APP_SECRET is not set (it defaults to FB_APP_SECRET), but events \
                     from app {app} to /messenger are signed with that app's own secret and \
                     would all be rejected"
                ),
                format!(
                    "set FB_WEBHOOK_APP_SECRET to app {app}'s App Secret (its App Dashboard → \
                     App settings → Basic)"
                ),
            )
        } else {
            Finding::pass(format!(
                "FB_WEBHOOK_APP_SECRET is set for app {app}: /messenger checks its signatures \
                 with it"
            ))
        },
    )
}

pub fn fulfillment_finding(auth: &FulfillmentAuth) -> Finding {
    match auth {
        FulfillmentAuth::Bearer(_) => Finding::pass(
            "fulfillment auth: a bearer token (FULFILLMENT_TOKEN); the Dialogflow console → \
             Fulfillment → Webhook must send the header Authorization: Bearer <that token>",
        ),
        FulfillmentAuth::Basic { .. } => Finding::pass(
            "fulfillment auth: Basic (FULFILLMENT_USERNAME / FULFILLMENT_PASSWORD); the \
             Dialogflow console → Fulfillment → Webhook must use the same username and password",
        ),
        FulfillmentAuth::None => Finding::fail(
            "FULFILLMENT_AUTH=none: anyone who finds /fulfillment can trigger handovers",
            "remove FULFILLMENT_AUTH and set FULFILLMENT_TOKEN (16+ random characters) with the \
             header Authorization: Bearer <token> in the Dialogflow console → Fulfillment, or \
             FULFILLMENT_USERNAME + FULFILLMENT_PASSWORD with Basic auth there",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The Page and its token
// ---------------------------------------------------------------------------------------------

/// `GET /me?fields=id,name`, compared with `FB_PAGE_ID`.
pub fn page_findings(me: &Value, configured_page_id: Option<&str>) -> Vec<Finding> {
    let Some(id) = me.get("id").and_then(id_text) else {
        return vec![Finding::fail(
            "GET /me answered without an id: FB_PAGE_ACCESS_TOKEN does not look like a Page \
             access token",
            "use a Page access token of the bot app (App Dashboard → Messenger → Settings → \
             Access Tokens), not a user or app token",
        )];
    };
    let name = me
        .get("name")
        .and_then(Value::as_str)
        .map(|n| format!("\"{n}\" "))
        .unwrap_or_default();
    let mut out = vec![Finding::pass(format!(
        "the Page token (FB_PAGE_ACCESS_TOKEN) works: GET /me is Page {name}({id})"
    ))];
    out.push(match configured_page_id.map(str::trim) {
        Some(configured) if configured == id => {
            Finding::pass(format!("FB_PAGE_ID={configured} is the Page of the token"))
        }
        Some(configured) => Finding::fail(
            format!(
                "FB_PAGE_ID={configured} is not the Page of FB_PAGE_ACCESS_TOKEN (GET /me is \
                 Page {name}({id}))"
            ),
            format!("set FB_PAGE_ID={id}, or use a Page access token of Page {configured}"),
        ),
        None => Finding::pass(format!(
            "FB_PAGE_ID is not set: calls use /me, which is Page {id} (setting FB_PAGE_ID={id} \
             makes that explicit)"
        )),
    });
    out
}

/// `GET /me` with the Page token failed.
pub fn page_token_failed(err: &GraphError, base: &str) -> Finding {
    Finding::fail(
        format!("the Page token (FB_PAGE_ACCESS_TOKEN) does not work: GET /me: {err}"),
        graph_fix(err, BOT_VARS, base),
    )
}

/// A check that needs the Page token, when `GET /me` failed with it.
pub fn skipped_without_token(what: &str) -> Finding {
    Finding::fail(
        format!("{what} not checked: the Page token does not work"),
        "fix FB_PAGE_ACCESS_TOKEN first (see above), then run doctor again",
    )
}

const NO_HANDOVER_PERMISSION: &str =
    "the often-quoted pages_messaging_handover permission does not exist";

/// `debug_token` of the Page token: valid, the bot app's, a Page token, with `pages_messaging`.
pub fn permissions_finding(debug: &Value, bot_app_id: &str, today: Date) -> Finding {
    let new_token = format!(
        "generate a new Page access token with the bot app {bot_app_id} (App Dashboard → \
         Messenger → Settings → Access Tokens, or a system user's token that does not expire) \
         and set FB_PAGE_ACCESS_TOKEN"
    );
    let Some(data) = debug.get("data").filter(|d| d.is_object()) else {
        return Finding::fail(
            "debug_token answered without `data`: the Page token's permissions are unknown",
            "check FB_APP_ID, FB_APP_SECRET and GRAPH_API_BASE, then run doctor again",
        );
    };
    if data.get("is_valid").and_then(as_bool) != Some(true) {
        let why = data
            .get("error")
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        return Finding::fail(
            format!("debug_token says FB_PAGE_ACCESS_TOKEN is not valid{why}"),
            new_token,
        );
    }
    if let Some(app) = data.get("app_id").and_then(id_text)
        && app != bot_app_id
    {
        return Finding::fail(
            format!(
                "FB_PAGE_ACCESS_TOKEN belongs to app {app}, not to the bot app FB_APP_ID={bot_app_id}"
            ),
            format!(
                "use a Page token of the bot app {bot_app_id} (the app Dialogflow's integration \
                 answers as), or correct FB_APP_ID"
            ),
        );
    }
    if let Some(kind) = data.get("type").and_then(Value::as_str)
        && !kind.eq_ignore_ascii_case("PAGE")
    {
        return Finding::fail(
            format!("FB_PAGE_ACCESS_TOKEN is a {kind} token, not a Page access token"),
            format!(
                "get the Page's token (GET /me/accounts with a user token that has \
                 pages_show_list, or the App Dashboard), then {new_token}"
            ),
        );
    }
    let scopes: Vec<String> = data
        .get("scopes")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if !scopes.iter().any(|s| s == "pages_messaging") {
        return Finding::fail(
            format!(
                "the Page token lacks pages_messaging, the only permission thread control and \
                 the Send API need (it has {}); {NO_HANDOVER_PERMISSION}",
                list_or_none(&scopes)
            ),
            format!(
                "add pages_messaging to the bot app {bot_app_id} (App Review → Permissions and \
                 Features; Advanced Access for users without a role on the app) and generate \
                 the Page token again; do not look for pages_messaging_handover"
            ),
        );
    }
    let mut text = format!(
        "the Page token is valid and has pages_messaging, the only permission handover needs \
         ({NO_HANDOVER_PERMISSION}); scopes: {}",
        scopes.join(", ")
    );
    // `expires_at` is a Unix time; 0 means the token does not expire.
    if let Some(day) = data
        .get("expires_at")
        .and_then(Value::as_i64)
        .filter(|e| *e > 0)
        .and_then(|e| OffsetDateTime::from_unix_timestamp(e).ok())
        .map(OffsetDateTime::date)
    {
        text.push_str(&format!(
            " — warning: the token expires on {day} (in {} days); use a long-lived Page token",
            days_until(day, today)
        ));
    }
    Finding::pass(text)
}

/// `debug_token` (with the app access token) failed.
pub fn debug_token_failed(err: &GraphError, base: &str) -> Finding {
    Finding::fail(
        format!(
            "cannot read the Page token's permissions (debug_token with the app access token \
             FB_APP_ID|FB_APP_SECRET): {err}"
        ),
        debug_token_fix(err, base),
    )
}

/// `GET /me?fields=messaging_feature_status`.
pub fn routing_finding(me: &Value, bot_app_id: &str) -> Finding {
    let status = me.get("messaging_feature_status");
    let flag = |name: &str| status.and_then(|s| s.get(name)).and_then(as_bool);
    let setup = format!(
        "in the Page's settings → Advanced messaging → Conversation Routing, make the bot app \
         {bot_app_id} the default app for Messenger and turn on its \"Take control of \
         conversations\""
    );
    match flag("msgr_multi_app") {
        Some(true) => Finding::pass(format!(
            "Conversation Routing is on for Messenger (messaging_feature_status.msgr_multi_app \
             = true); the bot app {bot_app_id} should be the default app with \"Take control \
             of conversations\" on (not visible to the API)"
        )),
        Some(false) => {
            let legacy = if flag("hop_v2") == Some(true) {
                " and hop_v2 = true: the retired Handover Protocol roles are still in use"
            } else {
                ""
            };
            Finding::fail(
                format!(
                    "Conversation Routing is not set up for Messenger \
                     (messaging_feature_status.msgr_multi_app = false{legacy})"
                ),
                format!("{setup}; Primary/Secondary Receiver settings no longer apply"),
            )
        }
        None => Finding::fail(
            "the Page did not report its Conversation Routing status (no \
             messaging_feature_status.msgr_multi_app in GET /me?fields=messaging_feature_status)",
            format!(
                "use a current GRAPH_API_VERSION (≥ v23.0) and a Page token of a person with \
                 the MANAGE task on the Page; {setup}"
            ),
        ),
    }
}

/// `GET /me?fields=messaging_feature_status` failed.
pub fn routing_unreadable(err: &GraphError, base: &str) -> Finding {
    Finding::fail(
        format!(
            "cannot read the Conversation Routing status \
             (GET /me?fields=messaging_feature_status): {err}"
        ),
        graph_fix(err, BOT_VARS, base),
    )
}

// ---------------------------------------------------------------------------------------------
// The Page's apps and their webhook fields
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// How to fix a failed Graph call
// ---------------------------------------------------------------------------------------------

/// Which token a Graph call used, for the fix texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenVars {
    pub token: &'static str,
    pub secret: &'static str,
}

pub const BOT_VARS: TokenVars = TokenVars {
    token: "FB_PAGE_ACCESS_TOKEN",
    secret: "FB_APP_SECRET",
};

/// How to fix a failed Graph call made with the Page token in `vars.token`.
pub fn graph_fix(err: &GraphError, vars: TokenVars, base: &str) -> String {
    let TokenVars { token, secret } = vars;
    match err {
        GraphError::Api {
            code,
            subcode,
            message,
            ..
        } => match (*code, *subcode) {
            (190, _) => format!(
                "{token} is not a valid Page access token (mistyped, expired or revoked): \
                 generate a new one (App Dashboard → Messenger → Settings → Access Tokens, or \
                 a system user's token that does not expire)"
            ),
            (100, Some(33)) => format!(
                "FB_PAGE_ID is not the Page of {token}, or the token cannot see it: set \
                 FB_PAGE_ID to the Page's id, or unset it to use /me"
            ),
            (100, _) if message.contains("appsecret_proof") => format!(
                "{secret} is not the App Secret of the app that issued {token}: copy it from \
                 the App Dashboard → App settings → Basic"
            ),
            (10 | 200..=299, _) => format!(
                "the token lacks a permission or the person who issued it lacks a Page task: \
                 grant pages_messaging (and pages_manage_metadata to subscribe webhooks), have \
                 a Page admin generate {token} again"
            ),
            (4 | 17 | 32 | 613, _) => {
                "rate limited by Meta: wait a few minutes and run doctor again".to_owned()
            }
            (1 | 2, _) => "a temporary Meta error: run doctor again in a minute".to_owned(),
            _ => format!("check {token}, {secret}, FB_PAGE_ID and GRAPH_API_VERSION"),
        },
        GraphError::Timeout | GraphError::Transport(_) | GraphError::Connect(_) => format!(
            "cannot reach GRAPH_API_BASE ({base}): check the network, proxy and firewall, and \
             GRAPH_API_BASE"
        ),
        GraphError::Http { .. } | GraphError::Decode(_) => format!(
            "GRAPH_API_BASE ({base}) did not answer like the Graph API: check GRAPH_API_BASE \
             and GRAPH_API_VERSION"
        ),
    }
}

/// How to fix a failed `debug_token` call (made with the app access token).
pub fn debug_token_fix(err: &GraphError, base: &str) -> String {
    match err {
        GraphError::Api { code: 190, .. } | GraphError::Api { code: 101, .. } => {
            "FB_APP_ID|FB_APP_SECRET is not a valid app access token: copy the App ID and App \
             Secret of the bot app from the App Dashboard → App settings → Basic"
                .to_owned()
        }
        other => graph_fix(other, BOT_VARS, base),
    }
}

// ---------------------------------------------------------------------------------------------
// Dialogflow
// ---------------------------------------------------------------------------------------------

/// Without `DIALOGFLOW_PROJECT_ID`.
pub fn dialogflow_off() -> Finding {
    Finding::pass(
        "Dialogflow is not configured (DIALOGFLOW_PROJECT_ID is not set): context sync is off \
         by choice",
    )
}

/// The token source could not be built from the credentials (the agent is then not checked).
pub fn credentials_unusable(
    err: &AuthError,
    credentials: &GoogleCredentials,
    project: &str,
) -> Vec<Finding> {
    vec![
        Finding::fail(
            format!("the Google credentials for Dialogflow are not usable: {err}"),
            token_fix(credentials, project),
        ),
        agent_skipped(project),
    ]
}

/// The token source (`source`, as it describes itself) gave no token: `why`.
pub fn no_access_token(
    source: &str,
    why: &str,
    credentials: &GoogleCredentials,
    project: &str,
) -> Vec<Finding> {
    vec![
        Finding::fail(
            format!("the Google credentials ({source}) yield no access token: {why}"),
            token_fix(credentials, project),
        ),
        agent_skipped(project),
    ]
}

fn agent_skipped(project: &str) -> Finding {
    Finding::fail(
        format!("the Dialogflow agent of project {project} not checked: no Google access token"),
        "fix the Google credentials first (see above)",
    )
}

pub fn access_token_ok(source: &str) -> Finding {
    Finding::pass(format!(
        "the Google credentials ({source}) yield an access token for Dialogflow"
    ))
}

/// The answer of `GET projects/{project}/agent`; `context_on_return` is the sync mode.
pub fn agent_finding(
    answer: Result<Value, DialogflowError>,
    df: &DialogflowSettings,
    context_on_return: &str,
) -> Finding {
    let project = df.project_id.as_str();
    match answer {
        Ok(agent) => {
            let name = agent
                .get("displayName")
                .and_then(Value::as_str)
                .map(|n| format!("\"{n}\" "))
                .unwrap_or_default();
            Finding::pass(format!(
                "the Dialogflow agent {name}of project {project} (location {}) can be read: \
                 context sync ({context_on_return}) can work",
                df.location
            ))
        }
        Err(e) => Finding::fail(
            format!("cannot read the Dialogflow agent of project {project}: {e}"),
            dialogflow_fix(&e, project, &df.location, &df.api_base),
        ),
    }
}

/// How to fix a Dialogflow API failure.
pub fn dialogflow_fix(err: &DialogflowError, project: &str, location: &str, base: &str) -> String {
    match err {
        DialogflowError::Api { status: 401, .. } | DialogflowError::Auth(_) => {
            credentials_fix(project)
        }
        DialogflowError::Api { status: 403, .. } => format!(
            "give the service account the Dialogflow API Client role (roles/dialogflow.client) \
             in project {project}, and enable the Dialogflow API there"
        ),
        DialogflowError::Api { status: 404, .. } => format!(
            "there is no Dialogflow ES agent at project {project}, location {location}: check \
             DIALOGFLOW_PROJECT_ID and DIALOGFLOW_LOCATION"
        ),
        DialogflowError::Api { status, .. } if *status == 429 || *status >= 500 => {
            "a temporary Google error: run doctor again in a minute".to_owned()
        }
        DialogflowError::Timeout | DialogflowError::Transport(_) => format!(
            "cannot reach the Dialogflow API at {base}: check the network and DIALOGFLOW_API_BASE"
        ),
        _ => format!(
            "check DIALOGFLOW_PROJECT_ID ({project}), DIALOGFLOW_LOCATION ({location}) and \
             DIALOGFLOW_API_BASE"
        ),
    }
}

fn credentials_fix(project: &str) -> String {
    format!(
        "set GOOGLE_APPLICATION_CREDENTIALS to a JSON key of an enabled service account of \
         project {project}, or run where the metadata server gives the workload a service \
         account (Cloud Run, GKE, Compute Engine)"
    )
}

/// How to fix a failed Google token fetch for the configured source.
pub fn token_fix(credentials: &GoogleCredentials, project: &str) -> String {
    match credentials {
        GoogleCredentials::KeyFile(path) => format!(
            "GOOGLE_APPLICATION_CREDENTIALS ({}) must be a JSON key of an enabled service \
             account (IAM → Service accounts → Keys) of project {project}, and its token_uri \
             reachable",
            path.display()
        ),
        GoogleCredentials::MetadataServer { url: Some(url) } => format!(
            "GOOGLE_METADATA_TOKEN_URL ({url}) did not give a token: correct or unset it, or set \
             GOOGLE_APPLICATION_CREDENTIALS to a service-account key file"
        ),
        GoogleCredentials::MetadataServer { url: None } => format!(
            "no metadata server here: set GOOGLE_APPLICATION_CREDENTIALS to a service-account \
             key file of project {project}, or run on Cloud Run / GKE / Compute Engine with a \
             service account attached"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

const MIGRATE: &str = "run `messenger-handover migrate` with the same DATABASE_URL";

/// An SQLite `DATABASE_URL` that is in memory, or whose file does not exist (`exists` asks);
/// `None` when there is a file to connect to, or the store is not SQLite.
pub fn sqlite_file_problem(database_url: &str, exists: impl Fn(&Path) -> bool) -> Option<Finding> {
    if !database_url.starts_with("sqlite:") {
        return None;
    }
    match sqlite_path(database_url) {
        None => Some(Finding::fail(
            format!(
                "DATABASE_URL={} is an in-memory SQLite database: conversations and queued jobs \
                 are lost on every restart",
                display_database_url(database_url)
            ),
            "use a file, sqlite:///path/to/handover.db (one replica), or postgres://… \
             (several), and run `messenger-handover migrate`",
        )),
        Some(path) if !exists(&path) => Some(Finding::fail(
            format!(
                "the SQLite store {} (DATABASE_URL) does not exist",
                path.display()
            ),
            format!("{MIGRATE} (it creates and migrates the file), or correct DATABASE_URL"),
        )),
        Some(_) => None,
    }
}

/// No connection to the store: `err` says why, or `None` for no answer within `waited_secs`.
pub fn store_unreachable(
    database_url: &str,
    err: Option<&dyn std::fmt::Display>,
    waited_secs: u64,
) -> Finding {
    let shown = display_database_url(database_url);
    match err {
        Some(e) => {
            let fix = if database_url.starts_with("sqlite:") {
                format!("check that the file is readable and writable, or {MIGRATE}")
            } else {
                "check DATABASE_URL (host, port, user, password, database) and that PostgreSQL \
                 is up and reachable from here"
                    .to_owned()
            };
            Finding::fail(format!("the store {shown} is not reachable: {e}"), fix)
        }
        None => Finding::fail(
            format!("the store {shown} is not reachable: no connection within {waited_secs} s"),
            "check DATABASE_URL and that the database is up and reachable from here",
        ),
    }
}

/// Connected to the store (`backend` names it): `ready` is its readiness (migrations applied).
pub fn store_finding(database_url: &str, backend: &str, ready: Result<(), String>) -> Finding {
    let shown = display_database_url(database_url);
    match ready {
        Ok(()) => Finding::pass(format!(
            "the store ({backend}, {shown}) is reachable and migrated"
        )),
        Err(problem) => Finding::fail(
            format!("the store ({backend}, {shown}) is reachable but not ready: {problem}"),
            MIGRATE,
        ),
    }
}

/// The file of an SQLite `DATABASE_URL`, or `None` for an in-memory database.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(PathBuf::from(path))
}

/// An SQLite URL that never creates the file (`mode=rw` unless a mode is given).
pub fn no_create_url(url: &str) -> String {
    if !url.starts_with("sqlite:") || url.contains("mode=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}mode=rw")
}

/// `DATABASE_URL` without a password, for display.
pub fn display_database_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("[redacted]"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        _ => None,
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

//! `messenger-handover doctor [--fix]`: checks a real setup and explains how to fix each problem.
//!
//! The checks: the Page token works (`GET /me`) and belongs to `FB_PAGE_ID`; its permissions
//! include `pages_messaging` (`debug_token` with the app access token `FB_APP_ID|FB_APP_SECRET`);
//! `GRAPH_API_VERSION` is not past its end date; Conversation Routing is on
//! (`messaging_feature_status`); the app whose webhook is `/messenger` is subscribed to the
//! fields the mode needs (`--fix` subscribes the missing ones with that app's Page token); the
//! handover target; the Dialogflow credentials yield a token and can read the agent;
//! fulfillment auth is set; the store is reachable and migrated.
//!
//! Evaluation is pure (API answers in, [`Finding`]s out, unit-tested below); [`run`] does the
//! calls. Each finding is one line starting with ✓ or ✗, and every ✗ says how to fix it.
//! No token or secret is ever printed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::config::{
    FulfillmentAuth, GoogleCredentials, MessengerMode, PAGE_INBOX_APP_ID, RawSettings, Settings,
};
use crate::dialogflow::api::{DialogflowClient, DialogflowError};
use crate::dialogflow::auth::{TokenSource, TokenSourceConfig};
use crate::messenger::graph::{GraphClient, GraphError, GraphSettings};
use crate::secret::Secret;
use crate::store::{Backend, Store};
use crate::time::{DAY_MS, now_ms};

/// The version `GRAPH_API_VERSION` defaults to and fixes recommend.
pub const RECOMMENDED_GRAPH_VERSION: &str = "v25.0";

/// A version ending within this many days is reported with a warning.
pub const VERSION_WARNING_DAYS: i64 = 90;

/// A calendar day: year, month, day.
pub type Ymd = (i32, u32, u32);

/// Graph API versions and the last day each is available (reference §5); `None`: no date
/// announced yet.
pub const GRAPH_VERSIONS: &[(u32, Option<Ymd>)] = &[
    (26, None),
    (25, Some((2028, 7, 29))),
    (24, Some((2028, 2, 18))),
    (23, Some((2027, 10, 8))),
    (22, Some((2027, 5, 20))),
    (21, Some((2027, 1, 21))),
    (20, Some((2026, 9, 24))),
    (19, Some((2026, 5, 21))),
    (18, Some((2026, 1, 26))),
    (17, Some((2025, 9, 12))),
];

/// Longest a store connection attempt may take before it counts as unreachable.
const STORE_TIMEOUT: Duration = Duration::from_secs(20);

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

    /// `✓ text` or `✗ text — fix: …`, on one line.
    pub fn line(&self) -> String {
        let line = match (&self.ok, &self.fix) {
            (true, _) => format!("✓ {}", self.text),
            (false, Some(fix)) => format!("✗ {} — fix: {fix}", self.text),
            (false, None) => format!("✗ {}", self.text),
        };
        // One finding, one line, whatever an API answered.
        line.replace(['\r', '\n'], " ")
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line())
    }
}

/// `messenger-handover doctor [--fix]`: exit 0 when every check passes, 1 otherwise, 2 for
/// invalid settings.
pub async fn main(raw: &RawSettings, fix: bool) -> ExitCode {
    let settings = match Settings::from_raw(raw) {
        Ok(s) => s,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            return ExitCode::from(2);
        }
    };
    let findings = run(&settings, fix).await;
    for f in &findings {
        println!("{f}");
    }
    let failed = findings.iter().filter(|f| !f.ok).count();
    if failed == 0 {
        eprintln!("doctor: all {} checks passed", findings.len());
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "doctor: {failed} of {} checks failed; each ✗ line says how to fix it",
            findings.len()
        );
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------
// Pure evaluation
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

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
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

fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        _ => None,
    }
}

const NO_HANDOVER_PERMISSION: &str =
    "the often-quoted pages_messaging_handover permission does not exist";

/// `debug_token` of the Page token: valid, the bot app's, a Page token, with `pages_messaging`.
/// `today` is days since 1970-01-01.
pub fn permissions_finding(debug: &Value, bot_app_id: &str, today: i64) -> Finding {
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
    if let Some(expires) = data
        .get("expires_at")
        .and_then(Value::as_i64)
        .filter(|e| *e > 0)
    {
        let day = expires.div_euclid(86_400);
        text.push_str(&format!(
            " — warning: the token expires on {} (in {} days); use a long-lived Page token",
            date_text(day),
            day - today
        ));
    }
    Finding::pass(text)
}

/// What is known about a Graph API version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionStatus {
    /// Available until this day (days since 1970-01-01).
    Until(i64),
    /// Released, no end date announced.
    NoEndDate,
    /// Older than the table: long gone.
    Ancient,
    Unknown,
}

pub fn graph_version_status(version: &str) -> VersionStatus {
    let Some((major, minor)) = version
        .trim()
        .strip_prefix('v')
        .and_then(|v| v.split_once('.'))
    else {
        return VersionStatus::Unknown;
    };
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return VersionStatus::Unknown;
    };
    let oldest = GRAPH_VERSIONS.iter().map(|(m, _)| *m).min().unwrap_or(0);
    if major < oldest {
        return VersionStatus::Ancient;
    }
    if minor != 0 {
        return VersionStatus::Unknown;
    }
    match GRAPH_VERSIONS.iter().find(|(m, _)| *m == major) {
        Some((_, Some((y, mo, d)))) => VersionStatus::Until(days_from_civil(*y, *mo, *d)),
        Some((_, None)) => VersionStatus::NoEndDate,
        None => VersionStatus::Unknown,
    }
}

/// `GRAPH_API_VERSION` against the table of §5. `today` is days since 1970-01-01.
pub fn graph_version_finding(version: &str, today: i64) -> Finding {
    let fix = format!("set GRAPH_API_VERSION={RECOMMENDED_GRAPH_VERSION} (the default)");
    match graph_version_status(version) {
        VersionStatus::Until(until) if today > until => Finding::fail(
            format!(
                "GRAPH_API_VERSION={version} expired on {}: Meta may reject calls or upgrade \
                 them silently",
                date_text(until)
            ),
            fix,
        ),
        VersionStatus::Until(until) if until - today <= VERSION_WARNING_DAYS => {
            Finding::pass(format!(
                "GRAPH_API_VERSION={version} is available until {} — warning: that is in {} \
                 days; move to {RECOMMENDED_GRAPH_VERSION}",
                date_text(until),
                until - today
            ))
        }
        VersionStatus::Until(until) => Finding::pass(format!(
            "GRAPH_API_VERSION={version} is available until {}",
            date_text(until)
        )),
        VersionStatus::NoEndDate => Finding::pass(format!(
            "GRAPH_API_VERSION={version} is current (no end date announced yet)"
        )),
        VersionStatus::Ancient => Finding::fail(
            format!(
                "GRAPH_API_VERSION={version} expired long ago (every version before v17.0 has \
                 ended)"
            ),
            fix,
        ),
        VersionStatus::Unknown => Finding::fail(
            format!(
                "GRAPH_API_VERSION={version} is not a Graph API version this doctor knows \
                 (v17.0 … v26.0)"
            ),
            fix,
        ),
    }
}

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

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number, as `YYYY-MM-DD`.
pub fn date_text(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Today, as days since 1970-01-01 (UTC).
pub fn today() -> i64 {
    now_ms().div_euclid(DAY_MS)
}

/// Replaces every configured secret in `text`.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "[redacted]");
        }
    }
    out
}

fn secrets_of(settings: &Settings) -> Vec<String> {
    let mut secrets: Vec<String> = [
        Some(&settings.fb_app_secret),
        Some(&settings.fb_webhook_app_secret),
        settings.fb_webhook_page_access_token.as_ref(),
        Some(&settings.fb_page_access_token),
        Some(&settings.fb_verify_token),
    ]
    .into_iter()
    .flatten()
    .map(|s| s.expose().to_owned())
    .collect();
    match &settings.fulfillment_auth {
        FulfillmentAuth::Basic { password, .. } => secrets.push(password.expose().to_owned()),
        FulfillmentAuth::Bearer(token) => secrets.push(token.expose().to_owned()),
        FulfillmentAuth::None => {}
    }
    if let Ok(url) = url::Url::parse(&settings.database_url)
        && let Some(password) = url.password()
    {
        secrets.push(password.to_owned());
    }
    // Short values would mangle ordinary words; longest first so overlapping ones go whole.
    secrets.retain(|s| s.len() >= 6);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

// ---------------------------------------------------------------------------------------------
// The calls
// ---------------------------------------------------------------------------------------------

/// Runs every check against the configured services; with `fix`, subscribes the webhook
/// fields that are missing and reports the state after that.
pub async fn run(settings: &Settings, fix: bool) -> Vec<Finding> {
    let mut out = vec![mode_finding(settings)];
    out.extend(webhook_secret_finding(settings));

    let http = crate::startup::http_client();
    let timeout = Duration::from_millis(settings.http_timeout_ms);
    let base = settings.graph_api_base.as_str();
    let graph_client = |token: &Secret, secret: &Secret| {
        GraphClient::new(
            GraphSettings {
                base: settings.graph_api_base.clone(),
                version: settings.graph_api_version.clone(),
                page_id: settings.fb_page_id.clone(),
                page_token: token.clone(),
                app_secret: secret.clone(),
                timeout,
            },
            http.clone(),
        )
    };
    let bot = graph_client(&settings.fb_page_access_token, &settings.fb_app_secret);
    let today = today();

    // The Page token, and FB_PAGE_ID.
    let token_works = match bot.me("id,name").await {
        Ok(me) => {
            out.extend(page_findings(&me, settings.fb_page_id.as_deref()));
            true
        }
        Err(e) => {
            out.push(Finding::fail(
                format!("the Page token (FB_PAGE_ACCESS_TOKEN) does not work: GET /me: {e}"),
                graph_fix(&e, BOT_VARS, base),
            ));
            false
        }
    };
    let skipped = |what: &str| {
        Finding::fail(
            format!("{what} not checked: the Page token does not work"),
            "fix FB_PAGE_ACCESS_TOKEN first (see above), then run doctor again",
        )
    };

    // Permissions: debug_token with the app access token.
    out.push(match bot.debug_token(&settings.fb_app_id).await {
        Ok(debug) => permissions_finding(&debug, &settings.fb_app_id, today),
        Err(e) => Finding::fail(
            format!(
                "cannot read the Page token's permissions (debug_token with the app access \
                 token FB_APP_ID|FB_APP_SECRET): {e}"
            ),
            debug_token_fix(&e, base),
        ),
    });

    out.push(graph_version_finding(&settings.graph_api_version, today));

    // Conversation Routing.
    out.push(if token_works {
        match bot.me("messaging_feature_status").await {
            Ok(me) => routing_finding(&me, &settings.fb_app_id),
            Err(e) => Finding::fail(
                format!(
                    "cannot read the Conversation Routing status \
                     (GET /me?fields=messaging_feature_status): {e}"
                ),
                graph_fix(&e, BOT_VARS, base),
            ),
        }
    } else {
        skipped("Conversation Routing status")
    });

    // Webhook subscriptions.
    let apps = if token_works {
        match read_apps(&bot).await {
            Ok(apps) => Some(apps),
            Err((text, fix)) => {
                out.push(Finding::fail(text, fix));
                None
            }
        }
    } else {
        out.push(skipped("the Page's webhook subscriptions"));
        None
    };
    let apps = match apps {
        Some(apps) => Some(subscriptions(settings, &bot, &graph_client, apps, fix, &mut out).await),
        None => None,
    };

    out.push(target_finding(
        &settings.handover_target_app_id,
        &settings.fb_webhook_app_id,
        &settings.fb_app_id,
        apps.as_deref(),
    ));

    out.extend(dialogflow_findings(settings, &http, timeout).await);
    out.push(fulfillment_finding(&settings.fulfillment_auth));
    out.push(store_finding(&settings.database_url).await);

    let secrets = secrets_of(settings);
    for f in &mut out {
        f.text = redact(&f.text, &secrets);
        if let Some(fix) = &mut f.fix {
            *fix = redact(fix, &secrets);
        }
    }
    out
}

async fn read_apps(bot: &GraphClient) -> Result<Vec<SubscribedApp>, (String, String)> {
    let base = bot.settings().base.clone();
    match bot.subscribed_apps().await {
        Ok(value) => parse_subscribed_apps(&value).map_err(|e| {
            (
                format!("GET /{{page}}/subscribed_apps answered in an unexpected shape: {e}"),
                format!("check GRAPH_API_BASE ({base}) and GRAPH_API_VERSION"),
            )
        }),
        Err(e) => Err((
            format!("cannot read the Page's webhook subscriptions (GET subscribed_apps): {e}"),
            graph_fix(&e, BOT_VARS, &base),
        )),
    }
}

/// The webhook app's fields (subscribing the missing ones with `fix`), and in companion mode the
/// bot app's. Returns the subscribed apps as last read.
async fn subscriptions(
    settings: &Settings,
    bot: &GraphClient,
    graph_client: &impl Fn(&Secret, &Secret) -> GraphClient,
    mut apps: Vec<SubscribedApp>,
    fix: bool,
    out: &mut Vec<Finding>,
) -> Vec<SubscribedApp> {
    let mode = settings.messenger_mode;
    let webhook_id = settings.fb_webhook_app_id.as_str();
    let token_var = webhook_token_var(settings);
    let find = |apps: &[SubscribedApp]| apps.iter().find(|a| a.id == webhook_id).cloned();
    let current = find(&apps);
    let missing = missing_fields(required_fields(mode), current.as_ref());

    if missing.is_empty() || !fix {
        out.push(webhook_fields_finding(
            mode,
            webhook_id,
            current.as_ref(),
            token_var,
        ));
    } else if let Some(var) = token_var {
        let token = match var {
            "FB_WEBHOOK_PAGE_ACCESS_TOKEN" => settings.fb_webhook_page_access_token.clone(),
            _ => Some(settings.fb_page_access_token.clone()),
        }
        .unwrap_or_default();
        let vars = TokenVars {
            token: var,
            secret: if settings.fb_webhook_app_id == settings.fb_app_id {
                "FB_APP_SECRET"
            } else {
                "FB_WEBHOOK_APP_SECRET"
            },
        };
        let client = graph_client(&token, &settings.fb_webhook_app_secret);
        let wanted = fields_to_subscribe(current.as_ref(), &missing);
        let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
        match client.subscribe_fields(&wanted).await {
            Err(e) => {
                let mut fix = graph_fix(&e, vars, &settings.graph_api_base);
                if matches!(e.code(), Some(10 | 200..=299)) {
                    fix = format!(
                        "{var} needs pages_manage_metadata and a person with the MODERATE task \
                         on the Page: {fix}"
                    );
                }
                out.push(Finding::fail(
                    format!(
                        "app {webhook_id} is not subscribed to {}, and --fix could not \
                         subscribe it with {var}: {e}",
                        missing.join(", ")
                    ),
                    fix,
                ));
            }
            Ok(()) => match read_apps(bot).await {
                Ok(after) => {
                    apps = after;
                    let now = find(&apps);
                    let finding = webhook_fields_finding(mode, webhook_id, now.as_ref(), token_var);
                    out.push(if finding.ok {
                        Finding::pass(format!(
                            "--fix subscribed {} with {var}: {}",
                            missing.join(", "),
                            finding.text
                        ))
                    } else {
                        Finding::fail(
                            format!("after --fix with {var}: {}", finding.text),
                            format!(
                                "{var} must be a Page access token of app {webhook_id} (the \
                                 subscription goes to the app whose token is used)"
                            ),
                        )
                    });
                }
                Err((text, fix)) => out.push(Finding::fail(
                    format!("--fix subscribed {}, but then {text}", missing.join(", ")),
                    fix,
                )),
            },
        }
    } else {
        out.push(no_fix_token_finding(webhook_id, &missing));
    }

    if mode == MessengerMode::Companion && settings.fb_webhook_app_id != settings.fb_app_id {
        let bot_app = apps.iter().find(|a| a.id == settings.fb_app_id);
        out.push(bot_app_fields_finding(&settings.fb_app_id, bot_app));
    }
    apps
}

async fn dialogflow_findings(
    settings: &Settings,
    http: &reqwest::Client,
    timeout: Duration,
) -> Vec<Finding> {
    let Some(df) = &settings.dialogflow else {
        return vec![Finding::pass(
            "Dialogflow is not configured (DIALOGFLOW_PROJECT_ID is not set): context sync is \
             off by choice",
        )];
    };
    let project = df.project_id.as_str();
    let config = match &df.credentials {
        GoogleCredentials::KeyFile(path) => TokenSourceConfig::ServiceAccountFile(path.clone()),
        GoogleCredentials::MetadataServer { url } => {
            TokenSourceConfig::MetadataServer { url: url.clone() }
        }
    };
    let agent_skipped = Finding::fail(
        format!("the Dialogflow agent of project {project} not checked: no Google access token"),
        "fix the Google credentials first (see above)",
    );
    let auth = match TokenSource::build(config).await {
        Ok(auth) => Arc::new(auth),
        Err(e) => {
            return vec![
                Finding::fail(
                    format!("the Google credentials for Dialogflow are not usable: {e}"),
                    token_fix(&df.credentials, project),
                ),
                agent_skipped,
            ];
        }
    };
    let source = auth.describe();
    // The token source has its own timeouts; this bounds a hung endpoint all the same.
    let token = tokio::time::timeout(timeout + Duration::from_secs(10), auth.token()).await;
    match token {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return vec![
                Finding::fail(
                    format!("the Google credentials ({source}) yield no access token: {e}"),
                    token_fix(&df.credentials, project),
                ),
                agent_skipped,
            ];
        }
        Err(_) => {
            return vec![
                Finding::fail(
                    format!("the Google credentials ({source}) yield no access token: timed out"),
                    token_fix(&df.credentials, project),
                ),
                agent_skipped,
            ];
        }
    }
    let mut out = vec![Finding::pass(format!(
        "the Google credentials ({source}) yield an access token for Dialogflow"
    ))];
    let client = DialogflowClient::new(http.clone(), df.api_base.clone(), auth, timeout)
        .with_explicit_base(df.api_base_explicit);
    out.push(match client.get_agent(project, &df.location).await {
        Ok(agent) => {
            let name = agent
                .get("displayName")
                .and_then(Value::as_str)
                .map(|n| format!("\"{n}\" "))
                .unwrap_or_default();
            Finding::pass(format!(
                "the Dialogflow agent {name}of project {project} (location {}) can be read: \
                 context sync ({}) can work",
                df.location,
                settings.context_on_return.as_str()
            ))
        }
        Err(e) => Finding::fail(
            format!("cannot read the Dialogflow agent of project {project}: {e}"),
            dialogflow_fix(&e, project, &df.location, &df.api_base),
        ),
    });
    out
}

/// Reachable and migrated, without ever creating an SQLite file.
async fn store_finding(database_url: &str) -> Finding {
    let shown = display_database_url(database_url);
    let migrate = "run `messenger-handover migrate` with the same DATABASE_URL";
    let sqlite = database_url.starts_with("sqlite:");
    if sqlite {
        match sqlite_path(database_url) {
            None => {
                return Finding::fail(
                    format!(
                        "DATABASE_URL={shown} is an in-memory SQLite database: conversations and \
                         queued jobs are lost on every restart"
                    ),
                    "use a file, sqlite:///path/to/handover.db (one replica), or postgres://… \
                     (several), and run `messenger-handover migrate`",
                );
            }
            Some(path) if !path.exists() => {
                return Finding::fail(
                    format!(
                        "the SQLite store {} (DATABASE_URL) does not exist",
                        path.display()
                    ),
                    format!(
                        "{migrate} (it creates and migrates the file), or correct DATABASE_URL"
                    ),
                );
            }
            Some(_) => {}
        }
    }
    let url = no_create_url(database_url);
    let store = match tokio::time::timeout(STORE_TIMEOUT, Store::connect(&url)).await {
        Ok(Ok(store)) => store,
        Ok(Err(e)) => {
            let fix = if sqlite {
                format!("check that the file is readable and writable, or {migrate}")
            } else {
                "check DATABASE_URL (host, port, user, password, database) and that PostgreSQL \
                 is up and reachable from here"
                    .to_owned()
            };
            return Finding::fail(format!("the store {shown} is not reachable: {e}"), fix);
        }
        Err(_) => {
            return Finding::fail(
                format!(
                    "the store {shown} is not reachable: no connection within {} s",
                    STORE_TIMEOUT.as_secs()
                ),
                "check DATABASE_URL and that the database is up and reachable from here",
            );
        }
    };
    let backend = match store.backend() {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    };
    let ready = store.readiness().await;
    store.close().await;
    match ready {
        Ok(()) => Finding::pass(format!(
            "the store ({backend}, {shown}) is reachable and migrated"
        )),
        Err(problem) => Finding::fail(
            format!("the store ({backend}, {shown}) is reachable but not ready: {problem}"),
            migrate,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn day(y: i32, m: u32, d: u32) -> i64 {
        days_from_civil(y, m, d)
    }

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let mut raw = RawSettings::from_pairs([
            ("FB_APP_ID", "111111111111111"),
            ("FB_APP_SECRET", "bot-app-secret"),
            ("FB_PAGE_ACCESS_TOKEN", "EAAB-page-token"),
            ("FB_VERIFY_TOKEN", "verify-me"),
            ("FULFILLMENT_TOKEN", "0123456789abcdef0123"),
            ("FB_WEBHOOK_APP_ID", "222222222222222"),
            ("FB_WEBHOOK_APP_SECRET", "companion-secret"),
        ]);
        for (k, v) in pairs {
            raw.set(*k, *v);
        }
        Settings::from_raw(&raw).expect("valid settings")
    }

    fn app(id: &str, fields: &[&str]) -> SubscribedApp {
        SubscribedApp {
            id: id.into(),
            name: None,
            fields: fields.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(date_text(0), "1970-01-01");
        for d in [-1000, 0, 11_016, 11_017, 20_000, 20_479, 21_000, 30_000] {
            let text = date_text(d);
            let (y, rest) = text.split_once('-').unwrap();
            let (m, dd) = rest.split_once('-').unwrap();
            assert_eq!(
                days_from_civil(y.parse().unwrap(), m.parse().unwrap(), dd.parse().unwrap()),
                d
            );
        }
        assert_eq!(date_text(day(2028, 2, 29)), "2028-02-29");
    }

    #[test]
    fn line_format() {
        assert_eq!(Finding::pass("fine").line(), "✓ fine");
        assert_eq!(
            Finding::fail("broken\nreally", "do this").line(),
            "✗ broken really — fix: do this"
        );
    }

    #[test]
    fn graph_versions_against_the_table() {
        let today = day(2026, 11, 24);
        let f = graph_version_finding("v25.0", today);
        assert!(f.ok && f.text.contains("2028-07-29") && !f.text.contains("warning"));
        let f = graph_version_finding("v26.0", today);
        assert!(f.ok && f.text.contains("no end date"), "{f:?}");
        // v18.0 ended on 2026-01-26.
        let f = graph_version_finding("v18.0", today);
        assert!(!f.ok && f.text.contains("expired on 2026-01-26"), "{f:?}");
        assert!(f.fix.unwrap().contains("GRAPH_API_VERSION=v25.0"));
        let f = graph_version_finding("v20.0", today);
        assert!(!f.ok, "v20.0 ended 2026-09-24");
        // v21.0 ends 2027-01-21: 58 days later, a warning but still fine.
        let f = graph_version_finding("v21.0", today);
        assert!(
            f.ok && f.text.contains("warning") && f.text.contains("58 days"),
            "{f:?}"
        );
        // The last day itself still works; the day after does not.
        assert!(graph_version_finding("v18.0", day(2026, 1, 26)).ok);
        assert!(!graph_version_finding("v18.0", day(2026, 1, 27)).ok);
        // 91 days before the end: no warning.
        let f = graph_version_finding("v22.0", day(2027, 5, 20) - 91);
        assert!(f.ok && !f.text.contains("warning"));
        let f = graph_version_finding("v22.0", day(2027, 5, 20) - 90);
        assert!(f.ok && f.text.contains("warning"));
        // Older than the table, unknown, malformed.
        let f = graph_version_finding("v2.6", today);
        assert!(!f.ok && f.text.contains("long ago"));
        for v in ["v27.0", "v25.1", "latest", "v99.0"] {
            let f = graph_version_finding(v, today);
            assert!(!f.ok && f.fix.is_some(), "{v}: {f:?}");
        }
        assert_eq!(graph_version_status("v99.0"), VersionStatus::Unknown);
        assert_eq!(graph_version_status("v16.0"), VersionStatus::Ancient);
    }

    #[test]
    fn fields_per_mode() {
        let companion = required_fields(MessengerMode::Companion);
        assert_eq!(
            companion,
            &["standby", "messaging_handovers", "message_echoes"]
        );
        let bridge = required_fields(MessengerMode::Bridge);
        for f in companion.iter().chain(&["messages", "messaging_postbacks"]) {
            assert!(bridge.contains(f));
        }

        let full = app("222", &["standby", "messaging_handovers", "message_echoes"]);
        assert!(missing_fields(companion, Some(&full)).is_empty());
        assert_eq!(
            missing_fields(bridge, Some(&full)),
            vec!["messages", "messaging_postbacks"]
        );
        let partial = app(
            "222",
            &["messaging_handovers", "message_echoes", "messages"],
        );
        assert_eq!(missing_fields(companion, Some(&partial)), vec!["standby"]);
        assert_eq!(missing_fields(companion, None), companion.to_vec());
        // --fix keeps what the app has.
        assert_eq!(
            fields_to_subscribe(Some(&partial), &["standby"]),
            vec![
                "messaging_handovers",
                "message_echoes",
                "messages",
                "standby"
            ]
        );
        assert_eq!(
            fields_to_subscribe(None, &["standby", "messages"]),
            vec!["standby", "messages"]
        );

        let ok = webhook_fields_finding(MessengerMode::Companion, "222", Some(&full), None);
        assert!(ok.ok, "{ok:?}");
        let bad = webhook_fields_finding(
            MessengerMode::Companion,
            "222",
            Some(&partial),
            Some("FB_WEBHOOK_PAGE_ACCESS_TOKEN"),
        );
        assert!(!bad.ok && bad.text.contains("standby"));
        assert!(bad.fix.as_deref().unwrap().contains("doctor --fix"));
        let no_token = webhook_fields_finding(MessengerMode::Companion, "222", None, None);
        assert!(no_token.text.contains("not subscribed to the Page at all"));
        assert!(
            no_token
                .fix
                .as_deref()
                .unwrap()
                .contains("FB_WEBHOOK_PAGE_ACCESS_TOKEN")
        );
        let bridge_missing =
            webhook_fields_finding(MessengerMode::Bridge, "111", Some(&full), None);
        assert!(!bridge_missing.ok && bridge_missing.text.contains("messages"));

        let f = no_fix_token_finding("222", &["standby"]);
        assert!(!f.ok && f.text.contains("FB_WEBHOOK_PAGE_ACCESS_TOKEN"));

        assert!(bot_app_fields_finding("111", Some(&app("111", BOT_APP_FIELDS))).ok);
        assert!(!bot_app_fields_finding("111", None).ok);
    }

    #[test]
    fn subscribed_apps_are_parsed() {
        let apps = parse_subscribed_apps(&json!({"data": [
            {"id": "222", "name": "Companion", "subscribed_fields": ["standby"]},
            {"id": 111, "subscribed_fields": "messages, messaging_postbacks"},
            {"name": "no id"}
        ]}))
        .unwrap();
        assert_eq!(apps.len(), 2);
        assert_eq!(apps[0].name.as_deref(), Some("Companion"));
        assert_eq!(apps[1].id, "111");
        assert_eq!(apps[1].fields, vec!["messages", "messaging_postbacks"]);
        assert!(parse_subscribed_apps(&json!({})).unwrap().is_empty());
        assert!(parse_subscribed_apps(&json!({"data": 1})).is_err());
    }

    #[test]
    fn which_token_fix_uses() {
        let s = settings(&[("FB_WEBHOOK_PAGE_ACCESS_TOKEN", "EAAC-companion")]);
        assert_eq!(webhook_token_var(&s), Some("FB_WEBHOOK_PAGE_ACCESS_TOKEN"));
        let s = settings(&[]);
        assert_eq!(webhook_token_var(&s), None);
        let s = settings(&[
            ("FB_WEBHOOK_APP_ID", "111111111111111"),
            ("MESSENGER_MODE", "bridge"),
        ]);
        assert_eq!(webhook_token_var(&s), Some("FB_PAGE_ACCESS_TOKEN"));
    }

    #[test]
    fn permissions() {
        let today = day(2026, 11, 24);
        let debug = |scopes: &[&str]| {
            json!({"data": {"app_id": "111", "type": "PAGE", "is_valid": true,
                            "expires_at": 0, "scopes": scopes}})
        };
        let f = permissions_finding(
            &debug(&["pages_messaging", "pages_show_list"]),
            "111",
            today,
        );
        assert!(f.ok, "{f:?}");
        assert!(
            f.text
                .contains("pages_messaging_handover permission does not exist")
        );

        let f = permissions_finding(&debug(&["pages_show_list"]), "111", today);
        assert!(!f.ok);
        assert!(f.text.contains("lacks pages_messaging"));
        assert!(
            f.text
                .contains("pages_messaging_handover permission does not exist")
        );
        assert!(f.fix.unwrap().contains("pages_messaging"));

        let f = permissions_finding(&debug(&["pages_messaging"]), "999", today);
        assert!(!f.ok && f.text.contains("belongs to app 111"), "{f:?}");

        let f = permissions_finding(
            &json!({"data": {"is_valid": false, "error": {"message": "Session expired"}}}),
            "111",
            today,
        );
        assert!(!f.ok && f.text.contains("Session expired"));

        let f = permissions_finding(
            &json!({"data": {"app_id": 111, "type": "USER", "is_valid": true,
                             "scopes": ["pages_messaging"]}}),
            "111",
            today,
        );
        assert!(!f.ok && f.text.contains("USER token"));

        let expires = (today + 30) * 86_400;
        let f = permissions_finding(
            &json!({"data": {"app_id": "111", "type": "PAGE", "is_valid": true,
                             "expires_at": expires, "scopes": ["pages_messaging"]}}),
            "111",
            today,
        );
        assert!(f.ok && f.text.contains("in 30 days"), "{f:?}");
        assert!(!permissions_finding(&json!({}), "111", today).ok);
    }

    #[test]
    fn conversation_routing() {
        let on = json!({"messaging_feature_status":
            {"hop_v2": false, "msgr_multi_app": true, "ig_multi_app": false}, "id": "1"});
        assert!(routing_finding(&on, "111").ok);
        let off = json!({"messaging_feature_status": {"hop_v2": true, "msgr_multi_app": false}});
        let f = routing_finding(&off, "111");
        assert!(!f.ok && f.text.contains("hop_v2"));
        assert!(f.fix.unwrap().contains("default app"));
        let f = routing_finding(&json!({"id": "1"}), "111");
        assert!(!f.ok && f.fix.is_some());
        let strings = json!({"messaging_feature_status": {"msgr_multi_app": "true"}});
        assert!(routing_finding(&strings, "111").ok);
    }

    #[test]
    fn page_id() {
        let me = json!({"id": "104857600000001", "name": "Demo Shop"});
        let f = page_findings(&me, Some("104857600000001"));
        assert!(f.iter().all(|f| f.ok), "{f:?}");
        let f = page_findings(&me, Some("999"));
        assert!(f[0].ok && !f[1].ok);
        assert!(
            f[1].fix
                .as_deref()
                .unwrap()
                .contains("FB_PAGE_ID=104857600000001")
        );
        let f = page_findings(&me, None);
        assert!(f[1].ok && f[1].text.contains("not set"));
        let f = page_findings(&json!({}), None);
        assert!(!f[0].ok);
    }

    #[test]
    fn handover_target() {
        let apps = [
            app("222", &["standby"]),
            app("333", &["messaging_handovers"]),
        ];
        assert!(target_finding(PAGE_INBOX_APP_ID, "222", "111", Some(&apps)).ok);
        let f = target_finding("333", "222", "111", Some(&apps));
        assert!(f.ok && f.text.contains("another app"));
        let f = target_finding("444", "222", "111", Some(&apps));
        assert!(!f.ok && f.fix.unwrap().contains("Page Inbox"));
        assert!(target_finding("444", "222", "111", None).ok);
        assert!(!target_finding("222", "222", "111", Some(&apps)).ok);
    }

    #[test]
    fn mode_and_secrets() {
        let s = settings(&[]);
        assert!(mode_finding(&s).ok);
        assert!(webhook_secret_finding(&s).unwrap().ok);
        let s = settings(&[("MESSENGER_MODE", "bridge"), ("FB_WEBHOOK_APP_ID", "")]);
        let f = mode_finding(&s);
        assert!(!f.ok && f.fix.unwrap().contains("MESSENGER_MODE=companion"));
        assert!(webhook_secret_finding(&s).is_none());
        let s = settings(&[("FB_WEBHOOK_APP_ID", ""), ("FB_WEBHOOK_APP_SECRET", "")]);
        assert!(!mode_finding(&s).ok, "companion without a second app");
        let s = settings(&[("FB_WEBHOOK_APP_SECRET", "")]);
        assert!(!webhook_secret_finding(&s).unwrap().ok);
    }

    #[test]
    fn fulfillment() {
        assert!(fulfillment_finding(&FulfillmentAuth::Bearer(Secret::new("x"))).ok);
        let f = fulfillment_finding(&FulfillmentAuth::None);
        assert!(!f.ok && f.fix.unwrap().contains("FULFILLMENT_TOKEN"));
    }

    #[test]
    fn graph_errors_get_fixes() {
        let api = |code, subcode, message: &str| GraphError::Api {
            status: 400,
            code,
            subcode,
            kind: "OAuthException".into(),
            message: message.into(),
            fbtrace_id: None,
            retry_after: None,
        };
        let base = "https://graph.facebook.com";
        assert!(graph_fix(&api(190, None, "bad"), BOT_VARS, base).contains("FB_PAGE_ACCESS_TOKEN"));
        assert!(
            graph_fix(&api(100, None, "Invalid appsecret_proof"), BOT_VARS, base)
                .contains("FB_APP_SECRET")
        );
        assert!(graph_fix(&api(100, Some(33), "x"), BOT_VARS, base).contains("FB_PAGE_ID"));
        assert!(graph_fix(&GraphError::Timeout, BOT_VARS, base).contains("GRAPH_API_BASE"));
        assert!(debug_token_fix(&api(190, None, "x"), base).contains("FB_APP_SECRET"));
    }

    #[test]
    fn store_urls() {
        assert_eq!(
            sqlite_path("sqlite://handover.db"),
            Some(PathBuf::from("handover.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/h.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/h.db"))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x"), None);
        assert_eq!(
            no_create_url("sqlite://handover.db"),
            "sqlite://handover.db?mode=rw"
        );
        assert_eq!(
            no_create_url("sqlite://h.db?foo=1"),
            "sqlite://h.db?foo=1&mode=rw"
        );
        assert_eq!(
            no_create_url("sqlite://h.db?mode=ro"),
            "sqlite://h.db?mode=ro"
        );
        assert_eq!(no_create_url("postgres://u@h/d"), "postgres://u@h/d");
        let shown = display_database_url("postgres://user:hunter22@db:5432/handover");
        assert!(
            !shown.contains("hunter22") && shown.contains("db:5432"),
            "{shown}"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let s = settings(&[("FB_WEBHOOK_PAGE_ACCESS_TOKEN", "EAAC-companion")]);
        let secrets = secrets_of(&s);
        let text = "a EAAB-page-token b bot-app-secret c EAAC-companion d 0123456789abcdef0123";
        let out = redact(text, &secrets);
        for secret in [
            "EAAB-page-token",
            "bot-app-secret",
            "EAAC-companion",
            "0123456789abcdef0123",
        ] {
            assert!(!out.contains(secret), "{out}");
        }
    }
}

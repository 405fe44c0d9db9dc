//! The Page and its token: `GET /me`, `debug_token`, Conversation Routing.

use serde_json::Value;
use time::{Date, OffsetDateTime};

use crate::doctor::versions::days_until;
use crate::messenger::graph::GraphError;

use super::{BOT_VARS, Finding, as_bool, debug_token_fix, graph_fix, id_text, list_or_none};

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

//! The rules, without I/O.

use std::path::{Path, PathBuf};

use serde_json::json;
use time::macros::{date, datetime};

use super::*;
use crate::config::{
    DialogflowSettings, FulfillmentAuth, GoogleCredentials, MessengerMode, PAGE_INBOX_APP_ID,
    RawSettings, Settings,
};
use crate::dialogflow::api::DialogflowError;
use crate::dialogflow::auth::AuthError;
use crate::messenger::graph::GraphError;
use crate::secret::Secret;

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
    let bridge_missing = webhook_fields_finding(MessengerMode::Bridge, "111", Some(&full), None);
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
    let today = date!(2026 - 11 - 24);
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

    let expires = datetime!(2026-12-24 13:00 UTC).unix_timestamp();
    let f = permissions_finding(
        &json!({"data": {"app_id": "111", "type": "PAGE", "is_valid": true,
                         "expires_at": expires, "scopes": ["pages_messaging"]}}),
        "111",
        today,
    );
    assert!(f.ok && f.text.contains("in 30 days"), "{f:?}");
    assert!(f.text.contains("expires on 2026-12-24"), "{f:?}");
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

/// What `serve` warns about at start: the failing settings-only findings, nothing else.
#[test]
fn startup_warnings_are_the_failing_settings_findings() {
    let dialogflow = [
        ("DIALOGFLOW_PROJECT_ID", "my-agent"),
        ("GOOGLE_METADATA_TOKEN_URL", "http://127.0.0.1:9/token"),
    ];
    let texts = |s: &Settings| -> Vec<String> {
        crate::doctor::startup_warnings(s)
            .into_iter()
            .inspect(|f| assert!(f.fix.as_deref().is_some_and(|fix| !fix.is_empty())))
            .map(|f| f.text)
            .collect()
    };
    // A second app with its secret, a token, Dialogflow: nothing to warn about.
    let healthy = settings(&dialogflow);
    assert_eq!(settings_findings(&healthy).len(), 3);
    assert!(texts(&healthy).is_empty(), "{:?}", texts(&healthy));

    // Companion mode whose webhook app is the bot app (unset, or set to FB_APP_ID).
    for id in ["", "111111111111111"] {
        let mut pairs = dialogflow.to_vec();
        pairs.extend([("FB_WEBHOOK_APP_ID", id), ("FB_WEBHOOK_APP_SECRET", "")]);
        let warned = texts(&settings(&pairs));
        assert_eq!(warned.len(), 1, "{id:?}: {warned:?}");
        assert!(
            warned[0].contains("FB_WEBHOOK_APP_ID is the bot app 111111111111111 itself"),
            "{warned:?}"
        );
    }

    // No fulfillment authentication.
    let mut pairs = dialogflow.to_vec();
    pairs.extend([("FULFILLMENT_TOKEN", ""), ("FULFILLMENT_AUTH", "none")]);
    let warned = texts(&settings(&pairs));
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].starts_with("FULFILLMENT_AUTH=none"), "{warned:?}");

    // Context sync off.
    let warned = texts(&settings(&[]));
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("context sync is off"), "{warned:?}");

    // All three at once, in the report's order.
    let all = settings(&[
        ("FB_WEBHOOK_APP_ID", ""),
        ("FB_WEBHOOK_APP_SECRET", ""),
        ("FULFILLMENT_TOKEN", ""),
        ("FULFILLMENT_AUTH", "none"),
    ]);
    let warned = texts(&all);
    assert_eq!(warned.len(), 3, "{warned:?}");
    assert!(warned[0].contains("FB_WEBHOOK_APP_ID is the bot app"));
    assert!(warned[1].starts_with("FULFILLMENT_AUTH=none"));
    assert!(warned[2].contains("context sync is off"));
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

fn graph_api_error(code: i64, subcode: Option<i64>, message: &str) -> GraphError {
    GraphError::Api {
        status: 400,
        code,
        subcode,
        kind: "OAuthException".into(),
        message: message.into(),
        fbtrace_id: None,
        retry_after: None,
    }
}

#[test]
fn failed_graph_calls() {
    let base = "https://graph.facebook.com";
    let bad_token = graph_api_error(190, None, "Invalid OAuth access token");
    let f = page_token_failed(&bad_token, base);
    assert!(
        !f.ok
            && f.text
                .starts_with("the Page token (FB_PAGE_ACCESS_TOKEN) does not work")
    );
    assert!(f.fix.unwrap().contains("FB_PAGE_ACCESS_TOKEN"));
    let f = skipped_without_token("Conversation Routing status");
    assert!(!f.ok && f.text.contains("not checked") && f.fix.is_some());
    let f = debug_token_failed(&bad_token, base);
    assert!(!f.ok && f.fix.unwrap().contains("FB_APP_ID|FB_APP_SECRET"));
    let f = routing_unreadable(&GraphError::Timeout, base);
    assert!(
        !f.ok
            && f.fix
                .unwrap()
                .contains("GRAPH_API_BASE (https://graph.facebook.com)")
    );

    let apps = subscribed_apps(Ok(json!({"data": [{"id": "222"}]})), base).unwrap();
    assert_eq!(apps[0].id, "222");
    let f = subscribed_apps(Ok(json!({"data": "x"})), base).unwrap_err();
    assert!(f.text.contains("unexpected shape") && f.fix.unwrap().contains("GRAPH_API_VERSION"));
    let f = subscribed_apps(Err(bad_token), base).unwrap_err();
    assert!(f.text.contains("GET subscribed_apps"), "{f:?}");
}

#[test]
fn fix_results() {
    let companion = settings(&[]);
    let vars = fix_token_vars(&companion, "FB_WEBHOOK_PAGE_ACCESS_TOKEN");
    assert_eq!(vars.secret, "FB_WEBHOOK_APP_SECRET");
    let bridge = settings(&[("FB_WEBHOOK_APP_ID", "111111111111111")]);
    assert_eq!(
        fix_token_vars(&bridge, "FB_PAGE_ACCESS_TOKEN").secret,
        "FB_APP_SECRET"
    );

    let denied = graph_api_error(200, None, "Requires pages_manage_metadata");
    let f = fix_failed("222", &["standby"], vars, &denied, "http://x");
    assert!(
        !f.ok
            && f.text
                .contains("--fix could not subscribe it with FB_WEBHOOK_PAGE_ACCESS_TOKEN")
    );
    assert!(
        f.fix
            .unwrap()
            .starts_with("FB_WEBHOOK_PAGE_ACCESS_TOKEN needs pages_manage_metadata")
    );
    let f = fix_failed("222", &["standby"], vars, &GraphError::Timeout, "http://x");
    assert!(!f.fix.unwrap().contains("pages_manage_metadata"));

    let var = "FB_WEBHOOK_PAGE_ACCESS_TOKEN";
    let f = fix_outcome("222", &["standby"], var, Ok(Finding::pass("all there")));
    assert!(f.ok);
    assert_eq!(
        f.text,
        "--fix subscribed standby with FB_WEBHOOK_PAGE_ACCESS_TOKEN: all there"
    );
    let f = fix_outcome(
        "222",
        &["standby"],
        var,
        Ok(Finding::fail("still missing", "x")),
    );
    assert!(
        !f.ok
            && f.text
                .starts_with("after --fix with FB_WEBHOOK_PAGE_ACCESS_TOKEN")
    );
    assert!(f.fix.unwrap().contains("Page access token of app 222"));
    let f = fix_outcome(
        "222",
        &["standby"],
        var,
        Err(Finding::fail("cannot read", "retry")),
    );
    assert_eq!(f.text, "--fix subscribed standby, but then cannot read");
    assert_eq!(f.fix.as_deref(), Some("retry"));
}

#[test]
fn dialogflow_results() {
    let off = dialogflow_off();
    assert!(!off.ok && off.text.contains("context sync is off"));
    assert!(off.fix.unwrap().contains("DIALOGFLOW_PROJECT_ID"));
    let metadata = GoogleCredentials::MetadataServer {
        url: Some("http://127.0.0.1:1/token".into()),
    };
    let f = credentials_unusable(&AuthError::Config("bad".into()), &metadata, "p");
    assert_eq!(f.len(), 2);
    assert!(!f[0].ok && f[0].text.contains("not usable"));
    assert!(!f[1].ok && f[1].text.contains("not checked"));
    let f = no_access_token("metadata server", "timed out", &metadata, "p");
    assert!(f[0].text.ends_with("yield no access token: timed out"));
    assert!(
        f[0].fix
            .as_deref()
            .unwrap()
            .contains("GOOGLE_METADATA_TOKEN_URL")
    );
    assert!(access_token_ok("metadata server").ok);

    let df = DialogflowSettings {
        project_id: "demo-agent".into(),
        location: "global".into(),
        api_base: "http://127.0.0.1:1".into(),
        api_base_explicit: true,
        credentials: metadata,
    };
    let f = agent_finding(Ok(json!({"displayName": "Shop"})), &df, "restore");
    assert!(f.ok, "{f:?}");
    assert!(
        f.text
            .contains("agent \"Shop\" of project demo-agent (location global)")
    );
    assert!(f.text.contains("context sync (restore)"));
    let missing = DialogflowError::Api {
        status: 404,
        message: "no agent".into(),
    };
    let f = agent_finding(Err(missing), &df, "reset");
    assert!(!f.ok && f.fix.unwrap().contains("DIALOGFLOW_LOCATION"));
}

#[test]
fn store_results() {
    let exists = |_: &Path| true;
    let absent = |_: &Path| false;
    let f = sqlite_file_problem("sqlite::memory:", exists).unwrap();
    assert!(f.text.contains("in-memory") && f.fix.unwrap().contains("migrate"));
    let f = sqlite_file_problem("sqlite:///var/h.db", absent).unwrap();
    assert!(f.text.contains("/var/h.db (DATABASE_URL) does not exist"));
    assert!(sqlite_file_problem("sqlite:///var/h.db", exists).is_none());
    assert!(sqlite_file_problem("postgres://u@h/d", absent).is_none());

    let pg = "postgres://user:hunter22@db:5432/handover";
    let f = store_unreachable(pg, Some(&"refused"), 20);
    assert!(!f.ok && !f.text.contains("hunter22") && f.text.ends_with("refused"));
    assert!(f.fix.unwrap().contains("PostgreSQL"));
    let f = store_unreachable("sqlite:///var/h.db", Some(&"locked"), 20);
    assert!(f.fix.unwrap().contains("readable and writable"));
    let f = store_unreachable(pg, None, 20);
    assert!(f.text.contains("no connection within 20 s"));

    assert!(store_finding(pg, "PostgreSQL", Ok(())).ok);
    let f = store_finding(pg, "PostgreSQL", Err("not migrated".into()));
    assert!(!f.ok && f.text.contains("not ready: not migrated"));
    assert!(f.fix.unwrap().contains("messenger-handover migrate"));
}

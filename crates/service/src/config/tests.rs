//! Unit tests of the settings: the declaration, the typed read, the TOML file.

use super::spec::{IfUnset, Kind, Scope, Spec, declaration_problems, is_graph_version};
use super::*;

fn minimal() -> RawSettings {
    RawSettings::from_pairs([
        ("FB_APP_ID", "111111111111111"),
        ("FB_APP_SECRET", "app-secret"),
        ("FB_PAGE_ACCESS_TOKEN", "EAAB-page-token"),
        ("FB_VERIFY_TOKEN", "verify-me"),
        ("FULFILLMENT_TOKEN", "0123456789abcdef0123"),
    ])
}

#[test]
fn defaults_follow_the_contract() {
    let s = Settings::from_raw(&minimal()).expect("valid");
    assert_eq!(s.port, 8080);
    assert_eq!(s.host, "0.0.0.0");
    assert_eq!(s.database_url, "sqlite://handover.db");
    assert_eq!(s.database_writers, crate::store::DEFAULT_POSTGRES_WRITERS);
    assert_eq!(s.graph_api_base, "https://graph.facebook.com");
    assert_eq!(s.graph_api_version, "v25.0");
    assert_eq!(s.handover_target_app_id, PAGE_INBOX_APP_ID);
    assert_eq!(s.handover_actions, vec!["input.handover"]);
    assert_eq!(s.return_actions, vec!["input.return_to_bot"]);
    assert_eq!(
        s.return_phrases,
        vec!["back to bot", "talk to bot", "talk to the bot"]
    );
    assert_eq!(s.return_payload, "BACK_TO_BOT");
    assert_eq!(s.agent_return_phrases, vec!["#bot"]);
    assert_eq!(s.handover_pass_delay_ms, 1500);
    assert_eq!(s.agent_idle_timeout_secs, 0);
    assert_eq!(s.context_on_return, ContextOnReturn::Reset);
    assert!(s.dialogflow.is_none());
    assert_eq!(s.messenger_mode, MessengerMode::Companion);
    assert_eq!((s.job_retry_base_ms, s.job_max_attempts), (1000, 8));
    assert_eq!(s.log_format, LogFormat::Json);
}

#[test]
fn every_problem_is_reported_once_naming_its_variable() {
    let raw = RawSettings::from_pairs([
        ("PORT", "eighty"),
        ("CONTEXT_ON_RETURN", "forget"),
        ("DATABASE_URL", "mysql://x"),
    ]);
    let problems = Settings::from_raw(&raw).unwrap_err();
    for var in [
        "PORT:",
        "CONTEXT_ON_RETURN:",
        "DATABASE_URL:",
        "FB_APP_ID:",
        "FB_APP_SECRET:",
        "FB_PAGE_ACCESS_TOKEN:",
        "FB_VERIFY_TOKEN:",
        "FULFILLMENT_TOKEN:",
    ] {
        assert_eq!(
            problems.iter().filter(|p| p.starts_with(var)).count(),
            1,
            "{var} in {problems:?}"
        );
    }
}

#[test]
fn running_without_fulfillment_auth_must_be_explicit() {
    let mut raw = minimal();
    raw.set("FULFILLMENT_TOKEN", "");
    assert!(Settings::from_raw(&raw).is_err());
    raw.set("FULFILLMENT_AUTH", "none");
    let s = Settings::from_raw(&raw).expect("valid");
    assert!(matches!(s.fulfillment_auth, FulfillmentAuth::None));
}

#[test]
fn secrets_do_not_appear_in_debug_output() {
    let s = Settings::from_raw(&minimal()).expect("valid");
    let debug = format!("{s:?}");
    for secret in [
        "app-secret",
        "EAAB-page-token",
        "verify-me",
        "0123456789abcdef0123",
    ] {
        assert!(!debug.contains(secret), "{secret} leaked");
    }
}

#[test]
fn toml_file_is_read_and_the_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handover.toml");
    std::fs::write(
        &path,
        "fb_app_id = \"222\"\nPORT = 9000\nRETURN_PHRASES = [\"bot please\", \"robot\"]\n",
    )
    .unwrap();
    let mut raw = RawSettings::default();
    raw.merge_toml_file(&path).unwrap();
    assert_eq!(raw.get("FB_APP_ID"), Some("222"));
    assert_eq!(raw.get("PORT"), Some("9000"));
    assert_eq!(raw.get("RETURN_PHRASES"), Some("bot please,robot"));
    std::fs::write(&path, "NOT_A_SETTING = 1\n").unwrap();
    let problems = RawSettings::default().merge_toml_file(&path).unwrap_err();
    assert!(problems[0].starts_with("NOT_A_SETTING:"));
}

#[test]
fn graph_versions_are_checked() {
    assert!(is_graph_version("v25.0"));
    assert!(!is_graph_version("25.0"));
    assert!(!is_graph_version("v25"));
}

#[test]
fn the_declaration_has_no_mistakes() {
    assert_eq!(declaration_problems(SETTINGS), Vec::<String>::new());
    assert_eq!(KNOWN_SETTINGS.len(), SETTINGS.len());
}

#[test]
fn a_bad_default_would_be_caught() {
    let out_of_range = Spec {
        name: "RETRIES",
        scope: Scope::Deployment,
        kind: Kind::Number { min: 1, max: 10 },
        if_unset: IfUnset::Default("0"),
        doc: "How often.",
    };
    let not_a_choice = Spec {
        name: "MODE",
        scope: Scope::Account,
        kind: Kind::Choice(&["a", "b"]),
        if_unset: IfUnset::Default("c"),
        doc: "Which.",
    };
    let problems = declaration_problems(&[&out_of_range, &not_a_choice, &out_of_range]);
    assert_eq!(
        problems,
        vec![
            "RETRIES: the default fails its check: 0 is out of range (1..=10)",
            "MODE: the default fails its check: \"c\" is not one of a, b",
            "RETRIES: declared twice",
            "RETRIES: the default fails its check: 0 is out of range (1..=10)",
        ]
    );
}

/// Every default, both ends of every range and every choice read into their fields: a
/// range that does not fit its field's type, or a choice its enum does not know, fails here.
#[test]
fn every_declared_value_reads_into_its_field() {
    for spec in SETTINGS {
        let mut values = Vec::new();
        if let IfUnset::Default(value) = spec.if_unset {
            values.push(value.to_owned());
        }
        match spec.kind {
            Kind::Number { min, max } => values.extend([min.to_string(), max.to_string()]),
            Kind::Choice(choices) => values.extend(choices.iter().map(|c| c.to_uppercase())),
            _ => {}
        }
        for value in values {
            let mut raw = minimal();
            raw.set("DIALOGFLOW_PROJECT_ID", "project");
            raw.set(spec.name, value.as_str());
            if let Err(problems) = Settings::from_raw(&raw) {
                panic!("{}={value:?}: {problems:?}", spec.name);
            }
        }
    }
}

/// A bad value of every setting that has a check, all at once: each is reported, once, on
/// a line that starts with its name.
#[test]
fn every_problem_is_reported_at_once() {
    let long = "x".repeat(2001);
    let mut raw = minimal();
    raw.set("DIALOGFLOW_PROJECT_ID", "project");
    let mut checked = Vec::new();
    for spec in SETTINGS {
        let bad = match spec.kind {
            Kind::Text | Kind::Secret => continue,
            Kind::Message => long.as_str(),
            Kind::Host => "somewhere",
            Kind::MetaId(_) => "12ab",
            Kind::BaseUrl => "ftp://example.com",
            Kind::SecretUrl => "hooks.example.com/no-scheme",
            Kind::DatabaseUrl => "mysql://x",
            Kind::GraphVersion => "25.0",
            Kind::Region => "Europe West",
            Kind::File => "/nonexistent/key.json",
            Kind::List => " , ,",
            Kind::Number { .. } => "99999999999",
            Kind::Choice(_) => "neither",
        };
        raw.set(spec.name, bad);
        checked.push(spec.name);
    }
    let problems = Settings::from_raw(&raw).unwrap_err();
    for name in &checked {
        let prefix = format!("{name}: ");
        assert_eq!(
            problems.iter().filter(|p| p.starts_with(&prefix)).count(),
            1,
            "{name} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), checked.len(), "{problems:#?}");
}

#[test]
fn problems_keep_their_wording() {
    let mut raw = minimal();
    raw.set("PORT", "99999");
    raw.set("JOB_MAX_ATTEMPTS", "many");
    raw.set("LOG_FORMAT", "XML");
    raw.set("FB_APP_ID", "");
    raw.set("HANDOVER_ACTIONS", "input.handover,input.both");
    raw.set("RETURN_ACTIONS", "input.both");
    assert_eq!(
        Settings::from_raw(&raw).unwrap_err(),
        vec![
            "PORT: 99999 is out of range (0..=65535)",
            "FB_APP_ID: required (the bot app's id)",
            "RETURN_ACTIONS: \"input.both\" is also in HANDOVER_ACTIONS",
            "JOB_MAX_ATTEMPTS: \"many\" is not a whole number",
            "LOG_FORMAT: \"xml\" is not one of json, pretty",
        ]
    );
}

#[test]
fn values_are_trimmed_and_normalized() {
    let mut raw = minimal();
    raw.set("port", " 9000 ");
    raw.set("GRAPH_API_BASE", "http://127.0.0.1:9/");
    raw.set("CONTEXT_ON_RETURN", "Restore");
    raw.set("RETURN_PHRASES", " bot please , robot ,");
    let s = Settings::from_raw(&raw).unwrap();
    assert_eq!(s.port, 9000);
    assert_eq!(s.graph_api_base, "http://127.0.0.1:9");
    assert_eq!(s.context_on_return, ContextOnReturn::Restore);
    assert_eq!(s.return_phrases, vec!["bot please", "robot"]);
    // Empty is unset.
    raw.set("PORT", "  ");
    assert_eq!(Settings::from_raw(&raw).unwrap().port, 8080);
}

#[test]
fn raw_settings_hide_secrets_in_debug_output() {
    let mut raw = minimal();
    raw.set("FULFILLMENT_PASSWORD", "basic-password");
    let debug = format!("{raw:?}");
    for secret in [
        "app-secret",
        "EAAB-page-token",
        "verify-me",
        "basic-password",
    ] {
        assert!(!debug.contains(secret), "{secret} leaked: {debug}");
    }
    assert!(debug.contains("111111111111111"), "{debug}");
}

#[test]
fn toml_values_are_checked_by_kind_and_unknown_keys_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handover.toml");
    let problems = |text: &str| {
        std::fs::write(&path, text).unwrap();
        RawSettings::default()
            .merge_toml_file(&path)
            .err()
            .unwrap_or_default()
    };
    assert_eq!(
        problems("log_format = \"pretty\"\nJOB_MAX_ATTEMPTS = 3\nhandover_actions = [\"a\"]\n"),
        Vec::<String>::new()
    );
    let mut found = problems(
        "PORT = [8080]\nRETURN_PHRASES = [\"a,b\"]\nfb_app_id = 1\nFB_APP_ID = 2\nHOSTNAME = \"x\"\nRUST_LOG = { a = 1 }\n",
    );
    found.sort();
    let prefixes: Vec<&str> = found.iter().map(|p| p.split_once(':').unwrap().0).collect();
    assert_eq!(
        prefixes,
        vec![
            "FB_APP_ID",
            "HOSTNAME",
            "PORT",
            "RETURN_PHRASES",
            "RUST_LOG"
        ],
        "{found:#?}"
    );
    assert!(found[0].contains("set twice"), "{found:#?}");
    assert!(found[1].contains("unknown setting"), "{found:#?}");
    assert!(found[2].contains("not an array"), "{found:#?}");
}

#[test]
fn the_readme_table_has_a_row_per_setting() {
    let table = settings_table_markdown();
    assert_eq!(table.lines().count(), SETTINGS.len() + 2);
    assert!(table.contains(
        "| `PORT` | `8080` | whole number, 0 to 65535 | deployment | Listen port (`0`: any free port). |"
    ));
    assert!(table.contains("| `FB_APP_ID` | required | digits (at most 20) | account |"));
    assert!(table.contains(
        "| `FB_APP_SECRET` | required | text (secret), at least 8 characters | account |"
    ));
}

/// Every secret setting refuses a value shorter than 8 characters, with a line that names the
/// variable and never shows the value; 8 characters are accepted.
#[test]
fn secrets_shorter_than_8_characters_are_refused_without_being_shown() {
    let secrets: Vec<&Spec> = SETTINGS
        .iter()
        .copied()
        .filter(|s| s.kind == Kind::Secret)
        .collect();
    assert!(secrets.len() >= 7, "{secrets:?}");
    for spec in secrets {
        let mut raw = minimal();
        if matches!(spec.name, "FULFILLMENT_USERNAME" | "FULFILLMENT_PASSWORD") {
            raw.set("FULFILLMENT_TOKEN", "");
            raw.set("FULFILLMENT_USERNAME", "dialogflow");
            raw.set("FULFILLMENT_PASSWORD", "a-long-password");
        }
        if spec.name == "NOTIFY_WEBHOOK_SECRET" {
            raw.set("NOTIFY_WEBHOOK_URL", "https://hooks.example.com/team");
        }
        raw.set(spec.name, "s3cr3t!");
        let problems = Settings::from_raw(&raw).unwrap_err();
        let line = format!("{}: shorter than 8 characters", spec.name);
        assert!(
            problems.iter().any(|p| p.starts_with(&line)),
            "{line} in {problems:#?}"
        );
        assert!(
            problems.iter().all(|p| !p.contains("s3cr3t!")),
            "{problems:#?}"
        );
        // Bearer tokens need 16 characters (their own, documented minimum).
        let eight = if matches!(spec.name, "FULFILLMENT_TOKEN" | "ADMIN_TOKEN") {
            "s3cr3t!xs3cr3t!x"
        } else {
            "s3cr3t!x"
        };
        raw.set(spec.name, eight);
        if let Err(problems) = Settings::from_raw(&raw) {
            panic!("{}={eight:?}: {problems:?}", spec.name);
        }
    }
}

/// The notification URL is a credential (Slack's and Google Chat's carry their key): a bad one
/// is refused without being shown, and it goes only with its signing secret.
#[test]
fn the_notification_url_is_a_secret_and_needs_its_signing_key() {
    const KEY_IN_URL: &str = "T0000-B0000-xoxKEYxox";
    let mut raw = minimal();
    raw.set(
        "NOTIFY_WEBHOOK_URL",
        format!("ftp://hooks.example.com/{KEY_IN_URL}"),
    );
    raw.set("NOTIFY_WEBHOOK_SECRET", "notify-signing-key");
    let problems = Settings::from_raw(&raw).expect_err("ftp is refused");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("NOTIFY_WEBHOOK_URL: "),
        "{problems:?}"
    );
    assert!(!problems[0].contains(KEY_IN_URL), "{problems:?}");
    assert!(!format!("{raw:?}").contains(KEY_IN_URL), "{raw:?}");

    let url = format!("https://hooks.example.com/services/{KEY_IN_URL}");
    let mut raw = minimal();
    raw.set("NOTIFY_WEBHOOK_URL", &url);
    let problems = Settings::from_raw(&raw).expect_err("no signing key");
    assert_eq!(
        problems,
        [
            "NOTIFY_WEBHOOK_SECRET: required with NOTIFY_WEBHOOK_URL (the notifications are signed with it)"
        ]
    );
    let mut raw = minimal();
    raw.set("NOTIFY_WEBHOOK_SECRET", "notify-signing-key");
    let problems = Settings::from_raw(&raw).expect_err("a key without a URL");
    assert!(
        problems[0].starts_with("NOTIFY_WEBHOOK_URL: "),
        "{problems:?}"
    );

    let mut raw = minimal();
    raw.set("NOTIFY_WEBHOOK_URL", &url);
    raw.set("NOTIFY_WEBHOOK_SECRET", "notify-signing-key");
    let s = Settings::from_raw(&raw).expect("valid");
    let notify = s.notify.as_ref().expect("on");
    assert_eq!(notify.url.expose(), url);
    assert_eq!(notify.waiting_secs, 300);
    assert!(
        !format!("{s:?}").contains(KEY_IN_URL),
        "Settings' Debug shows the URL"
    );
    assert!(Settings::from_raw(&minimal()).unwrap().notify.is_none());
}

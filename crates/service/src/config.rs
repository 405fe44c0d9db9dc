//! Settings: read from the environment and an optional TOML file, validated all at once.
//!
//! Every problem is reported as one line naming the variable; the caller exits with code 2.
//! The TOML file uses the same names as the environment (either case); the environment wins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::secret::Secret;

/// App id of the Facebook Page Inbox (the human agents' inbox).
pub const PAGE_INBOX_APP_ID: &str = "263902037430900";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

pub use handover_core::contexts::ContextOnReturn;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessengerMode {
    Companion,
    Bridge,
}

impl MessengerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Companion => "companion",
            Self::Bridge => "bridge",
        }
    }
}

/// How `/fulfillment` authenticates Dialogflow.
#[derive(Clone, Debug)]
pub enum FulfillmentAuth {
    Basic {
        username: Secret,
        password: Secret,
    },
    Bearer(Secret),
    /// Set explicitly with `FULFILLMENT_AUTH=none`.
    None,
}

/// Where Google access tokens for the Dialogflow API come from.
#[derive(Clone, Debug)]
pub enum GoogleCredentials {
    KeyFile(PathBuf),
    /// The metadata server; the URL is only overridden for the emulator and tests.
    MetadataServer {
        url: Option<String>,
    },
}

#[derive(Clone, Debug)]
pub struct DialogflowSettings {
    pub project_id: String,
    pub location: String,
    pub api_base: String,
    /// `DIALOGFLOW_API_BASE` was set: it serves every session, whatever its location.
    pub api_base_explicit: bool,
    pub credentials: GoogleCredentials,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub database_url: String,
    pub fb_app_id: String,
    pub fb_app_secret: Secret,
    /// Secret of the app whose webhook points at `/messenger` (companion mode: the second
    /// app). Defaults to `FB_APP_SECRET`.
    pub fb_webhook_app_secret: Secret,
    /// Id of the app whose webhook points at `/messenger`, for `doctor` (companion mode: the
    /// second app). Defaults to `FB_APP_ID`.
    pub fb_webhook_app_id: String,
    /// That app's Page access token: only `doctor --fix` uses it, to subscribe its fields.
    pub fb_webhook_page_access_token: Option<Secret>,
    pub fb_page_access_token: Secret,
    pub fb_verify_token: Secret,
    pub fb_page_id: Option<String>,
    pub graph_api_base: String,
    pub graph_api_version: String,
    pub handover_target_app_id: String,
    pub handover_actions: Vec<String>,
    pub return_actions: Vec<String>,
    pub return_phrases: Vec<String>,
    pub return_payload: String,
    pub agent_return_phrases: Vec<String>,
    pub handover_message: String,
    pub welcome_back_message: String,
    pub agent_timeout_message: String,
    pub handover_failed_message: String,
    /// The answer to a return action that is not the welcome (the bot has the thread and the
    /// return was already welcomed, or the welcome comes after the take).
    pub already_with_bot_message: String,
    pub handover_pass_delay_ms: u64,
    pub agent_idle_timeout_secs: u64,
    pub context_on_return: ContextOnReturn,
    pub dialogflow: Option<DialogflowSettings>,
    pub fulfillment_auth: FulfillmentAuth,
    pub messenger_mode: MessengerMode,
    pub job_retry_base_ms: u64,
    pub job_max_attempts: u32,
    /// How long a pass or take keeps being retried (other jobs: `job_max_attempts`).
    pub job_retry_for_secs: u64,
    pub job_concurrency: usize,
    /// How long a claimed job is held before another worker may run it again.
    pub job_lease_ms: u64,
    pub reconcile_interval_secs: u64,
    pub stuck_after_secs: u64,
    pub http_timeout_ms: u64,
    pub log_format: LogFormat,
    pub rust_log: String,
}

pub const DEFAULT_HANDOVER_MESSAGE: &str =
    "I'm connecting you with a person from our team. They will reply here shortly.";
pub const DEFAULT_WELCOME_BACK_MESSAGE: &str =
    "Welcome back! You're chatting with the bot again. How can I help?";
pub const DEFAULT_ALREADY_WITH_BOT_MESSAGE: &str = "You're chatting with the bot. How can I help?";
pub const DEFAULT_HANDOVER_FAILED_MESSAGE: &str = "Sorry, I couldn't reach a person from our team just now. I'm still here to help; you can ask for a person again later.";
pub const DEFAULT_AGENT_TIMEOUT_MESSAGE: &str = "Our team hasn't been able to reply, so the bot is back to help you. Ask for a person again at any time.";

/// Raw settings, by upper-case name, from the TOML file and then the environment.
#[derive(Default, Clone, Debug)]
pub struct RawSettings {
    values: BTreeMap<String, String>,
}

impl RawSettings {
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut raw = Self::default();
        for (k, v) in pairs {
            raw.set(k, v);
        }
        raw
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.values
            .insert(key.into().to_ascii_uppercase(), value.into());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The optional TOML file, then the process environment on top.
    pub fn load(config_file: Option<&Path>) -> Result<Self, Vec<String>> {
        let mut raw = Self::default();
        if let Some(path) = config_file {
            raw.merge_toml_file(path)?;
        }
        for key in KNOWN_SETTINGS {
            if let Ok(value) = std::env::var(key) {
                raw.set(*key, value);
            }
        }
        Ok(raw)
    }

    fn merge_toml_file(&mut self, path: &Path) -> Result<(), Vec<String>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![format!(
                "--config {}: cannot read the file: {e}",
                path.display()
            )]
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| vec![format!("--config {}: not valid TOML: {e}", path.display())])?;
        let mut problems = Vec::new();
        for (key, value) in table {
            let name = key.to_ascii_uppercase();
            if !KNOWN_SETTINGS.contains(&name.as_str()) {
                problems.push(format!("{name}: unknown setting in {}", path.display()));
                continue;
            }
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => {
                    problems.push(format!("{name}: unsupported TOML value {other}"));
                    continue;
                }
            };
            self.set(name, text);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

pub const KNOWN_SETTINGS: &[&str] = &[
    "HOST",
    "PORT",
    "DATABASE_URL",
    "FB_APP_ID",
    "FB_APP_SECRET",
    "FB_WEBHOOK_APP_SECRET",
    "FB_WEBHOOK_APP_ID",
    "FB_WEBHOOK_PAGE_ACCESS_TOKEN",
    "FB_PAGE_ACCESS_TOKEN",
    "FB_VERIFY_TOKEN",
    "FB_PAGE_ID",
    "GRAPH_API_BASE",
    "GRAPH_API_VERSION",
    "HANDOVER_TARGET_APP_ID",
    "HANDOVER_ACTIONS",
    "RETURN_ACTIONS",
    "RETURN_PHRASES",
    "RETURN_PAYLOAD",
    "AGENT_RETURN_PHRASES",
    "HANDOVER_MESSAGE",
    "WELCOME_BACK_MESSAGE",
    "AGENT_TIMEOUT_MESSAGE",
    "HANDOVER_FAILED_MESSAGE",
    "ALREADY_WITH_BOT_MESSAGE",
    "HANDOVER_PASS_DELAY_MS",
    "AGENT_IDLE_TIMEOUT_SECS",
    "CONTEXT_ON_RETURN",
    "DIALOGFLOW_PROJECT_ID",
    "DIALOGFLOW_LOCATION",
    "DIALOGFLOW_API_BASE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_METADATA_TOKEN_URL",
    "FULFILLMENT_AUTH",
    "FULFILLMENT_USERNAME",
    "FULFILLMENT_PASSWORD",
    "FULFILLMENT_TOKEN",
    "MESSENGER_MODE",
    "JOB_RETRY_BASE_MS",
    "JOB_MAX_ATTEMPTS",
    "JOB_RETRY_FOR_SECS",
    "JOB_CONCURRENCY",
    "JOB_LEASE_MS",
    "RECONCILE_INTERVAL_SECS",
    "STUCK_AFTER_SECS",
    "HTTP_TIMEOUT_MS",
    "LOG_FORMAT",
    "RUST_LOG",
];

/// Collects problems instead of stopping at the first one.
struct Reader<'a> {
    raw: &'a RawSettings,
    problems: Vec<String>,
}

impl<'a> Reader<'a> {
    fn text(&self, key: &str, default: &str) -> String {
        match self.raw.get(key) {
            Some(v) if !v.trim().is_empty() => v.trim().to_owned(),
            _ => default.to_owned(),
        }
    }

    fn optional(&self, key: &str) -> Option<String> {
        self.raw
            .get(key)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    fn required(&mut self, key: &str, meaning: &str) -> String {
        match self.optional(key) {
            Some(v) => v,
            None => {
                self.problems.push(format!("{key}: required ({meaning})"));
                String::new()
            }
        }
    }

    fn number<T>(&mut self, key: &str, default: T, min: T, max: T) -> T
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(text) = self.optional(key) else {
            return default;
        };
        match text.parse::<T>() {
            Ok(v) if v >= min && v <= max => v,
            Ok(_) => {
                self.problems
                    .push(format!("{key}: {text} is out of range ({min}..={max})"));
                default
            }
            Err(_) => {
                self.problems
                    .push(format!("{key}: {text:?} is not a whole number"));
                default
            }
        }
    }

    fn list(&mut self, key: &str, default: &str) -> Vec<String> {
        let items = split_list(&self.text(key, default));
        if items.is_empty() {
            self.problems
                .push(format!("{key}: needs at least one comma-separated entry"));
        }
        items
    }

    fn app_id(&mut self, key: &str, value: String) -> String {
        if !value.is_empty() && !value.chars().all(|c| c.is_ascii_digit()) {
            self.problems
                .push(format!("{key}: {value:?} is not a numeric Meta app id"));
        }
        value
    }

    fn url(&mut self, key: &str, value: String, schemes: &[&str]) -> String {
        match url::Url::parse(&value) {
            Ok(u) if schemes.contains(&u.scheme()) => value.trim_end_matches('/').to_owned(),
            Ok(u) => {
                self.problems.push(format!(
                    "{key}: scheme {:?} not supported (use {})",
                    u.scheme(),
                    schemes.join(" or ")
                ));
                value
            }
            Err(e) => {
                self.problems.push(format!("{key}: not a URL ({e})"));
                value
            }
        }
    }
}

pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Settings {
    /// Everything `serve` needs; every problem is one line naming the variable.
    pub fn from_raw(raw: &RawSettings) -> Result<Settings, Vec<String>> {
        let mut r = Reader {
            raw,
            problems: Vec::new(),
        };
        let host = r.text("HOST", "0.0.0.0");
        if host.parse::<std::net::IpAddr>().is_err() && host != "localhost" {
            r.problems
                .push(format!("HOST: {host:?} is not an IP address"));
        }
        let port = r.number::<u16>("PORT", 8080, 0, u16::MAX);
        let database_url = database_url(&mut r);

        let fb_app_id = r.required("FB_APP_ID", "the bot app's id");
        let fb_app_id = r.app_id("FB_APP_ID", fb_app_id);
        let fb_app_secret = Secret::new(r.required("FB_APP_SECRET", "the bot app's secret"));
        let fb_webhook_app_secret = r
            .optional("FB_WEBHOOK_APP_SECRET")
            .map(Secret::new)
            .unwrap_or_else(|| fb_app_secret.clone());
        let fb_webhook_app_id = r
            .optional("FB_WEBHOOK_APP_ID")
            .unwrap_or_else(|| fb_app_id.clone());
        let fb_webhook_app_id = r.app_id("FB_WEBHOOK_APP_ID", fb_webhook_app_id);
        let fb_webhook_page_access_token =
            r.optional("FB_WEBHOOK_PAGE_ACCESS_TOKEN").map(Secret::new);
        let fb_page_access_token =
            Secret::new(r.required("FB_PAGE_ACCESS_TOKEN", "the bot app's Page access token"));
        let fb_verify_token = Secret::new(r.required(
            "FB_VERIFY_TOKEN",
            "the verify token typed in the App Dashboard's webhook settings",
        ));
        let fb_page_id = r.optional("FB_PAGE_ID");
        if let Some(id) = &fb_page_id {
            r.app_id("FB_PAGE_ID", id.clone());
        }
        let graph_api_base = r.text("GRAPH_API_BASE", "https://graph.facebook.com");
        let graph_api_base = r.url("GRAPH_API_BASE", graph_api_base, &["https", "http"]);
        let graph_api_version = r.text("GRAPH_API_VERSION", "v25.0");
        if !is_graph_version(&graph_api_version) {
            r.problems.push(format!(
                "GRAPH_API_VERSION: {graph_api_version:?} is not of the form vNN.0"
            ));
        }
        let handover_target_app_id = r.text("HANDOVER_TARGET_APP_ID", PAGE_INBOX_APP_ID);
        let handover_target_app_id = r.app_id("HANDOVER_TARGET_APP_ID", handover_target_app_id);
        if !fb_app_id.is_empty() && handover_target_app_id == fb_app_id {
            r.problems.push(
                "HANDOVER_TARGET_APP_ID: equals FB_APP_ID; the bot would pass the thread to itself"
                    .into(),
            );
        }

        let handover_actions = r.list("HANDOVER_ACTIONS", "input.handover");
        let return_actions = r.list("RETURN_ACTIONS", "input.return_to_bot");
        if let Some(both) = handover_actions.iter().find(|a| return_actions.contains(a)) {
            r.problems.push(format!(
                "RETURN_ACTIONS: {both:?} is also in HANDOVER_ACTIONS"
            ));
        }
        let return_phrases = r.list("RETURN_PHRASES", "back to bot,talk to bot,talk to the bot");
        let return_payload = r.text("RETURN_PAYLOAD", "BACK_TO_BOT");
        let agent_return_phrases = r.list("AGENT_RETURN_PHRASES", "#bot");
        let handover_message = r.text("HANDOVER_MESSAGE", DEFAULT_HANDOVER_MESSAGE);
        let welcome_back_message = r.text("WELCOME_BACK_MESSAGE", DEFAULT_WELCOME_BACK_MESSAGE);
        let agent_timeout_message = r.text("AGENT_TIMEOUT_MESSAGE", DEFAULT_AGENT_TIMEOUT_MESSAGE);
        let handover_failed_message =
            r.text("HANDOVER_FAILED_MESSAGE", DEFAULT_HANDOVER_FAILED_MESSAGE);
        let already_with_bot_message =
            r.text("ALREADY_WITH_BOT_MESSAGE", DEFAULT_ALREADY_WITH_BOT_MESSAGE);
        for (key, text) in [
            ("HANDOVER_MESSAGE", &handover_message),
            ("WELCOME_BACK_MESSAGE", &welcome_back_message),
            ("AGENT_TIMEOUT_MESSAGE", &agent_timeout_message),
            ("HANDOVER_FAILED_MESSAGE", &handover_failed_message),
            ("ALREADY_WITH_BOT_MESSAGE", &already_with_bot_message),
        ] {
            // The Send API limit for a text message.
            if text.chars().count() > 2000 {
                r.problems
                    .push(format!("{key}: longer than Messenger's 2000 characters"));
            }
        }
        let handover_pass_delay_ms = r.number::<u64>("HANDOVER_PASS_DELAY_MS", 1500, 0, 60_000);
        let agent_idle_timeout_secs =
            r.number::<u64>("AGENT_IDLE_TIMEOUT_SECS", 0, 0, 7 * 24 * 3600);
        let context_on_return = match r
            .text("CONTEXT_ON_RETURN", "reset")
            .to_ascii_lowercase()
            .as_str()
        {
            "reset" => ContextOnReturn::Reset,
            "restore" => ContextOnReturn::Restore,
            "keep" => ContextOnReturn::Keep,
            other => {
                r.problems.push(format!(
                    "CONTEXT_ON_RETURN: {other:?} is not one of reset, restore, keep"
                ));
                ContextOnReturn::Reset
            }
        };
        let dialogflow = dialogflow_settings(&mut r);
        let fulfillment_auth = fulfillment_auth(&mut r);
        let messenger_mode = match r
            .text("MESSENGER_MODE", "companion")
            .to_ascii_lowercase()
            .as_str()
        {
            "companion" => MessengerMode::Companion,
            "bridge" => MessengerMode::Bridge,
            other => {
                r.problems.push(format!(
                    "MESSENGER_MODE: {other:?} is not one of companion, bridge"
                ));
                MessengerMode::Companion
            }
        };
        let job_retry_base_ms = r.number::<u64>("JOB_RETRY_BASE_MS", 1000, 1, 3_600_000);
        let job_max_attempts = r.number::<u32>("JOB_MAX_ATTEMPTS", 8, 1, 100);
        let job_retry_for_secs = r.number::<u64>("JOB_RETRY_FOR_SECS", 3600, 1, 7 * 86_400);
        let job_concurrency = r.number::<usize>("JOB_CONCURRENCY", 16, 1, 1024);
        let job_lease_ms = r.number::<u64>("JOB_LEASE_MS", 120_000, 1_000, 3_600_000);
        let reconcile_interval_secs = r.number::<u64>("RECONCILE_INTERVAL_SECS", 60, 1, 86_400);
        let stuck_after_secs = r.number::<u64>("STUCK_AFTER_SECS", 300, 1, 86_400);
        let http_timeout_ms = r.number::<u64>("HTTP_TIMEOUT_MS", 10_000, 100, 120_000);
        let log_format = log_format(&mut r);
        let rust_log = r.text("RUST_LOG", "info");

        if !r.problems.is_empty() {
            return Err(r.problems);
        }
        Ok(Settings {
            host,
            port,
            database_url,
            fb_app_id,
            fb_app_secret,
            fb_webhook_app_secret,
            fb_webhook_app_id,
            fb_webhook_page_access_token,
            fb_page_access_token,
            fb_verify_token,
            fb_page_id,
            graph_api_base,
            graph_api_version,
            handover_target_app_id,
            handover_actions,
            return_actions,
            return_phrases,
            return_payload,
            agent_return_phrases,
            handover_message,
            welcome_back_message,
            agent_timeout_message,
            handover_failed_message,
            already_with_bot_message,
            handover_pass_delay_ms,
            agent_idle_timeout_secs,
            context_on_return,
            dialogflow,
            fulfillment_auth,
            messenger_mode,
            job_retry_base_ms,
            job_max_attempts,
            job_retry_for_secs,
            job_concurrency,
            job_lease_ms,
            reconcile_interval_secs,
            stuck_after_secs,
            http_timeout_ms,
            log_format,
            rust_log,
        })
    }
}

fn is_graph_version(v: &str) -> bool {
    v.strip_prefix('v')
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(major, minor)| {
            !major.is_empty()
                && major.chars().all(|c| c.is_ascii_digit())
                && !minor.is_empty()
                && minor.chars().all(|c| c.is_ascii_digit())
        })
}

fn database_url(r: &mut Reader) -> String {
    let url = r.text("DATABASE_URL", "sqlite://handover.db");
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        r.problems.push(
            "DATABASE_URL: must start with sqlite:// (embedded) or postgres:// (several replicas)"
                .into(),
        );
    }
    url
}

/// Only what `migrate` needs.
pub fn database_url_only(raw: &RawSettings) -> Result<String, Vec<String>> {
    let mut r = Reader {
        raw,
        problems: Vec::new(),
    };
    let url = database_url(&mut r);
    if r.problems.is_empty() {
        Ok(url)
    } else {
        Err(r.problems)
    }
}

pub fn log_settings(raw: &RawSettings) -> (LogFormat, String) {
    let mut r = Reader {
        raw,
        problems: Vec::new(),
    };
    (log_format(&mut r), r.text("RUST_LOG", "info"))
}

fn log_format(r: &mut Reader) -> LogFormat {
    match r.text("LOG_FORMAT", "json").to_ascii_lowercase().as_str() {
        "json" => LogFormat::Json,
        "pretty" => LogFormat::Pretty,
        other => {
            r.problems
                .push(format!("LOG_FORMAT: {other:?} is not one of json, pretty"));
            LogFormat::Json
        }
    }
}

fn dialogflow_settings(r: &mut Reader) -> Option<DialogflowSettings> {
    let project_id = r.optional("DIALOGFLOW_PROJECT_ID")?;
    let location = r.text("DIALOGFLOW_LOCATION", "global");
    if !location
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        r.problems.push(format!(
            "DIALOGFLOW_LOCATION: {location:?} is not a region id"
        ));
    }
    let api_base_explicit = r.optional("DIALOGFLOW_API_BASE").is_some();
    let api_base = match r.optional("DIALOGFLOW_API_BASE") {
        Some(base) => r.url("DIALOGFLOW_API_BASE", base, &["https", "http"]),
        None => crate::dialogflow::api::DialogflowClient::base_for_location(&location),
    };
    let credentials = match r.optional("GOOGLE_APPLICATION_CREDENTIALS") {
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                r.problems.push(format!(
                    "GOOGLE_APPLICATION_CREDENTIALS: {} is not a readable file",
                    path.display()
                ));
            }
            GoogleCredentials::KeyFile(path)
        }
        None => GoogleCredentials::MetadataServer {
            url: r.optional("GOOGLE_METADATA_TOKEN_URL"),
        },
    };
    Some(DialogflowSettings {
        project_id,
        location,
        api_base,
        api_base_explicit,
        credentials,
    })
}

fn fulfillment_auth(r: &mut Reader) -> FulfillmentAuth {
    let mode = r
        .optional("FULFILLMENT_AUTH")
        .map(|m| m.to_ascii_lowercase());
    let username = r.optional("FULFILLMENT_USERNAME");
    let password = r.optional("FULFILLMENT_PASSWORD");
    let token = r.optional("FULFILLMENT_TOKEN");
    if let Some(mode) = mode.as_deref() {
        if mode != "none" {
            r.problems.push(format!(
                "FULFILLMENT_AUTH: {mode:?} is not supported; set it to none to run without authentication, or leave it unset and configure FULFILLMENT_TOKEN or FULFILLMENT_USERNAME/FULFILLMENT_PASSWORD"
            ));
        } else if username.is_some() || password.is_some() || token.is_some() {
            r.problems.push(
                "FULFILLMENT_AUTH: is none, but fulfillment credentials are also set; remove one of them".into(),
            );
        }
        return FulfillmentAuth::None;
    }
    match (username, password, token) {
        (Some(_), Some(_), Some(_)) => {
            r.problems.push(
                "FULFILLMENT_TOKEN: set together with FULFILLMENT_USERNAME/FULFILLMENT_PASSWORD; choose one".into(),
            );
            FulfillmentAuth::None
        }
        (Some(u), Some(p), None) => FulfillmentAuth::Basic {
            username: Secret::new(u),
            password: Secret::new(p),
        },
        (None, None, Some(t)) => {
            if t.len() < 16 {
                r.problems.push(
                    "FULFILLMENT_TOKEN: shorter than 16 characters; use a long random value".into(),
                );
            }
            FulfillmentAuth::Bearer(Secret::new(t))
        }
        (Some(_), None, _) => {
            r.problems
                .push("FULFILLMENT_PASSWORD: required with FULFILLMENT_USERNAME".into());
            FulfillmentAuth::None
        }
        (None, Some(_), _) => {
            r.problems
                .push("FULFILLMENT_USERNAME: required with FULFILLMENT_PASSWORD".into());
            FulfillmentAuth::None
        }
        (None, None, None) => {
            r.problems.push(
                "FULFILLMENT_TOKEN: required (or FULFILLMENT_USERNAME + FULFILLMENT_PASSWORD, or FULFILLMENT_AUTH=none to run without authentication)".into(),
            );
            FulfillmentAuth::None
        }
    }
}

#[cfg(test)]
mod tests {
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
}

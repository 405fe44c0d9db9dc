//! Settings: read from the environment and an optional TOML file, validated all at once.
//!
//! Every problem is reported as one line naming the variable; the caller exits with code 2.
//! The TOML file uses the same names as the environment (either case); the environment wins.
//!
//! Each setting is declared once in `declare.rs` (name, scope, kind with range or choices,
//! default, doc); `spec.rs` says what a declaration is and checks values against it, `raw.rs`
//! gathers the raw text, `read.rs` reads it typed. Checks between settings stay here, after
//! the typed read. Hand-written rather than `figment`/`config`/`envy`: those stop at the
//! first bad value and know nothing of scope or of the README table.

pub mod declare;
mod raw;
mod read;
pub mod spec;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use crate::secret::Secret;
use declare::*;
use read::Reader;

pub use declare::{ALL as SETTINGS, KNOWN_SETTINGS};
pub use raw::RawSettings;
pub use spec::split_list;

/// App id of the Facebook Page Inbox (the human agents' inbox).
pub const PAGE_INBOX_APP_ID: &str = "263902037430900";

#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumString)]
#[strum(serialize_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

pub use handover_core::contexts::ContextOnReturn;

#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumString)]
#[strum(serialize_all = "lowercase")]
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
    /// PostgreSQL's write connections (`DATABASE_WRITERS`).
    pub database_writers: usize,
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
    /// `None`: the admin API and page are off (their routes do not exist).
    pub admin_token: Option<Secret>,
    /// `None`: no agent notifications.
    pub notify: Option<NotifySettings>,
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
    /// How long a stop may take (`startup::Application::run_until_stopped`).
    pub shutdown_grace_secs: u64,
    pub thread_retention_days: u64,
    pub audit_retention_days: u64,
    /// How incoming connections and requests are bounded in time and number.
    pub server: ServerLimits,
    pub log_format: LogFormat,
    pub rust_log: String,
    /// For the trace field of the logs (`telemetry`).
    pub google_cloud_project: Option<String>,
    /// Where spans are exported to (feature `otel`).
    pub otel_exporter_otlp_endpoint: Option<String>,
}

/// Agent notifications (`NOTIFY_*`).
#[derive(Clone, Debug)]
pub struct NotifySettings {
    /// A credential in itself (Slack's and Google Chat's carry their key).
    pub url: Secret,
    /// The HMAC key of `X-Handover-Signature-256`.
    pub secret: Secret,
    /// 0: no `waiting` notifications.
    pub waiting_secs: u64,
}

/// Incoming connections and requests: the timeouts of each phase and the connection cap
/// (`REQUEST_*_TIMEOUT_MS`, `KEEP_ALIVE_SECS`, `DISCONNECT_TIMEOUT_MS`, `MAX_CONNECTIONS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    pub header_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub body_idle_timeout_ms: u64,
    /// `0`: no keep-alive.
    pub keep_alive_secs: u64,
    /// `0`: dropped at once.
    pub disconnect_timeout_ms: u64,
    /// Per replica, across the HTTP workers.
    pub max_connections: usize,
}

pub const DEFAULT_HANDOVER_MESSAGE: &str =
    "I'm connecting you with a person from our team. They will reply here shortly.";
pub const DEFAULT_WELCOME_BACK_MESSAGE: &str =
    "Welcome back! You're chatting with the bot again. How can I help?";
pub const DEFAULT_ALREADY_WITH_BOT_MESSAGE: &str = "You're chatting with the bot. How can I help?";
pub const DEFAULT_HANDOVER_FAILED_MESSAGE: &str = "Sorry, I couldn't reach a person from our team just now. I'm still here to help; you can ask for a person again later.";
pub const DEFAULT_AGENT_TIMEOUT_MESSAGE: &str = "Our team hasn't been able to reply, so the bot is back to help you. Ask for a person again at any time.";

/// The README's settings table, rendered from the declarations.
pub fn settings_table_markdown() -> String {
    spec::markdown_table(SETTINGS)
}

impl Settings {
    /// Everything `serve` needs; every problem is one line naming the variable.
    pub fn from_raw(raw: &RawSettings) -> Result<Settings, Vec<String>> {
        let mut r = Reader::new(raw);
        let host = r.value(&HOST);
        let port = r.number(&PORT);
        let database_url = r.value(&DATABASE_URL);
        let database_writers = r.number(&DATABASE_WRITERS);

        let fb_app_id = r.required(&FB_APP_ID);
        let fb_app_secret = r.required_secret(&FB_APP_SECRET);
        let fb_webhook_app_secret = r
            .secret(&FB_WEBHOOK_APP_SECRET)
            .unwrap_or_else(|| fb_app_secret.clone());
        let fb_webhook_app_id = r
            .optional(&FB_WEBHOOK_APP_ID)
            .unwrap_or_else(|| fb_app_id.clone());
        let fb_webhook_page_access_token = r.secret(&FB_WEBHOOK_PAGE_ACCESS_TOKEN);
        let fb_page_access_token = r.required_secret(&FB_PAGE_ACCESS_TOKEN);
        let fb_verify_token = r.required_secret(&FB_VERIFY_TOKEN);
        let fb_page_id = r.optional(&FB_PAGE_ID);
        let graph_api_base = r.value(&GRAPH_API_BASE);
        let graph_api_version = r.value(&GRAPH_API_VERSION);
        let handover_target_app_id = r.value(&HANDOVER_TARGET_APP_ID);
        if !fb_app_id.is_empty() && handover_target_app_id == fb_app_id {
            r.problem(
                &HANDOVER_TARGET_APP_ID,
                "equals FB_APP_ID; the bot would pass the thread to itself",
            );
        }

        let handover_actions = r.list(&HANDOVER_ACTIONS);
        let return_actions = r.list(&RETURN_ACTIONS);
        if let Some(both) = handover_actions.iter().find(|a| return_actions.contains(a)) {
            r.problem(
                &RETURN_ACTIONS,
                format_args!("{both:?} is also in HANDOVER_ACTIONS"),
            );
        }
        let return_phrases = r.list(&RETURN_PHRASES);
        let return_payload = r.value(&RETURN_PAYLOAD);
        let agent_return_phrases = r.list(&AGENT_RETURN_PHRASES);
        let handover_message = r.value(&HANDOVER_MESSAGE);
        let welcome_back_message = r.value(&WELCOME_BACK_MESSAGE);
        let agent_timeout_message = r.value(&AGENT_TIMEOUT_MESSAGE);
        let handover_failed_message = r.value(&HANDOVER_FAILED_MESSAGE);
        let already_with_bot_message = r.value(&ALREADY_WITH_BOT_MESSAGE);
        let handover_pass_delay_ms = r.number(&HANDOVER_PASS_DELAY_MS);
        let agent_idle_timeout_secs = r.number(&AGENT_IDLE_TIMEOUT_SECS);
        let context_on_return = r.choice(&CONTEXT_ON_RETURN);
        let dialogflow = dialogflow_settings(&mut r);
        let fulfillment_auth = fulfillment_auth(&mut r);
        let admin_token = r.secret(&ADMIN_TOKEN);
        if admin_token
            .as_ref()
            .is_some_and(|t| t.expose().chars().count() < 16)
        {
            r.problem(
                &ADMIN_TOKEN,
                "shorter than 16 characters; use a long random value",
            );
        }
        let notify = notify_settings(&mut r);
        let messenger_mode = r.choice(&MESSENGER_MODE);
        let job_retry_base_ms = r.number(&JOB_RETRY_BASE_MS);
        let job_max_attempts = r.number(&JOB_MAX_ATTEMPTS);
        let job_retry_for_secs = r.number(&JOB_RETRY_FOR_SECS);
        let job_concurrency = r.number(&JOB_CONCURRENCY);
        let job_lease_ms = r.number(&JOB_LEASE_MS);
        let reconcile_interval_secs = r.number(&RECONCILE_INTERVAL_SECS);
        let stuck_after_secs = r.number(&STUCK_AFTER_SECS);
        let http_timeout_ms = r.number(&HTTP_TIMEOUT_MS);
        let shutdown_grace_secs = r.number(&SHUTDOWN_GRACE_SECS);
        let thread_retention_days = r.number(&THREAD_RETENTION_DAYS);
        let audit_retention_days = r.number(&AUDIT_RETENTION_DAYS);
        let server = ServerLimits {
            header_timeout_ms: r.number(&REQUEST_HEADER_TIMEOUT_MS),
            body_timeout_ms: r.number(&REQUEST_BODY_TIMEOUT_MS),
            body_idle_timeout_ms: r.number(&REQUEST_BODY_IDLE_TIMEOUT_MS),
            keep_alive_secs: r.number(&KEEP_ALIVE_SECS),
            disconnect_timeout_ms: r.number(&DISCONNECT_TIMEOUT_MS),
            max_connections: r.number(&MAX_CONNECTIONS),
        };
        let log_format = r.choice(&LOG_FORMAT);
        let rust_log = r.value(&RUST_LOG);
        let google_cloud_project = r.optional(&GOOGLE_CLOUD_PROJECT);
        let otel_exporter_otlp_endpoint = r.optional(&OTEL_EXPORTER_OTLP_ENDPOINT);

        if !r.problems.is_empty() {
            return Err(r.problems);
        }
        Ok(Settings {
            host,
            port,
            database_url,
            database_writers,
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
            admin_token,
            notify,
            messenger_mode,
            job_retry_base_ms,
            job_max_attempts,
            job_retry_for_secs,
            job_concurrency,
            job_lease_ms,
            reconcile_interval_secs,
            stuck_after_secs,
            http_timeout_ms,
            shutdown_grace_secs,
            thread_retention_days,
            audit_retention_days,
            server,
            log_format,
            rust_log,
            google_cloud_project,
            otel_exporter_otlp_endpoint,
        })
    }
}

/// Only what `migrate` needs.
pub fn database_url_only(raw: &RawSettings) -> Result<String, Vec<String>> {
    let mut r = Reader::new(raw);
    let url = r.value(&DATABASE_URL);
    if r.problems.is_empty() {
        Ok(url)
    } else {
        Err(r.problems)
    }
}

/// What logging needs, before the other settings are checked (a bad value reads as its
/// default here; `from_raw` reports it).
pub fn log_settings(raw: &RawSettings) -> (LogFormat, String) {
    let mut r = Reader::new(raw);
    (r.choice(&LOG_FORMAT), r.value(&RUST_LOG))
}

/// The Dialogflow settings are read (and checked) only when `DIALOGFLOW_PROJECT_ID` is set.
fn dialogflow_settings(r: &mut Reader) -> Option<DialogflowSettings> {
    let project_id = r.optional(&DIALOGFLOW_PROJECT_ID)?;
    let location = r.value(&DIALOGFLOW_LOCATION);
    let explicit_base = r.optional(&DIALOGFLOW_API_BASE);
    let api_base_explicit = explicit_base.is_some();
    let api_base = explicit_base
        .unwrap_or_else(|| crate::dialogflow::api::DialogflowClient::base_for_location(&location));
    let credentials = match r.optional(&GOOGLE_APPLICATION_CREDENTIALS) {
        Some(path) => GoogleCredentials::KeyFile(PathBuf::from(path)),
        None => GoogleCredentials::MetadataServer {
            url: r.optional(&GOOGLE_METADATA_TOKEN_URL),
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

/// The URL and its signing key go together; the waiting time is read either way (its range).
fn notify_settings(r: &mut Reader) -> Option<NotifySettings> {
    let url = r.secret(&NOTIFY_WEBHOOK_URL);
    let secret = r.secret(&NOTIFY_WEBHOOK_SECRET);
    let waiting_secs = r.number(&NOTIFY_WAITING_SECS);
    match (url, secret) {
        (Some(url), Some(secret)) => Some(NotifySettings {
            url,
            secret,
            waiting_secs,
        }),
        (Some(_), None) => {
            r.problem(
                &NOTIFY_WEBHOOK_SECRET,
                "required with NOTIFY_WEBHOOK_URL (the notifications are signed with it)",
            );
            None
        }
        (None, Some(_)) if !r.is_set(&NOTIFY_WEBHOOK_URL) => {
            r.problem(
                &NOTIFY_WEBHOOK_URL,
                "not set, but NOTIFY_WEBHOOK_SECRET is: set both, or neither",
            );
            None
        }
        // A bad URL has its own problem already.
        (None, _) => None,
    }
}

/// Bearer, Basic, or explicitly none: the four settings are checked together.
fn fulfillment_auth(r: &mut Reader) -> FulfillmentAuth {
    let mode = r
        .optional(&FULFILLMENT_AUTH)
        .map(|m| m.to_ascii_lowercase());
    let username = r.secret(&FULFILLMENT_USERNAME);
    let password = r.secret(&FULFILLMENT_PASSWORD);
    let token = r.secret(&FULFILLMENT_TOKEN);
    if let Some(mode) = mode.as_deref() {
        if mode != "none" {
            r.problem(&FULFILLMENT_AUTH, format_args!(
                "{mode:?} is not supported; set it to none to run without authentication, or leave it unset and configure FULFILLMENT_TOKEN or FULFILLMENT_USERNAME/FULFILLMENT_PASSWORD"
            ));
        } else if username.is_some() || password.is_some() || token.is_some() {
            r.problem(
                &FULFILLMENT_AUTH,
                "is none, but fulfillment credentials are also set; remove one of them",
            );
        }
        return FulfillmentAuth::None;
    }
    match (username, password, token) {
        (Some(_), Some(_), Some(_)) => {
            r.problem(
                &FULFILLMENT_TOKEN,
                "set together with FULFILLMENT_USERNAME/FULFILLMENT_PASSWORD; choose one",
            );
            FulfillmentAuth::None
        }
        (Some(username), Some(password), None) => FulfillmentAuth::Basic { username, password },
        (None, None, Some(t)) => {
            if t.expose().len() < 16 {
                r.problem(
                    &FULFILLMENT_TOKEN,
                    "shorter than 16 characters; use a long random value",
                );
            }
            FulfillmentAuth::Bearer(t)
        }
        (Some(_), None, _) => {
            r.problem(&FULFILLMENT_PASSWORD, "required with FULFILLMENT_USERNAME");
            FulfillmentAuth::None
        }
        (None, Some(_), _) => {
            r.problem(&FULFILLMENT_USERNAME, "required with FULFILLMENT_PASSWORD");
            FulfillmentAuth::None
        }
        (None, None, None) => {
            r.problem(
                &FULFILLMENT_TOKEN,
                "required (or FULFILLMENT_USERNAME + FULFILLMENT_PASSWORD, or FULFILLMENT_AUTH=none to run without authentication)",
            );
            FulfillmentAuth::None
        }
    }
}

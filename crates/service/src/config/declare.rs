//! Every setting, declared once: name, scope, kind (type, range or choices), what unset
//! means, and the doc that becomes its README row. The environment's known names, the
//! unknown-key check of the TOML file, defaults, range checks and the README table all
//! derive from this list; `Settings::from_raw` reads each one by its constant.
//!
//! The README table is checked against this list by `tests/settings_table.rs`; after an edit
//! here run `UPDATE_README=1 cargo test -p messenger-handover --test settings_table`.

use super::spec::IfUnset::{Default, Optional, Required};
use super::spec::Kind::*;
use super::spec::Scope::{Account, Deployment};
use super::spec::Spec;
use super::{
    DEFAULT_AGENT_TIMEOUT_MESSAGE, DEFAULT_ALREADY_WITH_BOT_MESSAGE,
    DEFAULT_HANDOVER_FAILED_MESSAGE, DEFAULT_HANDOVER_MESSAGE, DEFAULT_WELCOME_BACK_MESSAGE,
    PAGE_INBOX_APP_ID,
};

/// `NAME: scope, kind, if-unset;` after a `///` doc, for each setting: a `Spec` constant per
/// name, `ALL` in declaration order (the README's order) and `KNOWN_SETTINGS`, their names.
macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $name:ident: $scope:expr, $kind:expr, $if_unset:expr; )+) => {
        $(
            $(#[doc = $doc])+
            pub const $name: Spec = Spec {
                name: stringify!($name),
                scope: $scope,
                kind: $kind,
                if_unset: $if_unset,
                doc: concat!($($doc),+),
            };
        )+
        pub const ALL: &[&Spec] = &[$(&$name),+];
        pub const KNOWN_SETTINGS: &[&str] = &[$(stringify!($name)),+];
    };
}

const WEEK_SECS: u64 = 7 * 86_400;

settings! {
    /// Listen address.
    HOST: Deployment, Host, Default("0.0.0.0");
    /// Listen port (`0`: any free port).
    PORT: Deployment, Number { min: 0, max: u16::MAX as u64 }, Default("8080");
    /// `sqlite://…` embedded (one replica; the file is created, WAL mode) or `postgres://…` (several replicas).
    DATABASE_URL: Deployment, DatabaseUrl, Default("sqlite://handover.db");
    /// PostgreSQL: connections that write, each running one transaction at a time (SQLite has one writer). More than the database's cores made it slower on the 2-core machine of the Performance section; raise it for a database far away, where each statement waits on the network.
    DATABASE_WRITERS: Deployment, Number { min: 1, max: 256 }, Default("4");
    /// The bot app's id: events naming it are "us".
    FB_APP_ID: Account, MetaId("app id"), Required("the bot app's id");
    /// The bot app's secret: `appsecret_proof` on every Graph call, and webhook signatures unless `FB_WEBHOOK_APP_SECRET` is set.
    FB_APP_SECRET: Account, Secret, Required("the bot app's secret");
    /// The bot app's Page access token (with `pages_messaging`).
    FB_PAGE_ACCESS_TOKEN: Account, Secret, Required("the bot app's Page access token");
    /// The verify token typed in the App Dashboard's webhook settings.
    FB_VERIFY_TOKEN: Account, Secret, Required("the verify token typed in the App Dashboard's webhook settings");
    /// If set, calls use `/{FB_PAGE_ID}/…`, else `/me/…`.
    FB_PAGE_ID: Account, MetaId("Page id"), Optional("none");
    /// Secret of the app whose webhook points at `/messenger` (companion mode: the second app); `X-Hub-Signature-256` is checked with it.
    FB_WEBHOOK_APP_SECRET: Account, Secret, Optional("`FB_APP_SECRET`");
    /// That app's id (used by `doctor` to check its webhook fields).
    FB_WEBHOOK_APP_ID: Account, MetaId("app id"), Optional("`FB_APP_ID`");
    /// That app's Page token; only `doctor --fix` uses it, to subscribe its fields.
    FB_WEBHOOK_PAGE_ACCESS_TOKEN: Account, Secret, Optional("none");
    /// Graph API base URL.
    GRAPH_API_BASE: Deployment, BaseUrl, Default("https://graph.facebook.com");
    /// Graph API version.
    GRAPH_API_VERSION: Deployment, GraphVersion, Default("v25.0");
    /// Who gets the thread (the Page Inbox); must differ from `FB_APP_ID`.
    HANDOVER_TARGET_APP_ID: Account, MetaId("app id"), Default(PAGE_INBOX_APP_ID);
    /// Dialogflow actions that hand the conversation to a person.
    HANDOVER_ACTIONS: Account, List, Default("input.handover");
    /// Dialogflow actions that give the conversation back to the bot (none may be in `HANDOVER_ACTIONS`).
    RETURN_ACTIONS: Account, List, Default("input.return_to_bot");
    /// A whole message matching one (case, accents, punctuation and spaces ignored) asks for the bot.
    RETURN_PHRASES: Account, List, Default("back to bot,talk to bot,talk to the bot");
    /// Postback payload that asks for the bot.
    RETURN_PAYLOAD: Account, Text, Default("BACK_TO_BOT");
    /// An agent typing one in the inbox hands the thread back (`#` counts).
    AGENT_RETURN_PHRASES: Account, List, Default("#bot");
    /// Used when the handover intent has no text of its own.
    HANDOVER_MESSAGE: Account, Message, Default(DEFAULT_HANDOVER_MESSAGE);
    /// Sent when the bot has the thread again.
    WELCOME_BACK_MESSAGE: Account, Message, Default(DEFAULT_WELCOME_BACK_MESSAGE);
    /// Sent after an agent idle timeout.
    AGENT_TIMEOUT_MESSAGE: Account, Message, Default(DEFAULT_AGENT_TIMEOUT_MESSAGE);
    /// Told to a user whose handover cannot happen (sent while the bot owns the thread).
    HANDOVER_FAILED_MESSAGE: Account, Message, Default(DEFAULT_HANDOVER_FAILED_MESSAGE);
    /// The answer to a return action that is not the welcome (the return was already welcomed, or the welcome comes after the take).
    ALREADY_WITH_BOT_MESSAGE: Account, Message, Default(DEFAULT_ALREADY_WITH_BOT_MESSAGE);
    /// Delay before the pass, so the integration's reply is delivered while the bot still owns the thread; and before the take of a return, so a reply the integration makes to the same request (a tap on the bot's button reaches it too) is refused while the inbox still has the thread and the service's welcome is the only one.
    HANDOVER_PASS_DELAY_MS: Account, Number { min: 0, max: 60_000 }, Default("1500");
    /// Take the thread back after this long without an agent message (`0`: off).
    AGENT_IDLE_TIMEOUT_SECS: Account, Number { min: 0, max: WEEK_SECS }, Default("0");
    /// What a return does to the bot's Dialogflow contexts (above).
    CONTEXT_ON_RETURN: Account, Choice(&["reset", "restore", "keep"]), Default("reset");
    /// The bot's Dialogflow project; context sync is off (said at start-up) without it.
    DIALOGFLOW_PROJECT_ID: Account, Text, Optional("none");
    /// The agent's region, e.g. `europe-west2`.
    DIALOGFLOW_LOCATION: Account, Region, Default("global");
    /// For tests and private endpoints.
    DIALOGFLOW_API_BASE: Account, BaseUrl, Optional("derived from `DIALOGFLOW_LOCATION`");
    /// Service-account key file; without it, the metadata server.
    GOOGLE_APPLICATION_CREDENTIALS: Account, File, Optional("none");
    /// Override of the metadata token URL (the emulator uses it); checked at start.
    GOOGLE_METADATA_TOKEN_URL: Deployment, Text, Optional("the metadata server's");
    /// `none` runs `/fulfillment` without authentication (must be explicit).
    FULFILLMENT_AUTH: Account, Text, Optional("unset");
    /// Basic auth user name for `/fulfillment` (with `FULFILLMENT_PASSWORD`); compared in constant time.
    FULFILLMENT_USERNAME: Account, Secret, Optional("none");
    /// Basic auth password for `/fulfillment` (with `FULFILLMENT_USERNAME`); compared in constant time.
    FULFILLMENT_PASSWORD: Account, Secret, Optional("none");
    /// `Authorization: Bearer` token for `/fulfillment`, at least 16 characters; this or `FULFILLMENT_USERNAME` + `FULFILLMENT_PASSWORD` is required unless `FULFILLMENT_AUTH=none`.
    FULFILLMENT_TOKEN: Account, Secret, Optional("none");
    /// `Authorization: Bearer` token of the admin API and page (`/admin`), at least 16 characters; compared in constant time. Unset, every `/admin` route answers 404.
    ADMIN_TOKEN: Deployment, Secret, Optional("none (admin off)");
    /// Agent notifications: a signed JSON POST here when a user is handed to the inbox, a handover failed, a user waits for an agent, a conversation returns to the bot; a Slack or Google Chat incoming webhook URL works as is (see Agent notifications). Treated as a secret: never logged.
    NOTIFY_WEBHOOK_URL: Deployment, SecretUrl, Optional("none (no notifications)");
    /// The key of the notifications' `X-Handover-Signature-256` (`sha256=` and the hex HMAC-SHA256 of the body); required with `NOTIFY_WEBHOOK_URL`.
    NOTIFY_WEBHOOK_SECRET: Deployment, Secret, Optional("none");
    /// A `waiting` notification when a user with a human has had no agent reply for this long (`0`: none).
    NOTIFY_WAITING_SECS: Deployment, Number { min: 0, max: WEEK_SECS }, Default("300");
    /// How the service is connected to Messenger (above); `bridge` is planned (refused by `serve` for now).
    MESSENGER_MODE: Account, Choice(&["companion", "bridge"]), Default("companion");
    /// Retry schedule: exponential from this base, capped at 15 min (1 min for passes and takes), with jitter; `Retry-After` and Graph's rate-limit codes (4, 17, 32, 613, HTTP 429) wait longer.
    JOB_RETRY_BASE_MS: Deployment, Number { min: 1, max: 3_600_000 }, Default("1000");
    /// Jobs other than passes and takes give up after this many attempts and are kept as failed (dead letters).
    JOB_MAX_ATTEMPTS: Deployment, Number { min: 1, max: 100 }, Default("8");
    /// How long a pass or take keeps being retried through an outage (as long as Meta retries its own webhooks); then the handover is failed (the user is told) or the take is given up.
    JOB_RETRY_FOR_SECS: Deployment, Number { min: 1, max: WEEK_SECS }, Default("3600");
    /// Jobs run at once per replica (never two of one user).
    JOB_CONCURRENCY: Deployment, Number { min: 1, max: 1024 }, Default("16");
    /// A claimed job's lease, renewed while it runs; a replica that dies loses its jobs to others after this.
    JOB_LEASE_MS: Deployment, Number { min: 1_000, max: 3_600_000 }, Default("120000");
    /// How often the reconciler runs.
    RECONCILE_INTERVAL_SECS: Deployment, Number { min: 1, max: 86_400 }, Default("60");
    /// How long `PASSING`/`RETURNING` may last before the reconciler asks `thread_owner` (then again after 2×, 4×… up to an hour; `HUMAN` after 1, 2, 4… days, at most weekly).
    STUCK_AFTER_SECS: Deployment, Number { min: 1, max: 86_400 }, Default("300");
    /// Timeout of each Graph and Dialogflow call.
    HTTP_TIMEOUT_MS: Deployment, Number { min: 100, max: 120_000 }, Default("10000");
    /// The longest a stop (SIGTERM, Ctrl-C) takes: no new connections; requests and jobs in flight get all but the last quarter of it (at most 2 s) to finish; jobs still running then are released, so another replica or the next start runs them at once. Cloud Run kills 10 s after SIGTERM (its file sets 8 for margin); keep Kubernetes' `terminationGracePeriodSeconds` above it.
    SHUTDOWN_GRACE_SECS: Deployment, Number { min: 1, max: 3_600 }, Default("10");
    /// A settled conversation (with the bot, idle, or with a human) in which nobody has written and whose state has not changed for this long, with nothing queued, is deleted: its row holds the user's Dialogflow session and handover contexts, and the next message starts afresh. Conversations in transit are never deleted.
    THREAD_RETENTION_DAYS: Deployment, Number { min: 1, max: 3_650 }, Default("30");
    /// The audit trail (state changes) and dead-letter jobs are kept this long.
    AUDIT_RETENTION_DAYS: Deployment, Number { min: 1, max: 3_650 }, Default("90");
    /// Incoming requests: a new connection's first request must have sent its headers within this time (actix's clock ticks every 500 ms), else a 408 and the connection is closed.
    REQUEST_HEADER_TIMEOUT_MS: Deployment, Number { min: 1_000, max: 300_000 }, Default("5000");
    /// Incoming requests: the whole body (plain or chunked) must arrive within this time of the headers, else a JSON 408 and the connection is closed.
    REQUEST_BODY_TIMEOUT_MS: Deployment, Number { min: 100, max: 300_000 }, Default("10000");
    /// Incoming requests: the longest pause allowed between two pieces of a body, else a JSON 408 and the connection is closed.
    REQUEST_BODY_IDLE_TIMEOUT_MS: Deployment, Number { min: 100, max: 300_000 }, Default("5000");
    /// Incoming requests: how long an idle connection is kept open for the client's next request (`0`: closed after each response); behind a load balancer that reuses connections, set it above the balancer's idle timeout.
    KEEP_ALIVE_SECS: Deployment, Number { min: 0, max: 3_600 }, Default("5");
    /// Incoming requests: how long a closing connection is given to finish (the last answer flushed and taken, the client's close awaited) before it is dropped (`0`: dropped at once).
    DISCONNECT_TIMEOUT_MS: Deployment, Number { min: 0, max: 60_000 }, Default("1000");
    /// Incoming connections open at once per replica, split evenly among the HTTP workers (one per CPU); further connections wait in the kernel's listen queue, unanswered, until one closes (see Limits).
    MAX_CONNECTIONS: Deployment, Number { min: 1, max: 100_000 }, Default("512");
    /// Log lines as JSON, or laid out for people to read.
    LOG_FORMAT: Deployment, Choice(&["json", "pretty"]), Default("json");
    /// Log filter: a default level and `target=level` directives, e.g. `info,messenger_handover=debug`.
    RUST_LOG: Deployment, Text, Default("info");
    /// The Google Cloud project the logs go to: a request's trace id (from `traceparent` or `X-Cloud-Trace-Context`) is then logged as `logging.googleapis.com/trace`, which Cloud Logging links to Cloud Trace; without it, as `trace_id`.
    GOOGLE_CLOUD_PROJECT: Deployment, Text, Optional("none");
    /// OpenTelemetry: export every request's and job's span over OTLP/HTTP to `{this}/v1/traces`, continuing the caller's `traceparent`. Only in a build with the cargo feature `otel` (off by default; said at start otherwise).
    OTEL_EXPORTER_OTLP_ENDPOINT: Deployment, BaseUrl, Optional("none (no export)");
}

//! An in-process emulator of the parts of the Messenger Platform (Graph API thread control,
//! Send API, webhook delivery) and of Dialogflow ES (contexts API, detectIntent, OAuth token
//! endpoints, and the built-in Messenger integration calling a fulfillment webhook) that the
//! service talks to. Protocol mistakes fail here like they fail on Meta and Google: sending
//! while another app owns the thread, `take_thread_control` with a `target_app_id`, a wrong
//! `appsecret_proof`, an unknown bearer token.
//!
//! It serves HTTP on `127.0.0.1` only. Scripted actions (`user_says`, `agent_replies`, …)
//! return once the webhook deliveries they cause, and the integration's round-trip, are done.
//!
//! Three apps are modelled: the bot app (the Page's default app; its webhook is the emulated
//! Dialogflow integration unless `bot_webhook_url` is set), the companion app (its webhook is
//! the service's `/messenger`), and the Page Inbox ([`PAGE_INBOX_APP_ID`], no webhook).
//!
//! For adversarial tests: [`Emulator::set_chaos`] injects seeded faults ([`Chaos`]: webhook
//! deliveries to the companion delayed, duplicated, reordered, dropped; the service's Graph
//! API calls slow, failing, rate-limited, applied with their answer lost, or dropped), and
//! [`Emulator::hold_companion_deliveries`] / [`Emulator::release_held`] let a scenario deliver
//! the service's webhooks in any order. What happened to each user is observable:
//! [`Emulator::timeline`], [`Emulator::ownership_history`], [`Emulator::thread_control_calls`],
//! [`Emulator::journal`]. With `Chaos::default()` (the default) nothing changes.

mod chaos;
mod delivery;
mod dialogflow;
mod google;
mod graph;
mod platform;
mod server;
mod signing;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use delivery::Pool;
use platform::{Delivery, SendRequest, State, Via};

/// The Facebook Page Inbox's app id, as Meta publishes it (the service has its own copy: the
/// emulator shares no code with what it tests).
pub const PAGE_INBOX_APP_ID: &str = "263902037430900";
pub use chaos::{
    Chaos, DeliveryOutcome, DeliveryRecord, HeldDelivery, Observation, Observed, OwnerChange,
    ThreadControlCall,
};

/// The static text of the emulated agent's "Return to bot" intent (`input.return_to_bot`).
pub const RETURN_INTENT_TEXT: &str = dialogflow::RETURN_TO_BOT.text;
/// The static text of the emulated agent's "Human handover" intent (`input.handover`).
pub const HANDOVER_INTENT_TEXT: &str = dialogflow::HUMAN_HANDOVER.text;

/// How the emulated Page, apps and agent are set up.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    pub page_id: String,
    pub page_name: String,
    /// The bot app: the Page's default app; Dialogflow's integration is its webhook.
    pub bot_app_id: String,
    pub bot_app_secret: String,
    /// The bot app's Page access token (with an `appsecret_proof` of `bot_app_secret`).
    pub page_token: String,
    /// The app whose webhook is the service's `/messenger` (companion mode).
    pub companion_app_id: String,
    pub companion_app_secret: String,
    /// The companion app's Page access token (with an `appsecret_proof` of
    /// `companion_app_secret`): calls made with it act as the companion app, e.g.
    /// `POST subscribed_apps` changes the companion's fields. The Graph API accepts no other
    /// token than these two.
    pub companion_page_token: String,
    /// e.g. `http://127.0.0.1:PORT/messenger`; also [`Emulator::set_companion_webhook`].
    pub companion_webhook_url: Option<String>,
    /// Webhook fields the companion app is subscribed to
    /// (default `standby`, `messaging_handovers`, `message_echoes`).
    pub companion_fields: Vec<String>,
    /// When set, the bot app's deliveries are POSTed here (signed with `bot_app_secret`)
    /// instead of going to the emulated Dialogflow integration (bridge mode).
    pub bot_webhook_url: Option<String>,
    /// Webhook fields the bot app is subscribed to (default `messages`, `messaging_postbacks`,
    /// what Dialogflow's integration asks for).
    pub bot_fields: Vec<String>,
    /// Where the emulated Dialogflow integration sends fulfillment webhook calls.
    pub fulfillment_url: Option<String>,
    /// The full `Authorization` header value for fulfillment calls, e.g. `Basic …`.
    pub fulfillment_auth_header: Option<String>,
    /// Sessions are `projects/{p}/agent/sessions/{uuid per psid}`.
    pub dialogflow_project: String,
    /// The Page's "Take control of conversations" toggle for the bot app.
    pub bot_can_take_control: bool,
    /// The Graph API version the service is expected to use; any `vNN.N` is accepted and
    /// recorded (see [`Emulator::graph_versions`]).
    pub graph_version: String,
    /// Scopes `debug_token` reports for the Page token. Without `pages_messaging` every Send
    /// API call fails with `(#200)`; without `pages_manage_metadata`, `POST subscribed_apps`.
    pub page_scopes: Vec<String>,
    /// The same for the companion app's Page token.
    pub companion_page_scopes: Vec<String>,
    /// `GET /me?fields=messaging_feature_status`.
    pub messaging_feature_status: Value,
    /// Extra attempts for a webhook delivery that did not get a 200 (Meta retries a few times).
    pub webhook_retries: u32,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            page_id: "104857600000001".into(),
            page_name: "Demo Shop".into(),
            bot_app_id: "111111111111111".into(),
            bot_app_secret: "bot-app-secret".into(),
            page_token: "EAAB-emulated-page-token".into(),
            companion_app_id: "222222222222222".into(),
            companion_app_secret: "companion-app-secret".into(),
            companion_page_token: "EAAC-emulated-companion-page-token".into(),
            companion_webhook_url: None,
            companion_fields: vec![
                "standby".into(),
                "messaging_handovers".into(),
                "message_echoes".into(),
            ],
            bot_webhook_url: None,
            bot_fields: vec!["messages".into(), "messaging_postbacks".into()],
            fulfillment_url: None,
            fulfillment_auth_header: None,
            dialogflow_project: "demo-agent".into(),
            bot_can_take_control: true,
            graph_version: "v25.0".into(),
            page_scopes: vec![
                "pages_messaging".into(),
                "pages_manage_metadata".into(),
                "pages_show_list".into(),
            ],
            companion_page_scopes: vec![
                "pages_messaging".into(),
                "pages_manage_metadata".into(),
                "pages_show_list".into(),
            ],
            messaging_feature_status: json!({
                "hop_v2": false,
                "msgr_multi_app": true,
                "ig_multi_app": false,
            }),
            webhook_retries: 3,
        }
    }
}

/// A message the user saw in Messenger.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SentToUser {
    pub from_app_id: String,
    /// The text, or a short form such as `[card] Title` for attachments.
    pub text: String,
    pub mid: String,
    /// Titles of the quick replies offered with the message.
    pub quick_replies: Vec<String>,
    /// The Send API `message` object as sent.
    pub message: Value,
}

/// One Graph / Dialogflow / OAuth call, webhook delivery or scripted action, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// `user`, `page inbox`, `service` (HTTP calls made with the bot app's token or to the
    /// Dialogflow / OAuth endpoints), `bot app` (the integration's Send API calls),
    /// `messenger` (webhook deliveries), `messenger integration`, `dialogflow`.
    pub actor: String,
    /// `message`, `postback`, `pass_thread_control`, `take_thread_control`,
    /// `release_thread_control`, `request_thread_control`, `extend_thread_control`,
    /// `thread_owner`, `send_api`, `page`, `subscribed_apps`, `debug_token`, `contexts.list`,
    /// `contexts.get`, `contexts.create`, `contexts.patch`, `contexts.delete`, `detectIntent`,
    /// `agent.get`, `oauth.token`, `webhook → companion`, `webhook → bot`, `fulfillment`.
    pub call: String,
    pub detail: String,
    pub ok: bool,
}

impl fmt::Display for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok { " " } else { "✗" };
        write!(
            f,
            "{mark} {:<22} {:<24} {}",
            self.actor, self.call, self.detail
        )
    }
}

enum Job {
    Deliver(Vec<Delivery>, Option<oneshot::Sender<()>>),
    Barrier(oneshot::Sender<()>),
}

pub(crate) struct Inner {
    state: Mutex<State>,
    /// No connection pooling: calls are made from several runtimes (actix workers, the caller's).
    http: reqwest::Client,
    jobs: mpsc::UnboundedSender<Job>,
    base_url: String,
    server: Mutex<Option<actix_web::dev::ServerHandle>>,
    worker: Mutex<Option<tokio::task::AbortHandle>>,
    /// Held and chaos-delayed companion deliveries.
    pool: Mutex<Pool>,
    pool_wake: Arc<tokio::sync::Notify>,
    pool_worker: Mutex<Option<tokio::task::AbortHandle>>,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        relock(&self.state)
    }

    /// Never taken while the state lock is held (and the state lock never while this is).
    pub(crate) fn pool(&self) -> MutexGuard<'_, Pool> {
        relock(&self.pool)
    }

    /// Queues deliveries without waiting (what Graph API calls do: Meta answers first).
    pub(crate) fn enqueue(&self, deliveries: Vec<Delivery>) {
        if !deliveries.is_empty() {
            let _ = self.jobs.send(Job::Deliver(deliveries, None));
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(h) = relock(&self.server).take() {
            // Sends the stop command now; nobody needs to wait for it.
            drop(h.stop(false));
        }
        if let Some(w) = relock(&self.worker).take() {
            w.abort();
        }
        if let Some(w) = relock(&self.pool_worker).take() {
            w.abort();
        }
    }
}

async fn worker(inner: Weak<Inner>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = jobs.recv().await {
        match job {
            Job::Barrier(done) => {
                let _ = done.send(());
            }
            Job::Deliver(deliveries, done) => {
                if let Some(inner) = inner.upgrade() {
                    delivery::process(&inner, deliveries).await;
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// A running emulator. Cheap to clone; the server stops with [`Emulator::stop`] or when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Binds `127.0.0.1:0` and serves the Graph API, the Dialogflow API and the token
    /// endpoints there. Must be called inside a tokio runtime.
    pub async fn start(cfg: EmulatorConfig) -> std::io::Result<Emulator> {
        tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        // reqwest is built without a TLS provider of its own (see the workspace manifest);
        // the emulator only speaks plain HTTP on loopback, but reqwest wants one installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new(cfg)),
            http,
            jobs: tx,
            base_url: format!("http://127.0.0.1:{port}"),
            server: Mutex::new(None),
            worker: Mutex::new(None),
            pool: Mutex::new(Pool::default()),
            pool_wake: Arc::new(tokio::sync::Notify::new()),
            pool_worker: Mutex::new(None),
        });
        let srv = server::build(listener, Arc::downgrade(&inner))?;
        *relock(&inner.server) = Some(srv.handle());
        tokio::spawn(srv);
        let w = tokio::spawn(worker(Arc::downgrade(&inner), rx));
        *relock(&inner.worker) = Some(w.abort_handle());
        let p = tokio::spawn(delivery::pool_worker(
            Arc::downgrade(&inner),
            inner.pool_wake.clone(),
        ));
        *relock(&inner.pool_worker) = Some(p.abort_handle());
        Ok(Emulator { inner })
    }

    /// `http://127.0.0.1:PORT`: the Graph API base, the Dialogflow API base and the OAuth
    /// endpoints all live here.
    pub fn base_url(&self) -> String {
        self.inner.base_url.clone()
    }

    /// `{base}/token`: the service-account JWT grant endpoint.
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.inner.base_url)
    }

    /// The metadata server's token URL (needs `Metadata-Flavor: Google`).
    pub fn metadata_token_url(&self) -> String {
        format!(
            "{}/computeMetadata/v1/instance/service-accounts/default/token",
            self.inner.base_url
        )
    }

    /// A copy of the current configuration.
    pub fn config(&self) -> EmulatorConfig {
        self.inner.lock().cfg.clone()
    }

    pub fn set_companion_webhook(&self, url: &str) {
        self.inner.lock().cfg.companion_webhook_url = Some(url.to_string());
    }

    /// Bridge mode: the bot app's deliveries go to `url` (signed with the bot app secret)
    /// instead of the emulated Dialogflow integration; `None` switches back.
    pub fn set_bot_webhook(&self, url: Option<&str>) {
        self.inner.lock().cfg.bot_webhook_url = url.map(String::from);
    }

    pub fn set_fulfillment(&self, url: &str, auth_header: Option<String>) {
        let mut st = self.inner.lock();
        st.cfg.fulfillment_url = Some(url.to_string());
        st.cfg.fulfillment_auth_header = auth_header;
    }

    /// The webhook fields an app (bot or companion) is subscribed to now.
    pub fn subscribed_fields(&self, app_id: &str) -> Vec<String> {
        self.inner.lock().fields_of(app_id).to_vec()
    }

    /// The Page's "Take control of conversations" toggle for the bot app.
    pub fn set_bot_can_take_control(&self, allowed: bool) {
        self.inner.lock().cfg.bot_can_take_control = allowed;
    }

    /// Changes the state and queues the resulting deliveries under one lock, so the queue
    /// order is the order of the state changes; the receiver fires when they are done.
    fn locked(
        &self,
        change: impl FnOnce(&mut State) -> Vec<Delivery>,
    ) -> Option<oneshot::Receiver<()>> {
        let mut st = self.inner.lock();
        let deliveries = change(&mut st);
        let (tx, rx) = oneshot::channel();
        self.inner
            .jobs
            .send(Job::Deliver(deliveries, Some(tx)))
            .ok()
            .map(|_| rx)
    }

    /// Waits until everything queued so far has been delivered (including what the Dialogflow
    /// integration's replies caused).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.jobs.send(Job::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Waits for the submitted deliveries, then for everything queued meanwhile.
    async fn finish(&self, done: Option<oneshot::Receiver<()>>) {
        if let Some(rx) = done {
            let _ = rx.await;
        }
        self.flush().await;
    }

    /// A user message, delivered like Meta does: to the owner on `messaging` (an idle thread
    /// goes to the bot app first), to the other subscribed apps on `standby`.
    pub async fn user_says(&self, psid: &str, text: &str) {
        self.flush().await;
        let done = self.locked(|st| {
            st.record("user", "message", format!("{psid}: {text:?}"), true);
            st.user_message(psid, text, None)
        });
        self.finish(done).await;
    }

    /// A tap on a quick reply: a message whose text is the title, with `quick_reply.payload`.
    pub async fn user_taps_quick_reply(&self, psid: &str, title: &str, payload: &str) {
        self.flush().await;
        let done = self.locked(|st| {
            st.record(
                "user",
                "message",
                format!("{psid}: quick reply {title:?} ({payload})"),
                true,
            );
            st.user_message(psid, title, Some(payload))
        });
        self.finish(done).await;
    }

    /// A tap on a postback button the bot app sent: the bot gets it on `messaging` with the
    /// payload (whoever owns the thread), the companion on `standby` without it.
    pub async fn user_taps_postback(&self, psid: &str, title: &str, payload: &str) {
        self.flush().await;
        let done = self.locked(|st| {
            st.record(
                "user",
                "postback",
                format!("{psid}: {title:?} ({payload})"),
                true,
            );
            st.user_postback(psid, title, payload)
        });
        self.finish(done).await;
    }

    /// A person replies in the Page Inbox: if the inbox does not own the thread it takes
    /// control first (`take_thread_control` event), then the message is sent (an echo with
    /// `app_id` 263902037430900).
    pub async fn agent_replies(&self, psid: &str, text: &str) {
        self.flush().await;
        let done = self.locked(|st| {
            let mut out = Vec::new();
            if st.owner_of(psid).as_deref() != Some(PAGE_INBOX_APP_ID) {
                match st.take(PAGE_INBOX_APP_ID, psid, "", Via::Inbox) {
                    Ok(d) => {
                        st.record("page inbox", "take_thread_control", psid.to_string(), true);
                        out.extend(d);
                    }
                    Err(e) => {
                        st.record("page inbox", "take_thread_control", e.short(), false);
                    }
                }
            }
            let req = SendRequest {
                messaging_type: Some("RESPONSE".into()),
                tag: None,
                message: Some(json!({ "text": text })),
                metadata: None,
            };
            match st.send(PAGE_INBOX_APP_ID, psid, &req, Via::Inbox) {
                Ok((_, d)) => {
                    st.record("page inbox", "send_api", format!("{psid}: {text:?}"), true);
                    out.extend(d);
                }
                Err(e) => {
                    st.record(
                        "page inbox",
                        "send_api",
                        format!("{psid}: {text:?} → {}", e.short()),
                        false,
                    );
                }
            }
            out
        });
        self.finish(done).await;
    }

    /// The agent marks the conversation "Done": the inbox passes the thread back to the
    /// default app (the bot app). Nothing happens when the inbox does not own the thread.
    pub async fn agent_marks_done(&self, psid: &str) {
        self.flush().await;
        let done = self.locked(|st| {
            if st.owner_of(psid).as_deref() != Some(PAGE_INBOX_APP_ID) {
                st.record(
                    "page inbox",
                    "pass_thread_control",
                    format!("{psid}: marked done, but the inbox does not own the thread"),
                    true,
                );
                Vec::new()
            } else {
                let bot = st.cfg.bot_app_id.clone();
                match st.pass(PAGE_INBOX_APP_ID, psid, &bot, "", Via::Inbox) {
                    Ok(d) => {
                        st.record(
                            "page inbox",
                            "pass_thread_control",
                            format!("{psid}: done → bot app"),
                            true,
                        );
                        d
                    }
                    Err(e) => {
                        st.record("page inbox", "pass_thread_control", e.short(), false);
                        Vec::new()
                    }
                }
            }
        });
        self.finish(done).await;
    }

    /// The inbox asks the owner for the thread: a `request_thread_control` event with
    /// `requested_owner_app_id` = the inbox, to the owner and to the apps subscribed to
    /// `messaging_handovers`.
    pub async fn inbox_requests_control(&self, psid: &str) {
        self.flush().await;
        let done = self.locked(|st| match st.request(PAGE_INBOX_APP_ID, psid, "") {
            Ok(d) => {
                st.record(
                    "page inbox",
                    "request_thread_control",
                    psid.to_string(),
                    true,
                );
                st.observe(psid, None, Observed::InboxRequestedControl);
                d
            }
            Err(e) => {
                st.record("page inbox", "request_thread_control", e.short(), false);
                Vec::new()
            }
        });
        self.finish(done).await;
    }

    /// The app that owns the thread; `None` = idle (also 24 h after the last user message).
    pub fn owner(&self, psid: &str) -> Option<String> {
        self.inner.lock().owner_of(psid)
    }

    /// Sets the owner directly, without any webhook (test set-up).
    pub fn force_owner(&self, psid: &str, app_id: Option<&str>) {
        let mut st = self.inner.lock();
        let from = st.thread(psid).owner.clone();
        st.thread(psid).owner = app_id.map(String::from);
        if from.as_deref() != app_id {
            let change = OwnerChange {
                seq: 0,
                at_ms: 0,
                from,
                to: app_id.map(String::from),
                by: "platform".into(),
                via: "force_owner".into(),
            };
            st.observe(psid, None, Observed::OwnerChanged(change));
            // The numbers inside are those of the observation itself.
            if let Some(Observation { seq, at_ms, what }) = st.thread(psid).timeline.last_mut()
                && let Observed::OwnerChanged(c) = what
            {
                c.seq = *seq;
                c.at_ms = *at_ms;
            }
        }
    }

    /// Pretends the user's last message was `age` ago (24-hour window and idle tests).
    pub fn set_last_user_message_age(&self, psid: &str, age: Duration) {
        let mut st = self.inner.lock();
        let at = platform::now_ms() - age.as_millis() as i64;
        st.thread(psid).last_user_ms = Some(at);
    }

    /// The active contexts of the user's Dialogflow session: (id, lifespan, parameters).
    pub fn contexts(&self, psid: &str) -> Vec<(String, i32, Value)> {
        let mut st = self.inner.lock();
        let key = st.session_key(psid);
        st.agent
            .contexts(&key)
            .into_iter()
            .map(|(id, c)| (id, c.lifespan, c.params))
            .collect()
    }

    /// The Dialogflow session the integration uses for that user,
    /// `projects/{p}/agent/sessions/{uuid}`.
    pub fn session_of(&self, psid: &str) -> String {
        self.inner.lock().session_path(psid)
    }

    /// What the user saw, in order.
    pub fn messages_to_user(&self, psid: &str) -> Vec<SentToUser> {
        self.inner
            .lock()
            .threads
            .get(psid)
            .map(|t| t.sent.clone())
            .unwrap_or_default()
    }

    pub fn log(&self) -> Vec<LogEntry> {
        self.inner.lock().log.clone()
    }

    /// Returns the log and clears it.
    pub fn take_log(&self) -> Vec<LogEntry> {
        std::mem::take(&mut self.inner.lock().log)
    }

    /// Protocol violations the emulator rejected.
    pub fn errors(&self) -> Vec<String> {
        self.inner.lock().errors.clone()
    }

    /// Returns the violations and clears them.
    pub fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut self.inner.lock().errors)
    }

    /// Every Graph API version seen in a request path (`""` for an unversioned call).
    pub fn graph_versions(&self) -> Vec<String> {
        self.inner.lock().versions.iter().cloned().collect()
    }

    /// "bot app", "companion app", "page inbox", or `app <id>`.
    pub fn app_name(&self, app_id: &str) -> String {
        self.inner.lock().app_name(app_id)
    }

    /// Polls `cond` every 20 ms until it holds (true) or `timeout` passes (false).
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&Emulator) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the thread has that owner (`None` = idle); false on timeout.
    pub async fn wait_for_owner(&self, psid: &str, owner: Option<&str>, timeout: Duration) -> bool {
        self.wait_until(timeout, |e| e.owner(psid).as_deref() == owner)
            .await
    }

    /// Waits until nothing was logged for `quiet` (all queued deliveries done), at most `max`.
    pub async fn settle(&self, quiet: Duration, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            self.flush().await;
            let before = self.inner.lock().activity;
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return;
            }
            tokio::time::sleep(quiet.min(deadline - now)).await;
            if self.inner.lock().activity == before {
                return;
            }
        }
    }

    // ── Chaos: fault injection ──────────────────────────────────────────────────────────

    /// Google's OAuth token endpoint and the metadata server answer 503 while `down`.
    pub fn set_token_outage(&self, down: bool) {
        let mut st = self.inner.lock();
        st.token_outage = down;
        st.record("chaos", "set_token_outage", down.to_string(), true);
    }

    /// Calls of `call` (as the log names them: `pass_thread_control`, `oauth.token`, …)
    /// recorded so far, and how many of them succeeded.
    pub fn call_count(&self, call: &str) -> (usize, usize) {
        let st = self.inner.lock();
        let all: Vec<_> = st.log.iter().filter(|e| e.call == call).collect();
        (all.len(), all.iter().filter(|e| e.ok).count())
    }

    /// Turns fault injection on (or off, with `Chaos::default()`), and reseeds its dice.
    /// Companion deliveries already pooled are still delivered (with their delays).
    pub fn set_chaos(&self, chaos: Chaos) {
        let mut st = self.inner.lock();
        st.dice = chaos::Dice::new(chaos.seed);
        st.chaos = chaos;
        let detail = format!("{:?}", st.chaos);
        st.record("chaos", "set_chaos", detail, true);
    }

    /// The fault injection in force.
    pub fn chaos(&self) -> Chaos {
        self.inner.lock().chaos.clone()
    }

    /// From now on, deliveries to the companion app (the service's `/messenger`) are held
    /// (signed, in order) instead of sent, until released or dropped. Deliveries to the bot
    /// app (the Dialogflow integration) are not affected.
    pub fn hold_companion_deliveries(&self) {
        self.inner.pool().holding = true;
    }

    /// New companion deliveries are sent again; those already held stay held.
    pub fn stop_holding(&self) {
        self.inner.pool().holding = false;
    }

    /// The held companion deliveries, in the order they were held.
    pub fn held(&self) -> Vec<HeldDelivery> {
        delivery::held(&self.inner)
    }

    /// Delivers the held deliveries at `order` (indices into [`Emulator::held`]), one after
    /// another in that order, each awaited; the others stay held. Unknown or repeated indices
    /// are ignored.
    pub async fn release_held(&self, order: &[usize]) {
        for item in delivery::take_held(&self.inner, order) {
            delivery::send_prepared(&self.inner, &item).await;
        }
    }

    /// Delivers every held delivery in the order they were held.
    pub async fn release_all_held(&self) {
        let n = self.inner.pool().held.len();
        let order: Vec<usize> = (0..n).collect();
        self.release_held(&order).await;
    }

    /// Forgets the held deliveries (Meta gave up on them); returns how many there were.
    pub fn drop_held(&self) -> usize {
        let dropped = std::mem::take(&mut self.inner.pool().held);
        let mut st = self.inner.lock();
        for d in &dropped {
            st.record(
                "messenger",
                "webhook → companion",
                format!("{} {} → dropped while held", d.channel, d.summary),
                false,
            );
            delivery::observe(&mut st, d, DeliveryOutcome::DroppedWhileHeld, String::new());
        }
        dropped.len()
    }

    /// Waits until every queued delivery is done and no chaos-delayed companion delivery is
    /// waiting or being sent (held ones do not count); false if that takes longer than `max`.
    pub async fn drain(&self, max: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            self.flush().await;
            let idle = {
                let pool = self.inner.pool();
                pool.waiting.is_empty() && pool.in_flight == 0
            };
            if idle {
                self.flush().await;
                let pool = self.inner.pool();
                if pool.waiting.is_empty() && pool.in_flight == 0 {
                    return true;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // ── Observations ────────────────────────────────────────────────────────────────────

    /// Everything observed about a user's thread, in order: the user's messages and taps,
    /// Dialogflow's matches, messages that reached the user, ownership changes, applied
    /// thread-control calls, refused calls, deliveries and injected faults.
    pub fn timeline(&self, psid: &str) -> Vec<Observation> {
        self.inner
            .lock()
            .threads
            .get(psid)
            .map(|t| t.timeline.clone())
            .unwrap_or_default()
    }

    /// The thread's ownership changes, in order (who, from, to, by which call or inbox
    /// action, Meta's timestamp).
    pub fn ownership_history(&self, psid: &str) -> Vec<OwnerChange> {
        self.timeline(psid)
            .into_iter()
            .filter_map(|o| match o.what {
                Observed::OwnerChanged(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    /// Every `pass_thread_control` / `take_thread_control` the platform applied for the
    /// thread, with whether it changed the owner (`changed: false` = a redundant application).
    pub fn thread_control_calls(&self, psid: &str) -> Vec<ThreadControlCall> {
        self.timeline(psid)
            .into_iter()
            .filter_map(|o| match o.what {
                Observed::ThreadControl(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    /// The timeline as readable lines (`at_ms #seq what`), apps by name.
    pub fn journal(&self, psid: &str) -> Vec<String> {
        let st = self.inner.lock();
        let names = st.names();
        st.threads
            .get(psid)
            .map(|t| t.timeline.iter().map(|o| names.render(o)).collect())
            .unwrap_or_default()
    }

    /// Stops the HTTP server and the delivery worker.
    pub async fn stop(self) {
        let handle = relock(&self.inner.server).take();
        if let Some(h) = handle {
            h.stop(true).await;
        }
        if let Some(w) = relock(&self.inner.worker).take() {
            w.abort();
        }
        if let Some(w) = relock(&self.inner.pool_worker).take() {
            w.abort();
        }
    }
}

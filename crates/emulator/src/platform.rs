//! The emulator's state and the Messenger Platform rules (Conversation Routing): thread owners,
//! the 24-hour window, who may send, and which app receives which webhook event. Pure: every
//! operation changes the state and returns the deliveries to make; nothing here does I/O.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::chaos::{Chaos, Dice, Names, Observation, Observed, OwnerChange, ThreadControlCall};
use super::dialogflow::{Agent, SessionName, message_text};
use super::{EmulatorConfig, LogEntry, PAGE_INBOX_APP_ID, SentToUser};

pub(crate) const DAY_MS: i64 = 86_400_000;
/// `HUMAN_AGENT` tagged messages may be sent up to 7 days after the user's last message.
pub(crate) const HUMAN_AGENT_WINDOW_MS: i64 = 7 * DAY_MS;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

pub(crate) fn random_uuid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Which array of the webhook entry an event goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    Messaging,
    Standby,
}

impl Channel {
    pub fn key(self) -> &'static str {
        match self {
            Channel::Messaging => "messaging",
            Channel::Standby => "standby",
        }
    }
}

/// One webhook event for one app.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub app_id: String,
    pub channel: Channel,
    /// The object that goes in `entry[].messaging[]` / `entry[].standby[]`.
    pub event: Value,
    /// Short description for the log, e.g. `pass_thread_control bot app → page inbox`.
    pub summary: String,
}

/// A Graph API error, rendered in Meta's shape with HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GraphError {
    pub code: i64,
    pub subcode: Option<i64>,
    pub message: String,
}

impl GraphError {
    pub fn new(code: i64, subcode: Option<i64>, message: impl Into<String>) -> GraphError {
        GraphError {
            code,
            subcode,
            message: message.into(),
        }
    }

    pub fn not_owner() -> GraphError {
        GraphError::new(
            10,
            Some(2018300),
            "(#10) Message failed to send because another app is controlling this thread now.",
        )
    }

    pub fn body(&self) -> Value {
        let mut e = json!({
            "message": self.message,
            "type": "OAuthException",
            "code": self.code,
            "fbtrace_id": format!("A{}", random_hex(10)),
        });
        if let Some(s) = self.subcode {
            e["error_subcode"] = json!(s);
        }
        json!({ "error": e })
    }

    /// The body of a transient error (`is_transient: true`, as Meta marks them).
    pub fn body_transient(&self) -> Value {
        let mut b = self.body();
        b["error"]["is_transient"] = json!(true);
        b
    }

    pub fn short(&self) -> String {
        match self.subcode {
            Some(s) => format!("{} [code {}/{}]", self.message, self.code, s),
            None => format!("{} [code {}]", self.message, self.code),
        }
    }
}

/// One conversation (Page + PSID).
#[derive(Debug, Default)]
pub(crate) struct Thread {
    pub owner: Option<String>,
    pub last_user_ms: Option<i64>,
    pub sent: Vec<SentToUser>,
    /// The Dialogflow session id (a UUID) the integration uses for this user.
    pub session_id: String,
    /// Everything observed about this thread, in order.
    pub timeline: Vec<Observation>,
}

/// Who makes a thread-control or Send API call: decides how it is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// An HTTP Graph API call (the service, or a test's client).
    Graph,
    /// The emulated Dialogflow integration (the bot app, in process).
    Integration,
    /// A scripted Page Inbox action.
    Inbox,
    /// `request_thread_control` on an idle thread.
    IdleRequest,
    /// Conversation Routing's `thread_control` on the Send API.
    SendApi,
}

impl Via {
    fn control_label(self) -> &'static str {
        match self {
            Via::Graph | Via::Integration => "graph api",
            Via::Inbox => "page inbox",
            Via::IdleRequest => "request_thread_control (idle thread)",
            Via::SendApi => "send api thread_control",
        }
    }
}

/// Everything the emulator knows, behind one mutex.
#[derive(Debug)]
pub(crate) struct State {
    pub cfg: EmulatorConfig,
    pub bot_fields: Vec<String>,
    pub threads: HashMap<String, Thread>,
    pub agent: Agent,
    pub tokens: HashSet<String>,
    pub log: Vec<LogEntry>,
    pub errors: Vec<String>,
    pub versions: BTreeSet<String>,
    /// Bumped on every log entry (never reset), for "wait until quiet".
    pub activity: u64,
    last_ts: i64,
    /// The last observation's number (global across threads).
    seq: u64,
    pub chaos: Chaos,
    pub dice: Dice,
    /// Google's token endpoints answer 503 while set (an outage of the OAuth service).
    pub token_outage: bool,
}

impl State {
    pub fn new(cfg: EmulatorConfig) -> State {
        State {
            bot_fields: cfg.bot_fields.clone(),
            cfg,
            threads: HashMap::new(),
            agent: Agent::default(),
            tokens: HashSet::new(),
            log: Vec::new(),
            errors: Vec::new(),
            versions: BTreeSet::new(),
            activity: 0,
            last_ts: 0,
            seq: 0,
            chaos: Chaos::default(),
            dice: Dice::new(0),
            token_outage: false,
        }
    }

    /// Appends to the thread's timeline. `at_ms`: Meta's timestamp when there is one, else the
    /// latest timestamp handed out (or the clock, if later); it never allocates a new one.
    pub fn observe(&mut self, psid: &str, at_ms: Option<i64>, what: Observed) {
        self.seq += 1;
        let seq = self.seq;
        let at_ms = at_ms.unwrap_or_else(|| self.last_ts.max(now_ms()));
        self.thread(psid)
            .timeline
            .push(Observation { seq, at_ms, what });
    }

    pub fn note(&mut self, psid: &str, text: impl Into<String>) {
        self.observe(psid, None, Observed::Note(text.into()));
    }

    /// The number the next observation will get.
    fn next_seq(&self) -> u64 {
        self.seq + 1
    }

    fn owner_changed(
        &mut self,
        psid: &str,
        at_ms: i64,
        from: Option<String>,
        to: Option<String>,
        by: &str,
        via: &str,
    ) {
        let change = OwnerChange {
            seq: self.next_seq(),
            at_ms,
            from,
            to,
            by: by.to_string(),
            via: via.to_string(),
        };
        self.observe(psid, Some(at_ms), Observed::OwnerChanged(change));
    }

    #[allow(clippy::too_many_arguments)]
    fn control_applied(
        &mut self,
        psid: &str,
        at_ms: i64,
        app_id: &str,
        call: &str,
        from: Option<String>,
        to: Option<String>,
        via: Via,
    ) {
        let changed = from != to;
        let entry = ThreadControlCall {
            seq: self.next_seq(),
            at_ms,
            app_id: app_id.to_string(),
            call: call.to_string(),
            from: from.clone(),
            to: to.clone(),
            changed,
            via: via.control_label().to_string(),
        };
        self.observe(psid, Some(at_ms), Observed::ThreadControl(entry));
        if changed {
            let label = match (via, call) {
                (Via::Inbox, "take_thread_control") => {
                    "page inbox: agent reply (take_thread_control)"
                }
                (Via::Inbox, _) => "page inbox: done (pass_thread_control)",
                (Via::IdleRequest, _) => "request_thread_control (idle thread)",
                (Via::SendApi, _) => "send api thread_control",
                (_, c) => c,
            };
            self.owner_changed(psid, at_ms, from, to, app_id, label);
        }
    }

    /// How to name apps in a rendered history.
    pub fn names(&self) -> Names<'_> {
        Names {
            bot: &self.cfg.bot_app_id,
            companion: &self.cfg.companion_app_id,
        }
    }

    /// A strictly increasing millisecond timestamp (events never share one).
    pub fn next_ts(&mut self) -> i64 {
        self.last_ts = now_ms().max(self.last_ts + 1);
        self.last_ts
    }

    pub fn record(&mut self, actor: &str, call: &str, detail: impl Into<String>, ok: bool) {
        let detail = detail.into();
        tracing::debug!(actor, call, %detail, ok, "emulator");
        self.activity += 1;
        self.log.push(LogEntry {
            actor: actor.to_string(),
            call: call.to_string(),
            detail,
            ok,
        });
    }

    pub fn violation(&mut self, what: impl Into<String>) {
        let what = what.into();
        tracing::debug!(%what, "emulator rejected a call");
        self.errors.push(what);
    }

    /// "bot app", "companion app", "page inbox", or the id itself.
    pub fn app_name(&self, app_id: &str) -> String {
        if app_id == self.cfg.bot_app_id {
            "bot app".into()
        } else if app_id == self.cfg.companion_app_id {
            "companion app".into()
        } else if app_id == PAGE_INBOX_APP_ID {
            "page inbox".into()
        } else {
            format!("app {app_id}")
        }
    }

    pub fn is_known_app(&self, app_id: &str) -> bool {
        app_id == self.cfg.bot_app_id
            || app_id == self.cfg.companion_app_id
            || app_id == PAGE_INBOX_APP_ID
    }

    /// The apps that can receive webhooks, in delivery order.
    fn webhook_apps(&self) -> Vec<String> {
        vec![
            self.cfg.bot_app_id.clone(),
            self.cfg.companion_app_id.clone(),
        ]
    }

    pub fn fields_of(&self, app_id: &str) -> &[String] {
        if app_id == self.cfg.bot_app_id {
            &self.bot_fields
        } else if app_id == self.cfg.companion_app_id {
            &self.cfg.companion_fields
        } else {
            &[]
        }
    }

    /// The scopes of the Page token an app calls with (the inbox counts as the Page's own).
    pub fn scopes_of(&self, app_id: &str) -> &[String] {
        if app_id == self.cfg.companion_app_id {
            &self.cfg.companion_page_scopes
        } else {
            &self.cfg.page_scopes
        }
    }

    pub fn subscribed(&self, app_id: &str, field: &str) -> bool {
        self.fields_of(app_id).iter().any(|f| f == field)
    }

    /// The thread of a PSID, created on first use with a fresh Dialogflow session id.
    pub fn thread(&mut self, psid: &str) -> &mut Thread {
        self.threads
            .entry(psid.to_string())
            .or_insert_with(|| Thread {
                session_id: random_uuid(),
                ..Thread::default()
            })
    }

    /// The owner after applying expiry: a thread is idle 24 h after the user's last message.
    pub fn owner_of(&mut self, psid: &str) -> Option<String> {
        let now = now_ms();
        let t = self.threads.get_mut(psid)?;
        if t.owner.is_some() && t.last_user_ms.is_some_and(|last| now - last > DAY_MS) {
            let from = t.owner.take();
            self.owner_changed(psid, now, from, None, "platform", "24-hour expiry");
            return None;
        }
        t.owner.clone()
    }

    pub fn session_path(&mut self, psid: &str) -> String {
        let project = self.cfg.dialogflow_project.clone();
        let id = self.thread(psid).session_id.clone();
        format!("projects/{project}/agent/sessions/{id}")
    }

    pub fn session_key(&mut self, psid: &str) -> String {
        let path = self.session_path(psid);
        SessionName::parse(&path).map(|s| s.key()).unwrap_or(path)
    }

    fn user_event(&mut self, psid: &str, kind: &str, body: Value) -> Value {
        let ts = self.next_ts();
        let mut ev = json!({
            "sender": { "id": psid },
            "recipient": { "id": self.cfg.page_id },
            "timestamp": ts,
        });
        ev[kind] = body;
        ev
    }

    /// Marks a user → Page message: routes an idle thread to the default app (the bot).
    /// Returns the owner, and whether the thread was idle (the caller records the change with
    /// the event's timestamp).
    fn user_activity(&mut self, psid: &str) -> (String, bool) {
        let current = self.owner_of(psid);
        let now = now_ms();
        let bot = self.cfg.bot_app_id.clone();
        let t = self.thread(psid);
        t.last_user_ms = Some(now);
        match current {
            Some(o) => (o, false),
            None => {
                t.owner = Some(bot.clone());
                (bot, true)
            }
        }
    }

    fn routed_idle_to_bot(&mut self, psid: &str, at_ms: i64) {
        let bot = self.cfg.bot_app_id.clone();
        self.owner_changed(
            psid,
            at_ms,
            None,
            Some(bot),
            "user",
            "user message (idle thread)",
        );
    }

    fn event_ts(event: &Value) -> i64 {
        event.get("timestamp").and_then(Value::as_i64).unwrap_or(0)
    }

    /// A user message: the owner gets it on `messaging` (if subscribed to `messages`), every
    /// other app subscribed to `standby` gets it on `standby`.
    pub fn user_message(
        &mut self,
        psid: &str,
        text: &str,
        quick_reply_payload: Option<&str>,
    ) -> Vec<Delivery> {
        let (owner, was_idle) = self.user_activity(psid);
        let mut message = json!({ "mid": format!("m_{}", random_hex(12)), "text": text });
        if let Some(p) = quick_reply_payload {
            message["quick_reply"] = json!({ "payload": p });
        }
        let event = self.user_event(psid, "message", message);
        let ts = Self::event_ts(&event);
        if was_idle {
            self.routed_idle_to_bot(psid, ts);
        }
        self.observe(
            psid,
            Some(ts),
            Observed::UserMessage {
                text: text.to_string(),
                quick_reply_payload: quick_reply_payload.map(String::from),
                owner: Some(owner.clone()),
            },
        );
        let mut out = Vec::new();
        for app in self.webhook_apps() {
            if app == owner {
                if self.subscribed(&app, "messages") {
                    out.push(Delivery {
                        app_id: app,
                        channel: Channel::Messaging,
                        event: event.clone(),
                        summary: format!("message {text:?}"),
                    });
                }
            } else if self.subscribed(&app, "standby") {
                out.push(Delivery {
                    app_id: app,
                    channel: Channel::Standby,
                    event: event.clone(),
                    summary: format!("message {text:?}"),
                });
            }
        }
        out
    }

    /// A postback from a button the bot app sent: the bot (the original CTA sender) gets it on
    /// `messaging` WITH the payload whoever owns the thread; every other app subscribed to
    /// `standby` gets it on `standby` WITHOUT the payload (as Meta documents).
    pub fn user_postback(&mut self, psid: &str, title: &str, payload: &str) -> Vec<Delivery> {
        let (owner, was_idle) = self.user_activity(psid);
        let mid = format!("m_{}", random_hex(12));
        let full = self.user_event(
            psid,
            "postback",
            json!({ "mid": mid, "title": title, "payload": payload }),
        );
        let ts = Self::event_ts(&full);
        if was_idle {
            self.routed_idle_to_bot(psid, ts);
        }
        self.observe(
            psid,
            Some(ts),
            Observed::UserPostback {
                title: title.to_string(),
                payload: payload.to_string(),
                owner: Some(owner),
            },
        );
        let mut bare = full.clone();
        if let Some(pb) = bare.get_mut("postback").and_then(Value::as_object_mut) {
            pb.remove("payload");
        }
        let bot = self.cfg.bot_app_id.clone();
        let mut out = Vec::new();
        for app in self.webhook_apps() {
            if app == bot {
                if self.subscribed(&app, "messaging_postbacks") {
                    out.push(Delivery {
                        app_id: app,
                        channel: Channel::Messaging,
                        event: full.clone(),
                        summary: format!("postback {title:?} payload {payload:?}"),
                    });
                }
            } else if self.subscribed(&app, "standby") {
                out.push(Delivery {
                    app_id: app,
                    channel: Channel::Standby,
                    event: bare.clone(),
                    summary: format!("postback {title:?} (no payload)"),
                });
            }
        }
        out
    }

    fn known_user(&mut self, psid: &str) -> Result<(), GraphError> {
        if self
            .threads
            .get(psid)
            .is_some_and(|t| t.last_user_ms.is_some())
        {
            Ok(())
        } else {
            Err(GraphError::new(
                100,
                Some(2018001),
                "(#100) No matching user found",
            ))
        }
    }

    /// A handover event for `first` (if subscribed to `messaging_handovers`) and every other
    /// app subscribed to `messaging_handovers`, each once.
    fn handover_deliveries(
        &mut self,
        psid: &str,
        kind: &str,
        body: Value,
        first: Option<&str>,
        summary: String,
    ) -> Vec<Delivery> {
        let event = self.user_event(psid, kind, body);
        let mut apps: Vec<String> = Vec::new();
        if let Some(f) = first {
            apps.push(f.to_string());
        }
        for a in self.webhook_apps() {
            if !apps.contains(&a) {
                apps.push(a);
            }
        }
        apps.into_iter()
            .filter(|a| self.subscribed(a, "messaging_handovers"))
            .map(|a| Delivery {
                app_id: a,
                channel: Channel::Messaging,
                event: event.clone(),
                summary: summary.clone(),
            })
            .collect()
    }

    /// `pass_thread_control`: only the owner, or anyone while the thread is idle.
    pub fn pass(
        &mut self,
        caller: &str,
        psid: &str,
        target: &str,
        metadata: &str,
        via: Via,
    ) -> Result<Vec<Delivery>, GraphError> {
        self.known_user(psid)?;
        if !self.is_known_app(target) {
            return Err(GraphError::new(
                100,
                None,
                format!("(#100) Param target_app_id {target} is not an app connected to this Page"),
            ));
        }
        let previous = self.owner_of(psid);
        if previous.as_deref().is_some_and(|o| o != caller) {
            return Err(GraphError::new(
                10,
                Some(2018300),
                "(#10) Cannot pass thread control: another app is controlling this thread now.",
            ));
        }
        self.thread(psid).owner = Some(target.to_string());
        let summary = format!(
            "pass_thread_control {} → {}",
            previous
                .as_deref()
                .map(|p| self.app_name(p))
                .unwrap_or_else(|| "idle".into()),
            self.app_name(target)
        );
        let deliveries = self.handover_deliveries(
            psid,
            "pass_thread_control",
            json!({
                "previous_owner_app_id": previous,
                "new_owner_app_id": target,
                "metadata": metadata,
            }),
            Some(target),
            summary,
        );
        let ts = self.last_ts;
        self.control_applied(
            psid,
            ts,
            caller,
            "pass_thread_control",
            previous,
            Some(target.to_string()),
            via,
        );
        Ok(deliveries)
    }

    /// `take_thread_control`: the caller becomes the owner. The bot app needs the Page's
    /// "Take control of conversations" toggle; the Page Inbox may always take.
    pub fn take(
        &mut self,
        caller: &str,
        psid: &str,
        metadata: &str,
        via: Via,
    ) -> Result<Vec<Delivery>, GraphError> {
        self.known_user(psid)?;
        if caller != PAGE_INBOX_APP_ID
            && !(caller == self.cfg.bot_app_id && self.cfg.bot_can_take_control)
        {
            return Err(GraphError::new(
                200,
                None,
                "(#200) Permissions error: this app is not allowed to take control of conversations on this Page (Page settings → Advanced messaging → Take control of conversations)",
            ));
        }
        let previous = self.owner_of(psid);
        if previous.as_deref() == Some(caller) {
            // Applied, but nothing changes and nobody is told: a redundant application.
            let at = self.last_ts.max(now_ms());
            self.control_applied(
                psid,
                at,
                caller,
                "take_thread_control",
                previous.clone(),
                previous,
                via,
            );
            return Ok(Vec::new());
        }
        self.thread(psid).owner = Some(caller.to_string());
        let summary = format!(
            "take_thread_control {} → {}",
            previous
                .as_deref()
                .map(|p| self.app_name(p))
                .unwrap_or_else(|| "idle".into()),
            self.app_name(caller)
        );
        let deliveries = self.handover_deliveries(
            psid,
            "take_thread_control",
            json!({
                "previous_owner_app_id": previous,
                "new_owner_app_id": caller,
                "metadata": metadata,
            }),
            previous.as_deref(),
            summary,
        );
        let ts = self.last_ts;
        self.control_applied(
            psid,
            ts,
            caller,
            "take_thread_control",
            previous,
            Some(caller.to_string()),
            via,
        );
        Ok(deliveries)
    }

    /// `release_thread_control`: the owner makes the thread idle. No webhook.
    pub fn release(&mut self, caller: &str, psid: &str) -> Result<(), GraphError> {
        self.known_user(psid)?;
        match self.owner_of(psid) {
            None => Ok(()),
            Some(o) if o == caller => {
                self.thread(psid).owner = None;
                let at = self.last_ts.max(now_ms());
                self.owner_changed(psid, at, Some(o), None, caller, "release_thread_control");
                Ok(())
            }
            Some(_) => Err(GraphError::new(
                10,
                Some(2018300),
                "(#10) Cannot release thread control: another app is controlling this thread now.",
            )),
        }
    }

    /// `request_thread_control`: a `request_thread_control` event to the owner (and to the
    /// apps subscribed to `messaging_handovers`). On an idle thread the requester gets control
    /// at once (a `pass_thread_control` event, previous owner `null`).
    pub fn request(
        &mut self,
        caller: &str,
        psid: &str,
        metadata: &str,
    ) -> Result<Vec<Delivery>, GraphError> {
        self.known_user(psid)?;
        match self.owner_of(psid) {
            None => self.pass(caller, psid, caller, metadata, Via::IdleRequest),
            Some(o) if o == caller => Err(GraphError::new(
                100,
                None,
                "(#100) The app already controls this thread",
            )),
            Some(o) => {
                let summary = format!(
                    "request_thread_control from {} to {}",
                    self.app_name(caller),
                    self.app_name(&o)
                );
                // Meta's sample shows requested_owner_app_id as a bare number.
                let requested: Value = caller
                    .parse::<u64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(caller));
                Ok(self.handover_deliveries(
                    psid,
                    "request_thread_control",
                    json!({ "requested_owner_app_id": requested, "metadata": metadata }),
                    Some(&o),
                    summary,
                ))
            }
        }
    }

    /// `extend_thread_control`: owner only, up to 7 days.
    pub fn extend(&mut self, caller: &str, psid: &str, duration_s: i64) -> Result<(), GraphError> {
        self.known_user(psid)?;
        if self.owner_of(psid).as_deref() != Some(caller) {
            return Err(GraphError::new(
                10,
                Some(2018300),
                "(#10) Cannot extend thread control: this app does not control this thread.",
            ));
        }
        if !(1..=7 * 86_400).contains(&duration_s) {
            return Err(GraphError::new(
                100,
                None,
                "(#100) Param duration must be between 1 and 604800 seconds",
            ));
        }
        Ok(())
    }

    /// `GET thread_owner`: `{"data":[{"thread_owner":{app_id, expiration}}]}` or `{"data":[]}`.
    pub fn thread_owner(&mut self, psid: &str) -> Value {
        match self.owner_of(psid) {
            None => json!({ "data": [] }),
            Some(o) => {
                let base = self
                    .threads
                    .get(psid)
                    .and_then(|t| t.last_user_ms)
                    .unwrap_or_else(now_ms);
                json!({ "data": [ { "thread_owner": {
                    "app_id": o,
                    "expiration": (base + DAY_MS) / 1000,
                } } ] })
            }
        }
    }

    /// The Send API. `message` is the Send API `message` object (or `None` for a pure
    /// `sender_action`). On success returns the response and the echo deliveries.
    pub fn send(
        &mut self,
        caller: &str,
        psid: &str,
        req: &SendRequest,
        via: Via,
    ) -> Result<(Value, Vec<Delivery>), GraphError> {
        if !self
            .scopes_of(caller)
            .iter()
            .any(|s| s == "pages_messaging")
        {
            return Err(GraphError::new(
                200,
                None,
                "(#200) Requires pages_messaging permission to manage the object",
            ));
        }
        self.known_user(psid)?;
        if req.message.is_some() {
            match req.messaging_type.as_deref() {
                None => {
                    return Err(GraphError::new(
                        100,
                        None,
                        "(#100) Param messaging_type is required",
                    ));
                }
                Some("RESPONSE" | "UPDATE") => {}
                Some("MESSAGE_TAG") => match req.tag.as_deref() {
                    Some("HUMAN_AGENT" | "CUSTOMER_FEEDBACK") => {}
                    Some(t) => {
                        return Err(GraphError::new(
                            100,
                            None,
                            format!("(#100) Param tag {t} is not supported"),
                        ));
                    }
                    None => {
                        return Err(GraphError::new(
                            100,
                            None,
                            "(#100) Param tag is required when messaging_type is MESSAGE_TAG",
                        ));
                    }
                },
                Some(other) => {
                    return Err(GraphError::new(
                        100,
                        None,
                        format!(
                            "(#100) Param messaging_type must be one of {{RESPONSE, UPDATE, MESSAGE_TAG}} - got \"{other}\""
                        ),
                    ));
                }
            }
        }
        if let Some(m) = &req.message {
            if let Some(t) = m.get("text").and_then(Value::as_str)
                && t.chars().count() > 2000
            {
                return Err(GraphError::new(
                    100,
                    None,
                    "(#100) Length of param message[text] must be less than or equal to 2000",
                ));
            }
            if m.get("quick_replies")
                .and_then(Value::as_array)
                .is_some_and(|q| q.len() > 13)
            {
                return Err(GraphError::new(
                    100,
                    None,
                    "(#100) Param message[quick_replies] must have at most 13 elements",
                ));
            }
            if m.get("text").is_none() && m.get("attachment").is_none() {
                return Err(GraphError::new(
                    100,
                    None,
                    "(#100) Param message must contain text or attachment",
                ));
            }
        }
        // Who may send: the owner; on an idle thread only the default app (the bot).
        let owner = self.owner_of(psid);
        let allowed = match &owner {
            Some(o) => o == caller,
            None => caller == self.cfg.bot_app_id,
        };
        if !allowed {
            return Err(GraphError::not_owner());
        }
        // The messaging window.
        let last = self
            .threads
            .get(psid)
            .and_then(|t| t.last_user_ms)
            .unwrap_or(0);
        let window = if req.tag.as_deref() == Some("HUMAN_AGENT") {
            HUMAN_AGENT_WINDOW_MS
        } else {
            DAY_MS
        };
        if now_ms() - last > window {
            return Err(GraphError::new(
                10,
                Some(2018278),
                "(#10) This message is sent outside of allowed window.",
            ));
        }
        let Some(message) = &req.message else {
            return Ok((json!({ "recipient_id": psid }), Vec::new()));
        };
        let mid = format!("m_{}", random_hex(16));
        let text = message_text(message);
        let quick_replies = message
            .get("quick_replies")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(|q| q.get("title").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        self.thread(psid).sent.push(SentToUser {
            from_app_id: caller.to_string(),
            text: text.clone(),
            mid: mid.clone(),
            quick_replies,
            message: message.clone(),
        });
        // The echo: sender = Page, recipient = PSID, app_id as a bare number like Meta's samples.
        let mut echo = message.clone();
        if let Some(o) = echo.as_object_mut() {
            o.insert("is_echo".into(), json!(true));
            o.insert(
                "app_id".into(),
                caller
                    .parse::<u64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(caller)),
            );
            o.insert("mid".into(), json!(mid));
            if let Some(md) = &req.metadata {
                o.insert("metadata".into(), json!(md));
            }
        }
        let ts = self.next_ts();
        self.observe(
            psid,
            Some(ts),
            Observed::Sent {
                from_app_id: caller.to_string(),
                text: text.clone(),
                by_integration: via == Via::Integration,
                mid: mid.clone(),
            },
        );
        let event = json!({
            "sender": { "id": self.cfg.page_id },
            "recipient": { "id": psid },
            "timestamp": ts,
            "message": echo,
        });
        let summary = format!("echo from {}: {text:?}", self.app_name(caller));
        let deliveries = self
            .webhook_apps()
            .into_iter()
            .filter(|a| self.subscribed(a, "message_echoes"))
            .map(|a| Delivery {
                app_id: a,
                channel: Channel::Messaging,
                event: event.clone(),
                summary: summary.clone(),
            })
            .collect();
        Ok((
            json!({ "recipient_id": psid, "message_id": mid }),
            deliveries,
        ))
    }
}

/// The parts of a Send API request the rules look at.
#[derive(Debug, Clone, Default)]
pub(crate) struct SendRequest {
    pub messaging_type: Option<String>,
    pub tag: Option<String>,
    pub message: Option<Value>,
    pub metadata: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::new(EmulatorConfig::default())
    }

    #[test]
    fn a_message_to_an_idle_thread_goes_to_the_bot_and_standby_to_the_companion() {
        let mut s = state();
        let d = s.user_message("u1", "hi", None);
        assert_eq!(s.owner_of("u1").as_deref(), Some(s.cfg.bot_app_id.as_str()));
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].app_id, s.cfg.bot_app_id);
        assert_eq!(d[0].channel, Channel::Messaging);
        assert_eq!(d[1].app_id, s.cfg.companion_app_id);
        assert_eq!(d[1].channel, Channel::Standby);
    }

    #[test]
    fn only_the_owner_sends_and_passes() {
        let mut s = state();
        let bot = s.cfg.bot_app_id.clone();
        s.user_message("u1", "hi", None);
        s.pass(&bot, "u1", PAGE_INBOX_APP_ID, "", Via::Graph)
            .unwrap();
        let req = SendRequest {
            messaging_type: Some("RESPONSE".into()),
            message: Some(json!({ "text": "x" })),
            ..SendRequest::default()
        };
        assert_eq!(
            s.send(&bot, "u1", &req, Via::Graph).unwrap_err(),
            GraphError::not_owner()
        );
        assert_eq!(
            s.pass(&bot, "u1", &bot, "", Via::Graph).unwrap_err().code,
            10
        );
        let d = s.take(&bot, "u1", "", Via::Graph).unwrap();
        assert!(
            d.iter()
                .any(|d| d.event.get("take_thread_control").is_some())
        );
        assert!(s.send(&bot, "u1", &req, Via::Graph).is_ok());
    }

    #[test]
    fn an_old_last_message_closes_the_window_and_idles_the_thread() {
        let mut s = state();
        let bot = s.cfg.bot_app_id.clone();
        s.user_message("u1", "hi", None);
        s.thread("u1").last_user_ms = Some(now_ms() - DAY_MS - 1000);
        assert_eq!(s.owner_of("u1"), None);
        let req = SendRequest {
            messaging_type: Some("RESPONSE".into()),
            message: Some(json!({ "text": "x" })),
            ..SendRequest::default()
        };
        assert_eq!(
            s.send(&bot, "u1", &req, Via::Graph).unwrap_err().subcode,
            Some(2018278)
        );
    }
}

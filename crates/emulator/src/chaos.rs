//! Seeded fault injection ("chaos") and what the emulator observed per thread.
//!
//! [`Chaos::default()`] injects nothing: with it the emulator behaves exactly as without this
//! module. Every random decision is drawn from a stream seeded by `(seed, psid, purpose)`, so
//! one user's faults do not depend on how the other users' calls interleave: a failing seed
//! reproduces as far as the timing of the service allows.

use std::collections::HashMap;
use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Which faults the emulator injects. `Default` = none. Probabilities are clamped to `0..=1`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Chaos {
    /// Seeds every random decision below.
    pub seed: u64,

    // ── Webhook deliveries to the companion app (the service's `/messenger`) ──
    /// Each delivery waits a random `0..=webhook_max_delay_ms` before it is sent.
    pub webhook_max_delay_ms: u64,
    /// Deliveries wait in a pool and are sent concurrently when their delay is over, so they
    /// are not delivered in queue order. Off: they keep queue order (sent one at a time).
    pub webhook_reorder: bool,
    /// Probability that a delivery is sent again later (the same signed body).
    pub webhook_duplicate: f64,
    /// Probability that a delivery is never sent (as when Meta gives up).
    pub webhook_drop: f64,

    // ── Deliveries to the bot app's webhook (the emulated Dialogflow integration) ──
    /// Each waits a random `0..=bot_max_delay_ms`; they stay in order and are never dropped
    /// (that path is Meta → Dialogflow, not the service).
    pub bot_max_delay_ms: u64,

    // ── Graph API calls made with the bot app's Page token: `pass_thread_control`,
    //    `take_thread_control`, `thread_owner`, Send API `messages` ──
    /// Probability of a slow answer: applied at once, answered after a random
    /// `0..=graph_slow_max_ms` (longer than the client's timeout = an unknown outcome).
    pub graph_slow: f64,
    pub graph_slow_max_ms: u64,
    /// Probability of HTTP 500, Graph error code 2 ("Service temporarily unavailable"), not applied.
    pub graph_error_500: f64,
    /// Probability of HTTP 429 with `Retry-After: 1`, Graph error code 613, not applied.
    pub graph_rate_limit: f64,
    /// Probability that the call is applied and then its answer is lost: the connection hangs
    /// for `graph_hang_ms` and is then dropped, or is dropped at once.
    pub graph_applied_then_lost: f64,
    /// Probability that the call is dropped before it is applied (hang or drop, as above).
    pub graph_dropped: f64,
    /// How long a lost answer hangs before the connection is dropped (set it past the
    /// client's timeout).
    pub graph_hang_ms: u64,
}

impl Chaos {
    /// True when any webhook fault is on (deliveries to the companion go through the pool).
    pub fn affects_webhooks(&self) -> bool {
        self.webhook_max_delay_ms > 0
            || self.webhook_reorder
            || self.webhook_duplicate > 0.0
            || self.webhook_drop > 0.0
    }

    /// True when any Graph API fault is on.
    pub fn affects_graph(&self) -> bool {
        self.graph_slow > 0.0
            || self.graph_error_500 > 0.0
            || self.graph_rate_limit > 0.0
            || self.graph_applied_then_lost > 0.0
            || self.graph_dropped > 0.0
    }
}

/// Per-(psid, purpose) random streams derived from the seed.
#[derive(Debug, Default)]
pub(crate) struct Dice {
    seed: u64,
    streams: HashMap<(String, &'static str), StdRng>,
}

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice {
            seed,
            streams: HashMap::new(),
        }
    }

    pub fn stream(&mut self, psid: &str, purpose: &'static str) -> &mut StdRng {
        let seed = self.seed;
        self.streams
            .entry((psid.to_string(), purpose))
            .or_insert_with(|| StdRng::seed_from_u64(mix(seed, psid, purpose)))
    }

    pub fn chance(&mut self, psid: &str, purpose: &'static str, p: f64) -> bool {
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        p > 0.0 && self.stream(psid, purpose).random_bool(p)
    }

    /// `0..=max`.
    pub fn upto(&mut self, psid: &str, purpose: &'static str, max: u64) -> u64 {
        if max == 0 {
            0
        } else {
            self.stream(psid, purpose).random_range(0..=max)
        }
    }
}

/// FNV-1a over the seed, the psid and the purpose: a stable, platform-independent stream seed.
fn mix(seed: u64, psid: &str, purpose: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed
        .to_le_bytes()
        .iter()
        .chain(psid.as_bytes())
        .chain([0u8].iter())
        .chain(purpose.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What a Graph API call of the service gets from the chaos dice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GraphFault {
    None,
    /// Applied, answered after this many ms.
    Slow(u64),
    Error500,
    RateLimited,
    /// Applied; the answer hangs this many ms (0 = none) and the connection is dropped.
    AppliedThenLost(u64),
    /// Not applied; the connection hangs this many ms (0 = none) and is dropped.
    Dropped(u64),
}

impl GraphFault {
    pub fn roll(chaos: &Chaos, dice: &mut Dice, psid: &str) -> GraphFault {
        if !chaos.affects_graph() {
            return GraphFault::None;
        }
        let p = |x: f64| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
        let rng = dice.stream(psid, "graph");
        let r: f64 = rng.random();
        let hang = |rng: &mut StdRng| {
            if rng.random_bool(0.5) {
                chaos.graph_hang_ms
            } else {
                0
            }
        };
        let mut edge = p(chaos.graph_dropped);
        if r < edge {
            return GraphFault::Dropped(hang(rng));
        }
        edge += p(chaos.graph_error_500);
        if r < edge {
            return GraphFault::Error500;
        }
        edge += p(chaos.graph_rate_limit);
        if r < edge {
            return GraphFault::RateLimited;
        }
        edge += p(chaos.graph_applied_then_lost);
        if r < edge {
            return GraphFault::AppliedThenLost(hang(rng));
        }
        edge += p(chaos.graph_slow);
        if r < edge {
            let max = chaos.graph_slow_max_ms;
            return GraphFault::Slow(if max == 0 {
                0
            } else {
                rng.random_range(0..=max)
            });
        }
        GraphFault::None
    }
}

/// One thing the emulator observed about a thread, in order (`seq` is global and strictly
/// increasing; `at_ms` is Meta's timestamp for events, the emulator's clock otherwise).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Observation {
    pub seq: u64,
    pub at_ms: i64,
    pub what: Observed,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observed {
    /// The user wrote (or tapped a quick reply); `owner` got it on `messaging` (`None` never
    /// happens: an idle thread is routed to the bot first, see [`Observed::OwnerChanged`]).
    UserMessage {
        text: String,
        quick_reply_payload: Option<String>,
        owner: Option<String>,
    },
    /// The user tapped a postback button; `owner` is the owner at that moment (the bot gets
    /// postbacks on `messaging` whoever owns the thread).
    UserPostback {
        title: String,
        payload: String,
        owner: Option<String>,
    },
    /// The Dialogflow integration matched an intent for a user message or postback (before
    /// it calls the fulfillment webhook, when the intent has one).
    Intent {
        action: String,
        webhook: bool,
    },
    /// The fulfillment webhook's answer for that intent: `ok` when it answered (HTTP 200, a
    /// JSON object); otherwise the intent's static text is used.
    Fulfillment {
        action: String,
        ok: bool,
    },
    /// A Send API message reached the user. `by_integration`: sent by the Dialogflow
    /// integration (not by the service through the Graph API).
    Sent {
        from_app_id: String,
        text: String,
        by_integration: bool,
        /// The message id (also the `mid` of its echo).
        mid: String,
    },
    /// A webhook delivery to the companion app (the service's `/messenger`) about this user.
    Delivery(DeliveryRecord),
    OwnerChanged(OwnerChange),
    /// A thread-control call the platform applied (whether it changed the owner or not).
    ThreadControl(ThreadControlCall),
    /// The Page Inbox sent `request_thread_control` to the owner.
    InboxRequestedControl,
    /// A call the platform refused (a protocol violation for Graph API calls).
    Refused {
        app_id: String,
        call: String,
        error: String,
        by_integration: bool,
    },
    /// Anything else worth reading in a history: deliveries, injected faults, Graph calls.
    Note(String),
}

/// The thread's owner changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OwnerChange {
    pub seq: u64,
    /// Meta's timestamp of the handover event (or of the user's message that routed an idle
    /// thread to the bot).
    pub at_ms: i64,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The app that made the change (`user` for the routing of an idle thread, `platform`
    /// for expiry and test set-up).
    pub by: String,
    /// `pass_thread_control`, `take_thread_control`, `page inbox: agent reply`,
    /// `page inbox: done`, `request_thread_control (idle thread)`, `user message (idle thread)`,
    /// `release_thread_control`, `24-hour expiry`, `force_owner`, `send api thread_control`.
    pub via: String,
}

/// What became of one webhook delivery to the companion app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeliveryRecord {
    /// `messaging` or `standby`.
    pub channel: String,
    /// e.g. `echo from page inbox: "Hi"`, `pass_thread_control bot app → page inbox`.
    pub summary: String,
    /// The event's `timestamp` (Meta's time of the fact it reports).
    pub event_ts: i64,
    /// The `mid` of a message, echo or postback event.
    pub mid: Option<String>,
    pub outcome: DeliveryOutcome,
    /// HTTP statuses of the attempts and what chaos did, for reading.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The service answered 200.
    Delivered,
    /// Every attempt failed (Meta gave up).
    GaveUp,
    /// Never sent: dropped by chaos.
    Dropped,
    /// Held by `hold_companion_deliveries` (a `Delivered`, `GaveUp` or `DroppedWhileHeld`
    /// record follows when it is released or dropped).
    Held,
    DroppedWhileHeld,
}

/// A `pass_thread_control` or `take_thread_control` the platform applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ThreadControlCall {
    pub seq: u64,
    pub at_ms: i64,
    pub app_id: String,
    /// `pass_thread_control` or `take_thread_control`.
    pub call: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// False for a redundant application: a take by the app that already owns the thread, or
    /// a pass that moves nothing.
    pub changed: bool,
    /// `graph api` (an HTTP call), `page inbox` (a scripted inbox action),
    /// `request_thread_control (idle thread)`, `send api thread_control`.
    pub via: String,
}

/// How to name apps when rendering a history.
pub(crate) struct Names<'a> {
    pub bot: &'a str,
    pub companion: &'a str,
}

impl Names<'_> {
    pub fn app(&self, id: &str) -> String {
        if id == self.bot {
            "bot app".into()
        } else if id == self.companion {
            "companion app".into()
        } else if id == super::PAGE_INBOX_APP_ID {
            "page inbox".into()
        } else {
            format!("app {id}")
        }
    }

    pub fn owner(&self, id: &Option<String>) -> String {
        id.as_deref()
            .map(|i| self.app(i))
            .unwrap_or_else(|| "idle".into())
    }

    pub fn render(&self, o: &Observation) -> String {
        format!("{} #{:<5} {}", o.at_ms, o.seq, self.describe(&o.what))
    }

    fn describe(&self, what: &Observed) -> String {
        match what {
            Observed::UserMessage {
                text,
                quick_reply_payload,
                owner,
            } => match quick_reply_payload {
                Some(p) => format!(
                    "user taps quick reply {text:?} ({p}) → {}",
                    self.owner(owner)
                ),
                None => format!("user says {text:?} → {}", self.owner(owner)),
            },
            Observed::UserPostback {
                title,
                payload,
                owner,
            } => format!(
                "user taps postback {title:?} ({payload}); owner {}",
                self.owner(owner)
            ),
            Observed::Intent { action, webhook } => format!(
                "dialogflow matched {action}{}",
                if *webhook {
                    ", calling the fulfillment webhook"
                } else {
                    ""
                }
            ),
            Observed::Fulfillment { action, ok } => {
                if *ok {
                    format!("fulfillment answered {action}")
                } else {
                    format!("fulfillment FAILED for {action} (the static text is used)")
                }
            }
            Observed::Delivery(d) => format!(
                "delivery to the service: {} {} → {}",
                d.channel,
                d.summary,
                match d.outcome {
                    DeliveryOutcome::Delivered => d.detail.clone(),
                    DeliveryOutcome::GaveUp => format!("{} (GAVE UP)", d.detail),
                    DeliveryOutcome::Dropped => format!("DROPPED by chaos {}", d.detail),
                    DeliveryOutcome::Held => "held".into(),
                    DeliveryOutcome::DroppedWhileHeld => "DROPPED while held".into(),
                }
            ),
            Observed::Sent {
                from_app_id,
                text,
                by_integration,
                ..
            } => format!(
                "sent to user by {}{}: {text:?}",
                self.app(from_app_id),
                if *by_integration {
                    " (integration)"
                } else {
                    ""
                }
            ),
            Observed::OwnerChanged(c) => format!(
                "OWNER {} → {} by {} via {}",
                self.owner(&c.from),
                self.owner(&c.to),
                if c.by == "user" || c.by == "platform" {
                    c.by.clone()
                } else {
                    self.app(&c.by)
                },
                c.via
            ),
            Observed::ThreadControl(t) => format!(
                "applied {} by {} ({}): {} → {}{}",
                t.call,
                self.app(&t.app_id),
                t.via,
                self.owner(&t.from),
                self.owner(&t.to),
                if t.changed { "" } else { " REDUNDANT" }
            ),
            Observed::InboxRequestedControl => "page inbox requests thread control".into(),
            Observed::Refused {
                app_id,
                call,
                error,
                by_integration,
            } => format!(
                "REFUSED {call} by {}{}: {error}",
                self.app(app_id),
                if *by_integration {
                    " (integration)"
                } else {
                    ""
                }
            ),
            Observed::Note(n) => n.clone(),
        }
    }
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Without app names (they need the configuration): ids as they are.
        let names = Names {
            bot: "",
            companion: "",
        };
        write!(f, "{}", names.describe(self))
    }
}

/// One companion delivery the emulator holds (see `Emulator::hold_companion_deliveries`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeldDelivery {
    /// Its index in `held()`, for `release_held`.
    pub index: usize,
    pub psid: String,
    /// `messaging` or `standby`.
    pub channel: String,
    /// e.g. `pass_thread_control bot app → page inbox`, `message "hi"`.
    pub summary: String,
    /// The signed body as it will be delivered.
    pub body: String,
}

//! Properties of the state machine over random runs, and of phrase matching (proptest).
//!
//! A run is a random sequence of steps: the user's messages and taps (on either feed, late or
//! on time), fulfillment's handover and return actions, agents' messages, foreign passes and
//! takes, the inbox's requests, an operator's actions, Meta's events of our own calls
//! (delivered late, twice, or never), and a small model of the worker running the jobs the
//! machine queued: one effect job of the thread at a time, in the order they are due, skipping
//! moot ones, with calls that succeed, are refused, fail, or whose answer is lost; welcomes
//! planned by `welcome_plan`; `thread_owner` answering anything; the reconciler asking only
//! when no job is under way. After every decision the properties below are checked.
//!
//! `PROPTEST_CASES=5000 cargo test -p handover-core --test properties` runs more.

use std::collections::{BTreeMap, BTreeSet};

use handover_core::event::{Channel, EventKind, IncomingEvent};
use handover_core::jobs::{CheckWhy, JobKind, JobPayload, NoticeEvent, WelcomeKind};
use handover_core::text::PhraseSet;
use handover_core::time::{DAY_MS, HOUR_MS};
use handover_core::{
    CallOutcome, Decision, Failure, Input, NotifyPolicy, Owner, OwnerCheck, Policy, State, Thread,
    WelcomePlan, call_metadata, decide, welcome_plan,
};
use proptest::prelude::*;

const APP: &str = "111111111111111";
const INBOX: &str = "263902037430900";
const OTHER_APP: &str = "555555555555555";
const PAGE: &str = "958823367603818";
const USER: &str = "1534862223272449";
const SESSION: &str = "projects/demo/agent/sessions/1534862223272449";
const T0: i64 = 1_763_900_000_000;
const RETURN_PAYLOAD: &str = "BACK_TO_BOT";

fn policy(idle_timeout_ms: i64, standby_means_not_bot: bool) -> Policy {
    Policy {
        app_id: APP.into(),
        target_app_id: INBOX.into(),
        return_phrases: PhraseSet::new(&["back to bot", "talk to the bot"]),
        return_payload: RETURN_PAYLOAD.into(),
        agent_return_phrases: PhraseSet::new(&["#bot"]),
        idle_timeout_ms,
        pass_delay_ms: 1_500,
        stuck_after_ms: 300_000,
        standby_means_not_bot,
        // On, so every run also checks what the notices say.
        notify: NotifyPolicy {
            enabled: true,
            waiting_ms: 60_000,
        },
    }
}

/// How a call the worker makes ends.
#[derive(Clone, Copy, Debug)]
enum CallEnd {
    Ok,
    NotOwner,
    OutsideWindow,
    Failed,
    /// No answer (timeout, crash): Meta may or may not have applied it.
    Lost {
        applied: bool,
    },
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Wait(i64),
    UserText {
        standby: bool,
        text: usize,
        late: i64,
    },
    QuickReply {
        standby: bool,
        late: i64,
    },
    Postback {
        standby: bool,
        back: bool,
        late: i64,
    },
    Echo {
        app: usize,
        hash_bot: bool,
        late: i64,
    },
    ForeignControl {
        pass: bool,
        new_owner: usize,
        late: i64,
    },
    Request {
        by_inbox: bool,
        late: i64,
    },
    Read,
    /// Meta delivers again an event already delivered.
    Redeliver(usize),
    /// Meta delivers an event of one of our own calls (again, perhaps).
    OurEvent(usize),
    Handover {
        asked_late: Option<i64>,
    },
    FulfillmentReturn {
        heard_late: Option<i64>,
    },
    Remember,
    AdminReturn,
    AdminHandover,
    /// The worker starts the next due effect job; a call ends as given.
    StartJob {
        end: CallEnd,
        owner: usize,
    },
    /// The worker finishes the call under way.
    FinishJob,
    /// The reconciler looks at the thread (when nothing is under way).
    Reconcile {
        owner: usize,
    },
}

const TEXTS: [&str; 6] = [
    "Back to bot!",
    "hello",
    "#bot",
    "talk to THE bot",
    "",
    "bot",
];

fn late() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 0i64..3_000,
        1 => 3_000i64..600_000,
        1 => Just(i64::MAX / 4),
    ]
}

fn call_end() -> impl Strategy<Value = CallEnd> {
    prop_oneof![
        4 => Just(CallEnd::Ok),
        1 => Just(CallEnd::NotOwner),
        1 => Just(CallEnd::OutsideWindow),
        1 => Just(CallEnd::Failed),
        1 => any::<bool>().prop_map(|applied| CallEnd::Lost { applied }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => prop_oneof![
            4 => 0i64..5_000,
            1 => Just(60_000i64),
            1 => Just(HOUR_MS),
            1 => Just(DAY_MS + 1),
        ]
        .prop_map(Step::Wait),
        3 => (any::<bool>(), 0..TEXTS.len(), late())
            .prop_map(|(standby, text, late)| Step::UserText { standby, text, late }),
        1 => (any::<bool>(), late()).prop_map(|(standby, late)| Step::QuickReply { standby, late }),
        1 => (any::<bool>(), any::<bool>(), late())
            .prop_map(|(standby, back, late)| Step::Postback { standby, back, late }),
        2 => (0usize..3, any::<bool>(), late())
            .prop_map(|(app, hash_bot, late)| Step::Echo { app, hash_bot, late }),
        1 => (any::<bool>(), 0usize..4, late())
            .prop_map(|(pass, new_owner, late)| Step::ForeignControl { pass, new_owner, late }),
        1 => (any::<bool>(), late()).prop_map(|(by_inbox, late)| Step::Request { by_inbox, late }),
        1 => Just(Step::Read),
        1 => any::<usize>().prop_map(Step::Redeliver),
        3 => any::<usize>().prop_map(Step::OurEvent),
        2 => proptest::option::of(late()).prop_map(|asked_late| Step::Handover { asked_late }),
        2 => proptest::option::of(late())
            .prop_map(|heard_late| Step::FulfillmentReturn { heard_late }),
        1 => Just(Step::Remember),
        1 => Just(Step::AdminReturn),
        1 => Just(Step::AdminHandover),
        8 => (call_end(), 0usize..5).prop_map(|(end, owner)| Step::StartJob { end, owner }),
        6 => Just(Step::FinishJob),
        1 => (0usize..5).prop_map(|owner| Step::Reconcile { owner }),
    ]
}

fn owner(i: usize) -> Owner {
    match i % 5 {
        0 => Owner::App(APP.into()),
        1 => Owner::App(INBOX.into()),
        2 => Owner::App(OTHER_APP.into()),
        3 => Owner::Hidden,
        _ => Owner::Idle,
    }
}

fn failure(end: CallEnd) -> Failure {
    Failure {
        not_thread_owner: matches!(end, CallEnd::NotOwner),
        outside_window: matches!(end, CallEnd::OutsideWindow),
        message: "(#2) Service temporarily unavailable".into(),
    }
}

#[derive(Clone, Debug)]
struct QueuedJob {
    payload: JobPayload,
    due: i64,
    /// An earlier attempt's answer was lost; `applied`: Meta did apply it.
    lost: Option<bool>,
}

#[derive(Clone, Debug)]
enum Running {
    Pass {
        epoch: i64,
        started_at: i64,
        end: CallEnd,
    },
    Take {
        epoch: i64,
        started_at: i64,
        end: CallEnd,
    },
    Welcome {
        kind: WelcomeKind,
        epoch: i64,
        end: CallEnd,
    },
    Check {
        why: CheckWhy,
        started_at: i64,
        owner: Owner,
    },
}

struct Run {
    policy: Policy,
    thread: Thread,
    now: i64,
    /// The effect lane's jobs not started yet, in the order queued.
    queued: Vec<QueuedJob>,
    /// The job under way and the queued entry it came from.
    running: Option<(Running, QueuedJob)>,
    delivered: Vec<IncomingEvent>,
    /// Events Meta emits for our own calls it applied.
    our_events: Vec<IncomingEvent>,
    /// Messages that (may have) reached the user, per epoch.
    messages: BTreeMap<i64, usize>,
    /// Takes queued per epoch, not counting the reconciler's retakes.
    takes: BTreeMap<i64, usize>,
    /// Waits with a human a `waiting` notice was queued for (by their start).
    waits_noticed: BTreeSet<i64>,
    log: Vec<String>,
}

impl Run {
    fn new(policy: Policy) -> Self {
        let mut thread = Thread::new(PAGE, USER, T0);
        thread.session = Some(SESSION.into());
        Self {
            policy,
            thread,
            now: T0,
            queued: Vec::new(),
            running: None,
            delivered: Vec::new(),
            our_events: Vec::new(),
            messages: BTreeMap::new(),
            takes: BTreeMap::new(),
            waits_noticed: BTreeSet::new(),
            log: Vec::new(),
        }
    }

    fn fail(&self, what: &str) -> TestCaseError {
        TestCaseError::fail(format!(
            "{what}\nthread {:#?}\nqueued {:?}\nrunning {:?}\nlog:\n{}",
            self.thread,
            self.queued,
            self.running,
            self.log.join("\n")
        ))
    }

    fn event(&self, channel: Channel, late: i64, kind: EventKind) -> IncomingEvent {
        let ts = self.now.saturating_sub(late).max(1);
        IncomingEvent {
            account_id: PAGE.into(),
            user_id: USER.into(),
            channel,
            timestamp_ms: ts,
            dedupe_key: format!("{}:{ts}", kind.name()),
            kind,
        }
    }

    fn deliver(&mut self, e: IncomingEvent) -> Result<(), TestCaseError> {
        self.delivered.push(e.clone());
        self.apply(&Input::Event(&e), false)
    }

    fn has_job(&self, kind: JobKind) -> bool {
        self.queued.iter().any(|j| j.payload.kind() == kind)
            || self
                .running
                .as_ref()
                .is_some_and(|(_, j)| j.payload.kind() == kind)
    }

    /// Decides `input`, checks the decision, and carries it out as the store would.
    fn apply(&mut self, input: &Input<'_>, retake: bool) -> Result<(), TestCaseError> {
        let before = self.thread.clone();
        let d: Decision = decide(&before, input, &self.policy, self.now);
        self.log.push(format!(
            "t+{} {input:?}\n    -> {:?} epoch {} jobs {:?} cancel {:?} cause {:?}",
            self.now - T0,
            d.thread.state,
            d.thread.epoch,
            d.jobs.iter().map(|j| &j.payload).collect::<Vec<_>>(),
            d.cancel,
            d.cause
        ));
        let after = &d.thread;
        for job in &d.jobs {
            match &job.payload {
                // Nothing goes to the user unless the machine itself holds that the bot owns
                // the thread, and only for the current return, once.
                JobPayload::SendWelcome { epoch, .. } => {
                    if after.state != State::Bot {
                        return Err(self.fail("a message queued while the bot is not the owner"));
                    }
                    if *epoch != after.epoch || before.notified_epoch >= *epoch {
                        return Err(self.fail("a message queued for a moot or answered epoch"));
                    }
                }
                JobPayload::SyncContexts { .. } | JobPayload::ClearHandoverContext { .. }
                    if after.state != State::Bot =>
                {
                    return Err(self.fail("a context sync queued while the bot is not the owner"));
                }
                JobPayload::Take { epoch, .. } => {
                    // Pending takes this decision cancels are not under way; a running one is.
                    let pending = self
                        .queued
                        .iter()
                        .filter(|_| !d.cancel.contains(&JobKind::Take));
                    let same = |j: &&QueuedJob| matches!(j.payload, JobPayload::Take { epoch: e, .. } if e == *epoch);
                    if pending
                        .chain(self.running.iter().map(|r| &r.1))
                        .any(|j| same(&j))
                    {
                        return Err(self.fail("a second take queued while one is under way"));
                    }
                    if !retake {
                        let n = self.takes.entry(*epoch).or_default();
                        *n += 1;
                        if *n > 1 {
                            return Err(self.fail("a second take for one return"));
                        }
                    }
                }
                // A notice tells the truth of the decision that queued it, once.
                JobPayload::Notify {
                    event, waited_ms, ..
                } => {
                    let told = match event {
                        NoticeEvent::HandedToInbox => {
                            after.state == State::Human && before.state != State::Human
                        }
                        NoticeEvent::ReturnedToBot | NoticeEvent::HandoverFailed => {
                            after.state == State::Bot && before.state != State::Bot
                        }
                        NoticeEvent::Waiting => {
                            let since = after.waiting_since;
                            after.state == State::Human
                                && waited_ms.is_some_and(|w| w >= self.policy.notify.waiting_ms)
                                && since.is_some_and(|s| self.waits_noticed.insert(s))
                        }
                    };
                    if !told {
                        return Err(self.fail(&format!("a {event:?} notice that is not true")));
                    }
                }
                _ => {}
            }
        }
        if after.state == State::Human
            && after.last_agent_msg_at > before.last_agent_msg_at
            && after.waiting_since.is_some()
        {
            return Err(self.fail("an agent answered, yet the user still waits"));
        }
        if d.welcome_in_band {
            if after.state != State::Bot {
                return Err(self.fail("an in-band welcome while the bot is not the owner"));
            }
            self.count_message(after.epoch)?;
        }
        // The store: cancel pending jobs of those kinds, add the new ones (one owner check).
        self.queued
            .retain(|j| !d.cancel.contains(&j.payload.kind()));
        for job in d.jobs {
            // The store's singletons: one owner check, one waiting timer per thread.
            let kind = job.payload.kind();
            if matches!(kind, JobKind::CheckOwner | JobKind::WaitingCheck) && self.has_job(kind) {
                continue;
            }
            if job.payload.kind() == JobKind::Notify {
                continue; // checked above; it changes nothing in the thread
            }
            self.queued.push(QueuedJob {
                payload: job.payload,
                due: self.now.saturating_add(job.delay_ms),
                lost: None,
            });
        }
        self.thread = d.thread;
        self.check_state()
    }

    fn count_message(&mut self, epoch: i64) -> Result<(), TestCaseError> {
        let n = self.messages.entry(epoch).or_default();
        *n += 1;
        if *n > 1 {
            return Err(self.fail("a second message to the user for one epoch"));
        }
        Ok(())
    }

    /// The state is one the service can get out of.
    fn check_state(&self) -> Result<(), TestCaseError> {
        let t = &self.thread;
        let call_for = |kind: JobKind| {
            self.queued
                .iter()
                .chain(self.running.iter().map(|r| &r.1))
                .any(|j| {
                    j.payload.kind() == kind
                        && matches!(j.payload, JobPayload::Pass { epoch, .. } | JobPayload::Take { epoch, .. } if epoch == t.epoch)
                })
        };
        match t.state {
            State::Passing if !call_for(JobKind::Pass) => {
                return Err(self.fail("PASSING with no pass under way"));
            }
            State::Returning if !call_for(JobKind::Take) => {
                return Err(self.fail("RETURNING with no take under way"));
            }
            State::Human if t.human_since.is_none() => {
                return Err(self.fail("HUMAN without a stay"));
            }
            _ => {}
        }
        if matches!(t.state, State::Passing | State::Returning | State::Human)
            && t.next_check_at.is_none()
        {
            return Err(self.fail("a waiting state the reconciler would never look at"));
        }
        if t.owner_in_doubt && !self.has_job(JobKind::CheckOwner) {
            return Err(self.fail("in doubt with no thread_owner check under way"));
        }
        if t.asked_in_doubt.is_some() && !t.owner_in_doubt {
            return Err(self.fail("a request kept for a doubt that is not there"));
        }
        if t.notified_epoch > t.epoch {
            return Err(self.fail("a message for an epoch not begun"));
        }
        Ok(())
    }

    fn step(&mut self, step: Step) -> Result<(), TestCaseError> {
        match step {
            Step::Wait(ms) => self.now += ms,
            Step::UserText {
                standby,
                text,
                late,
            } => {
                let kind = EventKind::Message {
                    mid: format!("m_{}", self.now),
                    text: Some(TEXTS[text].into()),
                    quick_reply_payload: None,
                };
                self.deliver(self.event(channel(standby), late, kind))?;
            }
            Step::QuickReply { standby, late } => {
                let kind = EventKind::Message {
                    mid: format!("m_{}", self.now),
                    text: Some("Back to bot".into()),
                    quick_reply_payload: Some(RETURN_PAYLOAD.into()),
                };
                self.deliver(self.event(channel(standby), late, kind))?;
            }
            Step::Postback {
                standby,
                back,
                late,
            } => {
                // On standby a postback comes without its payload.
                let payload = if back { RETURN_PAYLOAD } else { "GET_STARTED" };
                let kind = EventKind::Postback {
                    mid: None,
                    title: Some(if back { "Back to bot" } else { "Start" }.into()),
                    payload: (!standby).then(|| payload.into()),
                };
                self.deliver(self.event(channel(standby), late, kind))?;
            }
            Step::Echo {
                app,
                hash_bot,
                late,
            } => {
                let app = [APP, INBOX, OTHER_APP][app];
                let kind = EventKind::Echo {
                    mid: format!("m_echo_{}", self.now),
                    app_id: Some(app.into()),
                    text: Some(if hash_bot { "#bot" } else { "hi" }.into()),
                    metadata: None,
                };
                self.deliver(self.event(Channel::Messaging, late, kind))?;
            }
            Step::ForeignControl {
                pass,
                new_owner,
                late,
            } => {
                let new_owner_app_id =
                    [Some(APP), Some(INBOX), Some(OTHER_APP), None][new_owner].map(str::to_owned);
                let kind = if pass {
                    EventKind::PassThreadControl {
                        new_owner_app_id,
                        previous_owner_app_id: Some(INBOX.into()),
                        metadata: None,
                    }
                } else {
                    EventKind::TakeThreadControl {
                        new_owner_app_id,
                        previous_owner_app_id: Some(APP.into()),
                        metadata: None,
                    }
                };
                self.deliver(self.event(Channel::Messaging, late, kind))?;
            }
            Step::Request { by_inbox, late } => {
                let kind = EventKind::RequestThreadControl {
                    requested_owner_app_id: Some(if by_inbox { INBOX } else { OTHER_APP }.into()),
                    metadata: None,
                };
                self.deliver(self.event(Channel::Messaging, late, kind))?;
            }
            Step::Read => self.deliver(self.event(Channel::Messaging, 0, EventKind::Read))?,
            Step::Redeliver(i) => {
                if !self.delivered.is_empty() {
                    let e = self.delivered[i % self.delivered.len()].clone();
                    self.deliver(e)?;
                }
            }
            Step::OurEvent(i) => {
                if !self.our_events.is_empty() {
                    let e = self.our_events[i % self.our_events.len()].clone();
                    self.deliver(e)?;
                }
            }
            Step::Handover { asked_late } => {
                let input = Input::Handover {
                    session: SESSION.into(),
                    snapshot: serde_json::json!([{"name": "c", "lifespanCount": 2}]).into(),
                    asked_at: asked_late.map(|l| self.now.saturating_sub(l)),
                };
                self.apply(&input, false)?;
            }
            Step::FulfillmentReturn { heard_late } => {
                let input = Input::ReturnByFulfillment {
                    session: SESSION.into(),
                    heard_at: heard_late.map(|l| self.now.saturating_sub(l)),
                };
                self.apply(&input, false)?;
            }
            Step::Remember => self.apply(
                &Input::RememberSession {
                    session: SESSION.into(),
                },
                false,
            )?,
            Step::AdminReturn => self.apply(&Input::AdminReturn { note: None }, false)?,
            Step::AdminHandover => self.apply(&Input::AdminHandover { note: None }, false)?,
            Step::StartJob { end, owner: o } => self.start_job(end, owner(o))?,
            Step::FinishJob => self.finish_job()?,
            Step::Reconcile { owner: o } => self.reconcile(owner(o))?,
        }
        Ok(())
    }

    /// The worker claims the effect job due first (one at a time per thread).
    fn start_job(&mut self, end: CallEnd, owner: Owner) -> Result<(), TestCaseError> {
        if self.running.is_some() || self.queued.is_empty() {
            return Ok(());
        }
        let next = (0..self.queued.len())
            .min_by_key(|&i| (self.queued[i].due, i))
            .expect("not empty");
        let job = self.queued.remove(next);
        self.now = self.now.max(job.due);
        let t = &self.thread;
        let running = match job.payload.clone() {
            JobPayload::Pass { epoch, .. } | JobPayload::Take { epoch, .. } => {
                let is_pass = matches!(job.payload, JobPayload::Pass { .. });
                let waiting = if is_pass {
                    State::Passing
                } else {
                    State::Returning
                };
                if (t.state, t.epoch) != (waiting, epoch) {
                    return Ok(()); // moot: skipped
                }
                if job.lost == Some(true) {
                    // thread_owner settles an earlier attempt that was applied.
                    let call = CallOutcome {
                        epoch,
                        started_at: self.now,
                        result: Ok(()),
                    };
                    let input = if is_pass {
                        Input::PassDone(call)
                    } else {
                        Input::TakeDone(call)
                    };
                    return self.apply(&input, false);
                }
                let started_at = self.now;
                if is_pass {
                    Running::Pass {
                        epoch,
                        started_at,
                        end,
                    }
                } else {
                    Running::Take {
                        epoch,
                        started_at,
                        end,
                    }
                }
            }
            JobPayload::SendWelcome { welcome, epoch } => {
                match welcome_plan(t, epoch, self.now) {
                    WelcomePlan::Skip(_) => return Ok(()),
                    WelcomePlan::Defer(_) => {
                        let input = Input::WelcomeDeferred {
                            kind: welcome,
                            epoch,
                        };
                        return self.apply(&input, false);
                    }
                    WelcomePlan::Send => {}
                }
                if t.state != State::Bot || t.owner_in_doubt {
                    return Err(self.fail("a message sent while the bot may not own the thread"));
                }
                Running::Welcome {
                    kind: welcome,
                    epoch,
                    end,
                }
            }
            JobPayload::IdleCheck { generation } => {
                return self.apply(&Input::IdleCheck { generation }, false);
            }
            JobPayload::WaitingCheck { since } => {
                return self.apply(&Input::WaitingCheck { since }, false);
            }
            JobPayload::CheckOwner { why } => Running::Check {
                why,
                started_at: self.now,
                owner,
            },
            JobPayload::SyncContexts { .. } | JobPayload::ClearHandoverContext { .. } => {
                return Ok(());
            }
            other => return Err(self.fail(&format!("unexpected job {other:?}"))),
        };
        self.running = Some((running, job));
        Ok(())
    }

    fn finish_job(&mut self) -> Result<(), TestCaseError> {
        let Some((running, job)) = self.running.take() else {
            return Ok(());
        };
        self.now += 200;
        match running {
            Running::Pass {
                epoch,
                started_at,
                end,
            }
            | Running::Take {
                epoch,
                started_at,
                end,
            } => {
                let is_pass = matches!(job.payload, JobPayload::Pass { .. });
                let applied = matches!(end, CallEnd::Ok | CallEnd::Lost { applied: true });
                if applied {
                    // Meta's own event of the call, naming its epoch, comes some time later.
                    let metadata = Some(call_metadata("model", epoch));
                    let kind = if is_pass {
                        EventKind::PassThreadControl {
                            new_owner_app_id: Some(INBOX.into()),
                            previous_owner_app_id: Some(APP.into()),
                            metadata,
                        }
                    } else {
                        EventKind::TakeThreadControl {
                            new_owner_app_id: Some(APP.into()),
                            previous_owner_app_id: Some(INBOX.into()),
                            metadata,
                        }
                    };
                    let e = self.event(Channel::Messaging, 100, kind);
                    self.our_events.push(e);
                }
                let result = match end {
                    CallEnd::Ok => Ok(()),
                    CallEnd::Lost { applied } => {
                        // Retried later, in doubt.
                        self.queued.push(QueuedJob {
                            lost: Some(applied),
                            due: self.now + 1_000,
                            ..job
                        });
                        return self.check_state();
                    }
                    other => Err(failure(other)),
                };
                let call = CallOutcome {
                    epoch,
                    started_at,
                    result,
                };
                let input = if is_pass {
                    Input::PassDone(call)
                } else {
                    Input::TakeDone(call)
                };
                self.apply(&input, false)
            }
            Running::Welcome { kind, epoch, end } => {
                let input = match end {
                    CallEnd::Ok => {
                        self.count_message(epoch)?;
                        Input::WelcomeSent {
                            kind,
                            epoch,
                            result: Ok(()),
                        }
                    }
                    CallEnd::Lost { .. } => {
                        self.count_message(epoch)?;
                        Input::WelcomeUnknown { epoch }
                    }
                    other => Input::WelcomeSent {
                        kind,
                        epoch,
                        result: Err(failure(other)),
                    },
                };
                self.apply(&input, false)
            }
            Running::Check {
                why,
                started_at,
                owner,
            } => {
                let input = Input::OwnerChecked(OwnerCheck {
                    owner,
                    why,
                    started_at,
                });
                self.apply(&input, false)
            }
        }
    }

    /// The reconciler: threads waiting too long, with no job under way.
    fn reconcile(&mut self, owner: Owner) -> Result<(), TestCaseError> {
        let t = &self.thread;
        let idle_only = self
            .queued
            .iter()
            .all(|j| j.payload.kind() == JobKind::IdleCheck);
        if self.running.is_some()
            || !idle_only
            || !matches!(t.state, State::Passing | State::Returning | State::Human)
        {
            return Ok(());
        }
        let Some(at) = t.next_check_at else {
            return Ok(());
        };
        self.now = self.now.max(at);
        let input = Input::OwnerChecked(OwnerCheck {
            owner,
            why: CheckWhy::Stuck,
            started_at: self.now,
        });
        self.apply(&input, true)
    }
}

fn channel(standby: bool) -> Channel {
    if standby {
        Channel::Standby
    } else {
        Channel::Messaging
    }
}

proptest! {
    /// No message to the user while the bot is not the owner (as the machine knows it), one
    /// message per epoch at most, one take per return, and no state the service cannot leave.
    #[test]
    fn no_run_breaks_the_machines_promises(
        steps in proptest::collection::vec(step(), 1..80),
        idle in prop_oneof![Just(0i64), Just(600_000i64)],
        standby_means_not_bot in any::<bool>(),
    ) {
        let mut run = Run::new(policy(idle, standby_means_not_bot));
        for s in steps {
            run.log.push(format!("step {s:?}"));
            run.step(s)?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Phrase matching
// ---------------------------------------------------------------------------------------------

fn words() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec("[a-z]{1,8}", 1..4)
}

/// A way of typing `words` that must still match: any case, accents on vowels, any spaces
/// and punctuation between and around the words.
fn typed(words: Vec<String>) -> impl Strategy<Value = String> {
    let chars: usize = words.iter().map(String::len).sum();
    let n = words.len();
    (
        proptest::collection::vec(any::<bool>(), chars),
        proptest::collection::vec(0usize..4, chars),
        proptest::collection::vec(
            prop_oneof![
                Just(" "),
                Just("  "),
                Just("\t"),
                Just(", "),
                Just(" - "),
                Just("...")
            ],
            n + 1,
        ),
        proptest::bool::ANY,
    )
        .prop_map(move |(upper, accent, seps, edges)| {
            let mut out = String::new();
            if edges {
                out.push_str(seps[n]);
            }
            let mut k = 0;
            for (w, word) in words.iter().enumerate() {
                if w > 0 {
                    out.push_str(seps[w]);
                }
                for c in word.chars() {
                    let c = match (c, accent[k]) {
                        ('a', 1) => 'á',
                        ('a', 2) => 'ä',
                        ('e', 1) => 'é',
                        ('e', 2) => 'è',
                        ('o', 1) => 'ó',
                        ('u', 1) => 'ü',
                        ('i', 1) => 'î',
                        (c, _) => c,
                    };
                    let c = if upper[k] {
                        c.to_uppercase().next().unwrap_or(c)
                    } else {
                        c
                    };
                    out.push(c);
                    k += 1;
                }
            }
            if edges {
                out.push_str("?!");
            }
            out
        })
}

proptest! {
    #[test]
    fn any_text_is_normalized_once_and_for_all(text in any::<String>()) {
        let once = handover_core::text::normalize(&text);
        prop_assert_eq!(handover_core::text::normalize(&once), once.clone());
        prop_assert!(once.is_ascii());
        prop_assert!(!once.starts_with(' ') && !once.ends_with(' ') && !once.contains("  "));
        let set = PhraseSet::new(&["back to bot", "#bot"]);
        let _ = set.matches(&text);
    }

    #[test]
    fn a_phrase_matches_however_it_is_typed(
        (words, text) in words().prop_flat_map(|w| (Just(w.clone()), typed(w)))
    ) {
        let phrase = words.join(" ");
        let set = PhraseSet::new(&[phrase.as_str()]);
        prop_assert!(set.matches(&text), "{phrase:?} vs {text:?}");
        prop_assert!(set.matches(&phrase));
    }

    #[test]
    fn more_or_fewer_words_do_not_match(words in words(), extra in "[a-z]{1,8}") {
        let phrase = words.join(" ");
        let set = PhraseSet::new(&[phrase.as_str()]);
        let longer = [format!("{phrase} {extra}"), format!("{extra} {phrase}")];
        for text in &longer {
            prop_assert!(!set.matches(text), "{} matches {}", text, phrase);
        }
        if words.len() > 1 {
            let shorter = words[1..].join(" ");
            prop_assert!(!set.matches(&shorter), "{} matches {}", shorter, phrase);
            let glued = phrase.replace(' ', "");
            prop_assert!(!set.matches(&glued), "{} matches {}", glued, phrase);
        }
    }

    /// `#` is part of an agent's phrase: `#bot` is not `bot`, and `bot` is not `#bot`.
    #[test]
    fn the_hash_counts(word in "[a-z]{1,8}") {
        let hashed = PhraseSet::new(&[format!("#{word}")]);
        let plain = PhraseSet::new(std::slice::from_ref(&word));
        let shouted = format!(" #{}. ", word.to_uppercase());
        let with_hash = format!("#{word}");
        prop_assert!(hashed.matches(&shouted));
        prop_assert!(!hashed.matches(&word));
        prop_assert!(!plain.matches(&with_hash));
    }
}

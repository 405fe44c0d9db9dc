//! Running one claimed job: the I/O around the pure state machine.

use std::sync::Arc;

use tracing::{info, warn};

use crate::app::Services;
use crate::config::ContextOnReturn;
use crate::dialogflow::api::DialogflowError;
use crate::jobs::notify;
use crate::jobs::settle::{
    CallError, finish, outcome_of, retry_schedule, settle, skip, then, thread_of,
};
pub use crate::jobs::settle::{Ended, Outcome};
use crate::messenger::graph::{GraphError, MessagingType, ThreadOwner};
use crate::store::{ClaimedJob, Finish, Mark, Retention, StoreError};
use crate::time::now_ms;
use handover_core::jobs::{CheckWhy, JobPayload, WelcomeKind};
use handover_core::{
    CallOutcome, Decision, Failure, Input, Owner, OwnerCheck, Policy, State, Thread, WelcomePlan,
    cancelled_by_return, decide, welcome_plan,
};

/// Batches of expired rows the reconciler deletes per run (`Store::prune`): enough for a
/// day of heavy traffic in an hour of runs, each batch a short write of its own.
const PRUNE_BATCHES: usize = 20;

fn failure_of(e: &GraphError) -> Failure {
    Failure {
        not_thread_owner: e.is_not_thread_owner(),
        outside_window: e.is_outside_window(),
        message: e.to_string(),
    }
}

pub async fn run(svc: &Services, job: &ClaimedJob) -> Result<Ended, StoreError> {
    match &job.payload {
        JobPayload::ProcessEvent { event_id } => process_event(svc, job, *event_id).await,
        JobPayload::Pass {
            target_app_id,
            metadata,
            epoch,
        } => {
            let control = Control::Pass {
                target: target_app_id,
                metadata,
            };
            thread_control(svc, job, control, *epoch).await
        }
        JobPayload::Take { metadata, epoch } => {
            thread_control(svc, job, Control::Take { metadata }, *epoch).await
        }
        JobPayload::SyncContexts { epoch } => sync(svc, job, *epoch, None).await,
        JobPayload::ClearHandoverContext { epoch } => {
            sync(svc, job, *epoch, Some(ContextOnReturn::Keep)).await
        }
        JobPayload::SendWelcome { welcome, epoch } => {
            send_welcome(svc, job, *welcome, *epoch).await
        }
        JobPayload::IdleCheck { generation } => {
            let input = Input::IdleCheck {
                generation: *generation,
            };
            apply(svc, job, Finish::Done, input).await
        }
        JobPayload::CheckOwner { why } => check_owner(svc, job, *why).await,
        JobPayload::Reconcile => reconcile(svc, job).await,
        JobPayload::Notify { .. } => notify::send(svc, job).await,
        JobPayload::WaitingCheck { since } => {
            let input = Input::WaitingCheck { since: *since };
            apply(svc, job, Finish::Done, input).await
        }
    }
}

/// Finishes the job and feeds `input` to the state machine in the same transaction.
async fn apply(
    svc: &Services,
    job: &ClaimedJob,
    finish: Finish,
    input: Input<'static>,
) -> Result<Ended, StoreError> {
    apply_with(svc, job, finish, move |t, policy, now| {
        decide(t, &input, policy, now)
    })
    .await
}

/// Finishes the job and runs `decision` on its thread in the same transaction (on the store's
/// thread: it owns what it needs).
async fn apply_with(
    svc: &Services,
    job: &ClaimedJob,
    finish: Finish,
    decision: impl Fn(&Thread, &Policy, i64) -> Decision + Send + 'static,
) -> Result<Ended, StoreError> {
    let now = now_ms();
    let outcome = outcome_of(&finish);
    let policy = Arc::clone(&svc.policy);
    let finished = svc
        .store
        .finish_apply_then(job, finish, then(svc), now, move |t| {
            decision(t, &policy, now)
        })
        .await?;
    let (decision, ended) = Ended::of(finished, outcome);
    if let Some(d) = &decision {
        svc.metrics.decision(d);
        if let Some(cause) = &d.cause {
            info!(
                state = d.thread.state.as_str(),
                epoch = d.thread.epoch,
                cause = cause.as_str(),
                "thread updated"
            );
        }
        // The worker claims what this decision queued, unless the store just claimed it for
        // this run to hand on.
        if d.jobs.len() > usize::from(ended.next.is_some()) {
            svc.wake.notify_one();
        }
    }
    Ok(ended)
}

async fn process_event(
    svc: &Services,
    job: &ClaimedJob,
    event_id: i64,
) -> Result<Ended, StoreError> {
    match svc.store.event(event_id).await? {
        Some(event) => {
            apply_with(svc, job, Finish::Done, move |t, policy, now| {
                decide(t, &Input::Event(&event), policy, now)
            })
            .await
        }
        None => {
            finish(
                svc,
                job,
                Finish::Failed {
                    error: format!("event {event_id} is not in the store"),
                },
            )
            .await
        }
    }
}

/// The thread changed between the job's read of it and the call (a newer handover or return,
/// or a fact): the call is not made; the job runs again at once and decides anew.
fn replan(job: &ClaimedJob) -> Finish {
    Finish::Retry {
        run_at: now_ms(),
        error: "the thread changed just before the call; deciding again".into(),
        // An earlier attempt's call stays in doubt.
        in_doubt: job.in_doubt,
    }
}

/// How long an in-doubt call waits for the thread's received events to be applied.
const FACTS_FIRST_WAIT_MS: i64 = 200;

/// Our own thread-control call.
#[derive(Clone, Copy)]
enum Control<'a> {
    Pass { target: &'a str, metadata: &'a str },
    Take { metadata: &'a str },
}

impl Control<'_> {
    /// The state a thread waits for this call in.
    fn waiting_state(self) -> State {
        match self {
            Control::Pass { .. } => State::Passing,
            Control::Take { .. } => State::Returning,
        }
    }

    fn endpoint(self) -> &'static str {
        match self {
            Control::Pass { .. } => "pass_thread_control",
            Control::Take { .. } => "take_thread_control",
        }
    }

    /// What an earlier attempt that may have been applied achieved, by who owns the thread
    /// now: done, impossible (another app has it), or `None`: make the call.
    fn settled_by(self, owner: &ThreadOwner, us: &str) -> Option<Result<(), Failure>> {
        match (self, owner) {
            (Control::Pass { target, .. }, ThreadOwner::App(app)) if app == target => Some(Ok(())),
            (Control::Pass { .. }, ThreadOwner::App(app)) if app != us => Some(Err(other_owner())),
            (Control::Pass { .. }, ThreadOwner::Hidden) => Some(Err(other_owner())),
            (Control::Take { .. }, ThreadOwner::App(app)) if app == us => Some(Ok(())),
            _ => None,
        }
    }
}

/// A pass or take for the handover or return of `epoch`: skipped when moot; after an attempt
/// whose outcome is unknown, `thread_owner` says whether to call again.
async fn thread_control(
    svc: &Services,
    job: &ClaimedJob,
    control: Control<'_>,
    epoch: i64,
) -> Result<Ended, StoreError> {
    const MOOT: &str = "moot: the thread no longer waits for this call (it moved on, or a newer handover or return)";
    let (page_id, psid) = thread_of(job)?;
    let waiting = control.waiting_state();
    let started_at = now_ms();
    let done = |result| {
        let call = CallOutcome {
            epoch,
            started_at,
            result,
        };
        match control {
            Control::Pass { .. } => Input::PassDone(call),
            Control::Take { .. } => Input::TakeDone(call),
        }
    };
    if job.in_doubt {
        let thread = svc.store.thread(page_id, psid).await?;
        if thread.as_ref().map(|t| (t.state, t.epoch)) != Some((waiting, epoch)) {
            // A return cancelled this pass while its call was in flight (chaos seed 82): if
            // the call landed, the inbox has the thread the bot is believed to own. Only Meta
            // can say; the state machine takes the thread back if it did.
            let undo = matches!(control, Control::Pass { .. })
                && thread.is_some_and(|t| cancelled_by_return(&t, epoch));
            if !undo {
                return skip(svc, job, MOOT).await;
            }
        }
        // An earlier attempt may have been applied. Its own webhook event, which names its
        // epoch, settles that exactly; `thread_owner` cannot tell "never applied" from
        // "applied and already handed back". So facts already received are applied first.
        if svc.store.facts_waiting(page_id, psid, started_at).await? {
            let retry = Finish::Retry {
                run_at: started_at + FACTS_FIRST_WAIT_MS,
                error: "waiting for this thread's received events before verifying".into(),
                in_doubt: true,
            };
            return finish(svc, job, retry).await;
        }
        // Then ask before calling again.
        match verify(svc, job, psid).await {
            Err(outcome) => return outcome,
            Ok(Some(owner)) => {
                if let Some(result) = control.settled_by(&owner, &svc.policy.app_id) {
                    info!(
                        endpoint = control.endpoint(),
                        "settled by thread_owner: not called again"
                    );
                    return apply(svc, job, Finish::Done, done(result)).await;
                }
            }
            Ok(None) => {}
        }
    }
    // The mark checks that the thread still waits for this call, so the common run reads
    // nothing before it. A thread that no longer waits never does again (a new wait has a
    // new epoch): the call is moot.
    match svc.store.mark_in_doubt(job, waiting, epoch).await? {
        Mark::Marked => {}
        Mark::Moot => return skip(svc, job, MOOT).await,
        Mark::LostLease => return Ok(Outcome::LostLease.into()),
    }
    let result = match control {
        Control::Pass { target, metadata } => {
            svc.graph.pass_thread_control(psid, target, metadata).await
        }
        Control::Take { metadata } => svc.graph.take_thread_control(psid, metadata).await,
    };
    thread_control_done(svc, job, control.endpoint(), result, done).await
}

fn other_owner() -> Failure {
    Failure {
        not_thread_owner: true,
        outside_window: false,
        message: "thread_owner: another app controls the thread".into(),
    }
}

/// `thread_owner`, before repeating a call whose outcome is unknown. `Ok(None)`: it cannot
/// answer; `Err`: the job was settled (retried later, still in doubt).
async fn verify(
    svc: &Services,
    job: &ClaimedJob,
    psid: &str,
) -> Result<Option<ThreadOwner>, Result<Ended, StoreError>> {
    let result = svc.graph.thread_owner(psid).await;
    graph_metric(svc, "thread_owner", &result);
    match result {
        Ok(owner) => Ok(Some(owner)),
        Err(e) => {
            let mut err = CallError::from(&e);
            err.unknown = true; // the call being verified still is
            warn!(error = %err.message, "could not verify an earlier call");
            match retry_schedule(svc, job, &err) {
                Some(retry) => Err(finish(svc, job, retry).await),
                // thread_owner cannot answer at all (e.g. not allowed): the call itself is the
                // check, since Meta refuses a pass by a non-owner and a take by the owner is a
                // no-op.
                None => Ok(None),
            }
        }
    }
}

/// Records a pass or take: success or a permanent failure goes to the state machine; a
/// transient failure is retried for `JOB_RETRY_FOR_SECS`, then counts as a failure too.
async fn thread_control_done(
    svc: &Services,
    job: &ClaimedJob,
    endpoint: &str,
    result: Result<(), GraphError>,
    done: impl Fn(Result<(), Failure>) -> Input<'static>,
) -> Result<Ended, StoreError> {
    graph_metric(svc, endpoint, &result);
    match result {
        Ok(()) => apply(svc, job, Finish::Done, done(Ok(()))).await,
        Err(e) => {
            let err = CallError::from(&e);
            warn!(error = %err.message, endpoint, in_doubt = err.unknown, "thread control call failed");
            match settle(svc, job, &err) {
                retry @ Finish::Retry { .. } => finish(svc, job, retry).await,
                end => apply(svc, job, end, done(Err(failure_of(&e)))).await,
            }
        }
    }
}

/// Context sync after a return (`mode` `None`: `CONTEXT_ON_RETURN`), or clearing the handover
/// context after a handover that could not happen (`Keep`).
async fn sync(
    svc: &Services,
    job: &ClaimedJob,
    epoch: i64,
    mode: Option<ContextOnReturn>,
) -> Result<Ended, StoreError> {
    let Some(client) = &svc.dialogflow else {
        return skip(
            svc,
            job,
            "context sync is off: DIALOGFLOW_PROJECT_ID is not set",
        )
        .await;
    };
    let (page_id, psid) = thread_of(job)?;
    let Some(thread) = svc.store.thread(page_id, psid).await? else {
        return skip(svc, job, "unknown thread").await;
    };
    if thread.epoch != epoch {
        return skip(svc, job, "moot: a newer handover or return").await;
    }
    let Some(session) = thread.session.as_deref() else {
        return skip(
            svc,
            job,
            "no Dialogflow session is known for this user (no fulfillment call seen yet)",
        )
        .await;
    };
    let mode = mode.unwrap_or(svc.settings.context_on_return);
    let result = client
        .sync_on_return(session, thread.snapshot.as_ref(), mode)
        .await;
    dialogflow_metric(svc, "sync_contexts", &result);
    match result {
        Ok(report) => {
            info!(
                mode = mode.as_str(),
                deleted = ?report.deleted,
                created = ?report.created,
                "Dialogflow contexts synced"
            );
            finish(svc, job, Finish::Done).await
        }
        Err(e) => {
            let err = CallError::from(&e);
            warn!(error = %err.message, "context sync failed");
            let end = settle(svc, job, &err);
            finish(svc, job, end).await
        }
    }
}

/// A message the service sends on its own: at most once per return (or failed handover).
async fn send_welcome(
    svc: &Services,
    job: &ClaimedJob,
    kind: WelcomeKind,
    epoch: i64,
) -> Result<Ended, StoreError> {
    let (page_id, psid) = thread_of(job)?;
    let Some(thread) = svc.store.thread(page_id, psid).await? else {
        return skip(svc, job, "unknown thread").await;
    };
    let plan = welcome_plan(&thread, epoch, now_ms());
    if let WelcomePlan::Skip(why) = plan {
        return skip(svc, job, why).await;
    }
    if job.in_doubt {
        // An earlier attempt may have reached the user: at most once, so not again, and not
        // kept for later either, even when it could not be sent now (the chaos test's seed 3:
        // a rerun while `thread_owner` was being asked kept it, and the user's next message
        // gave it a second time).
        return apply(svc, job, Finish::Done, Input::WelcomeUnknown { epoch }).await;
    }
    if let WelcomePlan::Defer(why) = plan {
        info!(why, "message kept for the user's next message");
        let input = Input::WelcomeDeferred { kind, epoch };
        return apply(svc, job, Finish::Done, input).await;
    }
    let text = match kind {
        WelcomeKind::WelcomeBack => &svc.settings.welcome_back_message,
        WelcomeKind::AgentTimeout => &svc.settings.agent_timeout_message,
        WelcomeKind::HandoverFailed => &svc.settings.handover_failed_message,
    };
    match svc.store.mark_in_doubt(job, State::Bot, epoch).await? {
        Mark::Marked => {}
        Mark::Moot => return finish(svc, job, replan(job)).await,
        Mark::LostLease => return Ok(Outcome::LostLease.into()),
    }
    let result = svc
        .graph
        .send_text(psid, text, &[], MessagingType::Response)
        .await
        .map(|_| ());
    graph_metric(svc, "send_api", &result);
    match result {
        Ok(()) => {
            let input = Input::WelcomeSent {
                kind,
                epoch,
                result: Ok(()),
            };
            apply(svc, job, Finish::Done, input).await
        }
        Err(e) if e.outcome_unknown() => {
            warn!(error = %e, "message may or may not have been sent: not repeated");
            apply(svc, job, Finish::Done, Input::WelcomeUnknown { epoch }).await
        }
        Err(e) => {
            // Meta answered, so it was not sent (`err.unknown` is false: a retry is not in doubt).
            let err = CallError::from(&e);
            warn!(error = %err.message, "message not sent");
            let end = match settle(svc, job, &err) {
                retry @ Finish::Retry { .. } => return finish(svc, job, retry).await,
                // Not the owner or outside the window: kept for later, nothing is lost.
                _ if e.is_not_thread_owner() || e.is_outside_window() => Finish::Done,
                end => end,
            };
            let input = Input::WelcomeSent {
                kind,
                epoch,
                result: Err(failure_of(&e)),
            };
            apply(svc, job, end, input).await
        }
    }
}

async fn check_owner(svc: &Services, job: &ClaimedJob, why: CheckWhy) -> Result<Ended, StoreError> {
    let (_, psid) = thread_of(job)?;
    let started_at = now_ms();
    let result = svc.graph.thread_owner(psid).await;
    graph_metric(svc, "thread_owner", &result);
    match result {
        Ok(owner) => {
            let owner = match owner {
                ThreadOwner::Idle => Owner::Idle,
                ThreadOwner::App(app) => Owner::App(app),
                ThreadOwner::Hidden => Owner::Hidden,
            };
            let input = Input::OwnerChecked(OwnerCheck {
                owner,
                why,
                started_at,
            });
            apply(svc, job, Finish::Done, input).await
        }
        Err(e) => {
            let end = settle(svc, job, &CallError::from(&e));
            finish(svc, job, end).await
        }
    }
}

pub const RECONCILE_SINGLETON: &str = "reconcile";

/// Threads the reconciler checks per run, for each of its two budgets.
const STUCK_BATCH: i64 = 100;

async fn reconcile(svc: &Services, job: &ClaimedJob) -> Result<Ended, StoreError> {
    let now = now_ms();
    let stuck = svc.store.stuck_threads(now, STUCK_BATCH).await?;
    let check = JobPayload::CheckOwner {
        why: CheckWhy::Stuck,
    };
    for (page_id, psid) in &stuck {
        svc.store
            .enqueue(Some((page_id, psid)), &check, now, now)
            .await?;
    }
    let keep = Retention::from_days(
        svc.settings.thread_retention_days,
        svc.settings.audit_retention_days,
    );
    let pruned = svc.store.prune(keep, now, PRUNE_BATCHES).await?;
    if !stuck.is_empty() || pruned.total() > 0 {
        info!(
            stuck = stuck.len(),
            pruned_jobs = pruned.jobs,
            pruned_events = pruned.events,
            pruned_dead_letters = pruned.dead_letters,
            pruned_transitions = pruned.transitions,
            pruned_threads = pruned.threads,
            "reconciler ran"
        );
        svc.wake.notify_one();
    }
    let outcome = finish(svc, job, Finish::Done).await?;
    let next = now + svc.settings.reconcile_interval_secs as i64 * 1000;
    svc.store
        .enqueue_singleton(RECONCILE_SINGLETON, &JobPayload::Reconcile, next, now)
        .await?;
    Ok(outcome)
}

fn graph_metric<T>(svc: &Services, endpoint: &str, result: &Result<T, GraphError>) {
    let result = match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => match (e.code(), e.subcode()) {
            (Some(c), Some(s)) => format!("error_{c}_{s}"),
            (Some(c), None) => format!("error_{c}"),
            _ => "error".to_owned(),
        },
    };
    svc.metrics.graph_call(endpoint, &result);
}

fn dialogflow_metric<T>(svc: &Services, op: &str, result: &Result<T, DialogflowError>) {
    let result = if result.is_ok() { "ok" } else { "error" };
    svc.metrics.dialogflow_call(op, result);
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: &str = "111111111111111";
    const INBOX: &str = "263902037430900";

    #[test]
    fn thread_owner_settles_a_call_whose_outcome_was_unknown() {
        let pass = Control::Pass {
            target: INBOX,
            metadata: "m",
        };
        let take = Control::Take { metadata: "m" };
        let app = |id: &str| ThreadOwner::App(id.to_owned());
        // The earlier pass landed: not again. Another app has it: impossible.
        assert_eq!(pass.settled_by(&app(INBOX), US), Some(Ok(())));
        assert!(matches!(pass.settled_by(&app("555"), US), Some(Err(f)) if f.not_thread_owner));
        assert!(matches!(
            pass.settled_by(&ThreadOwner::Hidden, US),
            Some(Err(_))
        ));
        // Still ours, or idle: pass.
        assert_eq!(pass.settled_by(&app(US), US), None);
        assert_eq!(pass.settled_by(&ThreadOwner::Idle, US), None);
        // The earlier take landed: not again; otherwise take.
        assert_eq!(take.settled_by(&app(US), US), Some(Ok(())));
        assert_eq!(take.settled_by(&app(INBOX), US), None);
        assert_eq!(take.settled_by(&ThreadOwner::Hidden, US), None);
    }
}

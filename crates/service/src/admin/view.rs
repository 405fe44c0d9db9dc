//! The JSON the admin API answers with: threads (with waiting times and what looks stuck),
//! their audit rows, jobs. Times are epoch milliseconds; durations are whole seconds, taken
//! against the server's `now` (which every list carries), so a browser's clock does not matter.

use serde_json::{Value, json};

use crate::store::{AdminJob, AdminThread, TransitionRow};
use handover_core::State;

/// What a view needs besides the rows.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    pub now: i64,
    /// `STUCK_AFTER_SECS`, in ms.
    pub stuck_after_ms: i64,
    pub bot_app_id: &'a str,
    pub inbox_app_id: &'a str,
}

fn secs_since(now: i64, at: Option<i64>) -> Option<i64> {
    at.map(|at| (now.saturating_sub(at)).max(0) / 1000)
}

/// Why a thread looks stuck: in transit for longer than `STUCK_AFTER_SECS`, or a job of it
/// gave up. Empty when nothing does.
pub fn stuck_reasons(t: &AdminThread, cx: &Context<'_>) -> Vec<String> {
    let mut reasons = Vec::new();
    let thread = &t.thread;
    if matches!(thread.state, State::Passing | State::Returning) {
        let stayed = cx.now.saturating_sub(thread.state_since);
        if stayed > cx.stuck_after_ms {
            reasons.push(format!(
                "{} for {} s, longer than STUCK_AFTER_SECS ({} s)",
                thread.state.as_str(),
                stayed / 1000,
                cx.stuck_after_ms / 1000
            ));
        }
    }
    match t.failed_jobs {
        0 => {}
        1 => reasons.push("1 failed job".to_owned()),
        n => reasons.push(format!("{n} failed jobs")),
    }
    reasons
}

/// Who owns the thread, in words: `bot`, `inbox`, `other`, or `null` (unknown or idle).
fn owner_word(owner: Option<&str>, cx: &Context<'_>) -> Option<&'static str> {
    owner.map(|app| {
        if app == cx.bot_app_id {
            "bot"
        } else if app == cx.inbox_app_id {
            "inbox"
        } else {
            "other"
        }
    })
}

pub fn thread(t: &AdminThread, cx: &Context<'_>) -> Value {
    let th = &t.thread;
    let now = cx.now;
    // Since the handover: for a pass under way, since it was asked; with a person (or coming
    // back from one), since the person got the thread.
    let handed_over_at = match th.state {
        State::Passing => Some(th.state_since),
        State::Human | State::Returning => th.human_since.or(Some(th.state_since)),
        State::Bot | State::Idle => None,
    };
    // How long the agent has been silent, with a person only.
    let agent_idle_since = match th.state {
        State::Human => match (th.last_agent_msg_at, th.human_since) {
            (Some(agent), Some(stay)) => Some(agent.max(stay)),
            (agent, stay) => agent.or(stay),
        },
        _ => None,
    };
    let reasons = stuck_reasons(t, cx);
    json!({
        "page_id": th.account_id,
        "psid": th.user_id,
        "state": th.state.as_str(),
        "since": th.state_since,
        "in_state_secs": secs_since(now, Some(th.state_since)),
        "owner_app_id": th.owner_app_id,
        "owner": owner_word(th.owner_app_id.as_deref(), cx),
        "owner_in_doubt": th.owner_in_doubt,
        "last_user_msg_at": th.last_user_msg_at,
        "last_agent_msg_at": th.last_agent_msg_at,
        "human_since": th.human_since,
        "since_handover_secs": secs_since(now, handed_over_at),
        "agent_idle_secs": secs_since(now, agent_idle_since),
        // With a human and no agent reply since then (agent notifications' `waiting`).
        "waiting_since": th.waiting_since,
        "waiting_secs": secs_since(now, th.waiting_since),
        "timers": {
            "idle_check_at": t.idle_check_at,
            "reconciler_check_at": th.next_check_at,
        },
        "last_error": th.last_error,
        "return_reason": th.return_reason.map(|r| r.as_str()),
        "pending_welcome": th.pending_welcome.map(|w| w.as_str()),
        "epoch": th.epoch,
        "jobs": {
            "unfinished": t.unfinished_jobs,
            "retrying": t.retrying_jobs,
            "failed": t.failed_jobs,
        },
        "stuck": !reasons.is_empty(),
        "stuck_reasons": reasons,
    })
}

pub fn transition(t: &TransitionRow) -> Value {
    json!({
        "from": t.from_state,
        "to": t.to_state,
        "cause": t.cause,
        "at": t.at,
    })
}

pub fn job(j: &AdminJob) -> Value {
    json!({
        "id": j.id,
        "page_id": j.page_id,
        "psid": j.psid,
        "kind": j.kind,
        "status": j.status.as_str(),
        "attempts": j.attempts,
        "last_error": j.last_error,
        "run_at": j.run_at,
        "created_at": j.created_at,
        "updated_at": j.updated_at,
        "finished_at": j.finished_at,
        "in_doubt": j.in_doubt,
        "payload": j.payload.as_ref().and_then(|p| serde_json::to_value(p).ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use handover_core::Thread;

    const NOW: i64 = 1_763_900_000_000;
    const BOT: &str = "111";
    const INBOX: &str = "263902037430900";

    fn cx() -> Context<'static> {
        Context {
            now: NOW,
            stuck_after_ms: 300_000,
            bot_app_id: BOT,
            inbox_app_id: INBOX,
        }
    }

    fn admin(state: State, since_ms_ago: i64) -> AdminThread {
        let mut thread = Thread::new("958823367603818", "1534862223272449", NOW - since_ms_ago);
        thread.state = state;
        AdminThread {
            thread,
            idle_check_at: None,
            unfinished_jobs: 0,
            retrying_jobs: 0,
            failed_jobs: 0,
        }
    }

    #[test]
    fn in_transit_longer_than_stuck_after_looks_stuck() {
        for state in [State::Passing, State::Returning] {
            assert!(stuck_reasons(&admin(state, 300_000), &cx()).is_empty());
            let reasons = stuck_reasons(&admin(state, 300_001), &cx());
            assert_eq!(reasons.len(), 1, "{reasons:?}");
            assert!(reasons[0].starts_with(state.as_str()), "{reasons:?}");
        }
        // A long stay with a person is not stuck: that is the inbox's work.
        assert!(stuck_reasons(&admin(State::Human, 86_400_000), &cx()).is_empty());
    }

    #[test]
    fn a_failed_job_looks_stuck_in_any_state() {
        let mut t = admin(State::Bot, 1_000);
        t.failed_jobs = 2;
        let v = thread(&t, &cx());
        assert_eq!(v["stuck"], true);
        assert_eq!(v["stuck_reasons"], json!(["2 failed jobs"]));
        assert_eq!(v["jobs"]["failed"], 2);
    }

    #[test]
    fn waiting_and_idle_times_are_taken_against_the_servers_now() {
        let mut t = admin(State::Human, 120_000);
        t.thread.human_since = Some(NOW - 120_000);
        t.thread.last_agent_msg_at = Some(NOW - 30_000);
        t.thread.owner_app_id = Some(INBOX.into());
        let v = thread(&t, &cx());
        assert_eq!(v["since_handover_secs"], 120);
        assert_eq!(v["agent_idle_secs"], 30);
        assert_eq!(v["owner"], "inbox");
        assert_eq!(v["stuck"], false);
        // No agent message since the stay began: idle since the stay began (an older message
        // belongs to an earlier stay).
        t.thread.last_agent_msg_at = Some(NOW - 600_000);
        assert_eq!(thread(&t, &cx())["agent_idle_secs"], 120);
        // A pass under way waits since it was asked; the bot's threads wait for nothing.
        let passing = thread(&admin(State::Passing, 5_000), &cx());
        assert_eq!(passing["since_handover_secs"], 5);
        assert_eq!(passing["agent_idle_secs"], Value::Null);
        let bot = thread(&admin(State::Bot, 5_000), &cx());
        assert_eq!(bot["since_handover_secs"], Value::Null);
    }
}

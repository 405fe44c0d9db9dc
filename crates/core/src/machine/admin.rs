//! An operator's decisions, through the admin API: give the thread back to the bot now, or
//! hand it to the inbox now. Decisions like the others: a new epoch, the same take, pass, sync
//! and welcome as every return and handover. What the user asked for while the owner was in
//! doubt is superseded by the operator's decision. Where there is nothing to do the cause
//! still says so, for the audit trail.

use super::*;

/// Every admin decision's cause begins with this, in the audit trail.
pub const ADMIN_CAUSE: &str = "admin";

/// `admin: {what}`, with the operator's note if any.
fn cause(what: &str, note: Option<&str>) -> String {
    match note.map(str::trim).filter(|n| !n.is_empty()) {
        Some(note) => format!("{ADMIN_CAUSE}: {what} (note: {note})"),
        None => format!("{ADMIN_CAUSE}: {what}"),
    }
}

pub(super) fn admin_return(d: &mut Decision, note: Option<&str>, policy: &Policy, now: i64) {
    d.thread.asked_in_doubt = None;
    match d.thread.state {
        State::Human | State::Idle => {
            let why = cause("back to the bot", note);
            start_take(d, policy, now, now, ReturnReason::Admin, &why);
        }
        State::Passing => {
            // The pass has not landed: cancel it; the bot still owns the thread. A pass
            // already in flight that lands is taken back (`cancelled_by_return`).
            let epoch = d.new_epoch();
            d.cancel.push(JobKind::Pass);
            d.thread.owner_app_id = Some(policy.app_id.clone());
            d.thread.return_reason = Some(ReturnReason::Admin);
            d.thread.pending_welcome = None;
            // `human_handover` was set by the handover's answer: the usual sync clears it.
            d.job(NewJob::now(JobPayload::SyncContexts { epoch }));
            d.job(NewJob::now(JobPayload::SendWelcome {
                welcome: WelcomeKind::WelcomeBack,
                epoch,
            }));
            let why = cause("back to the bot before the pass ran; pass cancelled", note);
            d.to(State::Bot, now, now, policy, why);
        }
        State::Returning => {
            d.cause = Some(cause(
                "back to the bot asked; nothing to do: a take is under way",
                note,
            ));
        }
        State::Bot => {
            d.cause = Some(cause(
                "back to the bot asked; nothing to do: the bot has the thread",
                note,
            ));
        }
    }
}

pub(super) fn admin_handover(d: &mut Decision, note: Option<&str>, policy: &Policy, now: i64) {
    d.thread.asked_in_doubt = None;
    match d.thread.state {
        State::Bot | State::Idle | State::Returning => {
            if d.thread.state != State::Returning {
                // No fulfillment call tells the contexts active now; the snapshot of an
                // earlier handover must not be restored at the next return.
                d.thread.snapshot = None;
            }
            // From RETURNING the take is cancelled (`start_pass`), and if it lands anyway
            // the pass of this epoch follows it.
            let why = cause("to the inbox", note);
            start_pass(d, policy, now, now, 0, &why);
        }
        State::Passing => {
            d.cause = Some(cause(
                "to the inbox asked; nothing to do: a pass is under way",
                note,
            ));
        }
        State::Human => {
            let what = if d.thread.owner_app_id.as_deref() == Some(policy.target_app_id.as_str()) {
                "to the inbox asked; nothing to do: the inbox has the thread".to_owned()
            } else {
                // Only the owner can pass a thread on.
                let owner = d.thread.owner_app_id.as_deref().unwrap_or("unknown");
                format!("to the inbox asked; nothing to do: another app ({owner}) has the thread")
            };
            d.cause = Some(cause(&what, note));
        }
    }
}

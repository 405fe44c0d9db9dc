//! `messenger-handover doctor [--fix]`: checks a real setup and explains how to fix each problem.
//!
//! The checks: the Page token works (`GET /me`) and belongs to `FB_PAGE_ID`; its permissions
//! include `pages_messaging` (`debug_token` with the app access token `FB_APP_ID|FB_APP_SECRET`);
//! `GRAPH_API_VERSION` is not past its end date; Conversation Routing is on
//! (`messaging_feature_status`); the app whose webhook is `/messenger` is subscribed to the
//! fields the mode needs (`--fix` subscribes the missing ones with that app's Page token); the
//! handover target; the Dialogflow credentials yield a token and can read the agent;
//! fulfillment auth is set; the store is reachable and migrated.
//!
//! - `findings`: what a finding is and the rules that turn facts (API answers, errors,
//!   settings) into findings with their fix; pure, unit-tested without I/O.
//! - `versions`: the Graph API versions and their end dates.
//! - `checks`: the calls (Graph, Dialogflow, the store) that gather the facts, in order.
//! - `output`: the ✓/✗ lines, with every configured secret redacted, and the exit code.
//!
//! The clients are built by the same functions as `serve`'s ([`crate::startup`]). No token or
//! secret is ever printed.

mod checks;
mod findings;
mod output;
mod versions;

use std::process::ExitCode;

use crate::config::{RawSettings, Settings};

pub use checks::run;
pub use findings::Finding;

/// The settings-only findings that fail (the mode's webhook app, fulfillment without
/// authentication, context sync off, …): `serve` logs each as a warning at start, and `doctor`
/// reports the same findings as ✗.
pub fn startup_warnings(settings: &Settings) -> Vec<Finding> {
    findings::settings_findings(settings)
        .into_iter()
        .filter(|f| !f.ok)
        .collect()
}

/// `messenger-handover doctor [--fix]`: exit 0 when every check passes, 1 otherwise, 2 for
/// invalid settings.
pub async fn main(raw: &RawSettings, fix: bool) -> ExitCode {
    let settings = match Settings::from_raw(raw) {
        Ok(s) => s,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            return ExitCode::from(2);
        }
    };
    output::report(&run(&settings, fix).await)
}

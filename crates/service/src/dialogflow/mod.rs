//! The Dialogflow side: fulfillment webhook types, the REST API client, Google auth, and the
//! small interface the jobs use ([`SessionSync`]), with Dialogflow ES as its one
//! implementation (a CX agent keeps session parameters instead of contexts).

pub mod api;
pub mod auth;
pub mod session;
pub mod sync;
pub mod webhook;

use futures_util::future::BoxFuture;
use handover_core::thread::Snapshot;

use handover_core::contexts::ContextOnReturn;

pub use api::DialogflowError;
pub use sync::SyncReport;

/// What the service asks of the agent's API when the bot gets the conversation back.
pub trait SessionSync: Send + Sync {
    /// Brings `session` to `mode`, given the contexts captured at handover.
    fn sync_on_return<'a>(
        &'a self,
        session: &'a str,
        snapshot: Option<&'a Snapshot>,
        mode: ContextOnReturn,
    ) -> BoxFuture<'a, Result<SyncReport, DialogflowError>>;
}

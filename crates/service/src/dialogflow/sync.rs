//! Bringing a Dialogflow ES session's contexts to `CONTEXT_ON_RETURN` through the API when
//! the bot is back: the ES implementation of [`SessionSync`] (the policy itself is
//! `handover_core::contexts`).

use handover_core::thread::Snapshot;

use futures_util::future::BoxFuture;

use super::SessionSync;
use crate::dialogflow::api::{DialogflowClient, DialogflowError};
use crate::dialogflow::webhook::{Context, context_name};
use handover_core::contexts::{ContextOnReturn, on_return};

/// What the sync did, for logs and the demo transcript.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub deleted: Vec<String>,
    pub created: Vec<String>,
}

impl SessionSync for DialogflowClient {
    fn sync_on_return<'a>(
        &'a self,
        session: &'a str,
        snapshot: Option<&'a Snapshot>,
        mode: ContextOnReturn,
    ) -> BoxFuture<'a, Result<SyncReport, DialogflowError>> {
        Box::pin(sync(self, session, snapshot, mode))
    }
}

async fn sync(
    client: &DialogflowClient,
    session: &str,
    snapshot: Option<&Snapshot>,
    mode: ContextOnReturn,
) -> Result<SyncReport, DialogflowError> {
    // Keep needs no list: it deletes `human_handover` whether or not it is alive.
    let listed = match mode {
        ContextOnReturn::Keep => Vec::new(),
        ContextOnReturn::Reset | ContextOnReturn::Restore => client.list_contexts(session).await?,
    };
    let change = on_return(mode, listed.iter().map(|c| c.name.as_str()), snapshot);
    let mut report = SyncReport::default();
    for id in change.delete {
        client.delete_context(&context_name(session, &id)).await?;
        report.deleted.push(id);
    }
    for restored in change.create {
        client
            .create_context(session, &Context::restored(session, &restored))
            .await?;
        report.created.push(restored.id);
    }
    Ok(report)
}

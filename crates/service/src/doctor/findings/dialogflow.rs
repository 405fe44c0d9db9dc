//! Google credentials and the Dialogflow agent.

use serde_json::Value;

use crate::config::{DialogflowSettings, GoogleCredentials};
use crate::dialogflow::api::DialogflowError;
use crate::dialogflow::auth::AuthError;

use super::Finding;

/// Without `DIALOGFLOW_PROJECT_ID`: the service works, but returns leave the bot's contexts
/// as the handover left them.
pub fn dialogflow_off() -> Finding {
    Finding::fail(
        "DIALOGFLOW_PROJECT_ID is not set: context sync is off, so a return does not reset or \
         restore the bot's Dialogflow contexts (CONTEXT_ON_RETURN has no effect) and \
         human_handover stays active until it expires",
        "set DIALOGFLOW_PROJECT_ID to the agent's project (and DIALOGFLOW_LOCATION for a \
         regional agent), and give the service's Google identity the Dialogflow API Client role \
         (roles/dialogflow.client)",
    )
}

/// The token source could not be built from the credentials (the agent is then not checked).
pub fn credentials_unusable(
    err: &AuthError,
    credentials: &GoogleCredentials,
    project: &str,
) -> Vec<Finding> {
    vec![
        Finding::fail(
            format!("the Google credentials for Dialogflow are not usable: {err}"),
            token_fix(credentials, project),
        ),
        agent_skipped(project),
    ]
}

/// The token source (`source`, as it describes itself) gave no token: `why`.
pub fn no_access_token(
    source: &str,
    why: &str,
    credentials: &GoogleCredentials,
    project: &str,
) -> Vec<Finding> {
    vec![
        Finding::fail(
            format!("the Google credentials ({source}) yield no access token: {why}"),
            token_fix(credentials, project),
        ),
        agent_skipped(project),
    ]
}

fn agent_skipped(project: &str) -> Finding {
    Finding::fail(
        format!("the Dialogflow agent of project {project} not checked: no Google access token"),
        "fix the Google credentials first (see above)",
    )
}

pub fn access_token_ok(source: &str) -> Finding {
    Finding::pass(format!(
        "the Google credentials ({source}) yield an access token for Dialogflow"
    ))
}

/// The answer of `GET projects/{project}/agent`; `context_on_return` is the sync mode.
pub fn agent_finding(
    answer: Result<Value, DialogflowError>,
    df: &DialogflowSettings,
    context_on_return: &str,
) -> Finding {
    let project = df.project_id.as_str();
    match answer {
        Ok(agent) => {
            let name = agent
                .get("displayName")
                .and_then(Value::as_str)
                .map(|n| format!("\"{n}\" "))
                .unwrap_or_default();
            Finding::pass(format!(
                "the Dialogflow agent {name}of project {project} (location {}) can be read: \
                 context sync ({context_on_return}) can work",
                df.location
            ))
        }
        Err(e) => Finding::fail(
            format!("cannot read the Dialogflow agent of project {project}: {e}"),
            dialogflow_fix(&e, project, &df.location, &df.api_base),
        ),
    }
}

/// How to fix a Dialogflow API failure.
pub fn dialogflow_fix(err: &DialogflowError, project: &str, location: &str, base: &str) -> String {
    match err {
        DialogflowError::Api { status: 401, .. } | DialogflowError::Auth(_) => {
            credentials_fix(project)
        }
        DialogflowError::Api { status: 403, .. } => format!(
            "give the service account the Dialogflow API Client role (roles/dialogflow.client) \
             in project {project}, and enable the Dialogflow API there"
        ),
        DialogflowError::Api { status: 404, .. } => format!(
            "there is no Dialogflow ES agent at project {project}, location {location}: check \
             DIALOGFLOW_PROJECT_ID and DIALOGFLOW_LOCATION"
        ),
        DialogflowError::Api { status, .. } if *status == 429 || *status >= 500 => {
            "a temporary Google error: run doctor again in a minute".to_owned()
        }
        DialogflowError::Timeout | DialogflowError::Transport(_) => format!(
            "cannot reach the Dialogflow API at {base}: check the network and DIALOGFLOW_API_BASE"
        ),
        _ => format!(
            "check DIALOGFLOW_PROJECT_ID ({project}), DIALOGFLOW_LOCATION ({location}) and \
             DIALOGFLOW_API_BASE"
        ),
    }
}

fn credentials_fix(project: &str) -> String {
    format!(
        "set GOOGLE_APPLICATION_CREDENTIALS to a JSON key of an enabled service account of \
         project {project}, or run where the metadata server gives the workload a service \
         account (Cloud Run, GKE, Compute Engine)"
    )
}

/// How to fix a failed Google token fetch for the configured source.
pub fn token_fix(credentials: &GoogleCredentials, project: &str) -> String {
    match credentials {
        GoogleCredentials::KeyFile(path) => format!(
            "GOOGLE_APPLICATION_CREDENTIALS ({}) must be a JSON key of an enabled service \
             account (IAM → Service accounts → Keys) of project {project}, and its token_uri \
             reachable",
            path.display()
        ),
        GoogleCredentials::MetadataServer { url: Some(url) } => format!(
            "GOOGLE_METADATA_TOKEN_URL ({url}) did not give a token: correct or unset it, or set \
             GOOGLE_APPLICATION_CREDENTIALS to a service-account key file"
        ),
        GoogleCredentials::MetadataServer { url: None } => format!(
            "no metadata server here: set GOOGLE_APPLICATION_CREDENTIALS to a service-account \
             key file of project {project}, or run on Cloud Run / GKE / Compute Engine with a \
             service account attached"
        ),
    }
}

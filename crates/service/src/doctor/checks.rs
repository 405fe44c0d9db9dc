//! The calls that gather the facts, in the order of the report: the Graph API with the Page
//! token (and `--fix` with the webhook app's), Google and Dialogflow, the store. Each answer
//! goes through a rule of [`super::findings`]; the clients are built as `serve` builds them.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{MessengerMode, Settings};
use crate::messenger::graph::GraphClient;
use crate::startup;
use crate::store::{Backend, Store};

use super::findings::*;
use super::output::redact_secrets;
use super::versions::{graph_version_finding, today};

/// Longest a store connection attempt may take before it counts as unreachable.
const STORE_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs every check against the configured services; with `fix`, subscribes the webhook
/// fields that are missing and reports the state after that.
pub async fn run(settings: &Settings, fix: bool) -> Vec<Finding> {
    let mut out = vec![mode_finding(settings)];
    out.extend(webhook_secret_finding(settings));

    let http = startup::http_client();
    let base = settings.graph_api_base.as_str();
    let bot = startup::graph_client(
        settings,
        &http,
        &settings.fb_page_access_token,
        &settings.fb_app_secret,
    );
    let today = today();

    // The Page token, and FB_PAGE_ID.
    let token_works = match bot.me("id,name").await {
        Ok(me) => {
            out.extend(page_findings(&me, settings.fb_page_id.as_deref()));
            true
        }
        Err(e) => {
            out.push(page_token_failed(&e, base));
            false
        }
    };

    // Permissions: debug_token with the app access token.
    out.push(match bot.debug_token(&settings.fb_app_id).await {
        Ok(debug) => permissions_finding(&debug, &settings.fb_app_id, today),
        Err(e) => debug_token_failed(&e, base),
    });

    out.push(graph_version_finding(&settings.graph_api_version, today));

    // Conversation Routing.
    out.push(if token_works {
        match bot.me("messaging_feature_status").await {
            Ok(me) => routing_finding(&me, &settings.fb_app_id),
            Err(e) => routing_unreadable(&e, base),
        }
    } else {
        skipped_without_token("Conversation Routing status")
    });

    // Webhook subscriptions.
    let apps = if token_works {
        match subscribed_apps(bot.subscribed_apps().await, base) {
            Ok(apps) => Some(subscriptions(settings, &http, &bot, apps, fix, &mut out).await),
            Err(unreadable) => {
                out.push(unreadable);
                None
            }
        }
    } else {
        out.push(skipped_without_token("the Page's webhook subscriptions"));
        None
    };

    out.push(target_finding(
        &settings.handover_target_app_id,
        &settings.fb_webhook_app_id,
        &settings.fb_app_id,
        apps.as_deref(),
    ));

    out.extend(dialogflow_findings(settings, &http).await);
    out.push(fulfillment_finding(&settings.fulfillment_auth));
    out.push(store_check(&settings.database_url).await);

    redact_secrets(&mut out, settings);
    out
}

/// The webhook app's fields (subscribing the missing ones with `fix`), and in companion mode the
/// bot app's. Returns the subscribed apps as last read.
async fn subscriptions(
    settings: &Settings,
    http: &reqwest::Client,
    bot: &GraphClient,
    mut apps: Vec<SubscribedApp>,
    fix: bool,
    out: &mut Vec<Finding>,
) -> Vec<SubscribedApp> {
    let mode = settings.messenger_mode;
    let base = settings.graph_api_base.as_str();
    let webhook_id = settings.fb_webhook_app_id.as_str();
    let token_var = webhook_token_var(settings);
    let find = |apps: &[SubscribedApp]| apps.iter().find(|a| a.id == webhook_id).cloned();
    let current = find(&apps);
    let missing = missing_fields(required_fields(mode), current.as_ref());

    if missing.is_empty() || !fix {
        out.push(webhook_fields_finding(
            mode,
            webhook_id,
            current.as_ref(),
            token_var,
        ));
    } else if let Some(var) = token_var {
        let token = match var {
            "FB_WEBHOOK_PAGE_ACCESS_TOKEN" => settings.fb_webhook_page_access_token.clone(),
            _ => Some(settings.fb_page_access_token.clone()),
        }
        .unwrap_or_default();
        // The subscription goes to the app whose Page token is used.
        let client = startup::graph_client(settings, http, &token, &settings.fb_webhook_app_secret);
        let wanted = fields_to_subscribe(current.as_ref(), &missing);
        let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
        out.push(match client.subscribe_fields(&wanted).await {
            Err(e) => fix_failed(
                webhook_id,
                &missing,
                fix_token_vars(settings, var),
                &e,
                base,
            ),
            Ok(()) => {
                let after = subscribed_apps(bot.subscribed_apps().await, base).map(|after| {
                    apps = after;
                    webhook_fields_finding(mode, webhook_id, find(&apps).as_ref(), token_var)
                });
                fix_outcome(webhook_id, &missing, var, after)
            }
        });
    } else {
        out.push(no_fix_token_finding(webhook_id, &missing));
    }

    if mode == MessengerMode::Companion && settings.fb_webhook_app_id != settings.fb_app_id {
        let bot_app = apps.iter().find(|a| a.id == settings.fb_app_id);
        out.push(bot_app_fields_finding(&settings.fb_app_id, bot_app));
    }
    apps
}

/// The Google credentials yield a token, and the agent can be read with it.
async fn dialogflow_findings(settings: &Settings, http: &reqwest::Client) -> Vec<Finding> {
    let Some(df) = &settings.dialogflow else {
        return vec![dialogflow_off()];
    };
    let project = df.project_id.as_str();
    let auth = match startup::token_source(&df.credentials).await {
        Ok(auth) => Arc::new(auth),
        Err(e) => return credentials_unusable(&e, &df.credentials, project),
    };
    let source = auth.describe();
    // The token source has its own timeouts; this bounds a hung endpoint all the same.
    let bound = Duration::from_millis(settings.http_timeout_ms) + Duration::from_secs(10);
    match tokio::time::timeout(bound, auth.token()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return no_access_token(source, &e.to_string(), &df.credentials, project),
        Err(_) => return no_access_token(source, "timed out", &df.credentials, project),
    }
    let client = startup::dialogflow_client(settings, df, http, auth);
    vec![
        access_token_ok(source),
        agent_finding(
            client.get_agent(project, &df.location).await,
            df,
            settings.context_on_return.as_str(),
        ),
    ]
}

/// Reachable and migrated, without ever creating an SQLite file.
async fn store_check(database_url: &str) -> Finding {
    if let Some(problem) = sqlite_file_problem(database_url, |path| path.exists()) {
        return problem;
    }
    let url = no_create_url(database_url);
    let store = match tokio::time::timeout(STORE_TIMEOUT, Store::connect(&url)).await {
        Ok(Ok(store)) => store,
        Ok(Err(e)) => return store_unreachable(database_url, Some(&e), STORE_TIMEOUT.as_secs()),
        Err(_) => return store_unreachable(database_url, None, STORE_TIMEOUT.as_secs()),
    };
    let backend = match store.backend() {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    };
    let ready = store.readiness().await;
    store.close().await;
    store_finding(database_url, backend, ready)
}

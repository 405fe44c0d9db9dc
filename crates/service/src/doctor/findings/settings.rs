//! Settings alone: the mode, the webhook app's secret, fulfillment auth, context sync.

use crate::config::{FulfillmentAuth, MessengerMode, Settings};

use super::{Finding, dialogflow_off};

/// Every finding that needs nothing but the settings; `serve` logs the failing ones as
/// warnings at start ([`crate::doctor::startup_warnings`]), `doctor` reports them all.
pub fn settings_findings(settings: &Settings) -> Vec<Finding> {
    let mut out = vec![mode_finding(settings)];
    out.extend(webhook_secret_finding(settings));
    out.push(fulfillment_finding(&settings.fulfillment_auth));
    if settings.dialogflow.is_none() {
        out.push(dialogflow_off());
    }
    out
}

/// `MESSENGER_MODE`, and in companion mode whether `/messenger` belongs to a second app.
pub fn mode_finding(settings: &Settings) -> Finding {
    match settings.messenger_mode {
        MessengerMode::Bridge => Finding::fail(
            "MESSENGER_MODE=bridge is not implemented by `serve` yet (it refuses to start)",
            "use MESSENGER_MODE=companion (the default): Dialogflow's Messenger integration \
             stays the bot app's webhook and a second Meta app's webhook points at /messenger",
        ),
        MessengerMode::Companion if settings.fb_webhook_app_id == settings.fb_app_id => {
            Finding::fail(
                format!(
                    "MESSENGER_MODE=companion, but FB_WEBHOOK_APP_ID is the bot app {} itself: \
                     its webhook is Dialogflow's integration, so /messenger needs a second Meta \
                     app",
                    settings.fb_app_id
                ),
                "create a second Meta app, add Messenger, connect it to the Page, point its \
                 webhook at https://<your host>/messenger, and set FB_WEBHOOK_APP_ID, \
                 FB_WEBHOOK_APP_SECRET (and FB_WEBHOOK_PAGE_ACCESS_TOKEN for doctor --fix)",
            )
        }
        MessengerMode::Companion => Finding::pass(format!(
            "MESSENGER_MODE=companion: the bot app {} (FB_APP_ID) answers through Dialogflow's \
             integration; app {} (FB_WEBHOOK_APP_ID) delivers standby, handover and echo events \
             to /messenger",
            settings.fb_app_id, settings.fb_webhook_app_id
        )),
    }
}

/// Companion mode with a second app: `/messenger` events are signed with that app's secret.
pub fn webhook_secret_finding(settings: &Settings) -> Option<Finding> {
    if settings.fb_webhook_app_id == settings.fb_app_id {
        return None;
    }
    let app = &settings.fb_webhook_app_id;
    Some(
        if settings.fb_webhook_app_secret == settings.fb_app_secret {
            Finding::fail(
                format!(
                    "FB_WEBHOOK_APP_SECRET is not set (it defaults to FB_APP_SECRET), but events \
                     from app {app} to /messenger are signed with that app's own secret and \
                     would all be rejected"
                ),
                format!(
                    "set FB_WEBHOOK_APP_SECRET to app {app}'s App Secret (its App Dashboard → \
                     App settings → Basic)"
                ),
            )
        } else {
            Finding::pass(format!(
                "FB_WEBHOOK_APP_SECRET is set for app {app}: /messenger checks its signatures \
                 with it"
            ))
        },
    )
}

pub fn fulfillment_finding(auth: &FulfillmentAuth) -> Finding {
    match auth {
        FulfillmentAuth::Bearer(_) => Finding::pass(
            "fulfillment auth: a bearer token (FULFILLMENT_TOKEN); the Dialogflow console → \
             Fulfillment → Webhook must send the header Authorization: Bearer <that token>",
        ),
        FulfillmentAuth::Basic { .. } => Finding::pass(
            "fulfillment auth: Basic (FULFILLMENT_USERNAME / FULFILLMENT_PASSWORD); the \
             Dialogflow console → Fulfillment → Webhook must use the same username and password",
        ),
        FulfillmentAuth::None => Finding::fail(
            "FULFILLMENT_AUTH=none: anyone who finds /fulfillment can trigger handovers",
            "remove FULFILLMENT_AUTH and set FULFILLMENT_TOKEN (16+ random characters) with the \
             header Authorization: Bearer <token> in the Dialogflow console → Fulfillment, or \
             FULFILLMENT_USERNAME + FULFILLMENT_PASSWORD with Basic auth there",
        ),
    }
}

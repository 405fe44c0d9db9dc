//! How to fix a failed Graph API call, by its error code and the token it used.

use crate::messenger::graph::GraphError;

/// Which token a Graph call used, for the fix texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenVars {
    pub token: &'static str,
    pub secret: &'static str,
}

pub const BOT_VARS: TokenVars = TokenVars {
    token: "FB_PAGE_ACCESS_TOKEN",
    secret: "FB_APP_SECRET",
};

/// How to fix a failed Graph call made with the Page token in `vars.token`.
pub fn graph_fix(err: &GraphError, vars: TokenVars, base: &str) -> String {
    let TokenVars { token, secret } = vars;
    match err {
        GraphError::Api {
            code,
            subcode,
            message,
            ..
        } => match (*code, *subcode) {
            (190, _) => format!(
                "{token} is not a valid Page access token (mistyped, expired or revoked): \
                 generate a new one (App Dashboard → Messenger → Settings → Access Tokens, or \
                 a system user's token that does not expire)"
            ),
            (100, Some(33)) => format!(
                "FB_PAGE_ID is not the Page of {token}, or the token cannot see it: set \
                 FB_PAGE_ID to the Page's id, or unset it to use /me"
            ),
            (100, _) if message.contains("appsecret_proof") => format!(
                "{secret} is not the App Secret of the app that issued {token}: copy it from \
                 the App Dashboard → App settings → Basic"
            ),
            (10 | 200..=299, _) => format!(
                "the token lacks a permission or the person who issued it lacks a Page task: \
                 grant pages_messaging (and pages_manage_metadata to subscribe webhooks), have \
                 a Page admin generate {token} again"
            ),
            (4 | 17 | 32 | 613, _) => {
                "rate limited by Meta: wait a few minutes and run doctor again".to_owned()
            }
            (1 | 2, _) => "a temporary Meta error: run doctor again in a minute".to_owned(),
            _ => format!("check {token}, {secret}, FB_PAGE_ID and GRAPH_API_VERSION"),
        },
        GraphError::Timeout | GraphError::Transport(_) | GraphError::Connect(_) => format!(
            "cannot reach GRAPH_API_BASE ({base}): check the network, proxy and firewall, and \
             GRAPH_API_BASE"
        ),
        GraphError::Http { .. } | GraphError::Decode(_) => format!(
            "GRAPH_API_BASE ({base}) did not answer like the Graph API: check GRAPH_API_BASE \
             and GRAPH_API_VERSION"
        ),
    }
}

/// How to fix a failed `debug_token` call (made with the app access token).
pub fn debug_token_fix(err: &GraphError, base: &str) -> String {
    match err {
        GraphError::Api { code: 190, .. } | GraphError::Api { code: 101, .. } => {
            "FB_APP_ID|FB_APP_SECRET is not a valid app access token: copy the App ID and App \
             Secret of the bot app from the App Dashboard → App settings → Basic"
                .to_owned()
        }
        other => graph_fix(other, BOT_VARS, base),
    }
}

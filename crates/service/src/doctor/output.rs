//! What doctor prints: one ✓/✗ line per finding on stdout, a summary on stderr, and never a
//! configured secret.

use std::process::ExitCode;

use crate::config::{FulfillmentAuth, Settings};

use super::findings::Finding;

impl Finding {
    /// `✓ text` or `✗ text — fix: …`, on one line.
    pub fn line(&self) -> String {
        let line = match (&self.ok, &self.fix) {
            (true, _) => format!("✓ {}", self.text),
            (false, Some(fix)) => format!("✗ {} — fix: {fix}", self.text),
            (false, None) => format!("✗ {}", self.text),
        };
        // One finding, one line, whatever an API answered.
        line.replace(['\r', '\n'], " ")
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line())
    }
}

/// Prints the findings; exit 0 when every check passed, 1 otherwise.
pub fn report(findings: &[Finding]) -> ExitCode {
    for f in findings {
        println!("{f}");
    }
    let failed = findings.iter().filter(|f| !f.ok).count();
    if failed == 0 {
        eprintln!("doctor: all {} checks passed", findings.len());
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "doctor: {failed} of {} checks failed; each ✗ line says how to fix it",
            findings.len()
        );
        ExitCode::FAILURE
    }
}

/// Replaces every secret of `settings` in the findings' texts and fixes (an API may echo a
/// token back in an error message).
pub fn redact_secrets(findings: &mut [Finding], settings: &Settings) {
    let secrets = secrets_of(settings);
    for f in findings {
        f.text = redact(&f.text, &secrets);
        if let Some(fix) = &mut f.fix {
            *fix = redact(fix, &secrets);
        }
    }
}

/// Replaces every configured secret in `text` (whole, in one pass: see [`crate::secret::redact`]).
fn redact(text: &str, secrets: &[String]) -> String {
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    crate::secret::redact(text, &secrets)
}

fn secrets_of(settings: &Settings) -> Vec<String> {
    let mut secrets: Vec<String> = [
        Some(&settings.fb_app_secret),
        Some(&settings.fb_webhook_app_secret),
        settings.fb_webhook_page_access_token.as_ref(),
        Some(&settings.fb_page_access_token),
        Some(&settings.fb_verify_token),
    ]
    .into_iter()
    .flatten()
    .map(|s| s.expose().to_owned())
    .collect();
    match &settings.fulfillment_auth {
        FulfillmentAuth::Basic { password, .. } => secrets.push(password.expose().to_owned()),
        FulfillmentAuth::Bearer(token) => secrets.push(token.expose().to_owned()),
        FulfillmentAuth::None => {}
    }
    if let Ok(url) = url::Url::parse(&settings.database_url)
        && let Some(password) = url.password()
    {
        secrets.push(password.to_owned());
    }
    // Settings refuse shorter secrets; a short database password is not looked for either
    // (`redact` ignores it): replacing it would mangle ordinary words.
    secrets.sort();
    secrets.dedup();
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawSettings;

    #[test]
    fn line_format() {
        assert_eq!(Finding::pass("fine").line(), "✓ fine");
        assert_eq!(
            Finding::fail("broken\nreally", "do this").line(),
            "✗ broken really — fix: do this"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let raw = RawSettings::from_pairs([
            ("FB_APP_ID", "111111111111111"),
            ("FB_APP_SECRET", "bot-app-secret"),
            ("FB_PAGE_ACCESS_TOKEN", "EAAB-page-token"),
            ("FB_VERIFY_TOKEN", "verify-me"),
            ("FULFILLMENT_TOKEN", "0123456789abcdef0123"),
            ("FB_WEBHOOK_APP_ID", "222222222222222"),
            ("FB_WEBHOOK_APP_SECRET", "companion-secret"),
            ("FB_WEBHOOK_PAGE_ACCESS_TOKEN", "EAAC-companion"),
        ]);
        let s = Settings::from_raw(&raw).expect("valid settings");
        let mut findings = [Finding::fail(
            "a EAAB-page-token b bot-app-secret c EAAC-companion d 0123456789abcdef0123",
            "not companion-secret",
        )];
        redact_secrets(&mut findings, &s);
        let out = findings[0].line();
        for secret in [
            "EAAB-page-token",
            "bot-app-secret",
            "EAAC-companion",
            "0123456789abcdef0123",
            "companion-secret",
        ] {
            assert!(!out.contains(secret), "{out}");
        }
    }
}

//! The admin page: one HTML document rendered by askama from `templates/admin.html`, with its
//! script and style inline (no build step, nothing fetched from elsewhere: the service runs on
//! private networks). A strict Content-Security-Policy allows exactly those two by their
//! SHA-256, and calls to this origin only. The page holds no data: the script asks the JSON
//! API with the token the operator types, kept in the tab's `sessionStorage`.

use std::sync::LazyLock;

use askama::Template;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// How often the page asks for the list again.
pub const POLL_MS: u64 = 3_000;

const SCRIPT: &str = include_str!("../../templates/admin.js");
const STYLE: &str = include_str!("../../templates/admin.css");

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage<'a> {
    page_label: &'a str,
    poll_ms: u64,
    version: &'static str,
    script: &'static str,
    style: &'static str,
}

/// The page for `page_id` (`FB_PAGE_ID`, if set).
pub fn render(page_id: Option<&str>) -> Result<String, askama::Error> {
    AdminPage {
        page_label: page_id.unwrap_or(""),
        poll_ms: POLL_MS,
        version: env!("CARGO_PKG_VERSION"),
        script: SCRIPT,
        style: STYLE,
    }
    .render()
}

fn sha256_source(text: &str) -> String {
    format!(
        "'sha256-{}'",
        STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

/// The page's `Content-Security-Policy`: its own inline script and style (by hash), requests
/// to this origin, nothing else (no frames, no forms sent anywhere, no other base).
pub static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sha256_source(SCRIPT),
        sha256_source(STYLE)
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    fn between<'a>(html: &'a str, open: &str, close: &str) -> &'a str {
        let start = html.find(open).expect(open) + open.len();
        let end = start + html[start..].find(close).expect(close);
        &html[start..end]
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        let html = render(Some("958823367603818")).unwrap();
        let script = between(&html, "<script>", "</script>");
        let style = between(&html, "<style>", "</style>");
        assert_eq!(script, SCRIPT);
        assert_eq!(style, STYLE);
        let csp = CONTENT_SECURITY_POLICY.as_str();
        assert!(
            csp.contains(&format!("script-src {};", sha256_source(script))),
            "{csp}"
        );
        assert!(
            csp.contains(&format!("style-src {};", sha256_source(style))),
            "{csp}"
        );
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        // One script and one style, nothing loaded from elsewhere.
        assert_eq!(html.matches("<script").count(), 1);
        assert!(!html.contains("src="), "{html}");
        assert!(!html.contains("http"), "{html}");
    }

    #[test]
    fn the_inline_sources_cannot_end_their_element_early() {
        assert!(!SCRIPT.contains("</"), "admin.js must not contain \"</\"");
        assert!(!STYLE.contains("</"), "admin.css must not contain \"</\"");
    }

    #[test]
    fn the_page_id_is_escaped() {
        let html = render(Some("<b>1</b>")).unwrap();
        assert!(html.contains("&#60;b&#62;1&#60;/b&#62;"), "{html}");
        assert!(!html.contains("<b>1"), "{html}");
        assert!(render(None).is_ok());
    }
}

//! A string that never shows itself in `Debug` output or logs.
//!
//! The storage is `secrecy::SecretString` (redacted `Debug`, zeroized on drop); this thin
//! newtype adds the constant-time comparison the webhook and fulfillment checks need.

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// `Debug` is `SecretString`'s, which prints `[REDACTED]`; there is no `Display`, so a secret
/// cannot be formatted into a message by accident.
#[derive(Clone, Debug, Default)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The secret value. Call only where it is sent or used as a key, never to log it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// Constant-time comparison with a candidate value.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.expose().as_bytes(), candidate)
    }
}

/// In constant time too: comparing two secrets must not leak where they differ.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other.expose().as_bytes())
    }
}

impl Eq for Secret {}

/// The shortest secret a setting accepts. It is also the shortest text [`redact`] looks for:
/// replacing a shorter one (a letter, a word) would garble ordinary text.
pub const MIN_SECRET_CHARS: usize = 8;

/// What [`redact`] puts in place of a secret.
pub const REDACTED: &str = "[redacted]";

/// `text` with every occurrence of the `secrets` replaced by [`REDACTED`], for text that came
/// from elsewhere (an API's answer quoted in an error) and might echo a token back. The
/// service's own messages never hold a secret to begin with.
///
/// One pass from left to right, the longest secret first at each position, so overlapping
/// secrets go whole and a replacement is never searched again. Secrets shorter than
/// [`MIN_SECRET_CHARS`] are ignored. Hand-written: a few secrets over a few hundred
/// characters do not need an automaton crate.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut secrets: Vec<&str> = secrets
        .iter()
        .copied()
        .filter(|s| s.chars().count() >= MIN_SECRET_CHARS)
        .collect();
    if !secrets.iter().any(|s| text.contains(s)) {
        return text.to_owned();
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match secrets.iter().find(|s| rest.starts_with(**s)) {
            Some(secret) => {
                out.push_str(REDACTED);
                rest = &rest[secret.len()..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // `ct_eq` on slices of different lengths returns false without looking at the contents;
    // the length of a secret is not treated as secret.
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", Some(s.clone())).contains("hunter2"));
        assert!(format!("{s:?}").contains("REDACTED"));
        assert!(s.matches(b"hunter2"));
        assert!(!s.matches(b"hunter3"));
        assert!(!s.matches(b"hunter"));
    }

    #[test]
    fn redaction_replaces_whole_secrets_and_cannot_garble() {
        // The garbling of issue 11: one-letter secrets replaced everywhere, placeholders too.
        let text = "error sending request: client error";
        assert_eq!(redact(text, &["s", "t"]), text);
        // Eight common letters that do not occur: the text is unchanged.
        assert_eq!(redact(text, &["etaoinsr", "srniotae"]), text);
        // An echoed token goes, whole, once; the text around it stays.
        assert_eq!(
            redact("bad token EAAtoken1 here; EAAtoken1", &["EAAtoken1"]),
            "bad token [redacted] here; [redacted]"
        );
        // Overlapping secrets: the longest wins, and the placeholder is not searched again
        // (`redacte` would otherwise match inside `[redacted]`).
        assert_eq!(
            redact(
                "111|appsecret9 and appsecret9",
                &["appsecret9", "111|appsecret9", "redacted"]
            ),
            "[redacted] and [redacted]"
        );
        assert_eq!(redact("é EAAtoken1é", &["EAAtoken1"]), "é [redacted]é");
        assert_eq!(redact("", &["EAAtoken1"]), "");
    }

    #[test]
    fn secrets_compare_by_value() {
        assert_eq!(Secret::new("a"), Secret::new("a"));
        assert_ne!(Secret::new("a"), Secret::new("b"));
        assert!(Secret::default().is_empty());
    }
}

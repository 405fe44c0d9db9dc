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
    fn secrets_compare_by_value() {
        assert_eq!(Secret::new("a"), Secret::new("a"));
        assert_ne!(Secret::new("a"), Secret::new("b"));
        assert!(Secret::default().is_empty());
    }
}

//! Webhook signatures (`X-Hub-Signature-256`) and `appsecret_proof`, both HMAC-SHA256.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("malformed X-Hub-Signature-256 header (expected sha256=<hex>)")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body")]
    Mismatch,
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// `sha256=<lowercase hex>` of the raw body, as Meta sends it.
pub fn sign(app_secret: &str, body: &[u8]) -> String {
    let mut m = mac(app_secret.as_bytes());
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// Verifies the header against the raw body bytes, in constant time.
pub fn verify(app_secret: &str, body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex_part = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_part).map_err(|_| SignatureError::Malformed)?;
    let mut m = mac(app_secret.as_bytes());
    m.update(body);
    m.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// `appsecret_proof`: lowercase hex HMAC-SHA256 of the access token, keyed by the app secret.
pub fn appsecret_proof(app_secret: &str, access_token: &str) -> String {
    let mut m = mac(app_secret.as_bytes());
    m.update(access_token.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_made_by_sign_verifies_and_a_changed_body_does_not() {
        let body = br#"{"object":"page","entry":[]}"#;
        let header = sign("s3cret", body);
        assert!(header.starts_with("sha256="));
        assert_eq!(verify("s3cret", body, Some(&header)), Ok(()));
        assert_eq!(
            verify("s3cret", b"{\"object\":\"page\"}", Some(&header)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("other", body, Some(&header)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_told_apart() {
        assert_eq!(verify("k", b"x", None), Err(SignatureError::Missing));
        assert_eq!(
            verify("k", b"x", Some("sha1=abcd")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify("k", b"x", Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn appsecret_proof_matches_a_known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            appsecret_proof("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

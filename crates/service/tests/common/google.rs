//! Google test support: throwaway service-account key files pointing at a mock token endpoint.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

/// The client email written into generated key files.
#[allow(dead_code)]
pub const TEST_CLIENT_EMAIL: &str = "handover-test@handover-demo-4f2a1.iam.gserviceaccount.com";

/// A 2048-bit RSA key generated once per test binary (generation takes a moment), as PKCS#8 PEM.
fn throwaway_private_key_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| {
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
            .expect("generate a throwaway RSA key");
        key.to_pkcs8_pem(LineEnding::LF)
            .expect("encode the throwaway RSA key as PKCS#8 PEM")
            .to_string()
    })
}

/// Writes a Google service-account key JSON file into `dir` with a freshly generated throwaway
/// 2048-bit RSA key (PKCS#8 PEM) and the given `token_uri`; returns its path.
#[allow(dead_code)]
pub fn write_service_account_key(dir: &Path, token_uri: &str) -> PathBuf {
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "handover-demo-4f2a1",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": throwaway_private_key_pem(),
        "client_email": TEST_CLIENT_EMAIL,
        "client_id": "104857600000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/handover-test%40handover-demo-4f2a1.iam.gserviceaccount.com",
        "universe_domain": "googleapis.com"
    });
    let path = dir.join("service-account.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&key).expect("serialize the key file"),
    )
    .expect("write the service account key file");
    path
}

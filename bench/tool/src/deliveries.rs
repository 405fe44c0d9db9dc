//! The files `bench/load.lua` (wrk) reads.
//!
//! - Deliveries: one signed `standby` user message per line, `<X-Hub-Signature-256>\t<body>`,
//!   the body one line of JSON; every `mid` distinct, users cycling over `users` PSIDs.
//! - Templates: one fulfillment request body on one line, with `@PSID@` where the user's PSID
//!   goes (sender, session, contexts), for wrk to fill in per request.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::fixtures::{self, Intent};

pub struct Deliveries<'a> {
    pub count: u64,
    pub secret: &'a str,
    pub users: u64,
    pub psid_base: u64,
    pub page_id: &'a str,
    /// The message text; must not be one of the service's `RETURN_PHRASES`.
    pub text: &'a str,
}

pub fn write_deliveries(spec: &Deliveries<'_>, out: &Path) -> std::io::Result<()> {
    let mut w = BufWriter::new(File::create(out)?);
    let now = fixtures::now_ms();
    let users = spec.users.max(1);
    for i in 0..spec.count {
        let psid = fixtures::psid(spec.psid_base, i % users);
        // Distinct across runs too (the start time), and within one (the index).
        let mid = format!("m_bench_{now}_{i}");
        let body = fixtures::standby_body(&psid, spec.page_id, &mid, spec.text, now + i / 1000);
        let signature = fixtures::sign(spec.secret, body.as_bytes());
        writeln!(w, "{signature}\t{body}")?;
    }
    w.flush()
}

pub fn write_template(intent: Intent, page_id: &str, out: &Path) -> std::io::Result<()> {
    let body = fixtures::fulfillment_body(intent, fixtures::PSID_PLACEHOLDER, page_id);
    std::fs::write(out, format!("{body}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_a_signed_delivery_with_its_own_mid() {
        let dir = std::env::temp_dir().join(format!("handover-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("d.txt");
        let spec = Deliveries {
            count: 25,
            secret: "s",
            users: 10,
            psid_base: 9_100_000_000_000_000,
            page_id: fixtures::PAGE_ID,
            text: "thanks",
        };
        write_deliveries(&spec, &out).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let mut mids = std::collections::HashSet::new();
        for line in text.lines() {
            let (sig, body) = line.split_once('\t').unwrap();
            assert_eq!(sig, fixtures::sign("s", body.as_bytes()));
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(mids.insert(v["entry"][0]["standby"][0]["message"]["mid"].to_string()));
        }
        assert_eq!(mids.len(), 25);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

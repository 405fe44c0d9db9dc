//! OpenTelemetry trace export (cargo feature `otel`, off by default: run with
//! `cargo test -p messenger-handover --features otel --test otel`). The real binary, with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a stand-in collector, exports the span of a
//! request in the caller's trace (`traceparent`) by the time it has stopped.
#![cfg(feature = "otel")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const BIN: &str = env!("CARGO_BIN_EXE_messenger-handover");
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_span_is_exported_in_the_callers_trace() {
    messenger_handover::tls::install();
    let collector = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&collector)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let url = format!("sqlite://{}", dir.path().join("h.db").display());
    let mut child = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .envs([
            ("HOST", "127.0.0.1"),
            ("PORT", port.as_str()),
            ("DATABASE_URL", url.as_str()),
            ("FB_APP_ID", "111111111111111"),
            ("FB_APP_SECRET", "app-secret"),
            ("FB_PAGE_ACCESS_TOKEN", "page-token"),
            ("FB_VERIFY_TOKEN", "verify-token"),
            ("FULFILLMENT_TOKEN", "fulfillment-token-0123456789"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.uri().as_str()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = http
            .get(format!("{base}/healthz"))
            .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
            .send()
            .await;
        if answer.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the service never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap();
    assert!(status.unwrap().success());
    // OTLP/protobuf carries the trace id as its 16 bytes.
    let trace = hex::decode(TRACE).unwrap();
    let exported = collector.received_requests().await.unwrap_or_default();
    assert!(
        exported
            .iter()
            .any(|r| r.body.windows(trace.len()).any(|w| w == trace.as_slice())),
        "no span of trace {TRACE} among {} exports",
        exported.len()
    );
}

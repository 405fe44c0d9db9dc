//! What is recorded about each HTTP request: a root span (`tracing-actix-web`) and one log
//! line with the method, the route pattern, the status, the time taken and, for a refused
//! request, the reason it was given (`reason`), and a sample of the latency histogram. Never
//! the query string (`GET /messenger` carries the verify token in it) and never the raw path
//! (it may hold ids): a request that matched no route is `unmatched`. The caller's trace id
//! (`traceparent`, `X-Cloud-Trace-Context`) is on the span and the line (`telemetry` puts it
//! where Cloud Logging reads it), and a handler that knows the conversation adds its `thread`
//! (the user pseudonymized).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest, web};
use tracing::{Span, field};
use tracing_actix_web::RootSpanBuilder;

use crate::app::Services;
use crate::metrics::UNMATCHED_ROUTE;
use crate::telemetry;

/// The route pattern a request matched (`/messenger`), or `unmatched`.
pub fn route_of(req: &HttpRequest) -> String {
    req.match_pattern()
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned())
}

/// When the request came in, for the time its log line shows.
struct Started(Instant);

/// The caller's trace id, for the request's log line.
struct Trace(String);

/// The conversation the request is about, as logged (`telemetry::Pseudonyms::thread`).
struct Thread(String);

/// Tags the request with its conversation: its span (so every line logged while handling it)
/// and its log line carry `thread`.
pub fn record_thread(req: &HttpRequest, thread: String) {
    Span::current().record("thread", thread.as_str());
    req.extensions_mut().insert(Thread(thread));
}

/// The root span of every request: `request{method, path, status, trace_id, thread}`, `path`
/// being the route pattern. The field keeps the name `path` that the request log line has
/// always had.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        request.extensions_mut().insert(Started(Instant::now()));
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        let trace = telemetry::trace_id(header("traceparent"), header("x-cloud-trace-context"));
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %route_of(request.request()),
            status = field::Empty,
            trace_id = field::Empty,
            thread = field::Empty,
        );
        if let Some(trace) = trace {
            span.record(telemetry::TRACE_ID, trace.as_str());
            request.extensions_mut().insert(Trace(trace));
        }
        #[cfg(feature = "otel")]
        crate::otel::continue_trace(&span, request.headers());
        span
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        match outcome {
            Ok(response) => {
                let status = response.status().as_u16();
                span.record("status", status);
                let req = response.request();
                let extensions = req.extensions();
                let ms = extensions
                    .get::<Started>()
                    .map(|s| s.0.elapsed().as_millis() as u64);
                // A refused request says why, as the caller was told (`json_error`).
                let reason = response
                    .response()
                    .extensions()
                    .get::<super::Refusal>()
                    .map(|r| r.0.clone());
                let trace_id = extensions.get::<Trace>().map(|t| t.0.as_str());
                let thread = extensions.get::<Thread>().map(|t| t.0.as_str());
                // A root event: the pretty format would repeat the span's fields before the
                // line's own; so the line names the trace and thread itself.
                tracing::info!(
                    parent: None,
                    method = %req.method(),
                    path = %route_of(req),
                    status,
                    ms,
                    reason,
                    trace_id,
                    thread,
                    "request"
                );
            }
            // Only a middleware fails this way (handlers' errors are responses by now); the
            // span carries the method and route.
            Err(error) => {
                let status = error.as_response_error().status_code().as_u16();
                span.record("status", status);
                span.in_scope(|| tracing::info!(status, error = %error, "request failed"));
            }
        }
    }
}

/// Records the latency histogram `handover_http_request_duration_seconds{route,method,status}`.
pub async fn record_latency(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let metrics = req
        .app_data::<web::Data<Services>>()
        .map(|svc| svc.metrics.clone());
    let route = route_of(req.request());
    let method = req.method().clone();
    let started = Instant::now();
    let outcome = next.call(req).await;
    if let Some(metrics) = metrics {
        let status = match &outcome {
            Ok(response) => response.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        metrics.http_request(&route, &method, status.as_u16(), started.elapsed());
    }
    outcome
}

#[cfg(test)]
mod tests {
    use actix_web::test;

    use crate::config::{LogFormat, RawSettings, Settings};
    use crate::startup::{app, build_services};
    use crate::store::Store;
    use crate::telemetry::tests::Captured;

    const VERIFY_TOKEN: &str = "verify-token-never-logged";

    /// What was written, without the colours of the pretty format.
    fn text_of(captured: &Captured) -> String {
        let raw = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
        let mut text = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                chars.by_ref().find(|c| *c == 'm');
            } else {
                text.push(c);
            }
        }
        text
    }

    async fn services(dir: &std::path::Path) -> crate::app::Shared {
        let url = format!("sqlite://{}", dir.join("h.db").display());
        let raw = RawSettings::from_pairs([
            ("DATABASE_URL", url.as_str()),
            ("FB_APP_ID", "111111111111111"),
            ("FB_APP_SECRET", "app-secret"),
            ("FB_PAGE_ACCESS_TOKEN", "page-token"),
            ("FB_VERIFY_TOKEN", VERIFY_TOKEN),
            ("FULFILLMENT_TOKEN", "fulfillment-token"),
        ]);
        let settings = Settings::from_raw(&raw).unwrap();
        let store = Store::connect(&settings.database_url).await.unwrap();
        store.migrate().await.unwrap();
        build_services(settings, store).await.unwrap()
    }

    /// The real app at TRACE level, in both log formats: the verify token sent in the query
    /// of `GET /messenger`, and the query itself, never reach the logs; ids in an unknown path
    /// neither.
    #[actix_web::test]
    async fn no_query_string_or_raw_path_reaches_the_logs() {
        let dir = tempfile::tempdir().unwrap();
        let svc = services(dir.path()).await;
        for format in [LogFormat::Json, LogFormat::Pretty] {
            let logs = Captured::default();
            let sink = logs.clone();
            let subscriber =
                crate::telemetry::subscriber(format, "trace", None, move || sink.clone());
            let _guard = tracing::subscriber::set_default(subscriber);
            let service = test::init_service(app(web_data(&svc))).await;
            let ok = test::TestRequest::get()
                .uri(&format!(
                    "/messenger?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=42"
                ))
                .to_request();
            let resp = test::call_service(&service, ok).await;
            assert_eq!(resp.status(), 200);
            let wrong = test::TestRequest::get()
                .uri("/messenger?hub.mode=subscribe&hub.verify_token=wrong-guess-never-logged&hub.challenge=1")
                .to_request();
            assert_eq!(test::call_service(&service, wrong).await.status(), 403);
            let unknown = test::TestRequest::get()
                .uri("/threads/1534862223272449?access_token=query-token-never-logged")
                .to_request();
            assert_eq!(test::call_service(&service, unknown).await.status(), 404);
            drop(service);

            let text = text_of(&logs);
            for leak in [
                VERIFY_TOKEN,
                "wrong-guess-never-logged",
                "query-token-never-logged",
                // The query's shape (the refusal's reason names the parameters, not values).
                "hub.mode=",
                "hub.verify_token=",
                "hub.challenge",
                "1534862223272449",
            ] {
                assert!(!text.contains(leak), "{leak:?} reached the logs:\n{text}");
            }
            let request_line = match format {
                LogFormat::Json => r#""message":"request""#,
                LogFormat::Pretty => " ms=",
            };
            let lines: Vec<&str> = text.lines().filter(|l| l.contains(request_line)).collect();
            assert_eq!(lines.len(), 3, "one line per request:\n{text}");
            match format {
                LogFormat::Json => {
                    assert!(lines[0].contains(r#""path":"/messenger""#), "{text}");
                    assert!(lines[0].contains(r#""status":200"#), "{text}");
                    assert!(lines[1].contains(r#""status":403"#), "{text}");
                    // A refused request says why, as the caller was told.
                    assert!(
                        lines[1].contains(
                            r#""reason":"verification failed: hub.mode must be subscribe"#
                        ),
                        "{text}"
                    );
                    assert!(!lines[0].contains("reason"), "{text}");
                    assert!(lines[2].contains(r#""path":"unmatched""#), "{text}");
                }
                LogFormat::Pretty => {
                    assert!(lines[0].contains("path=/messenger"), "{text}");
                    assert!(lines[2].contains("path=unmatched"), "{text}");
                }
            }
        }
        let text = svc.metrics.render();
        assert!(
            text.contains(r#"handover_http_request_duration_seconds_count{route="/messenger",method="GET",status="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"handover_http_request_duration_seconds_count{route="unmatched",method="GET",status="404"} 2"#),
            "{text}"
        );
        assert!(!text.contains("1534862223272449"), "{text}");
        svc.store.close().await;
    }

    fn web_data(svc: &crate::app::Shared) -> actix_web::web::Data<crate::app::Services> {
        actix_web::web::Data::from(svc.clone())
    }
}

//! Optional OpenTelemetry trace export, built with the cargo feature `otel` (off by default:
//! it adds the OTLP protobuf code and the OpenTelemetry SDK to the build). With
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, every span (each request, each job) is sent in batches
//! over OTLP/HTTP (protobuf) to `{endpoint}/v1/traces`, and a request's span continues the
//! caller's `traceparent`. The logs are unchanged.

use std::sync::OnceLock;

use actix_web::http::header::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The provider, kept to flush the last spans at exit.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The layer that exports spans to `endpoint` (the OTLP base URL, as in
/// `OTEL_EXPORTER_OTLP_ENDPOINT`).
pub fn layer<S>(endpoint: &str) -> Result<impl Layer<S> + use<S>, String>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    // The exporter's blocking HTTP client runs on the batch processor's own thread; it must
    // not be built (or dropped) on the async runtime's threads.
    let provider = std::thread::spawn(move || {
        crate::tls::install();
        let exporter = SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .build()
            .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
        Ok::<_, String>(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    Resource::builder()
                        .with_service_name(env!("CARGO_PKG_NAME"))
                        .build(),
                )
                .build(),
        )
    })
    .join()
    .map_err(|_| "OTEL_EXPORTER_OTLP_ENDPOINT: the exporter could not be built".to_owned())??;
    let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
    let _ = PROVIDER.set(provider);
    Ok(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Sends the spans still buffered; at exit.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}

/// Makes `span` (a request's) a child of the caller's trace, from `traceparent`.
pub fn continue_trace(span: &Span, headers: &HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(parent);
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

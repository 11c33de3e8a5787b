//! Logs and traces. Logs: JSON lines on stderr with request and job id fields, human-readable on
//! a terminal. Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans go to that collector
//! over OTLP/HTTP (protobuf) in batches, flushed on shutdown; the standard `OTEL_*` variables
//! (`OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`, `…_TRACES_ENDPOINT`) apply.
//! The W3C `traceparent` travels inside each job, so one trace runs from the request that
//! enqueued a job through the worker that ran it.
//!
//! What is recorded is chosen field by field: request method, route and id; job kind, id,
//! attempt and tenant; never headers, bodies, keys or payloads.

use std::collections::HashMap;
use std::io::IsTerminal;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, Settings};

/// The installed telemetry; [`Telemetry::shutdown`] flushes spans still in the batch.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is batched and stops the exporter. Call once, at exit.
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: spans not flushed at shutdown: {e}");
        }
    }
}

/// Installs the global subscriber (logs, and traces when an OTLP endpoint is configured).
/// Safe to call twice (the second call installs nothing). A fleet member (`member`) logs JSON
/// when stderr is not a terminal (a collector reads it); a command a person runs logs text
/// unless JSON is asked for.
pub fn init(settings: &Settings, member: bool) -> Telemetry {
    // A person running a command reads Ballast's own warnings, not its libraries' retries
    // (the command's error says what failed, once); a level alone applies to Ballast only.
    let levels = ["trace", "debug", "info", "warn", "error", "off"];
    let wanted = if !member && levels.contains(&settings.log_filter.trim()) {
        format!("error,ballast={}", settings.log_filter.trim())
    } else {
        settings.log_filter.clone()
    };
    let filter = EnvFilter::try_new(&wanted).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match settings.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => member && !std::io::stderr().is_terminal(),
    };
    let provider = settings.otel_endpoint.as_deref().and_then(|endpoint| match tracer_provider(endpoint, &settings.otel_service_name) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("warning: OTLP export disabled: {e}");
            None
        }
    });
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("ballast")));
    // Logs go to stderr: a command's stdout is its answer (`--json` output must parse).
    let fmt = tracing_subscriber::fmt::layer().with_target(false).with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _ = if json {
        registry.with(fmt.json().flatten_event(true).with_current_span(true).with_span_list(false)).try_init()
    } else {
        registry.with(fmt).try_init()
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Telemetry { provider }
}

fn tracer_provider(endpoint: &str, service: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    // The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT (and the per-signal variable) itself; an
    // endpoint that came from the config file is passed here, with the signal's path as the
    // specification asks.
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() {
        builder = builder.with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
    }
    let exporter = builder.build().map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .with_attribute(opentelemetry::KeyValue::new("service.version", crate::RELEASE))
        .build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// The W3C `traceparent` of the current span, when it is being traced.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// The trace id of `span` (32 hex digits) when it is being traced.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

/// Makes `span` a child of the trace `traceparent` names (a job continuing its enqueuer's trace).
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let carrier: HashMap<String, String> = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(context);
}

/// A log line that may be provoked from outside (a rejected webhook) at most once per
/// `every`: the other occurrences are counted and reported on the next line that is written,
/// so a flood of bad requests costs a counter, not a line each.
#[derive(Debug)]
pub struct Sampled {
    every_ms: i64,
    next_ms: std::sync::atomic::AtomicI64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl Sampled {
    /// At most one line per `every`.
    pub const fn new(every: std::time::Duration) -> Self {
        Self {
            every_ms: every.as_millis() as i64,
            next_ms: std::sync::atomic::AtomicI64::new(0),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(occurrences left out since the last line)` when this occurrence should be logged.
    pub fn admit(&self, now_ms: i64) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms >= next && self.next_ms.compare_exchange(next, now_ms + self.every_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod sampled_tests {
    use super::Sampled;

    #[test]
    fn one_line_per_period_and_the_rest_counted() {
        let s = Sampled::new(std::time::Duration::from_secs(10));
        assert_eq!(s.admit(1_000), Some(0));
        for t in 1_001..1_100 {
            assert_eq!(s.admit(t), None);
        }
        assert_eq!(s.admit(11_000), Some(99));
        assert_eq!(s.admit(11_001), None);
    }
}

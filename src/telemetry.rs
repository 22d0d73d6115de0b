//! OpenTelemetry traces over OTLP: the spans of each tool call (see
//! [`crate::mcp::trace`]) exported over HTTP/protobuf by a batch thread,
//! configured by the standard `OTEL_*` variables.
//!
//! On when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is not
//! `true`, nor `OTEL_TRACES_EXPORTER` `none`). The SDK reads the rest:
//! `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`
//! and `OTEL_TRACES_SAMPLER_ARG`, `OTEL_EXPORTER_OTLP_HEADERS` and
//! `_TIMEOUT`, `OTEL_BSP_*`. Off, no span of a call is even created.
//!
//! Export never blocks a call: spans wait in the batch queue
//! (`OTEL_BSP_MAX_QUEUE_SIZE`) and a full queue drops them; a batch the
//! collector does not take is dropped and counted
//! ([`ExportCounters`], `mcp_trace_export_failures_total`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

/// The `tracing` target of every span that becomes an OpenTelemetry span:
/// with telemetry off, the log filter turns it off, so those spans cost a
/// disabled callsite's check.
pub const TARGET: &str = "eros_mcp::trace";

/// Why traces cannot be set up as the variables say.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "{variable}={value}: this server exports traces over OTLP http/protobuf only; unset it \
         or set it to http/protobuf (and point the endpoint at the collector's HTTP port, \
         usually 4318)"
    )]
    Protocol {
        variable: &'static str,
        value: String,
    },
    #[error("cannot set up the OTLP trace exporter: {0}")]
    Exporter(String),
}

/// What became of the batches sent to the collector.
#[derive(Debug, Default)]
pub struct ExportCounters {
    failed_batches: AtomicU64,
    dropped_spans: AtomicU64,
}

impl ExportCounters {
    /// Batches the collector did not take (unreachable, refused, too slow).
    pub fn failed_batches(&self) -> u64 {
        self.failed_batches.load(Ordering::Relaxed)
    }

    /// Spans in those batches, lost.
    pub fn dropped_spans(&self) -> u64 {
        self.dropped_spans.load(Ordering::Relaxed)
    }
}

/// Traces on: the provider, its tracer, and the export counters.
pub struct Telemetry {
    provider: SdkTracerProvider,
    exports: Arc<ExportCounters>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

/// `name`'s value, unless unset or empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

impl Telemetry {
    /// Traces as the `OTEL_*` variables say; `None` when they are off.
    pub fn from_env() -> Result<Option<Self>, TelemetryError> {
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        if endpoint.is_none() || disabled {
            return Ok(None);
        }
        for variable in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(value) = var(variable) {
                if value != "http/protobuf" {
                    return Err(TelemetryError::Protocol { variable, value });
                }
                break;
            }
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|err| TelemetryError::Exporter(err.to_string()))?;
        let exports = Arc::new(ExportCounters::default());
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(CountingExporter {
                inner: exporter,
                counters: Arc::clone(&exports),
            })
            .with_resource(Resource::builder().build())
            .build();
        Ok(Some(Self { provider, exports }))
    }

    /// The tracer the `tracing` layer hands spans to.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer(env!("CARGO_PKG_NAME"))
    }

    pub fn exports(&self) -> Arc<ExportCounters> {
        Arc::clone(&self.exports)
    }

    /// Sends what is queued (waiting at most the exporter's timeout) and stops.
    pub fn shutdown(&self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::warn!(error = %err, "traces not all exported at shutdown");
        }
    }
}

/// The OTLP exporter, counting the batches it loses.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    counters: Arc<ExportCounters>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        if result.is_err() {
            self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
            self.counters
                .dropped_spans
                .fetch_add(spans, Ordering::Relaxed);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

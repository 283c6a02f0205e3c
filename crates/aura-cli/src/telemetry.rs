//! Logs and traces for `aura serve`: the engine's, host's and node's `tracing` spans and
//! events to stderr, filtered by `AURA_LOG` (default `warn`), and, in a binary built with
//! the `otlp` feature, to an OpenTelemetry collector named by `[telemetry] otlp_endpoint`
//! (docs/metrics.md). Only the binary installs a subscriber; the libraries only emit.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

use crate::hinted;

/// The environment variable holding the log filter (`info`, `warn,aura_engine=debug`).
pub(crate) const LOG_ENV: &str = "AURA_LOG";

/// Keeps the exporter until the node stops; dropping it flushes the spans still queued.
#[derive(Debug)]
pub(crate) struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the process's subscriber: logs to stderr, and traces to the collector when one
/// is configured. A configured collector this build cannot reach is an error, not silence.
pub(crate) fn init(config: &aura_node::config::TelemetryConfig) -> anyhow::Result<Telemetry> {
    let filter = match std::env::var(LOG_ENV) {
        Ok(v) if !v.trim().is_empty() => v.parse::<Targets>().map_err(|e| {
            hinted(
                format!("{LOG_ENV} `{v}` is not a log filter: {e}"),
                "use a level (`info`) or targets with levels (`warn,aura_engine=debug`)",
            )
        })?,
        _ => Targets::new().with_default(tracing::Level::WARN),
    };
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_filter(filter);
    #[cfg(feature = "otlp")]
    {
        let (provider, traces) = match &config.otlp_endpoint {
            Some(endpoint) => {
                let (provider, layer) = otlp(endpoint)?;
                (Some(provider), Some(layer))
            }
            None => (None, None),
        };
        tracing_subscriber::registry()
            .with(traces)
            .with(logs)
            .try_init()
            .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
        Ok(Telemetry { provider })
    }
    #[cfg(not(feature = "otlp"))]
    {
        if let Some(endpoint) = &config.otlp_endpoint {
            return Err(hinted(
                format!(
                    "[telemetry] otlp_endpoint is `{endpoint}`, but this aura was built without OpenTelemetry"
                ),
                "build with `cargo build -p aura-cli --features otlp`, or remove otlp_endpoint from aura.toml",
            ));
        }
        tracing_subscriber::registry()
            .with(logs)
            .try_init()
            .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
        Ok(Telemetry {})
    }
}

/// The OTLP/gRPC exporter (batched, on its own thread) and the layer feeding it every span
/// at `info` and above.
#[cfg(feature = "otlp")]
fn otlp(
    endpoint: &str,
) -> anyhow::Result<(
    opentelemetry_sdk::trace::SdkTracerProvider,
    impl tracing_subscriber::Layer<tracing_subscriber::Registry>,
)> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| {
            hinted(
                format!("cannot export traces to `{endpoint}`: {e}"),
                "set [telemetry] otlp_endpoint to a collector's OTLP/gRPC address, such as http://127.0.0.1:4317",
            )
        })?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("aura")
                .build(),
        )
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("aura"))
        .with_filter(Targets::new().with_default(tracing::Level::INFO));
    Ok((provider, layer))
}

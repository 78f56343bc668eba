//! The optional `[telemetry]` section: where traces and metrics are exported (OTLP over
//! HTTP/protobuf).

use serde::Deserialize;

use super::ConfigError;
use super::validate::parse_url;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    otlp_endpoint: Option<String>,
}

/// Trace and metrics export; without `otlp_endpoint` nothing is exported.
#[derive(Clone, Debug, Default)]
pub struct TelemetryConfig {
    /// Base URL of an OTLP/HTTP receiver (e.g. `http://otel-collector:4318`), without a trailing
    /// slash; spans are POSTed to `<otlp_endpoint>/v1/traces`, metrics to `<otlp_endpoint>/v1/metrics`.
    pub otlp_endpoint: Option<String>,
}

pub(super) fn telemetry(raw: Option<RawTelemetry>) -> Result<TelemetryConfig, ConfigError> {
    let Some(raw) = raw else {
        return Ok(TelemetryConfig::default());
    };
    let otlp_endpoint = match raw.otlp_endpoint.as_deref().map(str::trim) {
        None | Some("") => None,
        // A collector is usually reached over the cluster network in plain http (port 4318).
        Some(v) => Some(parse_url("telemetry.otlp_endpoint", v, false)?),
    };
    Ok(TelemetryConfig { otlp_endpoint })
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::tests::{FULL, no_env};

    #[test]
    fn no_telemetry_section_means_no_exporter() {
        let c = Config::parse(FULL, &no_env).unwrap();
        assert_eq!(c.telemetry.otlp_endpoint, None);
    }

    #[test]
    fn the_otlp_endpoint_is_read_without_a_trailing_slash() {
        let text = format!("[telemetry]\notlp_endpoint = \"http://otel-collector:4318/\"\n{FULL}");
        let c = Config::parse(&text, &no_env).unwrap();
        assert_eq!(
            c.telemetry.otlp_endpoint.as_deref(),
            Some("http://otel-collector:4318")
        );
    }

    #[test]
    fn a_bad_otlp_endpoint_names_the_key() {
        for bad in ["not a url", "ftp://collector:4318"] {
            let text = format!("[telemetry]\notlp_endpoint = \"{bad}\"\n{FULL}");
            let e = Config::parse(&text, &no_env).unwrap_err().to_string();
            assert!(e.contains("telemetry.otlp_endpoint"), "{e}");
        }
        let text = format!("[telemetry]\nendpoint = \"http://x:4318\"\n{FULL}");
        let e = Config::parse(&text, &no_env).unwrap_err().to_string();
        assert!(e.contains("endpoint"), "{e}");
    }
}

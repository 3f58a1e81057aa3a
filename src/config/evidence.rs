//! Evidence settings: `telemetry:` (OpenTelemetry export, off unless `telemetry.otlp.endpoint`
//! is set) and `policy.shadow` (a candidate policy decided beside the live one).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/HTTP export of one span and one log record per call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpConfig>,
}

/// `telemetry.otlp`: where and how spans and decision records are exported.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318` (`/v1/traces` and
    /// `/v1/logs` are appended).
    pub endpoint: String,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Calls per export request at most.
    pub batch: usize,
    /// Calls waiting for export at most; beyond it they are dropped and counted (the audit log
    /// stays the lossless record).
    pub queue: usize,
    /// How long one export request may take.
    pub timeout_ms: u64,
    /// The bodies' encoding: protobuf (OTLP/HTTP's default) or JSON.
    pub encoding: OtlpEncoding,
}

/// `telemetry.otlp.encoding`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OtlpEncoding {
    /// `application/x-protobuf`.
    #[default]
    Protobuf,
    /// `application/json`.
    Json,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            service_name: "intentgate".into(),
            batch: 512,
            queue: 4096,
            timeout_ms: 5000,
            encoding: OtlpEncoding::Protobuf,
        }
    }
}

impl OtlpConfig {
    /// What is wrong with it, if anything: (field, message).
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        let rest = self.endpoint.strip_prefix("http://").ok_or_else(|| {
            (
                "telemetry.otlp.endpoint",
                format!(
                    "'{}' must be an http:// URL of an OTLP/HTTP collector (https is not supported yet: run the collector as a sidecar or node agent)",
                    self.endpoint
                ),
            )
        })?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(("telemetry.otlp.endpoint", "names no host".into()));
        }
        for (field, v) in [
            ("telemetry.otlp.batch", self.batch as u64),
            ("telemetry.otlp.queue", self.queue as u64),
            ("telemetry.otlp.timeout_ms", self.timeout_ms),
        ] {
            if v == 0 {
                return Err((field, "must be greater than 0".into()));
            }
        }
        Ok(())
    }
}

/// `policy.shadow`: the candidate policy's directories and files (Rego, data, catalogs), loaded
/// like `policy.paths` (with the builtin policy and `intents` as the live one has them).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    pub paths: Vec<PathBuf>,
}

//! `GET /v1/export`: the live heap as a profile (pprof, folded stacks, flamegraph SVG or JSON).

use serde::{Deserialize, Serialize};

/// Path of the export endpoint.
pub const EXPORT_PATH: &str = "/v1/export";

/// What an export is written as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// Gzipped protobuf profile (`go tool pprof`, Pyroscope, Parca): live and allocated objects and bytes.
    Pprof,
    /// Folded stacks (`comm (pid);outer;...;leaf live_bytes`), one line per stack, for any flamegraph tool.
    Folded,
    /// A flamegraph of live bytes, as SVG.
    Svg,
    /// The stacks as `TopResponse` JSON.
    Json,
}

impl ExportFormat {
    /// The `Content-Type` of the export.
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Pprof => "application/octet-stream",
            Self::Folded => "text/plain; charset=utf-8",
            Self::Svg => "image/svg+xml",
            Self::Json => "application/json",
        }
    }

    /// Whether the export is binary (not for a terminal).
    pub const fn is_binary(self) -> bool {
        matches!(self, Self::Pprof)
    }
}

/// Query of `GET /v1/export`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    pub format: ExportFormat,
    /// Only this process (host pid); every process otherwise.
    pub pid: Option<u32>,
}

//! `GET /v1/export`: the live heap as a profile (pprof, folded stacks, flamegraph SVG or JSON).

use serde::{Deserialize, Serialize};

use super::ProcessIdentity;

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

/// Which processes a heap profile covers (the metrics listener's `GET /debug/pprof/heap`, and each push): every
/// process when all are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeapFilter {
    /// Only this process (host pid).
    pub pid: Option<u32>,
    /// Only processes with this name (`comm`, exact).
    pub comm: Option<String>,
    /// Only processes of this service (see [`ProcessIdentity::service`]).
    pub service: Option<String>,
    /// Only processes in this container: its name, or its id or a prefix of 12 digits or more.
    pub container: Option<String>,
}

impl HeapFilter {
    /// Whether the process `pid` named `comm`, living in `identity`, is covered.
    pub fn matches(&self, pid: u32, comm: &str, identity: &ProcessIdentity) -> bool {
        self.pid.is_none_or(|p| p == pid)
            && self.comm.as_deref().is_none_or(|c| c == comm)
            && self.service.as_deref().is_none_or(|s| s == identity.service(comm))
            && self.container.as_deref().is_none_or(|c| identity.in_container(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_filters_by_service_and_container() {
        let id = "ab".repeat(32);
        let unit = ProcessIdentity { unit: Some("web.service".into()), ..ProcessIdentity::default() };
        let boxed = ProcessIdentity {
            container_id: Some(id.clone()),
            container_name: Some("api-0".into()),
            ..ProcessIdentity::default()
        };
        let bare = ProcessIdentity::default();
        assert_eq!(unit.service("python3"), "web");
        assert_eq!(boxed.service("python3"), "api-0");
        assert_eq!(bare.service("python3"), "python3");
        let by = |service: Option<&str>, container: Option<&str>| HeapFilter {
            service: service.map(str::to_owned),
            container: container.map(str::to_owned),
            ..HeapFilter::default()
        };
        assert!(by(Some("web"), None).matches(1, "python3", &unit));
        assert!(!by(Some("web"), None).matches(1, "python3", &bare));
        assert!(by(Some("python3"), None).matches(1, "python3", &bare));
        assert!(by(None, Some("api-0")).matches(1, "x", &boxed));
        assert!(by(None, Some(&id[..12])).matches(1, "x", &boxed));
        assert!(by(None, Some(&id.to_uppercase())).matches(1, "x", &boxed));
        assert!(!by(None, Some(&id[..6])).matches(1, "x", &boxed), "a prefix shorter than docker's short id");
        assert!(!by(None, Some("api-0")).matches(1, "x", &unit));
        let pid = HeapFilter { pid: Some(7), comm: Some("x".into()), ..HeapFilter::default() };
        assert!(pid.matches(7, "x", &bare) && !pid.matches(8, "x", &bare) && !pid.matches(7, "y", &bare));
    }
}

//! `GET /v1/export`: the live heap as a profile (pprof, folded stacks, flamegraph SVG or JSON).

use serde::{Deserialize, Serialize};

use super::{ProcessIdentity, StackReport};

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

/// A heap profile's sample types, as `go tool pprof -sample_index` names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeapSample {
    /// Allocations made since the stack was first seen.
    AllocObjects,
    /// Bytes allocated since the stack was first seen.
    AllocSpace,
    /// Live allocations.
    InuseObjects,
    /// Live bytes.
    #[default]
    InuseSpace,
}

impl HeapSample {
    /// The sample type's name in the profile.
    pub const fn name(self) -> &'static str {
        match self {
            Self::AllocObjects => "alloc_objects",
            Self::AllocSpace => "alloc_space",
            Self::InuseObjects => "inuse_objects",
            Self::InuseSpace => "inuse_space",
        }
    }

    /// This sample type's value of a stack with these counts.
    pub const fn value(self, live_bytes: u64, live_count: u64, total_bytes: u64, total_count: u64) -> u64 {
        match self {
            Self::AllocObjects => total_count,
            Self::AllocSpace => total_bytes,
            Self::InuseObjects => live_count,
            Self::InuseSpace => live_bytes,
        }
    }
}

/// The function name of the frame that stands for a process's stacks beyond a heap profile's limit, summed.
pub const OTHER_STACKS: &str = "[other stacks]";

/// A heap profile's content (`/debug/pprof/heap`, each push): the stacks with the most of `sample`, every frame
/// symbolized, then per process one report summing the rest, whose only frame is [`OTHER_STACKS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeapProfile {
    pub stacks: Vec<StackReport>,
    /// True in sampled mode: bytes and counts are unbiased estimates from weighted samples, not exact.
    pub estimated: bool,
    /// What the stacks were chosen by; the profile's default sample type.
    pub sample: HeapSample,
    /// (process, stack) pairs beyond the limit, summed into the [`OTHER_STACKS`] reports.
    pub omitted_stacks: u64,
    /// Stacks not symbolized within the time a scrape allows: their frames are addresses only.
    pub unsymbolized_stacks: u64,
}

/// Which processes a heap profile covers (the metrics listener's `GET /debug/pprof/heap`, and each push): every
/// process when all are `None`; and the sample type its stacks are chosen by.
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
    /// The sample type whose largest stacks the profile keeps, and its default (`inuse_space` when `None`).
    pub sample_index: Option<HeapSample>,
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

//! What the daemon reads from `/proc`, and the clocks.

use std::fs;

/// The name of a process (`/proc/PID/comm`), if it still exists.
pub fn comm(pid: u32) -> Option<String> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_owned())
}

/// The memory cgroup of a process from `/proc/PID/cgroup`, if the process still exists.
pub fn memory_cgroup(pid: u32) -> Option<String> {
    parse_memory_cgroup(&fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

/// The path of the cgroup v1 hierarchy holding the `memory` controller (`N:memory:/path`, possibly with other
/// controllers in the list), else the cgroup v2 path (`0::/path`).
pub fn parse_memory_cgroup(text: &str) -> Option<String> {
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if controllers.split(',').any(|c| c == "memory") {
            return Some(path.to_owned());
        }
        if controllers.is_empty() {
            v2 = Some(path.to_owned());
        }
    }
    v2
}

/// An executable file mapping of a process (`/proc/PID/maps`), to symbolize its addresses after it is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    pub path: String,
}

/// The executable file mappings of a process, if it still has an address space.
pub fn exec_mappings(pid: u32) -> Option<Vec<Mapping>> {
    let maps = parse_exec_mappings(&fs::read_to_string(format!("/proc/{pid}/maps")).ok()?);
    (!maps.is_empty()).then_some(maps)
}

/// Parses the executable, file-backed lines of a `maps` file.
pub fn parse_exec_mappings(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms, offset) = (fields.next()?, fields.next()?, fields.next()?);
            let path = fields.nth(2)?;
            if !perms.contains('x') || !path.starts_with('/') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let hex = |s: &str| u64::from_str_radix(s, 16).ok();
            Some(Mapping { start: hex(start)?, end: hex(end)?, offset: hex(offset)?, path: path.to_owned() })
        })
        .collect()
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; both clocks used here always exist on Linux.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Converts the kernel's `CLOCK_MONOTONIC` timestamps (`bpf_ktime_get_ns`) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Realtime minus monotonic, in ns, measured at start.
    offset_ns: u64,
}

impl Clock {
    pub fn new() -> Self {
        Self { offset_ns: clock_ns(libc::CLOCK_REALTIME).saturating_sub(clock_ns(libc::CLOCK_MONOTONIC)) }
    }

    /// Milliseconds since the Unix epoch for a monotonic timestamp.
    pub fn unix_ms(self, monotonic_ns: u64) -> u64 {
        (monotonic_ns + self.offset_ns) / 1_000_000
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_comm_is_readable() {
        assert!(comm(std::process::id()).is_some_and(|c| !c.is_empty()));
        assert_eq!(comm(u32::MAX), None);
    }

    #[test]
    fn memory_cgroup_v1_then_v2() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/e9d9\n3:cpu,cpuacct:/x\n0::/\n";
        assert_eq!(parse_memory_cgroup(v1).as_deref(), Some("/process_api/e9d9"));
        assert_eq!(parse_memory_cgroup("5:cpu,memory:/a/b\n").as_deref(), Some("/a/b"));
        assert_eq!(parse_memory_cgroup("0::/system.slice/x.service\n").as_deref(), Some("/system.slice/x.service"));
        assert_eq!(parse_memory_cgroup("garbage\n"), None);
        assert!(memory_cgroup(std::process::id()).is_some());
    }

    #[test]
    fn exec_mappings_are_parsed() {
        let maps = "55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 123 /usr/bin/leaker
55d0c0a01000-55d0c0a02000 r-xp 00001000 08:01 123 /usr/bin/leaker
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]
7f1000000000-7f1000100000 r-xp 00028000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
";
        let parsed = parse_exec_mappings(maps);
        assert_eq!(parsed.len(), 2, "{parsed:?}");
        assert_eq!(
            parsed[0],
            Mapping { start: 0x55d0_c0a0_1000, end: 0x55d0_c0a0_2000, offset: 0x1000, path: "/usr/bin/leaker".into() }
        );
        assert_eq!(parsed[1].offset, 0x28000);
        assert!(exec_mappings(std::process::id()).is_some_and(|m| !m.is_empty()));
    }

    #[test]
    fn monotonic_now_maps_to_wall_clock_now() {
        let clock = Clock::new();
        let wall_ms = clock_ns(libc::CLOCK_REALTIME) / 1_000_000;
        let mapped = clock.unix_ms(clock_ns(libc::CLOCK_MONOTONIC));
        assert!(mapped.abs_diff(wall_ms) < 1_000, "{mapped} vs {wall_ms}");
    }
}

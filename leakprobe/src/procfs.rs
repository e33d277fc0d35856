//! What the daemon reads from `/proc`, and the clocks.

use std::fs;

/// The name of a process (`/proc/PID/comm`), if it still exists.
pub fn comm(pid: u32) -> Option<String> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_owned())
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
    fn monotonic_now_maps_to_wall_clock_now() {
        let clock = Clock::new();
        let wall_ms = clock_ns(libc::CLOCK_REALTIME) / 1_000_000;
        let mapped = clock.unix_ms(clock_ns(libc::CLOCK_MONOTONIC));
        assert!(mapped.abs_diff(wall_ms) < 1_000, "{mapped} vs {wall_ms}");
    }
}

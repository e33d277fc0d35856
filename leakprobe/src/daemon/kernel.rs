//! What tier 1, the budget and the state owner do to the kernel, behind two small traits: the maps they write
//! and read (per-process sampling intervals, per-process call counts, the daemon's counters) and the commands
//! that attach and detach per-process probes (sent to the discovery thread, which owns the probes). The daemon
//! runs them on aya's map handles ([`AyaTier1`], [`PerCpuArray`]); unit tests run the same logic on a fake that
//! records every call (`kernel/fake.rs`), without root.

use std::os::fd::OwnedFd;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap};
use leakprobe_common::Counter;

use super::discovery::{Command, DiscoveryHandle};

#[cfg(test)]
pub(super) mod fake;

/// Tier 1's side of the kernel: per-process sampling intervals and call counts, and per-process probes.
pub trait Tier1Kernel: Send {
    /// Sets process `pid`'s sampling interval (0: every allocation), which overrides the daemon's.
    fn set_interval(&mut self, pid: u32, interval: u64) -> Result<(), String>;
    /// Forgets process `pid`'s interval (absent already is fine).
    fn clear_interval(&mut self, pid: u32);
    /// Allocator calls process `pid` made through a probe, summed over CPUs; `None` when not counted.
    fn calls(&self, pid: u32) -> Option<u64>;
    /// Asks for process `pid`'s probes to be attached; the outcome comes back as `Request::Tier1Attached`.
    /// `false` when nobody can attach any more (shutting down).
    fn attach(&mut self, pid: u32) -> bool;
    /// Asks for process `pid`'s probes to be detached (taken in order after an attach of the same process).
    fn detach(&mut self, pid: u32);
    /// Asks for the programs' run-time statistics; they come back as `Request::ProgramStats`. `false` when
    /// nobody can answer any more (shutting down).
    fn ask_program_stats(&mut self) -> bool;
    /// Whether BPF run-time statistics are on (else the budget sees only the daemon's own CPU).
    fn bpf_stats(&self) -> bool;
}

/// The daemon's counters the kernel keeps ([`Counter`]).
pub trait KernelCounters: Send {
    /// Counter `counter`, summed over CPUs.
    fn read(&self, counter: Counter) -> Result<u64, String>;
}

impl KernelCounters for PerCpuArray<MapData, u64> {
    fn read(&self, counter: Counter) -> Result<u64, String> {
        self.get(&(counter as u32), 0).map(|values| values.iter().sum()).map_err(|e| format!("{e}"))
    }
}

/// [`Tier1Kernel`] on the loaded programs' maps and the discovery thread.
pub struct AyaTier1 {
    pid_sample_interval: BpfHashMap<MapData, u32, u64>,
    pid_calls: PerCpuHashMap<MapData, u32, u64>,
    discovery: DiscoveryHandle,
    /// Keeps BPF run-time statistics on while held (`BPF_ENABLE_STATS`).
    stats_fd: Option<OwnedFd>,
}

impl AyaTier1 {
    /// Turns BPF run-time statistics on (logged when refused).
    pub fn new(
        pid_sample_interval: BpfHashMap<MapData, u32, u64>,
        pid_calls: PerCpuHashMap<MapData, u32, u64>,
        discovery: DiscoveryHandle,
    ) -> Self {
        let stats_fd = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => Some(fd),
            Err(err) => {
                log::warn!("BPF run-time statistics are off ({err}): the CPU budget sees only the daemon's own CPU");
                None
            }
        };
        Self { pid_sample_interval, pid_calls, discovery, stats_fd }
    }
}

impl Tier1Kernel for AyaTier1 {
    fn set_interval(&mut self, pid: u32, interval: u64) -> Result<(), String> {
        self.pid_sample_interval.insert(pid, interval, 0).map_err(|e| format!("{e}"))
    }

    fn clear_interval(&mut self, pid: u32) {
        let _ = self.pid_sample_interval.remove(&pid);
    }

    fn calls(&self, pid: u32) -> Option<u64> {
        self.pid_calls.get(&pid, 0).ok().map(|values| values.iter().sum())
    }

    fn attach(&mut self, pid: u32) -> bool {
        self.discovery.send(Command::AttachPid(pid))
    }

    fn detach(&mut self, pid: u32) {
        // Fails only once the thread is gone (shutting down), and its probes with it.
        let _ = self.discovery.send(Command::DetachPid(pid));
    }

    fn ask_program_stats(&mut self) -> bool {
        self.discovery.send(Command::ProgramStats)
    }

    fn bpf_stats(&self) -> bool {
        self.stats_fd.is_some()
    }
}

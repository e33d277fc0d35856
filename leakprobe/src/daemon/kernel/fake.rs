//! A kernel for unit tests: records what tier 1 asks of it, keeps the intervals it was given, and answers
//! call counts and refusals as the test sets them. Clones share one record.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use leakprobe_common::Counter;

use super::{KernelCounters, Tier1Kernel};

/// One thing asked of the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    SetInterval(u32, u64),
    ClearInterval(u32),
    Attach(u32),
    Detach(u32),
    ProgramStats,
}

/// What the fake kernel holds and was asked.
#[derive(Debug, Default)]
pub struct Record {
    pub calls: Vec<Call>,
    /// The intervals set and not cleared, as the kernel's map holds them.
    pub intervals: HashMap<u32, u64>,
    /// Call counts per process, as the probes would count them (set by the test).
    pub counts: HashMap<u32, u64>,
    /// Refuse to set intervals (a full map).
    pub refuse_intervals: bool,
    /// The discovery thread is gone: attach commands fail.
    pub gone: bool,
}

#[derive(Clone, Debug, Default)]
pub struct FakeKernel(Arc<Mutex<Record>>);

impl FakeKernel {
    pub fn record(&self) -> MutexGuard<'_, Record> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The calls made since the last `take`.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut self.record().calls)
    }
}

impl Tier1Kernel for FakeKernel {
    fn set_interval(&mut self, pid: u32, interval: u64) -> Result<(), String> {
        let mut record = self.record();
        record.calls.push(Call::SetInterval(pid, interval));
        if record.refuse_intervals {
            return Err("the map is full".into());
        }
        record.intervals.insert(pid, interval);
        Ok(())
    }

    fn clear_interval(&mut self, pid: u32) {
        let mut record = self.record();
        record.calls.push(Call::ClearInterval(pid));
        record.intervals.remove(&pid);
    }

    fn calls(&self, pid: u32) -> Option<u64> {
        self.record().counts.get(&pid).copied()
    }

    fn attach(&mut self, pid: u32) -> bool {
        let mut record = self.record();
        record.calls.push(Call::Attach(pid));
        !record.gone
    }

    fn detach(&mut self, pid: u32) {
        self.record().calls.push(Call::Detach(pid));
    }

    fn ask_program_stats(&mut self) -> bool {
        let mut record = self.record();
        record.calls.push(Call::ProgramStats);
        !record.gone
    }

    fn bpf_stats(&self) -> bool {
        true
    }
}

/// Counters that are all zero.
pub struct ZeroCounters;

impl KernelCounters for ZeroCounters {
    fn read(&self, _counter: Counter) -> Result<u64, String> {
        Ok(0)
    }
}

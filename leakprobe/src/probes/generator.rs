//! The ingest benchmark's event generator (`leakprobe-ebpf/src/probes/generator.rs`), for
//! `leakprobe bench-ingest` only: a raw tracepoint program that is never attached, run with
//! `BPF_PROG_TEST_RUN` (which aya 0.14 has no API for), each run writing a given number of allocation records
//! (and frees) into the daemon's ring buffer through the probes' own reserve and submit functions.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::programs::ProgramFd;
use aya_obj::generated::{bpf_attr, bpf_cmd};
use leakprobe_common::generator::{CONTEXT_WORDS, MAX_RUN, Shape};

use super::session::sys_bpf;

/// The loaded generator.
pub struct Generator {
    prog: ProgramFd,
}

impl Generator {
    pub(super) fn new(prog: ProgramFd) -> Self {
        Self { prog }
    }

    /// Runs the program once, on the calling thread's CPU: `allocations` (at most [`MAX_RUN`]) allocation
    /// records of `shape` for process `tgid`, numbered from sequence number `first` (with their frees for
    /// [`Shape::Pairs`]). Returns the records submitted; the others found the ring buffer full, which the kernel
    /// counted (`ringbuf_full_alloc`, `ringbuf_full_free`).
    pub fn run(&self, shape: Shape, tgid: u32, first: u64, allocations: u32) -> std::io::Result<u32> {
        let context: [u64; CONTEXT_WORDS] = [u64::from(allocations.min(MAX_RUN)), shape as u64, u64::from(tgid), first];
        // SAFETY: `bpf_attr` is a C union of integers: all zeroes is its documented initial state.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writes to fields of a zeroed union of plain integers; `context` outlives the syscall below. A
        // valid fd is never negative.
        unsafe {
            let test = &mut attr.test;
            test.prog_fd = u32::try_from(self.prog.as_fd().as_raw_fd()).unwrap_or(u32::MAX);
            test.ctx_in = context.as_ptr() as u64;
            test.ctx_size_in = u32::try_from(size_of_val(&context)).unwrap_or(u32::MAX);
        }
        sys_bpf(bpf_cmd::BPF_PROG_TEST_RUN, &mut attr)?;
        // SAFETY: the kernel wrote the program's return value into the union's `test` member.
        Ok(unsafe { attr.test.retval })
    }
}

//! The ingest benchmark's event generator (`leakprobe bench-ingest`): a program of the eBPF object run with
//! `BPF_PROG_TEST_RUN`, never attached, that writes allocation and free records into the ring buffer as the
//! allocator probes do, for a process that allocates nothing of the kind (the benchmark's own: see
//! `leakprobe bench-ingest`). Its records are shaped here so that the daemon side (the bench
//! command and its tests) knows exactly what the table must hold afterwards.
//!
//! Sequence number `seq` (counted from 0 over a whole benchmark step) stands for the allocation
//! [`addr`]`(seq)` of [`size`]`(seq)` bytes whose stack is stack number `seq % STACKS`, of [`FRAMES`]
//! frames ([`frame`]).

/// How a run's records are shaped: the first argument of the program's context after the count.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One allocation per record, never freed: the table grows by one live allocation per event.
    Leaks = 0,
    /// An allocation and then its free: two records, the table does not grow.
    Pairs = 1,
}

/// Words of the program's context (`BPF_PROG_TEST_RUN`'s `ctx_in`, read as raw tracepoint arguments):
/// allocations to emit in this run, the [`Shape`], the tgid, and the sequence number of the first allocation.
pub const CONTEXT_WORDS: usize = 4;

/// Allocations per run at most (each run is one `bpf_loop`, with preemption off: keep it short).
pub const MAX_RUN: u32 = 1 << 16;

/// `comm` of the generated records.
pub const COMM: [u8; 16] = *b"ingest-gen\0\0\0\0\0\0";

/// Distinct stacks the allocations cycle through.
pub const STACKS: u64 = 64;

/// Frames per stack.
pub const FRAMES: u32 = 8;

/// Address of allocation `seq`: distinct for every sequence number, 32-byte aligned, in a user-space range.
pub const fn addr(seq: u64) -> u64 {
    0x7f00_0000_0000 + seq * 32
}

/// Requested bytes of allocation `seq`: 16 B to 4 KiB, as the bench's C workload asks for.
pub const fn size(seq: u64) -> u64 {
    16 + (seq * 97) % 4080
}

/// Frame `n` (innermost first) of stack `stack`.
pub const fn frame(stack: u64, n: u64) -> u64 {
    0x5555_0000_0000 + stack * 0x100 + n * 0x1_0000
}

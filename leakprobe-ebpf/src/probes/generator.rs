//! The ingest benchmark's event generator (`leakprobe bench-ingest`), never attached to anything: the
//! benchmark runs it with `BPF_PROG_TEST_RUN`, and each run writes a given number of allocation records (and,
//! in the `pairs` shape, their frees) in the name of a process the caller gives (the benchmark's own), shaped by
//! `leakprobe_common::generator`, far faster than allocations under uprobes could, so the daemon's consumer path
//! can be measured end to end.
//!
//! Why it lives in this object rather than in one of its own: it must fill the daemon's own ring buffer
//! (`EVENTS`) and counters (`COUNTERS`), and through the very functions the allocator probes use
//! ([`reserve_alloc`], [`write_alloc`], [`submit_alloc`], [`reserve_free`], [`submit_free`]), so that its records
//! have the probes' exact layout and a full ring buffer is counted where it is in production
//! (`ringbuf_full_alloc`, `ringbuf_full_free`). `leakprobe run` never loads it (`Probes::load` loads programs by
//! name), and a raw tracepoint program that is not attached cannot run but by `BPF_PROG_TEST_RUN`, which needs
//! `CAP_BPF` or root.
//!
//! What it leaves out of the probes' work, on purpose: the `LIVE` map (no process made these allocations; a
//! free is emitted without looking its address up) and the stack walk (the frames are written from the
//! sequence number). Those are producer costs, paid in the traced process; the consumer sees the same records.

use core::ffi::c_void;

use aya_ebpf::{helpers::generated::bpf_loop, programs::RawTracePointContext};
use leakprobe_common::{
    ALLOC_FRAME_CLASSES, AllocEvent, AllocFn, EventHeader, EventKind, alloc_record_bytes,
    generator::{self, COMM, FRAMES, MAX_RUN, STACKS, Shape},
};

use super::{
    alloc::{reserve_alloc, submit_alloc, write_alloc},
    free::{reserve_free, submit_free},
};
use crate::maps::now_ns;

/// The size class of a record with `FRAMES` frames (the smallest that holds them).
const FRAMES_CLASS: usize = ALLOC_FRAME_CLASSES[0];
const _: () = assert!(FRAMES as usize <= FRAMES_CLASS);

/// What one run emits, shared with the loop's callback.
#[repr(C)]
struct Run {
    /// Sequence number of the run's first allocation.
    first: u64,
    /// A [`Shape`] as `u64`.
    shape: u64,
    tgid: u32,
    /// Records submitted so far.
    submitted: u32,
}

/// The program: context words [allocations, shape, tgid, first sequence number] (see
/// `leakprobe_common::generator::CONTEXT_WORDS`); returns the records it submitted. A plain function in a
/// `raw_tp` section because aya-ebpf's `#[raw_tracepoint]` always returns 0.
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp")]
pub extern "C" fn ingest_generator(ctx: *mut c_void) -> u32 {
    let ctx = RawTracePointContext::new(ctx);
    let allocations: u64 = ctx.arg(0);
    let mut run = Run { first: ctx.arg(3), shape: ctx.arg(1), tgid: ctx.arg::<u64>(2) as u32, submitted: 0 };
    let allocations = allocations.min(u64::from(MAX_RUN)) as u32;
    // SAFETY: `emit` has the callback signature `bpf_loop` expects, and `run` outlives the call.
    unsafe { bpf_loop(allocations, emit as *mut c_void, (&raw mut run).cast(), 0) };
    run.submitted
}

/// One allocation (and its free, for `pairs`); always goes on (returns 0), counting what the ring buffer
/// could not take as the probes do.
#[allow(
    clippy::cast_ptr_alignment,
    reason = "ring-buffer records are 8-byte aligned, as is `AllocEvent` (asserted in leakprobe-common)"
)]
extern "C" fn emit(index: u64, run: *mut c_void) -> i64 {
    // SAFETY: `run` is the `Run` the program passed to `bpf_loop`.
    let run = unsafe { &mut *run.cast::<Run>() };
    let seq = run.first + index;
    let addr = generator::addr(seq);
    // As the probes write a stack of `FRAMES` frames: a record of the smallest class that holds them.
    let Some(mut entry) = reserve_alloc(alloc_record_bytes(FRAMES_CLASS)) else { return 0 };
    let event = entry.as_mut_ptr().cast::<AllocEvent>();
    let header = EventHeader { kind: EventKind::Alloc as u32, pad: 0, ts_ns: now_ns(), tgid: run.tgid, tid: run.tgid };
    let stack = seq % STACKS;
    // SAFETY: `event` points to a reserved record of the head and `FRAMES_CLASS` frames, every byte written here
    // is in it; ring-buffer records are 8-byte aligned.
    unsafe {
        write_alloc(event, header, addr, generator::size(seq), 0, AllocFn::Malloc as u32, COMM);
        let frames = (&raw mut (*event).frames).cast::<u64>();
        for n in 0..FRAMES {
            *frames.add(n as usize) = generator::frame(stack, u64::from(n));
        }
        (*event).nframes = FRAMES;
        (*event).flags = 0;
    }
    submit_alloc(entry);
    run.submitted += 1;
    if run.shape == Shape::Pairs as u64 {
        let Some(entry) = reserve_free() else { return 0 };
        submit_free(entry, run.tgid, run.tgid, addr);
        run.submitted += 1;
    }
    0
}

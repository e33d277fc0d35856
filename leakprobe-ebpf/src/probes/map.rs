//! Tier 0: growth of anonymous mappings, on `syscalls/sys_enter_mmap` and `syscalls/sys_exit_brk`.
//!
//! Faults say which code first touched memory; these say which code asked for it: a private anonymous writable
//! `mmap` (Go's and Java's heaps, glibc's large blocks and arenas' growth, thread stacks), or a `brk` that raised
//! the program break (glibc's main heap). Every growth is counted; a Poisson sample over the mapped bytes, with
//! tier 0's interval, is reported with the user stack. One short program run per `mmap` or `brk` call: both are
//! rare next to `malloc` (allocators map memory in large steps).
//!
//! In a registered `CPython` process a sampled record ends with the calling thread's Python frames, as a fault's
//! does (see `fault.rs`).
//!
//! `munmap` is not traced: what a process holds mapped is read from `/proc/PID/status` (`VmData`) at each tick,
//! which nets out unmaps without a per-call program or a per-mapping map in the kernel.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::tracepoint,
    programs::TracePointContext,
};
use leakprobe_common::{
    Countdown, Counter, EventHeader, EventKind, FAULT_FLAG_PY_FRAMES, MAP_ANONYMOUS, MAP_SHARED, MapEvent, MapSource,
    NO_FIELD, PROT_WRITE, PyFrames,
};

use super::fault::user_stack;
use crate::maps::{BRK_END, EVENTS, count, fault_interval, map_fields, now_ns, sample, submit_flags, traced};

#[tracepoint]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    let _ = try_sys_enter_mmap(&ctx);
    0
}

fn try_sys_enter_mmap(ctx: &TracePointContext) -> Result<(), ()> {
    let fields = map_fields();
    if fields.mmap_len == NO_FIELD || fields.mmap_prot == NO_FIELD || fields.mmap_flags == NO_FIELD {
        return Err(());
    }
    // SAFETY: reads the record through the helper at offsets the loader read from the format file.
    let flags = unsafe { ctx.read_at::<u64>(fields.mmap_flags as usize) }.map_err(|_| ())?;
    if flags & MAP_ANONYMOUS == 0 || flags & MAP_SHARED != 0 {
        return Ok(());
    }
    // SAFETY: as above.
    let prot = unsafe { ctx.read_at::<u64>(fields.mmap_prot as usize) }.map_err(|_| ())?;
    if prot & PROT_WRITE == 0 {
        return Ok(());
    }
    // SAFETY: as above.
    let len = unsafe { ctx.read_at::<u64>(fields.mmap_len as usize) }.map_err(|_| ())?;
    grown(ctx, len, MapSource::Mmap)
}

#[tracepoint]
pub fn sys_exit_brk(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit_brk(&ctx);
    0
}

fn try_sys_exit_brk(ctx: &TracePointContext) -> Result<(), ()> {
    let fields = map_fields();
    if fields.brk_ret == NO_FIELD {
        return Err(());
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !traced(tgid) {
        return Ok(());
    }
    // SAFETY: as above.
    let end = unsafe { ctx.read_at::<u64>(fields.brk_ret as usize) }.map_err(|_| ())?;
    // The first break seen of a process (its `brk(0)` at start, or its first call after the daemon started)
    // is only remembered: a rise needs a known start.
    let previous = BRK_END.get_ptr(tgid).map(|p| {
        // SAFETY: a valid map value pointer; values are replaced whole.
        unsafe { *p }
    });
    if previous != Some(end) {
        let _ = BRK_END.insert(tgid, end, 0);
    }
    match previous {
        Some(start) if end > start => grown(ctx, end - start, MapSource::Brk),
        _ => Ok(()),
    }
}

/// Counts `len` bytes of mapping growth of the current process and reports it with its stack if sampled.
#[inline(always)]
#[allow(
    clippy::cast_ptr_alignment,
    reason = "ring-buffer records are 8-byte aligned; `MapEvent` is 8-byte aligned and a multiple of 8 in size (asserted in leakprobe-common), so is the `PyFrames` after it"
)]
fn grown(ctx: &TracePointContext, len: u64, source: MapSource) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if len == 0 || !traced(tgid) {
        return Ok(());
    }
    count(Counter::Maps);
    if !sample(Countdown::Map, fault_interval(), len) {
        return Ok(());
    }
    let py = super::python::registered(tgid);
    let size = if py.is_some() { size_of::<MapEvent>() + size_of::<PyFrames>() } else { size_of::<MapEvent>() };
    let Some(mut entry) = EVENTS.reserve_bytes(size, 0) else {
        count(Counter::RingBufFullMap);
        return Err(());
    };
    let event = entry.as_mut_ptr().cast::<MapEvent>();
    // SAFETY: `event` points to reserved ring-buffer memory at least the size of a `MapEvent` (8-byte aligned, as
    // ring-buffer records are); every field the consumer reads is written below (frames beyond `nframes` are not
    // read), and the `PyFrames` tail when there is one.
    unsafe {
        (*event).header =
            EventHeader { kind: EventKind::Map as u32, pad: 0, ts_ns: now_ns(), tgid, tid: pid_tgid as u32 };
        (*event).len = len;
        (*event).source = source as u32;
        (*event).pad = 0;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        let (nframes, mut flags) = user_stack(ctx, tgid, &raw mut (*event).frames);
        (*event).nframes = nframes;
        if let Some(py) = &py {
            flags |= FAULT_FLAG_PY_FRAMES;
            super::python::walk(py, pid_tgid as u32, entry.as_mut_ptr().add(size_of::<MapEvent>()).cast());
        }
        (*event).flags = flags;
    }
    entry.submit(submit_flags());
    count(Counter::MapsSampled);
    Ok(())
}

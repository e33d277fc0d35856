//! The OOM killer: `oom/mark_victim` fires when it has chosen a victim, before the victim exits. The daemon
//! snapshots what the victim held when this event arrives, ahead of the exit event that purges it.
//!
//! The program runs in the context of the task that ran out of memory, which need not be the victim: every
//! value comes from the record, at offsets the loader read from the tracepoint's format file.

use aya_ebpf::{
    EbpfContext as _, helpers::generated::bpf_probe_read_kernel_str, macros::tracepoint, programs::TracePointContext,
};
use leakprobe_common::{
    Counter, EventHeader, EventKind, NO_FIELD, OOM_HAS_COMM, OOM_HAS_OOM_SCORE_ADJ, OOM_HAS_RSS, OOM_HAS_TOTAL_VM,
    OOM_HAS_UID, OomEvent,
};

use crate::maps::{EVENTS, count, now_ns, oom_fields};

/// Reads a `T` at `offset` of the record, `None` when the field is absent or unreadable.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset == NO_FIELD {
        return None;
    }
    // SAFETY: reads the record through the helper, at an offset (and size) the loader checked in the format file.
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

#[tracepoint]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    let fields = oom_fields();
    let Some(pid) = field::<i32>(&ctx, fields.pid) else {
        count(Counter::OomLost);
        return 0;
    };
    let pid = pid.cast_unsigned();
    let header = EventHeader { kind: EventKind::Oom as u32, pad: 0, ts_ns: now_ns(), tgid: pid, tid: pid };
    let mut event = OomEvent::bare(header);
    if let Some(value) = field::<u64>(&ctx, fields.total_vm) {
        event.total_vm_kb = value;
        event.has |= OOM_HAS_TOTAL_VM;
    }
    if let (Some(anon), Some(file), Some(shmem)) =
        (field::<u64>(&ctx, fields.anon_rss), field::<u64>(&ctx, fields.file_rss), field::<u64>(&ctx, fields.shmem_rss))
    {
        (event.anon_rss_kb, event.file_rss_kb, event.shmem_rss_kb) = (anon, file, shmem);
        event.has |= OOM_HAS_RSS;
    }
    if let Some(uid) = field::<u32>(&ctx, fields.uid) {
        event.uid = uid;
        event.has |= OOM_HAS_UID;
    }
    if let Some(adj) = field::<i16>(&ctx, fields.oom_score_adj) {
        event.oom_score_adj = i32::from(adj);
        event.has |= OOM_HAS_OOM_SCORE_ADJ;
    }
    // `comm` is a `__data_loc char[]`: a u32 holding `len << 16 | offset`, the offset from the record's start.
    if let Some(loc) = field::<u32>(&ctx, fields.comm) {
        let offset = (loc & 0xffff) as usize;
        // SAFETY: the source is inside the record the kernel handed us (the helper faults safely otherwise); the
        // destination is a 16-byte array, and the helper writes at most its size, NUL included.
        let copied = unsafe {
            bpf_probe_read_kernel_str(
                event.comm.as_mut_ptr().cast(),
                event.comm.len() as u32,
                ctx.as_ptr().cast::<u8>().add(offset).cast(),
            )
        };
        if copied > 0 {
            event.has |= OOM_HAS_COMM;
        }
    }
    let Some(mut entry) = EVENTS.reserve::<OomEvent>(0) else {
        count(Counter::OomLost);
        return 0;
    };
    entry.write(event);
    entry.submit(u64::from(aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP));
    0
}

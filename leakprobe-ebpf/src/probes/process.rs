//! Process lifecycle: the daemon purges a process's state when its last thread exits or when it execs.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::tracepoint,
    programs::TracePointContext,
};
use leakprobe_common::{Counter, EventHeader, EventKind, NO_FIELD, ProcessEvent};

use crate::maps::{
    BRK_END, EVENTS, INFLIGHT, PY_PROCS, UNSEEN_FREES, UNWIND_PROCS, count, count_unseen_frees, exit_group_dead_offset,
    now_ns, submit_flags,
};

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // A thread that dies inside an allocator (killed mid-call) leaves no in-flight record behind.
    let _ = INFLIGHT.remove(pid_tgid);
    let offset = exit_group_dead_offset();
    let group_dead = if offset == NO_FIELD {
        // Kernels without `group_dead`: the leader's exit stands for the process's.
        pid_tgid as u32 == (pid_tgid >> 32) as u32
    } else {
        // SAFETY: reads the tracepoint record through the helper at the offset read from its format file.
        unsafe { ctx.read_at::<u8>(offset as usize) }.unwrap_or(0) != 0
    };
    if group_dead {
        // The next process with this tgid starts with a break of its own.
        let _ = BRK_END.remove((pid_tgid >> 32) as u32);
        let _ = UNWIND_PROCS.remove((pid_tgid >> 32) as u32);
        let _ = PY_PROCS.remove((pid_tgid >> 32) as u32);
        emit(pid_tgid, EventKind::Exit);
    }
    0
}

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // The new image has a new break.
    let _ = BRK_END.remove((pid_tgid >> 32) as u32);
    // Its mappings are gone; the daemon's scan after exec writes the new image's.
    let _ = UNWIND_PROCS.remove((pid_tgid >> 32) as u32);
    let _ = PY_PROCS.remove((pid_tgid >> 32) as u32);
    // Count the new image's frees of never-reported addresses (the daemon removes the entry at exit; a second
    // exec keeps adding to it). `BPF_NOEXIST`: 1.
    let tgid = (pid_tgid >> 32) as u32;
    if count_unseen_frees() && UNSEEN_FREES.get_ptr(tgid).is_none() && UNSEEN_FREES.insert(tgid, 0, 1).is_err() {
        count(Counter::UnseenFreesMapFull);
    }
    emit(pid_tgid, EventKind::Exec);
    0
}

fn emit(pid_tgid: u64, kind: EventKind) {
    let Some(mut entry) = EVENTS.reserve::<ProcessEvent>(0) else {
        count(Counter::RingBufFullProcess);
        return;
    };
    let header =
        EventHeader { kind: kind as u32, pad: 0, ts_ns: now_ns(), tgid: (pid_tgid >> 32) as u32, tid: pid_tgid as u32 };
    entry.write(ProcessEvent { header, comm: bpf_get_current_comm().unwrap_or([0; 16]) });
    entry.submit(submit_flags());
}

//! The probe on `free`.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::uprobe, programs::ProbeContext};

use super::alloc::emit_free;
use leakprobe_common::COST_EMPTY;

use crate::maps::{cost, own_tgid};

#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    if cost(COST_EMPTY) {
        return 0;
    }
    let addr: u64 = ctx.arg(0).unwrap_or(0);
    if addr == 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid != own_tgid() {
        emit_free(tgid, pid_tgid as u32, addr);
    }
    0
}

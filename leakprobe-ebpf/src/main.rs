//! leakprobe's eBPF object: allocator uprobes, `free`, process lifecycle tracepoints, the OOM killer's, and
//! user page faults (tier 0); and the ingest benchmark's event generator, which `leakprobe run` never loads.
// On the host (`cargo clippy --workspace`), feature unification links std into this crate's graph: the
// binary is `no_std` only for the BPF target it is built for.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// 64-bit atomic adds (`maps::live_filter_add`): the BPF target has no compare-and-swap, so `core` offers no
// atomic arithmetic there; its eBPF build uses a nightly toolchain already.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", expect(internal_features, reason = "the atomic-add intrinsic, see above"))]
#![expect(clippy::inline_always, reason = "small helpers are inlined into every program: no BPF-to-BPF call frames")]
#![expect(clippy::needless_pass_by_value, reason = "aya-ebpf's program macros pass the context by value")]
#![expect(clippy::similar_names, reason = "tgid and tid are the kernel's names")]
#![expect(
    clippy::cast_possible_truncation,
    reason = "the kernel packs values into u64 (pid_tgid, return registers): the truncation is the decoding"
)]

mod maps;
mod probes;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach a panic, so this is never called.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// The programs only run in the kernel; this host entry point exists so the workspace lints on the host.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

//! Declares `bpf_target_arch`, used to read the stack pointer from `pt_regs`.
fn main() -> aya_build::Result<()> {
    aya_build::emit_bpf_target_arch_cfg()
}

//! Where in a function to put its probe.
//!
//! A uprobe replaces an instruction with a breakpoint; when it fires, the kernel must then run the original
//! instruction. A few it emulates cheaply (`push reg`, `jmp`/`jcc`/`call rel`, a one-byte `nop`); every
//! other one is single-stepped out of line, which costs several microseconds per call. glibc 2.36's `free`
//! starts with `test %rdi,%rdi`: probing it at +0 costs about 6.5 µs per call, at its `je` (+3) about 0.6 µs.
//!
//! The rule: decode the function's first instructions and take the first one the kernel emulates, provided
//! that every instruction before it
//! - falls through to the next one (no branch, call or return: the site is reached on every call),
//! - writes none of the argument registers the program reads, and
//! - does not move the stack pointer (a return probe reads the return address at `[rsp]`).
//!
//! Otherwise the probe stays at the symbol (+0). Sites are always instruction boundaries found by decoding,
//! never guessed offsets.

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Formatter as _, GasFormatter, Instruction, InstructionInfoFactory,
    Mnemonic, OpAccess, OpKind, Register,
};

/// Bytes of a function decoded at most when looking for a site.
pub const WINDOW: usize = 32;

/// A probe site inside a function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// Offset from the function's start.
    pub offset: u64,
    /// The instruction there, in AT&T syntax (for `status`).
    pub instruction: String,
    /// Whether the kernel emulates it (false: the +0 fallback, single-stepped).
    pub emulated: bool,
}

/// Whether the kernel emulates `instr` when a uprobe sits on it (arch/x86/kernel/uprobes.c).
fn emulated(instr: &Instruction) -> bool {
    match instr.flow_control() {
        FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch | FlowControl::Call => {
            // Relative branches only: indirect ones are single-stepped.
            matches!(instr.op0_kind(), OpKind::NearBranch64 | OpKind::NearBranch32 | OpKind::NearBranch16)
        }
        FlowControl::Next => {
            (instr.mnemonic() == Mnemonic::Push
                && instr.op0_kind() == OpKind::Register
                && instr.op0_register().is_gpr64())
                || (instr.code() == Code::Nopd && instr.len() == 1)
                || (instr.code() == Code::Nopw && instr.len() == 1)
        }
        _ => false,
    }
}

/// The site of a function whose code starts with `code` (at virtual address `ip`), for a program that
/// reads the argument registers `args`.
pub fn choose(code: &[u8], ip: u64, args: &[Register]) -> Site {
    let mut decoder = Decoder::with_ip(64, &code[..code.len().min(WINDOW)], ip, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    let mut formatter = GasFormatter::new();
    let text = |instr: &Instruction, formatter: &mut GasFormatter| {
        let mut out = String::new();
        formatter.format(instr, &mut out);
        out
    };
    let mut first = None;
    for instr in &mut decoder {
        if instr.is_invalid() {
            break;
        }
        let offset = instr.ip() - ip;
        if first.is_none() {
            first = Some(text(&instr, &mut formatter));
        }
        if emulated(&instr) {
            return Site { offset, instruction: text(&instr, &mut formatter), emulated: true };
        }
        if instr.flow_control() != FlowControl::Next {
            break;
        }
        let writes = info.info(&instr).used_registers().iter().any(|used| {
            matches!(
                used.access(),
                OpAccess::Write | OpAccess::ReadWrite | OpAccess::CondWrite | OpAccess::ReadCondWrite
            ) && (used.register().full_register() == Register::RSP
                || args.iter().any(|arg| used.register().full_register() == arg.full_register()))
        });
        if writes {
            break;
        }
    }
    Site { offset: 0, instruction: first.unwrap_or_default(), emulated: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RDI: &[Register] = &[Register::RDI];

    #[test]
    fn free_is_probed_at_its_branch() {
        // test %rdi,%rdi; je +0xc5; push %rbp
        let code = [0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0x00, 0x00, 0x00, 0x55];
        let site = choose(&code, 0x98ef0, RDI);
        assert_eq!((site.offset, site.emulated), (3, true), "{site:?}");
        assert!(site.instruction.starts_with("je"), "{site:?}");
    }

    #[test]
    fn a_leading_push_is_the_site() {
        // malloc: push %r12; push %rbp
        let site = choose(&[0x41, 0x54, 0x55], 0x1000, RDI);
        assert_eq!((site.offset, site.emulated), (0, true), "{site:?}");
    }

    #[test]
    fn rip_relative_compare_then_push() {
        // posix_memalign: cmpb $0x0,0x140201(%rip); push %r12
        let code = [0x80, 0x3d, 0x01, 0x02, 0x14, 0x00, 0x00, 0x41, 0x54];
        let args = [Register::RDI, Register::RSI, Register::RDX];
        assert_eq!(choose(&code, 0x9a280, &args).offset, 7);
    }

    #[test]
    fn an_argument_written_first_keeps_the_symbol() {
        // reallocarray: mov %rsi,%rax; mul %rdx (writes rdx); mov %rax,%rsi; jo ...
        let code = [0x48, 0x89, 0xf0, 0x48, 0xf7, 0xe2, 0x48, 0x89, 0xc6, 0x70, 0x05];
        let site = choose(&code, 0x9a7e0, &[Register::RDI, Register::RSI, Register::RDX]);
        assert_eq!((site.offset, site.emulated), (0, false), "{site:?}");
        assert!(site.instruction.starts_with("mov"), "{site:?}");
    }

    #[test]
    fn a_stack_move_first_keeps_the_symbol() {
        // sub $0x18,%rsp; push %rbx: a return probe after the sub would read the wrong slot.
        let site = choose(&[0x48, 0x83, 0xec, 0x18, 0x53], 0x1000, RDI);
        assert_eq!((site.offset, site.emulated), (0, false), "{site:?}");
    }

    #[test]
    fn an_indirect_jump_is_not_emulated() {
        // jmp *%rax
        let site = choose(&[0xff, 0xe0], 0x1000, RDI);
        assert!(!site.emulated, "{site:?}");
    }

    #[test]
    fn garbage_falls_back_to_the_symbol() {
        assert_eq!(choose(&[], 0x1000, RDI).offset, 0);
        assert_eq!(choose(&[0x0f, 0x0b], 0x1000, RDI).offset, 0, "ud2 stops the walk");
    }
}

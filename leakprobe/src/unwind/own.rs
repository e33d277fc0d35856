//! This process's own stack as the return probe would capture it: registers and a copy of the stack. For the
//! unwinder's tests and its micro-benchmark (`leakprobe bench-unwind`), which unwind real frames of a real
//! binary without a probe.

use std::hint::black_box;

use leakprobe_common::UserStack;

/// The registers at the call site of this (inlined) function, in the calling function, and up to `copy` bytes
/// of the stack from the stack pointer (fewer where the stack ends).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::inline_always, reason = "the registers must be the caller's: this must not be a call of its own")]
pub fn capture(copy: usize) -> (UserStack, Vec<u8>) {
    let (ip, sp, bp): (u64, u64, u64);
    // SAFETY: reads three registers into outputs; no memory is touched, the stack is left as it is.
    unsafe {
        std::arch::asm!(
            "lea {ip}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            ip = out(reg) ip,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags),
        );
    }
    let stack = read_own(sp, copy);
    let len = u32::try_from(stack.len()).unwrap_or(u32::MAX);
    (UserStack { ip, sp, bp, lr: 0, len, pad: 0 }, stack)
}

/// Up to `len` bytes of this process's memory at `addr`, stopping at the first unmapped page
/// (`process_vm_readv` on itself: a fault ends the read instead of killing the process).
fn read_own(addr: u64, len: usize) -> Vec<u8> {
    let Ok(addr) = usize::try_from(addr) else { return Vec::new() };
    let mut buf = vec![0u8; len];
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: len };
    // One piece per page: the kernel stops at the first piece it cannot read and returns what it read.
    let mut remote = Vec::new();
    let mut at = addr;
    let end = addr.saturating_add(len);
    while at < end {
        let next = ((at & !0xfff) + 4096).min(end);
        remote.push(libc::iovec { iov_base: at as *mut libc::c_void, iov_len: next - at });
        at = next;
    }
    // SAFETY: `local` covers `buf`, which outlives the call; `remote` only names addresses to read.
    let read = unsafe {
        libc::process_vm_readv(libc::getpid(), &raw const local, 1, remote.as_ptr(), remote.len() as libc::c_ulong, 0)
    };
    buf.truncate(usize::try_from(read).unwrap_or(0));
    buf
}

/// A stack `depth` calls deep (plus the caller's): captured at the innermost call.
#[inline(never)]
pub fn capture_at_depth(depth: u32, copy: usize) -> (UserStack, Vec<u8>) {
    if black_box(depth) == 0 {
        return capture(copy);
    }
    let result = capture_at_depth(depth - 1, copy);
    // Not a tail call: this frame stays on the stack while the callee captures.
    black_box(result)
}

//! The user-stack walk from the binaries' unwind tables (x86-64), shared by every stack capture.
//!
//! Per frame: the process's mappings ([`UNWIND_PROCS`], binary search) give the binary and the row pc, the
//! binary's extent of the row arena ([`UNWIND_BINARIES`], [`UNWIND_ROWS`], binary search) gives the rule, and
//! the rule gives the caller's CFA, return address (CFA - 8) and rbp. A frame with no process entry, no
//! mapping, no loaded binary or no usable row is walked by frame pointers instead, counted by reason.
//!
//! A pc no process entry places (a process in the window before its scan, a library loaded with `dlopen`
//! since) is looked up in the kernel's own map of the process (`bpf_find_vma`): its vma's file (device,
//! inode) gives a loaded binary's key and segments ([`UNWIND_FILES`]), its start and page offset the row pc.
//! Member offsets come from the kernel's BTF, set by the loader ([`kernel_offsets`]).
//!
//! A return address a uretprobe replaced with its trampoline (the `[uprobes]` page) is restored from the
//! thread's return instances (`current->utask->return_instances`, read once per walk): the instance whose
//! stack slot is the one the address was read from holds the original.
//!
//! The frame step and each binary-search step are `bpf_loop` callbacks (each verified once, whatever the depth
//! and the table sizes; Linux 5.17+): as plain bounded loops, the row search alone took the verifier past its
//! million instructions. Their state is a per-CPU scratch entry ([`UNWIND_SCRATCH`]), which also holds the
//! process's mappings (copied once per walk) and the frames: the 512-byte BPF stack holds none of it.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_probe_read_kernel as read_kernel, bpf_probe_read_user,
        generated::{
            bpf_find_vma, bpf_get_current_task, bpf_get_current_task_btf, bpf_loop, bpf_probe_read_kernel,
            bpf_probe_read_user as read_user_bytes, bpf_task_pt_regs,
        },
    },
};
use leakprobe_common::{
    CFA_END, CFA_NONE, CFA_PLT, CFA_RBP, CFA_RSP, CFA_STOP, COST_NO_ROW_HINTS, COST_NO_STACK_WINDOW, Counter,
    MAX_FRAMES, RBP_AT_CFA, UNWIND_FILE_SEGMENTS, UNWIND_MAPPING_SEARCH_STEPS, UNWIND_MAX_MAPPINGS,
    UNWIND_MAX_RETURN_INSTANCES, UNWIND_ROW_HINT_SLOTS, UNWIND_ROW_SEARCH_STEPS, UNWIND_STACK_WINDOW_BYTES,
    UnwindBinary, UnwindFileKey, UnwindMapping, UnwindRow,
};

use crate::maps::{
    UNWIND_BINARIES, UNWIND_FILES, UNWIND_PROCS, UNWIND_ROW_HINTS, UNWIND_ROWS, UNWIND_SCRATCH, UnwindState, cost,
    count, kernel_offsets,
};

/// `bpf_find_vma`'s answer when the process's memory map is locked.
const EBUSY: i64 = 16;

/// `UnwindState::nmappings` when the process has no mapping entry.
const NO_PROCESS: u32 = u32::MAX;

/// The walk's outcome bits (the events' `*_FLAG_STACK_TRUNCATED` share the value).
pub const WALK_TRUNCATED: u32 = 1 << 1;

/// Registers a walk starts from.
#[derive(Clone, Copy)]
pub struct Regs {
    pub pc: u64,
    pub sp: u64,
    pub bp: u64,
}

/// The registers of a uprobe's or uretprobe's context.
#[inline(always)]
pub fn context_regs(ctx: *const pt_regs) -> Regs {
    // SAFETY: `ctx` is the program's context; direct context reads are checked by the verifier.
    unsafe { Regs { pc: (*ctx).rip, sp: (*ctx).rsp, bp: (*ctx).rbp } }
}

/// The current task's user registers (as saved at kernel entry), for tracepoint programs.
#[inline(always)]
pub fn task_regs() -> Option<Regs> {
    // SAFETY: helpers without preconditions in tracing programs; the registers are read through the
    // fault-tolerant kernel read.
    // Three reads of a word each, not one copy of the whole `pt_regs`: its 168 bytes on the BPF stack took the
    // fault program past the verifier's 512-byte limit for a call chain.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        Some(Regs {
            pc: kernel_word(regs.add(core::mem::offset_of!(pt_regs, rip)))?,
            sp: kernel_word(regs.add(core::mem::offset_of!(pt_regs, rsp)))?,
            bp: kernel_word(regs.add(core::mem::offset_of!(pt_regs, rbp)))?,
        })
    }
}

/// The kernel word at `at`, through the fault-tolerant read.
///
/// # Safety
/// None beyond the helper's: a bad address makes the read fail.
#[inline(always)]
unsafe fn kernel_word(at: *const u8) -> Option<u64> {
    let mut value = 0u64;
    // SAFETY: writes 8 bytes into `value`; the helper checks the source.
    let failed = unsafe { bpf_probe_read_kernel((&raw mut value).cast(), 8, at.cast()) } != 0;
    (!failed).then_some(value)
}

/// Walks the user stack of process `tgid` from `regs` into `frames` (room for `MAX_FRAMES`), innermost first.
/// Returns the frame count and `WALK_TRUNCATED` when the stack was deeper than `MAX_FRAMES`.
///
/// # Safety
/// `frames` points to writable memory of `MAX_FRAMES` `u64`s.
#[inline(always)]
pub unsafe fn walk(tgid: u32, regs: Regs, frames: *mut u64) -> (u32, u32) {
    let (n, flags) = walk_scratch(tgid, regs);
    let Some(state) = scratch() else { return (0, 0) };
    // SAFETY: copies MAX_FRAMES frames from the scratch entry into the caller's buffer (its contract).
    unsafe {
        bpf_probe_read_kernel(frames.cast(), (MAX_FRAMES * 8) as u32, (&raw const state.frames).cast());
    }
    (n, flags)
}

/// This CPU's frame buffer of the walk (`MAX_FRAMES` `u64`s), where [`walk_scratch`] leaves its frames; also a
/// buffer for the kernel's frame-pointer walk. Valid until the program's next walk.
#[inline(always)]
pub fn scratch_frames() -> Option<*mut u64> {
    scratch().map(|state| (&raw mut state.frames).cast())
}

/// Walks the user stack as [`walk`] does but leaves the frames in [`scratch_frames`].
#[inline(always)]
pub fn walk_scratch(tgid: u32, regs: Regs) -> (u32, u32) {
    let Some(state) = scratch() else { return (0, 0) };
    state.pc = regs.pc;
    state.sp = regs.sp;
    state.bp = regs.bp;
    state.tgid = tgid;
    state.n = 0;
    state.flags = 0;
    state.vma.end = 0;
    read_window(state);
    return_instances(state);
    // The process's mappings, copied once per walk: the searches then read per-CPU memory only.
    state.nmappings = NO_PROCESS;
    if let Some(proc) = UNWIND_PROCS.get_ptr(tgid) {
        // SAFETY: a valid map value pointer; only its mappings in use are copied, into room for all of them.
        unsafe {
            let count = (*proc).count.min(UNWIND_MAX_MAPPINGS as u32);
            let bytes = count * size_of::<UnwindMapping>() as u32;
            let from = (&raw const (*proc).mappings).cast();
            if bpf_probe_read_kernel((&raw mut state.mappings).cast(), bytes, from) == 0 {
                state.nmappings = count;
            }
        }
    }
    // SAFETY: the callback matches bpf_loop's contract; it takes its state from the scratch map, not the context.
    unsafe { bpf_loop(MAX_FRAMES as u32 + 1, step as *mut c_void, core::ptr::null_mut(), 0) };
    // Taken afresh: the callbacks wrote the entry through pointers of their own.
    let Some(state) = scratch() else { return (0, 0) };
    (state.n.min(MAX_FRAMES as u32), state.flags)
}

/// The walk's per-CPU state, looked up afresh each time: a reference must never be held across a `bpf_loop`
/// call, whose callbacks write the entry through references of their own (the compiler would keep the values
/// it had).
#[inline(always)]
fn scratch() -> Option<&'static mut UnwindState> {
    // SAFETY: per-CPU storage; tracing programs do not nest on one CPU, and no two references to it are used
    // at once (see above).
    UNWIND_SCRATCH.get_ptr_mut(0).map(|state| unsafe { &mut *state })
}

/// One frame of the walk: records the pc, finds the caller's registers. Returns 1 to stop.
#[inline(never)]
extern "C" fn step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(state) = scratch() else { return 1 };
    let n = state.n as usize;
    if state.pc == 0 {
        return 1;
    }
    if n >= MAX_FRAMES {
        state.flags |= WALK_TRUNCATED;
        count(Counter::StackTruncated);
        return 1;
    }
    state.frames[n & (MAX_FRAMES - 1)] = state.pc;
    state.n += 1;
    // A return address points after its call: the call's own rule is the one before it.
    let lookup = if n == 0 { state.pc } else { state.pc - 1 };
    let found = row(lookup);
    // Taken afresh after the searches' callbacks.
    let Some(state) = scratch() else { return 1 };
    let (cfa, rbp_at) = match found {
        Ok(row) => {
            count(Counter::UnwindTableFrames);
            let cfa = match row.cfa_kind {
                CFA_RSP => state.sp.wrapping_add_signed(i64::from(row.cfa_offset)),
                CFA_RBP => state.bp.wrapping_add_signed(i64::from(row.cfa_offset)),
                CFA_PLT => state.sp + 8 + if (lookup & 15) as i32 >= row.cfa_offset { 8 } else { 0 },
                CFA_END => return 1,
                CFA_STOP => {
                    state.n -= 1;
                    return 1;
                }
                _ => return fp_step(state),
            };
            let rbp_at = (row.rbp_kind == RBP_AT_CFA).then(|| cfa.wrapping_add_signed(i64::from(row.rbp_offset)));
            (cfa, rbp_at)
        }
        Err(reason) => {
            count(reason);
            return fp_step(state);
        }
    };
    // The stack grows down: a caller's frame is above its callee's.
    if cfa <= state.sp {
        return 1;
    }
    let Ok(ra) = user_word(state, cfa - 8) else {
        count(Counter::UnwindReadErrors);
        return 1;
    };
    let ra = original_return(state, cfa - 8, ra);
    if let Some(at) = rbp_at {
        let Ok(bp) = user_word(state, at) else {
            count(Counter::UnwindReadErrors);
            return 1;
        };
        state.bp = bp;
    }
    state.pc = ra;
    state.sp = cfa;
    0
}

/// Walks one frame by frame pointers: the caller's rbp at rbp, its return address above.
#[inline(always)]
fn fp_step(state: &mut UnwindState) -> i64 {
    let bp = state.bp;
    if bp < state.sp || bp == 0 {
        return 1;
    }
    // One read after the other: a pair of results would keep a failed read's undefined value in a register
    // the verifier rejects.
    let Ok(caller_bp) = user_word(state, bp) else { return 1 };
    let Ok(ra) = user_word(state, bp + 8) else { return 1 };
    state.bp = caller_bp;
    state.sp = bp + 16;
    state.pc = original_return(state, bp + 8, ra);
    0
}

/// Reads up to `UNWIND_STACK_WINDOW_BYTES` of the user stack from the walk's stack pointer into `state`'s
/// window, in one helper call: most frames' return addresses and saved rbps are then read from it. A window
/// that would cross the stack's end is cut at the page boundary; the words beyond it are read one by one.
#[inline(always)]
fn read_window(state: &mut UnwindState) {
    state.window_base = state.sp;
    state.window_len = 0;
    if cost(COST_NO_STACK_WINDOW) || state.sp & 7 != 0 {
        return;
    }
    let to = (&raw mut state.window).cast::<c_void>();
    let from = state.sp as *const c_void;
    // SAFETY: the helper writes at most `UNWIND_STACK_WINDOW_BYTES` into the window, its size, and fails
    // cleanly on a bad user address.
    if unsafe { read_user_bytes(to, UNWIND_STACK_WINDOW_BYTES, from) } == 0 {
        state.window_len = u64::from(UNWIND_STACK_WINDOW_BYTES);
        return;
    }
    // In 8..=4096, a multiple of 8 (the stack pointer is).
    let to_page = 4096 - (state.sp & 4095) as u32;
    // SAFETY: as above, `to_page < UNWIND_STACK_WINDOW_BYTES`.
    if to_page < UNWIND_STACK_WINDOW_BYTES && unsafe { read_user_bytes(to, to_page, from) } == 0 {
        state.window_len = u64::from(to_page);
    }
}

/// The user word at `at`: from the window when it holds it, else through the helper.
#[inline(always)]
#[allow(clippy::verbose_bit_mask, reason = "a mask is one BPF instruction; `trailing_zeros` has no BPF instruction")]
fn user_word(state: &UnwindState, at: u64) -> Result<u64, ()> {
    let offset = at.wrapping_sub(state.window_base);
    // Both multiples of 8: an offset below the length has its whole word in the window.
    if offset < state.window_len && offset & 7 == 0 {
        return Ok(state.window[(offset / 8) as usize & (UNWIND_STACK_WINDOW_BYTES as usize / 8 - 1)]);
    }
    // SAFETY: reads user memory through the helper, which fails cleanly on a bad address.
    unsafe { bpf_probe_read_user(at as *const u64) }.map_err(|_| ())
}

/// Reads the current thread's uprobe return instances (newest first, up to `UNWIND_MAX_RETURN_INSTANCES`)
/// into `state`: each one's stack slot and original return address.
#[inline(always)]
fn return_instances(state: &mut UnwindState) {
    state.nreturns = 0;
    let offsets = kernel_offsets();
    if offsets.uretprobe == 0 {
        return;
    }
    let at = |base: u64, offset: u32| base.wrapping_add(u64::from(offset)) as *const u64;
    // SAFETY: fault-tolerant kernel reads through the current task's uprobe state, at the offsets the loader
    // took from the kernel's BTF; a torn list read ends early or gives addresses the slot test rejects.
    unsafe {
        let task = bpf_get_current_task();
        let Ok(utask) = read_kernel(at(task, offsets.task_utask)) else { return };
        if utask == 0 {
            return;
        }
        let Ok(mut ri) = read_kernel(at(utask, offsets.utask_return_instances)) else { return };
        for i in 0..UNWIND_MAX_RETURN_INSTANCES {
            if ri == 0 {
                break;
            }
            let (Ok(slot), Ok(addr), Ok(next)) = (
                read_kernel(at(ri, offsets.ri_stack)),
                read_kernel(at(ri, offsets.ri_orig_ret_vaddr)),
                read_kernel(at(ri, offsets.ri_next)),
            ) else {
                break;
            };
            state.return_slots[i] = slot;
            state.return_addrs[i] = addr;
            state.nreturns = i as u32 + 1;
            ri = next;
        }
    }
}

/// The return address read at `slot`: `ra`, or the original a uretprobe's trampoline replaced there (the
/// return instance whose slot it is; chained instances share a slot and hold the same original).
#[inline(always)]
fn original_return(state: &UnwindState, slot: u64, ra: u64) -> u64 {
    for i in 0..UNWIND_MAX_RETURN_INSTANCES {
        if i as u32 >= state.nreturns {
            break;
        }
        if state.return_slots[i] == slot {
            count(Counter::UnwindUretprobeRestored);
            return state.return_addrs[i];
        }
    }
    ra
}

/// The row covering `pc`, from the process's mappings copied into `state` (or its vma), or the reason (a
/// counter) there is none. The row search starts from this CPU's hint for (binary, row pc) and runs only when
/// the hint is not the answer.
#[inline(always)]
fn row(pc: u64) -> Result<UnwindRow, Counter> {
    let (key, bias) = match place(pc) {
        Ok(placed) => placed,
        Err(reason) => place_by_vma(pc, reason)?,
    };
    let Some(binary) = UNWIND_BINARIES.get_ptr(key) else { return Err(Counter::UnwindFpNoBinary) };
    // SAFETY: a valid map value pointer; the daemon replaces values whole.
    let binary = unsafe { *binary };
    let Ok(rel) = u32::try_from(pc.wrapping_sub(bias)) else { return Err(Counter::UnwindFpNoRule) };
    let hint = UNWIND_ROW_HINTS.get_ptr_mut(hint_slot(key, rel));
    if !cost(COST_NO_ROW_HINTS)
        && let Some(hint) = hint
        // SAFETY: per-CPU storage; a plain read.
        && let Some(row) = hinted_row(binary, rel, unsafe { *hint })
    {
        return usable(row);
    }
    let Some(state) = scratch() else { return Err(Counter::UnwindFpNoRule) };
    state.key = u64::from(rel);
    state.first = binary.first_row;
    state.lo = 0;
    state.hi = binary.nrows;
    // SAFETY: the callback matches bpf_loop's contract; its state is the scratch entry.
    unsafe { bpf_loop(UNWIND_ROW_SEARCH_STEPS, row_step as *mut c_void, core::ptr::null_mut(), 0) };
    let Some(state) = scratch() else { return Err(Counter::UnwindFpNoRule) };
    if state.lo == 0 {
        return Err(Counter::UnwindFpNoRule);
    }
    let index = state.lo - 1;
    if let Some(hint) = hint {
        // SAFETY: per-CPU storage: no other program writes this CPU's slot now.
        unsafe { *hint = index };
    }
    match UNWIND_ROWS.get(binary.first_row.wrapping_add(index)) {
        Some(row) => usable(*row),
        None => Err(Counter::UnwindFpNoRule),
    }
}

/// `row` if it has a rule the walk can use.
#[inline(always)]
fn usable(row: UnwindRow) -> Result<UnwindRow, Counter> {
    if row.cfa_kind == CFA_NONE { Err(Counter::UnwindFpNoRule) } else { Ok(row) }
}

/// The slot of the row hints for row pc `rel` of binary `key`.
#[inline(always)]
fn hint_slot(key: u64, rel: u32) -> u32 {
    let mixed = (key ^ (key >> 32)) as u32 ^ rel;
    mixed.wrapping_mul(0x9E37_79B1) >> (32 - UNWIND_ROW_HINT_SLOTS.trailing_zeros())
}

/// Row `index` of `binary` when it is what the search for `rel` finds: the last row at or below `rel`, which
/// in rows sorted by pc is the one at or below it whose next row (if any) is above it. Any other hint (stale,
/// another binary's) is `None`.
#[inline(always)]
fn hinted_row(binary: UnwindBinary, rel: u32, index: u32) -> Option<UnwindRow> {
    if index >= binary.nrows {
        return None;
    }
    let row = *UNWIND_ROWS.get(binary.first_row.wrapping_add(index))?;
    if row.pc > rel {
        return None;
    }
    if index + 1 < binary.nrows && UNWIND_ROWS.get(binary.first_row.wrapping_add(index + 1))?.pc <= rel {
        return None;
    }
    Some(row)
}

/// The binary key and bias of `pc` from the process's mappings copied into `state`.
#[inline(always)]
fn place(pc: u64) -> Result<(u64, u64), Counter> {
    let Some(state) = scratch() else { return Err(Counter::UnwindFpNoProcess) };
    if state.nmappings == NO_PROCESS {
        return Err(Counter::UnwindFpNoProcess);
    }
    // The last mapping starting at or below pc.
    state.key = pc;
    state.lo = 0;
    state.hi = state.nmappings.min(UNWIND_MAX_MAPPINGS as u32);
    // SAFETY: the callback matches bpf_loop's contract; its state is the scratch entry.
    unsafe { bpf_loop(UNWIND_MAPPING_SEARCH_STEPS, mapping_step as *mut c_void, core::ptr::null_mut(), 0) };
    let Some(state) = scratch() else { return Err(Counter::UnwindFpNoProcess) };
    if state.lo == 0 {
        return Err(Counter::UnwindFpNoMapping);
    }
    let mapping = state.mappings[(state.lo - 1) as usize & (UNWIND_MAX_MAPPINGS - 1)];
    if pc >= mapping.end {
        return Err(Counter::UnwindFpNoMapping);
    }
    Ok((mapping.binary, mapping.bias))
}

/// The binary key and bias of `pc` from its vma in the kernel's map of the process, when that vma maps a
/// loaded binary; else `reason` (why the process entry did not place it). The last vma placed is kept for
/// the rest of the walk (a stack's frames are mostly in a few files).
#[inline(always)]
fn place_by_vma(pc: u64, reason: Counter) -> Result<(u64, u64), Counter> {
    if kernel_offsets().vma == 0 {
        return Err(reason);
    }
    let Some(state) = scratch() else { return Err(reason) };
    if state.vma.start <= pc && pc < state.vma.end {
        return Ok((state.vma.binary, state.vma.bias));
    }
    state.vma.end = 0;
    state.vma_file = 0;
    // SAFETY: the current task (a trusted pointer) and a callback matching bpf_find_vma's contract, whose state
    // is the scratch entry; the helper takes the task's mmap lock with a trylock only.
    let found =
        unsafe { bpf_find_vma(bpf_get_current_task_btf(), pc, vma_read as *mut c_void, core::ptr::null_mut(), 0) };
    // Taken afresh: the callback wrote the entry.
    let Some(state) = scratch() else { return Err(reason) };
    if found == -EBUSY {
        count(Counter::UnwindVmaBusy);
        state.vma.end = 0;
        return Err(reason);
    }
    if found != 0 || state.vma_file == 0 {
        count(Counter::UnwindVmaNotFile);
        state.vma.end = 0;
        return Err(reason);
    }
    let key = UnwindFileKey { dev: state.vma_dev, pad: 0, ino: state.vma_ino };
    let Some(file) = UNWIND_FILES.get_ptr(key) else {
        count(Counter::UnwindVmaUnknownFile);
        state.vma.end = 0;
        return Err(reason);
    };
    let pgoff = state.vma_pgoff << 12;
    let offset = pc.wrapping_sub(state.vma.start).wrapping_add(pgoff);
    for i in 0..UNWIND_FILE_SEGMENTS {
        // SAFETY: a valid map value pointer; the daemon replaces values whole.
        let (count_, segment, binary) = unsafe { ((*file).count, (*file).segments[i], (*file).binary) };
        if i as u32 >= count_ {
            break;
        }
        if offset >= segment.offset && offset - segment.offset < segment.size {
            // row pc = file offset + delta, so bias = pc - row pc, the same for every pc of the vma.
            let bias = state.vma.start.wrapping_sub(pgoff).wrapping_sub(segment.delta);
            state.vma.bias = bias;
            state.vma.binary = binary;
            count(Counter::UnwindVmaFound);
            return Ok((binary, bias));
        }
    }
    count(Counter::UnwindVmaUnknownFile);
    state.vma.end = 0;
    Err(reason)
}

/// `bpf_find_vma`'s callback: reads the vma's range, page offset and file (device, inode) into the scratch
/// entry, at the offsets the loader took from the kernel's BTF.
#[inline(never)]
extern "C" fn vma_read(_task: *mut c_void, vma: *mut c_void, _ctx: *mut c_void) -> i64 {
    let offsets = kernel_offsets();
    let Some(state) = scratch() else { return 0 };
    let at = |base: u64, offset: u32| base.wrapping_add(u64::from(offset));
    let vma = vma as u64;
    // SAFETY: fault-tolerant kernel reads at the members' offsets of the vma the helper passed.
    let (Ok(start), Ok(end), Ok(pgoff), Ok(file)) = (unsafe {
        (
            read_kernel(at(vma, offsets.vm_start) as *const u64),
            read_kernel(at(vma, offsets.vm_end) as *const u64),
            read_kernel(at(vma, offsets.vm_pgoff) as *const u64),
            read_kernel(at(vma, offsets.vm_file) as *const u64),
        )
    }) else {
        return 0;
    };
    state.vma.start = start;
    state.vma.end = end;
    state.vma_pgoff = pgoff;
    if file == 0 {
        return 0;
    }
    // SAFETY: as above, through the vma's file, its inode and the inode's super block.
    unsafe {
        let Ok(inode) = read_kernel(at(file, offsets.f_inode) as *const u64) else { return 0 };
        let (Ok(ino), Ok(sb)) =
            (read_kernel(at(inode, offsets.i_ino) as *const u64), read_kernel(at(inode, offsets.i_sb) as *const u64))
        else {
            return 0;
        };
        let Ok(dev) = read_kernel(at(sb, offsets.s_dev) as *const u32) else { return 0 };
        state.vma_ino = ino;
        state.vma_dev = dev;
    }
    state.vma_file = 1;
    0
}

/// One step of a binary search over the scratch entry's `lo`, `hi`: `at_or_below(state, mid)` says whether
/// element `mid` is at or below the key (`None` ends the search). `lo` ends one past the last such element.
#[inline(always)]
fn search_step(at_or_below: impl FnOnce(&UnwindState, u32) -> Option<bool>) -> i64 {
    let Some(state) = scratch() else { return 1 };
    if state.lo >= state.hi {
        return 1;
    }
    let mid = state.lo + (state.hi - state.lo) / 2;
    let Some(below) = at_or_below(state, mid) else { return 1 };
    if below {
        state.lo = mid + 1;
    } else {
        state.hi = mid;
    }
    0
}

/// A step of the search over the process's mappings (by start address).
#[inline(never)]
extern "C" fn mapping_step(_index: u64, _ctx: *mut c_void) -> i64 {
    search_step(|state, mid| Some(state.mappings[mid as usize & (UNWIND_MAX_MAPPINGS - 1)].start <= state.key))
}

/// A step of the search over a binary's rows (by row pc), from the extent's `first` row.
#[inline(never)]
extern "C" fn row_step(_index: u64, _ctx: *mut c_void) -> i64 {
    search_step(|state, mid| UNWIND_ROWS.get(state.first.wrapping_add(mid)).map(|row| u64::from(row.pc) <= state.key))
}

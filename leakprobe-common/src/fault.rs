//! Tier 0: page faults of user memory, sampled, with the user stack that touched the page.

use crate::{EventHeader, MAX_FRAMES, NO_FIELD};

/// Byte offsets of the fields of the `exceptions/page_fault_user` record the program reads, taken from the
/// tracepoint's format file at run time (`unsigned long` each); [`NO_FIELD`] when absent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultFields {
    /// The faulting user address.
    pub address: u32,
    /// The x86 page-fault error code (bit 1: write access, bit 0: protection fault on a present page).
    pub error_code: u32,
}

impl FaultFields {
    /// No field known: the program counts nothing and emits nothing.
    pub const NONE: Self = Self { address: NO_FIELD, error_code: NO_FIELD };
}

/// Bit of the x86 page-fault error code: the access was a write. Anonymous memory grows on write faults
/// only: a read of an untouched anonymous page maps the shared zero page.
pub const PF_WRITE: u64 = 1 << 1;
/// Bit of the x86 page-fault error code: an instruction fetch (never anonymous data growth).
pub const PF_INSTR: u64 = 1 << 4;

/// Bytes one faulting page stands for: the base page. A transparent huge page faulted in at once counts as one
/// base page here; the daemon scales by the process's measured anonymous growth where that matters.
pub const FAULT_PAGE_BYTES: u64 = 4096;

/// `flags` bit of [`FaultEvent`]: `bpf_get_stack` failed; `nframes` is 0.
pub const FAULT_FLAG_STACK_ERROR: u32 = 1;
/// `flags` bit of [`FaultEvent`]: the stack was deeper than [`MAX_FRAMES`] and was cut.
pub const FAULT_FLAG_STACK_TRUNCATED: u32 = 1 << 1;

/// A sampled write fault of a user page (tier 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultEvent {
    pub header: EventHeader,
    /// The faulting address.
    pub addr: u64,
    /// The page-fault error code.
    pub error_code: u64,
    /// Number of valid entries in `frames`.
    pub nframes: u32,
    /// `FAULT_FLAG_*` bits.
    pub flags: u32,
    /// `comm` of the faulting thread, NUL-padded.
    pub comm: [u8; 16],
    /// User stack, innermost first: the first frame is the faulting instruction.
    pub frames: [u64; MAX_FRAMES],
}

/// Byte offsets of the fields of the `syscalls` tracepoint records the mapping-growth programs read, taken from
/// their format files at run time (`unsigned long` / `long` each); [`NO_FIELD`] when absent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapFields {
    /// `len` of `sys_enter_mmap`.
    pub mmap_len: u32,
    /// `prot` of `sys_enter_mmap`.
    pub mmap_prot: u32,
    /// `flags` of `sys_enter_mmap`.
    pub mmap_flags: u32,
    /// `ret` of `sys_exit_brk`: the program break after the call.
    pub brk_ret: u32,
}

impl MapFields {
    /// No field known: the programs count nothing and emit nothing.
    pub const NONE: Self = Self { mmap_len: NO_FIELD, mmap_prot: NO_FIELD, mmap_flags: NO_FIELD, brk_ret: NO_FIELD };
}

/// `mmap` flags and protection bits of the mappings that grow anonymous memory: private, anonymous, writable.
pub const MAP_SHARED: u64 = 0x01;
pub const MAP_ANONYMOUS: u64 = 0x20;
pub const PROT_WRITE: u64 = 0x2;

/// Where a [`MapEvent`]'s bytes come from.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapSource {
    /// A private anonymous writable `mmap` of `len` bytes.
    Mmap = 1,
    /// `brk` moved the program break up by `len` bytes.
    Brk = 2,
}

impl MapSource {
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Mmap),
            2 => Some(Self::Brk),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Mmap => "mmap",
            Self::Brk => "brk",
        }
    }
}

/// A sampled growth of a process's anonymous mappings (tier 0): an `mmap` call or a `brk` that raised the break,
/// with the user stack that asked for it. Sampled as a Poisson process over the mapped bytes, with tier 0's
/// interval, so one event stands for `len / p` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapEvent {
    pub header: EventHeader,
    /// Bytes the call mapped (asked for, for `mmap`; the break's rise, for `brk`).
    pub len: u64,
    /// A [`MapSource`].
    pub source: u32,
    /// Number of valid entries in `frames`.
    pub nframes: u32,
    /// `FAULT_FLAG_*` bits (the stack flags are shared with faults).
    pub flags: u32,
    pub pad: u32,
    /// `comm` of the calling thread, NUL-padded.
    pub comm: [u8; 16],
    /// User stack, innermost first: the first frame is in the syscall's wrapper.
    pub frames: [u64; MAX_FRAMES],
}

const _: () = assert!(size_of::<MapEvent>() == 24 + 8 + 4 * 4 + 16 + 8 * MAX_FRAMES);
const _: () = assert!(size_of::<MapFields>() == 16);
const _: () = assert!(size_of::<FaultEvent>() == 24 + 8 * 2 + 4 * 2 + 16 + 8 * MAX_FRAMES);
const _: () = assert!(size_of::<FaultFields>() == 8);

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

const _: () = assert!(size_of::<FaultEvent>() == 24 + 8 * 2 + 4 * 2 + 16 + 8 * MAX_FRAMES);
const _: () = assert!(size_of::<FaultFields>() == 8);

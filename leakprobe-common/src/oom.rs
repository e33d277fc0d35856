//! The `oom/mark_victim` tracepoint: its record's layout (set by the loader) and the event sent to the daemon.

use crate::{EventHeader, NO_FIELD};

/// Byte offsets of the fields of the `oom/mark_victim` record the program reads, taken from the tracepoint's
/// format file at run time; [`NO_FIELD`] for a field this kernel's record lacks (before Linux 6.8 the record
/// held only `pid`) or whose size is not the one expected. The loader checks the sizes: `pid`, `uid` 4 bytes,
/// `comm` a 4-byte `__data_loc` (`len << 16 | offset` from the record's start), the memory fields 8 bytes
/// (`unsigned long`, in kB), `oom_score_adj` 2 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomFields {
    pub pid: u32,
    pub comm: u32,
    pub total_vm: u32,
    pub anon_rss: u32,
    pub file_rss: u32,
    pub shmem_rss: u32,
    pub uid: u32,
    pub oom_score_adj: u32,
}

impl OomFields {
    /// No field known: the program emits nothing.
    pub const NONE: Self = Self {
        pid: NO_FIELD,
        comm: NO_FIELD,
        total_vm: NO_FIELD,
        anon_rss: NO_FIELD,
        file_rss: NO_FIELD,
        shmem_rss: NO_FIELD,
        uid: NO_FIELD,
        oom_score_adj: NO_FIELD,
    };
}

/// `has` bit of [`OomEvent`]: `comm` was read from the record.
pub const OOM_HAS_COMM: u32 = 1;
/// `has` bit of [`OomEvent`]: `total_vm_kb` was read.
pub const OOM_HAS_TOTAL_VM: u32 = 1 << 1;
/// `has` bit of [`OomEvent`]: `anon_rss_kb`, `file_rss_kb` and `shmem_rss_kb` were read.
pub const OOM_HAS_RSS: u32 = 1 << 2;
/// `has` bit of [`OomEvent`]: `uid` was read.
pub const OOM_HAS_UID: u32 = 1 << 3;
/// `has` bit of [`OomEvent`]: `oom_score_adj` was read.
pub const OOM_HAS_OOM_SCORE_ADJ: u32 = 1 << 4;
/// Every `has` bit.
pub const OOM_HAS_ALL: u32 = OOM_HAS_COMM | OOM_HAS_TOTAL_VM | OOM_HAS_RSS | OOM_HAS_UID | OOM_HAS_OOM_SCORE_ADJ;

/// The OOM killer chose a victim. Emitted from `oom/mark_victim`, which runs in the context of the task that
/// ran out of memory (not necessarily the victim): `header.tgid` and `header.tid` are the victim's pid as read
/// from the record. The victim's exit comes later through the same ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomEvent {
    pub header: EventHeader,
    /// Virtual memory size of the victim, kB.
    pub total_vm_kb: u64,
    /// Resident anonymous memory, kB.
    pub anon_rss_kb: u64,
    /// Resident file-backed memory, kB.
    pub file_rss_kb: u64,
    /// Resident shared memory, kB.
    pub shmem_rss_kb: u64,
    /// The victim's uid.
    pub uid: u32,
    /// The victim's `oom_score_adj` (a `short` in the kernel).
    pub oom_score_adj: i32,
    /// `OOM_HAS_*` bits: which fields were read (the others are zero).
    pub has: u32,
    /// Padding, always zero.
    pub pad: u32,
    /// `comm` of the victim, NUL-padded.
    pub comm: [u8; 16],
}

impl OomEvent {
    /// The event with only its header: every field unread (`has` is 0), every value zero.
    pub const fn bare(header: EventHeader) -> Self {
        Self {
            header,
            total_vm_kb: 0,
            anon_rss_kb: 0,
            file_rss_kb: 0,
            shmem_rss_kb: 0,
            uid: 0,
            oom_score_adj: 0,
            has: 0,
            pad: 0,
            comm: [0; 16],
        }
    }
}

const _: () = assert!(size_of::<OomFields>() == 32);
const _: () = assert!(size_of::<OomEvent>() == 24 + 8 * 4 + 4 * 4 + 16);
const _: () = assert!(align_of::<OomEvent>() == 8);

//! Decoding of ring-buffer records into typed events.

use core::{fmt, mem::size_of};

use crate::{
    ALLOC_FLAG_PY_FRAMES, ALLOC_FLAG_STACK_COPY, ALLOC_HEAD_BYTES, AllocEvent, EventHeader, EventKind, FaultEvent,
    FreeEvent, MAX_FRAMES, MAX_STACK_COPY_BYTES, MapEvent, OomEvent, ProcessEvent, UserStack,
};

/// A decoded ring-buffer record.
/// Allocations and faults are the large variants (and the common ones): nothing is boxed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Alloc(AllocEvent),
    Free(FreeEvent),
    Exit(ProcessEvent),
    Exec(ProcessEvent),
    Oom(OomEvent),
    Fault(FaultEvent),
    Map(MapEvent),
}

impl Event {
    /// The record's header.
    pub const fn header(&self) -> &EventHeader {
        match self {
            Self::Alloc(e) => &e.header,
            Self::Free(e) => &e.header,
            Self::Exit(e) | Self::Exec(e) => &e.header,
            Self::Oom(e) => &e.header,
            Self::Fault(e) => &e.header,
            Self::Map(e) => &e.header,
        }
    }
}

/// Why a record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is shorter than its kind requires.
    Short { kind: u32, len: usize, need: usize },
    /// The header names no known kind.
    UnknownKind(u32),
    /// An allocation or fault record claims more frames than it can hold.
    BadFrameCount(u32),
    /// An allocation record's stack copy claims more bytes than the record holds or than are ever copied.
    BadStackCopy { len: u32, available: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Short { kind, len, need } => {
                write!(f, "record of kind {kind} is {len} bytes, needs {need}")
            }
            Self::UnknownKind(kind) => write!(f, "unknown record kind {kind}"),
            Self::BadFrameCount(n) => write!(f, "record claims {n} frames, at most {MAX_FRAMES} fit"),
            Self::BadStackCopy { len, available } => {
                write!(f, "allocation record claims {len} bytes of stack copy, {available} follow the registers")
            }
        }
    }
}

impl core::error::Error for DecodeError {}

/// Reads a `T` from the start of `bytes`, which must hold at least `size_of::<T>()` bytes.
fn read<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short { kind, len: bytes.len(), need });
    }
    // SAFETY: the length is checked above; every `T` used here is a `#[repr(C)]` struct of integers
    // (and integer arrays) for which every bit pattern is valid; `read_unaligned` has no alignment needs.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// Reads an allocation record, which may end after its frames (a size class shorter than an `AllocEvent`):
/// the frames it does not carry are zero. It must carry its `nframes` frames, and be whole when a stack copy
/// or Python frames follow.
fn read_alloc(bytes: &[u8]) -> Result<AllocEvent, DecodeError> {
    let kind = EventKind::Alloc as u32;
    let whole = size_of::<AllocEvent>();
    if bytes.len() >= whole {
        return read(bytes, kind);
    }
    let mut buffer = [0u8; size_of::<AllocEvent>()];
    buffer[..bytes.len()].copy_from_slice(bytes);
    let event: AllocEvent = read(&buffer, kind)?;
    let need = if event.flags & (ALLOC_FLAG_STACK_COPY | ALLOC_FLAG_PY_FRAMES) != 0 {
        whole
    } else {
        ALLOC_HEAD_BYTES + 8 * (event.nframes as usize).min(MAX_FRAMES)
    };
    if bytes.len() < need {
        return Err(DecodeError::Short { kind, len: bytes.len(), need });
    }
    Ok(event)
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read(bytes, 0)?;
    match EventKind::from_raw(header.kind) {
        Some(EventKind::Alloc) => {
            let event = read_alloc(bytes)?;
            if event.nframes as usize > MAX_FRAMES {
                return Err(DecodeError::BadFrameCount(event.nframes));
            }
            Ok(Event::Alloc(event))
        }
        Some(EventKind::Free) => read(bytes, header.kind).map(Event::Free),
        Some(EventKind::Exit) => read(bytes, header.kind).map(Event::Exit),
        Some(EventKind::Exec) => read(bytes, header.kind).map(Event::Exec),
        Some(EventKind::Oom) => read(bytes, header.kind).map(Event::Oom),
        Some(EventKind::Fault) => {
            let event: FaultEvent = read(bytes, header.kind)?;
            if event.nframes as usize > MAX_FRAMES {
                return Err(DecodeError::BadFrameCount(event.nframes));
            }
            Ok(Event::Fault(event))
        }
        Some(EventKind::Map) => {
            let event: MapEvent = read(bytes, header.kind)?;
            if event.nframes as usize > MAX_FRAMES {
                return Err(DecodeError::BadFrameCount(event.nframes));
            }
            Ok(Event::Map(event))
        }
        None => Err(DecodeError::UnknownKind(header.kind)),
    }
}

/// The registers and the stack bytes that follow an allocation record with [`ALLOC_FLAG_STACK_COPY`]; `None`
/// when the record has no stack copy.
pub fn decode_user_stack(bytes: &[u8]) -> Result<Option<(UserStack, &[u8])>, DecodeError> {
    let event = read_alloc(bytes)?;
    if event.flags & ALLOC_FLAG_STACK_COPY == 0 {
        return Ok(None);
    }
    // `read_alloc` checked that a record with a stack copy is whole.
    let rest = &bytes[size_of::<AllocEvent>()..];
    let regs: UserStack = read(rest, EventKind::Alloc as u32)?;
    let stack = &rest[size_of::<UserStack>()..];
    let len = regs.len as usize;
    if regs.len > MAX_STACK_COPY_BYTES || len > stack.len() {
        return Err(DecodeError::BadStackCopy { len: regs.len, available: stack.len() });
    }
    Ok(Some((regs, &stack[..len])))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::{ALLOC_FLAG_REPLACES_OLD, AllocFn};

    fn bytes_of<T>(value: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain `#[repr(C)]` value with no padding holes (explicit pad fields).
        unsafe { core::slice::from_raw_parts(core::ptr::from_ref::<T>(value).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn header(kind: EventKind) -> EventHeader {
        EventHeader { kind: kind as u32, pad: 0, ts_ns: 123_456_789, tgid: 4242, tid: 4243 }
    }

    #[test]
    fn alloc_round_trip() {
        let mut frames = [0u64; MAX_FRAMES];
        frames[0] = 0x5555_0000_1234;
        frames[1] = 0x5555_0000_5678;
        let event = AllocEvent {
            header: header(EventKind::Alloc),
            addr: 0x7f00_dead_beef,
            size: 4096,
            old_addr: 0x7f00_0000_1000,
            func: AllocFn::Realloc as u32,
            nframes: 2,
            flags: ALLOC_FLAG_REPLACES_OLD,
            pad: 0,
            comm: *b"leaker\0\0\0\0\0\0\0\0\0\0",
            frames,
        };
        assert_eq!(decode(&bytes_of(&event)), Ok(Event::Alloc(event)));
    }

    #[test]
    fn free_and_process_round_trip() {
        let free = FreeEvent { header: header(EventKind::Free), addr: 0x1000 };
        assert_eq!(decode(&bytes_of(&free)), Ok(Event::Free(free)));
        let exit = ProcessEvent { header: header(EventKind::Exit), comm: [b'x'; 16] };
        assert_eq!(decode(&bytes_of(&exit)), Ok(Event::Exit(exit)));
        let exec = ProcessEvent { header: header(EventKind::Exec), comm: [b'y'; 16] };
        assert_eq!(decode(&bytes_of(&exec)), Ok(Event::Exec(exec)));
    }

    #[test]
    fn oom_round_trip() {
        let oom = OomEvent {
            header: header(EventKind::Oom),
            total_vm_kb: 70_000,
            anon_rss_kb: 65_000,
            file_rss_kb: 1_200,
            shmem_rss_kb: 4,
            uid: 1000,
            oom_score_adj: -17,
            has: crate::OOM_HAS_ALL,
            pad: 0,
            comm: *b"leaker\0\0\0\0\0\0\0\0\0\0",
        };
        let bytes = bytes_of(&oom);
        assert_eq!(decode(&bytes), Ok(Event::Oom(oom)));
        assert_eq!(decode(&bytes).map(|e| e.header().tgid), Ok(4242));
        assert_eq!(decode(&bytes[..80]), Err(DecodeError::Short { kind: 5, len: 80, need: 88 }));
    }

    #[test]
    fn fault_round_trip() {
        let mut frames = [0u64; MAX_FRAMES];
        frames[0] = 0x5555_0000_4321;
        let fault = FaultEvent {
            header: header(EventKind::Fault),
            addr: 0x7f00_1234_5000,
            error_code: crate::PF_WRITE | 4,
            nframes: 1,
            flags: 0,
            comm: *b"golike\0\0\0\0\0\0\0\0\0\0",
            frames,
        };
        let bytes = bytes_of(&fault);
        assert_eq!(decode(&bytes), Ok(Event::Fault(fault)));
        let mut bad = fault;
        bad.nframes = 65;
        assert_eq!(decode(&bytes_of(&bad)), Err(DecodeError::BadFrameCount(65)));
        assert_eq!(decode(&bytes[..100]), Err(DecodeError::Short { kind: 6, len: 100, need: bytes.len() }));
    }

    #[test]
    fn map_round_trip() {
        let mut frames = [0u64; MAX_FRAMES];
        frames[..2].copy_from_slice(&[0x7f00_0000_1000, 0x5555_0000_2000]);
        let map = MapEvent {
            header: header(EventKind::Map),
            len: 8 << 20,
            source: crate::MapSource::Mmap as u32,
            nframes: 2,
            flags: 0,
            pad: 0,
            comm: *b"golike\0\0\0\0\0\0\0\0\0\0",
            frames,
        };
        let bytes = bytes_of(&map);
        assert_eq!(decode(&bytes), Ok(Event::Map(map)));
        assert_eq!(decode(&bytes).map(|e| e.header().tgid), Ok(4242));
        let mut bad = map;
        bad.nframes = 65;
        assert_eq!(decode(&bytes_of(&bad)), Err(DecodeError::BadFrameCount(65)));
        assert_eq!(decode(&bytes[..100]), Err(DecodeError::Short { kind: 7, len: 100, need: bytes.len() }));
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert_eq!(decode(&[1, 0, 0]), Err(DecodeError::Short { kind: 0, len: 3, need: 24 }));
        let free = FreeEvent { header: header(EventKind::Free), addr: 0x1000 };
        let bytes = bytes_of(&free);
        assert_eq!(decode(&bytes[..30]), Err(DecodeError::Short { kind: 2, len: 30, need: 32 }));
        let mut unknown = bytes.clone();
        unknown[0] = 99;
        assert_eq!(decode(&unknown), Err(DecodeError::UnknownKind(99)));
    }

    #[test]
    fn stack_copy_round_trip_and_bounds() {
        let event = AllocEvent { flags: ALLOC_FLAG_STACK_COPY, ..malloc_event(&[]) };
        let regs =
            UserStack { ip: 0x5555_0000_1234, sp: 0x7ffd_0000_1000, bp: 0x7ffd_0000_1100, lr: 0, len: 24, pad: 0 };
        let mut bytes = bytes_of(&event);
        bytes.extend(bytes_of(&regs));
        bytes.extend((0u8..32).collect::<Vec<u8>>());
        assert_eq!(decode(&bytes), Ok(Event::Alloc(event)));
        let (got, stack) = decode_user_stack(&bytes).expect("valid").expect("has a copy");
        assert_eq!(got, regs);
        assert_eq!(stack, &(0u8..24).collect::<Vec<u8>>()[..]);
        // A length beyond the record is an error, not a panic.
        let mut bad = bytes.clone();
        bad.truncate(bytes.len() - 16);
        assert_eq!(decode_user_stack(&bad), Err(DecodeError::BadStackCopy { len: 24, available: 16 }));
        // Without the flag there is no copy.
        let plain = AllocEvent { flags: 0, ..event };
        assert_eq!(decode_user_stack(&bytes_of(&plain)), Ok(None));
    }

    /// A `malloc` of 16 bytes at address 1 with these frames.
    fn malloc_event(stack: &[u64]) -> AllocEvent {
        let mut frames = [0u64; MAX_FRAMES];
        frames[..stack.len()].copy_from_slice(stack);
        AllocEvent {
            header: header(EventKind::Alloc),
            addr: 1,
            size: 16,
            old_addr: 0,
            func: AllocFn::Malloc as u32,
            nframes: u32::try_from(stack.len()).expect("a short stack"),
            flags: 0,
            pad: 0,
            comm: [0; 16],
            frames,
        }
    }

    #[test]
    fn short_alloc_records_carry_their_frames() {
        let event = malloc_event(&[0x5555_0000_1234, 0x5555_0000_5678, 0x7f00_0000_9abc]);
        let bytes = bytes_of(&event);
        // Every size class that holds the frames decodes to the whole event.
        for class in crate::ALLOC_FRAME_CLASSES {
            let len = crate::alloc_record_bytes(class);
            assert_eq!(decode(&bytes[..len]), Ok(Event::Alloc(event)), "class {class}");
        }
        assert_eq!(decode(&bytes[..ALLOC_HEAD_BYTES + 24]), Ok(Event::Alloc(event)));
        // A record that cuts its own frames is short.
        assert_eq!(
            decode(&bytes[..ALLOC_HEAD_BYTES + 16]),
            Err(DecodeError::Short { kind: 1, len: ALLOC_HEAD_BYTES + 16, need: ALLOC_HEAD_BYTES + 24 })
        );
        assert_eq!(decode(&bytes[..40]), Err(DecodeError::Short { kind: 1, len: 40, need: ALLOC_HEAD_BYTES }));
        // A stack copy or Python frames follow a whole event only.
        let copy = AllocEvent { flags: ALLOC_FLAG_STACK_COPY, ..event };
        let short = &bytes_of(&copy)[..crate::alloc_record_bytes(8)];
        let need = size_of::<AllocEvent>();
        assert_eq!(decode(short), Err(DecodeError::Short { kind: 1, len: short.len(), need }));
        assert_eq!(decode_user_stack(short), Err(DecodeError::Short { kind: 1, len: short.len(), need }));
        let py = AllocEvent { flags: ALLOC_FLAG_PY_FRAMES, ..event };
        let short = &bytes_of(&py)[..crate::alloc_record_bytes(8)];
        assert_eq!(decode(short), Err(DecodeError::Short { kind: 1, len: short.len(), need }));
    }

    #[test]
    fn too_many_frames_is_an_error() {
        let event = AllocEvent { nframes: 65, ..malloc_event(&[]) };
        assert_eq!(decode(&bytes_of(&event)), Err(DecodeError::BadFrameCount(65)));
    }
}

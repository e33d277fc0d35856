//! Where Python keeps what the frame walk and the resolution read, per interpreter version.
//!
//! 3.10, 3.11 and 3.12 come from a table: the offsets were printed by a C program compiled against each
//! version's own internal headers (`Py_BUILD_CORE`, `offsetof`), x86-64. 3.13 exports them itself in
//! `_Py_DebugOffsets` at the start of `_PyRuntime` ([`Layout::from_debug_offsets`]).

use leakprobe_common::{NO_FIELD, PY_TSTATE_CURRENT, PY_TSTATE_THREAD_LIST, PyProc};

/// A Python version, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
}

impl Version {
    /// The version in a `Py_Version`/`PY_VERSION_HEX` value (`0xMMmmpp..`).
    pub const fn from_hex(hex: u64) -> Self {
        Self { major: ((hex >> 24) & 0xff) as u8, minor: ((hex >> 16) & 0xff) as u8 }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// How the instruction recorded per frame turns into a byte offset in the code's bytecode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instr {
    /// A pointer into the code object's `co_code_adaptive` at this offset (3.11+).
    Pointer { code_adaptive: u64 },
    /// `f_lasti`, an index in 2-byte code units (3.10).
    LastIndex,
}

/// Which line-table format the code objects use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineTable {
    /// 3.10: (bytecode delta, line delta) pairs.
    Pairs,
    /// 3.11+: the PEP 657 location table.
    Locations,
}

/// Offsets of the fields of a code object and of the objects it points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeLayout {
    pub ob_type: u64,
    pub filename: u64,
    pub name: u64,
    /// `co_qualname` (3.11+).
    pub qualname: Option<u64>,
    pub firstlineno: u64,
    pub linetable: u64,
    pub instr: Instr,
    pub table: LineTable,
    /// `PyBytesObject`: `ob_size` and `ob_sval`.
    pub bytes_size: u64,
    pub bytes_data: u64,
    /// `PyASCIIObject`: `length`, `state` and its size (compact ASCII data follows it); compact non-ASCII data
    /// follows a `PyCompactUnicodeObject`.
    pub unicode_length: u64,
    pub unicode_state: u64,
    pub ascii_size: u64,
    pub compact_size: u64,
}

/// Everything version-specific about one interpreter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub version: Version,
    /// The offsets the probes need ([`PyProc`] without the runtime's address).
    pub walk: PyProc,
    pub code: CodeLayout,
    /// How a frame's recorded mark tells where an evaluation call began.
    pub mark: Mark,
}

/// Where one `_PyEval_EvalFrameDefault` call's Python frames end, from the frames' marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// Every Python frame runs in its own call (3.10).
    EveryFrame,
    /// The mark is `is_entry`: the frame was entered from C, the last of its call (3.11).
    IsEntry,
    /// The mark is `owner`: a shim owned by the C stack follows the last frame of a call (3.12+); the shim
    /// itself is no Python frame.
    Owner,
}

/// 3.10 (from 3.10.13's headers): frame objects chained by `f_back`; the GIL holder's thread state.
const V3_10: Layout = Layout {
    version: Version { major: 3, minor: 10 },
    walk: windows(PyProc {
        tstate_mode: PY_TSTATE_CURRENT,
        tstate_current: 568,
        tstate_frame: 24,
        frame_previous: 24,
        frame_code: 32,
        frame_instr: 96,
        ..PyProc::NONE
    }),
    code: CodeLayout {
        ob_type: 8,
        filename: 104,
        name: 112,
        qualname: None,
        firstlineno: 40,
        linetable: 120,
        instr: Instr::LastIndex,
        table: LineTable::Pairs,
        bytes_size: 16,
        bytes_data: 32,
        unicode_length: 16,
        unicode_state: 32,
        ascii_size: 48,
        compact_size: 72,
    },
    mark: Mark::EveryFrame,
};

/// 3.11 (from 3.11.7's and Debian's 3.11.2 headers, identical).
const V3_11: Layout = Layout {
    version: Version { major: 3, minor: 11 },
    walk: windows(PyProc {
        tstate_mode: PY_TSTATE_THREAD_LIST,
        interpreters_head: 40,
        threads_head: 16,
        tstate_next: 8,
        tstate_native_thread_id: 160,
        tstate_frame: 56,
        cframe_current_frame: 8,
        frame_previous: 48,
        frame_code: 32,
        frame_instr: 56,
        frame_mark: 68,
        ..PyProc::NONE
    }),
    code: CodeLayout {
        ob_type: 8,
        filename: 112,
        name: 120,
        qualname: Some(128),
        firstlineno: 72,
        linetable: 136,
        instr: Instr::Pointer { code_adaptive: 184 },
        table: LineTable::Locations,
        bytes_size: 16,
        bytes_data: 32,
        unicode_length: 16,
        unicode_state: 32,
        ascii_size: 48,
        compact_size: 72,
    },
    mark: Mark::IsEntry,
};

/// 3.12 (from 3.12.1's headers): shim frames owned by the C stack mark where an evaluation call began.
const V3_12: Layout = Layout {
    version: Version { major: 3, minor: 12 },
    walk: windows(PyProc {
        threads_head: 72,
        tstate_native_thread_id: 144,
        cframe_current_frame: 0,
        frame_previous: 8,
        frame_code: 0,
        frame_mark: 70,
        ..V3_11.walk
    }),
    code: CodeLayout {
        firstlineno: 68,
        instr: Instr::Pointer { code_adaptive: 192 },
        // 3.12 dropped `wstr` (and `wstr_length`) from the string headers.
        ascii_size: 40,
        compact_size: 56,
        ..V3_11.code
    },
    mark: Mark::Owner,
};

/// A table's offsets with the windows the probes read each frame and thread state through (one read each);
/// a table whose fields do not fit one window fails to compile.
const fn windows(walk: PyProc) -> PyProc {
    match walk.with_windows() {
        Some(walk) => walk,
        None => panic!("the walk's fields do not fit one window"),
    }
}

/// The table's layout of `version`, for 3.10 to 3.12.
pub fn table(version: Version) -> Option<Layout> {
    match (version.major, version.minor) {
        (3, 10) => Some(V3_10),
        (3, 11) => Some(V3_11),
        (3, 12) => Some(V3_12),
        _ => None,
    }
}

/// The cookie `_Py_DebugOffsets` starts with.
pub const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";
/// Bytes of `_Py_DebugOffsets` read: up to `unicode_object.asciiobject_size` (3.13's layout).
pub const DEBUG_OFFSETS_BYTES: usize = 71 * 8;

/// Why an interpreter's layout is unknown.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("CPython {0} is not supported (3.10 to 3.13 are)")]
    Unsupported(Version),
    #[error("_Py_DebugOffsets: {0}")]
    DebugOffsets(&'static str),
}

impl Layout {
    /// The layout of a 3.13 interpreter from the `_Py_DebugOffsets` bytes at the start of its `_PyRuntime`
    /// (3.13's struct: 3.14 reorders it, and is refused by its version).
    pub fn from_debug_offsets(bytes: &[u8]) -> Result<Self, LayoutError> {
        if bytes.len() < DEBUG_OFFSETS_BYTES {
            return Err(LayoutError::DebugOffsets("short read"));
        }
        if &bytes[..8] != DEBUG_COOKIE {
            return Err(LayoutError::DebugOffsets("no cookie"));
        }
        let word = |i: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(raw)
        };
        let version = Version::from_hex(word(1));
        if (version.major, version.minor) != (3, 13) {
            return Err(LayoutError::Unsupported(version));
        }
        if word(2) != 0 {
            return Err(LayoutError::DebugOffsets("free-threaded builds are not supported"));
        }
        // Offsets are small; a value that does not fit in u32 is a corrupt read.
        let small = |i: usize| u32::try_from(word(i)).map_err(|_| LayoutError::DebugOffsets("offset out of range"));
        let walk = PyProc {
            tstate_mode: PY_TSTATE_THREAD_LIST,
            interpreters_head: small(5)?,
            threads_head: small(9)?,
            tstate_next: small(21)?,
            tstate_native_thread_id: small(25)?,
            tstate_frame: small(23)?,
            frame_previous: small(29)?,
            frame_code: small(30)?,
            frame_instr: small(31)?,
            frame_mark: small(33)?,
            cframe_current_frame: NO_FIELD,
            ..PyProc::NONE
        }
        .with_windows()
        .ok_or(LayoutError::DebugOffsets("frame or thread-state fields too far apart for one read"))?;
        let code = CodeLayout {
            ob_type: word(45),
            filename: word(35),
            name: word(36),
            qualname: Some(word(37)),
            firstlineno: word(39),
            linetable: word(38),
            instr: Instr::Pointer { code_adaptive: word(43) },
            table: LineTable::Locations,
            bytes_size: word(65),
            bytes_data: word(66),
            unicode_length: word(69),
            unicode_state: word(68),
            ascii_size: word(70),
            // A `PyCompactUnicodeObject` adds `utf8_length` and `utf8` to the ASCII header.
            compact_size: word(70) + 16,
        };
        Ok(Self { version, walk, code, mark: Mark::Owner })
    }
}

#[cfg(test)]
mod tests;

//! What a Python executable or `libpython` file says about its interpreter: the symbols the walk and the
//! resolution need, its version and layout, read from the file alone (`Py_Version` is read-only data and
//! 3.13's `_Py_DebugOffsets` is the static initializer of `_PyRuntime`).

use std::ops::Range;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use super::layout::{self, DEBUG_OFFSETS_BYTES, Layout, LayoutError, Version};
use crate::segments::{Segment, load_bias};

/// An interpreter in a file, by file virtual addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PythonFile {
    pub layout: Layout,
    /// `_PyRuntime`.
    pub runtime: u64,
    /// `PyCode_Type`: every code object's type pointer.
    pub code_type: u64,
    /// `_PyEval_EvalFrameDefault`, the evaluation loop (its native frames are where Python frames run).
    pub eval: Range<u64>,
    /// Loadable segments, to place the file in a process.
    pub segments: Vec<Segment>,
}

/// Why a file is no interpreter the walk supports.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("not ELF: {0}")]
    Parse(#[from] object::Error),
    #[error("no {0} symbol")]
    NoSymbol(&'static str),
    #[error("no version: no Py_Version and no pythonX.Y in the file name")]
    NoVersion,
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

/// Whether a mapped file's name may be an interpreter (`python3.11`, `libpython3.11.so.1.0`): only those are
/// parsed.
pub fn may_be_python(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("python") || name.starts_with("libpython")
}

/// `X.Y` from a file name such as `libpython3.10.so.1.0`.
fn version_from_name(path: &str) -> Option<Version> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let rest = name.strip_prefix("lib").unwrap_or(name).strip_prefix("python")?;
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some(Version { major: major.parse().ok()?, minor: minor.parse().ok()? })
}

/// Examines an ELF file mapped by a process; `Ok(None)` when it holds no interpreter (no `_PyRuntime`).
pub fn examine(data: &[u8], path: &str) -> Result<Option<PythonFile>, ElfError> {
    let file = object::File::parse(data)?;
    let symbol = |name: &str| {
        file.dynamic_symbols().chain(file.symbols()).find(|s| s.name() == Ok(name)).map(|s| (s.address(), s.size()))
    };
    let Some((runtime, runtime_size)) = symbol("_PyRuntime") else { return Ok(None) };
    let (code_type, _) = symbol("PyCode_Type").ok_or(ElfError::NoSymbol("PyCode_Type"))?;
    let (eval, eval_size) = symbol("_PyEval_EvalFrameDefault").ok_or(ElfError::NoSymbol("_PyEval_EvalFrameDefault"))?;
    let bytes_at = |addr: u64, len: u64| {
        file.sections().find_map(|section| {
            let start = section.address();
            let offset = addr.checked_sub(start)?;
            if offset.checked_add(len)? > section.size() {
                return None;
            }
            let data = section.data().ok()?;
            data.get(usize::try_from(offset).ok()?..usize::try_from(offset + len).ok()?)
        })
    };
    let version = match symbol("Py_Version") {
        Some((addr, _)) => bytes_at(addr, 4)
            .and_then(|b| b.try_into().ok())
            .map(|b: [u8; 4]| Version::from_hex(u64::from(u32::from_le_bytes(b))))
            .ok_or(ElfError::NoVersion)?,
        None => version_from_name(path).ok_or(ElfError::NoVersion)?,
    };
    let layout = match layout::table(version) {
        Some(layout) => layout,
        None if version >= (Version { major: 3, minor: 13 }) && runtime_size >= DEBUG_OFFSETS_BYTES as u64 => {
            let bytes = bytes_at(runtime, DEBUG_OFFSETS_BYTES as u64)
                .ok_or(LayoutError::DebugOffsets("not in the file's data"))?;
            Layout::from_debug_offsets(bytes)?
        }
        None => return Err(LayoutError::Unsupported(version).into()),
    };
    let segments = Segment::of(&file);
    Ok(Some(PythonFile { layout, runtime, code_type, eval: eval..eval + eval_size, segments }))
}

impl PythonFile {
    /// The load bias of this file in a process that maps its file offset `offset` at `start`.
    pub fn bias(&self, start: u64, offset: u64) -> Option<u64> {
        load_bias(&self.segments, start, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_file_names() {
        assert_eq!(version_from_name("/usr/lib/libpython3.10.so.1.0"), Some(Version { major: 3, minor: 10 }));
        assert_eq!(version_from_name("/usr/bin/python3.11"), Some(Version { major: 3, minor: 11 }));
        assert_eq!(version_from_name("/usr/bin/python3"), None);
        assert!(may_be_python("/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0"));
        assert!(!may_be_python("/usr/lib/x86_64-linux-gnu/libc.so.6"));
    }

    #[test]
    fn bias_places_the_segment() {
        let file = PythonFile {
            layout: layout::table(Version { major: 3, minor: 11 }).expect("3.11 is in the table"),
            runtime: 0x54_e540,
            code_type: 0x44_9b00,
            eval: 0xf_ab70..0x10_0000,
            segments: vec![
                Segment { offset: 0, size: 0x6_0000, vaddr: 0 },
                Segment { offset: 0x6_0000, size: 0x20_0000, vaddr: 0x6_0000 },
            ],
        };
        assert_eq!(file.bias(0x7f00_0006_0000, 0x6_0000), Some(0x7f00_0000_0000));
        assert_eq!(file.bias(0x7f00_0000_0000, 0x90_0000), None);
    }
}

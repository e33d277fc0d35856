//! Code objects read from a Python process: names, file and line table, validated field by field.

use super::{
    layout::{CodeLayout, Instr, LineTable},
    linetable,
    memory::{self, u64_at},
};

/// Longest name or file name read (characters); longer ones are cut.
const MAX_STRING: u64 = 4096;
/// Longest line table read (bytes); a longer one is taken as corrupt.
const MAX_LINE_TABLE: u64 = 1 << 20;

/// What one code object says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Code {
    /// `co_qualname` (3.11+), else `co_name`.
    pub name: String,
    pub file: String,
    pub firstlineno: i64,
    pub table: Vec<u8>,
}

/// Reads the code object at `addr` in process `pid`; `None` when it is no code object (its type pointer is
/// not `code_type`) or any read fails.
pub fn read(pid: u32, layout: &CodeLayout, code_type: u64, addr: u64) -> Option<Code> {
    let header_len = [
        layout.ob_type,
        layout.filename,
        layout.name,
        layout.qualname.unwrap_or(0),
        layout.firstlineno,
        layout.linetable,
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
        + 8;
    let header = memory::read(pid, addr, usize::try_from(header_len).ok()?)?;
    if u64_at(&header, layout.ob_type)? != code_type {
        return None;
    }
    let name_ptr = u64_at(&header, layout.qualname.unwrap_or(layout.name))?;
    let file_ptr = u64_at(&header, layout.filename)?;
    // `co_firstlineno` is a C `int`.
    let firstlineno =
        i64::from(i32::from_le_bytes(u64_at(&header, layout.firstlineno)?.to_le_bytes()[..4].try_into().ok()?));
    let table_ptr = u64_at(&header, layout.linetable)?;
    Some(Code {
        name: read_str(pid, layout, name_ptr)?,
        file: read_str(pid, layout, file_ptr)?,
        firstlineno,
        table: read_bytes(pid, layout, table_ptr)?,
    })
}

/// A `str` object: compact ASCII, or compact Latin-1/UCS-2/UCS-4.
fn read_str(pid: u32, layout: &CodeLayout, addr: u64) -> Option<String> {
    let header = memory::read(pid, addr, usize::try_from(layout.compact_size).ok()?)?;
    let length = u64_at(&header, layout.unicode_length)?.min(MAX_STRING);
    let state = u64_at(&header, layout.unicode_state)?;
    // `state`: interned (2 bits), kind (3), compact (1), ascii (1).
    let kind = (state >> 2) & 0x7;
    let (compact, ascii) = ((state >> 5) & 1 == 1, (state >> 6) & 1 == 1);
    if !compact || !matches!(kind, 1 | 2 | 4) {
        return None;
    }
    let data = if ascii { layout.ascii_size } else { layout.compact_size };
    let raw = memory::read(pid, addr.checked_add(data)?, usize::try_from(length * kind).ok()?)?;
    let text = match kind {
        1 => raw.iter().map(|&b| char::from(b)).collect(),
        2 => char::decode_utf16(raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])))
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
        _ => raw
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
    };
    Some(text)
}

/// A `bytes` object's contents.
fn read_bytes(pid: u32, layout: &CodeLayout, addr: u64) -> Option<Vec<u8>> {
    let header = memory::read(pid, addr, usize::try_from(layout.bytes_data).ok()?)?;
    let size = u64_at(&header, layout.bytes_size)?;
    if size > MAX_LINE_TABLE {
        return None;
    }
    memory::read(pid, addr.checked_add(layout.bytes_data)?, usize::try_from(size).ok()?)
}

impl Code {
    /// The line of the instruction a frame of this code (at `code_addr`) recorded.
    pub fn line(&self, layout: &CodeLayout, code_addr: u64, instr: u64) -> Option<i64> {
        match (layout.instr, layout.table) {
            (Instr::Pointer { code_adaptive }, table) => {
                let start = code_addr.checked_add(code_adaptive)?;
                // Before the first instruction (3.11's `prev_instr` of a frame that has not started) is the first.
                let index = instr.saturating_sub(start) / 2;
                match table {
                    LineTable::Locations => linetable::line_of_locations(&self.table, self.firstlineno, index),
                    LineTable::Pairs => linetable::line_of_pairs(&self.table, self.firstlineno, index * 2),
                }
            }
            (Instr::LastIndex, _) => {
                // `f_lasti`, a C `int` in the low 32 bits: -1 before the first instruction.
                let lasti = u64::try_from(i32::from_le_bytes(instr.to_le_bytes()[..4].try_into().ok()?)).unwrap_or(0);
                linetable::line_of_pairs(&self.table, self.firstlineno, lasti * 2)
            }
        }
    }
}

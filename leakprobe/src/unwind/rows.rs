//! Compiles a binary's unwind tables (`.eh_frame`, and `.debug_frame` where present) into the compact, sorted
//! x86-64 rows the kernel's unwinder searches ([`UnwindRow`]). Pure: bytes in, rows out.
//!
//! Each row says how to find the caller's frame from a code address on: the CFA (rsp or rbp plus an offset,
//! or the PLT stubs' expression), the return address at CFA - 8, and where the caller's rbp is. What the
//! kernel cannot evaluate (other expressions, a return address not at CFA - 8, register-held values) becomes a
//! [`CFA_NONE`] row, walked by frame pointers. The gaps between functions are `CFA_NONE` rows too, so an
//! address past a function's end is never unwound with that function's last rule.

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, Reader as _, RegisterRule,
    UnwindContext, UnwindSection, X86_64,
};
use leakprobe_common::{
    CFA_END, CFA_NONE, CFA_PLT, CFA_RBP, CFA_RSP, CFA_STOP, RBP_AT_CFA, RBP_SAME, UNWIND_MAX_BINARY_ROWS, UnwindRow,
};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use crate::segments::Segment;

/// Why a binary's tables could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    #[error("not an ELF file this unwinder reads: {0}")]
    Elf(#[from] object::Error),
    #[error("malformed unwind table: {0}")]
    Dwarf(#[from] gimli::Error),
    #[error("no unwind table (.eh_frame or .debug_frame)")]
    NoTable,
    #[error("unwind table too large: {0} rows or code spread over more than 4 GiB")]
    TooLarge(usize),
}

/// A binary's compiled rows, and how its file offsets map to the ELF addresses the rows use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryRows {
    /// The lowest ELF address covered: row pcs are relative to it.
    pub base: u64,
    /// Sorted by pc, no two consecutive rows equal but for their pc; the last one is a [`CFA_NONE`] row at the
    /// end of the last function.
    pub rows: Vec<UnwindRow>,
    /// Loadable segments.
    pub segments: Vec<Segment>,
}

impl BinaryRows {
    /// The row covering ELF address `addr`, if any (what the kernel's binary search finds).
    pub fn row_at(&self, addr: u64) -> Option<&UnwindRow> {
        let rel = u32::try_from(addr.checked_sub(self.base)?).ok()?;
        let index = self.rows.partition_point(|row| row.pc <= rel).checked_sub(1)?;
        self.rows.get(index)
    }

    /// `bias` of [`leakprobe_common::UnwindMapping`] for a mapping of this binary at `start` from file offset
    /// `offset`: `pc - bias` is the row pc. `None` when no segment holds that offset.
    pub fn bias(&self, start: u64, offset: u64) -> Option<u64> {
        bias(self.base, &self.segments, start, offset)
    }

    /// Bytes the rows take in the kernel's arena.
    pub fn bytes(&self) -> u64 {
        (self.rows.len() * size_of::<UnwindRow>()) as u64
    }
}

/// [`BinaryRows::bias`] from a binary's row base and segments.
pub fn bias(base: u64, segments: &[Segment], start: u64, offset: u64) -> Option<u64> {
    // The ELF address of pc is pc - load bias; row pcs are relative to `base`.
    Some(crate::segments::load_bias(segments, start, offset)?.wrapping_add(base))
}

/// One function's rows, as the tables give them.
struct Function {
    start: u64,
    end: u64,
    rows: Vec<(u64, UnwindRow)>,
}

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// Bytes of unwind tables (`.eh_frame`, `.debug_frame`) in the ELF file `data`: what compiling it costs.
pub fn table_bytes(data: &[u8]) -> Result<u64, RowsError> {
    let elf = object::File::parse(data)?;
    Ok([".eh_frame", ".debug_frame"].iter().filter_map(|name| elf.section_by_name(name)).map(|s| s.size()).sum())
}

/// Compiles the tables of the ELF file `data`.
pub fn compile(data: &[u8]) -> Result<BinaryRows, RowsError> {
    let elf = object::File::parse(data)?;
    let mut functions = Vec::new();
    let address = |name: &str| elf.section_by_name(name).map(|s| s.address());
    let mut found = false;
    if let Some(section) = elf.section_by_name(".eh_frame") {
        let mut bases = BaseAddresses::default().set_eh_frame(section.address());
        if let Some(text) = address(".text") {
            bases = bases.set_text(text);
        }
        if let Some(got) = address(".got") {
            bases = bases.set_got(got);
        }
        let mut eh_frame = EhFrame::new(section.data()?, LittleEndian);
        eh_frame.set_address_size(8);
        functions_of(&eh_frame, &bases, &mut functions)?;
        found = true;
    }
    // Compressed debug sections are skipped (the object crate is built without decompression).
    if let Some(data) = elf.section_by_name(".debug_frame").and_then(|s| s.uncompressed_data().ok()) {
        let mut debug_frame = DebugFrame::new(&data, LittleEndian);
        debug_frame.set_address_size(8);
        functions_of(&debug_frame, &BaseAddresses::default(), &mut functions)?;
        found = true;
    }
    if !found {
        return Err(RowsError::NoTable);
    }
    let segments = Segment::of(&elf);
    // glibc's start routine: the walk ends before it (see `CFA_STOP`).
    let stop = UnwindRow { cfa_kind: CFA_STOP, ..UnwindRow::default() };
    for symbol in elf.dynamic_symbols().filter(|s| s.name() == Ok("__libc_start_main") && s.size() > 0) {
        for function in functions.iter_mut().filter(|f| f.start <= symbol.address() && symbol.address() < f.end) {
            function.rows = vec![(function.start, stop)];
        }
    }
    let (base, rows) = flatten(functions)?;
    Ok(BinaryRows { base, rows, segments })
}

/// Appends the functions described by `section`'s FDEs. An FDE that does not parse is skipped.
fn functions_of<'a, S>(section: &S, bases: &BaseAddresses, out: &mut Vec<Function>) -> Result<(), RowsError>
where
    S: UnwindSection<Slice<'a>>,
{
    let mut context = UnwindContext::new();
    let mut entries = section.entries(bases);
    while let Some(entry) = entries.next()? {
        let CieOrFde::Fde(partial) = entry else { continue };
        let Ok(fde) = partial.parse(S::cie_from_offset) else { continue };
        if fde.len() == 0 {
            continue;
        }
        let Ok(mut table) = fde.rows(section, bases, &mut context) else { continue };
        let mut rows = Vec::new();
        while let Ok(Some(row)) = table.next_row() {
            let (ra, rbp) = (row.register(X86_64::RA), row.register(X86_64::RBP));
            let rule = rule(section, row.cfa(), ra.as_ref(), rbp.as_ref());
            rows.push((row.start_address(), rule));
        }
        out.push(Function { start: fde.initial_address(), end: fde.end_address(), rows });
    }
    Ok(())
}

/// The kernel's rule for one row of the tables.
fn rule<'a, S: UnwindSection<Slice<'a>>>(
    section: &S,
    cfa: &CfaRule<usize>,
    ra: Option<&RegisterRule<usize>>,
    rbp: Option<&RegisterRule<usize>>,
) -> UnwindRow {
    let none = UnwindRow { cfa_kind: CFA_NONE, ..UnwindRow::default() };
    match ra {
        Some(RegisterRule::Undefined) => return UnwindRow { cfa_kind: CFA_END, ..UnwindRow::default() },
        Some(RegisterRule::Offset(-8)) => {}
        _ => return none,
    }
    let (cfa_kind, cfa_offset) = match *cfa {
        CfaRule::RegisterAndOffset { register, offset } => {
            let Ok(offset) = i32::try_from(offset) else { return none };
            match register {
                X86_64::RSP => (CFA_RSP, offset),
                X86_64::RBP => (CFA_RBP, offset),
                _ => return none,
            }
        }
        CfaRule::Expression(ref expression) => {
            let Some(threshold) =
                expression.get(section).ok().and_then(|e| plt_threshold(e.0.to_slice().ok()?.as_ref()))
            else {
                return none;
            };
            (CFA_PLT, threshold)
        }
    };
    let (rbp_kind, rbp_offset) = match rbp {
        None | Some(RegisterRule::SameValue | RegisterRule::Undefined) => (RBP_SAME, 0),
        Some(RegisterRule::Offset(offset)) => {
            let Ok(offset) = i32::try_from(*offset) else { return none };
            (RBP_AT_CFA, offset)
        }
        Some(_) => return none,
    };
    UnwindRow { pc: 0, cfa_offset, rbp_offset, cfa_kind, rbp_kind, pad: 0 }
}

/// The threshold `t` of a PLT stub's CFA expression, `rsp + 8 + (((rip & 15) >= t) << 3)`, as GNU ld writes
/// it for `.plt` and `.plt.sec` (`DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_lit<t>;
/// DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus`). `None` for any other expression.
fn plt_threshold(bytes: &[u8]) -> Option<i32> {
    match *bytes {
        [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, lit @ 0x30..=0x4f, 0x2a, 0x33, 0x24, 0x22] => Some(i32::from(lit - 0x30)),
        _ => None,
    }
}

/// Sorts the functions and flattens their rows, with [`CFA_NONE`] rows in the gaps and after the end; merges
/// consecutive rows with the same rule. Overlapping functions (an address in two FDEs) keep the first by start.
fn flatten(mut functions: Vec<Function>) -> Result<(u64, Vec<UnwindRow>), RowsError> {
    functions.sort_by_key(|f| (f.start, f.end));
    let base = functions.first().map(|f| f.start).ok_or(RowsError::NoTable)?;
    let mut rows: Vec<UnwindRow> = Vec::new();
    let mut end = base;
    let push = |addr: u64, rule: UnwindRow, rows: &mut Vec<UnwindRow>| -> Result<(), RowsError> {
        let pc = u32::try_from(addr - base).map_err(|_| RowsError::TooLarge(rows.len()))?;
        let row = UnwindRow { pc, ..rule };
        match rows.last_mut() {
            Some(last) if last.pc == pc => *last = row,
            Some(last) if UnwindRow { pc, ..*last } == row => {}
            _ => rows.push(row),
        }
        Ok(())
    };
    let gap = UnwindRow { cfa_kind: CFA_NONE, ..UnwindRow::default() };
    for function in &functions {
        if function.start < end {
            continue;
        }
        if function.start > end {
            push(end, gap, &mut rows)?;
        }
        for &(addr, rule) in &function.rows {
            if addr >= function.start && addr < function.end {
                push(addr, rule, &mut rows)?;
            }
        }
        end = function.end;
    }
    push(end, gap, &mut rows)?;
    if rows.len() > UNWIND_MAX_BINARY_ROWS as usize {
        return Err(RowsError::TooLarge(rows.len()));
    }
    Ok((base, rows))
}

#[cfg(test)]
#[path = "rows_tests.rs"]
mod tests;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use super::*;

fn host_libc() -> (Vec<u8>, BinaryRows) {
    let path = crate::probes::libc::host_libc().expect("the host libc");
    let data = std::fs::read(&path).expect("read the host libc");
    let rows = compile(&data).expect("compile libc's .eh_frame");
    (data, rows)
}

fn symbol(data: &[u8], name: &str) -> u64 {
    let elf = object::File::parse(data).expect("parse libc");
    elf.dynamic_symbols().find(|s| s.name() == Ok(name)).map(|s| s.address()).expect("symbol in libc")
}

#[test]
fn malloc_entry_is_cfa_rsp_plus_8() {
    let (data, rows) = host_libc();
    let malloc = symbol(&data, "malloc");
    let row = rows.row_at(malloc).expect("a row at malloc");
    assert_eq!((row.cfa_kind, row.cfa_offset, row.rbp_kind), (CFA_RSP, 8, RBP_SAME), "{row:?}");
    // After its first push (whatever its length), the CFA is 16 bytes above rsp.
    let index = rows.rows.iter().position(|r| r == row).expect("the row is in the table");
    let later = rows.rows.get(index + 1).expect("a row after the push");
    assert_eq!((later.cfa_kind, later.cfa_offset), (CFA_RSP, 16), "{later:?}");
}

#[test]
fn rows_are_sorted_and_end_with_no_rule() {
    let (_, rows) = host_libc();
    assert!(rows.rows.len() > 1_000, "libc has thousands of rows: {}", rows.rows.len());
    assert!(rows.rows.windows(2).all(|w| w[0].pc < w[1].pc), "strictly increasing pcs");
    assert_eq!(rows.rows.last().map(|r| r.cfa_kind), Some(CFA_NONE));
    assert_eq!(rows.rows.first().map(|r| r.pc), Some(0));
}

#[test]
fn plt_stubs_get_the_plt_rule() {
    // libc's own .plt (calls through its GOT) carries GNU ld's expression.
    let (data, rows) = host_libc();
    let elf = object::File::parse(&*data).expect("parse libc");
    let plt = elf.section_by_name(".plt").expect("libc has a .plt");
    let row = rows.row_at(plt.address() + 16 + 4).expect("a row in .plt");
    assert_eq!((row.cfa_kind, row.cfa_offset), (CFA_PLT, 11), "{row:?}");
}

#[test]
fn gaps_between_functions_have_no_rule() {
    let rule = |offset| UnwindRow { cfa_kind: CFA_RSP, cfa_offset: offset, ..UnwindRow::default() };
    let functions = vec![
        Function { start: 0x2000, end: 0x2010, rows: vec![(0x2000, rule(8)), (0x2001, rule(16)), (0x200f, rule(8))] },
        Function { start: 0x1000, end: 0x1020, rows: vec![(0x1000, rule(8)), (0x1004, rule(8))] },
        // Overlaps the first: ignored.
        Function { start: 0x1010, end: 0x1030, rows: vec![(0x1010, rule(64))] },
    ];
    let (base, rows) = flatten(functions).expect("flatten");
    assert_eq!(base, 0x1000);
    let summary: Vec<(u32, u8, i32)> = rows.iter().map(|r| (r.pc, r.cfa_kind, r.cfa_offset)).collect();
    assert_eq!(
        summary,
        [
            (0, CFA_RSP, 8),
            (0x20, CFA_NONE, 0),
            (0x1000, CFA_RSP, 8),
            (0x1001, CFA_RSP, 16),
            (0x100f, CFA_RSP, 8),
            (0x1010, CFA_NONE, 0),
        ]
    );
}

#[test]
fn bias_maps_a_mapping_to_row_pcs() {
    let (data, rows) = host_libc();
    let malloc = symbol(&data, "malloc");
    let &Segment { offset, vaddr: addr, .. } =
        rows.segments.iter().find(|s| malloc >= s.vaddr && malloc - s.vaddr < s.size && s.offset > 0).expect("text");
    // A mapping of the text segment at 0x7f00_0000_0000 + its offset.
    let start = 0x7f00_0000_0000 + offset;
    let bias = rows.bias(start, offset).expect("segment found");
    let pc = start + (malloc - addr);
    assert_eq!(pc.wrapping_sub(bias), malloc - rows.base);
}

#[test]
fn plt_expression_shapes() {
    assert_eq!(plt_threshold(&[0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22]), Some(11));
    assert_eq!(plt_threshold(&[0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3a, 0x2a, 0x33, 0x24, 0x22]), Some(10));
    assert_eq!(plt_threshold(&[0x77, 0x08]), None);
}

#[test]
fn the_walk_stops_before_glibcs_start_routine() {
    let (data, rows) = host_libc();
    let start_main = symbol(&data, "__libc_start_main");
    assert_eq!(rows.row_at(start_main).map(|r| r.cfa_kind), Some(CFA_STOP));
    assert_eq!(rows.row_at(start_main + 0x40).map(|r| r.cfa_kind), Some(CFA_STOP));
    // The function that calls main keeps its rule.
    let malloc = symbol(&data, "malloc");
    assert_ne!(rows.row_at(malloc + 1).map(|r| r.cfa_kind), Some(CFA_STOP));
}

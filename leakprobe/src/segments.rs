//! Where a mapped ELF file's addresses are in a process: its loadable segments and the load bias of a mapping
//! (used by the unwinders and the `CPython` reader). Pure.

use object::ObjectSegment as _;

/// Page size of the mappings the loader makes.
const PAGE: u64 = 4096;

/// A loadable segment: where its bytes are in the file and at which address the binary wants them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub size: u64,
    pub vaddr: u64,
}

impl Segment {
    /// The loadable (`PT_LOAD`) segments of `elf` with bytes in the file.
    pub fn of<'data>(elf: &impl object::Object<'data>) -> Vec<Self> {
        elf.segments()
            .map(|s| {
                let (offset, size) = s.file_range();
                Self { offset, size, vaddr: s.address() }
            })
            .filter(|s| s.size > 0)
            .collect()
    }
}

/// The address at which the binary's address 0 is in a process that maps its file offset `file_offset` at
/// `start`: `pc - bias` is the ELF address of `pc`. `None` if no segment holds that offset.
///
/// The loader maps a segment from its file offset rounded down to a page, so a mapping's offset can lie before
/// its segment's: lld (rustc's default linker) packs segments without page-aligning their offsets, and the page
/// where a code segment's mapping starts also holds the end of the read-only segment before it. The segment
/// starting in the mapping's first page is the one mapped; a mapping that starts inside a segment (split by
/// `mprotect`) is placed by the last segment reaching into it.
pub fn load_bias(segments: &[Segment], start: u64, file_offset: u64) -> Option<u64> {
    let page = |s: &Segment| s.offset & !(PAGE - 1);
    let segment = segments.iter().find(|s| page(s) == file_offset).or_else(|| {
        segments.iter().filter(|s| page(s) <= file_offset && file_offset < s.offset + s.size).max_by_key(|s| s.offset)
    })?;
    // vaddr - offset is the same for every byte of the segment (the ELF rule for loadable segments).
    start.checked_sub(file_offset)?.checked_add(segment.offset)?.checked_sub(segment.vaddr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn segment(offset: u64, vaddr: u64, size: u64) -> Segment {
        Segment { offset, size, vaddr }
    }

    #[test]
    fn lld_segments_share_pages() {
        // `readelf -l` of a binary rustc linked with lld: the code segment starts 0x980 into a page whose mapping
        // begins in the read-only segment, at file offset 0x452000 (ELF address 0x453000).
        let segments = [
            segment(0, 0, 0x45_297c),
            segment(0x45_2980, 0x45_3980, 0x7e_d350),
            segment(0xc3_fcd0, 0xc4_1cd0, 0x8_54e8),
        ];
        let start = 0x55d4_c5a5_3000;
        assert_eq!(load_bias(&segments, start, 0x45_2000), Some(start - 0x45_3000));
        // The read-only segment's own mapping, and a mapping split inside the code segment.
        assert_eq!(load_bias(&segments, 0x1000_0000, 0), Some(0x1000_0000));
        assert_eq!(load_bias(&segments, start + 0x10_0000, 0x55_2000), Some(start - 0x45_3000));
        // Past every segment.
        assert_eq!(load_bias(&segments, start, 0x100_0000), None);
    }

    #[test]
    fn page_aligned_segments() {
        // GNU ld with -z separate-code: every segment starts a page.
        let segments = [segment(0, 0, 0x6_0000), segment(0x6_0000, 0x6_0000, 0x20_0000)];
        assert_eq!(load_bias(&segments, 0x7f00_0006_0000, 0x6_0000), Some(0x7f00_0000_0000));
        assert_eq!(load_bias(&segments, 0x7f00_0000_0000, 0x90_0000), None);
    }
}

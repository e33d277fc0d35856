//! The unwind tables of one binary (`.eh_frame` with `.eh_frame_hdr`, or `.debug_frame`), read once per binary
//! and shared by every process that maps it.

use std::{fs::File, ops::Range, os::unix::fs::MetadataExt as _, sync::Arc};

use framehop::ExplicitModuleSectionInfo;
use object::{Object as _, ObjectSection as _, ReadCache};

use crate::segments::Segment;
use crate::symbolize::maps::Mapping;

/// Why a binary's tables could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not the mapped file (device and inode differ: replaced since it was mapped)")]
    Replaced { path: String },
    #[error("{path}: not a readable ELF file: {reason}")]
    BadElf { path: String, reason: String },
    #[error("{path}: no .eh_frame or .debug_frame section")]
    NoTables { path: String },
}

/// A section's address range (as the binary states it) and its bytes.
#[derive(Clone, Debug)]
struct Section {
    svma: Range<u64>,
    data: Arc<[u8]>,
}

/// The parts of a binary an unwinder needs.
#[derive(Debug)]
pub struct BinaryTables {
    eh_frame: Option<Section>,
    eh_frame_hdr: Option<Section>,
    debug_frame: Option<Arc<[u8]>>,
    text: Option<Range<u64>>,
    got: Option<Range<u64>>,
    segments: Vec<Segment>,
    /// Bytes of section data held.
    pub bytes: usize,
}

impl BinaryTables {
    /// Reads the tables of the file mapped at `mapping` in process `pid`: through `/proc/PID/map_files` (the
    /// very file mapped, even if since replaced or deleted) or else its path, checked against the mapping's
    /// device and inode.
    pub fn read(pid: u32, mapping: &Mapping) -> Result<Self, TableError> {
        let path = mapping.path.display().to_string();
        let io = |source| TableError::Io { path: path.clone(), source };
        let by_map = format!("/proc/{pid}/map_files/{:x}-{:x}", mapping.start, mapping.end);
        let file = File::open(&by_map).or_else(|_| File::open(&*mapping.path)).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        let dev = u64::from(libc::major(meta.dev())) << 32 | u64::from(libc::minor(meta.dev()));
        if (dev, meta.ino()) != (mapping.dev, mapping.inode) {
            return Err(TableError::Replaced { path });
        }
        Self::parse(&file, &path)
    }

    fn parse(file: &File, path: &str) -> Result<Self, TableError> {
        let cache = ReadCache::new(file);
        let elf = object::File::parse(&cache)
            .map_err(|e| TableError::BadElf { path: path.to_owned(), reason: e.to_string() })?;
        let section = |name: &str| {
            let section = elf.section_by_name(name)?;
            let data = section.data().ok()?;
            (!data.is_empty())
                .then(|| Section { svma: section.address()..section.address() + section.size(), data: Arc::from(data) })
        };
        let eh_frame = section(".eh_frame");
        let eh_frame_hdr = section(".eh_frame_hdr");
        let debug_frame = if eh_frame.is_none() { section(".debug_frame").map(|s| s.data) } else { None };
        if eh_frame.is_none() && debug_frame.is_none() {
            return Err(TableError::NoTables { path: path.to_owned() });
        }
        let range = |name: &str| elf.section_by_name(name).map(|s| s.address()..s.address() + s.size());
        let segments = Segment::of(&elf);
        let bytes = [&eh_frame, &eh_frame_hdr].iter().filter_map(|s| s.as_ref().map(|s| s.data.len())).sum::<usize>()
            + debug_frame.as_ref().map_or(0, |d| d.len());
        Ok(Self { eh_frame, eh_frame_hdr, debug_frame, text: range(".text"), got: range(".got"), segments, bytes })
    }

    /// Tables with only these segments (no sections), for tests of the address arithmetic.
    #[cfg(test)]
    pub(super) fn for_segments(segments: Vec<Segment>) -> Self {
        Self { eh_frame: None, eh_frame_hdr: None, debug_frame: None, text: None, got: None, segments, bytes: 0 }
    }

    /// The address at which this binary's address 0 is in a process that maps file offset `file_offset` at
    /// `start` (the module's base), or `None` if no loadable segment holds that offset.
    pub fn base_avma(&self, start: u64, file_offset: u64) -> Option<u64> {
        crate::segments::load_bias(&self.segments, start, file_offset)
    }

    /// The section data framehop reads, sharing this binary's bytes.
    pub fn section_info(&self) -> ExplicitModuleSectionInfo<Arc<[u8]>> {
        ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: self.text.clone(),
            got_svma: self.got.clone(),
            eh_frame_svma: self.eh_frame.as_ref().map(|s| s.svma.clone()),
            eh_frame: self.eh_frame.as_ref().map(|s| s.data.clone()),
            eh_frame_hdr_svma: self.eh_frame_hdr.as_ref().map(|s| s.svma.clone()),
            eh_frame_hdr: self.eh_frame_hdr.as_ref().map(|s| s.data.clone()),
            debug_frame: self.debug_frame.clone(),
            ..ExplicitModuleSectionInfo::default()
        }
    }
}

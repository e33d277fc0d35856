//! Loads binaries' unwind rows and processes' executable mappings into the kernel unwinder's maps
//! (`UNWIND_ROWS`, `UNWIND_BINARIES`, `UNWIND_PROCS`; the walk is `leakprobe-ebpf/src/probes/unwind.rs`).
//!
//! The row arena is one preallocated array, written through a memory mapping (`BPF_F_MMAPABLE`): each binary
//! gets a contiguous extent, from a first-fit free list; when none fits, the least recently used binaries are
//! evicted (their `UNWIND_BINARIES` entry goes first, so no walk starts on rows being overwritten). A binary is
//! compiled once per load, keyed by its file identity and shared by every process that maps it. Used by the
//! discovery thread only, which scans each process at start, after each `execve` and at every rescan.

use std::{
    collections::HashSet,
    fs,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::maps::{HashMap, Map, MapData};
use leakprobe_common::{
    KernelOffsets, UNWIND_FILE_SEGMENTS, UNWIND_MAX_MAPPINGS, UnwindBinary, UnwindFile, UnwindFileKey, UnwindMapping,
    UnwindProc, UnwindRow, UnwindSegment, kernel_dev,
};
use lru::LruCache;
use memmap2::{MmapMut, MmapOptions};

use super::{
    ProbeError,
    mapped::{ExecMapping, FileId, open_path},
};
use crate::{protocol::UnwindTableStatus, unwind::rows};

/// Files whose tables could not be compiled, remembered (not retried) up to this many.
const FAILED_FILES: usize = 4_096;
/// Files with more unwind tables than this are big (a compiler's, a browser's: seconds to compile): a full
/// scan compiles them only within its time budget, and leaves the rest to the next scan.
const BIG_TABLES: u64 = 1 << 20;
/// Time a full scan spends at most on compiling big files.
const SCAN_BUDGET: std::time::Duration = std::time::Duration::from_secs(1);

/// A binary whose rows are in the arena.
struct Loaded {
    id: u64,
    first: u32,
    len: u32,
    base: u64,
    segments: Vec<crate::segments::Segment>,
    /// The path it was read through.
    path: String,
}

/// Counters of the tables (`unwind_tables_*` in `status` and metrics).
#[derive(Clone, Copy, Debug, Default)]
pub struct TableCounters {
    pub binaries_loaded: u64,
    pub rows_used: u64,
    pub rows_limit: u64,
    pub loads: u64,
    pub evictions: u64,
    pub compile_errors: u64,
    pub too_large: u64,
    pub processes_written: u64,
    pub mappings_dropped: u64,
    pub compile_microseconds: u64,
    pub deferred: u64,
}

/// The kernel unwinder's tables, as the daemon keeps them.
pub struct KernelTables {
    arena: MmapMut,
    /// Keeps the arena's map (and its fd) alive.
    _rows: MapData,
    capacity: u32,
    /// Free extents (first row, rows), sorted by first row, coalesced.
    free: Vec<(u32, u32)>,
    binaries: HashMap<MapData, u64, UnwindBinary>,
    procs: HashMap<MapData, u32, UnwindProc>,
    /// Each loaded binary by the kernel's (device, inode), for the walk's vma lookups.
    files: HashMap<MapData, UnwindFileKey, UnwindFile>,
    /// The kernel struct offsets the walk was given (from BTF): which of its lookups are on.
    offsets: KernelOffsets,
    loaded: LruCache<FileId, Loaded>,
    failed: HashSet<FileId>,
    /// The last mappings written per process, to skip rewriting an unchanged entry at each rescan.
    written: LruCache<u32, Vec<UnwindMapping>>,
    counters: TableCounters,
    /// Until when the current full scan may compile big files; `None`: no limit (the scan of one process).
    deadline: Option<std::time::Instant>,
}

impl KernelTables {
    /// Takes the maps; `rows` is the arena's array map with `capacity` entries.
    pub fn new(
        rows: Map,
        capacity: u32,
        binaries: HashMap<MapData, u64, UnwindBinary>,
        procs: HashMap<MapData, u32, UnwindProc>,
        files: HashMap<MapData, UnwindFileKey, UnwindFile>,
        offsets: KernelOffsets,
    ) -> Result<Self, ProbeError> {
        let name = leakprobe_common::maps::UNWIND_ROWS;
        let Map::Array(rows) = rows else { return Err(ProbeError::NoMap(name)) };
        let bytes = capacity as usize * size_of::<UnwindRow>();
        let fd = rows.fd().as_fd().as_raw_fd();
        // SAFETY: the map is an mmapable array of `capacity` 16-byte elements (no rounding: the element size is a
        // multiple of 8); the mapping is only written through `arena`, and the kernel reads it as rows.
        let arena = unsafe { MmapOptions::new().len(bytes).map_mut(fd) }
            .map_err(|source| ProbeError::Io { path: format!("memory mapping of map {name}").into(), source })?;
        Ok(Self {
            arena,
            _rows: rows,
            capacity,
            free: vec![(0, capacity)],
            binaries,
            procs,
            files,
            offsets,
            loaded: LruCache::unbounded(),
            failed: HashSet::new(),
            written: LruCache::new(
                std::num::NonZeroUsize::new(leakprobe_common::UNWIND_PROCS_MAX_ENTRIES as usize)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            ),
            counters: TableCounters { rows_limit: u64::from(capacity), ..TableCounters::default() },
            deadline: None,
        })
    }

    /// A full scan starts (`Some`) or ends (`None`): big files are compiled only within its budget.
    pub fn scan_budget(&mut self, full_scan: bool) {
        self.deadline = full_scan.then(|| std::time::Instant::now() + SCAN_BUDGET);
    }

    /// The counters now.
    pub fn counters(&self) -> TableCounters {
        TableCounters {
            binaries_loaded: self.loaded.len() as u64,
            rows_used: self.loaded.iter().map(|(_, l)| u64::from(l.len)).sum(),
            ..self.counters
        }
    }

    /// `(name, value)` pairs for `status` and metrics.
    pub fn counter_pairs(&self) -> [(&'static str, u64); 14] {
        let c = self.counters();
        let row = size_of::<UnwindRow>() as u64;
        [
            ("unwind_tables_binaries_loaded", c.binaries_loaded),
            ("unwind_tables_bytes_used", c.rows_used * row),
            ("unwind_tables_bytes_limit", c.rows_limit * row),
            ("unwind_tables_loads", c.loads),
            ("unwind_tables_evictions", c.evictions),
            ("unwind_tables_compile_errors", c.compile_errors),
            ("unwind_tables_too_large", c.too_large),
            ("unwind_tables_processes_written", c.processes_written),
            ("unwind_tables_mappings_dropped", c.mappings_dropped),
            ("unwind_tables_compile_microseconds", c.compile_microseconds),
            ("unwind_tables_rows_used", c.rows_used),
            ("unwind_tables_deferred", c.deferred),
            ("unwind_vma_lookups_off", u64::from(self.offsets.vma == 0)),
            ("unwind_uretprobe_lookups_off", u64::from(self.offsets.uretprobe == 0)),
        ]
    }

    /// The loaded binaries, most recently used first.
    pub fn binaries(&self) -> Vec<UnwindTableStatus> {
        let row = size_of::<UnwindRow>() as u64;
        self.loaded
            .iter()
            .map(|(file, l)| UnwindTableStatus {
                path: l.path.clone(),
                file: file.to_string(),
                rows: u64::from(l.len),
                bytes: u64::from(l.len) * row,
            })
            .collect()
    }

    /// Loads the tables of every executable mapping of process `pid` (its `/proc/PID/maps` text) and writes
    /// its mapping entry.
    pub fn update_process(&mut self, pid: u32, maps_text: &str) {
        let mut mappings = Vec::new();
        for line in crate::procfs::maps_lines(maps_text) {
            if !line.perms.contains('x') || line.inode == 0 || !line.path.starts_with('/') {
                continue;
            }
            let (path, deleted) = match line.path.strip_suffix(" (deleted)") {
                Some(path) => (path, true),
                None => (line.path, false),
            };
            let mapping = ExecMapping {
                start: line.start,
                end: line.end,
                file: FileId { major: line.major, minor: line.minor, inode: line.inode },
                path: path.to_owned(),
                deleted,
            };
            let Some(loaded) = self.ensure_loaded(pid, &mapping) else { continue };
            let Some(bias) = rows::bias(loaded.base, &loaded.segments, line.start, line.offset) else { continue };
            mappings.push(UnwindMapping { start: line.start, end: line.end, bias, binary: loaded.id });
        }
        mappings.sort_by_key(|m| m.start);
        if mappings.len() > UNWIND_MAX_MAPPINGS {
            self.counters.mappings_dropped += (mappings.len() - UNWIND_MAX_MAPPINGS) as u64;
            mappings.truncate(UNWIND_MAX_MAPPINGS);
        }
        if self.written.get(&pid) == Some(&mappings) {
            return;
        }
        let mut entry = UnwindProc {
            count: u32::try_from(mappings.len()).unwrap_or(0),
            pad: 0,
            mappings: [UnwindMapping::default(); UNWIND_MAX_MAPPINGS],
        };
        entry.mappings[..mappings.len()].copy_from_slice(&mappings);
        match self.procs.insert(pid, entry, 0) {
            Ok(()) => {
                self.counters.processes_written += 1;
                self.written.put(pid, mappings);
            }
            Err(err) => log::debug!("unwind tables: writing the mappings of {pid}: {err}"),
        }
    }

    /// The binary of `mapping`, its rows loaded (compiled now if needed); `None` when it has no usable tables.
    fn ensure_loaded(&mut self, pid: u32, mapping: &ExecMapping) -> Option<&Loaded> {
        if self.loaded.contains(&mapping.file) {
            return self.loaded.get(&mapping.file);
        }
        if self.failed.contains(&mapping.file) {
            return None;
        }
        let started = std::time::Instant::now();
        let (target, shown) = open_path(pid, mapping);
        // SAFETY: a read-only private mapping of a file; a file truncated meanwhile can fault the read (as it
        // would the mapping process): binaries are replaced by rename, not rewritten in place.
        let data = match fs::File::open(&target).and_then(|file| unsafe { memmap2::Mmap::map(&file) }) {
            Ok(data) => data,
            Err(err) => {
                log::debug!("unwind tables: {}: {err}", shown.display());
                return None;
            }
        };
        if self.deadline.is_some_and(|deadline| started > deadline)
            && rows::table_bytes(&data).is_ok_and(|bytes| bytes > BIG_TABLES)
        {
            self.counters.deferred += 1;
            return None;
        }
        let compiled = rows::compile(&data).map_err(|err| err.to_string());
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.counters.compile_microseconds += micros;
        log::debug!("unwind tables: {} compiled in {micros} us", shown.display());
        let compiled = match compiled {
            Ok(compiled) => compiled,
            Err(err) => {
                log::debug!("unwind tables: {}: {err}", shown.display());
                self.counters.compile_errors += 1;
                self.remember_failed(mapping.file);
                return None;
            }
        };
        let Ok(len) = u32::try_from(compiled.rows.len()) else { return None };
        let Some(first) = self.allocate(len) else {
            self.counters.too_large += 1;
            self.remember_failed(mapping.file);
            return None;
        };
        let start = first as usize * size_of::<UnwindRow>();
        let bytes = len as usize * size_of::<UnwindRow>();
        for (chunk, row) in
            self.arena[start..start + bytes].chunks_exact_mut(size_of::<UnwindRow>()).zip(&compiled.rows)
        {
            chunk.copy_from_slice(row_bytes(row));
        }
        let id = binary_id(mapping.file);
        if let Err(err) = self.binaries.insert(id, UnwindBinary { first_row: first, nrows: len }, 0) {
            log::debug!("unwind tables: registering {}: {err}", shown.display());
            self.release(first, len);
            return None;
        }
        let file = file_entry(id, compiled.base, &compiled.segments);
        if let Err(err) = self.files.insert(file_key(mapping.file), file, 0) {
            log::debug!("unwind tables: registering the file of {}: {err}", shown.display());
        }
        self.counters.loads += 1;
        let path = shown.display().to_string();
        let loaded = Loaded { id, first, len, base: compiled.base, segments: compiled.segments, path };
        self.loaded.put(mapping.file, loaded);
        self.loaded.get(&mapping.file)
    }

    fn remember_failed(&mut self, file: FileId) {
        if self.failed.len() >= FAILED_FILES {
            self.failed.clear();
        }
        self.failed.insert(file);
    }

    /// A free extent of `len` rows, evicting least recently used binaries until one fits; `None` when the
    /// arena is too small for it even empty.
    fn allocate(&mut self, len: u32) -> Option<u32> {
        if len == 0 || len > self.capacity {
            return None;
        }
        loop {
            if let Some(index) = self.free.iter().position(|&(_, free)| free >= len) {
                let (first, free) = self.free[index];
                if free == len {
                    self.free.remove(index);
                } else {
                    self.free[index] = (first + len, free - len);
                }
                return Some(first);
            }
            let (file, evicted) = self.loaded.pop_lru()?;
            // No new walk finds the rows once the entries are gone; then the extent may be reused.
            let _ = self.files.remove(&file_key(file));
            let _ = self.binaries.remove(&evicted.id);
            self.counters.evictions += 1;
            self.release(evicted.first, evicted.len);
        }
    }

    /// Returns an extent to the free list, coalescing with its neighbours.
    fn release(&mut self, first: u32, len: u32) {
        let index = self.free.partition_point(|&(f, _)| f < first);
        self.free.insert(index, (first, len));
        if index + 1 < self.free.len() && self.free[index].0 + self.free[index].1 == self.free[index + 1].0 {
            self.free[index].1 += self.free[index + 1].1;
            self.free.remove(index + 1);
        }
        if index > 0 && self.free[index - 1].0 + self.free[index - 1].1 == self.free[index].0 {
            self.free[index - 1].1 += self.free[index].1;
            self.free.remove(index);
        }
    }
}

/// The key of a binary in `UNWIND_BINARIES`: its file identity, packed.
fn binary_id(file: FileId) -> u64 {
    // Device numbers take 12 + 20 bits; inode numbers of one file system rarely pass 2^32. A collision (two
    // files whose ids mix alike) would only unwind one with the other's rows: wrong frames, never a fault.
    (u64::from(file.major) << 52 | u64::from(file.minor) << 32) ^ file.inode
}

/// The key of a file in `UNWIND_FILES`: the kernel's encoding of its device (as `/proc/PID/maps` prints it).
fn file_key(file: FileId) -> UnwindFileKey {
    UnwindFileKey { dev: kernel_dev(file.major, file.minor), pad: 0, ino: file.inode }
}

/// The `UNWIND_FILES` value of binary `id` whose rows start at ELF address `base`: a pc at file offset `o` of
/// a segment has the row pc `o + delta` (as [`rows::bias`] computes for a mapping).
fn file_entry(id: u64, base: u64, segments: &[crate::segments::Segment]) -> UnwindFile {
    let mut entry = UnwindFile { binary: id, ..UnwindFile::default() };
    for (slot, segment) in entry.segments.iter_mut().zip(segments.iter().take(UNWIND_FILE_SEGMENTS)) {
        *slot = UnwindSegment {
            offset: segment.offset,
            size: segment.size,
            delta: segment.vaddr.wrapping_sub(segment.offset).wrapping_sub(base),
        };
    }
    entry.count = u32::try_from(segments.len().min(UNWIND_FILE_SEGMENTS)).unwrap_or(0);
    entry
}

/// A row's bytes as the kernel reads them.
fn row_bytes(row: &UnwindRow) -> &[u8] {
    // SAFETY: `UnwindRow` is `#[repr(C)]` plain integers with explicit padding (size asserted: 16 bytes).
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(row).cast::<u8>(), size_of::<UnwindRow>()) }
}

/// Rows the arena holds for `bytes` of memory, rounded down to whole pages of rows (the map is memory-mapped).
pub fn arena_rows(bytes: u64) -> u32 {
    let per_page = (4096 / size_of::<UnwindRow>()) as u64;
    let rows = (bytes / size_of::<UnwindRow>() as u64) / per_page * per_page;
    u32::try_from(rows.max(per_page)).unwrap_or(u32::MAX - (u32::MAX % 256))
}

#[cfg(test)]
mod tests {
    #[test]
    fn arena_rows_are_whole_pages() {
        assert_eq!(super::arena_rows(16 << 20), 1 << 20);
        assert_eq!(super::arena_rows(1), 256);
        assert_eq!(super::arena_rows(4096 * 3 + 5), 768);
    }

    /// The kernel's `dev_t` (`MKDEV`: 12 bits of major above 20 of minor), not glibc's `st_dev` encoding, which
    /// splits the minor around the major: they differ as soon as the minor passes 255.
    #[test]
    fn file_keys_use_the_kernel_device_encoding() {
        let key = |major, minor| super::file_key(super::FileId { major, minor, inode: 7 });
        assert_eq!(key(259, 1).dev, 0x1030_0001);
        assert_eq!(key(0, 0x1234).dev, 0x1234);
        assert_eq!(key(8, 0x12345).dev, 0x0081_2345);
        let userspace = libc::makedev(0, 0x1234);
        assert_ne!(u64::from(key(0, 0x1234).dev), userspace, "glibc puts minor bits above 255 elsewhere");
        assert_eq!(key(0, 0x1234).ino, 7);
    }

    /// A mapping's bias from the file entry's segment holding a pc equals the one the process entry gets
    /// (`rows::bias`): here for lld's layout, whose code segment starts mid-page after the read-only one.
    #[test]
    fn file_entries_place_pcs_as_mappings_do() {
        use crate::segments::Segment;
        let segments = [
            Segment { offset: 0, size: 0x45_297c, vaddr: 0 },
            Segment { offset: 0x45_2980, size: 0x7e_d350, vaddr: 0x45_3980 },
            Segment { offset: 0xc3_fcd0, size: 0x8_54e8, vaddr: 0xc4_1cd0 },
        ];
        let base = 0x1000;
        let entry = super::file_entry(42, base, &segments);
        assert_eq!((entry.binary, entry.count), (42, 3));
        // The code mapping starts at the page holding segment 1's first byte.
        let (start, pgoff) = (0x5555_5600_0000_u64, 0x45_2000_u64);
        let expected = super::rows::bias(base, &segments, start, pgoff).expect("a segment");
        let pc = start + 0x1000;
        let offset = pc - start + pgoff;
        let segment = entry.segments.iter().find(|s| offset >= s.offset && offset - s.offset < s.size).expect("one");
        let bias = start.wrapping_sub(pgoff).wrapping_sub(segment.delta);
        assert_eq!(bias, expected);
        assert_eq!(pc - bias, 0x45_4000 - base, "the row pc: the ELF address less the base");
    }
}

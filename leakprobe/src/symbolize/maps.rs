//! Memory maps of a process (`/proc/PID/maps`), kept so that its stacks still symbolize after it exited.

use std::{
    fs,
    num::NonZeroUsize,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::Path,
    sync::{Arc, Weak},
};

/// One file-backed mapping.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub file_offset: u64,
    /// The path as the process sees it (in its own mount namespace), without ` (deleted)`.
    pub path: Arc<Path>,
    /// How the symbolizer reads the file.
    pub source: Source,
    /// The file was deleted or replaced since it was mapped.
    pub deleted: bool,
    /// Whether the mapping is executable (`x` in its permissions): code lives there.
    pub executable: bool,
    /// The file's device (`major << 32 | minor`) and inode: the same binary in every process.
    pub dev: u64,
    pub inode: u64,
}

impl Mapping {
    /// The file's identity: (device, inode).
    pub fn file(&self) -> (u64, u64) {
        (self.dev, self.inode)
    }
}

/// How the symbolizer reads a mapped file.
#[derive(Clone, Debug, Default)]
pub enum Source {
    /// By its path, which leads to the mapped file from the daemon's mount namespace (checked again when read:
    /// a package upgrade puts another file there).
    #[default]
    Path,
    /// Through a descriptor the symbolizer keeps open (`/proc/self/fd/N`): a file the daemon cannot reach by its
    /// path (another mount namespace, e.g. a container's root filesystem, or a deleted or replaced file), opened
    /// through `/proc/PID/map_files`, so it still reads after the process and its root filesystem are gone.
    /// Weak: [`OpenFiles`] bounds how many files stay open; one it let go is unreadable.
    Kept(Weak<KeptFile>),
    /// Neither reachable by its path nor opened (the process was gone before its `map_files` could be read).
    Unreadable,
}

/// A mapped file kept open; `path` (`/proc/self/fd/N`) reads it while this lives.
#[derive(Debug)]
pub struct KeptFile {
    _file: fs::File,
    pub path: Arc<Path>,
}

/// Files the symbolizer keeps open, by (device, inode), least recently used out first. Mappings refer to them
/// weakly, so a file let go is closed at once and its descriptor number can be reused: whoever reads through
/// `/proc/self/fd/N` must hold the file ([`Source::Kept`] upgraded) meanwhile.
#[derive(Debug)]
pub struct OpenFiles {
    files: lru::LruCache<(u64, u64), Arc<KeptFile>>,
    /// Paths (`/proc/self/fd/N`) of files let go since [`Self::take_released`]: caches keyed by them must go.
    released: Vec<Arc<Path>>,
}

impl OpenFiles {
    /// At most `max` files open.
    pub fn new(max: NonZeroUsize) -> Self {
        Self { files: lru::LruCache::new(max), released: Vec::new() }
    }

    /// Files open now.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is open.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn get(&mut self, file: (u64, u64)) -> Option<Weak<KeptFile>> {
        self.files.get(&file).map(Arc::downgrade)
    }

    fn keep(&mut self, file: (u64, u64), opened: fs::File) -> Weak<KeptFile> {
        let path: Arc<Path> = Arc::from(Path::new(&format!("/proc/self/fd/{}", opened.as_raw_fd())));
        let kept = Arc::new(KeptFile { _file: opened, path });
        let weak = Arc::downgrade(&kept);
        if let Some((_, old)) = self.files.push(file, kept) {
            self.released.push(old.path.clone());
        }
        weak
    }

    /// The paths of the files let go since the last call.
    pub fn take_released(&mut self) -> Vec<Arc<Path>> {
        std::mem::take(&mut self.released)
    }
}

/// The file-backed mappings of a `/proc/PID/maps` text, in address order, deleted files included (they are
/// still readable through `/proc/PID/map_files` while the process lives). Anonymous and special (`[vdso]`)
/// mappings are left out: there is nothing to read symbols from.
pub fn parse(text: &str) -> Vec<Mapping> {
    let mut maps: Vec<Mapping> = crate::procfs::maps_lines(text)
        .filter(|line| line.path.starts_with('/') && line.inode != 0)
        .map(|line| {
            let (path, deleted) = match line.path.strip_suffix(" (deleted)") {
                Some(path) => (path, true),
                None => (line.path, false),
            };
            Mapping {
                executable: line.perms.contains('x'),
                dev: u64::from(line.major) << 32 | u64::from(line.minor),
                inode: line.inode,
                start: line.start,
                end: line.end,
                file_offset: line.offset,
                path: Arc::from(Path::new(path)),
                source: Source::Path,
                deleted,
            }
        })
        .collect();
    maps.sort_unstable_by_key(|m| m.start);
    maps
}

/// Reads and parses the maps of a live process, as they are: every `source` is the mapping's own path.
pub fn read_parsed(pid: u32) -> Option<Vec<Mapping>> {
    Some(parse(&fs::read_to_string(format!("/proc/{pid}/maps")).ok()?))
}

/// Whether `path` leads to the file `(dev, inode)` from the daemon's mount namespace.
pub fn leads_to(path: &Path, file: (u64, u64)) -> bool {
    fs::metadata(path).is_ok_and(|meta| {
        let (major, minor) = crate::procfs::dev_numbers(meta.dev());
        (u64::from(major) << 32 | u64::from(minor), meta.ino()) == file
    })
}

/// Reads and parses the maps of a live process. Code files the daemon cannot reach by their path are opened
/// through `/proc/PID/map_files` and kept open in `open`; those it cannot open either, and unreachable data
/// mappings (no return address points into them), are [`Source::Unreadable`].
pub fn read(pid: u32, open: &mut OpenFiles) -> Option<Vec<Mapping>> {
    Some(with_sources(pid, parse(&fs::read_to_string(format!("/proc/{pid}/maps")).ok()?), open))
}

/// Completes mappings `maps` of process `pid` (read from its `/proc/PID/maps`, maybe a moment ago) as [`read`]
/// does: files unreachable by their path are opened through `/proc/PID/map_files` while the process lives.
pub fn with_sources(pid: u32, mut maps: Vec<Mapping>, open: &mut OpenFiles) -> Vec<Mapping> {
    for mapping in &mut maps {
        if !mapping.deleted && leads_to(&mapping.path, mapping.file()) {
            continue;
        }
        if !mapping.executable {
            mapping.source = Source::Unreadable;
            continue;
        }
        if let Some(kept) = open.get(mapping.file()) {
            mapping.source = Source::Kept(kept);
            continue;
        }
        let link = format!("/proc/{pid}/map_files/{:x}-{:x}", mapping.start, mapping.end);
        mapping.source = match fs::File::open(&link) {
            Ok(file) => Source::Kept(open.keep(mapping.file(), file)),
            Err(err) => {
                log::debug!("symbolizer: opening {link} ({}): {err}", mapping.path.display());
                Source::Unreadable
            }
        };
    }
    maps
}

/// The mapping holding `addr` and the file offset of `addr` in it.
pub fn lookup(maps: &[Mapping], addr: u64) -> Option<(&Mapping, u64)> {
    let index = maps.partition_point(|m| m.start <= addr).checked_sub(1)?;
    let mapping = &maps[index];
    (addr < mapping.end).then(|| (mapping, addr - mapping.start + mapping.file_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c6a00000-55d0c6a01000 r--p 00000000 fe:00 1234 /tmp/leaker
55d0c6a01000-55d0c6a02000 r-xp 00001000 fe:00 1234 /tmp/leaker
55d0c7e3f000-55d0c7e60000 rw-p 00000000 00:00 0                          [heap]
7f1e2a400000-7f1e2a428000 r--p 00000000 fe:00 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2a428000-7f1e2a59d000 r-xp 00028000 fe:00 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2a600000-7f1e2a601000 r-xp 00000000 fe:00 77 /tmp/gone.so (deleted)
7ffd5e3f1000-7ffd5e3f3000 r-xp 00000000 00:00 0                          [vdso]
";

    #[test]
    fn parses_file_backed_mappings_only() {
        let maps = parse(MAPS);
        assert_eq!(maps.len(), 5);
        assert_eq!(&*maps[1].path, Path::new("/tmp/leaker"));
        assert_eq!(maps[3].file_offset, 0x28000);
        assert!(!maps[0].executable && maps[1].executable);
        assert_eq!((maps[1].dev, maps[1].inode), (0xfe << 32, 1234));
    }

    #[test]
    fn looks_up_file_offsets() {
        let maps = parse(MAPS);
        let (m, off) = lookup(&maps, 0x55d0_c6a0_1234).expect("in the text mapping");
        assert_eq!((&*m.path, off), (Path::new("/tmp/leaker"), 0x1234));
        let (m, off) = lookup(&maps, 0x7f1e_2a42_9000).expect("in libc");
        assert_eq!((&*m.path, off), (Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6"), 0x29000));
        assert!(lookup(&maps, 0x55d0_c7e4_0000).is_none(), "heap is anonymous");
        assert!(lookup(&maps, 0x1000).is_none());
        let (m, off) = lookup(&maps, 0x7f1e_2a60_0010).expect("deleted files are kept");
        assert_eq!((&*m.path, m.deleted, off), (Path::new("/tmp/gone.so"), true, 0x10));
    }

    #[test]
    fn own_maps_are_readable() {
        let mut open = OpenFiles::new(NonZeroUsize::MIN);
        let maps = read(std::process::id(), &mut open).expect("own maps");
        assert!(maps.iter().all(|m| matches!(m.source, Source::Path)), "every own file is reachable by its path");
        assert!(open.is_empty());
        assert!(maps.iter().any(|m| m.path.to_string_lossy().contains("libc.so")));
    }

    #[test]
    fn a_file_let_go_is_closed_and_its_path_released() {
        let mut open = OpenFiles::new(NonZeroUsize::MIN);
        let first = open.keep((1, 1), fs::File::open("/proc/self/exe").expect("own executable"));
        let first_path = first.upgrade().expect("kept").path.clone();
        let second = open.keep((1, 2), fs::File::open("/proc/self/exe").expect("own executable"));
        assert!(first.upgrade().is_none(), "closed once let go: its number may be reused");
        assert!(second.upgrade().is_some());
        assert_eq!(open.take_released(), [first_path]);
        assert!(open.take_released().is_empty());
        assert_eq!(open.len(), 1);
    }
}

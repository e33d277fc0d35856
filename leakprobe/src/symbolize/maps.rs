//! Memory maps of a process (`/proc/PID/maps`), kept so that its stacks still symbolize after it exited.

use std::{
    fs,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::Path,
    sync::Arc,
};

/// One file-backed mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub file_offset: u64,
    pub path: Arc<Path>,
    /// What to open to read the file: `path`, or for a file the daemon cannot reach by that path (another mount
    /// namespace, e.g. a container's root filesystem, or a deleted file) `/proc/self/fd/N` of a descriptor the
    /// symbolizer keeps open, so the stacks still symbolize after the container is gone.
    pub source: Arc<Path>,
    /// (device as in the maps, inode).
    pub file: (String, u64),
    /// Whether the mapping is executable (`x` in its permissions): code lives there.
    pub executable: bool,
    /// The file's device (`major << 32 | minor`) and inode: the same binary in every process.
    pub dev: u64,
    pub inode: u64,
}

/// The file-backed mappings of a `/proc/PID/maps` text, in address order. Anonymous, special (`[vdso]`)
/// and deleted files are left out: there is nothing to read symbols from.
pub fn parse(text: &str) -> Vec<Mapping> {
    let mut maps: Vec<Mapping> = crate::procfs::maps_lines(text)
        .filter(|line| line.path.starts_with('/') && !line.path.ends_with(" (deleted)"))
        .map(|line| Mapping {
            executable: line.perms.contains('x'),
            dev: u64::from(line.major) << 32 | u64::from(line.minor),
            inode: line.inode,
            start: line.start,
            end: line.end,
            file_offset: line.offset,
            path: Arc::from(Path::new(line.path)),
            source: Arc::from(Path::new(line.path)),
            file: (line.dev.to_owned(), line.inode),
        })
        .collect();
    maps.sort_unstable_by_key(|m| m.start);
    maps
}

/// Files of other mount namespaces kept open, by (device, inode): the file and its `/proc/self/fd/N` path.
pub type OpenFiles = lru::LruCache<(String, u64), Arc<(fs::File, Arc<Path>)>>;

/// Reads and parses the maps of a live process, as they are: every `source` is the mapping's own path.
pub fn read_parsed(pid: u32) -> Option<Vec<Mapping>> {
    Some(parse(&fs::read_to_string(format!("/proc/{pid}/maps")).ok()?))
}

/// Reads and parses the maps of a live process. Files the daemon cannot reach by their path are opened through
/// `/proc/PID/map_files` and kept open in `open` (keyed by device and inode, at most `max_open`).
pub fn read(pid: u32, open: &mut OpenFiles) -> Option<Vec<Mapping>> {
    let mut maps = read_parsed(pid)?;
    for mapping in &mut maps {
        let dev = |meta: &fs::Metadata| {
            let (major, minor) = crate::procfs::dev_numbers(meta.dev());
            format!("{major:02x}:{minor:02x}")
        };
        let reachable = fs::metadata(&mapping.path).is_ok_and(|m| (dev(&m), m.ino()) == mapping.file);
        if reachable {
            continue;
        }
        if let Some(kept) = open.get(&mapping.file) {
            mapping.source = kept.1.clone();
            continue;
        }
        let link = format!("/proc/{pid}/map_files/{:x}-{:x}", mapping.start, mapping.end);
        let Ok(file) = fs::File::open(&link) else { continue };
        let source: Arc<Path> = Arc::from(Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd())));
        mapping.source = source.clone();
        open.put(mapping.file.clone(), Arc::new((file, source)));
    }
    Some(maps)
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
        assert_eq!(maps.len(), 4);
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
        assert!(lookup(&maps, 0x7f1e_2a60_0010).is_none(), "deleted files are left out");
    }

    #[test]
    fn own_maps_are_readable() {
        let mut open = lru::LruCache::new(std::num::NonZeroUsize::MIN);
        let maps = read(std::process::id(), &mut open).expect("own maps");
        assert!(maps.iter().all(|m| m.source == m.path), "every own file is reachable by its path");
        assert!(maps.iter().any(|m| m.path.to_string_lossy().contains("libc.so")));
    }
}

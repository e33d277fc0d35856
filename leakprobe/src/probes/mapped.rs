//! Executable file mappings of a process, and files told apart as the kernel tells them apart (device and inode):
//! what discovery and the kernel unwinder's tables both start from.

use std::{
    collections::HashSet,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// A file as the kernel tells files apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
}

impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x}:{:02x}:{}", self.major, self.minor, self.inode)
    }
}

impl FileId {
    /// The id of a file from its metadata.
    pub(super) fn of(meta: &fs::Metadata) -> Self {
        let (major, minor) = crate::procfs::dev_numbers(meta.dev());
        Self { major, minor, inode: meta.ino() }
    }
}

/// An executable, file-backed mapping of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecMapping {
    pub start: u64,
    pub end: u64,
    pub file: FileId,
    /// The path as the process sees it (in its own mount namespace).
    pub path: String,
    /// The file was deleted or replaced since it was mapped.
    pub deleted: bool,
}

/// The executable file mappings of a `/proc/PID/maps` text, one per file.
pub fn exec_mappings(text: &str) -> Vec<ExecMapping> {
    let mut seen = HashSet::new();
    crate::procfs::maps_lines(text)
        .filter(|line| line.perms.contains('x') && line.inode != 0 && line.path.starts_with('/'))
        .map(|line| {
            let (path, deleted) = match line.path.strip_suffix(" (deleted)") {
                Some(path) => (path, true),
                None => (line.path, false),
            };
            ExecMapping {
                start: line.start,
                end: line.end,
                file: FileId { major: line.major, minor: line.minor, inode: line.inode },
                path: path.to_owned(),
                deleted,
            }
        })
        .filter(|m| seen.insert(m.file))
        .collect()
}

/// The path to open a mapped file through, and the path to show for it. The process's own path when it leads to
/// the same inode from here; otherwise (another mount namespace, a deleted or replaced file) the kernel's link to
/// the mapped file itself, shown as the path under the process's root.
pub(super) fn open_path(pid: u32, mapping: &ExecMapping) -> (PathBuf, PathBuf) {
    let own = Path::new(&mapping.path);
    if !mapping.deleted && fs::metadata(own).is_ok_and(|meta| FileId::of(&meta) == mapping.file) {
        return (own.to_path_buf(), own.to_path_buf());
    }
    let link = PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", mapping.start, mapping.end));
    let shown = PathBuf::from(format!("/proc/{pid}/root{}", mapping.path));
    (link, shown)
}

/// The id under which processes' maps show `file`, read from this process's own mapping of its first page.
/// It differs from the file's `stat` on an overlay filesystem (a container's root), whose mappings are of the
/// underlying file; the uprobes go to that file too. `None` for a file that cannot be mapped.
pub(super) fn mapped_id(file: &fs::File) -> Option<FileId> {
    // SAFETY: a private read-only mapping of one page, dropped before returning; nothing reads through it.
    let map = unsafe { memmap2::MmapOptions::new().len(1).map(file) }.ok()?;
    let start = map.as_ptr() as u64;
    let text = fs::read_to_string("/proc/self/maps").ok()?;
    crate::procfs::maps_lines(&text).find(|line| line.start == start).map(|line| FileId {
        major: line.major,
        minor: line.minor,
        inode: line.inode,
    })
}

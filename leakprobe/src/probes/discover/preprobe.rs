//! Probing allocator libraries before any process maps them, so that a process's first allocation is seen.
//!
//! Uprobes sit on a file (device and inode): a file probed before a process maps it is probed from that
//! process's first instruction. With `--malloc-probes all`, discovery probes the allocator libraries of the
//! dynamic loader's directories (`/etc/ld.so.conf` with its includes, and the default ones): the host's at
//! start-up, kept for the daemon's lifetime; and a new mount namespace's (a container's root filesystem) as soon
//! as its first process calls `execve`, rather than at that process's scan 30 ms later. The latter race the
//! container's dynamic loader: what they miss is counted (`allocs_before_probes`).

use std::{
    collections::HashSet,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::{Discovery, Known, Probes};
use crate::probes::mapped::mapped_id;

/// Directories the dynamic loaders (glibc's, musl's) search on x86-64 besides `/etc/ld.so.conf`'s.
const DEFAULT_DIRS: [&str; 8] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
    "/usr/lib/x86_64-linux-musl",
];

/// File-name prefixes of the allocator libraries probed before use (musl's loader is its libc).
const NAME_PREFIXES: [&str; 7] =
    ["libc.so", "libc-", "libc.musl-", "ld-musl-", "libjemalloc.so", "libtcmalloc", "libmimalloc"];

/// Files examined at most per root.
const MAX_CANDIDATES: usize = 64;

/// Nested `include` lines followed at most.
const MAX_INCLUDE_DEPTH: u32 = 4;

/// The library directories of the root filesystem at `root`, as paths inside it (`/usr/lib/...`).
fn library_dirs(root: &Path) -> Vec<String> {
    let mut dirs = Vec::new();
    read_conf(root, "/etc/ld.so.conf", 0, &mut dirs);
    for dir in DEFAULT_DIRS {
        if !dirs.iter().any(|d| d == dir) {
            dirs.push(dir.to_owned());
        }
    }
    dirs
}

/// Adds the directories of the `ld.so.conf` file at `path` (inside `root`) and of its includes.
fn read_conf(root: &Path, path: &str, depth: u32, dirs: &mut Vec<String>) {
    let Ok(text) = fs::read_to_string(inside(root, path)) else { return };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include").filter(|p| p.starts_with([' ', '\t'])) {
            if depth >= MAX_INCLUDE_DEPTH {
                continue;
            }
            for pattern in pattern.split_whitespace() {
                // Relative patterns are relative to the including file's directory.
                let pattern = match pattern.strip_prefix('/') {
                    Some(_) => pattern.to_owned(),
                    None => format!(
                        "{}/{pattern}",
                        Path::new(path).parent().map_or("/etc".into(), |p| p.display().to_string())
                    ),
                };
                for file in matching(root, &pattern) {
                    read_conf(root, &file, depth + 1, dirs);
                }
            }
        } else if line.starts_with('/') && !dirs.iter().any(|d| d == line) {
            dirs.push(line.to_owned());
        }
    }
}

/// The files (inside `root`) matching `pattern`, an absolute path whose last part may hold one `*`.
fn matching(root: &Path, pattern: &str) -> Vec<String> {
    let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    let Some((prefix, suffix)) = name.split_once('*') else { return vec![pattern.to_owned()] };
    let Ok(entries) = fs::read_dir(inside(root, if dir.is_empty() { "/" } else { dir })) else { return Vec::new() };
    let mut files: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() >= prefix.len() + suffix.len() && n.starts_with(prefix) && n.ends_with(suffix))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    files.sort();
    files
}

/// `path` (absolute, inside the root filesystem) under `root`.
fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The allocator libraries of the root filesystem at `root`: (path to open, path inside the root).
pub fn candidates(root: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for dir in library_dirs(root) {
        let Ok(entries) = fs::read_dir(inside(root, &dir)) else { continue };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| NAME_PREFIXES.iter().any(|p| name.starts_with(p)))
            .collect();
        names.sort();
        for name in names {
            let path = format!("{dir}/{name}");
            found.push((inside(root, &path), path));
        }
    }
    found.truncate(MAX_CANDIDATES);
    found
}

impl Discovery {
    /// Probes the allocator libraries of the root filesystem at `root` that are not known yet (system-wide
    /// probes only); `pinned`: kept whether or not a process maps them. Returns how many files were probed.
    pub fn preprobe(&mut self, probes: &mut Probes, root: &Path, pinned: bool) -> usize {
        let Some(config) = self.config.as_ref().filter(|c| c.preprobe && self.system_wide) else { return 0 };
        let exclude = config.exclude.clone();
        let started = std::time::Instant::now();
        let mut attached = 0;
        for (target, inside_root) in candidates(root) {
            if exclude.iter().any(|prefix| inside_root.starts_with(prefix.as_str())) {
                continue;
            }
            let Ok(file) = fs::File::open(&target) else { continue };
            let Some(id) = mapped_id(&file) else { continue };
            if self.known.contains_key(&id) {
                continue;
            }
            // The host's files by their real path (a library is reached through symbolic links by its soname);
            // another root's through the first process's root, as found.
            let shown = if root == Path::new("/") {
                fs::canonicalize(&target).unwrap_or_else(|_| PathBuf::from(&inside_root))
            } else {
                target.clone()
            };
            let found_in = format!("{} (before use)", root.display());
            let Some(mut known) = self.examine_path(probes, &target, shown, id, &found_in) else { continue };
            if let Known::Provider(provider) = &mut known {
                provider.processes = 0;
                provider.pinned = pinned;
                provider.preprobed = true;
                attached += usize::from(provider.attached.is_some());
            }
            self.known.insert(id, known);
        }
        self.totals.files_preprobed += attached as u64;
        self.totals.preprobe_microseconds += u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        attached
    }
}

/// Mount namespaces remembered at most; past it the set starts again (a namespace seen again is examined
/// again, which finds its files known).
const MAX_NAMESPACES: usize = 4096;

/// The mount namespaces whose root filesystems were probed before use.
#[derive(Debug, Default)]
pub struct NewRoots {
    own: Option<u64>,
    seen: HashSet<u64>,
}

impl NewRoots {
    /// Remembers the daemon's own mount namespace: the host's root is probed at start-up.
    pub fn new() -> Self {
        Self { own: mount_namespace("self"), seen: HashSet::new() }
    }

    /// Process `pid` called `execve`: when it is the first seen in its mount namespace, the allocator libraries
    /// of its root filesystem are probed at once. Returns whether any was.
    pub fn on_exec(&mut self, discovery: &mut Discovery, probes: &mut Probes, pid: u32) -> bool {
        if !discovery.system_wide || !discovery.config.as_ref().is_some_and(|c| c.preprobe) {
            return false;
        }
        let Some(ns) = mount_namespace(&pid.to_string()) else { return false };
        if Some(ns) == self.own || self.seen.contains(&ns) {
            return false;
        }
        if self.seen.len() >= MAX_NAMESPACES {
            self.seen.clear();
        }
        self.seen.insert(ns);
        discovery.preprobe(probes, Path::new(&format!("/proc/{pid}/root")), false) > 0
    }
}

/// The mount namespace (its inode) of `/proc/<process>`.
fn mount_namespace(process: &str) -> Option<u64> {
    fs::metadata(format!("/proc/{process}/ns/mnt")).ok().map(|meta| meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let path = inside(root, path);
        fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }

    #[test]
    fn the_loader_configuration_and_its_includes_give_the_directories() {
        let root = tempfile::tempdir().expect("tempdir");
        write(root.path(), "/etc/ld.so.conf", "# comment\ninclude /etc/ld.so.conf.d/*.conf\n/opt/first\n");
        write(root.path(), "/etc/ld.so.conf.d/b.conf", "/opt/b # trailing\ninclude nested/*.conf\n");
        write(root.path(), "/etc/ld.so.conf.d/a.conf", "/opt/a\n");
        write(root.path(), "/etc/ld.so.conf.d/nested/n.conf", "/opt/nested\n");
        write(root.path(), "/etc/ld.so.conf.d/skip.txt", "/opt/skipped\n");
        let dirs = library_dirs(root.path());
        assert_eq!(&dirs[..4], ["/opt/a", "/opt/b", "/opt/nested", "/opt/first"]);
        assert!(!dirs.iter().any(|d| d == "/opt/skipped"));
        assert_eq!(&dirs[4..], DEFAULT_DIRS.map(str::to_owned));
    }

    #[test]
    fn only_allocator_libraries_are_candidates() {
        let root = tempfile::tempdir().expect("tempdir");
        for name in ["libc.so.6", "libm.so.6", "libjemalloc.so.2", "libcrypt.so.1", "ld-musl-x86_64.so.1"] {
            write(root.path(), &format!("/usr/lib/x86_64-linux-gnu/{name}"), "x");
        }
        let found: Vec<String> = candidates(root.path()).into_iter().map(|(_, inside)| inside).collect();
        assert_eq!(
            found,
            [
                "/usr/lib/x86_64-linux-gnu/ld-musl-x86_64.so.1",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
            ]
        );
    }

    #[test]
    fn a_files_mapped_id_is_its_own_on_a_plain_filesystem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lib");
        fs::write(&path, b"not empty").expect("write");
        let file = fs::File::open(&path).expect("open");
        let meta = fs::metadata(&path).expect("metadata");
        assert_eq!(mapped_id(&file), Some(crate::probes::mapped::FileId::of(&meta)));
    }
}

//! A memory cgroup with a small limit, owned by one test and removed on drop: cgroup v1 (`memory` hierarchy) when
//! mounted, else cgroup v2 with the memory controller (enabled in the root's subtree if it is not yet). Either
//! directly under the hierarchy's root, or, for a container, as `docker-<ID>.scope` in a test cgroup of its own
//! (as systemd places docker's containers in `system.slice`).

use std::fs;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{POLL_INTERVAL, fixture::Fixture};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Which cgroup version the test's cgroup is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A memory cgroup `/leakprobe-test-<pid>-<n>` directly under the hierarchy's root, or
/// `/leakprobe-test-<pid>-<n>/docker-<ID>.scope`.
pub struct MemoryCgroup {
    /// The cgroup's directory, then its parents that the test created, innermost first.
    dirs: Vec<PathBuf>,
    /// Its path as `/proc/PID/cgroup` shows it.
    path: String,
    version: Version,
}

/// The mount point of the cgroup v2 hierarchy, if mounted.
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, dir, kind) = (fields.next()?, fields.next()?, fields.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(dir))
    })
}

fn write(path: &Path, value: &str) {
    fs::write(path, value).unwrap_or_else(|e| panic!("write {value:?} to {}: {e}", path.display()));
}

fn has_word(path: &Path, word: &str) -> bool {
    fs::read_to_string(path).is_ok_and(|text| text.split_whitespace().any(|w| w == word))
}

/// cgroup v2: lets the children of `dir` have the memory controller.
fn enable_memory(dir: &Path) {
    if !has_word(&dir.join("cgroup.subtree_control"), "memory") {
        write(&dir.join("cgroup.subtree_control"), "+memory");
    }
}

impl MemoryCgroup {
    /// Creates the cgroup with `limit` bytes of memory and no swap beyond it.
    pub fn create(limit: u64) -> Self {
        Self::create_at(limit, None)
    }

    /// Creates `/leakprobe-test-<pid>-<n>/docker-<id>.scope` with `limit` bytes of memory and no swap beyond it:
    /// the cgroup of a docker container whose id is `id` (64 hexadecimal digits).
    pub fn create_container(limit: u64, id: &str) -> Self {
        Self::create_at(limit, Some(&format!("docker-{id}.scope")))
    }

    fn create_at(limit: u64, leaf: Option<&str>) -> Self {
        let name = format!("leakprobe-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (root, version) = if v1.join("memory.limit_in_bytes").is_file() {
            (v1.to_path_buf(), Version::V1)
        } else {
            let root = cgroup2_mount().expect("neither a cgroup v1 memory hierarchy nor cgroup v2 is mounted");
            assert!(
                has_word(&root.join("cgroup.controllers"), "memory"),
                "cgroup v2 at {} has no memory controller (it is bound to a v1 hierarchy?)",
                root.display()
            );
            enable_memory(&root);
            (root, Version::V2)
        };
        let mut cgroup = Self { dirs: Vec::new(), path: String::new(), version };
        let mut dir = root;
        for component in std::iter::once(name.as_str()).chain(leaf) {
            if version == Version::V2 && !cgroup.dirs.is_empty() {
                enable_memory(&dir);
            }
            dir = dir.join(component);
            fs::create_dir(&dir).unwrap_or_else(|e| panic!("create the cgroup {}: {e}", dir.display()));
            // Removed on drop, innermost first.
            cgroup.dirs.insert(0, dir.clone());
            cgroup.path = format!("{}/{component}", cgroup.path);
        }
        match version {
            Version::V1 => {
                write(&dir.join("memory.limit_in_bytes"), &limit.to_string());
                // Memory + swap at the same limit: the kill comes when memory is full, whether swap is on or not.
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                if memsw.is_file() {
                    write(&memsw, &limit.to_string());
                }
            }
            Version::V2 => {
                write(&dir.join("memory.max"), &limit.to_string());
                let swap = dir.join("memory.swap.max");
                if swap.is_file() {
                    write(&swap, "0");
                }
            }
        }
        cgroup
    }

    /// Moves process `pid` into the cgroup.
    pub fn add(&self, pid: u32) {
        write(&self.procs(), &pid.to_string());
    }

    /// The file a process joins the cgroup through (`cgroup.procs`).
    pub fn procs(&self) -> PathBuf {
        self.dirs[0].join("cgroup.procs")
    }

    /// The cgroup's path as `/proc/PID/cgroup` shows it: `/<name>`, or `/<name>/docker-<id>.scope`.
    pub fn path(&self) -> String {
        self.path.clone()
    }

    /// The cgroup version in use.
    pub fn version(&self) -> Version {
        self.version
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // A killed process leaves the cgroup when it is fully gone: retry for a while. No panic here: this may
        // run while the test is already failing.
        let deadline = Instant::now() + Duration::from_secs(10);
        for dir in &self.dirs {
            while let Err(err) = fs::remove_dir(dir) {
                if Instant::now() >= deadline {
                    eprintln!("could not remove the test cgroup {}: {err}", dir.display());
                    return;
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
    }
}

/// Runs the C leaker in `oom` mode in a new memory cgroup of `limit` bytes until the kernel OOM-kills it (the
/// process joins the cgroup before it allocates anything of note). Returns the cgroup, still existing, and the
/// victim's pid. Panics if the fixture ends any other way within `timeout`.
pub fn leaker_oom_killed(limit: u64, timeout: Duration) -> (MemoryCgroup, u32) {
    let cgroup = MemoryCgroup::create(limit);
    let mut fixture = Fixture::leaker("oom");
    fixture.wait_line("started");
    let pid = fixture.pid();
    cgroup.add(pid);
    fixture.send_line("go");
    let exit = fixture.wait_exit(timeout);
    assert_eq!(exit.signal(), Some(libc::SIGKILL), "the fixture should be OOM-killed, it ended with {exit}");
    (cgroup, pid)
}

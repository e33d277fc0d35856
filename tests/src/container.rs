//! A container as a runtime makes one, for tests: a root filesystem of its own (copies of a binary, of the host's
//! libc and of its dynamic loader: other inodes than the host's), mount and pid namespaces of its own (`unshare
//! --mount --pid --fork`), the root filesystem bind-mounted and made the namespace's root with `pivot_root` (as
//! runtimes do: the host's `/proc/PID/maps` then shows the container's paths, `/leaker`, which lead nowhere or to
//! other files on the host), and a memory cgroup named like docker's (`docker-<64 hex>.scope`) that the process
//! joins before it executes the container's binary.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use crate::Fixture;
use crate::cgroup::MemoryCgroup;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A container: its root filesystem (removed on drop, or by [`Container::remove_root`]) and its cgroup (removed on
/// drop). Drop the fixtures running in it first.
pub struct Container {
    root: Option<TempDir>,
    cgroup: MemoryCgroup,
    id: String,
}

/// Copies `from` to `root/to` (a new inode), creating directories.
fn copy_into(root: &Path, from: &Path, to: &str) {
    let dest = root.join(to.trim_start_matches('/'));
    fs::create_dir_all(dest.parent().expect("a parent")).expect("create directories in the root filesystem");
    fs::copy(from, &dest).unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), dest.display()));
}

/// A container id as docker makes them, 64 hexadecimal digits, unique to this test process and call, in its
/// first 12 digits too (the short form the tables show).
fn new_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:08x}{:04x}{nanos:052x}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff)
}

impl Container {
    /// A container whose root filesystem holds `binary` at `/<name>`, with the host's libc and dynamic loader,
    /// in a memory cgroup of `limit` bytes.
    pub fn new(binary: &str, name: &str, limit: u64) -> Self {
        let root = tempfile::Builder::new().prefix("leakprobe-container-").tempdir().expect("temp dir");
        let libc = fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").expect("the host's libc");
        let ld = fs::canonicalize("/lib64/ld-linux-x86-64.so.2").expect("the host's dynamic loader");
        copy_into(root.path(), Path::new(binary), &format!("/{name}"));
        copy_into(root.path(), &libc, "/lib/x86_64-linux-gnu/libc.so.6");
        copy_into(root.path(), &ld, "/lib64/ld-linux-x86-64.so.2");
        // Where `pivot_root` puts the host's root, inside the container's mount namespace.
        fs::create_dir(root.path().join(".old")).expect("create .old in the root filesystem");
        let id = new_id();
        let cgroup = MemoryCgroup::create_container(limit, &id);
        Self { root: Some(root), cgroup, id }
    }

    /// The container's id (64 hexadecimal digits).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's cgroup.
    pub fn cgroup(&self) -> &MemoryCgroup {
        &self.cgroup
    }

    /// The root filesystem's directory on the host.
    pub fn root(&self) -> &Path {
        self.root.as_ref().expect("the root filesystem was removed").path()
    }

    /// Starts `/<name> args...` in the container. The fixture is the `unshare` process (the program's stdin and
    /// stdout are its); [`program_pid`] tells the program's host pid once it printed something.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Fixture {
        let root = self.root().to_str().expect("utf-8 path");
        let procs = self.cgroup.procs();
        // The shell joins the cgroup and becomes `unshare`, whose child, a shell in the new namespaces, mounts the
        // root filesystem, pivots into it and becomes the program (pid 1 in its pid namespace): the program is in
        // the cgroup before it runs, as a runtime does it. The mounts end with the namespace (unshare makes its
        // mounts private: nothing propagates to the host's).
        let inner = format!("mount --bind {root} {root} && cd {root} && pivot_root . .old && exec /{name} \"$@\"");
        let script = format!(
            "echo $$ > {} && exec unshare --mount --pid --fork --kill-child sh -c '{inner}' container \"$@\"",
            procs.display()
        );
        let mut sh_args = vec!["-c", script.as_str(), "container"];
        sh_args.extend(args);
        Fixture::spawn("sh", &sh_args)
    }

    /// Deletes the root filesystem, as removing a container does.
    pub fn remove_root(&mut self) {
        let root = self.root.take().expect("the root filesystem was removed already");
        let path = root.path().to_path_buf();
        root.close().unwrap_or_else(|e| panic!("remove the root filesystem {}: {e}", path.display()));
        assert!(!path.exists(), "{} still exists", path.display());
    }
}

/// The host pid of the program a [`Container::spawn`] fixture runs: `unshare`'s child.
pub fn program_pid(fixture: &Fixture) -> u32 {
    let children =
        fs::read_to_string(format!("/proc/{0}/task/{0}/children", fixture.pid())).expect("unshare's children");
    children.split_whitespace().next().and_then(|p| p.parse().ok()).expect("unshare forked the program")
}

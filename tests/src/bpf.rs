//! Kernel-side view of a process's eBPF objects: the ids in `/proc/PID/fdinfo`, whether an id still exists
//! (`BPF_PROG_GET_FD_BY_ID` / `BPF_LINK_GET_FD_BY_ID`), and what `bpftool` lists.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::{describe, poll_until};

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;

/// The eBPF programs and links a process holds file descriptors to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BpfObjects {
    pub prog_ids: BTreeSet<u32>,
    pub link_ids: BTreeSet<u32>,
}

/// Reads the ids of the programs and links `pid` holds.
pub fn objects_of(pid: u32) -> BpfObjects {
    let fd_dir = format!("/proc/{pid}/fd");
    let mut objects = BpfObjects::default();
    for entry in std::fs::read_dir(&fd_dir).unwrap_or_else(|e| panic!("read {fd_dir}: {e}")) {
        let entry = entry.expect("fd directory entry");
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let key = match &*target {
            "anon_inode:bpf-prog" => "prog_id:",
            "anon_inode:bpf_link" => "link_id:",
            _ => continue,
        };
        let fdinfo = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let Ok(info) = std::fs::read_to_string(&fdinfo) else {
            continue;
        };
        let id = info
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("{fdinfo} ({target}) has no {key} line:\n{info}"));
        if key == "prog_id:" {
            objects.prog_ids.insert(id);
        } else {
            objects.link_ids.insert(id);
        }
    }
    objects
}

fn id_exists(cmd: libc::c_long, id: u32) -> bool {
    // union bpf_attr for *_GET_FD_BY_ID: { u32 id; u32 next_id; u32 open_flags; }, the rest zero.
    let mut attr = [0u32; 16];
    attr[0] = id;
    let size = libc::c_uint::try_from(size_of_val(&attr)).expect("attr size fits");
    // SAFETY: bpf(2) reads `size` bytes of `attr`, which lives across the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size) };
    if fd >= 0 {
        let fd = libc::c_int::try_from(fd).expect("fd fits c_int");
        // SAFETY: closing the fd the kernel just gave us.
        unsafe { libc::close(fd) };
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "bpf(cmd {cmd}, id {id}) failed unexpectedly: {err}");
    false
}

/// Whether the program with this id is still loaded.
pub fn prog_exists(id: u32) -> bool {
    id_exists(BPF_PROG_GET_FD_BY_ID, id)
}

/// Whether the link with this id still exists.
pub fn link_exists(id: u32) -> bool {
    id_exists(BPF_LINK_GET_FD_BY_ID, id)
}

/// Which of `objects` still exist in the kernel.
pub fn still_existing(objects: &BpfObjects) -> BpfObjects {
    BpfObjects {
        prog_ids: objects.prog_ids.iter().copied().filter(|&id| prog_exists(id)).collect(),
        link_ids: objects.link_ids.iter().copied().filter(|&id| link_exists(id)).collect(),
    }
}

/// `bpftool -j ARGS`, parsed.
pub fn bpftool(args: &[&str]) -> Vec<Value> {
    let out =
        Command::new("bpftool").arg("-j").args(args).output().expect("run bpftool (cargo xtask setup installs it)");
    assert!(out.status.success(), "bpftool {args:?} failed\n{}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?}: bad JSON ({e})"))
}

/// Waits until `bpftool link show`, `prog show` and `perf show` list none of `held` (the objects a daemon with pid
/// `pid` held before it stopped) and no perf event of `pid`; fails after 10 s.
pub fn wait_until_bpftool_lists_none(held: &BpfObjects, pid: u32) {
    let held_link = |id: Option<u64>| id.is_some_and(|id| held.link_ids.iter().any(|&h| u64::from(h) == id));
    let held_prog = |id: Option<u64>| id.is_some_and(|id| held.prog_ids.iter().any(|&h| u64::from(h) == id));
    poll_until(Duration::from_secs(10), "bpftool to list none of the daemon's objects", || {
        let links = bpftool(&["link", "show"]);
        let progs = bpftool(&["prog", "show"]);
        let perf = bpftool(&["perf", "show"]);
        let left_links = links.iter().any(|l| held_link(l["id"].as_u64()) || held_prog(l["prog_id"].as_u64()));
        let left_progs = progs.iter().any(|p| held_prog(p["id"].as_u64()));
        let left_perf = perf.iter().any(|p| p["pid"].as_u64() == Some(u64::from(pid)));
        (!left_links && !left_progs && !left_perf).then_some(())
    });
}

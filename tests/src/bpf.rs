//! Kernel-side view of a process's eBPF objects, without bpftool: the ids in `/proc/PID/fdinfo`, and whether an id
//! still exists (`BPF_PROG_GET_FD_BY_ID` / `BPF_LINK_GET_FD_BY_ID`).

use std::collections::BTreeSet;

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

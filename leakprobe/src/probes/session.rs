//! Session uprobes (`BPF_TRACE_UPROBE_SESSION`, kernel 6.13+), which aya 0.14 cannot load or attach.
//!
//! One program runs at both the entry and the return of a call; when its entry returns 1 the kernel skips the
//! return trap, so unsampled calls cost one trap instead of two (see `leakprobe-ebpf/src/probes/session.rs`).
//! The minimal support, in three steps:
//! 1. [`patch_kfunc_calls`]: before aya sees the object, each call against an undefined symbol named in
//!    [`SESSION_KFUNCS`] becomes a kfunc call (`src_reg = BPF_PSEUDO_KFUNC_CALL`, `imm` = the function's id in
//!    the running kernel's BTF). aya would otherwise take it for a call to a missing BPF function and refuse the
//!    whole object. aya never loads this program, so the rewrite is made (with id 0) even without session
//!    support.
//! 2. [`SessionProgram::load`]: the object is parsed again with `aya_obj`, its map references relocated
//!    against the maps aya created, and the program loaded with `BPF_PROG_LOAD` as a kprobe-type program whose
//!    expected attach type is `BPF_TRACE_UPROBE_SESSION`, with the object's BTF (fixed up and sanitized as aya
//!    does, loaded with `BPF_BTF_LOAD`) and the program's `func_info`/`line_info`: the kernel unwinder's
//!    `bpf_loop` callbacks are refused without them. A kernel without session uprobes refuses this load: that
//!    failure is what `--return-probes auto` falls back on.
//! 3. [`SessionProgram::attach`]: one `BPF_LINK_CREATE` `uprobe_multi` link with every allocating function's
//!    file offset and, as attach cookie, its [`AllocFn`]. Closing the link's fd detaches.

use std::{
    collections::HashSet,
    ffi::CString,
    fs,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
};

use aya::Ebpf;
use aya_obj::{
    btf::{Btf, BtfKind},
    generated::{BPF_PSEUDO_KFUNC_CALL, bpf_attr, bpf_cmd, bpf_insn, bpf_prog_type},
};
use leakprobe_common::{ALLOC_SESSION_PROGRAM, AllocFn, SESSION_KFUNCS};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget};

/// `BPF_TRACE_UPROBE_SESSION` of `enum bpf_attach_type` (`include/uapi/linux/bpf.h`, added in Linux 6.13 after
/// `BPF_TRACE_KPROBE_SESSION` = 56). aya-obj 0.3's generated bindings stop at `BPF_NETKIT_PEER` = 55; enum
/// values of the UAPI are ABI and never change once released, and a kernel that does not know this one
/// refuses the program load with `EINVAL`.
pub const BPF_TRACE_UPROBE_SESSION: u32 = 57;

/// `BPF_PSEUDO_KFUNC_CALL` (2) in the `src_reg` nibble of a call: the call is to a kernel function.
#[expect(clippy::cast_possible_truncation, reason = "asserted to fit in the nibble")]
const KFUNC_SRC_REG: u8 = {
    assert!(BPF_PSEUDO_KFUNC_CALL < 16);
    (BPF_PSEUDO_KFUNC_CALL as u8) << 4
};
/// `BPF_JMP | BPF_CALL`: the opcode of a call instruction.
const BPF_CALL_OPCODE: u8 = 0x85;

/// Which return path the allocating functions use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReturnProbes {
    /// Session uprobes when the kernel has them (6.13+), plain return probes otherwise.
    #[default]
    Auto,
    /// Session uprobes: unsampled calls skip the return trap. Fails on kernels without them.
    Session,
    /// An entry uprobe and a uretprobe per function: every call pays the return trap.
    Plain,
}

/// Why session uprobes are not available.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")]
    Btf(#[source] aya_obj::btf::BtfError),
    #[error("the kernel has no kfunc `{0}` (session uprobes need Linux 6.13 or later)")]
    NoKfunc(&'static str),
    #[error("the eBPF object: {0}")]
    Object(String),
    #[error("the eBPF object has no program `{ALLOC_SESSION_PROGRAM}` (build mismatch)")]
    NoProgram,
    #[error("the eBPF object's map `{0}` was not created by aya")]
    NoMap(String),
    #[error(
        "the kernel refused the session program (BPF_PROG_LOAD, expected attach type BPF_TRACE_UPROBE_SESSION): {source}{log}"
    )]
    Load { source: std::io::Error, log: String },
    /// Linux 6.12 has both kfuncs in its BTF but its verifier allows them in no uprobe program
    /// (`calling kernel function bpf_session_is_return is not allowed`): `EACCES`, which is no privilege problem.
    #[error(
        "session uprobes need Linux 6.13 or later (this kernel is {release}): it refused the session program ({source}){log}"
    )]
    KernelTooOld { release: String, source: std::io::Error, log: String },
    #[error("the eBPF object's BTF: {0}")]
    ObjectBtf(String),
    #[error("the kernel refused the eBPF object's BTF (BPF_BTF_LOAD)")]
    BtfLoad(#[source] std::io::Error),
    #[error("attaching the session program to {path} (BPF_LINK_CREATE uprobe_multi)")]
    Attach { path: String, source: std::io::Error },
}

/// The kernel's BTF ids of [`SESSION_KFUNCS`], in that order.
pub fn kfunc_ids() -> Result<[u32; 2], SessionError> {
    let btf = Btf::from_sys_fs().map_err(SessionError::Btf)?;
    let mut ids = [0; SESSION_KFUNCS.len()];
    for (id, name) in ids.iter_mut().zip(SESSION_KFUNCS) {
        *id = btf.id_by_type_name_kind(name, BtfKind::Func).map_err(|_| SessionError::NoKfunc(name))?;
    }
    Ok(ids)
}

/// A copy of the ELF object `elf` whose calls to [`SESSION_KFUNCS`] are kfunc calls with the BTF ids `ids`.
pub fn patch_kfunc_calls(elf: &[u8], ids: [u32; 2]) -> Result<Vec<u8>, SessionError> {
    let file = object::File::parse(elf).map_err(|e| SessionError::Object(e.to_string()))?;
    let mut patched = elf.to_vec();
    for section in file.sections() {
        let Some((section_offset, section_size)) = section.file_range() else { continue };
        for (offset, relocation) in section.relocations() {
            let RelocationTarget::Symbol(index) = relocation.target() else { continue };
            let Ok(symbol) = file.symbol_by_index(index) else { continue };
            if !symbol.is_undefined() {
                continue;
            }
            let Some(id) = SESSION_KFUNCS.iter().position(|&n| symbol.name() == Ok(n)).map(|i| ids[i]) else {
                continue;
            };
            if offset + 8 > section_size {
                return Err(SessionError::Object(format!("relocation at {offset:#x} past its section")));
            }
            let at = usize::try_from(section_offset + offset).map_err(|e| SessionError::Object(e.to_string()))?;
            let insn = &mut patched[at..at + 8];
            if insn[0] != BPF_CALL_OPCODE {
                return Err(SessionError::Object(format!(
                    "relocation against `{}` not on a call",
                    symbol.name().unwrap_or("?")
                )));
            }
            // Byte 1 holds dst_reg (low nibble) and src_reg (high nibble); then off (2 bytes), imm (4 bytes).
            insn[1] = (insn[1] & 0x0f) | KFUNC_SRC_REG;
            insn[2..4].copy_from_slice(&0_i16.to_le_bytes());
            insn[4..8].copy_from_slice(&id.to_le_bytes());
        }
    }
    Ok(patched)
}

/// The loaded session program. Its links are owned by the callers of [`SessionProgram::attach`]: closing a
/// link's fd detaches it.
pub struct SessionProgram {
    prog: OwnedFd,
}

impl SessionProgram {
    /// Loads the session program of `elf` (as patched by [`patch_kfunc_calls`]) against the maps `ebpf` created.
    pub fn load(elf: &[u8], ebpf: &Ebpf) -> Result<Self, SessionError> {
        let mut obj = aya_obj::Object::parse(elf).map_err(|e| SessionError::Object(e.to_string()))?;
        let btf = load_btf(&mut obj)?;
        let mut fds = Vec::new();
        for name in obj.maps.keys() {
            let map = ebpf.map(name).and_then(map_data).ok_or_else(|| SessionError::NoMap(name.clone()))?;
            fds.push((name.clone(), map.fd().as_fd().as_raw_fd()));
        }
        let maps = obj.maps.clone();
        let text_sections: HashSet<usize> = obj.functions.keys().map(|&(section, _)| section).collect();
        let refs = fds.iter().filter_map(|(name, fd)| maps.get(name).map(|map| (name.as_str(), *fd, map)));
        obj.relocate_maps(refs, &text_sections).map_err(|e| SessionError::Object(e.to_string()))?;
        obj.relocate_calls(&text_sections).map_err(|e| SessionError::Object(e.to_string()))?;
        let program = obj.programs.get(ALLOC_SESSION_PROGRAM).ok_or(SessionError::NoProgram)?;
        let function = obj.functions.get(&program.function_key()).ok_or(SessionError::NoProgram)?;
        let prog = prog_load(function, &program.license, btf.as_ref())?;
        Ok(Self { prog })
    }

    /// Attaches the program to the allocating functions of the file at `path` (file offsets), in process `pid`
    /// or, when `pid` is 0, in every process that maps the file, now or later. Returns the link.
    pub fn attach(&self, path: &Path, functions: &[(AllocFn, u64)], pid: u32) -> Result<OwnedFd, SessionError> {
        let attach_err = |source| SessionError::Attach { path: path.display().to_string(), source };
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| attach_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        let offsets: Vec<u64> = functions.iter().map(|&(_, offset)| offset).collect();
        let cookies: Vec<u64> = functions.iter().map(|&(func, _)| u64::from(func as u32)).collect();
        let cnt = u32::try_from(offsets.len()).map_err(|e| attach_err(std::io::Error::other(e)))?;
        // SAFETY: `bpf_attr` is a C union of integers: all zeroes is its documented initial state.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writes to fields of a zeroed union of plain integers; the pointers stay valid (they borrow
        // locals that outlive the syscall below).
        unsafe {
            let link = &mut attr.link_create;
            link.__bindgen_anon_1.prog_fd = fd_u32(self.prog.as_raw_fd());
            link.attach_type = BPF_TRACE_UPROBE_SESSION;
            let multi = &mut link.__bindgen_anon_3.uprobe_multi;
            multi.path = c_path.as_ptr() as u64;
            multi.offsets = offsets.as_ptr() as u64;
            multi.cookies = cookies.as_ptr() as u64;
            multi.cnt = cnt;
            multi.pid = pid;
        }
        bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr).map_err(attach_err)
    }
}

/// The map behind `map`, for the kinds of maps the object declares.
fn map_data(map: &aya::maps::Map) -> Option<&aya::maps::MapData> {
    use aya::maps::Map;
    match map {
        Map::Array(data)
        | Map::HashMap(data)
        | Map::LruHashMap(data)
        | Map::PerCpuArray(data)
        | Map::PerCpuHashMap(data)
        | Map::PerCpuLruHashMap(data)
        | Map::RingBuf(data)
        | Map::StackTraceMap(data) => Some(data),
        _ => None,
    }
}

/// The object's BTF, fixed up and sanitized for the running kernel as aya does it, loaded with `BPF_BTF_LOAD`;
/// `None` when the kernel or the object has no BTF (a program with `bpf_loop` callbacks then fails to load).
fn load_btf(obj: &mut aya_obj::Object) -> Result<Option<OwnedFd>, SessionError> {
    let Some(features) = aya::features().btf() else { return Ok(None) };
    let Some(btf) = obj.fixup_and_sanitize_btf(features).map_err(|e| SessionError::ObjectBtf(e.to_string()))? else {
        return Ok(None);
    };
    let bytes = btf.to_bytes();
    // SAFETY: as in `attach`: a zeroed union of integers.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: field writes into the zeroed union; the pointer borrows `bytes`, which outlives the syscall.
    unsafe {
        let load = &mut attr.__bindgen_anon_7;
        load.btf = bytes.as_ptr() as u64;
        load.btf_size = u32::try_from(bytes.len()).map_err(|e| SessionError::ObjectBtf(e.to_string()))?;
    }
    bpf(bpf_cmd::BPF_BTF_LOAD, &mut attr).map(Some).map_err(SessionError::BtfLoad)
}

/// `BPF_PROG_LOAD` of `function` (relocated, with its callees) as a session program, with the object's BTF
/// `btf` and the function's `func_info`/`line_info` when there is BTF. On refusal, loads again with the verifier
/// log for the error.
fn prog_load(
    function: &aya_obj::Function,
    license: &std::ffi::CStr,
    btf: Option<&OwnedFd>,
) -> Result<OwnedFd, SessionError> {
    let insns: &[bpf_insn] = &function.instructions;
    let func_info = function.func_info.func_info_bytes();
    let line_info = function.line_info.line_info_bytes();
    let mut log = vec![0_u8; 1 << 20];
    let attempt = |log: Option<&mut [u8]>| {
        // SAFETY: as in `attach`: a zeroed union of integers.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: field writes into the zeroed union; the pointers borrow `insns`, `license`, `func_info`,
        // `line_info` and `log`, which outlive the syscall.
        unsafe {
            let load = &mut attr.__bindgen_anon_3;
            load.prog_type = bpf_prog_type::BPF_PROG_TYPE_KPROBE as u32;
            load.expected_attach_type = BPF_TRACE_UPROBE_SESSION;
            load.insns = insns.as_ptr() as u64;
            load.insn_cnt = u32::try_from(insns.len()).unwrap_or(u32::MAX);
            load.license = license.as_ptr() as u64;
            for (dst, &src) in load.prog_name.iter_mut().zip(ALLOC_SESSION_PROGRAM.as_bytes().iter().take(15)) {
                *dst = src.cast_signed();
            }
            if let Some(btf) = btf {
                load.prog_btf_fd = fd_u32(btf.as_raw_fd());
                if function.func_info_rec_size > 0 {
                    load.func_info = func_info.as_ptr() as u64;
                    load.func_info_cnt = u32::try_from(function.func_info.len()).unwrap_or(u32::MAX);
                    load.func_info_rec_size = u32::try_from(function.func_info_rec_size).unwrap_or(u32::MAX);
                }
                if function.line_info_rec_size > 0 {
                    load.line_info = line_info.as_ptr() as u64;
                    load.line_info_cnt = u32::try_from(function.line_info.len()).unwrap_or(u32::MAX);
                    load.line_info_rec_size = u32::try_from(function.line_info_rec_size).unwrap_or(u32::MAX);
                }
            }
            if let Some(log) = log {
                load.log_level = 1;
                load.log_buf = log.as_mut_ptr() as u64;
                load.log_size = u32::try_from(log.len()).unwrap_or(u32::MAX);
            }
        }
        bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
    };
    attempt(None).or_else(|source| {
        if let Ok(fd) = attempt(Some(&mut log)) {
            return Ok(fd);
        }
        let text = String::from_utf8_lossy(&log);
        let text = text.trim_end_matches('\0').trim();
        // The end of the verifier log says why.
        let tail: Vec<&str> = text.lines().rev().take(6).collect();
        let log = if tail.is_empty() {
            String::new()
        } else {
            format!("\nverifier: {}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
        };
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let release = release.trim();
        if older_than_6_13(release) {
            return Err(SessionError::KernelTooOld { release: release.to_owned(), source, log });
        }
        Err(SessionError::Load { source, log })
    })
}

/// Whether the kernel release `release` (`uname -r`, e.g. `6.12.118+deb12-amd64`) predates Linux 6.13, the first
/// with session uprobes. An unparsable release is not called old.
fn older_than_6_13(release: &str) -> bool {
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).map(str::parse::<u32>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) < (6, 13),
        _ => false,
    }
}

fn fd_u32(fd: RawFd) -> u32 {
    // A valid fd is never negative.
    u32::try_from(fd).unwrap_or(u32::MAX)
}

/// The `bpf(2)` system call for a command that returns a new fd.
fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> Result<OwnedFd, std::io::Error> {
    let ret = sys_bpf(cmd, attr)?;
    let fd = RawFd::try_from(ret).map_err(std::io::Error::other)?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The `bpf(2)` system call: its non-negative return, or the error. The kernel may write results into `attr`.
pub(crate) fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> Result<libc::c_long, std::io::Error> {
    // SAFETY: `attr` is a fully initialized `bpf_attr` whose pointers are valid for the call; the size passed
    // is its own.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_int, std::ptr::from_mut(attr), size_of::<bpf_attr>()) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kfunc_calls_are_rewritten() {
        let object = crate::probes::EBPF_OBJECT;
        let patched = patch_kfunc_calls(object, [7, 9]).expect("the object parses");
        assert_eq!(patched.len(), object.len());
        let changed: Vec<usize> =
            (0..object.len()).step_by(8).filter(|&i| object[i..i + 8] != patched[i..i + 8]).collect();
        assert!(changed.len() >= 2, "both kfuncs are called at least once: {changed:?}");
        for at in changed {
            assert_eq!(patched[at], BPF_CALL_OPCODE);
            assert_eq!(patched[at + 1] >> 4, 2, "src_reg is BPF_PSEUDO_KFUNC_CALL");
            let imm = u32::from_le_bytes(patched[at + 4..at + 8].try_into().expect("4 bytes"));
            assert!(imm == 7 || imm == 9, "imm {imm}");
        }
    }

    #[test]
    fn kernels_before_6_13_are_named_too_old() {
        assert!(older_than_6_13("6.12.118+deb12-amd64"));
        assert!(older_than_6_13("6.1.0-57-amd64"));
        assert!(older_than_6_13("5.15.0"));
        assert!(!older_than_6_13("6.13.0"));
        assert!(!older_than_6_13("6.18.44-fc-v1272"));
        assert!(!older_than_6_13("7.0"));
        assert!(!older_than_6_13(""));
        let err = SessionError::KernelTooOld {
            release: "6.12.118+deb12-amd64".into(),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
            log: String::new(),
        };
        assert!(err.to_string().starts_with("session uprobes need Linux 6.13 or later (this kernel is 6.12.118"));
    }

    #[test]
    fn the_running_kernel_has_the_session_kfuncs() {
        // Kernel 6.13+ (this machine runs 6.18): both kfuncs are in its BTF.
        let ids = kfunc_ids().expect("session kfuncs in the kernel's BTF");
        assert!(ids.iter().all(|&id| id > 0));
    }
}

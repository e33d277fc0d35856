//! Checks that the kernel and the process can run leakprobe, with a precise message when not.

use std::{
    ffi::CString,
    fs,
    io::ErrorKind,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use super::ProbeError;

/// Where the kernel features are looked for; a root other than `/` is only for tests.
#[derive(Clone, Debug)]
pub struct SysPaths {
    pub btf: PathBuf,
    pub uprobe_pmu: PathBuf,
    pub tracefs: PathBuf,
}

impl Default for SysPaths {
    fn default() -> Self {
        Self {
            btf: "/sys/kernel/btf/vmlinux".into(),
            uprobe_pmu: "/sys/bus/event_source/devices/uprobe/type".into(),
            tracefs: "/sys/kernel/tracing".into(),
        }
    }
}

/// Fails with the first missing kernel feature: BTF, uprobes, tracefs (mounted here if missing). The
/// capabilities are checked before (`privileges::check`).
pub fn check(paths: &SysPaths) -> Result<(), ProbeError> {
    if !paths.btf.exists() {
        return Err(ProbeError::NoBtf(paths.btf.clone()));
    }
    if !paths.uprobe_pmu.exists() {
        return Err(ProbeError::NoUprobes(paths.uprobe_pmu.clone()));
    }
    ensure_tracefs(&paths.tracefs)
}

fn ensure_tracefs(dir: &Path) -> Result<(), ProbeError> {
    let events = dir.join("events");
    match fs::metadata(&events) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        // Not mounted: the mount point is empty.
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        // Mounted but out of reach (tracefs is mode 0700: a user without CAP_DAC_READ_SEARCH).
        Err(source) => return Err(ProbeError::Io { path: events, source }),
        Ok(_) => {}
    }
    log::info!("mounting tracefs on {}", dir.display());
    mount_tracefs(dir).map_err(|source| ProbeError::NoTracefs { path: dir.to_path_buf(), source })?;
    if events.is_dir() {
        Ok(())
    } else {
        let source = std::io::Error::new(ErrorKind::NotFound, "no events directory after mounting");
        Err(ProbeError::NoTracefs { path: dir.to_path_buf(), source })
    }
}

/// `mount -t tracefs nodev DIR` as a system call: it needs `CAP_SYS_ADMIN` and works for a non-root user holding
/// it, where mount(8) refuses anyone but root.
fn mount_tracefs(dir: &Path) -> std::io::Result<()> {
    let target = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: NUL-terminated strings that outlive the call; tracefs takes no data argument.
    let rc = unsafe { libc::mount(c"nodev".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// One field of a tracepoint record, as its format file describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Byte offset from the start of the record.
    pub offset: u32,
    /// Size in bytes (4 for a `__data_loc`, which holds `len << 16 | offset` of the data).
    pub size: u32,
    /// A `__data_loc` (variable-length) field.
    pub data_loc: bool,
}

/// Field `name` of a tracepoint's format file text, if it exists and parses.
pub fn field(format: &str, name: &str) -> Option<Field> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        let ident = decl.rsplit(|c: char| c.is_whitespace() || c == '*').next()?;
        if ident.split('[').next()? != name {
            return None;
        }
        let rest: Vec<&str> = parts.collect();
        let number = |key: &str| rest.iter().find_map(|p| p.strip_prefix(key)).and_then(|v| v.parse().ok());
        Some(Field { offset: number("offset:")?, size: number("size:")?, data_loc: decl.starts_with("__data_loc") })
    })
}

/// Byte offset of field `name` in a tracepoint's format file text, if the field exists.
pub fn field_offset(format: &str, name: &str) -> Option<u32> {
    field(format, name).map(|f| f.offset)
}

/// Reads a tracepoint's format file.
pub fn read_format(tracefs: &Path, category: &str, name: &str) -> Result<String, ProbeError> {
    let path = tracefs.join("events").join(category).join(name).join("format");
    fs::read_to_string(&path).map_err(|source| ProbeError::Io { path, source })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const EXIT_FORMAT: &str = "name: sched_process_exit
ID: 369
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;
";

    #[test]
    fn finds_field_offsets() {
        assert_eq!(field_offset(EXIT_FORMAT, "group_dead"), Some(32));
        assert_eq!(field_offset(EXIT_FORMAT, "comm"), Some(8));
        assert_eq!(field_offset(EXIT_FORMAT, "pid"), Some(24));
        assert_eq!(field_offset(EXIT_FORMAT, "nothing"), None);
        assert_eq!(field_offset("garbage\nfield:\n", "pid"), None);
    }

    /// This machine's (Linux 6.18) `oom/mark_victim` format file.
    pub(crate) const MARK_VICTIM_FORMAT: &str = "name: mark_victim
ID: 609
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;
\tfield:unsigned long total_vm;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long anon_rss;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned long file_rss;\toffset:32;\tsize:8;\tsigned:0;
\tfield:unsigned long shmem_rss;\toffset:40;\tsize:8;\tsigned:0;
\tfield:uid_t uid;\toffset:48;\tsize:4;\tsigned:0;
\tfield:unsigned long pgtables;\toffset:56;\tsize:8;\tsigned:0;
\tfield:short oom_score_adj;\toffset:64;\tsize:2;\tsigned:1;

print fmt: \"pid=%d comm=%s total-vm=%lukB anon-rss=%lukB file-rss:%lukB shmem-rss:%lukB uid=%u pgtables=%lukB oom_score_adj=%hd\", REC->pid, __get_str(comm), REC->total_vm, REC->anon_rss, REC->file_rss, REC->shmem_rss, REC->uid, REC->pgtables, REC->oom_score_adj
";

    #[test]
    fn parses_sizes_and_data_loc() {
        let f = |name| field(MARK_VICTIM_FORMAT, name);
        assert_eq!(f("pid"), Some(Field { offset: 8, size: 4, data_loc: false }));
        assert_eq!(f("comm"), Some(Field { offset: 12, size: 4, data_loc: true }));
        assert_eq!(f("total_vm"), Some(Field { offset: 16, size: 8, data_loc: false }));
        assert_eq!(f("shmem_rss"), Some(Field { offset: 40, size: 8, data_loc: false }));
        assert_eq!(f("uid"), Some(Field { offset: 48, size: 4, data_loc: false }));
        assert_eq!(f("oom_score_adj"), Some(Field { offset: 64, size: 2, data_loc: false }));
        assert_eq!(f("common_pid"), Some(Field { offset: 4, size: 4, data_loc: false }));
        assert_eq!(f("fmt"), None);
        assert_eq!(field(EXIT_FORMAT, "comm"), Some(Field { offset: 8, size: 16, data_loc: false }));
        assert_eq!(field("\tfield:int pid;\toffset:8;\tsize:x;", "pid"), None);
    }

    #[test]
    fn missing_features_are_named() {
        let paths = SysPaths { btf: "/nonexistent/vmlinux".into(), ..SysPaths::default() };
        let err = check(&paths).expect_err("no BTF");
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
        let paths = SysPaths { uprobe_pmu: "/nonexistent/uprobe".into(), ..SysPaths::default() };
        let err = check(&paths).expect_err("no uprobes");
        assert!(err.to_string().contains("uprobe"), "{err}");
    }
}

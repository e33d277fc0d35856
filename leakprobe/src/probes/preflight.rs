//! Checks that the kernel and the process can run leakprobe, with a precise message when not.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
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

/// Fails with the first missing requirement: root, BTF, uprobes, tracefs (mounted here if missing).
pub fn check(paths: &SysPaths) -> Result<(), ProbeError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(ProbeError::NotRoot { euid });
    }
    if !paths.btf.exists() {
        return Err(ProbeError::NoBtf(paths.btf.clone()));
    }
    if !paths.uprobe_pmu.exists() {
        return Err(ProbeError::NoUprobes(paths.uprobe_pmu.clone()));
    }
    ensure_tracefs(&paths.tracefs)
}

fn ensure_tracefs(dir: &Path) -> Result<(), ProbeError> {
    if dir.join("events").is_dir() {
        return Ok(());
    }
    log::info!("mounting tracefs on {}", dir.display());
    let mounted = Command::new("mount").args(["-t", "tracefs", "nodev"]).arg(dir).status();
    if mounted.is_ok_and(|s| s.success()) && dir.join("events").is_dir() {
        Ok(())
    } else {
        Err(ProbeError::NoTracefs(dir.to_path_buf()))
    }
}

/// Byte offset of field `name` in a tracepoint's format file text, if the field exists.
pub fn field_offset(format: &str, name: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        let field = decl.rsplit(|c: char| c.is_whitespace() || c == '*').next()?;
        let field = field.split('[').next()?;
        if field != name {
            return None;
        }
        parts.find_map(|p| p.strip_prefix("offset:")).and_then(|o| o.parse().ok())
    })
}

/// Reads a tracepoint's format file.
pub fn read_format(tracefs: &Path, category: &str, name: &str) -> Result<String, ProbeError> {
    let path = tracefs.join("events").join(category).join(name).join("format");
    fs::read_to_string(&path).map_err(|source| ProbeError::Io { path, source })
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn missing_features_are_named() {
        // Only meaningful as root (the first check); the tests run as root.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let paths = SysPaths { btf: "/nonexistent/vmlinux".into(), ..SysPaths::default() };
        let err = check(&paths).expect_err("no BTF");
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
        let paths = SysPaths { uprobe_pmu: "/nonexistent/uprobe".into(), ..SysPaths::default() };
        let err = check(&paths).expect_err("no uprobes");
        assert!(err.to_string().contains("uprobe"), "{err}");
    }
}

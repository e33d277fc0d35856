//! The peers leakprobe is compared with: a bpftrace script doing what bcc's memleak does (without stacks),
//! and heaptrack. Both come from Debian packages (`setup::ensure_bench_peers`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// The C library this process maps: the one every probe must go on.
pub fn host_libc() -> Result<PathBuf> {
    let maps = fs::read_to_string("/proc/self/maps")?;
    let path = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| Path::new(path).file_name().is_some_and(|n| n.to_string_lossy().starts_with("libc.so")))
        .context("no libc.so in /proc/self/maps")?;
    Ok(PathBuf::from(path))
}

/// Other tracers running on the machine (another leakprobe, bpftrace, heaptrack, bcc's memleak), not
/// started by this process: they would slow down every configuration, the baseline included.
pub fn other_tracers() -> Vec<String> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let comm = fs::read_to_string(entry.path().join("comm")).ok()?;
            let comm = comm.trim();
            let tracer = ["leakprobe", "bpftrace", "heaptrack", "memleak"].iter().any(|t| comm.starts_with(t));
            (tracer && !ours(pid)).then(|| format!("{comm} (pid {pid})"))
        })
        .collect()
}

/// Whether `pid` is this process or one of its descendants.
fn ours(mut pid: u32) -> bool {
    let me = std::process::id();
    while pid > 1 {
        if pid == me {
            return true;
        }
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
        // After the command name: state, then the parent's pid.
        let Some(parent) = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)) else {
            return false;
        };
        let Ok(parent) = parent.parse() else { return false };
        pid = parent;
    }
    false
}

/// The memleak equivalent: the requested size by thread at malloc's entry, size by address at its return,
/// the address deleted at free. The maps are cleared at the end, so that bpftrace prints nothing.
fn script(libc: &Path) -> String {
    let libc = libc.display();
    format!(
        "uprobe:{libc}:malloc {{ @size[tid] = arg0; }}\n\
         uretprobe:{libc}:malloc /@size[tid]/ {{ @addrs[retval] = @size[tid]; delete(@size[tid]); }}\n\
         uprobe:{libc}:free {{ delete(@addrs[arg0]); }}\n\
         END {{ clear(@size); clear(@addrs); }}\n"
    )
}

/// bpftrace running `workload` with the script attached. `-c` starts the command only once every probe
/// is attached, and bpftrace exits when it does. The probes still fire in every process, as memleak's do.
pub fn bpftrace(dir: &Path, libc: &Path, workload: &[String]) -> Result<Command> {
    let path = dir.join("memleak.bt");
    fs::write(&path, script(libc))?;
    if workload.iter().any(|arg| arg.contains(' ')) {
        bail!("bpftrace -c splits its command on spaces: the workload's path must have none");
    }
    let mut cmd = Command::new("bpftrace");
    // As many live blocks as leakprobe tracks by default (bpftrace's default is 4096), so no update fails.
    cmd.env("BPFTRACE_MAP_KEYS_MAX", "2097152").arg("-c").arg(workload.join(" ")).arg(&path);
    Ok(cmd)
}

/// Checks that bpftrace runs and can attach the script's probes here.
pub fn check_bpftrace(libc: &Path) -> Result<()> {
    let out = Command::new("bpftrace")
        .env("BPFTRACE_MAP_KEYS_MAX", "2097152")
        .args(["-c", "/bin/true", "-e", &script(libc)])
        .output()
        .context("running bpftrace")?;
    if !out.status.success() {
        bail!("bpftrace cannot run the memleak script: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// heaptrack running `workload`, its data written into `dir`. The workload times itself, so heaptrack's
/// start-up and the writing of its data are not counted.
pub fn heaptrack(dir: &Path, workload: &[String]) -> Command {
    let mut cmd = Command::new("heaptrack");
    cmd.arg("-o").arg(dir.join("heaptrack.workload")).args(workload);
    cmd
}

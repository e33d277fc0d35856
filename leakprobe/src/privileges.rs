//! Least privilege: the capabilities the daemon keeps once it serves, and dropping the others in every thread.
//!
//! Capabilities belong to threads, not processes: `capset(2)` and `PR_CAPBSET_DROP` change the calling thread
//! only, and a new thread starts with its creator's sets. So the daemon restricts the whole process to
//! [`KEPT`] plus [`STARTUP`] before its first thread exists ([`restrict_process`]); every thread it starts then
//! drops [`STARTUP`] first thing ([`drop_in_this_thread`]: the runtime's hook, and a call at the top of each
//! named thread), and the main thread drops it once the socket is bound and owned by its group.
//!
//! Measured on Linux 6.18 by running the daemon with a reduced bounding set: without `CAP_SYS_ADMIN`,
//! attaching a uprobe (`perf_event_open` of the uprobe PMU) fails with `EACCES` even with `CAP_PERFMON`, and
//! discovery attaches uprobes to files it finds later, so `CAP_SYS_ADMIN` stays.

use std::sync::atomic::{AtomicBool, Ordering};

use caps::{CapSet, Capability, CapsHashSet};

/// What the daemon needs for as long as it runs, and why.
pub const KEPT: [(Capability, &str); 5] = [
    (Capability::CAP_BPF, "maps and programs (bpf(2))"),
    (Capability::CAP_PERFMON, "uprobes and tracepoints (perf events)"),
    (
        Capability::CAP_SYS_ADMIN,
        "attaching uprobes to allocator files found later (perf_event_open of the uprobe PMU fails with EACCES \
         without it) and reading /proc/PID/map_files to symbolize files of other mount namespaces",
    ),
    (Capability::CAP_SYS_PTRACE, "/proc/PID/maps, mem and root of other users' processes"),
    (Capability::CAP_DAC_READ_SEARCH, "reading other users' binaries and libraries to probe and symbolize them"),
];

/// What only start-up needs: giving the socket its group, binding a metrics port below 1024, and dropping the
/// bounding set of each thread.
pub const STARTUP: [Capability; 3] = [Capability::CAP_CHOWN, Capability::CAP_NET_BIND_SERVICE, Capability::CAP_SETPCAP];

/// Set once [`restrict_process`] ran: threads started afterwards drop [`STARTUP`].
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Why capabilities could not be changed.
#[derive(Debug, thiserror::Error)]
#[error("dropping capabilities: {0}")]
pub struct PrivilegeError(String);

fn err(what: &str) -> impl FnOnce(caps::errors::CapsError) -> PrivilegeError + '_ {
    move |e| PrivilegeError(format!("{what}: {e}"))
}

/// The capabilities kept after start-up.
pub fn kept() -> CapsHashSet {
    KEPT.iter().map(|&(cap, _)| cap).collect()
}

/// Reduces the calling thread to `allowed`: the bounding set (when it may, with `CAP_SETPCAP`), then the
/// effective, permitted, inheritable and ambient sets.
fn restrict_thread(allowed: &CapsHashSet) -> Result<(), PrivilegeError> {
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).map_err(err("reading CAP_SETPCAP"))? {
        // CAP_SETPCAP goes last: it is what allows dropping the others.
        let mut bounding: Vec<Capability> = caps::read(None, CapSet::Bounding)
            .map_err(err("reading the bounding set"))?
            .into_iter()
            .filter(|cap| !allowed.contains(cap))
            .collect();
        bounding.sort_by_key(|&cap| cap == Capability::CAP_SETPCAP);
        for cap in bounding {
            caps::drop(None, CapSet::Bounding, cap).map_err(err("the bounding set"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err("the ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(err("the inheritable set"))?;
    let permitted = caps::read(None, CapSet::Permitted).map_err(err("reading the permitted set"))?;
    let keep: CapsHashSet = permitted.intersection(allowed).copied().collect();
    // Effective first: it must stay a subset of permitted.
    caps::set(None, CapSet::Effective, &keep).map_err(err("the effective set"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(err("the permitted set"))?;
    Ok(())
}

/// Restricts the calling thread, which must be the only one, to [`KEPT`] and [`STARTUP`]; afterwards every
/// [`drop_in_this_thread`] takes effect.
pub fn restrict_process() -> Result<(), PrivilegeError> {
    let mut allowed = kept();
    allowed.extend(STARTUP);
    restrict_thread(&allowed)?;
    ENABLED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Drops everything but [`KEPT`] in the calling thread, if [`restrict_process`] ran (it does only in the
/// daemon). A failure is logged: the thread goes on with what it has.
pub fn drop_in_this_thread() {
    if !ENABLED.load(Ordering::SeqCst) {
        return;
    }
    if let Err(e) = restrict_thread(&kept()) {
        log::error!("{e}");
    }
}

/// `CAP_BPF CAP_PERFMON ...`: the effective set of the calling thread, sorted, for the log.
pub fn describe_effective() -> String {
    let mut names: Vec<String> = caps::read(None, CapSet::Effective)
        .map_or_else(|_| Vec::new(), |s| s.iter().map(ToString::to_string).collect());
    names.sort();
    if names.is_empty() { "none".to_owned() } else { names.join(" ") }
}

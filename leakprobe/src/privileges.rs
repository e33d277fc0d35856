//! Least privilege: the capabilities start-up needs (checked before anything else), the ones the daemon keeps
//! once it serves, and dropping the others in every thread.
//!
//! The daemon runs as root or as any user holding [`KEPT`] (systemd `AmbientCapabilities=`, file capabilities in
//! a container image): [`check`] compares the effective set with what this start-up needs ([`needed`]) and names
//! what is missing, instead of failing half-way or starting with no probes attached.
//!
//! Capabilities belong to threads, not processes: `capset(2)` and `PR_CAPBSET_DROP` change the calling thread
//! only, and a new thread starts with its creator's sets. So the daemon restricts the whole process to
//! [`KEPT`] plus [`STARTUP`] before its first thread exists ([`restrict_process`]); every thread it starts then
//! drops [`STARTUP`] first thing ([`drop_in_this_thread`]: the runtime's hook, and a call at the top of each
//! named thread), and the main thread drops it once the socket is bound and owned by its group.
//!
//! Measured on Linux 6.18 as uid 65534 holding each set as ambient capabilities (see docs/deployment.md,
//! "Least privilege"): `perf_event_open` of the uprobe PMU requires `CAP_SYS_ADMIN` (not `CAP_PERFMON`), and
//! `CAP_SYS_ADMIN` passes the kernel's checks for `CAP_BPF` (`bpf_capable()`) and `CAP_PERFMON`
//! (`perfmon_capable()`): a daemon without those two attaches and reports the same, so they are not asked for.

use std::sync::atomic::{AtomicBool, Ordering};

use caps::{CapSet, Capability, CapsHashSet};

/// What the daemon needs for as long as it runs, and what for (the reason start-up failures give):
/// - `CAP_SYS_ADMIN`: `perf_event_open` of the uprobe PMU fails with `EACCES` without it, and discovery attaches
///   to files it finds later; it also passes the kernel's checks for `CAP_BPF` and `CAP_PERFMON` (maps, programs,
///   tracepoints), opens `/proc/PID/map_files`, shows page frame numbers in `/proc/PID/pagemap` (tier 0's huge
///   pages) and turns on BPF run-time statistics (the CPU budget);
/// - `CAP_SYS_PTRACE`: `/proc/PID/root`, `ns/pid` and `map_files` of other users' processes, i.e. probing and
///   symbolizing files of other mount namespaces (containers);
/// - `CAP_DAC_READ_SEARCH`: tracefs (`/sys/kernel/tracing` is mode 0700), `/proc/kpageflags` and
///   `/proc/PID/pagemap` (mode 0400), and other users' unreadable binaries.
pub const KEPT: [(Capability, &str); 3] = [
    (Capability::CAP_SYS_ADMIN, "uprobes, eBPF programs and perf events"),
    (Capability::CAP_SYS_PTRACE, "files and namespaces of other users' processes"),
    (Capability::CAP_DAC_READ_SEARCH, "tracefs and other users' files"),
];

/// What only start-up needs: giving the socket its group, binding a metrics port below 1024, and dropping the
/// bounding set of each thread.
pub const STARTUP: [Capability; 3] = [Capability::CAP_CHOWN, Capability::CAP_NET_BIND_SERVICE, Capability::CAP_SETPCAP];

/// Set once [`restrict_process`] ran: threads started afterwards drop [`STARTUP`].
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Why start-up lacks privileges, or capabilities could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("dropping capabilities: {0}")]
    Drop(String),
    /// One line: what is missing and what for, and how to grant every capability this start-up needs.
    #[error("{}", missing_message(missing, needed))]
    Missing { missing: Vec<Need>, needed: Vec<Need> },
}

fn err(what: &str) -> impl FnOnce(caps::errors::CapsError) -> PrivilegeError + '_ {
    move |e| PrivilegeError::Drop(format!("{what}: {e}"))
}

/// A capability start-up needs, and what for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    pub cap: Capability,
    pub why: String,
}

/// What a start-up asks for beyond [`KEPT`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Startup {
    /// `--socket-group`: the socket's group.
    pub socket_group: Option<u32>,
    /// The metrics port, when metrics are served.
    pub metrics_port: Option<u16>,
}

/// The capabilities this start-up needs: [`KEPT`]; `CAP_CHOWN` to give the socket to a group the daemon is not a
/// member of (its owner may give it to one of its own groups); `CAP_NET_BIND_SERVICE` for a metrics port below
/// `net.ipv4.ip_unprivileged_port_start`.
pub fn needed(startup: Startup) -> Vec<Need> {
    let mut needed: Vec<Need> = KEPT.iter().map(|&(cap, why)| Need { cap, why: why.to_owned() }).collect();
    if let Some(gid) = startup.socket_group.filter(|&gid| !in_group(gid)) {
        needed.push(Need {
            cap: Capability::CAP_CHOWN,
            why: format!("giving the socket to --socket-group {gid}, a group this user is not in"),
        });
    }
    if let Some(port) = startup.metrics_port.filter(|&port| port != 0 && port < unprivileged_port_start()) {
        needed.push(Need { cap: Capability::CAP_NET_BIND_SERVICE, why: format!("the metrics port {port}") });
    }
    needed
}

/// Fails, naming what is missing, unless the calling thread's effective set holds every capability of `needed`.
pub fn check(needed: Vec<Need>) -> Result<(), PrivilegeError> {
    let effective = caps::read(None, CapSet::Effective).map_err(err("reading the effective set"))?;
    let missing: Vec<Need> = needed.iter().filter(|need| !effective.contains(&need.cap)).cloned().collect();
    if missing.is_empty() { Ok(()) } else { Err(PrivilegeError::Missing { missing, needed }) }
}

/// `missing CAP_X (why), CAP_Y (why): run as root or grant ...`, on one line.
fn missing_message(missing: &[Need], needed: &[Need]) -> String {
    let missing: Vec<String> = missing.iter().map(|need| format!("{} ({})", need.cap, need.why)).collect();
    let names: Vec<String> = needed.iter().map(|need| need.cap.to_string()).collect();
    format!(
        "missing {}: run as root, or as a user granted {}, e.g. systemd AmbientCapabilities={} (see \
         docs/deployment.md#least-privilege)",
        missing.join(", "),
        names.join(", "),
        names.join(" ")
    )
}

/// Whether `gid` is the effective group or a supplementary group of this process.
fn in_group(gid: u32) -> bool {
    // SAFETY: getegid has no preconditions and cannot fail.
    if unsafe { libc::getegid() } == gid {
        return true;
    }
    // SAFETY: with a size of 0, getgroups only returns the number of supplementary groups.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let Ok(len) = usize::try_from(count) else { return false };
    let mut groups: Vec<libc::gid_t> = vec![0; len];
    // SAFETY: `groups` has room for `count` entries, the size passed.
    let written = unsafe { libc::getgroups(count, groups.as_mut_ptr()) };
    usize::try_from(written).is_ok_and(|n| groups.get(..n).is_some_and(|groups| groups.contains(&gid)))
}

/// The lowest port binding needs no privilege for (`net.ipv4.ip_unprivileged_port_start`, 1024 by default).
fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(1024)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_what_is_missing_and_how_to_grant_everything() {
        let needed = needed(Startup::default());
        let missing = vec![needed[0].clone(), needed[2].clone()];
        let line = PrivilegeError::Missing { missing, needed }.to_string();
        assert_eq!(
            line,
            "missing CAP_SYS_ADMIN (uprobes, eBPF programs and perf events), CAP_DAC_READ_SEARCH (tracefs and other \
             users' files): run as root, or as a user granted CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH, \
             e.g. systemd AmbientCapabilities=CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH (see \
             docs/deployment.md#least-privilege)"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn chown_and_low_ports_are_needed_only_when_asked_for() {
        let caps = |startup| needed(startup).into_iter().map(|need| need.cap).collect::<Vec<_>>();
        let base = vec![Capability::CAP_SYS_ADMIN, Capability::CAP_SYS_PTRACE, Capability::CAP_DAC_READ_SEARCH];
        assert_eq!(caps(Startup::default()), base);
        // SAFETY: getegid cannot fail.
        let own = unsafe { libc::getegid() };
        assert_eq!(caps(Startup { socket_group: Some(own), metrics_port: Some(9877) }), base);
        // A gid no process of the test machine is in, and a port below 1024.
        let with = caps(Startup { socket_group: Some(4_000_000_000), metrics_port: Some(80) });
        let low_port_needs = unprivileged_port_start() > 80;
        assert!(with[3..].contains(&Capability::CAP_CHOWN), "{with:?}");
        assert_eq!(with[3..].contains(&Capability::CAP_NET_BIND_SERVICE), low_port_needs, "{with:?}");
        // Port 0: the kernel picks an unprivileged one.
        assert_eq!(caps(Startup { socket_group: None, metrics_port: Some(0) }), base);
    }
}

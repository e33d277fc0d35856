//! What the daemon reads from `/proc`, and the clocks.

use std::fs;

use crate::{core::table::RssSample, protocol::ProcessIdentity};

/// The name of a process (`/proc/PID/comm`), if it still exists.
pub fn comm(pid: u32) -> Option<String> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_owned())
}

/// RSS figures of a live process, from `/proc/PID/status`.
pub fn rss(pid: u32) -> Option<RssSample> {
    parse_status(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// `VmRSS`, `RssAnon`, `RssFile`, `RssShmem`, `VmSwap` and `VmData` of a `/proc/PID/status` text, in bytes. Kernel threads have none.
pub fn parse_status(text: &str) -> Option<RssSample> {
    let kb = |key: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok().map(|kb| kb * 1024)
        })
    };
    Some(RssSample {
        rss: kb("VmRSS")?,
        anon: kb("RssAnon").unwrap_or(0),
        file: kb("RssFile").unwrap_or(0),
        shmem: kb("RssShmem").unwrap_or(0),
        swap: kb("VmSwap").unwrap_or(0),
        data: kb("VmData").unwrap_or(0),
    })
}

/// Where process `pid` lives: its pid in its own pid namespace (when not the daemon's), cgroup and container.
pub fn identity(pid: u32) -> ProcessIdentity {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let own = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let same_ns = fs::read_link(format!("/proc/{pid}/ns/pid")).ok() == fs::read_link("/proc/self/ns/pid").ok();
    // NSpid lists the pid from the reader's namespace inwards; deeper than ours means another namespace.
    let depth = |text: &str| text.lines().find_map(|l| l.strip_prefix("NSpid:")).map(|l| l.split_whitespace().count());
    let ns_pid = parse_ns_pid(&status).filter(|_| !same_ns || depth(&status) > depth(&own));
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let cgroup = parse_cgroup_path(&cgroups);
    let container_id = cgroup.as_deref().and_then(container_id);
    let container_name = container_id.as_ref().map(|id| {
        let hostname = fs::read_to_string(format!("/proc/{pid}/root/etc/hostname")).unwrap_or_default();
        container_name(&hostname, id)
    });
    ProcessIdentity { ns_pid, cgroup, container_id, unit: systemd_unit(&cgroups), container_name }
}

/// The systemd unit of a `/proc/PID/cgroup` text: the innermost `.service` component of the path systemd
/// manages (`0::` on cgroup v2, the `name=systemd` hierarchy on a hybrid or v1 host, which keeps `0::/`).
pub fn systemd_unit(text: &str) -> Option<String> {
    let v2 = text.lines().find_map(|l| l.strip_prefix("0::")).filter(|p| *p != "/");
    let v1 = || text.lines().find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p));
    let path = v2.or_else(v1)?;
    path.rsplit('/').find(|c| c.len() > ".service".len() && c.ends_with(".service")).map(str::to_owned)
}

/// A container's name: the hostname its runtime gave it (`/etc/hostname` inside it; Kubernetes writes the pod's
/// name there), else the first 12 digits of its id.
pub fn container_name(hostname: &str, id: &str) -> String {
    let hostname = hostname.trim();
    if hostname.is_empty() || hostname.len() > 253 || hostname.contains(char::is_whitespace) {
        id.chars().take(12).collect()
    } else {
        hostname.to_owned()
    }
}

/// The innermost pid of the `NSpid:` line of a `/proc/PID/status` text.
pub fn parse_ns_pid(status: &str) -> Option<u32> {
    status.lines().find_map(|l| l.strip_prefix("NSpid:"))?.split_whitespace().last()?.parse().ok()
}

/// The cgroup v2 path (`0::/path`) of a `/proc/PID/cgroup` text unless it is the root, else the v1 memory
/// hierarchy's.
pub fn parse_cgroup_path(text: &str) -> Option<String> {
    let v2 = text.lines().find_map(|l| l.strip_prefix("0::")).filter(|p| *p != "/");
    v2.map(str::to_owned).or_else(|| parse_memory_cgroup(text))
}

/// The container id a cgroup path carries: a component of 64 hexadecimal digits, bare (`/docker/ID`,
/// `/kubepods/.../ID`) or in a systemd scope (`docker-ID.scope`, `cri-containerd-ID.scope`, `crio-ID.scope`,
/// `libpod-ID.scope`). The innermost one wins.
pub fn container_id(cgroup: &str) -> Option<String> {
    cgroup.rsplit('/').find_map(|component| {
        let id = component.strip_suffix(".scope").unwrap_or(component);
        let id = id.rsplit_once('-').map_or(id, |(_, id)| id);
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
    })
}

/// The daemon's own figures for Prometheus's standard `process_*` metrics (the names and meanings the
/// Prometheus client-library guidelines give, as Go's client exports them on Linux).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OwnProcess {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: f64,
    pub threads: u64,
    pub open_fds: u64,
    /// The soft limit of open files (`RLIMIT_NOFILE`).
    pub max_fds: Option<u64>,
}

/// [`OwnProcess`] from `/proc/self`.
pub fn own_process() -> Option<OwnProcess> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let boot = fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = boot.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let open_fds = fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64);
    parse_own_process(&stat, btime, &limits, open_fds)
}

/// [`OwnProcess`] from a `/proc/self/stat` text, the boot time (`btime` of `/proc/stat`), a
/// `/proc/self/limits` text and the number of open descriptors.
fn parse_own_process(stat: &str, btime: u64, limits: &str, open_fds: u64) -> Option<OwnProcess> {
    // Fields after the name, from field 3 (state) on: threads is field 20, starttime 22, vsize 23, rss 24.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let ticks = clock_ticks();
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok());
    #[expect(clippy::cast_precision_loss, reason = "clock ticks and seconds since 1970 fit f64 exactly")]
    let start_time_seconds = btime as f64 + field(22)? as f64 / ticks as f64;
    Some(OwnProcess {
        cpu_seconds: parse_cpu_seconds(stat)?,
        resident_bytes: field(24)? * page,
        virtual_bytes: field(23)?,
        start_time_seconds,
        threads: field(20)?,
        open_fds,
        max_fds,
    })
}

/// Clock ticks per second (`_SC_CLK_TCK`), 100 if unknown.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// CPU time (user + system) this process has used, in seconds, from `/proc/self/stat`.
pub fn own_cpu_seconds() -> Option<f64> {
    parse_cpu_seconds(&fs::read_to_string("/proc/self/stat").ok()?)
}

/// `utime + stime` of a `/proc/PID/stat` text, in seconds (fields 14 and 15, in clock ticks).
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    #[expect(clippy::cast_precision_loss, reason = "clock ticks fit f64 exactly for centuries")]
    Some((utime + stime) as f64 / clock_ticks() as f64)
}

/// `CLOCK_MONOTONIC` now, in ns: the clock of the kernel's event timestamps.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `/proc/kpageflags` bits (`include/uapi/linux/kernel-page-flags.h`).
const KPF_COMPOUND_HEAD: u64 = 1 << 15;
const KPF_COMPOUND_TAIL: u64 = 1 << 16;
const KPF_ANON: u64 = 1 << 12;
const KPF_THP: u64 = 1 << 22;
/// Base pages per PMD-sized huge page on x86-64: the largest anonymous folio a fault maps at once.
const PMD_PAGES: u64 = 512;

/// What backs a user page of a process, from `/proc/PID/pagemap` and `kpageflags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnonPage {
    /// Nothing is mapped there (yet: a fault in progress has not mapped its page).
    NotPresent,
    /// A base page, or a page that is not anonymous.
    Base,
    /// An anonymous large folio (a transparent huge page, PMD-sized or multi-size) of this many bytes.
    Folio(u64),
}

/// What backs `addr` in process `pid` (`kpageflags`: an open `/proc/kpageflags`). `None` when either file
/// cannot be read: the process is gone, or the frame number is hidden (it needs `CAP_SYS_ADMIN`).
pub fn anon_page(kpageflags: &fs::File, pid: u32, addr: u64, page: u64) -> Option<AnonPage> {
    use std::os::unix::fs::FileExt as _;
    let mut entry = [0u8; 8];
    let pagemap = fs::File::open(format!("/proc/{pid}/pagemap")).ok()?;
    pagemap.read_exact_at(&mut entry, (addr / page).checked_mul(8)?).ok()?;
    let entry = u64::from_le_bytes(entry);
    if entry >> 63 == 0 {
        return Some(AnonPage::NotPresent);
    }
    let pfn = entry & ((1 << 55) - 1);
    if pfn == 0 {
        return None;
    }
    // A folio is naturally aligned and at most PMD-sized: the block of 512 frames around it holds all of it.
    let base = pfn & !(PMD_PAGES - 1);
    let mut raw = vec![0u8; usize::try_from(PMD_PAGES * 8).ok()?];
    kpageflags.read_exact_at(&mut raw, base.checked_mul(8)?).ok()?;
    let flags: Vec<u64> = raw.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default())).collect();
    Some(match folio_pages(&flags, usize::try_from(pfn - base).ok()?) {
        Some(pages) if pages > 1 => AnonPage::Folio(pages * page),
        _ => AnonPage::Base,
    })
}

/// Pages of the anonymous large folio holding frame `at` of a naturally aligned block of `kpageflags` words.
fn folio_pages(flags: &[u64], at: usize) -> Option<u64> {
    let own = *flags.get(at)?;
    if own & KPF_ANON == 0 || own & KPF_THP == 0 {
        return None;
    }
    let is_tail = |i: &usize| flags.get(*i).is_some_and(|f| f & KPF_COMPOUND_TAIL != 0);
    let head = (0..=at).rev().find(|i| !is_tail(i))?;
    if flags[head] & KPF_COMPOUND_HEAD == 0 {
        return None;
    }
    let end = (head + 1..flags.len()).find(|i| !is_tail(i)).unwrap_or(flags.len());
    u64::try_from(end - head).ok()
}

/// The memory cgroup of a process from `/proc/PID/cgroup`, if the process still exists.
///
/// `None` for a process that is exiting (see [`exiting`]): the kernel moves an exiting task out of its cgroups,
/// and its `cgroup` file then names the root.
pub fn memory_cgroup(pid: u32) -> Option<String> {
    let cgroup = parse_memory_cgroup(&fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)?;
    (!exiting(pid)).then_some(cgroup)
}

/// Whether a process is gone or exiting (a zombie, `Z`, or dead, `X`, in `/proc/PID/stat`, or still running its
/// exit: `PF_EXITING` in its flags).
pub fn exiting(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| parse_exiting(&stat))
}

/// The state field of a `/proc/PID/stat` text says zombie or dead. The name before it may hold spaces and
/// parentheses: the state follows the last `)`.
fn parse_exiting(stat: &str) -> bool {
    let mut fields = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace());
    let state = fields.as_mut().and_then(Iterator::next);
    // Field 9, `flags`: PF_EXITING is set when the exit starts, before the kernel moves the task out of its
    // cgroups, while the state still reads R or D.
    let flags: Option<u64> = fields.as_mut().and_then(|f| f.nth(5)).and_then(|f| f.parse().ok());
    matches!(state, Some("Z" | "X" | "x") | None) || flags.is_some_and(|f| f & PF_EXITING != 0)
}

/// `PF_EXITING` of `include/linux/sched.h`, in the `flags` field of `/proc/PID/stat`.
const PF_EXITING: u64 = 0x4;

/// The path of the cgroup v1 hierarchy holding the `memory` controller (`N:memory:/path`, possibly with other
/// controllers in the list), else the cgroup v2 path (`0::/path`).
pub fn parse_memory_cgroup(text: &str) -> Option<String> {
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if controllers.split(',').any(|c| c == "memory") {
            return Some(path.to_owned());
        }
        if controllers.is_empty() {
            v2 = Some(path.to_owned());
        }
    }
    v2
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; both clocks used here always exist on Linux.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Converts the kernel's `CLOCK_MONOTONIC` timestamps (`bpf_ktime_get_ns`) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Realtime minus monotonic, in ns, measured at start.
    offset_ns: u64,
}

impl Clock {
    pub fn new() -> Self {
        Self { offset_ns: clock_ns(libc::CLOCK_REALTIME).saturating_sub(clock_ns(libc::CLOCK_MONOTONIC)) }
    }

    /// Milliseconds since the Unix epoch for a monotonic timestamp.
    pub fn unix_ms(self, monotonic_ns: u64) -> u64 {
        (monotonic_ns + self.offset_ns) / 1_000_000
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folio_pages_finds_the_head_and_the_end() {
        let (head, tail, base) =
            (KPF_ANON | KPF_THP | KPF_COMPOUND_HEAD, KPF_ANON | KPF_THP | KPF_COMPOUND_TAIL, KPF_ANON);
        // A base page, a 4-page folio (mTHP), another base page.
        let flags = [base, head, tail, tail, tail, base];
        assert_eq!(folio_pages(&flags, 0), None, "a base page");
        assert_eq!(folio_pages(&flags, 1), Some(4));
        assert_eq!(folio_pages(&flags, 3), Some(4));
        assert_eq!(folio_pages(&flags, 5), None);
        // A whole PMD-sized folio.
        let mut pmd = vec![tail; 512];
        pmd[0] = head;
        assert_eq!(folio_pages(&pmd, 300), Some(512));
        // Two folios side by side: the second starts at its own head.
        let flags = [head, tail, head, tail];
        assert_eq!(folio_pages(&flags, 3), Some(2));
        // File-backed large folios are not anonymous memory; a torn read without a head is nothing.
        assert_eq!(folio_pages(&[KPF_THP | KPF_COMPOUND_HEAD, KPF_THP | KPF_COMPOUND_TAIL], 1), None);
        assert_eq!(folio_pages(&[tail, tail], 1), None);
        assert_eq!(folio_pages(&flags, 9), None);
    }

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "3f4e1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";
        for path in [
            format!("/docker/{id}"),
            format!("/system.slice/docker-{id}.scope"),
            format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope"),
            format!("/kubepods/burstable/pod1/crio-{id}.scope"),
            format!("/machine.slice/libpod-{id}.scope/container"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(id), "{path}");
        }
        assert_eq!(container_id("/user.slice/user-0.slice/session-1.scope"), None);
        assert_eq!(container_id("/"), None);
    }

    #[test]
    fn systemd_units_and_container_names() {
        let v2 = "0::/system.slice/leaky.service\n";
        assert_eq!(systemd_unit(v2).as_deref(), Some("leaky.service"));
        let hybrid =
            "9:name=systemd:/user.slice/user-0.slice/user@0.service/app.slice/web.service\n4:memory:/x\n0::/\n";
        assert_eq!(systemd_unit(hybrid).as_deref(), Some("web.service"), "the innermost unit");
        assert_eq!(systemd_unit("0::/user.slice/user-0.slice/session-3.scope\n"), None, "a scope is no service");
        assert_eq!(systemd_unit("0::/\n4:memory:/a.service\n"), None, "only the hierarchy systemd manages");
        assert_eq!(systemd_unit("0::/system.slice/.service\n"), None);
        let id = "4f2a".repeat(16);
        assert_eq!(container_name("api-7d9f-xk2\n", &id), "api-7d9f-xk2");
        assert_eq!(container_name("", &id), "4f2a4f2a4f2a");
        assert_eq!(container_name("two words", &id), "4f2a4f2a4f2a");
    }

    #[test]
    fn ns_pid_and_cgroup_path() {
        assert_eq!(parse_ns_pid("Name:\tx\nNSpid:\t4242\t1\n"), Some(1));
        assert_eq!(parse_ns_pid("Name:\tx\nNSpid:\t4242\n"), Some(4242));
        assert_eq!(parse_cgroup_path("1:memory:/a\n0::/b\n").as_deref(), Some("/b"));
        assert_eq!(parse_cgroup_path("4:memory:/a\n0::/\n").as_deref(), Some("/a"));
        let own = identity(std::process::id());
        assert_eq!(own.ns_pid, None, "this process is in the daemon's own pid namespace");
    }

    #[test]
    fn own_comm_is_readable() {
        assert!(comm(std::process::id()).is_some_and(|c| !c.is_empty()));
        assert_eq!(comm(u32::MAX), None);
    }

    #[test]
    fn status_gives_rss_figures() {
        let text = "Name:\tleaker\nVmData:\t  8192 kB\nVmRSS:\t    2048 kB\nRssAnon:\t     1024 kB\nRssFile:\t 1016 kB\nRssShmem:\t 8 kB\nVmSwap:\t   4 kB\n";
        let sample =
            RssSample { rss: 2 << 20, anon: 1 << 20, file: 1016 << 10, shmem: 8 << 10, swap: 4096, data: 8 << 20 };
        assert_eq!(parse_status(text), Some(sample));
        assert_eq!(parse_status("Name:\tkthreadd\n"), None);
        assert!(rss(std::process::id()).is_some_and(|s| s.rss > 0 && s.anon > 0));
    }

    #[test]
    fn memory_cgroup_v1_then_v2() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/e9d9\n3:cpu,cpuacct:/x\n0::/\n";
        assert_eq!(parse_memory_cgroup(v1).as_deref(), Some("/process_api/e9d9"));
        assert_eq!(parse_memory_cgroup("5:cpu,memory:/a/b\n").as_deref(), Some("/a/b"));
        assert_eq!(parse_memory_cgroup("0::/system.slice/x.service\n").as_deref(), Some("/system.slice/x.service"));
        assert_eq!(parse_memory_cgroup("garbage\n"), None);
        assert!(memory_cgroup(std::process::id()).is_some());
        assert!(memory_cgroup(u32::MAX).is_none());
    }

    #[test]
    fn exiting_processes_are_told_apart() {
        assert!(!parse_exiting("42 (a (weird) name) S 1 42 42 0"));
        assert!(parse_exiting("42 (leaker) Z 1 42 42 0"));
        // Running, flags 0x400100 (PF_RANDOMIZE | PF_FORKNOEXEC), then the same with PF_EXITING.
        assert!(!parse_exiting("42 (leaker) R 1 42 42 0 -1 4194560 100 0"));
        assert!(parse_exiting("42 (leaker) R 1 42 42 0 -1 4194564 100 0"));
        assert!(parse_exiting("garbage"));
        assert!(!exiting(std::process::id()));
        assert!(exiting(u32::MAX));
    }

    #[test]
    fn cpu_time_is_utime_plus_stime() {
        let stat = "42 (a (b) c) R 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert!(own_cpu_seconds().is_some());
    }

    #[test]
    fn own_process_figures() {
        let stat = "4242 (leak probe) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 7 0 360000 \
                    104857600 2560 18446744073709551615";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        let own = parse_own_process(stat, 1_700_000_000, limits, 12).expect("parses");
        #[expect(clippy::cast_precision_loss, reason = "clock ticks per second fit f64 exactly")]
        let ticks = clock_ticks() as f64;
        assert_eq!(own.threads, 7);
        assert_eq!(own.virtual_bytes, 104_857_600);
        assert_eq!(own.resident_bytes, 2560 * 4096);
        assert_eq!(own.max_fds, Some(1024));
        assert_eq!(own.open_fds, 12);
        assert!((own.cpu_seconds - 300.0 / ticks).abs() < 1e-9, "{own:?}");
        assert!((own.start_time_seconds - (1_700_000_000.0 + 360_000.0 / ticks)).abs() < 1e-6, "{own:?}");
        let live = own_process().expect("this test's own process");
        assert!(live.threads >= 1 && live.resident_bytes > 0 && live.open_fds >= 3, "{live:?}");
    }

    #[test]
    fn monotonic_now_maps_to_wall_clock_now() {
        let clock = Clock::new();
        let wall_ms = clock_ns(libc::CLOCK_REALTIME) / 1_000_000;
        let mapped = clock.unix_ms(clock_ns(libc::CLOCK_MONOTONIC));
        assert!(mapped.abs_diff(wall_ms) < 1_000, "{mapped} vs {wall_ms}");
    }
}

/// One line of `/proc/PID/maps`: `START-END PERMS OFFSET MAJOR:MINOR INODE [PATH]`, numbers in hexadecimal except
/// the inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapsLine<'a> {
    pub start: u64,
    pub end: u64,
    pub perms: &'a str,
    pub offset: u64,
    /// The device as written (`fe:00`).
    pub dev: &'a str,
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
    /// The path, or `[heap]`-like names, or empty for anonymous memory; ` (deleted)` is kept.
    pub path: &'a str,
}

/// The lines of a `/proc/PID/maps` text that parse; malformed lines are skipped.
pub fn maps_lines(text: &str) -> impl Iterator<Item = MapsLine<'_>> {
    text.lines().filter_map(|line| {
        let mut fields = line.splitn(6, ' ');
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?;
        let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
        let dev = fields.next()?;
        let (major, minor) = dev.split_once(':')?;
        let inode = fields.next()?.parse().ok()?;
        Some(MapsLine {
            start: u64::from_str_radix(start, 16).ok()?,
            end: u64::from_str_radix(end, 16).ok()?,
            perms,
            offset,
            dev,
            major: u32::from_str_radix(major, 16).ok()?,
            minor: u32::from_str_radix(minor, 16).ok()?,
            inode,
            path: fields.next().unwrap_or("").trim_start(),
        })
    })
}

/// The major and minor numbers of a device number (`st_dev`), split as glibc's `major()`/`minor()` do.
#[expect(clippy::cast_possible_truncation, reason = "the masks keep 32 bits")]
pub fn dev_numbers(dev: u64) -> (u32, u32) {
    ((((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)) as u32, ((dev & 0xff) | ((dev >> 12) & !0xff)) as u32)
}

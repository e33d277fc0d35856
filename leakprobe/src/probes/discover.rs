//! Finding every allocator the running processes use, and keeping the probes in step with them.
//!
//! A scan reads `/proc/PID/maps` and looks at each executable file mapping. Files are told apart by device and
//! inode, as the kernel's uprobes are: a container's libc is another file than the host's even at the same path,
//! and one file mapped by a thousand processes is examined and probed once. A new file is opened through
//! `/proc/PID/map_files/START-END` when its path does not lead to the same inode from the daemon's mount
//! namespace (a container's root filesystem, a deleted or replaced file), read (memory-mapped: only the symbol
//! tables are touched) and examined for an allocator ([`super::allocators`]); with `--malloc-probes all` a
//! provider gets its probes at once, system-wide. Otherwise providers are only listed, and tier 1 attaches
//! pid-scoped probes to the providers one process maps ([`Discovery::attach_pid`]). Every file's verdict is
//! remembered while some process maps it, so a rescan reads only maps.
//!
//! Scans: one of every process at start-up; one of a process shortly after it calls `execve` (its libraries are
//! mapped by then); and one of every process every rescan interval, which finds libraries loaded with `dlopen`
//! and detaches the probes of files no process maps any more. Each scan examines at most `max_files_per_scan`
//! new files (the rest wait for the next scan) and reports its cost.

use std::{
    collections::HashMap,
    fs,
    num::NonZeroU32,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub use super::mapped::{ExecMapping, FileId, exec_mappings};
use super::{
    AttachedFile, ProbeError, Probes, Scope, allocators, libc, mapped::open_path, unwind_tables::KernelTables,
};
use crate::protocol::ScanCost;

mod preprobe;
mod status;
pub use preprobe::NewRoots;

/// Seconds between two rescans of every process, unless configured.
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(10);
/// New files examined at most per scan, unless configured.
pub const DEFAULT_MAX_FILES_PER_SCAN: usize = 256;

/// Why tier 1 could not attach to a process.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttachPidError {
    /// The process maps no allocator that can be probed: nothing the daemon can do.
    #[error("{0}")]
    Unprobeable(String),
    /// The process is gone.
    #[error("{0}")]
    Gone(String),
    /// The kernel refused a probe.
    #[error("{0}")]
    Failed(String),
}

/// How discovery runs.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    pub rescan_interval: Duration,
    pub max_files_per_scan: usize,
    /// Files whose path (as the process sees it) starts with one of these are never examined nor probed.
    pub exclude: Vec<String>,
    /// Allocator libraries are probed before any process maps them (see `preprobe`).
    pub preprobe: bool,
    /// Registers Python interpreters (`CPython`), whose records then carry their Python frames.
    pub python_frames: bool,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
            max_files_per_scan: DEFAULT_MAX_FILES_PER_SCAN,
            exclude: Vec::new(),
            preprobe: true,
            python_frames: true,
        }
    }
}

/// Anonymous executables (`memfd_create`, e.g. a container runtime's sealed copy of itself) are no file an
/// allocator is installed as: never probed.
const MEMFD_PREFIX: &str = "/memfd:";

/// A file providing an allocator.
#[derive(Debug)]
struct Provider {
    /// The path shown in `status` and attach points.
    shown: PathBuf,
    symbols: allocators::AllocatorSymbols,
    /// Its system-wide probes; `None` when attaching failed (`error` says why) or when probes are attached
    /// per process (tier 1).
    attached: Option<AttachedFile>,
    error: Option<String>,
    /// Processes mapping it at the last full scan.
    processes: u64,
    pinned: bool,
    /// Probed before any process mapped it (see `preprobe`).
    preprobed: bool,
}

/// A file providing an allocator leakprobe recognises but cannot probe (see [`allocators::Unsupported`]).
#[derive(Debug)]
struct UnsupportedFile {
    /// The path shown in `status`.
    shown: PathBuf,
    what: allocators::Unsupported,
    /// Processes mapping it at the last full scan.
    processes: u64,
}

/// What is known of a file.
#[derive(Debug)]
enum Known {
    /// No allocator in it (or not an ELF file).
    Nothing,
    Provider(Box<Provider>),
    /// An allocator that cannot be probed.
    Unsupported(Box<UnsupportedFile>),
}

/// Cumulative counters, for `status` and metrics.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    full_scans: u64,
    exec_scans: u64,
    pids_scanned: u64,
    files_examined: u64,
    files_deferred: u64,
    scan_microseconds: u64,
    files_attached: u64,
    files_detached: u64,
    attach_errors: u64,
    open_errors: u64,
    not_elf: u64,
    unsupported: u64,
    files_preprobed: u64,
    preprobe_microseconds: u64,
}

/// The discovery state: what each mapped file is, and the probes of the providers.
pub struct Discovery {
    config: Option<DiscoveryConfig>,
    known: HashMap<FileId, Known>,
    totals: Totals,
    last_full: Option<ScanCost>,
    last_exec: Option<ScanCost>,
    /// Providers get system-wide probes when found (`--malloc-probes all`).
    system_wide: bool,
    /// Tier 1's pid-scoped probes, by process.
    scoped: HashMap<u32, Vec<AttachedFile>>,
    /// The kernel unwinder's tables, loaded for every process scanned (`--unwind auto`).
    tables: Option<KernelTables>,
    /// Which mapped files are Python interpreters (their processes get Python frames).
    python_files: crate::python::FileCache,
}

/// Where a scan stands.
struct ScanState {
    started: Instant,
    cost: ScanCost,
    budget: usize,
    /// Files seen and, for providers, by how many processes (full scans only).
    seen: Option<HashMap<FileId, u64>>,
    exclude: Vec<String>,
    python_frames: bool,
}

impl ScanState {
    fn new(config: &DiscoveryConfig, full: bool) -> Self {
        Self {
            started: Instant::now(),
            cost: ScanCost::default(),
            budget: config.max_files_per_scan,
            seen: full.then(HashMap::new),
            exclude: config.exclude.clone(),
            python_frames: config.python_frames,
        }
    }

    fn excluded(&self, path: &str) -> bool {
        path.starts_with(MEMFD_PREFIX) || self.exclude.iter().any(|prefix| path.starts_with(prefix.as_str()))
    }

    fn finish(mut self) -> (ScanCost, Option<HashMap<FileId, u64>>) {
        self.cost.microseconds = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        (self.cost, self.seen)
    }
}

impl Discovery {
    /// Discovery with `config`; `None` knows only the pinned files. `system_wide`: providers get their probes
    /// in every process when found; otherwise only through [`Self::attach_pid`].
    pub fn new(config: Option<DiscoveryConfig>, system_wide: bool) -> Self {
        Self {
            config,
            known: HashMap::new(),
            totals: Totals::default(),
            last_full: None,
            last_exec: None,
            system_wide,
            scoped: HashMap::new(),
            tables: None,
            python_files: crate::python::FileCache::default(),
        }
    }

    /// Loads the kernel unwinder's tables of every process scanned from now on.
    pub fn set_unwind_tables(&mut self, tables: Option<KernelTables>) {
        self.tables = tables;
    }

    /// Whether processes are scanned.
    pub fn enabled(&self) -> bool {
        self.config.is_some()
    }

    /// The time between two full scans.
    pub fn rescan_interval(&self) -> Option<Duration> {
        self.config.as_ref().map(|c| c.rescan_interval)
    }

    /// Probes the C library at `path` for as long as the daemon runs (system-wide, or per process through
    /// tier 1); it must define the malloc family.
    pub fn pin(&mut self, probes: &mut Probes, path: &Path) -> Result<(), ProbeError> {
        let meta = fs::metadata(path).map_err(|source| ProbeError::Io { path: path.to_path_buf(), source })?;
        let symbols = libc::resolve(path)?;
        let attached = if self.system_wide {
            self.totals.files_attached += 1;
            Some(probes.attach_allocator(path, path, &symbols, Scope::AllProcesses)?)
        } else {
            None
        };
        let provider = Provider {
            shown: path.to_path_buf(),
            symbols,
            attached,
            error: None,
            processes: 0,
            pinned: true,
            preprobed: false,
        };
        self.known.insert(FileId::of(&meta), Known::Provider(Box::new(provider)));
        Ok(())
    }

    /// Scans every process; detaches the probes of files no process maps any more.
    pub fn full_scan(&mut self, probes: &mut Probes) -> ScanCost {
        let Some(config) = &self.config else { return ScanCost::default() };
        let mut scan = ScanState::new(config, true);
        if let Some(tables) = &mut self.tables {
            tables.scan_budget(true);
        }
        let pids: Vec<u32> = match fs::read_dir("/proc") {
            Ok(dir) => dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect(),
            Err(err) => {
                log::warn!("discovery: reading /proc: {err}");
                Vec::new()
            }
        };
        for pid in pids {
            self.visit(probes, pid, &mut scan);
        }
        let (cost, seen) = scan.finish();
        let seen = seen.unwrap_or_default();
        if let Some(tables) = &mut self.tables {
            tables.scan_budget(false);
        }
        // Forget what no process maps any more: the cache stays as large as the set of mapped files.
        let gone: Vec<FileId> = self
            .known
            .iter()
            .filter(|(id, known)| !seen.contains_key(id) && !matches!(known, Known::Provider(p) if p.pinned))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(Known::Provider(provider)) = self.known.remove(&id) {
                log::info!("discovery: no process maps {} any more: probes detached", provider.shown.display());
                if let Some(attached) = provider.attached {
                    probes.detach_allocator(attached);
                    self.totals.files_detached += 1;
                }
            }
        }
        for (id, known) in &mut self.known {
            let processes = seen.get(id).copied().unwrap_or(0);
            match known {
                Known::Provider(provider) => provider.processes = processes,
                Known::Unsupported(file) => file.processes = processes,
                Known::Nothing => {}
            }
        }
        self.totals.full_scans += 1;
        self.account(cost);
        self.last_full = Some(cost);
        cost
    }

    /// Scans one process (after it called `execve`).
    pub fn scan_pid(&mut self, probes: &mut Probes, pid: u32) -> ScanCost {
        let Some(config) = &self.config else { return ScanCost::default() };
        let mut scan = ScanState::new(config, false);
        self.visit(probes, pid, &mut scan);
        let (cost, _) = scan.finish();
        self.totals.exec_scans += 1;
        self.account(cost);
        self.last_exec = Some(cost);
        cost
    }

    fn account(&mut self, cost: ScanCost) {
        self.totals.pids_scanned += cost.pids;
        self.totals.files_examined += cost.files_examined;
        self.totals.files_deferred += cost.files_deferred;
        self.totals.scan_microseconds += cost.microseconds;
    }

    /// Reads the maps of `pid` and examines the files not seen before.
    fn visit(&mut self, probes: &mut Probes, pid: u32, scan: &mut ScanState) {
        // Exited already, or a kernel thread: nothing to do.
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/maps")) else { return };
        scan.cost.pids += 1;
        if let Some(tables) = &mut self.tables {
            tables.update_process(pid, &text);
        }
        if scan.python_frames
            && let Some(interpreter) = crate::python::find(pid, &text, &mut self.python_files)
        {
            probes.register_python(pid, &interpreter.proc());
        }
        for mapping in exec_mappings(&text) {
            if let Some(seen) = &mut scan.seen {
                *seen.entry(mapping.file).or_default() += 1;
            }
            if self.known.contains_key(&mapping.file) || scan.excluded(&mapping.path) {
                continue;
            }
            if scan.budget == 0 {
                scan.cost.files_deferred += 1;
                continue;
            }
            scan.budget -= 1;
            scan.cost.files_examined += 1;
            if let Some(known) = self.examine(probes, pid, &mapping) {
                self.known.insert(mapping.file, known);
            }
        }
    }

    /// Examines a newly seen file and attaches to it if it provides an allocator; `None` when it could not be
    /// read (the process may be gone: a later scan tries again).
    fn examine(&mut self, probes: &mut Probes, pid: u32, mapping: &ExecMapping) -> Option<Known> {
        let (target, shown) = open_path(pid, mapping);
        self.examine_path(probes, &target, shown, mapping.file, &format!("pid {pid}"))
    }

    /// Examines file `file_id`, opened through `target` and shown as `shown`, found in `found_in` (for the log).
    fn examine_path(
        &mut self,
        probes: &mut Probes,
        target: &Path,
        shown: PathBuf,
        file_id: FileId,
        found_in: &str,
    ) -> Option<Known> {
        let file = match fs::File::open(target) {
            Ok(file) => file,
            Err(err) => {
                log::debug!("discovery: opening {} ({found_in}): {err}", target.display());
                self.totals.open_errors += 1;
                return None;
            }
        };
        // SAFETY: the mapping is read-only and private. A file truncated while mapped would fault this
        // process; libraries and executables that processes run are not truncated in place (installers
        // replace them with a new inode).
        let data = match unsafe { memmap2::Mmap::map(&file) } {
            Ok(data) => data,
            Err(err) => {
                log::debug!("discovery: mapping {}: {err}", target.display());
                self.totals.open_errors += 1;
                return None;
            }
        };
        let symbols = match allocators::examine(&data) {
            Ok(allocators::Examined::Allocator(symbols)) => symbols,
            Ok(allocators::Examined::Nothing) => return Some(Known::Nothing),
            Ok(allocators::Examined::Unsupported(what)) => {
                log::info!(
                    "discovery: {} ({}, {}) in {found_in}: recognised but not supported: {}",
                    shown.display(),
                    what.family_name(),
                    file_id,
                    what.reason
                );
                self.totals.unsupported += 1;
                return Some(Known::Unsupported(Box::new(UnsupportedFile { shown, what, processes: 1 })));
            }
            Err(reason) => {
                log::debug!("discovery: {} is not ELF: {reason}", shown.display());
                self.totals.not_elf += 1;
                return Some(Known::Nothing);
            }
        };
        if !self.system_wide {
            log::info!("discovery: {} ({}, {}) in {found_in}", shown.display(), symbols.family.name(), file_id);
            let provider =
                Provider { shown, symbols, attached: None, error: None, processes: 1, pinned: false, preprobed: false };
            return Some(Known::Provider(Box::new(provider)));
        }
        let (attached, error) = match probes.attach_allocator(target, &shown, &symbols, Scope::AllProcesses) {
            Ok(attached) => {
                log::info!(
                    "discovery: {} ({}, {}) in {found_in}: {} probes",
                    shown.display(),
                    symbols.family.name(),
                    file_id,
                    attached.points.len()
                );
                self.totals.files_attached += 1;
                self.log_if_replaced(&shown, file_id);
                (Some(attached), None)
            }
            Err(err) => {
                let err = format!("{:#}", anyhow::Error::new(err));
                log::warn!("discovery: {}: {err}", shown.display());
                self.totals.attach_errors += 1;
                (None, Some(err))
            }
        };
        Some(Known::Provider(Box::new(Provider {
            shown,
            symbols,
            attached,
            error,
            processes: 1,
            pinned: false,
            preprobed: false,
        })))
    }

    /// A package upgrade replaces a library with a new file at the same path: say that both stay probed.
    fn log_if_replaced(&self, shown: &Path, file: FileId) {
        for (old, provider) in self.providers() {
            if *old != file && provider.shown == shown && provider.attached.is_some() {
                log::info!(
                    "discovery: {} was replaced on disk ({old} -> {file}, e.g. by a package upgrade): the new file \
                     is probed too; the old one stays probed while processes still map it",
                    shown.display()
                );
            }
        }
    }

    /// Tier 1: attaches probes scoped to process `pid` to every allocator file it maps (examining the files
    /// not seen before, unless discovery is off), and keeps them until [`Self::detach_pid`]. Attaching a
    /// process twice is a no-op. On a failure nothing stays attached; the error says why.
    pub fn attach_pid(&mut self, probes: &mut Probes, pid: u32) -> Result<(), AttachPidError> {
        if self.scoped.contains_key(&pid) {
            return Ok(());
        }
        let nonzero =
            NonZeroU32::new(pid).ok_or_else(|| AttachPidError::Unprobeable(format!("pid {pid} cannot be traced")))?;
        let text = fs::read_to_string(format!("/proc/{pid}/maps"))
            .map_err(|err| AttachPidError::Gone(format!("reading /proc/{pid}/maps: {err}")))?;
        let mut files = Vec::new();
        let mut unsupported = Vec::new();
        for mapping in exec_mappings(&text) {
            if !self.known.contains_key(&mapping.file) {
                let examine = self.config.as_ref().is_some_and(|config| {
                    !mapping.path.starts_with(MEMFD_PREFIX)
                        && !config.exclude.iter().any(|prefix| mapping.path.starts_with(prefix.as_str()))
                });
                if examine && let Some(known) = self.examine(probes, pid, &mapping) {
                    self.known.insert(mapping.file, known);
                }
            }
            let provider = match self.known.get(&mapping.file) {
                Some(Known::Provider(provider)) if provider.error.is_none() => provider,
                Some(Known::Unsupported(file)) => {
                    unsupported.push(format!("{}: {}", file.shown.display(), file.what.reason));
                    continue;
                }
                _ => continue,
            };
            let (target, shown) = open_path(pid, &mapping);
            match probes.attach_allocator(&target, &shown, &provider.symbols, Scope::Pid(nonzero)) {
                Ok(attached) => files.push(attached),
                Err(err) => {
                    for attached in files {
                        probes.detach_allocator(attached);
                    }
                    return Err(AttachPidError::Failed(format!("{:#}", anyhow::Error::new(err))));
                }
            }
        }
        if files.is_empty() {
            if !unsupported.is_empty() {
                return Err(AttachPidError::Unprobeable(format!(
                    "process {pid} maps no allocator leakprobe can probe ({})",
                    unsupported.join("; ")
                )));
            }
            return Err(AttachPidError::Unprobeable(format!("process {pid} maps no allocator leakprobe probes")));
        }
        log::debug!("tier 1: pid {pid}: probes on {} allocator files", files.len());
        self.scoped.insert(pid, files);
        Ok(())
    }

    /// Tier 1: takes the probes of process `pid` off; `false` when it had none.
    pub fn detach_pid(&mut self, probes: &mut Probes, pid: u32) -> bool {
        let Some(files) = self.scoped.remove(&pid) else { return false };
        for attached in files {
            probes.detach_allocator(attached);
        }
        true
    }

    fn providers(&self) -> impl Iterator<Item = (&FileId, &Provider)> {
        self.known.iter().filter_map(|(id, known)| match known {
            Known::Provider(provider) => Some((id, &**provider)),
            Known::Nothing | Known::Unsupported(_) => None,
        })
    }
}

#[cfg(test)]
mod tests;

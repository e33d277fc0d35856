//! Loading the eBPF object and attaching its programs.
//!
//! Order, so that no event is lost: [`Probes::load`] creates the maps and loads the programs; the caller takes
//! the maps and starts its consumers; then [`Probes::attach_tracepoints`] and [`Probes::attach_allocator`] for
//! each allocator file [`discover`] finds (with a [`Scope`]: every process, or one). Dropping [`Probes`]
//! detaches everything (aya closes the links).

pub mod allocators;
pub mod btf;
pub mod discover;
pub mod generator;
pub mod libc;
pub mod mapped;
pub mod oom;
pub mod preflight;
pub mod session;
pub mod site;
mod tracepoints;
pub mod unwind_tables;

use std::{
    num::NonZeroU32,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        ProgramError, RawTracePoint, UProbe,
        uprobe::{UProbeLinkId, UProbeScope},
    },
};
use leakprobe_common::{
    ALLOC_EXIT_PROGRAM, ALLOC_SESSION_PROGRAM, AllocFn, BRK_PROGRAM, EXEC_PROGRAM, EXIT_PROGRAM, FAULT_PROGRAM,
    FREE_PROGRAM, FaultFields, GENERATOR_PROGRAM, KernelOffsets, LiveKey, MMAP_PROGRAM, MapFields, NO_FIELD,
    OOM_PROGRAM, OomFields, PyProc, globals, maps,
};
use serde::{Deserialize, Serialize};

use self::tracepoints::{fault_fields, map_fields, optional_fields, tracepoint};
use self::{
    allocators::{AllocatorSymbols, EntryKind},
    session::{ReturnProbes, SessionError, SessionProgram},
    unwind_tables::KernelTables,
};
use crate::protocol::{AttachPoint, ProgramStats};

/// The eBPF object, built by `build.rs` and embedded in the binary.
pub(crate) static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/leakprobe"));

/// Why loading or attaching failed. Every variant names what is missing.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("the kernel has no BTF ({0} is missing): leakprobe needs a kernel built with CONFIG_DEBUG_INFO_BTF")]
    NoBtf(PathBuf),
    #[error("the kernel has no uprobe support ({0} is missing): leakprobe needs CONFIG_UPROBE_EVENTS")]
    NoUprobes(PathBuf),
    #[error("tracefs is not mounted on {path} and mounting it there failed")]
    NoTracefs { path: PathBuf, source: std::io::Error },
    #[error("could not find the host's libc in /proc/self/maps; pass --libc PATH")]
    LibcNotFound,
    #[error("{path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a usable ELF file: {reason}")]
    BadElf { path: PathBuf, reason: String },
    #[error("{path} has no `{symbol}` symbol: is it a C library?")]
    MissingSymbol { path: PathBuf, symbol: &'static str },
    #[error("loading the eBPF object failed")]
    Load(#[from] aya::EbpfError),
    #[error("the eBPF object has no program `{0}` (build mismatch)")]
    NoProgram(&'static str),
    #[error("the eBPF object has no map `{0}` (build mismatch)")]
    NoMap(&'static str),
    #[error("map `{name}`")]
    Map { name: &'static str, source: aya::maps::MapError },
    #[error("program `{program}`")]
    Program { program: &'static str, source: ProgramError },
    #[error("duplicating the fd of program `{program}`")]
    ProgramFd { program: &'static str, source: std::io::Error },
    #[error("pid {0} cannot be traced")]
    BadPid(u32),
    #[error("attaching `{program}` to {target}")]
    Attach { program: &'static str, target: String, source: ProgramError },
    #[error("session uprobes (--return-probes session)")]
    Session(#[from] SessionError),
}

/// What the probes need to know.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// A C library probed from start to end whatever discovery finds (`--libc`).
    pub libc: Option<PathBuf>,
    /// Find and probe every allocator the running processes map (see [`discover`]); without it only the libc
    /// (the given one, or the host's) is probed.
    pub discovery: Option<discover::DiscoveryConfig>,
    /// Where kernel features are looked for.
    pub sys: preflight::SysPaths,
    /// Size of the kernel's live-address map: the daemon's table holds as many, so the two limits agree.
    pub max_live_allocations: u32,
    /// Mean bytes between sampled allocations; 0 tracks every allocation.
    pub sample_interval: u64,
    /// How the allocating functions' returns are probed.
    pub return_probes: ReturnProbes,
    /// Where the malloc-family probes go.
    pub malloc_probes: MallocProbes,
    /// Mean bytes of faulting pages between two sampled faults (tier 0).
    pub fault_sample_interval: u64,
    /// Bytes of user stack copied per reported allocation for unwinding in the daemon; 0: the kernel walks
    /// frame pointers instead.
    pub stack_copy_bytes: u32,
    /// Rows of the kernel unwinder's arena when stacks are walked with the unwind tables (`--unwind auto`);
    /// `None`: the kernel's frame-pointer walk (or the stack copy).
    pub unwind_table_rows: Option<u32>,
    /// The only process traced; every process when `None`.
    pub pid: Option<u32>,
}

/// Where the malloc-family uprobes are attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MallocProbes {
    /// On every allocator file discovery finds, in every process mapping it, now or later: every allocator
    /// call of the host traps.
    All,
    /// Only in processes whose anonymous memory grows steadily (escalated from tier 0) or that are traced on
    /// request (`leakprobe trace`): pid-scoped uprobes, no trap in any other process.
    #[default]
    Auto,
    /// Nowhere, except processes traced on request.
    Off,
}

impl MallocProbes {
    /// The name as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Auto => "auto",
            Self::Off => "off",
        }
    }
}

/// The maps the daemon reads.
pub struct Maps {
    pub events: RingBuf<MapData>,
    pub live: HashMap<MapData, LiveKey, u64>,
    pub counters: PerCpuArray<MapData, u64>,
    /// Per-process sampling intervals of tier 1 (overriding the global one).
    pub pid_sample_interval: HashMap<MapData, u32, u64>,
    /// Allocator calls per process that reached a probe.
    pub pid_calls: PerCpuHashMap<MapData, u32, u64>,
    /// Frees of never-reported addresses per process started under the daemon; `None` when not counted
    /// (see [`crate::daemon`]'s `unseen` module).
    pub unseen_frees: Option<PerCpuHashMap<MapData, u32, u64>>,
}

/// Which processes an allocator probe fires for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every process mapping the file, now or later (system-wide).
    AllProcesses,
    /// Only this process (host pid).
    Pid(NonZeroU32),
}

impl Scope {
    /// The pid a `uprobe_multi` link takes: 0 for every process.
    fn pid(self) -> u32 {
        match self {
            Self::AllProcesses => 0,
            Self::Pid(pid) => pid.get(),
        }
    }

    fn uprobe_scope(self) -> UProbeScope {
        match self {
            Self::AllProcesses => UProbeScope::AllProcesses,
            Self::Pid(pid) => UProbeScope::OneProcess(pid),
        }
    }
}

/// The probes attached to one allocator file; [`Probes::detach_allocator`] takes them off.
#[derive(Debug)]
pub struct AttachedFile {
    links: Vec<(&'static str, UProbeLinkId)>,
    /// The session program's `uprobe_multi` link on the file's allocating functions, when returns use sessions.
    session: Option<std::os::fd::OwnedFd>,
    /// What is attached, for `status`.
    pub points: Vec<AttachPoint>,
}

/// The loaded object and what is attached.
pub struct Probes {
    ebpf: Ebpf,
    /// The tracepoints (process lifecycle, OOM).
    tracepoints: Vec<AttachPoint>,
    /// The OOM program is loaded (and, after attach, attached). Optional: without it there are no OOM reports.
    oom: bool,
    /// The session program, when the returns use session uprobes; `None`: plain uretprobes.
    session: Option<SessionProgram>,
    /// The tier-0 fault program is loaded (and, after attach, attached).
    fault: bool,
    /// The tier-0 mapping-growth programs (`mmap`, `brk`) are loaded (and, after attach, attached).
    map: bool,
    /// Where the malloc-family probes go (discovery reads it).
    malloc_scope: MallocProbes,
    /// The kernel unwinder's tables, until discovery takes them.
    tables: Option<KernelTables>,
}

impl Probes {
    /// Checks the system, loads the object and every program. Nothing is attached yet.
    pub fn load(config: &ProbeConfig) -> Result<(Self, Maps), ProbeError> {
        preflight::check(&config.sys)?;
        let exit_format = preflight::read_format(&config.sys.tracefs, "sched", "sched_process_exit")?;
        let group_dead = preflight::field_offset(&exit_format, "group_dead").unwrap_or(NO_FIELD);
        let tracefs = &config.sys.tracefs;
        let oom_fields = optional_fields(tracefs, ("oom", "mark_victim"), "no OOM reports", oom::fields);
        let fault_fields = optional_fields(tracefs, ("exceptions", "page_fault_user"), "no tier 0", fault_fields);
        let map_fields = map_fields(&config.sys.tracefs);
        let own_tgid = std::process::id();
        // Every free of an address never reported is a missed allocation only when every allocation is
        // reported (full mode) in every process (system-wide probes).
        let count_unseen = config.sample_interval == 0 && config.malloc_probes == MallocProbes::All;
        // The kernel unwinder's vma lookups need the kernel's struct layouts.
        let kernel_offsets =
            if config.unwind_table_rows.is_some() { btf::running_kernel_offsets() } else { KernelOffsets::NONE };
        let exp_table = crate::core::sampling::exp_table();
        // aya must never see the session program's kfunc calls as they are built: patched in every case.
        let kfuncs = match config.return_probes {
            ReturnProbes::Plain => None,
            ReturnProbes::Auto | ReturnProbes::Session => Some(session::kfunc_ids()),
        };
        let object = session::patch_kfunc_calls(
            EBPF_OBJECT,
            kfuncs.as_ref().and_then(|ids| ids.as_ref().ok()).copied().unwrap_or_default(),
        )?;
        let cost_experiment = cost_experiment();
        let mut ebpf = EbpfLoader::new()
            .override_global(globals::OWN_TGID, &own_tgid, true)
            .override_global(globals::COST_EXPERIMENT, &cost_experiment, true)
            .override_global(globals::SAMPLE_INTERVAL, &config.sample_interval, true)
            .override_global(globals::EXP_TABLE, &exp_table[..], true)
            .override_global(globals::EXIT_GROUP_DEAD_OFFSET, &group_dead, true)
            .override_global(globals::OOM_FIELDS, &oom_fields.unwrap_or(OomFields::NONE), true)
            .override_global(globals::FAULT_FIELDS, &fault_fields.unwrap_or(FaultFields::NONE), true)
            .override_global(globals::MAP_FIELDS, &map_fields.unwrap_or(MapFields::NONE), true)
            .override_global(globals::FAULT_SAMPLE_INTERVAL, &config.fault_sample_interval.max(1), true)
            .override_global(globals::STACK_COPY_BYTES, &config.stack_copy_bytes, true)
            .override_global(globals::TRACED_TGID, &config.pid.unwrap_or(0), true)
            .override_global(globals::COUNT_UNSEEN_FREES, &u32::from(count_unseen), true)
            .override_global(globals::UNWIND_TABLES, &u32::from(config.unwind_table_rows.is_some()), true)
            .override_global(globals::KERNEL_OFFSETS, &kernel_offsets, true)
            .map_max_entries(maps::LIVE, config.max_live_allocations)
            // Unused without the table walk: one page of rows.
            .map_max_entries(maps::UNWIND_ROWS, config.unwind_table_rows.unwrap_or(256))
            .load(&object)?;
        let session = match kfuncs {
            None => None,
            Some(ids) => match ids.and_then(|_| SessionProgram::load(&object, &ebpf)) {
                Ok(program) => Some(program),
                Err(err) if config.return_probes == ReturnProbes::Auto => {
                    log::warn!("plain return probes: no session uprobes ({:#})", anyhow::Error::new(err));
                    None
                }
                Err(err) => return Err(err.into()),
            },
        };
        let maps = Maps {
            events: take_map(&mut ebpf, maps::EVENTS)?,
            live: take_map(&mut ebpf, maps::LIVE)?,
            counters: take_map(&mut ebpf, maps::COUNTERS)?,
            pid_sample_interval: take_map(&mut ebpf, maps::PID_SAMPLE_INTERVAL)?,
            pid_calls: take_map(&mut ebpf, maps::PID_CALLS)?,
            unseen_frees: if count_unseen { Some(take_map(&mut ebpf, maps::UNSEEN_FREES)?) } else { None },
        };
        let tables = config.unwind_table_rows.map(|rows| take_tables(&mut ebpf, rows, kernel_offsets)).transpose()?;
        let mut programs: Vec<&'static str> = Vec::new();
        if session.is_none() {
            programs.extend(AllocFn::ALL.iter().map(|f| f.entry_program()));
            programs.push(ALLOC_EXIT_PROGRAM);
        }
        programs.push(FREE_PROGRAM);
        for program in programs {
            uprobe(&mut ebpf, program)?.load().map_err(|source| ProbeError::Program { program, source })?;
        }
        for program in [EXIT_PROGRAM, EXEC_PROGRAM] {
            tracepoint(&mut ebpf, program)?.load().map_err(|source| ProbeError::Program { program, source })?;
        }
        // The OOM program is optional: malloc tracking runs without it.
        let oom = oom_fields.is_some()
            && tracepoint(&mut ebpf, OOM_PROGRAM)?
                .load()
                .map_err(|err| log::warn!("no OOM reports: loading `{OOM_PROGRAM}` failed: {err}"))
                .is_ok();
        let fault = fault_fields.is_some()
            && tracepoint(&mut ebpf, FAULT_PROGRAM)?
                .load()
                .map_err(|err| log::warn!("no tier 0: loading `{FAULT_PROGRAM}` failed: {err}"))
                .is_ok();
        let map = map_fields.is_some()
            && [MMAP_PROGRAM, BRK_PROGRAM].into_iter().all(|program| {
                tracepoint(&mut ebpf, program)
                    .and_then(|p| p.load().map_err(|source| ProbeError::Program { program, source }))
                    .map_err(|err| log::warn!("no mapping growth in tier 0: {:#}", anyhow::Error::new(err)))
                    .is_ok()
            });
        let probes = Self {
            ebpf,
            tracepoints: Vec::new(),
            oom,
            session,
            fault,
            map,
            malloc_scope: config.malloc_probes,
            tables,
        };
        Ok((probes, maps))
    }

    /// Registers process `pid` as a Python interpreter: its events carry its Python frames from now on (the
    /// kernel forgets it at exit and exec). A failure is logged: the process's stacks stay native only.
    pub fn register_python(&mut self, pid: u32, proc: &PyProc) {
        let Some(map) = self.ebpf.map_mut(maps::PY_PROCS) else { return };
        let result = HashMap::<_, u32, PyProc>::try_from(map).and_then(|mut map| map.insert(pid, proc, 0));
        if let Err(err) = result {
            log::debug!("python: registering pid {pid}: {err}");
        }
    }

    /// Loads the ingest benchmark's event generator (see [`generator`]), for `leakprobe bench-ingest` only:
    /// `leakprobe run` never calls this, so the program is never loaded, let alone run, by the daemon.
    pub fn load_generator(&mut self) -> Result<generator::Generator, ProbeError> {
        let program = GENERATOR_PROGRAM;
        let prog = self.ebpf.program_mut(program).ok_or(ProbeError::NoProgram(program))?;
        let raw: &mut RawTracePoint = prog.try_into().map_err(|source| ProbeError::Program { program, source })?;
        raw.load().map_err(|source| ProbeError::Program { program, source })?;
        let fd = raw.fd().map_err(|source| ProbeError::Program { program, source })?;
        let fd = fd.try_clone().map_err(|source| ProbeError::ProgramFd { program, source })?;
        Ok(generator::Generator::new(fd))
    }

    /// Run-time statistics of every loaded program (counted while BPF run-time statistics are enabled), the
    /// session program (loaded outside aya) included.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        let mut stats: Vec<ProgramStats> = self
            .ebpf
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                Some(ProgramStats {
                    program: name.to_owned(),
                    run_count: info.run_count(),
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                })
            })
            .collect();
        if let Some(session) = &self.session {
            match session.run_stats() {
                Ok((run_count, run_time_ns)) => {
                    stats.push(ProgramStats { program: ALLOC_SESSION_PROGRAM.to_owned(), run_count, run_time_ns });
                }
                Err(err) => log::debug!("statistics of `{ALLOC_SESSION_PROGRAM}`: {err}"),
            }
        }
        stats
    }

    /// Attaches entry (and, for allocating functions, return) probes on every entry point of `symbols`, in the
    /// file opened at `target` (a path, or a `/proc/PID/map_files` link for a file of another mount namespace);
    /// `shown` is the path reported in `status`. On a failure, what was attached is detached again.
    pub fn attach_allocator(
        &mut self,
        target: &Path,
        shown: &Path,
        symbols: &AllocatorSymbols,
        scope: Scope,
    ) -> Result<AttachedFile, ProbeError> {
        let mut attached = AttachedFile { links: Vec::new(), session: None, points: Vec::new() };
        let mut points = Vec::new();
        if let Some(session) = &self.session {
            // One uprobe_multi link for every allocating function of the file, each tagged with its function.
            let functions: Vec<(AllocFn, u64)> = symbols
                .entries
                .iter()
                .filter_map(|entry| match entry.kind {
                    EntryKind::Alloc(func) => Some((func, entry.resolved.probe_offset())),
                    EntryKind::Free => None,
                })
                .collect();
            if !functions.is_empty() {
                attached.session = Some(session.attach(target, &functions, scope.pid())?);
                for entry in symbols.entries.iter().filter(|entry| entry.kind != EntryKind::Free) {
                    attached.points.push(attach_point(
                        SESSION_KIND,
                        ALLOC_SESSION_PROGRAM,
                        shown,
                        &entry.resolved,
                        scope,
                    ));
                }
            }
        }
        for entry in &symbols.entries {
            if self.session.is_none() || entry.kind == EntryKind::Free {
                points.push(("uprobe", entry.kind.entry_program(), &entry.resolved));
            }
            if self.session.is_none() && entry.kind != EntryKind::Free {
                points.push(("uretprobe", ALLOC_EXIT_PROGRAM, &entry.resolved));
            }
        }
        for (kind, program, resolved) in points {
            let result = uprobe(&mut self.ebpf, program).and_then(|probe| {
                probe.attach(resolved.probe_offset(), target, scope.uprobe_scope()).map_err(|source| {
                    ProbeError::Attach { program, target: format!("{}:{}", shown.display(), resolved.symbol), source }
                })
            });
            let link = match result {
                Ok(link) => link,
                Err(err) => {
                    self.detach_allocator(attached);
                    return Err(err);
                }
            };
            attached.links.push((program, link));
            attached.points.push(attach_point(kind, program, shown, resolved, scope));
        }
        for (alias, probed) in &symbols.aliases {
            log::debug!("{alias} is an alias of {probed} in {}: probed once", shown.display());
        }
        Ok(attached)
    }

    /// Takes the probes of one file off.
    pub fn detach_allocator(&mut self, file: AttachedFile) {
        // Closing the session link's fd detaches it.
        drop(file.session);
        for (program, link) in file.links {
            let detached = uprobe(&mut self.ebpf, program)
                .and_then(|probe| probe.detach(link).map_err(|source| ProbeError::Program { program, source }));
            if let Err(err) = detached {
                log::warn!("detaching `{program}`: {err}");
            }
        }
    }

    /// How the allocating functions' returns are probed: `session` or `plain`.
    pub fn return_probes(&self) -> &'static str {
        if self.session.is_some() { "session" } else { "plain" }
    }

    /// The kernel unwinder's tables (`--unwind auto`), taken once, by discovery, which loads them.
    pub fn take_unwind_tables(&mut self) -> Option<KernelTables> {
        self.tables.take()
    }

    /// Whether tier 0 runs (the fault tracepoint exists and its program is attached).
    pub fn fault_enabled(&self) -> bool {
        self.fault
    }

    /// Where the malloc-family probes go.
    pub fn malloc_probes(&self) -> MallocProbes {
        self.malloc_scope
    }

    /// The attached tracepoints.
    pub fn tracepoints(&self) -> &[AttachPoint] {
        &self.tracepoints
    }
}

/// Attach-point kind of the session program (entry and return in one).
pub const SESSION_KIND: &str = "uprobe_session";

fn attach_point(kind: &str, program: &str, path: &Path, resolved: &allocators::Resolved, scope: Scope) -> AttachPoint {
    AttachPoint {
        pid: NonZeroU32::new(scope.pid()).map(NonZeroU32::get),
        kind: kind.into(),
        target: resolved.symbol.clone(),
        path: Some(path.display().to_string()),
        offset: Some(resolved.probe_offset()),
        program: program.into(),
        site: Some(format!("+{} {}", resolved.site.offset, resolved.site.instruction)),
        emulated: Some(resolved.site.emulated),
    }
}

/// The kernel unwinder's maps, its arena of `rows` rows; `offsets`: the kernel struct offsets it was given.
fn take_tables(ebpf: &mut Ebpf, rows: u32, offsets: KernelOffsets) -> Result<KernelTables, ProbeError> {
    KernelTables::new(
        ebpf.take_map(maps::UNWIND_ROWS).ok_or(ProbeError::NoMap(maps::UNWIND_ROWS))?,
        rows,
        take_map(ebpf, maps::UNWIND_BINARIES)?,
        take_map(ebpf, maps::UNWIND_PROCS)?,
        take_map(ebpf, maps::UNWIND_FILES)?,
        offsets,
    )
}

fn take_map<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, ProbeError> {
    let map = ebpf.take_map(name).ok_or(ProbeError::NoMap(name))?;
    T::try_from(map).map_err(|source| ProbeError::Map { name, source })
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut UProbe, ProbeError> {
    let prog = ebpf.program_mut(program).ok_or(ProbeError::NoProgram(program))?;
    prog.try_into().map_err(|source| ProbeError::Program { program, source })
}

/// The cost experiment's `COST_*` bits (`cargo xtask bench --only-cost`): from `LEAKPROBE_COST_EXPERIMENT` in
/// builds with the `bench` feature, 0 otherwise.
fn cost_experiment() -> u32 {
    #[cfg(feature = "bench")]
    if let Some(bits) = std::env::var("LEAKPROBE_COST_EXPERIMENT").ok().and_then(|v| v.parse::<u32>().ok()) {
        let bits = bits & leakprobe_common::COST_ALL;
        log::warn!("cost experiment {bits:#x}: the probes' work is changed for a measurement");
        return bits;
    }
    0
}

//! Loading the eBPF object and attaching its programs.
//!
//! Order, so that no event is lost: [`Probes::load`] creates the maps and loads the programs; the caller takes
//! the maps and starts its consumers; then [`Probes::attach`] attaches. Dropping [`Probes`] detaches
//! everything (aya closes the links).

pub mod libc;
pub mod oom;
pub mod preflight;
pub mod site;

use std::{collections::HashMap as StdHashMap, num::NonZeroU32, path::PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        ProgramError, TracePoint, UProbe,
        uprobe::{UProbeLinkId, UProbeScope},
    },
};
use leakprobe_common::{
    ALLOC_EXIT_PROGRAM, EXEC_PROGRAM, EXIT_PROGRAM, FAULT_PROGRAM, FREE_PROGRAM, FaultFields, LiveKey, NO_FIELD,
    OOM_PROGRAM, OomFields, globals, maps,
};
use serde::{Deserialize, Serialize};

use crate::protocol::{AttachPoint, ProgramStats};

/// The eBPF object, built by `build.rs` and embedded in the binary.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/leakprobe"));

/// Why loading or attaching failed. Every variant names what is missing.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("leakprobe must run as root to load eBPF programs (effective uid is {euid})")]
    NotRoot { euid: u32 },
    #[error("the kernel has no BTF ({0} is missing): leakprobe needs a kernel built with CONFIG_DEBUG_INFO_BTF")]
    NoBtf(PathBuf),
    #[error("the kernel has no uprobe support ({0} is missing): leakprobe needs CONFIG_UPROBE_EVENTS")]
    NoUprobes(PathBuf),
    #[error("tracefs is not mounted on {0} and could not be mounted there")]
    NoTracefs(PathBuf),
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
    #[error("pid {0} cannot be traced")]
    BadPid(u32),
    #[error("attaching `{program}` to {target}")]
    Attach { program: &'static str, target: String, source: ProgramError },
}

/// What the probes need to know.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// The libc to probe; the host's when `None`.
    pub libc: Option<PathBuf>,
    /// Where kernel features are looked for.
    pub sys: preflight::SysPaths,
    /// Size of the kernel's live-address map: the daemon's table holds as many, so the two limits agree.
    pub max_live_allocations: u32,
    /// Mean bytes between sampled allocations; 0 tracks every allocation.
    pub sample_interval: u64,
    /// Where the malloc-family probes go.
    pub malloc_probes: MallocProbes,
    /// Mean bytes of faulting pages between two sampled faults (tier 0).
    pub fault_sample_interval: u64,
}

/// Where the malloc-family uprobes are attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MallocProbes {
    /// In every process mapping the libc, now or later: every allocator call of the host traps.
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
}

/// The loaded object and what is attached.
pub struct Probes {
    ebpf: Ebpf,
    libc: libc::LibcSymbols,
    attach_points: Vec<AttachPoint>,
    /// The OOM program is loaded (and, after attach, attached). Optional: without it there are no OOM reports.
    oom: bool,
    /// The tier-0 fault program is loaded (and, after attach, attached).
    fault: bool,
    malloc_scope: MallocProbes,
    /// Pid-scoped malloc-family links of tier 1, by process.
    scoped: StdHashMap<u32, Vec<(&'static str, UProbeLinkId)>>,
}

impl Probes {
    /// Checks the system, resolves the libc's allocator symbols, loads the object and every program.
    pub fn load(config: &ProbeConfig) -> Result<(Self, Maps), ProbeError> {
        preflight::check(&config.sys)?;
        let libc_path = match &config.libc {
            Some(path) => path.clone(),
            None => libc::host_libc()?,
        };
        let libc = libc::resolve(&libc_path)?;
        let exit_format = preflight::read_format(&config.sys.tracefs, "sched", "sched_process_exit")?;
        let group_dead = preflight::field_offset(&exit_format, "group_dead").unwrap_or(NO_FIELD);
        let oom_fields = match preflight::read_format(&config.sys.tracefs, "oom", "mark_victim") {
            Ok(format) => oom::fields(&format),
            Err(err) => {
                log::warn!(
                    "no OOM reports: the kernel has no oom/mark_victim tracepoint ({:#})",
                    anyhow::Error::new(err)
                );
                None
            }
        };
        let fault_fields = match preflight::read_format(&config.sys.tracefs, "exceptions", "page_fault_user") {
            Ok(format) => fault_fields(&format),
            Err(err) => {
                log::warn!(
                    "no tier 0: the kernel has no exceptions/page_fault_user tracepoint ({:#})",
                    anyhow::Error::new(err)
                );
                None
            }
        };
        let own_tgid = std::process::id();
        let exp_table = crate::core::sampling::exp_table();
        let mut ebpf = EbpfLoader::new()
            .override_global(globals::OWN_TGID, &own_tgid, true)
            .override_global(globals::SAMPLE_INTERVAL, &config.sample_interval, true)
            .override_global(globals::EXP_TABLE, &exp_table[..], true)
            .override_global(globals::EXIT_GROUP_DEAD_OFFSET, &group_dead, true)
            .override_global(globals::OOM_FIELDS, &oom_fields.unwrap_or(OomFields::NONE), true)
            .override_global(globals::FAULT_FIELDS, &fault_fields.unwrap_or(FaultFields::NONE), true)
            .override_global(globals::FAULT_SAMPLE_INTERVAL, &config.fault_sample_interval.max(1), true)
            .map_max_entries(maps::LIVE, config.max_live_allocations)
            .load(EBPF_OBJECT)?;
        let maps = Maps {
            events: take_map(&mut ebpf, maps::EVENTS)?,
            live: take_map(&mut ebpf, maps::LIVE)?,
            counters: take_map(&mut ebpf, maps::COUNTERS)?,
            pid_sample_interval: take_map(&mut ebpf, maps::PID_SAMPLE_INTERVAL)?,
            pid_calls: take_map(&mut ebpf, maps::PID_CALLS)?,
        };
        let mut programs: Vec<&'static str> = libc.allocs.iter().map(|(f, _)| f.entry_program()).collect();
        programs.extend([ALLOC_EXIT_PROGRAM, FREE_PROGRAM]);
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
        let probes = Self {
            ebpf,
            libc,
            attach_points: Vec::new(),
            oom,
            fault,
            malloc_scope: config.malloc_probes,
            scoped: StdHashMap::new(),
        };
        Ok((probes, maps))
    }

    /// The malloc-family attach points: entry and return probes on each allocating function, and `free`.
    fn malloc_points(&self) -> Vec<(&'static str, &'static str, libc::Resolved)> {
        let mut points = Vec::new();
        for (func, resolved) in &self.libc.allocs {
            points.push(("uprobe", func.entry_program(), resolved.clone()));
            points.push(("uretprobe", ALLOC_EXIT_PROGRAM, resolved.clone()));
        }
        points.push(("uprobe", FREE_PROGRAM, self.libc.free.clone()));
        points
    }

    /// Attaches the malloc-family probes in `scope`: every process, or one (tier 1). On a failure, what this
    /// call attached is detached again.
    fn attach_malloc(&mut self, scope: UProbeScope) -> Result<Vec<(&'static str, UProbeLinkId)>, ProbeError> {
        let path = self.libc.path.clone();
        let mut links = Vec::new();
        for (_, program, resolved) in self.malloc_points() {
            let attached = uprobe(&mut self.ebpf, program)?.attach(resolved.probe_offset(), &path, scope);
            match attached {
                Ok(link) => links.push((program, link)),
                Err(source) => {
                    self.detach_links(links);
                    let target = format!("{}:{}", path.display(), resolved.symbol);
                    return Err(ProbeError::Attach { program, target, source });
                }
            }
        }
        Ok(links)
    }

    fn detach_links(&mut self, links: Vec<(&'static str, UProbeLinkId)>) {
        for (program, link) in links {
            let detached = uprobe(&mut self.ebpf, program)
                .and_then(|p| p.detach(link).map_err(|source| ProbeError::Program { program, source }));
            if let Err(err) = detached {
                log::warn!("detaching `{program}`: {:#}", anyhow::Error::new(err));
            }
        }
    }

    /// Tier 1: attaches the malloc-family probes to process `pid` only (pid-scoped uprobes: the breakpoints
    /// are installed in that process alone). Attaching a process twice is a no-op.
    pub fn attach_pid(&mut self, pid: u32) -> Result<(), ProbeError> {
        if self.scoped.contains_key(&pid) {
            return Ok(());
        }
        let Some(nonzero) = NonZeroU32::new(pid) else {
            return Err(ProbeError::BadPid(pid));
        };
        let links = self.attach_malloc(UProbeScope::OneProcess(nonzero))?;
        self.scoped.insert(pid, links);
        Ok(())
    }

    /// Tier 1: detaches the probes of process `pid`; false when it had none.
    pub fn detach_pid(&mut self, pid: u32) -> bool {
        let Some(links) = self.scoped.remove(&pid) else { return false };
        self.detach_links(links);
        true
    }

    /// The processes with pid-scoped probes.
    pub fn scoped_pids(&self) -> Vec<u32> {
        self.scoped.keys().copied().collect()
    }

    /// Run-time statistics of every loaded program (counted while BPF run-time statistics are enabled).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                Some(ProgramStats {
                    program: name.to_owned(),
                    run_count: info.run_count(),
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                })
            })
            .collect()
    }

    /// Attaches the process lifecycle, OOM and tier-0 tracepoints, and with `--malloc-probes all` the
    /// malloc-family probes in every process mapping the libc, now or later.
    pub fn attach(&mut self) -> Result<(), ProbeError> {
        let path = self.libc.path.clone();
        if self.malloc_scope == MallocProbes::All {
            // Links of all-process probes live as long as the object: their ids are not needed.
            let _ = self.attach_malloc(UProbeScope::AllProcesses)?;
            for (kind, program, resolved) in self.malloc_points() {
                self.attach_points.push(AttachPoint {
                    kind: kind.into(),
                    target: resolved.symbol.into(),
                    path: Some(path.display().to_string()),
                    offset: Some(resolved.probe_offset()),
                    program: program.into(),
                    site: Some(format!("+{} {}", resolved.site.offset, resolved.site.instruction)),
                    emulated: Some(resolved.site.emulated),
                });
            }
        }
        if self.fault {
            self.attach_fault()?;
        }
        for (program, name) in [(EXIT_PROGRAM, "sched_process_exit"), (EXEC_PROGRAM, "sched_process_exec")] {
            tracepoint(&mut self.ebpf, program)?.attach("sched", name).map_err(|source| ProbeError::Attach {
                program,
                target: format!("sched/{name}"),
                source,
            })?;
            self.attach_points.push(AttachPoint {
                kind: "tracepoint".into(),
                target: format!("sched/{name}"),
                path: None,
                offset: None,
                program: program.into(),
                site: None,
                emulated: None,
            });
        }
        if self.oom {
            self.attach_oom()?;
        }
        for (alias, probed) in &self.libc.aliases {
            log::info!("{alias} is an alias of {probed} in {}: probed once", path.display());
        }
        for symbol in &self.libc.missing {
            log::warn!("{} does not export {symbol}: not probed", path.display());
        }
        Ok(())
    }

    /// Attaches the OOM program; a failure only turns OOM reports off.
    fn attach_oom(&mut self) -> Result<(), ProbeError> {
        if let Err(err) = tracepoint(&mut self.ebpf, OOM_PROGRAM)?.attach("oom", "mark_victim") {
            log::warn!("no OOM reports: attaching `{OOM_PROGRAM}` to oom/mark_victim failed: {err}");
            self.oom = false;
            return Ok(());
        }
        self.attach_points.push(AttachPoint {
            kind: "tracepoint".into(),
            target: "oom/mark_victim".into(),
            path: None,
            offset: None,
            program: OOM_PROGRAM.into(),
            site: None,
            emulated: None,
        });
        Ok(())
    }

    /// Attaches the tier-0 fault program; a failure only turns tier 0 off.
    fn attach_fault(&mut self) -> Result<(), ProbeError> {
        if let Err(err) = tracepoint(&mut self.ebpf, FAULT_PROGRAM)?.attach("exceptions", "page_fault_user") {
            log::warn!("no tier 0: attaching `{FAULT_PROGRAM}` to exceptions/page_fault_user failed: {err}");
            self.fault = false;
            return Ok(());
        }
        self.attach_points.push(AttachPoint {
            kind: "tracepoint".into(),
            target: "exceptions/page_fault_user".into(),
            path: None,
            offset: None,
            program: FAULT_PROGRAM.into(),
            site: None,
            emulated: None,
        });
        Ok(())
    }

    /// Whether tier 0 runs (the fault tracepoint exists and its program is attached).
    pub fn fault_enabled(&self) -> bool {
        self.fault
    }

    /// Where the malloc-family probes go.
    pub fn malloc_probes(&self) -> MallocProbes {
        self.malloc_scope
    }

    /// Whether OOM kills are reported (the tracepoint exists and its program is attached).
    pub fn oom_enabled(&self) -> bool {
        self.oom
    }

    /// Every attached probe.
    pub fn attach_points(&self) -> &[AttachPoint] {
        &self.attach_points
    }

    /// The probed libc.
    pub fn libc(&self) -> &libc::LibcSymbols {
        &self.libc
    }
}

/// Offsets of the fields the fault program reads, `None` when the record lacks one or its size is not 8.
fn fault_fields(format: &str) -> Option<FaultFields> {
    let offset = |name: &str| preflight::field(format, name).filter(|f| f.size == 8).map(|f| f.offset);
    if let (Some(address), Some(error_code)) = (offset("address"), offset("error_code")) {
        return Some(FaultFields { address, error_code });
    }
    log::warn!("no tier 0: exceptions/page_fault_user has no 8-byte `address` and `error_code` fields");
    None
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

fn tracepoint<'a>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut TracePoint, ProbeError> {
    let prog = ebpf.program_mut(program).ok_or(ProbeError::NoProgram(program))?;
    prog.try_into().map_err(|source| ProbeError::Program { program, source })
}

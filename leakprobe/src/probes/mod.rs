//! Loading the eBPF object and attaching its programs.
//!
//! Order, so that no event is lost: [`Probes::load`] creates the maps and loads the programs; the caller takes
//! the maps and starts its consumers; then [`Probes::attach`] attaches. Dropping [`Probes`] detaches
//! everything (aya closes the links).

pub mod libc;
pub mod oom;
pub mod preflight;
pub mod site;

use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, TracePoint, UProbe, uprobe::UProbeScope},
};
use leakprobe_common::{
    ALLOC_EXIT_PROGRAM, EXEC_PROGRAM, EXIT_PROGRAM, FREE_PROGRAM, LiveKey, NO_FIELD, OOM_PROGRAM, OomFields, globals,
    maps,
};

use crate::protocol::AttachPoint;

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
    /// Bytes of user stack copied per reported allocation for unwinding in the daemon; 0: the kernel walks
    /// frame pointers instead.
    pub stack_copy_bytes: u32,
    /// The only process traced; every process when `None`.
    pub pid: Option<u32>,
}

/// The maps the daemon reads.
pub struct Maps {
    pub events: RingBuf<MapData>,
    pub live: HashMap<MapData, LiveKey, u64>,
    pub counters: PerCpuArray<MapData, u64>,
}

/// The loaded object and what is attached.
pub struct Probes {
    ebpf: Ebpf,
    libc: libc::LibcSymbols,
    attach_points: Vec<AttachPoint>,
    /// The OOM program is loaded (and, after attach, attached). Optional: without it there are no OOM reports.
    oom: bool,
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
        let own_tgid = std::process::id();
        let exp_table = crate::core::sampling::exp_table();
        let mut ebpf = EbpfLoader::new()
            .override_global(globals::OWN_TGID, &own_tgid, true)
            .override_global(globals::SAMPLE_INTERVAL, &config.sample_interval, true)
            .override_global(globals::EXP_TABLE, &exp_table[..], true)
            .override_global(globals::EXIT_GROUP_DEAD_OFFSET, &group_dead, true)
            .override_global(globals::OOM_FIELDS, &oom_fields.unwrap_or(OomFields::NONE), true)
            .override_global(globals::STACK_COPY_BYTES, &config.stack_copy_bytes, true)
            .override_global(globals::TRACED_TGID, &config.pid.unwrap_or(0), true)
            .map_max_entries(maps::LIVE, config.max_live_allocations)
            .load(EBPF_OBJECT)?;
        let maps = Maps {
            events: take_map(&mut ebpf, maps::EVENTS)?,
            live: take_map(&mut ebpf, maps::LIVE)?,
            counters: take_map(&mut ebpf, maps::COUNTERS)?,
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
        Ok((Self { ebpf, libc, attach_points: Vec::new(), oom }, maps))
    }

    /// Attaches every program: entry and return probes on each allocating function, `free`, and the
    /// process lifecycle tracepoints. System-wide: every process mapping the libc, now or later.
    pub fn attach(&mut self) -> Result<(), ProbeError> {
        let path = self.libc.path.clone();
        let mut points = Vec::new();
        for (func, resolved) in &self.libc.allocs {
            points.push(("uprobe", func.entry_program(), resolved.clone()));
            points.push(("uretprobe", ALLOC_EXIT_PROGRAM, resolved.clone()));
        }
        points.push(("uprobe", FREE_PROGRAM, self.libc.free.clone()));
        for (kind, program, resolved) in points {
            let target = format!("{}:{}", path.display(), resolved.symbol);
            uprobe(&mut self.ebpf, program)?
                .attach(resolved.probe_offset(), &path, UProbeScope::AllProcesses)
                .map_err(|source| ProbeError::Attach { program, target, source })?;
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

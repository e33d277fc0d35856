//! The tracepoints: process lifecycle (exit, exec), OOM kills and tier 0 (faults, mapping growth), the fields
//! their programs read from this kernel's records, and their attach points in `status`.

use std::path::Path;

use aya::{Ebpf, programs::TracePoint};
use leakprobe_common::{
    BRK_PROGRAM, EXEC_PROGRAM, EXIT_PROGRAM, FAULT_PROGRAM, FaultFields, MMAP_PROGRAM, MapFields, OOM_PROGRAM,
};

use super::{ProbeError, Probes, preflight};
use crate::protocol::AttachPoint;

impl Probes {
    /// Attaches the process lifecycle tracepoints (and the OOM and tier-0 ones). Call once, before any
    /// allocator.
    pub fn attach_tracepoints(&mut self) -> Result<(), ProbeError> {
        if self.fault {
            self.attach_fault()?;
        }
        if self.map {
            self.attach_map()?;
        }
        for (program, name) in [(EXIT_PROGRAM, "sched_process_exit"), (EXEC_PROGRAM, "sched_process_exec")] {
            tracepoint(&mut self.ebpf, program)?.attach("sched", name).map_err(|source| ProbeError::Attach {
                program,
                target: format!("sched/{name}"),
                source,
            })?;
            self.tracepoints.push(tracepoint_point(&format!("sched/{name}"), program));
        }
        if self.oom {
            self.attach_oom()?;
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
        self.tracepoints.push(tracepoint_point("oom/mark_victim", OOM_PROGRAM));
        Ok(())
    }

    /// Attaches the tier-0 fault program; a failure only turns tier 0 off.
    fn attach_fault(&mut self) -> Result<(), ProbeError> {
        if let Err(err) = tracepoint(&mut self.ebpf, FAULT_PROGRAM)?.attach("exceptions", "page_fault_user") {
            log::warn!("no tier 0: attaching `{FAULT_PROGRAM}` to exceptions/page_fault_user failed: {err}");
            self.fault = false;
            return Ok(());
        }
        self.tracepoints.push(tracepoint_point("exceptions/page_fault_user", FAULT_PROGRAM));
        Ok(())
    }

    /// Attaches tier 0's mapping-growth programs; a failure only turns mapping growth off.
    fn attach_map(&mut self) -> Result<(), ProbeError> {
        for (program, name) in [(MMAP_PROGRAM, "sys_enter_mmap"), (BRK_PROGRAM, "sys_exit_brk")] {
            if let Err(err) = tracepoint(&mut self.ebpf, program)?.attach("syscalls", name) {
                log::warn!("no mapping growth in tier 0: attaching `{program}` to syscalls/{name} failed: {err}");
                self.map = false;
                return Ok(());
            }
            self.tracepoints.push(tracepoint_point(&format!("syscalls/{name}"), program));
        }
        Ok(())
    }
}

/// The attach point of a tracepoint (`category/name`) and its program, for `status`.
fn tracepoint_point(target: &str, program: &str) -> AttachPoint {
    AttachPoint {
        kind: "tracepoint".into(),
        target: target.into(),
        path: None,
        offset: None,
        program: program.into(),
        site: None,
        emulated: None,
        pid: None,
    }
}

/// The fields of an optional tracepoint (`category/name`), parsed from its format file; `None` (logged with
/// `without`, what the daemon then lacks) when this kernel has no such tracepoint.
pub(super) fn optional_fields<T>(
    tracefs: &Path,
    (category, name): (&str, &str),
    without: &str,
    parse: fn(&str) -> Option<T>,
) -> Option<T> {
    match preflight::read_format(tracefs, category, name) {
        Ok(format) => parse(&format),
        Err(err) => {
            let err = anyhow::Error::new(err);
            log::warn!("{without}: the kernel has no {category}/{name} tracepoint ({err:#})");
            None
        }
    }
}

/// Offsets of the fields the fault program reads, `None` when the record lacks one or its size is not 8.
pub(super) fn fault_fields(format: &str) -> Option<FaultFields> {
    let offset = |name: &str| preflight::field(format, name).filter(|f| f.size == 8).map(|f| f.offset);
    if let (Some(address), Some(error_code)) = (offset("address"), offset("error_code")) {
        return Some(FaultFields { address, error_code });
    }
    log::warn!("no tier 0: exceptions/page_fault_user has no 8-byte `address` and `error_code` fields");
    None
}

/// Offsets of the fields the mapping-growth programs read, `None` (logged) when a record is missing or lacks one.
pub(super) fn map_fields(tracefs: &Path) -> Option<MapFields> {
    let offset = |format: &str, name: &str| preflight::field(format, name).filter(|f| f.size == 8).map(|f| f.offset);
    let formats = preflight::read_format(tracefs, "syscalls", "sys_enter_mmap")
        .and_then(|mmap| Ok((mmap, preflight::read_format(tracefs, "syscalls", "sys_exit_brk")?)));
    let (mmap, brk) = match formats {
        Ok(formats) => formats,
        Err(err) => {
            log::warn!(
                "no mapping growth in tier 0: the kernel has no syscalls tracepoints for mmap and brk ({:#})",
                anyhow::Error::new(err)
            );
            return None;
        }
    };
    if let (Some(mmap_len), Some(mmap_prot), Some(mmap_flags), Some(brk_ret)) =
        (offset(&mmap, "len"), offset(&mmap, "prot"), offset(&mmap, "flags"), offset(&brk, "ret"))
    {
        return Some(MapFields { mmap_len, mmap_prot, mmap_flags, brk_ret });
    }
    log::warn!("no mapping growth in tier 0: sys_enter_mmap or sys_exit_brk lacks an 8-byte len, prot, flags or ret");
    None
}

pub(super) fn tracepoint<'a>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut TracePoint, ProbeError> {
    let prog = ebpf.program_mut(program).ok_or(ProbeError::NoProgram(program))?;
    prog.try_into().map_err(|source| ProbeError::Program { program, source })
}

//! The state owner on a fake kernel (no root, no probes): the sweep of processes whose exit event was lost,
//! and a `trace --pid` made right after an exec whose event comes later.

use std::{process::Command as Process, sync::mpsc::Receiver};

use leakprobe_common::{EventHeader, EventKind, ProcessEvent};

use super::*;
use crate::{
    core::{
        faults::{FaultLimits, FaultTable},
        table::{AnalysisConfig, Limits, tests::alloc},
        tier1::{Tier1, Tier1Config},
    },
    daemon::{
        discovery,
        folios::Folios,
        kernel::fake::{Call, FakeKernel, ZeroCounters},
        tiers::TierSettings,
    },
    oom::OomStats,
    protocol::{TraceMode, TraceRequest, TraceResponse},
    queries::TraceError,
    symbolize::CacheLimits,
};

/// The state owner, its fake kernel and what it sends the purger.
struct Harness {
    state: State,
    kernel: FakeKernel,
    jobs: Receiver<PurgeJob>,
    _requests: mpsc::Receiver<Request>,
    _commands: discovery::CommandReceiver,
}

fn harness() -> Harness {
    let kernel = FakeKernel::default();
    let settings = TierSettings {
        malloc_probes: MallocProbes::Off,
        sample_interval: 4096,
        escalate_only: Vec::new(),
        java_perfmap: false,
    };
    let tiers = Tiers::new(
        FaultTable::new(FaultLimits::default(), 1),
        Tier1::new(Tier1Config::default()),
        Folios::counting_base_pages(),
        settings,
        Box::new(kernel.clone()),
    );
    let (purger, jobs) = std::sync::mpsc::channel();
    let (requests, request_rx) = mpsc::channel(64);
    let (oom_reports, _) = mpsc::channel(1);
    let (discovery, commands) = discovery::channel(false);
    let links = Links {
        counters: Box::new(ZeroCounters),
        unseen: UnseenFrees::new(None),
        purger,
        purged_entries: Arc::default(),
        symbolizer: SymbolizerHandle::spawn(CacheLimits::default()).expect("the symbolizer thread starts"),
        oom: OomTracker::new(false, oom_reports, Arc::new(OomStats::default()), std::env::temp_dir()),
        discovery,
        requests,
        ingest: Arc::default(),
        unwind_stats: Arc::default(),
        python_stats: Arc::default(),
    };
    let setup = Setup {
        started: Instant::now(),
        return_probes: "plain",
        stack_copy_bytes: 0,
        unwind_tables: false,
        traced_pid: None,
    };
    let limits = Limits { max_allocations: 1000, max_stacks: 100, max_series: 1000 };
    let table = Table::new(limits, AnalysisConfig { sample_interval: 4096, ..AnalysisConfig::default() });
    Harness { state: State::new(table, tiers, links, setup), kernel, jobs, _requests: request_rx, _commands: commands }
}

fn batch(events: Vec<Event>) -> Batch {
    Batch { events, decode_errors: 0, as_of_ns: procfs::monotonic_ns() }
}

/// Pids no process has (above the usual `pid_max`): the sweep is told they are gone.
const P1: u32 = 4_000_001;
const P2: u32 = 4_000_002;

#[test]
fn a_process_gone_at_two_ticks_in_a_row_is_swept_once_the_table_holds_the_earlier_read() {
    let Harness { mut state, jobs, .. } = harness();
    state.apply(&batch(vec![alloc(P1, 0x1000, 64, &[0x10], 1), alloc(P2, 0x2000, 64, &[0x10], 1)]));
    assert_eq!(sorted(state.table.pids()), vec![P1, P2]);

    // Gone at one tick only: it may be an exit event still in the ring buffer.
    state.sweep(vec![P1, P2], 100, 100);
    assert_eq!(sorted(state.table.pids()), vec![P1, P2]);
    // P2 came back (a read that failed once); P1 is gone again and swept, its kernel entries purged.
    state.sweep(vec![P1], 200, 200);
    assert_eq!(state.table.pids(), vec![P2]);
    let job = jobs.try_recv().expect("a purge job");
    assert_eq!((job.tgid, job.addrs.as_slice(), job.before_ns), (P1, &[0x1000][..], 200));
    assert_eq!(state.table.counters().processes_gone, 1);

    // While the table lags behind the earlier read, an exit event may still be on its way: nothing is swept,
    // but the tick is remembered.
    state.sweep(vec![P2], 300, 250);
    state.sweep(vec![P2], 400, 250);
    assert_eq!(state.table.pids(), vec![P2]);
    state.sweep(vec![P2], 500, 450);
    assert!(state.table.pids().is_empty());
    assert_eq!(jobs.try_recv().expect("a purge job").tgid, P2);
    assert!(jobs.try_recv().is_err(), "one job per process");
}

fn sorted(mut pids: Vec<u32>) -> Vec<u32> {
    pids.sort_unstable();
    pids
}

fn exec(tgid: u32, ts_ns: u64) -> Event {
    Event::Exec(ProcessEvent {
        header: EventHeader { kind: EventKind::Exec as u32, pad: 0, ts_ns, tgid, tid: tgid },
        comm: [0; 16],
    })
}

/// Asks for `pid` to be traced in full and has its probes attached; returns the answer.
fn trace(state: &mut State, pid: u32) -> Result<TraceResponse, TraceError> {
    let (tx, mut rx) = oneshot::channel();
    let request = TraceRequest { pid, mode: Some(TraceMode::Full), duration: None };
    state.answer(Request::Query(Query::Trace(request, tx)));
    state.answer(Request::Tier1Attached { pid, result: Ok(()) });
    rx.try_recv().expect("answered")
}

/// The escalated pids `status` shows.
fn escalated(state: &State) -> Vec<u32> {
    state.status().tier1.expect("tier 1 in status").escalated.iter().map(|e| e.pid).collect()
}

/// The unit twin of `a_process_traced_right_after_its_exec_stays_traced` (tests/tests/tiers.rs).
#[test]
fn a_process_traced_right_after_its_exec_stays_traced() {
    let Harness { mut state, kernel, .. } = harness();
    let mut child = Process::new("sleep").arg("60").spawn().expect("sleep runs");
    let pid = child.id();
    let exec_ns = procfs::monotonic_ns();
    state.apply(&batch(vec![alloc(pid, 0x1000, 64, &[0x10], exec_ns - 1)]));
    assert_eq!(trace(&mut state, pid).expect("traced").result, "attached");
    kernel.take();

    // The exec's event arrives after the request that was made for the new image.
    state.apply(&batch(vec![exec(pid, exec_ns)]));
    assert!(escalated(&state).contains(&pid), "still traced");
    assert_eq!(kernel.take(), Vec::new(), "its probes stay");
    assert_eq!(state.table.interval(pid), 0, "the new image is weighed as traced: every allocation");

    // An exec after the request replaces the image the probes were asked for: they go.
    state.apply(&batch(vec![exec(pid, procfs::monotonic_ns())]));
    assert!(!escalated(&state).contains(&pid));
    assert_eq!(kernel.take(), vec![Call::Detach(pid), Call::ClearInterval(pid)]);
    assert_eq!(state.table.interval(pid), 4096, "back to the daemon's sampling");
    let _ = child.kill();
    let _ = child.wait();
}

/// An OOM victim found gone at two ticks while its allocations and its OOM event still wait in the channel
/// (ingest caught up, the state owner behind): it is not swept, so the OOM event, applied later, finds the
/// victim's allocations in the table. Before, the report of such a kill held none of them.
#[test]
fn a_victim_is_not_swept_while_its_last_events_wait_behind_the_table() {
    let Harness { mut state, jobs, .. } = harness();
    let mut first = batch(vec![alloc(P1, 0x1000, 1 << 20, &[0x10], 1)]);
    first.as_of_ns = 50;
    state.apply(&first);
    state.sweep(vec![P1], 100, 50);
    state.sweep(vec![P1], 200, 50);
    assert_eq!(state.table.pids(), vec![P1], "swept before the table held its last events");
    assert!(jobs.try_recv().is_err(), "no purge job");
    let mut rest = batch(vec![alloc(P1, 0x2000, 1 << 20, &[0x10], 2)]);
    rest.as_of_ns = 250;
    state.apply(&rest);
    let live = state.table.processes(Some(P1), None).next().map(|p| (p.live_bytes, p.live_count));
    assert_eq!(live, Some((2 << 20, 2)), "both allocations live when the OOM event would come");
    state.sweep(vec![P1], 300, 250);
    assert!(state.table.pids().is_empty(), "swept once the table holds the earlier read");
}

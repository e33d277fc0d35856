//! Tier 1's escalations, the CPU budget and `trace` requests on a fake kernel (no root, no probes): what the
//! tiers ask of the kernel, what they answer, and what they leave in the table.

use std::process::{Child, Command as Process};

use leakprobe_common::{EventHeader, EventKind, FAULT_PAGE_BYTES, FaultEvent, MAX_FRAMES};
use tokio::sync::oneshot;

use super::*;
use crate::{
    core::{
        analysis::Verdict,
        faults::FaultLimits,
        table::{AnalysisConfig, Limits, tests::alloc},
        tier1::{FIRST_BUDGET_INTERVAL, MAX_BUDGET_INTERVAL, Tier1Config},
    },
    daemon::kernel::fake::{Call, FakeKernel},
};

/// A process of the test's own that lives until dropped: `trace` refuses pids that are not running.
struct Sleeper(Child);

impl Sleeper {
    fn spawn() -> Self {
        Self(Process::new("sleep").arg("60").spawn().expect("sleep runs"))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A table whose processes are sampled every 4 KiB unless tier 1 says otherwise.
fn table() -> Table {
    let limits = Limits { max_allocations: 1000, max_stacks: 100, max_series: 1000 };
    Table::new(limits, AnalysisConfig { sample_interval: 4096, ..AnalysisConfig::default() })
}

fn tiers_with(config: Tier1Config, malloc_probes: MallocProbes) -> (Tiers, FakeKernel) {
    let kernel = FakeKernel::default();
    let settings =
        TierSettings { malloc_probes, sample_interval: 4096, escalate_only: Vec::new(), java_perfmap: false };
    let tiers = Tiers::new(
        FaultTable::new(FaultLimits::default(), 1),
        Tier1::new(config),
        Folios::counting_base_pages(),
        settings,
        Box::new(kernel.clone()),
    );
    (tiers, kernel)
}

/// Tiers with `config` (no automatic escalation) on a fake kernel, a table, and a running process to trace.
struct Setup {
    tiers: Tiers,
    kernel: FakeKernel,
    table: Table,
    child: Sleeper,
}

fn setup(config: Tier1Config) -> Setup {
    let (tiers, kernel) = tiers_with(config, MallocProbes::Off);
    Setup { tiers, kernel, table: table(), child: Sleeper::spawn() }
}

fn fault(tgid: u32) -> FaultEvent {
    FaultEvent {
        header: EventHeader { kind: EventKind::Fault as u32, pad: 0, ts_ns: 1, tgid, tid: tgid },
        addr: 0x1000,
        error_code: 6,
        nframes: 1,
        flags: 0,
        comm: *b"grower\0\0\0\0\0\0\0\0\0\0",
        frames: [0x10; MAX_FRAMES],
    }
}

/// `ticks` ticks one second apart, where each process of `rates` (pid, bytes per second) grows that fast.
fn run_ticks(tiers: &mut Tiers, table: &mut Table, rates: &[(u32, u64)], ticks: u64) {
    for (pid, _) in rates {
        tiers.faults.apply(&fault(*pid), FAULT_PAGE_BYTES);
    }
    let rule = VerdictConfig::default();
    for tick in 1..=ticks {
        let samples: Vec<_> = rates
            .iter()
            .map(|&(pid, rate)| (pid, RssSample { anon: (1 << 20) + rate * tick, ..RssSample::default() }, None))
            .collect();
        tiers.tick(&samples, tick * 1_000_000_000, 100, &rule, table);
    }
}

/// The calls other than the budget's requests for statistics (one per tick).
fn without_stats(calls: Vec<Call>) -> Vec<Call> {
    calls.into_iter().filter(|c| *c != Call::ProgramStats).collect()
}

#[test]
fn a_growing_process_is_escalated_and_a_flat_one_is_not() {
    let (mut tiers, kernel) = tiers_with(Tier1Config::default(), MallocProbes::Auto);
    let mut table = table();
    run_ticks(&mut tiers, &mut table, &[(101, 1 << 20), (102, 0)], 10);
    assert_eq!(without_stats(kernel.take()), vec![Call::SetInterval(101, 0), Call::Attach(101)]);
    let escalation = tiers.tier1.get(101).expect("101 escalated");
    assert_eq!(escalation.trigger, Trigger::Auto);
    assert!(escalation.until_ns.is_some(), "an automatic escalation ends by itself");
    assert!(tiers.tier1.get(102).is_none(), "flat: not escalated");
    assert_eq!(table.interval(101), 0, "the table weighs its events as the kernel samples them: all of them");
    assert_eq!(table.interval(102), 4096);
    // More ticks: it is escalated once.
    run_ticks(&mut tiers, &mut table, &[(101, 1 << 20), (102, 0)], 3);
    assert_eq!(without_stats(kernel.take()), Vec::new());
}

#[test]
fn escalations_stop_at_the_limit_and_follow_escalate_only() {
    let config = Tier1Config { max_processes: 2, ..Tier1Config::default() };
    let (mut tiers, kernel) = tiers_with(config, MallocProbes::Auto);
    let mut table = table();
    run_ticks(&mut tiers, &mut table, &[(201, 1 << 20), (202, 4 << 20), (203, 2 << 20)], 10);
    let attached: Vec<_> = kernel.take().into_iter().filter(|c| matches!(c, Call::Attach(_))).collect();
    assert_eq!(attached, vec![Call::Attach(202), Call::Attach(203)], "the two fastest, fastest first");
    assert!(tiers.tier1.get(201).is_none());

    // Only the names asked for: no process here is called that.
    let (mut tiers, kernel) = tiers_with(Tier1Config::default(), MallocProbes::Auto);
    tiers.escalate_only = vec!["java".into()];
    run_ticks(&mut tiers, &mut table, &[(204, 1 << 20)], 10);
    assert_eq!(without_stats(kernel.take()), Vec::new());

    // Without automatic escalation, nothing grows into tier 1.
    let (mut tiers, kernel) = tiers_with(Tier1Config::default(), MallocProbes::Off);
    run_ticks(&mut tiers, &mut table, &[(205, 1 << 20)], 10);
    assert_eq!(without_stats(kernel.take()), Vec::new());
}

/// Traces `pid` on request in `mode`, its probes attached; clears the kernel's record.
fn traced(tiers: &mut Tiers, kernel: &FakeKernel, table: &mut Table, pid: u32, mode: Option<TraceMode>) {
    let (tx, _rx) = oneshot::channel();
    tiers.trace(&TraceRequest { pid, mode, duration: None }, table, Clock::new(), tx);
    tiers.attached(pid, Ok(()), table, Clock::new());
    kernel.take();
}

/// Budget check `round`: since the previous one, `pid`'s probes ran for a whole second over 1000 calls.
fn budget_check(tiers: &mut Tiers, kernel: &FakeKernel, table: &mut Table, pid: u32, round: u64) {
    kernel.record().counts.insert(pid, 1000 * round);
    let stats = vec![ProgramStats { program: "malloc_entry".into(), run_count: 0, run_time_ns: round * 1_000_000_000 }];
    tiers.budget(stats, table);
}

#[test]
fn the_budget_raises_the_interval_then_detaches_and_freezes_the_heap() {
    // Only the per-process budget: the host's is out of reach.
    let config = Tier1Config { host_budget: 1e9, ..Tier1Config::default() };
    let Setup { mut tiers, kernel, mut table, child } = setup(config);
    let pid = child.pid();
    table.apply(&alloc(pid, 0x1000, 64, &[0x10, 0x20], 1));
    traced(&mut tiers, &kernel, &mut table, pid, Some(TraceMode::Full));
    assert_eq!(table.interval(pid), 0);

    let mut intervals = Vec::new();
    for round in 1..=8 {
        budget_check(&mut tiers, &kernel, &mut table, pid, round);
        for call in kernel.take() {
            match call {
                Call::SetInterval(p, interval) if p == pid => {
                    assert_eq!(table.interval(pid), interval, "the table follows the kernel");
                    intervals.push(interval);
                }
                Call::Detach(p) | Call::ClearInterval(p) if p == pid => intervals.push(u64::MAX),
                other => panic!("unexpected {other:?}"),
            }
        }
        if tiers.tier1.get(pid).is_none() {
            break;
        }
    }
    // The first check only measures; then 64 KiB, ×16 each check up to the most, then detached (detach and
    // the interval cleared).
    assert_eq!(
        intervals,
        vec![FIRST_BUDGET_INTERVAL, 1 << 20, 16 << 20, MAX_BUDGET_INTERVAL, u64::MAX, u64::MAX],
        "{intervals:?}"
    );
    let ended = tiers.tier1.ended().next_back().expect("the escalation ended");
    assert!(ended.why.starts_with("CPU budget: its probes cost"), "{}", ended.why);
    assert!(ended.escalation.cpu > config.process_budget, "{:?}", ended.escalation);
    assert_eq!(tiers.tier1.budget_actions().count(), 5, "four raises and the detach, each recorded");
    // The heap's figures freeze with the reason: its stacks are shed, not leaking.
    let frozen = table.frozen(pid).expect("frozen");
    assert!(frozen.why.contains("CPU budget"), "{}", frozen.why);
    assert!(table.stacks(Some(pid)).all(|row| row.analysis.verdict == Verdict::Frozen));
    assert_eq!(table.interval(pid), 4096, "back to the daemon's interval");
}

#[test]
fn over_the_host_budget_the_busiest_process_is_detached_after_three_checks() {
    let config = Tier1Config { process_budget: 1e9, ..Tier1Config::default() };
    let Setup { mut tiers, kernel, mut table, child } = setup(config);
    let pid = child.pid();
    traced(&mut tiers, &kernel, &mut table, pid, None);
    for round in 1..=3 {
        budget_check(&mut tiers, &kernel, &mut table, pid, round);
        assert!(tiers.tier1.get(pid).is_some(), "check {round}: not yet");
        assert_eq!(kernel.take(), Vec::new());
    }
    budget_check(&mut tiers, &kernel, &mut table, pid, 4);
    assert!(tiers.tier1.get(pid).is_none());
    assert_eq!(kernel.take(), vec![Call::Detach(pid), Call::ClearInterval(pid)]);
    let ended = tiers.tier1.ended().next_back().expect("ended");
    assert!(ended.why.contains("over the host budget"), "{}", ended.why);
}

fn ask(
    tiers: &mut Tiers,
    table: &mut Table,
    request: &TraceRequest,
) -> oneshot::Receiver<Result<TraceResponse, TraceError>> {
    let (tx, rx) = oneshot::channel();
    tiers.trace(request, table, Clock::new(), tx);
    rx
}

/// A request refused at once.
fn refused(tiers: &mut Tiers, table: &mut Table, request: &TraceRequest) -> TraceError {
    ask(tiers, table, request).try_recv().expect("answered at once").expect_err("refused")
}

fn request(pid: u32) -> TraceRequest {
    TraceRequest { pid, mode: None, duration: None }
}

#[test]
fn trace_requests_are_refused_with_their_reasons() {
    let (mut tiers, kernel) = tiers_with(Tier1Config { max_processes: 1, ..Tier1Config::default() }, MallocProbes::Off);
    let mut table = table();
    assert_eq!(refused(&mut tiers, &mut table, &request(std::process::id())), TraceError::OwnProcess);
    assert_eq!(refused(&mut tiers, &mut table, &request(999_999_999)), TraceError::NoProcess(999_999_999));
    let (one, two) = (Sleeper::spawn(), Sleeper::spawn());
    let bad = TraceRequest { duration: Some("ten minutes".into()), ..request(one.pid()) };
    assert!(matches!(refused(&mut tiers, &mut table, &bad), TraceError::BadDuration(_)));
    assert_eq!(kernel.take(), Vec::new(), "nothing asked of the kernel for a refused request");

    let mut pending = ask(&mut tiers, &mut table, &request(one.pid()));
    assert!(pending.try_recv().is_err(), "waits for the probes");
    assert_eq!(refused(&mut tiers, &mut table, &request(two.pid())), TraceError::Full(1));

    let (mut everywhere, _) = tiers_with(Tier1Config::default(), MallocProbes::All);
    assert_eq!(refused(&mut everywhere, &mut table, &request(one.pid())), TraceError::TracedEverywhere);

    let (mut full_map, kernel) = tiers_with(Tier1Config::default(), MallocProbes::Off);
    kernel.record().refuse_intervals = true;
    assert!(matches!(refused(&mut full_map, &mut table, &request(one.pid())), TraceError::Interval(_)));
    assert!(full_map.tier1.get(one.pid()).is_none());

    let (mut stopping, kernel) = tiers_with(Tier1Config::default(), MallocProbes::Off);
    kernel.record().gone = true;
    assert_eq!(refused(&mut stopping, &mut table, &request(one.pid())), TraceError::ShuttingDown);
    assert_eq!(stopping.attach_errors, 1);
    assert!(kernel.record().intervals.is_empty(), "the interval set for the attach is taken back");
}

#[test]
fn a_trace_request_is_answered_once_attached_updated_and_stopped() {
    let Setup { mut tiers, kernel, mut table, child } = setup(Tier1Config::default());
    let pid = child.pid();
    let clock = Clock::new();

    // Asked again while its probes are being attached: the escalation is updated at once.
    let mut first = ask(&mut tiers, &mut table, &request(pid));
    assert!(first.try_recv().is_err(), "waits for the probes");
    let again = ask(&mut tiers, &mut table, &request(pid)).try_recv().expect("answered").expect("updated");
    assert_eq!(again.result, "updated");
    // Stopped and asked for again before the first attach was answered: the first request is told so.
    assert_eq!(tiers.untrace(pid, &mut table, clock).expect("stopped").result, "detached");
    let mut second = ask(&mut tiers, &mut table, &request(pid));
    assert_eq!(first.try_recv().expect("answered"), Err(TraceError::Replaced(pid)));
    assert_eq!(
        kernel.take(),
        vec![
            Call::SetInterval(pid, 4096),
            Call::Attach(pid),
            Call::SetInterval(pid, 4096),
            Call::Detach(pid),
            Call::ClearInterval(pid),
            Call::SetInterval(pid, 4096),
            Call::Attach(pid),
        ]
    );
    tiers.attached(pid, Ok(()), &mut table, clock);
    let answer = second.try_recv().expect("answered").expect("attached");
    assert_eq!(answer.result, "attached");
    assert_eq!((answer.escalation.pid, answer.escalation.trigger.as_str()), (pid, "request"));
    assert_eq!(answer.escalation.mode, "sampled");

    // Asked again while traced: the new mode and duration apply at once.
    let full = TraceRequest { pid, mode: Some(TraceMode::Full), duration: Some("10m".into()) };
    let answer = ask(&mut tiers, &mut table, &full).try_recv().expect("answered").expect("updated");
    assert_eq!((answer.result.as_str(), answer.escalation.mode.as_str()), ("updated", "full"));
    assert!(answer.escalation.until_unix_ms.is_some());
    assert_eq!(kernel.take(), vec![Call::SetInterval(pid, 0)]);
    assert_eq!(table.interval(pid), 0);

    let stopped = tiers.untrace(pid, &mut table, clock).expect("detached");
    assert_eq!(stopped.result, "detached");
    assert_eq!(kernel.take(), vec![Call::Detach(pid), Call::ClearInterval(pid)]);
    assert_eq!(tiers.untrace(pid, &mut table, clock), Err(TraceError::NotTraced(pid)));
}

#[test]
fn a_failed_attach_ends_the_escalation_and_answers_with_its_error() {
    let Setup { mut tiers, kernel, mut table, child } = setup(Tier1Config::default());
    let pid = child.pid();
    let mut reply = ask(&mut tiers, &mut table, &request(pid));
    kernel.take();
    let err = AttachPidError::Unprobeable(format!("process {pid} maps no allocator leakprobe probes"));
    tiers.attached(pid, Err(err.clone()), &mut table, Clock::new());
    assert_eq!(reply.try_recv().expect("answered"), Err(TraceError::Attach(err)));
    assert!(tiers.tier1.get(pid).is_none());
    assert!(tiers.tier1.ended().any(|e| e.escalation.pid == pid && e.why.starts_with("attaching failed")));
    assert_eq!(kernel.take(), vec![Call::Detach(pid), Call::ClearInterval(pid)]);
    assert_eq!(tiers.attach_errors, 1);
}

#[test]
fn an_exec_before_the_trace_request_keeps_it_and_one_after_ends_it() {
    let Setup { mut tiers, kernel, mut table, child } = setup(Tier1Config::default());
    let pid = child.pid();
    let before = procfs::monotonic_ns();
    traced(&mut tiers, &kernel, &mut table, pid, Some(TraceMode::Full));
    // The exec's event comes through the ring buffer after the request that was made for the new image.
    assert_eq!(tiers.exec(pid, before, &mut table), Some(0), "kept, with its interval");
    assert!(tiers.tier1.get(pid).is_some());
    assert_eq!(kernel.take(), Vec::new(), "its probes stay");
    // A later exec replaces the image the probes were asked for.
    assert_eq!(tiers.exec(pid, procfs::monotonic_ns(), &mut table), None);
    assert!(tiers.tier1.get(pid).is_none());
    assert_eq!(kernel.take(), vec![Call::Detach(pid), Call::ClearInterval(pid)]);
}

//! `leakprobe bench-ingest` (hidden; run by `cargo xtask bench`): the daemon's ingest measured end to end,
//! without a workload in the way.
//!
//! The eBPF object's event generator (`leakprobe-ebpf/src/probes/generator.rs`, never attached) writes
//! allocation records into the real ring buffer, through the probes' own reserve and submit functions and drop
//! counters, paced at a given rate, on one CPU. The records name this process: it lives as long as the
//! measurement (so the daemon's sweep of exited processes and its RSS samples treat it as the live leaking
//! process it stands for) and makes no allocation the object sees (nothing is attached), so the generator's
//! records are the only ones in the ring buffer. On another CPU, a current-thread runtime runs the daemon's own
//! consumers ([`Consumers`]: the ingest task reading the ring buffer with `AsyncFd` and decoding it into
//! batches, the state owner applying them to the table), built from `leakprobe run`'s configuration in full
//! mode; every thread they start (purger, symbolizer, OOM reports, blocking pool) inherits that CPU.
//!
//! Each step loads the object afresh (a new ring buffer, counters and table), runs the generator at one rate
//! for `--seconds`, waits until the table has applied every record, and prints one JSON line: the rate
//! offered and reached, records applied, the kernel's drops (`ringbuf_full_alloc`, `ringbuf_full_free`), the
//! consumer thread's CPU time, and what the table holds for the generator's process (read back through the
//! same request the API's `/v1/processes` makes). Without `--rate`, steps search for the highest rate with
//! zero drops: the rate doubles from `--start-rate` until a step drops records, then the interval is bisected.
#![allow(clippy::cast_precision_loss, reason = "counts of records and times, shown as rates")]

use std::{
    os::unix::thread::JoinHandleExt as _,
    path::Path,
    sync::mpsc as std_mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use clap::{Args, Parser, ValueEnum};
use leakprobe_common::generator::{self, Shape};
use serde::Serialize;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use super::run::{self, RunArgs};
use crate::{
    config::DEFAULT_MAX_ALLOCATIONS,
    daemon::{self, Consumers, state::Request},
    probes::{Maps, Probes, generator::Generator},
    protocol::{StatusResponse, TopQuery},
    queries::Query,
};

#[derive(Debug, Args)]
pub struct BenchIngestArgs {
    /// `leaks`: allocations never freed (the table grows by one entry per record); `pairs`: an allocation and
    /// then its free (two records).
    #[arg(long, value_enum)]
    shape: ShapeArg,
    /// Records per second the generator offers. Without it, search for the highest rate with zero drops.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// Seconds the generator runs at each rate.
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    seconds: f64,
    /// First rate of the search: it doubles until a step drops records, then the interval is bisected.
    #[arg(long, value_name = "N", default_value_t = 250_000)]
    start_rate: u64,
    /// The search ends when the lowest rate that dropped is within this fraction above the highest that did not.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.05)]
    resolution: f64,
    /// The search goes no higher than this rate.
    #[arg(long, value_name = "N", default_value_t = 32_000_000)]
    max_rate: u64,
    /// CPU of the consumer (the ingest and state tasks and every thread they start) [default: the first CPU this
    /// process may run on].
    #[arg(long, value_name = "CPU")]
    consumer_cpu: Option<usize>,
    /// CPU of the generator [default: the second CPU this process may run on].
    #[arg(long, value_name = "CPU")]
    generator_cpu: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ShapeArg {
    Leaks,
    Pairs,
}

impl ShapeArg {
    fn shape(self) -> Shape {
        match self {
            Self::Leaks => Shape::Leaks,
            Self::Pairs => Shape::Pairs,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Leaks => "leaks",
            Self::Pairs => "pairs",
        }
    }

    /// Records per allocation.
    fn records(self) -> u64 {
        match self {
            Self::Leaks => 1,
            Self::Pairs => 2,
        }
    }
}

/// A step reached its rate if the generator offered at least this fraction of it.
const REACHED: f64 = 0.97;
/// How long the table may take to apply what the generator wrote, after it stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_mins(1);

/// One step: the generator at one rate, and what the daemon made of it.
#[derive(Debug, Serialize)]
struct Step {
    shape: &'static str,
    /// The process the records name: this one.
    pid: u32,
    /// Records per second asked of the generator.
    rate: u64,
    /// Records the generator offered (submitted or dropped) and the rate it reached doing so.
    offered: u64,
    generator_rate: f64,
    /// Seconds the generator ran.
    seconds: f64,
    /// Records submitted to the ring buffer (the program's return values, summed).
    submitted: u64,
    /// The kernel's counters over the step: allocation and free records submitted, records dropped because
    /// the ring buffer was full (`ringbuf_full_alloc` + `ringbuf_full_free`).
    allocs: u64,
    frees: u64,
    drops: u64,
    /// The daemon's counters over the step: events applied to the table, batches, records not decoded,
    /// allocations refused by a full table.
    applied: u64,
    batches: u64,
    decode_errors: u64,
    dropped_table_full: u64,
    /// Seconds from the generator's stop until the table had applied every submitted record.
    drain_seconds: f64,
    /// Events applied per second, from the generator's start until drained.
    applied_rate: f64,
    /// CPU time of the consumer thread (ingest and state tasks) from the generator's start until drained.
    consumer_cpu_seconds: f64,
    /// Of the wall time from the generator's start until drained, in percent of one core.
    consumer_cpu_percent: f64,
    cpu_us_per_event: f64,
    /// What `/v1/processes` shows of the generator's process afterwards.
    table: TableView,
    /// Every offered record was submitted and applied: nothing dropped, refused or undecodable.
    zero_drops: bool,
    /// The generator fell short of the rate (by more than 3%): the step measured the generator, not the daemon.
    generator_limited: bool,
}

/// The generator's process as the table reports it.
#[derive(Debug, Default, Serialize)]
struct TableView {
    pid: u32,
    comm: String,
    live_allocations: u64,
    live_bytes: u64,
    stacks: u64,
}

/// The outcome of a search.
#[derive(Debug, Serialize)]
struct Search {
    shape: &'static str,
    /// The highest rate of a step with zero drops whose rate the generator reached (0: none).
    max_zero_drop_rate: u64,
    /// That step's consumer CPU per event and share of one core.
    cpu_us_per_event: f64,
    consumer_cpu_percent: f64,
    /// The lowest rate with drops (0: none found up to `--max-rate` or to the generator's limit).
    lowest_dropping_rate: u64,
    /// The search stopped because the generator could not reach a rate: the daemon's limit is above it.
    generator_limited: bool,
    steps: usize,
    seconds_per_step: f64,
    consumer_cpu: usize,
    generator_cpu: usize,
}

pub fn run(args: &BenchIngestArgs) -> Result<()> {
    ensure!(args.seconds > 0.0 && args.seconds <= 60.0, "--seconds must be between 0 and 60");
    ensure!(args.resolution > 0.0, "--resolution must be positive");
    ensure!(args.start_rate > 0 && args.start_rate <= args.max_rate, "--start-rate must be in 1..=--max-rate");
    let cpus = Cpus::choose(args.consumer_cpu, args.generator_cpu)?;
    // The generator runs on this thread: `BPF_PROG_TEST_RUN` runs the program on the caller's CPU.
    pin_this_thread(cpus.generator)?;
    let dir = std::env::temp_dir().join(format!("leakprobe-bench-ingest-{}", std::process::id()));
    let result = match args.rate {
        Some(rate) => step(args, rate, &cpus, &dir).map(|step| print_line("step", &step)),
        None => search(args, &cpus, &dir),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn print_line(key: &str, value: &impl Serialize) {
    println!("{}", serde_json::json!({ key: value }));
}

/// Steps up, then bisects, the rate; prints every step and the outcome.
fn search(args: &BenchIngestArgs, cpus: &Cpus, dir: &Path) -> Result<()> {
    let mut best: Option<Step> = None;
    let mut lowest_dropping: Option<u64> = None;
    let mut generator_limited = false;
    let mut steps = 0;
    let mut rate = args.start_rate;
    loop {
        let step = step(args, rate, cpus, dir)?;
        steps += 1;
        eprintln!(
            "bench-ingest: {} at {rate}/s: {} drops, {:.0}/s applied, consumer {:.0}% of a core{}",
            step.shape,
            step.drops,
            step.applied_rate,
            step.consumer_cpu_percent,
            if step.generator_limited { " (generator short of the rate)" } else { "" }
        );
        print_line("step", &step);
        if !step.zero_drops {
            lowest_dropping = Some(lowest_dropping.map_or(rate, |r| r.min(rate)));
        } else if step.generator_limited {
            // The generator cannot offer more: the daemon kept up with all it could.
            generator_limited = true;
            break;
        } else if best.as_ref().is_none_or(|b| b.rate < rate) {
            best = Some(step);
        }
        let low = best.as_ref().map(|b| b.rate);
        rate = match (low, lowest_dropping) {
            (Some(low), Some(high)) if high as f64 <= low as f64 * (1.0 + args.resolution) => break,
            // Bisected on a logarithmic scale, rounded to a thousand records per second.
            (Some(low), Some(high)) => round_rate((low as f64 * high as f64).sqrt()),
            (Some(low), None) if low >= args.max_rate => break,
            (Some(low), None) => (low * 2).min(args.max_rate),
            (None, Some(high)) if high <= 1_000 => break,
            (None, Some(high)) => round_rate(high as f64 / 2.0),
            (None, None) => break,
        };
        if Some(rate) == low || Some(rate) == lowest_dropping {
            break;
        }
    }
    let search = Search {
        shape: args.shape.name(),
        max_zero_drop_rate: best.as_ref().map_or(0, |b| b.rate),
        cpu_us_per_event: best.as_ref().map_or(0.0, |b| b.cpu_us_per_event),
        consumer_cpu_percent: best.as_ref().map_or(0.0, |b| b.consumer_cpu_percent),
        lowest_dropping_rate: lowest_dropping.unwrap_or(0),
        generator_limited,
        steps,
        seconds_per_step: args.seconds,
        consumer_cpu: cpus.consumer,
        generator_cpu: cpus.generator,
    };
    print_line("search", &search);
    Ok(())
}

#[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a positive rate, rounded")]
fn round_rate(rate: f64) -> u64 {
    ((rate / 1_000.0).round() as u64).max(1) * 1_000
}

/// One step at `rate`: a fresh object and pipeline, the generator, the drain, the table's view.
fn step(args: &BenchIngestArgs, rate: u64, cpus: &Cpus, dir: &Path) -> Result<Step> {
    let records = records_for(rate, args.seconds);
    let config = config(records, dir)?;
    let (mut probes, maps) = Probes::load(&config.probes).context("loading the eBPF object")?;
    let generator = probes.load_generator().context("loading the event generator")?;
    let shutdown = CancellationToken::new();
    let (consumer, requests) = start_consumer(config, maps, probes.return_probes(), cpus.consumer, &shutdown)?;
    let measured = measure(args, rate, &generator, &requests, &consumer);
    shutdown.cancel();
    drop(requests);
    let joined = consumer.join().map_err(|_| anyhow!("the consumer thread panicked"))?;
    drop(probes);
    let step = measured?;
    joined?;
    Ok(step)
}

/// Records a step offers: `rate` for `seconds`, a whole number of allocations.
#[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a positive count of records")]
fn records_for(rate: u64, seconds: f64) -> u64 {
    (rate as f64 * seconds) as u64
}

/// `leakprobe run`'s configuration in full mode with every malloc probed (as the bench's full-mode daemon; the
/// generator's records are those of a full-mode daemon), room in the table for every record of a step, no
/// discovery and no metrics. Samples every second, five times as often as by default, so that every step
/// includes samples (their cost grows with the live allocations, which the `leaks` shape piles up).
fn config(records: u64, dir: &Path) -> Result<daemon::DaemonConfig> {
    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        run: RunArgs,
    }
    let allocations = u32::try_from(records + 1).unwrap_or(u32::MAX).max(DEFAULT_MAX_ALLOCATIONS);
    let state = dir.join("state");
    let socket = dir.join("unused.sock");
    let line = Line::try_parse_from([
        "leakprobe run".as_ref(),
        "--mode".as_ref(),
        "full".as_ref(),
        "--no-discovery".as_ref(),
        "--no-metrics".as_ref(),
        "--malloc-probes".as_ref(),
        "all".as_ref(),
        "--interval".as_ref(),
        "1s".as_ref(),
        "--max-allocations".as_ref(),
        allocations.to_string().as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--socket".as_ref(),
        socket.as_os_str(),
    ] as [&std::ffi::OsStr; 15])
    .context("the daemon's configuration")?;
    run::config(line.run)
}

/// Starts the consumer thread, pinned to `cpu`: a current-thread runtime running the daemon's ingest and state
/// tasks. Returns it once the tasks run, with the state owner's request channel.
fn start_consumer(
    config: daemon::DaemonConfig,
    maps: Maps,
    return_probes: &'static str,
    cpu: usize,
    shutdown: &CancellationToken,
) -> Result<(thread::JoinHandle<Result<()>>, mpsc::Sender<Request>)> {
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let shutdown = shutdown.clone();
    let consumer = thread::Builder::new()
        .name("consumer".into())
        .spawn(move || -> Result<()> {
            // First: every thread the pipeline starts inherits the mask.
            pin_this_thread(cpu)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the consumer's runtime")?;
            let threads = runtime.block_on(async move {
                let consumers = Consumers::new(&config, maps, return_probes, false, Instant::now())?;
                let mut tasks = JoinSet::new();
                let running = consumers.spawn(&mut tasks, &shutdown);
                // No discovery thread: the queue's other end goes.
                drop(running.discovery_commands);
                let _ = ready_tx.send(running.requests);
                match daemon::join_all(&mut tasks, &shutdown).await {
                    Some(failure) => Err(failure),
                    None => Ok(running.threads),
                }
            })?;
            drop(runtime);
            threads.join();
            Ok(())
        })
        .context("starting the consumer thread")?;
    match ready_rx.recv() {
        Ok(requests) => Ok((consumer, requests)),
        // The thread ended before its tasks ran: its error says why.
        Err(_) => match consumer.join() {
            Ok(Err(err)) => Err(err.context("the consumer did not start")),
            _ => bail!("the consumer did not start"),
        },
    }
}

/// The generator at `rate` for `--seconds`, then the drain; counters are differences over the step.
fn measure(
    args: &BenchIngestArgs,
    rate: u64,
    generator: &Generator,
    requests: &mpsc::Sender<Request>,
    consumer: &thread::JoinHandle<Result<()>>,
) -> Result<Step> {
    let cpu_clock = ThreadClock::of(consumer)?;
    let before = Counters::read(requests)?;
    let cpu_before = cpu_clock.seconds()?;
    let start = Instant::now();
    let generated = generate(generator, args.shape, rate, args.seconds)?;
    let stopped = Instant::now();
    let deadline = stopped + DRAIN_TIMEOUT;
    let after = loop {
        let now = Counters::read(requests)?;
        if now.events - before.events >= generated.submitted || Instant::now() > deadline {
            break now;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let drained = Instant::now();
    let cpu = cpu_clock.seconds()? - cpu_before;
    let table = table_view(requests, std::process::id())?;
    let wall = (drained - start).as_secs_f64();
    let applied = after.events - before.events;
    let drops = after.drops - before.drops;
    let decode_errors = after.decode_errors - before.decode_errors;
    let dropped_table_full = after.dropped_table_full - before.dropped_table_full;
    let generator_rate = generated.offered as f64 / generated.seconds;
    Ok(Step {
        shape: args.shape.name(),
        pid: std::process::id(),
        rate,
        offered: generated.offered,
        generator_rate,
        seconds: generated.seconds,
        submitted: generated.submitted,
        allocs: after.allocs - before.allocs,
        frees: after.frees - before.frees,
        drops,
        applied,
        batches: after.batches - before.batches,
        decode_errors,
        dropped_table_full,
        drain_seconds: (drained - stopped).as_secs_f64(),
        applied_rate: applied as f64 / wall,
        consumer_cpu_seconds: cpu,
        consumer_cpu_percent: 100.0 * cpu / wall,
        cpu_us_per_event: if applied == 0 { 0.0 } else { 1e6 * cpu / applied as f64 },
        table,
        zero_drops: drops == 0
            && decode_errors == 0
            && dropped_table_full == 0
            && generated.submitted == generated.offered
            && applied == generated.submitted,
        generator_limited: generator_rate < REACHED * rate as f64,
    })
}

/// What the generator did in one step.
struct Generated {
    offered: u64,
    submitted: u64,
    seconds: f64,
}

/// Runs the generator on this thread for about `seconds`, paced at `rate` records per second: each run of the
/// program writes about a millisecond's worth of records (at most [`generator::MAX_RUN`] allocations) and
/// starts when its last record is due, so the rate holds over the step whatever the sleeps' precision.
fn generate(generator: &Generator, shape: ShapeArg, rate: u64, seconds: f64) -> Result<Generated> {
    let per_allocation = shape.records();
    let allocations = (records_for(rate, seconds) / per_allocation).max(1);
    let per_run = (rate / per_allocation / 1_000).clamp(1, u64::from(generator::MAX_RUN));
    let pid = std::process::id();
    let start = Instant::now();
    let (mut seq, mut submitted) = (0, 0);
    while seq < allocations {
        let n = per_run.min(allocations - seq);
        let due = Duration::from_secs_f64(((seq + n) * per_allocation) as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            thread::sleep(wait);
        }
        let n32 = u32::try_from(n).unwrap_or(generator::MAX_RUN);
        submitted += u64::from(
            generator.run(shape.shape(), pid, seq, n32).context("running the generator (BPF_PROG_TEST_RUN)")?,
        );
        seq += u64::from(n32);
    }
    Ok(Generated { offered: seq * per_allocation, submitted, seconds: start.elapsed().as_secs_f64() })
}

/// The counters a step reads, from the state owner's status.
struct Counters {
    events: u64,
    batches: u64,
    decode_errors: u64,
    dropped_table_full: u64,
    allocs: u64,
    frees: u64,
    drops: u64,
}

impl Counters {
    fn read(requests: &mpsc::Sender<Request>) -> Result<Self> {
        let status = ask(requests, |reply| Query::Status(reply).into())?;
        Ok(Self::from_status(&status))
    }

    fn from_status(status: &StatusResponse) -> Self {
        let daemon = |name: &str| status.daemon_counters.get(name).copied().unwrap_or(0);
        let kernel = |name: &str| status.kernel_counters.get(name).copied().unwrap_or(0);
        Self {
            events: daemon("events"),
            batches: daemon("batches"),
            decode_errors: daemon("decode_errors"),
            dropped_table_full: daemon("dropped_table_full"),
            allocs: kernel("allocs"),
            frees: kernel("frees"),
            drops: kernel("ringbuf_full_alloc") + kernel("ringbuf_full_free"),
        }
    }
}

/// Process `pid` in `/v1/processes` (all zeroes when the table does not hold it).
fn table_view(requests: &mpsc::Sender<Request>, pid: u32) -> Result<TableView> {
    let query = TopQuery { pid: Some(pid), ..TopQuery::default() };
    let response = ask(requests, |reply| Query::Processes(query, reply).into())?;
    Ok(response
        .processes
        .into_iter()
        .find(|p| p.pid == pid)
        .map(|p| TableView {
            pid: p.pid,
            comm: p.comm,
            live_allocations: p.live_count,
            live_bytes: p.live_bytes,
            stacks: p.stacks,
        })
        .unwrap_or_default())
}

/// Sends a request to the state owner from this (non-async) thread and waits for the answer.
fn ask<T>(requests: &mpsc::Sender<Request>, request: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T> {
    let (tx, rx) = oneshot::channel();
    requests.blocking_send(request(tx)).map_err(|_| anyhow!("the state task ended"))?;
    rx.blocking_recv().map_err(|_| anyhow!("the state task did not answer"))
}

/// The CPUs of the consumer and the generator.
struct Cpus {
    consumer: usize,
    generator: usize,
}

impl Cpus {
    /// The given ones, else the first two this process may run on.
    fn choose(consumer: Option<usize>, generator: Option<usize>) -> Result<Self> {
        let allowed = allowed_cpus()?;
        let consumer = consumer.or_else(|| allowed.first().copied()).context("no CPU to run on")?;
        let generator = generator
            .or_else(|| allowed.iter().copied().find(|&cpu| cpu != consumer))
            .context("the benchmark needs two CPUs: one for the consumer, one for the generator")?;
        ensure!(consumer != generator, "the consumer and the generator need CPUs of their own");
        for cpu in [consumer, generator] {
            ensure!(allowed.contains(&cpu), "CPU {cpu} is not one this process may run on ({allowed:?})");
        }
        Ok(Self { consumer, generator })
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Result<Vec<usize>> {
    // SAFETY: a zeroed `cpu_set_t` is the empty set, and the call writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) } != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
    }
    // SAFETY: `CPU_ISSET` reads within the set for indices below `CPU_SETSIZE`.
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect())
}

/// Restricts the calling thread (and the threads it starts from now on) to `cpu`.
fn pin_this_thread(cpu: usize) -> Result<()> {
    ensure!(cpu < libc::CPU_SETSIZE as usize, "CPU {cpu} is out of range");
    // SAFETY: as in `allowed_cpus`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below `CPU_SETSIZE`, so the bit is inside the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed; pid 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("pinning a thread to CPU {cpu}"));
    }
    Ok(())
}

/// The CPU-time clock of another thread.
struct ThreadClock(libc::clockid_t);

impl ThreadClock {
    fn of<T>(thread: &thread::JoinHandle<T>) -> Result<Self> {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: the thread is alive (its handle is not joined) and `clock` is a valid out-pointer.
        let err = unsafe { libc::pthread_getcpuclockid(thread.as_pthread_t(), &raw mut clock) };
        ensure!(err == 0, "pthread_getcpuclockid: {}", std::io::Error::from_raw_os_error(err));
        Ok(Self(clock))
    }

    fn seconds(&self) -> Result<f64> {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid out-pointer.
        if unsafe { libc::clock_gettime(self.0, &raw mut ts) } != 0 {
            return Err(std::io::Error::last_os_error()).context("clock_gettime of the consumer thread");
        }
        Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
    }
}

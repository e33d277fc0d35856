//! The daemon's consumer path on one thread, without the kernel: ring-buffer records as the eBPF programs
//! write them are decoded into batches (as `ingest` does) and applied to the table (as the state task does).
//! Prints `shape=NAME events=N seconds=S cpu_seconds=C events_per_cpu_second=R live=L tick_ms=T` per shape (`T`:
//! one sample of the table of `L` live allocations afterwards, as the state task takes every interval);
//! `cargo xtask bench` runs it (release build) and reports the rates.
//!
//! Shapes, after the bench's workloads: `pairs` (an allocation then its free, 64 distinct stacks of 8
//! frames, sizes 16 B - 4 KiB) and `leaks` (allocations never freed: the table grows by one entry per event).
//!
//! Usage: `ingest_bench [EVENTS]` (default 2,000,000 per shape).

#![allow(clippy::cast_precision_loss, reason = "event counts and times shown as rates")]

use std::time::Instant;

use leakprobe::{
    core::table::{AnalysisConfig, Limits, Table, TickTimes},
    ingest::{Batch, MAX_BATCH},
};
use leakprobe_common::{AllocEvent, AllocFn, EventHeader, EventKind, FreeEvent, MAX_FRAMES, decode};

const TGID: u32 = 4242;
const STACKS: u64 = 64;
const FRAMES: u32 = 8;

fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: `T` is one of the `#[repr(C)]` event structs of integers with explicit padding: every byte is
    // initialized, and the slice lives only as long as `value`.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn alloc_record(i: u64, addr: u64) -> Vec<u8> {
    let mut frames = [0; MAX_FRAMES];
    let stack = i % STACKS;
    for (n, frame) in frames.iter_mut().take(FRAMES as usize).enumerate() {
        *frame = 0x5555_0000_0000 + stack * 0x100 + n as u64 * 0x1_0000;
    }
    let event = AllocEvent {
        header: EventHeader { kind: EventKind::Alloc as u32, pad: 0, ts_ns: 1_000 + i, tgid: TGID, tid: TGID },
        addr,
        size: 16 + (i * 97) % 4080,
        old_addr: 0,
        func: AllocFn::Malloc as u32,
        nframes: FRAMES,
        flags: 0,
        pad: 0,
        comm: *b"workload\0\0\0\0\0\0\0\0",
        frames,
    };
    bytes_of(&event)
}

fn free_record(i: u64, addr: u64) -> Vec<u8> {
    let header = EventHeader { kind: EventKind::Free as u32, pad: 0, ts_ns: 1_000 + i, tgid: TGID, tid: TGID };
    bytes_of(&FreeEvent { header, addr })
}

fn records(shape: &str, events: u64) -> Vec<Vec<u8>> {
    match shape {
        "pairs" => (0..events / 2)
            .flat_map(|i| {
                let addr = 0x7f00_0000_0000 + (i % 4096) * 64;
                [alloc_record(i, addr), free_record(i, addr)]
            })
            .collect(),
        _ => (0..events).map(|i| alloc_record(i, 0x7f00_0000_0000 + i * 32)).collect(),
    }
}

fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn run(shape: &str, events: u64) {
    let records = records(shape, events);
    let limits = Limits { max_allocations: 4 << 20, max_stacks: 65_536, max_series: 20_000 };
    let mut table = Table::new(limits, AnalysisConfig::default());
    let (start, cpu_start) = (Instant::now(), thread_cpu_seconds());
    let mut batch = Batch { events: Vec::with_capacity(MAX_BATCH), ..Batch::default() };
    let mut applied = 0_u64;
    for record in &records {
        match decode(record) {
            Ok(event) => batch.events.push(event),
            Err(_) => batch.decode_errors += 1,
        }
        if batch.events.len() >= MAX_BATCH {
            let full =
                std::mem::replace(&mut batch, Batch { events: Vec::with_capacity(MAX_BATCH), ..Batch::default() });
            for event in &full.events {
                let _ = table.apply(event);
                applied += 1;
            }
        }
    }
    for event in &batch.events {
        let _ = table.apply(event);
        applied += 1;
    }
    let (seconds, cpu) = (start.elapsed().as_secs_f64(), thread_cpu_seconds() - cpu_start);
    assert_eq!(applied, records.len() as u64, "every record decodes");
    // One sample of the table as it stands (the state task takes one every interval, between batches).
    let tick_start = Instant::now();
    table.tick(0, TickTimes { heap_ns: 1_000 + events, rss_ns: 1_000 + events });
    let tick_ms = tick_start.elapsed().as_secs_f64() * 1e3;
    println!(
        "shape={shape} events={applied} seconds={seconds:.3} cpu_seconds={cpu:.3} events_per_cpu_second={:.0} \
         live={} tick_ms={tick_ms:.1}",
        applied as f64 / cpu,
        table.sizes().live_allocations,
    );
}

fn main() {
    let events = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(2_000_000);
    for shape in ["pairs", "leaks"] {
        run(shape, events);
    }
}

//! Reads the event ring buffer and sends decoded batches to the state owner.
//!
//! Backpressure is by design: when the state owner falls behind, the channel fills, this task waits, the
//! ring buffer fills, and the kernel counts what it had to drop (`ringbuf_full_*`). Nothing is lost silently.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use leakprobe_common::{
    ALLOC_FLAG_PY_FRAMES, ALLOC_FLAG_STACK_COPY, ALLOC_FLAG_STACK_TRUNCATED, DecodeError, Event, FAULT_FLAG_PY_FRAMES,
    FAULT_FLAG_STACK_TRUNCATED, decode, decode_py_frames, decode_user_stack,
};

use crate::{
    procfs, python,
    unwind::{Outcome, UnwindStats, Unwinder},
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

/// Events per batch at most: bounds the memory of one batch and the latency of queries behind it.
pub const MAX_BATCH: usize = 1024;

/// Decoded events, in ring-buffer order.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Event>,
    /// Records that could not be decoded (a build mismatch; should stay 0).
    pub decode_errors: u64,
    /// Once this batch is applied, the table holds every event up to this monotonic time: the time the
    /// ring buffer was found empty, or, for a batch cut at [`MAX_BATCH`], its last event's time.
    pub as_of_ns: u64,
}

/// How far the ring-buffer reader has got, shared with the state owner.
#[derive(Debug)]
pub struct Progress {
    /// True while the ring buffer is empty and every batch has been handed over.
    caught_up: AtomicBool,
    /// The monotonic time at which the reader began its last pass that ended with the ring buffer empty and
    /// every batch handed over: every record submitted before it is in a batch sent by then.
    drained_ns: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self { caught_up: AtomicBool::new(true), drained_ns: AtomicU64::new(0) }
    }
}

impl Progress {
    /// The ring buffer is empty and everything read from it was handed over.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// The time as of which a consumer holds every event, once it has applied every batch sent so far: read
    /// this before checking that the channel is empty (a batch sent before this time was set is then seen).
    pub fn drained_ns(&self) -> u64 {
        self.drained_ns.load(Ordering::Acquire)
    }

    fn reading(&self) {
        self.caught_up.store(false, Ordering::Release);
    }

    fn drained(&self, pass_started_ns: u64) {
        self.drained_ns.fetch_max(pass_started_ns, Ordering::AcqRel);
        self.caught_up.store(true, Ordering::Release);
    }
}

/// Turns ring-buffer records into events: decodes them, and unwinds the stacks that came as a stack copy
/// (`--unwind dwarf`) into frames, so that every allocation event downstream carries frames the same way.
pub struct Decoder {
    unwinder: Unwinder,
    /// Python frames recorded by the probes, spliced into the native stacks.
    python: python::Splicer,
}

impl Decoder {
    pub fn new(unwinder: Unwinder) -> Self {
        Self { unwinder, python: python::Splicer::default() }
    }

    /// One record as an event.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Event, DecodeError> {
        let mut event = decode(bytes)?;
        let stats = self.unwinder.stats().clone();
        match &mut event {
            Event::Alloc(alloc) if alloc.flags & ALLOC_FLAG_STACK_COPY != 0 => {
                if let Some((regs, stack)) = decode_user_stack(bytes)? {
                    let (nframes, outcome) = self.unwinder.unwind(alloc.header.tgid, &regs, stack, &mut alloc.frames);
                    alloc.nframes = nframes;
                    if outcome == Outcome::Truncated {
                        alloc.flags |= ALLOC_FLAG_STACK_TRUNCATED;
                    }
                }
            }
            Event::Alloc(alloc) => {
                stats.fp.fetch_add(1, Ordering::Relaxed);
                if alloc.flags & ALLOC_FLAG_STACK_TRUNCATED != 0 {
                    stats.fp_truncated.fetch_add(1, Ordering::Relaxed);
                }
            }
            // The process's modules are gone; a new process may reuse the pid.
            Event::Exit(e) | Event::Exec(e) => {
                self.unwinder.forget(e.header.tgid);
                self.python.forget(e.header.tgid);
            }
            _ => {}
        }
        // Python frames recorded with an allocation or a sampled fault or mapping growth (tier 0), spliced the same way.
        match &mut event {
            Event::Alloc(alloc) => {
                if let Some(py) = decode_py_frames(bytes, alloc.flags & ALLOC_FLAG_PY_FRAMES != 0)
                    && self.python.splice(alloc.header.tgid, &mut alloc.frames, &mut alloc.nframes, &py)
                {
                    alloc.flags |= ALLOC_FLAG_STACK_TRUNCATED;
                }
            }
            Event::Fault(fault) => {
                if let Some(py) = decode_py_frames(bytes, fault.flags & FAULT_FLAG_PY_FRAMES != 0)
                    && self.python.splice(fault.header.tgid, &mut fault.frames, &mut fault.nframes, &py)
                {
                    fault.flags |= FAULT_FLAG_STACK_TRUNCATED;
                }
            }
            Event::Map(map) => {
                if let Some(py) = decode_py_frames(bytes, map.flags & FAULT_FLAG_PY_FRAMES != 0)
                    && self.python.splice(map.header.tgid, &mut map.frames, &mut map.nframes, &py)
                {
                    map.flags |= FAULT_FLAG_STACK_TRUNCATED;
                }
            }
            _ => {}
        }
        Ok(event)
    }

    /// The Python splicer's counters.
    pub fn python_stats(&self) -> &Arc<python::SpliceStats> {
        self.python.stats()
    }

    /// The unwinder's counters.
    pub fn stats(&self) -> &Arc<UnwindStats> {
        self.unwinder.stats()
    }
}

/// Drains the ring buffer until cancelled or until the receiver is gone, and keeps `progress` (see [`Progress`]).
///
/// The probes submit without waking this reader until the ring buffer holds `RING_WAKEUP_BYTES` (see
/// `leakprobe-ebpf/src/maps.rs`), so it also reads every `RING_POLL_MS`: a record waits at most that long.
pub async fn run(
    ring: RingBuf<MapData>,
    mut decoder: Decoder,
    tx: mpsc::Sender<Batch>,
    progress: Arc<Progress>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged, for as long as it lives, and
    // the `AsyncFd` owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(std::io::Error::from)?;
    let mut poll = tokio::time::interval(Duration::from_millis(leakprobe_common::RING_POLL_MS));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Capacity of the next batch: the size of the last one, so a steady stream costs one allocation per batch
    // instead of a dozen regrowths, each copying the events so far (the daemon's own mallocs are probed too).
    let mut capacity = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            guard = fd.readable_mut() => {
                // Readiness is only a hint here: the ring buffer is read below either way.
                guard?.clear_ready();
            }
            _ = poll.tick() => {}
        }
        let ring = fd.get_mut();
        let pass_started_ns = procfs::monotonic_ns();
        let mut batch = Batch::default();
        let mut read = false;
        loop {
            let Some(item) = ring.next() else { break };
            if !read {
                read = true;
                progress.reading();
                batch.events.reserve(capacity);
            }
            match decoder.decode(&item) {
                Ok(event) => batch.events.push(event),
                Err(err) => {
                    log::debug!("undecodable ring-buffer record: {err}");
                    batch.decode_errors += 1;
                }
            }
            drop(item);
            if batch.events.len() >= MAX_BATCH {
                let mut full =
                    std::mem::replace(&mut batch, Batch { events: Vec::with_capacity(MAX_BATCH), ..Batch::default() });
                full.as_of_ns = full.events.last().map_or(0, |e| e.header().ts_ns);
                if tx.send(full).await.is_err() {
                    return Ok(());
                }
            }
        }
        if !read {
            // Nothing since the last read.
            progress.drained(pass_started_ns);
            continue;
        }
        capacity = if batch.events.is_empty() { capacity } else { batch.events.len().max(MAX_BATCH / 16) };
        batch.as_of_ns = procfs::monotonic_ns();
        if (!batch.events.is_empty() || batch.decode_errors > 0) && tx.send(batch).await.is_err() {
            return Ok(());
        }
        progress.drained(pass_started_ns);
    }
}

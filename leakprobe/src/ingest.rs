//! Reads the event ring buffer and sends decoded batches to the state owner.
//!
//! Backpressure is by design: when the state owner falls behind, the channel fills, this task waits, the
//! ring buffer fills, and the kernel counts what it had to drop (`ringbuf_full_*`). Nothing is lost silently.

use aya::maps::{MapData, RingBuf};
use leakprobe_common::{Event, decode};
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
}

/// Drains the ring buffer until cancelled or until the receiver is gone.
pub async fn run(ring: RingBuf<MapData>, tx: mpsc::Sender<Batch>, shutdown: CancellationToken) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged, for as long as it lives, and
    // the `AsyncFd` owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(std::io::Error::from)?;
    loop {
        let mut guard = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            guard = fd.readable_mut() => guard?,
        };
        let ring = guard.get_inner_mut();
        let mut batch = Batch::default();
        loop {
            let Some(item) = ring.next() else { break };
            match decode(&item) {
                Ok(event) => batch.events.push(event),
                Err(err) => {
                    log::debug!("undecodable ring-buffer record: {err}");
                    batch.decode_errors += 1;
                }
            }
            drop(item);
            if batch.events.len() >= MAX_BATCH {
                let full = std::mem::take(&mut batch);
                if tx.send(full).await.is_err() {
                    return Ok(());
                }
            }
        }
        guard.clear_ready();
        if (!batch.events.is_empty() || batch.decode_errors > 0) && tx.send(batch).await.is_err() {
            return Ok(());
        }
    }
}

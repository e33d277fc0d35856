//! Stack identity by resolved frames. Stacks are interned by their raw addresses, which is exact and cheap for
//! native code; JIT code moves (V8 and `HotSpot` recompile a function at another tier, or the GC moves the code),
//! and one logical stack then arrives under several raw stacks. The daemon resolves each new stack of a process
//! once, after the fact ([`Table::take_unidentified`]), and tells the table which resolved identity it has
//! ([`Table::identify`]): raw stacks of one process with the same identity become one aggregate (one series,
//! one verdict, one row in `top`, the metrics and the export). Native stacks, whose identity is their raw
//! frames, are never merged.

use super::{Process, StackAgg, Table};
use crate::core::stacks::StackId;

/// New stacks waiting to be identified at most; beyond, they stay by their raw frames (counted in
/// `identity_skipped`).
pub const MAX_UNIDENTIFIED: usize = 65_536;

impl Table {
    /// The (process, stack) aggregates made since the last call, with their raw frames, for the daemon to
    /// resolve and [`Self::identify`].
    pub fn take_unidentified(&mut self) -> Vec<(u32, StackId, Vec<u64>)> {
        let pending = std::mem::take(&mut self.unidentified);
        pending
            .into_iter()
            .filter(|(tgid, stack)| self.procs.get(tgid).is_some_and(|p| p.stacks.contains_key(stack)))
            .map(|(tgid, stack)| (tgid, stack, self.stacks.frames(stack).to_vec()))
            .collect()
    }

    /// Notes a new aggregate for [`Self::take_unidentified`].
    pub(super) fn unidentified(&mut self, tgid: u32, stack: StackId) {
        if self.unidentified.len() < MAX_UNIDENTIFIED {
            self.unidentified.push((tgid, stack));
        } else {
            self.counters.identity_skipped += 1;
        }
    }

    /// Stack `stack` of `tgid` resolves to `identity` (a hash of its resolved frames). If another stack of the
    /// process resolved to the same, the two are one: this one's aggregate is merged into it, and its
    /// allocations, now and later, count there. True when merged.
    pub fn identify(&mut self, tgid: u32, stack: StackId, identity: u64) -> bool {
        let Some(process) = self.procs.get_mut(&tgid) else { return false };
        if !process.stacks.contains_key(&stack) {
            return false;
        }
        let into = *process.by_identity.entry(identity).or_insert(stack);
        if into == stack || !process.stacks.contains_key(&into) {
            process.by_identity.insert(identity, stack);
            return false;
        }
        let Some(from) = process.stacks.remove(&stack) else { return false };
        if from.series.is_some() && process.stacks.get(&into).is_some_and(|a| a.series.is_some()) {
            self.series -= 1;
        }
        merge(process, stack, into, from);
        // The aggregate's reference to the stack stays with the alias: released when the process goes.
        process.alias.insert(stack, into);
        self.counters.stacks_merged += 1;
        true
    }
}

/// Adds aggregate `from`, of stack `stack`, into the aggregate `into` of `process`.
fn merge(process: &mut Process, stack: StackId, into: StackId, from: StackAgg) {
    let Some(agg) = process.stacks.get_mut(&into) else { return };
    let (a, b) = (&mut agg.stats, from.stats);
    a.live_bytes = a.live_bytes.saturating_add(b.live_bytes);
    a.live_count = a.live_count.saturating_add(b.live_count);
    a.total_bytes = a.total_bytes.saturating_add(b.total_bytes);
    a.total_count = a.total_count.saturating_add(b.total_count);
    a.first_ns = a.first_ns.min(b.first_ns);
    a.last_ns = a.last_ns.max(b.last_ns);
    agg.series = match (agg.series.take(), from.series) {
        (Some(mut mine), Some(theirs)) => {
            mine.add(&theirs);
            Some(mine)
        }
        (mine, theirs) => mine.or(theirs),
    };
    // Stacks aliased to `stack` follow it.
    for target in process.alias.values_mut().filter(|t| **t == stack) {
        *target = into;
    }
}

#[cfg(test)]
mod tests {
    use crate::core::{
        analysis::Verdict,
        table::{
            TickTimes,
            tests::{alloc, free, table},
        },
    };

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn two_raw_stacks_that_resolve_alike_are_one_leak() {
        let mut t = table();
        // A JIT function recompiled at tick 10: its frame moves from 0xa0 to 0xb0; 0xc is native, elsewhere.
        for tick in 0..20u64 {
            let now = tick * 5 * SEC;
            let jit = if tick < 10 { 0xa0 } else { 0xb0 };
            t.apply(&alloc(1, 0x1000 + tick * 0x100, 1000, &[0x1, jit], now));
            t.apply(&alloc(1, 0x9000 + tick * 0x100, 10, &[0xc], now));
            if tick == 10 {
                // Resolved after the fact: both JIT stacks name the same function; the native one is itself.
                for (tgid, stack, frames) in t.take_unidentified() {
                    let identity = if frames.contains(&0xc) { 0xc } else { 0x1a };
                    t.identify(tgid, stack, identity);
                }
            }
            t.tick(tick, TickTimes { heap_ns: now + SEC, rss_ns: now + SEC });
        }
        assert!(t.take_unidentified().is_empty(), "each stack is identified once");
        let rows: Vec<_> = t.stacks(Some(1)).collect();
        assert_eq!(rows.len(), 2, "one JIT stack and the native one: {rows:?}");
        let jit = rows.iter().find(|r| r.frames.contains(&0xa0)).expect("the first raw stack stands for both");
        assert_eq!(jit.stats.live_bytes, 20_000);
        assert_eq!(jit.stats.total_count, 20);
        assert_eq!(jit.analysis.verdict, Verdict::Leaking, "one series through the move: {jit:?}");
        assert!((jit.analysis.growth.rate - 200.0).abs() < 1.0, "{jit:?}");
        assert_eq!(t.counters().stacks_merged, 1);
        // Frees of blocks from the merged stack count against the one aggregate.
        t.apply(&free(1, 0x1000 + 15 * 0x100));
        let jit = t.stacks(Some(1)).find(|r| r.frames.contains(&0xa0)).expect("jit");
        assert_eq!(jit.stats.live_bytes, 19_000);
        // The process's exit releases every stack, aliased ones too.
        t.apply(&crate::core::table::tests::exit(1, 100 * SEC));
        assert_eq!(t.sizes().stacks, 0);
        assert_eq!(t.sizes().series, 0);
    }
}

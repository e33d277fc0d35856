//! The live allocations of one process, by address, in hash maps that never stall the state owner for long.
//!
//! A hash map grows by doubling: it allocates a table twice the size and moves every entry, all at once. At a
//! million entries that takes about 50 ms, at two million about 100 ms, at four million over 200 ms (measured on
//! the development VM), and meanwhile the state owner applies nothing: a process leaking fast would fill the
//! ring buffer (about 56,000 allocation records: 56 ms at a million events per second) at each doubling, and
//! the kernel drop what follows (`leakprobe bench-ingest --shape leaks` dropped records at every rate above
//! half of what the consumer sustained).
//!
//! So a process with many live allocations has [`SHARDS`] maps, each holding the addresses whose hash falls in
//! its share of the hash space; the shares grow geometrically from one map to the next (each 2^(1/64) times the
//! previous), so that the maps fill, and double, one after another rather than together: growing from n to 2n
//! entries, the process's maps double one at a time, each moving about n/64 entries. Small processes (most) keep
//! one map until [`SHARD_FROM`] entries.

use super::{Alloc, HashMap};

/// Maps of a large process.
const SHARDS: usize = 64;
/// Entries at which a process's one map is split into [`SHARDS`].
const SHARD_FROM: usize = 1 << 15;
/// Slots of the table that sends a hash to its map: each map's share is a whole number of slots.
const SLOTS: usize = 4096;
/// Ratio of one map's share to the previous one's: 2^(1/64), so that the last share is about twice the first.
const GROWTH: f64 = 1.010_889_286_051_700_5;

/// The map of each slot of the hash space: map `i` owns a share proportional to `GROWTH^i`.
static SHARD_OF: [u8; SLOTS] = shard_table();

#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "slot indices below 4096 as floats, and map indices below 64 as bytes"
)]
const fn shard_table() -> [u8; SLOTS] {
    let mut weights = [0.0; SHARDS];
    let (mut weight, mut total, mut i) = (1.0, 0.0, 0);
    while i < SHARDS {
        weights[i] = weight;
        total += weight;
        weight *= GROWTH;
        i += 1;
    }
    let mut table = [0; SLOTS];
    let (mut shard, mut upto, mut slot) = (0, weights[0], 0);
    while slot < SLOTS {
        let at = (slot as f64 + 0.5) / SLOTS as f64 * total;
        while at >= upto && shard + 1 < SHARDS {
            shard += 1;
            upto += weights[shard];
        }
        table[slot] = shard as u8;
        slot += 1;
    }
    table
}

/// The map of address `addr`: a multiplicative hash's top bits pick the slot.
fn shard(addr: u64) -> usize {
    let hash = addr.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // The top 12 bits: below `SLOTS`.
    usize::from(SHARD_OF[usize::try_from(hash >> (64 - SLOTS.trailing_zeros())).unwrap_or(0)])
}

/// The live allocations of one process, by address.
#[derive(Debug)]
pub(super) enum LiveMap {
    One(HashMap<u64, Alloc>),
    Sharded { maps: Box<[HashMap<u64, Alloc>]>, len: usize },
}

impl Default for LiveMap {
    fn default() -> Self {
        Self::One(HashMap::default())
    }
}

impl LiveMap {
    /// Inserts `alloc` at `addr`; returns what the address held.
    pub(super) fn insert(&mut self, addr: u64, alloc: Alloc) -> Option<Alloc> {
        match self {
            Self::One(map) => {
                let old = map.insert(addr, alloc);
                if map.len() >= SHARD_FROM {
                    self.split();
                }
                old
            }
            Self::Sharded { maps, len } => {
                let old = maps[shard(addr)].insert(addr, alloc);
                if old.is_none() {
                    *len += 1;
                }
                old
            }
        }
    }

    /// Removes the allocation at `addr`.
    pub(super) fn remove(&mut self, addr: u64) -> Option<Alloc> {
        match self {
            Self::One(map) => map.remove(&addr),
            Self::Sharded { maps, len } => {
                let old = maps[shard(addr)].remove(&addr);
                if old.is_some() {
                    *len -= 1;
                }
                old
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Self::One(map) => map.len(),
            Self::Sharded { len, .. } => *len,
        }
    }

    /// Every live allocation, in no order.
    pub(super) fn values(&self) -> impl Iterator<Item = &Alloc> {
        self.maps().iter().flat_map(HashMap::values)
    }

    /// Every live address, in no order.
    pub(super) fn into_keys(self) -> impl Iterator<Item = u64> {
        let maps = match self {
            Self::One(map) => vec![map],
            Self::Sharded { maps, .. } => maps.into_vec(),
        };
        maps.into_iter().flat_map(HashMap::into_keys)
    }

    fn maps(&self) -> &[HashMap<u64, Alloc>] {
        match self {
            Self::One(map) => std::slice::from_ref(map),
            Self::Sharded { maps, .. } => maps,
        }
    }

    /// From one map to [`SHARDS`]: moves every entry once (at [`SHARD_FROM`] entries, about 2 ms).
    fn split(&mut self) {
        let Self::One(map) = std::mem::take(self) else { return };
        let mut maps: Box<[HashMap<u64, Alloc>]> = (0..SHARDS).map(|_| HashMap::default()).collect();
        let len = map.len();
        for (addr, alloc) in map {
            maps[shard(addr)].insert(addr, alloc);
        }
        *self = Self::Sharded { maps, len };
    }
}

#[cfg(test)]
#[expect(clippy::cast_precision_loss, reason = "counts of at most a few hundred thousand, as ratios")]
mod tests {
    use super::*;
    use crate::core::stacks::StackId;

    fn alloc(size: u64) -> Alloc {
        Alloc { size, ts_ns: 0, stack: StackId::OVERFLOW, count: 1 }
    }

    #[test]
    fn shares_grow_geometrically_and_cover_every_map() {
        let mut slots = [0_usize; SHARDS];
        for &shard in &SHARD_OF {
            slots[usize::from(shard)] += 1;
        }
        assert!(slots.iter().all(|&n| n > 0), "{slots:?}");
        // The last share is about twice the first (whole slots: within one slot of 2^(63/64) times it).
        let (first, last) = (slots[0] as f64, slots[SHARDS - 1] as f64);
        assert!((last / first - 1.98).abs() < 0.2, "{first} {last}");
        assert!(slots.windows(2).all(|w| w[1] + 1 >= w[0]), "shares do not shrink: {slots:?}");
    }

    #[test]
    fn split_keeps_every_entry_and_the_count() {
        let mut live = LiveMap::default();
        let n = SHARD_FROM as u64 * 3;
        for i in 0..n {
            assert!(live.insert(0x7f00_0000_0000 + i * 16, alloc(i)).is_none());
        }
        assert!(matches!(live, LiveMap::Sharded { .. }));
        assert_eq!(live.len() as u64, n);
        // Replacing does not count twice; removing counts down.
        assert_eq!(live.insert(0x7f00_0000_0000, alloc(7)).map(|a| a.size), Some(0));
        assert_eq!(live.len() as u64, n);
        assert_eq!(live.remove(0x7f00_0000_0010).map(|a| a.size), Some(1));
        assert_eq!(live.remove(0x7f00_0000_0010).map(|a| a.size), None);
        assert_eq!(live.len() as u64, n - 1);
        assert_eq!(live.values().count() as u64, n - 1);
        let sum: u64 = live.values().map(|a| a.size).sum();
        assert_eq!(sum, n * (n - 1) / 2 - 1 + 7);
        let mut keys: Vec<u64> = live.into_keys().collect();
        keys.sort_unstable();
        assert_eq!(keys.len() as u64, n - 1);
        assert_eq!(keys[1], 0x7f00_0000_0020);
    }

    #[test]
    fn addresses_spread_over_the_maps_by_their_shares() {
        let mut live = LiveMap::default();
        for i in 0..(SHARD_FROM as u64 * 8) {
            live.insert(0x5600_0000_0000 + i * 48, alloc(1));
        }
        let LiveMap::Sharded { maps, .. } = &live else { panic!("not split") };
        let (first, last) = (maps[0].len() as f64, maps[SHARDS - 1].len() as f64);
        assert!((1.5..2.6).contains(&(last / first)), "{first} {last}");
    }
}

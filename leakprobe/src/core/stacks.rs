//! Interning of call stacks: each distinct frame sequence is stored once, reference-counted, and named by a
//! small [`StackId`]. Bounded: when full, new stacks fall back to the [`StackId::OVERFLOW`] stack (counted),
//! so their bytes are still accounted for.

use std::{collections::HashMap, hash::BuildHasher as _};

use foldhash::fast::{FixedState, RandomState};

/// Index of an interned stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(u32);

impl StackId {
    /// The stack that stands for "stack store full": no frames.
    pub const OVERFLOW: Self = Self(0);
}

#[derive(Debug)]
struct Entry {
    frames: Box<[u64]>,
    hash: u64,
    refs: u32,
    truncated: bool,
    /// Next entry with the same hash (a collision chain).
    next_same_hash: Option<StackId>,
}

/// The interned stacks.
#[derive(Debug)]
pub struct StackStore {
    entries: Vec<Option<Entry>>,
    free: Vec<StackId>,
    by_hash: HashMap<u64, StackId, RandomState>,
    max_stacks: usize,
    len: usize,
    overflowed: u64,
}

/// A stable 64-bit hash of a frame sequence: the same frames always give the same value, in every run (a fixed
/// seed). foldhash rather than `SipHash`: every allocation event hashes its stack, and `SipHash` was an eighth of
/// the consumer's time in a profile of `leakprobe bench-ingest`.
pub fn hash_frames(frames: &[u64]) -> u64 {
    FixedState::with_seed(STACK_HASH_SEED).hash_one(frames)
}

/// Seed of [`hash_frames`].
const STACK_HASH_SEED: u64 = 0x6c65_616b_7072_6f62;

impl StackStore {
    /// A store that holds at most `max_stacks` distinct stacks (plus the overflow stack).
    pub fn new(max_stacks: usize) -> Self {
        let overflow = Entry { frames: Box::new([]), hash: 0, refs: 1, truncated: false, next_same_hash: None };
        Self {
            entries: vec![Some(overflow)],
            free: Vec::new(),
            by_hash: HashMap::default(),
            max_stacks,
            len: 0,
            overflowed: 0,
        }
    }

    /// The id of `frames`, interning them if new, with one more reference taken.
    pub fn intern(&mut self, frames: &[u64], truncated: bool) -> StackId {
        let hash = hash_frames(frames);
        let mut cursor = self.by_hash.get(&hash).copied();
        while let Some(id) = cursor {
            let entry = self.entry_mut(id);
            if &*entry.frames == frames && entry.truncated == truncated {
                entry.refs += 1;
                return id;
            }
            cursor = entry.next_same_hash;
        }
        if self.len >= self.max_stacks {
            self.overflowed += 1;
            return StackId::OVERFLOW;
        }
        let entry =
            Entry { frames: frames.into(), hash, refs: 1, truncated, next_same_hash: self.by_hash.get(&hash).copied() };
        let id = if let Some(id) = self.free.pop() {
            self.entries[id.0 as usize] = Some(entry);
            id
        } else {
            let raw = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
            self.entries.push(Some(entry));
            StackId(raw)
        };
        self.by_hash.insert(hash, id);
        self.len += 1;
        id
    }

    /// Drops one reference; the stack is forgotten when none remain.
    pub fn release(&mut self, id: StackId) {
        if id == StackId::OVERFLOW {
            return;
        }
        let entry = self.entry_mut(id);
        entry.refs -= 1;
        if entry.refs > 0 {
            return;
        }
        let (hash, next) = (entry.hash, entry.next_same_hash);
        self.entries[id.0 as usize] = None;
        self.unlink(hash, id, next);
        self.free.push(id);
        self.len -= 1;
    }

    fn unlink(&mut self, hash: u64, id: StackId, next: Option<StackId>) {
        if self.by_hash.get(&hash) == Some(&id) {
            match next {
                Some(next) => self.by_hash.insert(hash, next),
                None => self.by_hash.remove(&hash),
            };
            return;
        }
        let mut cursor = self.by_hash.get(&hash).copied();
        while let Some(current) = cursor {
            let entry = self.entry_mut(current);
            if entry.next_same_hash == Some(id) {
                entry.next_same_hash = next;
                return;
            }
            cursor = entry.next_same_hash;
        }
    }

    fn entry_mut(&mut self, id: StackId) -> &mut Entry {
        self.entries[id.0 as usize].as_mut().expect("a StackId handed out refers to a live entry")
    }

    fn entry(&self, id: StackId) -> &Entry {
        self.entries[id.0 as usize].as_ref().expect("a StackId handed out refers to a live entry")
    }

    /// The frames of a stack, innermost first.
    pub fn frames(&self, id: StackId) -> &[u64] {
        &self.entry(id).frames
    }

    /// Whether the stack was cut by the kernel's frame limit.
    pub fn truncated(&self, id: StackId) -> bool {
        self.entry(id).truncated
    }

    /// The stable hash of the stack's frames.
    pub fn hash(&self, id: StackId) -> u64 {
        self.entry(id).hash
    }

    /// Distinct stacks stored (the overflow stack not included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no stack is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most distinct stacks stored.
    pub fn capacity(&self) -> usize {
        self.max_stacks
    }

    /// Stacks that did not fit and were counted under the overflow stack.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_frames_same_id_and_refcounted() {
        let mut store = StackStore::new(10);
        let a = store.intern(&[1, 2, 3], false);
        let b = store.intern(&[1, 2, 3], false);
        let c = store.intern(&[1, 2], false);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(store.len(), 2);
        store.release(a);
        assert_eq!(store.frames(b), &[1, 2, 3]);
        store.release(b);
        assert_eq!(store.len(), 1);
        // The freed slot is reused.
        let d = store.intern(&[9], true);
        assert_eq!(d, a);
        assert!(store.truncated(d));
    }

    #[test]
    fn full_store_falls_back_to_overflow() {
        let mut store = StackStore::new(2);
        store.intern(&[1], false);
        store.intern(&[2], false);
        assert_eq!(store.intern(&[3], false), StackId::OVERFLOW);
        assert_eq!(store.overflowed(), 1);
        assert!(store.frames(StackId::OVERFLOW).is_empty());
        // Known stacks are still found when full.
        assert_ne!(store.intern(&[1], false), StackId::OVERFLOW);
    }

    #[test]
    fn hash_collisions_are_chained() {
        let mut store = StackStore::new(10);
        let a = store.intern(&[1, 2], false);
        let hash = store.hash(a);
        // Force a collision: a second entry with the same hash but different frames.
        let b = store.intern(&[7, 8], false);
        let b_entry = store.entries[b.0 as usize].as_mut().expect("live");
        let b_hash = b_entry.hash;
        b_entry.hash = hash;
        b_entry.next_same_hash = Some(a);
        store.by_hash.remove(&b_hash);
        store.by_hash.insert(hash, b);
        // Both are still found through the chain, and unlinking either keeps the other.
        assert_eq!(store.entries[a.0 as usize].as_ref().map(|e| e.refs), Some(1));
        store.release(b);
        assert_eq!(store.by_hash.get(&hash), Some(&a));
        let a2 = store.intern(&[1, 2], false);
        assert_eq!(a, a2);
    }
}

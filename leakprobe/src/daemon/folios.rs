//! Tier 0's weight of a fault that mapped a transparent huge page.
//!
//! The kernel samples faults as base pages, but one fault in a huge-page region maps a whole folio (up to
//! 2 MiB): its sample stands for the folio's pages. The size is read from `/proc/PID/pagemap` and
//! `/proc/kpageflags`, and only once the fault is done: `exceptions/page_fault_user` fires when the fault starts,
//! before the kernel has mapped anything (zeroing a 2 MiB page takes a while), so an event that finds its page
//! not present yet waits here and is looked at again on the next batch or a few milliseconds later. It waits at
//! most [`MAX_WAIT_NS`], and at most [`MAX_PENDING`] events wait; beyond either it counts as one base page
//! (counter `fault_folios_unresolved`).

use std::collections::VecDeque;

use leakprobe_common::{FAULT_PAGE_BYTES, FaultEvent};

use crate::procfs::{self, AnonPage};

/// The most events waiting for their page at once.
pub const MAX_PENDING: usize = 512;
/// How long an event waits for its page to be mapped.
pub const MAX_WAIT_NS: u64 = 500_000_000;
/// How soon a waiting event is looked at again when no batch comes first.
pub const RETRY: std::time::Duration = std::time::Duration::from_millis(2);

/// Reads what backs an address of a process; `None` when it cannot be read.
type Lookup = Box<dyn FnMut(u32, u64) -> Option<AnonPage> + Send>;

/// Fault events waiting for their page, and the lookup of what backs a page.
pub struct Folios {
    /// `None` when `/proc/kpageflags` cannot be read: every fault then counts one base page.
    lookup: Option<Lookup>,
    /// (arrival, event), oldest first.
    pending: VecDeque<(u64, FaultEvent)>,
    /// Events that waited, and events that counted one base page because their page never showed.
    pub deferred: u64,
    pub unresolved: u64,
}

impl Folios {
    /// Opens `/proc/kpageflags`; without it, every fault counts one base page (logged).
    pub fn open() -> Self {
        let kpageflags = std::fs::File::open("/proc/kpageflags")
            .inspect_err(|err| {
                log::warn!("/proc/kpageflags: {err}: a fault that maps a transparent huge page counts as one page");
            })
            .ok();
        Self::with_lookup(
            kpageflags.map(|file| -> Lookup {
                Box::new(move |pid, addr| procfs::anon_page(&file, pid, addr, FAULT_PAGE_BYTES))
            }),
        )
    }

    /// Without a lookup: every fault counts one base page at once (unit tests).
    #[cfg(test)]
    pub fn counting_base_pages() -> Self {
        Self::with_lookup(None)
    }

    fn with_lookup(lookup: Option<Lookup>) -> Self {
        Self { lookup, pending: VecDeque::new(), deferred: 0, unresolved: 0 }
    }

    /// The bytes `event`'s fault mapped, or `None` when the event now waits for its page (see [`Self::ready`]).
    pub fn weigh(&mut self, event: &FaultEvent, now_ns: u64) -> Option<u64> {
        // A fault on a present page (error code bit 0: a write to a read-only or copy-on-write page) maps one
        // base page.
        let Some(lookup) = self.lookup.as_mut().filter(|_| event.error_code & 1 == 0) else {
            return Some(FAULT_PAGE_BYTES);
        };
        match lookup(event.header.tgid, event.addr) {
            Some(AnonPage::NotPresent) if self.pending.len() < MAX_PENDING => {
                self.deferred += 1;
                self.pending.push_back((now_ns, *event));
                None
            }
            Some(AnonPage::NotPresent) => {
                self.unresolved += 1;
                Some(FAULT_PAGE_BYTES)
            }
            Some(AnonPage::Folio(bytes)) => Some(bytes),
            Some(AnonPage::Base) | None => Some(FAULT_PAGE_BYTES),
        }
    }

    /// Waiting events whose page is mapped now, or that waited too long (one base page), with their bytes.
    pub fn ready(&mut self, now_ns: u64, out: &mut Vec<(FaultEvent, u64)>) {
        let Some(lookup) = self.lookup.as_mut() else { return };
        let mut still = VecDeque::with_capacity(self.pending.len());
        for (arrived, event) in self.pending.drain(..) {
            match lookup(event.header.tgid, event.addr) {
                Some(AnonPage::NotPresent) if now_ns.saturating_sub(arrived) < MAX_WAIT_NS => {
                    still.push_back((arrived, event));
                }
                Some(AnonPage::NotPresent) => {
                    self.unresolved += 1;
                    out.push((event, FAULT_PAGE_BYTES));
                }
                Some(AnonPage::Folio(bytes)) => out.push((event, bytes)),
                Some(AnonPage::Base) | None => out.push((event, FAULT_PAGE_BYTES)),
            }
        }
        self.pending = still;
    }

    /// Whether events wait (the state owner then looks again after [`RETRY`]).
    pub fn waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Drops the waiting events of a process that exited or exec'd.
    pub fn forget(&mut self, pid: u32) {
        self.pending.retain(|(_, event)| event.header.tgid != pid);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use leakprobe_common::{EventHeader, EventKind, MAX_FRAMES};

    use super::*;

    fn fault(tgid: u32, addr: u64, error_code: u64) -> FaultEvent {
        FaultEvent {
            header: EventHeader { kind: EventKind::Fault as u32, pad: 0, ts_ns: 1, tgid, tid: tgid },
            addr,
            error_code,
            nframes: 0,
            flags: 0,
            comm: [0; 16],
            frames: [0; MAX_FRAMES],
        }
    }

    /// Folios whose lookup answers from `pages` (address -> what backs it), shared so a test can map pages.
    fn folios(pages: &Arc<Mutex<Vec<(u64, AnonPage)>>>) -> Folios {
        let pages = Arc::clone(pages);
        Folios::with_lookup(Some(Box::new(move |_, addr| {
            let pages = pages.lock().ok()?;
            Some(pages.iter().find(|(a, _)| *a == addr).map_or(AnonPage::NotPresent, |(_, page)| *page))
        })))
    }

    #[test]
    fn a_mapped_folio_weighs_its_size_at_once() {
        let pages = Arc::new(Mutex::new(vec![(0x1000, AnonPage::Folio(2 << 20)), (0x2000, AnonPage::Base)]));
        let mut folios = folios(&pages);
        assert_eq!(folios.weigh(&fault(1, 0x1000, 6), 0), Some(2 << 20));
        assert_eq!(folios.weigh(&fault(1, 0x2000, 6), 0), Some(FAULT_PAGE_BYTES));
        // A fault on a present page (copy on write) is one base page, whatever backs it.
        assert_eq!(folios.weigh(&fault(1, 0x1000, 7), 0), Some(FAULT_PAGE_BYTES));
        assert!(!folios.waiting());
    }

    #[test]
    fn a_fault_still_in_progress_waits_for_its_page() {
        let pages = Arc::new(Mutex::new(Vec::new()));
        let mut folios = folios(&pages);
        assert_eq!(folios.weigh(&fault(1, 0x1000, 6), 0), None);
        let mut out = Vec::new();
        folios.ready(1_000, &mut out);
        assert!(out.is_empty() && folios.waiting());
        pages.lock().expect("lock").push((0x1000, AnonPage::Folio(2 << 20)));
        folios.ready(2_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0.addr, out[0].1), (0x1000, 2 << 20));
        assert!(!folios.waiting());
        assert_eq!((folios.deferred, folios.unresolved), (1, 0));
    }

    #[test]
    fn a_page_that_never_shows_counts_one_base_page_and_exits_drop_their_events() {
        let pages = Arc::new(Mutex::new(Vec::new()));
        let mut folios = folios(&pages);
        assert_eq!(folios.weigh(&fault(1, 0x1000, 6), 0), None);
        assert_eq!(folios.weigh(&fault(2, 0x1000, 6), 0), None);
        folios.forget(2);
        let mut out = Vec::new();
        folios.ready(MAX_WAIT_NS, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0.header.tgid, out[0].1), (1, FAULT_PAGE_BYTES));
        assert_eq!(folios.unresolved, 1);
        // Beyond MAX_PENDING waiting events, a fault counts one page at once.
        for _ in 0..MAX_PENDING {
            assert_eq!(folios.weigh(&fault(3, 0x5000, 6), 0), None);
        }
        assert_eq!(folios.weigh(&fault(3, 0x5000, 6), 0), Some(FAULT_PAGE_BYTES));
        assert_eq!(folios.unresolved, 2);
    }

    #[test]
    fn without_kpageflags_every_fault_is_one_page() {
        let mut folios = Folios::with_lookup(None);
        assert_eq!(folios.weigh(&fault(1, 0x1000, 6), 0), Some(FAULT_PAGE_BYTES));
    }
}

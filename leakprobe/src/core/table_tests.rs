//! Replayed event streams against the table.

use leakprobe_common::{
    ALLOC_FLAG_REPLACES_OLD, ALLOC_FLAG_STACK_TRUNCATED, AllocEvent, AllocFn, Event, EventHeader, EventKind, FreeEvent,
    MAX_FRAMES, OomEvent, ProcessEvent,
};

use super::*;

fn header(kind: EventKind, tgid: u32, ts_ns: u64) -> EventHeader {
    EventHeader { kind: kind as u32, pad: 0, ts_ns, tgid, tid: tgid }
}

fn alloc(tgid: u32, addr: u64, size: u64, stack: &[u64], ts_ns: u64) -> Event {
    let mut frames = [0; MAX_FRAMES];
    frames[..stack.len()].copy_from_slice(stack);
    Event::Alloc(AllocEvent {
        header: header(EventKind::Alloc, tgid, ts_ns),
        addr,
        size,
        old_addr: 0,
        func: AllocFn::Malloc as u32,
        nframes: u32::try_from(stack.len()).expect("small"),
        flags: 0,
        pad: 0,
        comm: *b"proc\0\0\0\0\0\0\0\0\0\0\0\0",
        frames,
    })
}

fn realloc(tgid: u32, old: u64, addr: u64, size: u64, stack: &[u64]) -> Event {
    let Event::Alloc(mut event) = alloc(tgid, addr, size, stack, 5) else { unreachable!() };
    event.old_addr = old;
    event.flags = ALLOC_FLAG_REPLACES_OLD;
    event.func = AllocFn::Realloc as u32;
    Event::Alloc(event)
}

fn free(tgid: u32, addr: u64) -> Event {
    Event::Free(FreeEvent { header: header(EventKind::Free, tgid, 9), addr })
}

fn exit(tgid: u32, ts_ns: u64) -> Event {
    Event::Exit(ProcessEvent { header: header(EventKind::Exit, tgid, ts_ns), comm: [0; 16] })
}

fn table() -> Table {
    Table::new(Limits { max_allocations: 1000, max_stacks: 100 })
}

fn stats_of(table: &Table, tgid: u32, leaf: u64) -> StackStats {
    table
        .top(Some(tgid), usize::MAX)
        .into_iter()
        .find(|row| row.frames.first() == Some(&leaf))
        .map(|row| row.stats)
        .unwrap_or_default()
}

#[test]
fn leaks_and_frees_are_counted_per_stack() {
    let mut t = table();
    assert_eq!(t.apply(&alloc(1, 0x1000, 100, &[0xa, 0xb], 10)), Applied::NewProcess(1));
    assert_eq!(t.apply(&alloc(1, 0x2000, 100, &[0xa, 0xb], 20)), Applied::Nothing);
    t.apply(&alloc(1, 0x3000, 50, &[0xc, 0xb], 30));
    t.apply(&free(1, 0x3000));
    let leak = stats_of(&t, 1, 0xa);
    assert_eq!(
        leak,
        StackStats { live_bytes: 200, live_count: 2, total_bytes: 200, total_count: 2, first_ns: 10, last_ns: 20 }
    );
    let churn = stats_of(&t, 1, 0xc);
    assert_eq!((churn.live_bytes, churn.live_count, churn.total_count), (0, 0, 1));
    assert_eq!(t.sizes().live_allocations, 2);
    assert_eq!(t.sizes().live_bytes, 200);
    assert_eq!(t.sizes().stacks, 2);
    // Ordered by live bytes.
    let top = t.top(None, 10);
    assert_eq!(top[0].frames, &[0xa, 0xb]);
    assert_eq!(top[0].comm, "proc");
}

#[test]
fn same_address_in_two_processes_does_not_collide() {
    let mut t = table();
    t.apply(&alloc(1, 0x1000, 10, &[0xa], 1));
    t.apply(&alloc(2, 0x1000, 20, &[0xa], 1));
    t.apply(&free(1, 0x1000));
    assert_eq!(stats_of(&t, 1, 0xa).live_bytes, 0);
    assert_eq!(stats_of(&t, 2, 0xa).live_bytes, 20);
    assert_eq!(t.counters().unknown_frees, 0);
}

#[test]
fn realloc_moves_bytes_to_the_new_block() {
    let mut t = table();
    t.apply(&alloc(1, 0x1000, 100, &[0xa], 1));
    t.apply(&realloc(1, 0x1000, 0x2000, 400, &[0xb]));
    t.apply(&realloc(1, 0x2000, 0x2000, 800, &[0xb]));
    assert_eq!(stats_of(&t, 1, 0xa).live_bytes, 0);
    let grown = stats_of(&t, 1, 0xb);
    assert_eq!((grown.live_bytes, grown.live_count, grown.total_count), (800, 1, 2));
    assert_eq!(t.sizes().live_allocations, 1);
    assert_eq!(t.counters().replaced_live, 0);
}

#[test]
fn unknown_frees_and_reused_addresses_are_counted() {
    let mut t = table();
    t.apply(&free(7, 0x1000));
    t.apply(&alloc(7, 0x1000, 10, &[0xa], 1));
    t.apply(&free(7, 0x9999));
    t.apply(&alloc(7, 0x1000, 30, &[0xa], 2));
    assert_eq!(t.counters().unknown_frees, 2);
    assert_eq!(t.counters().replaced_live, 1);
    assert_eq!(stats_of(&t, 7, 0xa).live_bytes, 30);
}

#[test]
fn exit_purges_the_process_and_its_stacks() {
    let mut t = table();
    t.apply(&alloc(1, 0x1000, 10, &[0xa], 1));
    t.apply(&alloc(1, 0x2000, 10, &[0xb], 1));
    t.apply(&alloc(2, 0x1000, 10, &[0xa], 1));
    let Applied::Purged { tgid, mut addrs, before_ns } = t.apply(&exit(1, 99)) else {
        panic!("exit of a known process purges it");
    };
    addrs.sort_unstable();
    assert_eq!((tgid, addrs, before_ns), (1, vec![0x1000, 0x2000], 99));
    assert!(t.top(Some(1), 10).is_empty());
    assert_eq!(t.sizes().live_allocations, 1);
    // Stack [0xa] is still used by process 2, [0xb] is gone.
    assert_eq!(t.sizes().stacks, 1);
    assert_eq!(t.apply(&exit(1, 100)), Applied::Nothing);
    assert_eq!(t.counters().processes_purged, 1);
}

#[test]
fn an_oom_event_leaves_the_victim_for_the_snapshot() {
    let mut t = table();
    t.apply(&alloc(1, 0x1000, 10, &[0xa], 1));
    t.apply(&alloc(1, 0x2000, 30, &[0xb], 2));
    let oom = OomEvent {
        header: header(EventKind::Oom, 1, 3),
        total_vm_kb: 0,
        anon_rss_kb: 0,
        file_rss_kb: 0,
        shmem_rss_kb: 0,
        uid: 0,
        oom_score_adj: 0,
        has: 0,
        pad: 0,
        comm: [0; 16],
    };
    assert_eq!(t.apply(&Event::Oom(oom)), Applied::Nothing);
    assert_eq!(t.process(1), Some(ProcessSummary { comm: "proc", live_bytes: 40, live_allocations: 2 }));
    assert_eq!(t.top(Some(1), 1)[0].frames, [0xb]);
    assert_eq!(t.process(2), None);
    assert!(matches!(t.apply(&exit(1, 4)), Applied::Purged { .. }));
    assert_eq!(t.process(1), None);
}

#[test]
fn limits_are_enforced_and_counted() {
    let mut t = Table::new(Limits { max_allocations: 2, max_stacks: 1 });
    t.apply(&alloc(1, 0x1, 10, &[0xa], 1));
    t.apply(&alloc(1, 0x2, 10, &[0xb], 1));
    t.apply(&alloc(1, 0x3, 10, &[0xc], 1));
    assert_eq!(t.sizes().live_allocations, 2);
    assert_eq!(t.counters().dropped_table_full, 1);
    // The second stack did not fit: its bytes are under the overflow stack (no frames).
    assert_eq!(t.sizes().stacks_overflowed, 1);
    let overflow = t.top(Some(1), 10).into_iter().find(|r| r.frames.is_empty()).expect("overflow row");
    assert_eq!(overflow.stats.live_bytes, 10);
    // Freeing makes room again.
    t.apply(&free(1, 0x1));
    t.apply(&alloc(1, 0x3, 10, &[0xa], 1));
    assert_eq!(t.sizes().live_allocations, 2);
}

#[test]
fn truncated_stacks_are_flagged() {
    let mut t = table();
    let Event::Alloc(mut event) = alloc(1, 0x1, 10, &[0xa], 1) else { unreachable!() };
    event.flags = ALLOC_FLAG_STACK_TRUNCATED;
    t.apply(&Event::Alloc(event));
    assert!(t.top(Some(1), 1)[0].truncated);
}

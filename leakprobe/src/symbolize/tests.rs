//! Symbolizing stacks of processes that have exited.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use std::thread;

use super::*;
use crate::probes::libc;

/// The address of `malloc` in the libc that process `pid` maps, from its maps and libc's symbols.
fn malloc_addr_in(maps: &[Mapping]) -> u64 {
    let libc_map = maps.iter().find(|m| m.path.to_string_lossy().contains("libc.so")).expect("a libc mapping");
    malloc_addr_with(maps, &libc_map.path, &libc_map.path)
}

/// The address of `malloc` in the file mapped at `mapped`, whose symbols are those of the file at `symbols`.
fn malloc_addr_with(maps: &[Mapping], mapped: &Path, symbols: &Path) -> u64 {
    let libc_map = maps.iter().find(|m| &*m.path == mapped).expect("the mapping");
    let symbols = libc::resolve(symbols).expect("libc symbols");
    let malloc = symbols.entry("malloc").expect("malloc").resolved.offset;
    let text = maps
        .iter()
        .find(|m| m.path == libc_map.path && m.file_offset <= malloc && malloc < m.file_offset + (m.end - m.start))
        .expect("the mapping holding malloc");
    text.start + malloc - text.file_offset
}

/// Marks `pid` seen once the dynamic loader has mapped its libc (right after exec it has not yet).
fn see_when_loaded(worker: &mut Worker, pid: u32) -> Arc<Vec<Mapping>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        worker.seen(pid);
        if let Some(maps) = worker.maps.peek(&pid).cloned()
            && maps.iter().any(|m| m.path.to_string_lossy().contains("libc.so"))
        {
            return maps;
        }
        assert!(Instant::now() < deadline, "pid {pid} never mapped libc");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn stacks_of_an_exited_process_still_symbolize() {
    let mut child = Command::new("sleep").arg("30").spawn().expect("spawn sleep");
    let pid = child.id();
    let mut worker = Worker::new(CacheLimits::default());
    let maps = see_when_loaded(&mut worker, pid);
    // A return address just past the start of malloc: the lookup is at the address before it.
    let addr = malloc_addr_in(&maps) + 1;
    child.kill().expect("kill sleep");
    child.wait().expect("reap sleep");
    let mut open = maps::OpenFiles::new(NonZeroUsize::MIN);
    assert!(maps::read(pid, &mut open).is_none(), "the process is gone");

    let frames = worker.symbolize(&StackRequest { pid, addrs: vec![addr, 0x10] });
    let function = frames[0].function.as_deref().unwrap_or_default();
    assert!(function.contains("malloc"), "frame 0 is {:?}", frames[0]);
    assert!(frames[0].module.as_deref().is_some_and(|m| m.contains("libc.so")), "{:?}", frames[0]);
    assert_eq!(frames[1], bare(0x10), "an unmapped address stays bare");
}

#[test]
fn maps_read_before_an_exit_symbolize_what_the_symbolizer_saw_too_late() {
    let mut child = Command::new("sleep").arg("30").spawn().expect("spawn sleep");
    let pid = child.id();
    let mut worker = Worker::new(CacheLimits::default());
    // Stale maps of whatever the pid ran before (here: its own, a moment ago) go at exec.
    worker.seen(pid);
    worker.exec(pid, None);
    assert!(worker.maps.peek(&pid).is_none(), "an exec forgets the old image's maps");
    // Read by the daemon's state owner when it saw the process, handed over a moment later: by then it is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    let read = loop {
        let read = maps::read_parsed(pid).expect("sleep's maps");
        if read.iter().any(|m| m.path.to_string_lossy().contains("libc.so")) {
            break read;
        }
        assert!(Instant::now() < deadline, "pid {pid} never mapped libc");
        thread::sleep(Duration::from_millis(10));
    };
    let addr = malloc_addr_in(&read) + 1;
    child.kill().expect("kill sleep");
    child.wait().expect("reap sleep");
    worker.exec(pid, Some(read));
    // Its first event's `seen` finds the process gone: the maps read at exec stay.
    worker.seen_with(pid, None);
    let frames = worker.symbolize(&StackRequest { pid, addrs: vec![addr] });
    assert!(frames[0].function.as_deref().unwrap_or_default().contains("malloc"), "{:?}", frames[0]);
}

#[test]
fn frames_are_shared_between_processes_of_the_same_binary() {
    let mut worker = Worker::new(CacheLimits::default());
    let mut children: Vec<_> = (0..2).map(|_| Command::new("sleep").arg("30").spawn().expect("spawn")).collect();
    for child in &children {
        let maps = see_when_loaded(&mut worker, child.id());
        let frames = worker.symbolize(&StackRequest { pid: child.id(), addrs: vec![malloc_addr_in(&maps) + 1] });
        assert!(frames[0].function.as_deref().unwrap_or_default().contains("malloc"));
    }
    // One (libc, offset) entry served both processes.
    assert_eq!(worker.frames.len(), 1);
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A library that only the process could reach (deleted here, as a container's root filesystem is with the
/// container) is read through the descriptor kept since the process was first seen, after the process is gone.
#[test]
fn a_deleted_file_of_an_exited_process_symbolizes_through_the_kept_descriptor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host_libc = libc::host_libc().expect("the host's libc");
    let copy = dir.path().join(host_libc.file_name().expect("a file name"));
    std::fs::copy(&host_libc, &copy).expect("copy the libc");
    let mut child = Command::new("sleep").arg("30").env("LD_LIBRARY_PATH", dir.path()).spawn().expect("spawn sleep");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !maps::read_parsed(pid).is_some_and(|maps| maps.iter().any(|m| *m.path == *copy)) {
        assert!(Instant::now() < deadline, "pid {pid} never mapped {}", copy.display());
        thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_file(&copy).expect("delete the copy");
    let mut worker = Worker::new(CacheLimits::default());
    worker.seen(pid);
    let maps = worker.maps.peek(&pid).cloned().expect("maps kept");
    let text = maps.iter().find(|m| *m.path == *copy && m.executable).expect("the copy's code");
    assert!(text.deleted && matches!(text.source, maps::Source::Kept(_)), "{text:?}");
    let addr = malloc_addr_with(&maps, &copy, &host_libc) + 1;
    child.kill().expect("kill sleep");
    child.wait().expect("reap sleep");
    drop(dir);

    let frames = worker.symbolize(&StackRequest { pid, addrs: vec![addr] });
    assert!(frames[0].function.as_deref().unwrap_or_default().contains("malloc"), "{:?}", frames[0]);
    assert_eq!(frames[0].module.as_deref(), copy.to_str(), "{:?}", frames[0]);
    assert_eq!(worker.open_files.len(), 1, "one file kept");
}

/// Whether this process maps or holds open the file at `path` (blazesym parses a binary from a mapping of it).
fn holds(path: &Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mapped = maps.lines().any(|line| line.ends_with(&*path.to_string_lossy()));
    let open = std::fs::read_dir("/proc/self/fd")
        .is_ok_and(|dir| dir.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path)));
    mapped || open
}

/// blazesym keeps what it parsed for as long as it lives: beyond `binaries`, the least recently used binary is
/// closed (the frames resolved from it stay cached), so a host that runs ever new binaries does not make the
/// daemon's memory and descriptors grow without bound.
#[test]
fn parsed_binaries_are_bounded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host_libc = libc::host_libc().expect("the host's libc");
    let copy = dir.path().join(host_libc.file_name().expect("a file name"));
    std::fs::copy(&host_libc, &copy).expect("copy the libc");
    let limits = CacheLimits { binaries: NonZeroUsize::MIN, ..CacheLimits::default() };
    let mut worker = Worker::new(limits);
    let mut with_copy = Command::new("sleep").arg("30").env("LD_LIBRARY_PATH", dir.path()).spawn().expect("spawn");
    let mut plain = Command::new("sleep").arg("30").spawn().expect("spawn sleep");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !maps::read_parsed(with_copy.id()).is_some_and(|maps| maps.iter().any(|m| *m.path == *copy)) {
        assert!(Instant::now() < deadline, "never mapped {}", copy.display());
        thread::sleep(Duration::from_millis(10));
    }
    worker.seen(with_copy.id());
    let maps = worker.maps.peek(&with_copy.id()).cloned().expect("maps kept");
    let addr = malloc_addr_with(&maps, &copy, &host_libc) + 1;
    let frames = worker.symbolize(&StackRequest { pid: with_copy.id(), addrs: vec![addr] });
    assert!(frames[0].function.as_deref().unwrap_or_default().contains("malloc"), "{:?}", frames[0]);
    assert!(holds(&copy), "blazesym parsed the copy");

    // Another binary: with room for one, the copy is let go.
    let maps = see_when_loaded(&mut worker, plain.id());
    let frames = worker.symbolize(&StackRequest { pid: plain.id(), addrs: vec![malloc_addr_in(&maps) + 1] });
    assert!(frames[0].function.as_deref().unwrap_or_default().contains("malloc"), "{:?}", frames[0]);
    assert!(!holds(&copy), "the least recently used binary is closed");
    assert_eq!(worker.parsed.len(), 1);
    for child in [&mut with_copy, &mut plain] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

use std::os::unix::fs::PermissionsExt as _;

use super::*;
use crate::protocol::{Frame, StackReport};

fn report(id: &str, pid: u32) -> OomReport {
    let frame = Frame { addr: "0x401136".into(), function: Some("leak_until_killed".into()), ..Frame::default() };
    let stack = StackReport::for_test(pid, "00000000000000ff", (60 << 20, 60), (60 << 20, 60), vec![frame]);
    OomReport {
        id: id.into(),
        time_unix_ms: 1_700_000_000_000,
        pid,
        comm: "leaker".into(),
        uid: Some(0),
        cgroup: Some("/leakprobe-test".into()),
        ns_pid: None,
        container_id: None,
        total_vm_kb: Some(70_000),
        anon_rss_kb: Some(65_000),
        file_rss_kb: Some(1_000),
        shmem_rss_kb: Some(0),
        oom_score_adj: Some(0),
        tracked: true,
        heap_live_bytes: 60 << 20,
        heap_live_allocations: 60,
        stacks_by_live_bytes: vec![stack],
        stacks_by_growth: Vec::new(),
    }
}

fn load(dir: &Path, limits: StoreLimits) -> (ReportStore, Vec<String>) {
    ReportStore::load(dir, limits)
}

fn ids(store: &ReportStore) -> Vec<String> {
    store.list().into_iter().map(|s| s.id).collect()
}

#[test]
fn round_trip_and_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, warnings) = load(dir.path(), StoreLimits::default());
    assert!(warnings.is_empty(), "{warnings:?}");
    let id = store.new_id(1_700_000_000_000, 42);
    assert_eq!(id, "1700000000000-42");
    store.save(report(&id, 42)).expect("saved");
    assert!(dir.path().join("oom-1700000000000-42.json").is_file());
    // Only the final file: no temporary one left.
    assert_eq!(fs::read_dir(dir.path()).expect("read dir").count(), 1);
    assert_eq!(store.counters().written, 1);

    let (again, warnings) = load(dir.path(), StoreLimits::default());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(again.get(&id), Some(&report(&id, 42)));
    assert_eq!(again.counters().loaded, 1);
    let summary = &again.list()[0];
    assert_eq!(summary.top_function.as_deref(), Some("leak_until_killed"));
    assert_eq!(summary.anon_rss_kb, Some(65_000));
    // A taken id moves on by a millisecond.
    assert_eq!(again.new_id(1_700_000_000_000, 42), "1700000000001-42");
}

#[test]
fn rotation_drops_the_oldest_by_count_and_by_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, _) = load(dir.path(), StoreLimits { max_reports: 3, max_bytes: u64::MAX });
    for ms in [5, 1, 4, 2, 3] {
        let id = store.new_id(ms, 7);
        store.save(report(&id, 7)).expect("saved");
    }
    // Written in the order 5, 1, 4, 2, 3: the oldest by time go first, whenever they were written.
    assert_eq!(ids(&store), ["0000000000003-7", "0000000000004-7", "0000000000005-7"]);
    assert_eq!(fs::read_dir(dir.path()).expect("read dir").count(), 3);
    assert_eq!(store.counters().rotated, 2);

    let one = serde_json::to_vec_pretty(&FileBody {
        format: FILE_FORMAT.into(),
        version: FILE_VERSION,
        report: report("0000000000006-7", 7),
    })
    .expect("serializes")
    .len() as u64;
    let (mut store, _) = load(dir.path(), StoreLimits { max_reports: 100, max_bytes: 2 * one + one / 2 });
    assert_eq!(ids(&store), ["0000000000004-7", "0000000000005-7"], "reloading applies the new limits");
    store.save(report("0000000000006-7", 7)).expect("saved");
    assert_eq!(ids(&store), ["0000000000005-7", "0000000000006-7"]);
    // One report larger than the byte limit is still kept: the newest always stays.
    let (mut store, _) = load(dir.path(), StoreLimits { max_reports: 100, max_bytes: 10 });
    store.save(report("0000000000007-7", 7)).expect("saved");
    assert_eq!(ids(&store), ["0000000000007-7"]);
}

#[test]
fn truncated_unknown_and_foreign_files_are_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut store, _) = load(dir.path(), StoreLimits::default());
    store.save(report("0000000000001-1", 1)).expect("saved");
    store.save(report("0000000000002-2", 2)).expect("saved");
    let good = fs::read(dir.path().join(file_name("0000000000002-2"))).expect("read");
    fs::write(dir.path().join(file_name("0000000000003-3")), &good[..good.len() / 2]).expect("truncated");
    fs::write(dir.path().join("notes.txt"), "hello").expect("junk");
    fs::write(dir.path().join(file_name("0000000000004-4")), r#"{"format":"other","version":1,"report":{}}"#)
        .expect("foreign");
    fs::write(dir.path().join(file_name("0000000000005-5")), &good).expect("an id that is not the file's");
    fs::write(dir.path().join(".oom-0000000000006-6.json.tmp"), "{").expect("leftover");

    let (store, warnings) = load(dir.path(), StoreLimits::default());
    assert_eq!(ids(&store), ["0000000000001-1", "0000000000002-2"]);
    assert_eq!(store.counters().skipped, 4, "{warnings:?}");
    assert_eq!(warnings.len(), 5, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("notes.txt")), "{warnings:?}");
    assert!(!dir.path().join(".oom-0000000000006-6.json.tmp").exists(), "the leftover temporary file is removed");
    // Skipped files are left alone, for a human to look at.
    assert!(dir.path().join("notes.txt").exists());
}

#[test]
fn an_unwritable_directory_keeps_reports_in_memory() {
    // Root ignores directory permissions: use a path under a regular file, which no one can create.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("file");
    fs::write(&file, "").expect("file");
    let (mut store, warnings) = load(&file.join("oom"), StoreLimits::default());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(store.save(report("0000000000001-1", 1)).is_err());
    assert_eq!(store.counters().write_errors, 1);
    assert_eq!(ids(&store), ["0000000000001-1"]);
    assert!(store.get("0000000000001-1").is_some());

    // A directory that exists but refuses writes (for a non-root user) behaves the same.
    let ro = dir.path().join("ro");
    fs::create_dir(&ro).expect("dir");
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o500)).expect("chmod");
    let (mut store, _) = load(&ro, StoreLimits::default());
    let saved = store.save(report("0000000000002-2", 2));
    assert_eq!(saved.is_err(), store.counters().write_errors == 1);
    assert!(store.get("0000000000002-2").is_some());
}

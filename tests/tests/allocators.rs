//! Allocators beyond the host's libc, found by discovery: jemalloc, tcmalloc and mimalloc (linked, or loaded
//! with `dlopen` after the daemon started), a statically linked musl executable, and a libc copy in a container
//! (own mount and pid namespaces, own root filesystem). Each fixture waits until the daemon reports its
//! allocator file probed, then leaks; the leaks must come out exact and symbolized. A static executable stripped
//! of its symbols cannot be probed: `status` must say so, and why.

use std::{fs, path::Path};

use leakprobe_tests::container::{Container, program_pid};
use leakprobe_tests::stacks::{assert_live, by_fn0};
use leakprobe_tests::{Daemon, Fixture, StackExt, describe, dump, file_id, wait_for_fence};
use serde_json::Value;

const MALLOC_COUNT: u64 = 10;
const MALLOC_SIZE: u64 = 1000;
const SPECIAL_COUNT: u64 = 4;
const SPECIAL_SIZE: u64 = 2500;
/// Waits until `status` lists a supported provider with probes whose path satisfies `matches`, and returns it.
fn wait_for_provider(daemon: &Daemon, what: &str, matches: impl Fn(&str) -> bool) -> Value {
    daemon.wait_for_provider(what, |p| {
        p["supported"].as_bool() == Some(true)
            && p["path"].as_str().is_some_and(&matches)
            && p["probes"].as_u64() > Some(0)
    })
}

/// Live bytes and count of every stack whose innermost frame is `function`.
fn live_of(stacks: &[Value], function: &str) -> (u64, u64) {
    by_fn0(stacks, function).iter().fold((0, 0), |(b, c), s| (b + s.live_bytes(), c + s.live_count()))
}

/// Says "go", waits for the fence and checks the leaks (`special`: whether the allocator's own API leaked).
fn leak_and_check(daemon: &Daemon, fixture: &mut Fixture, pid: u32, special: bool) -> Vec<Value> {
    fixture.send_line("go");
    fixture.wait_line("ready");
    let stacks = wait_for_fence(daemon, pid);
    assert_live(&stacks, "leak_malloc", MALLOC_COUNT * MALLOC_SIZE, MALLOC_COUNT);
    let want = if special { (SPECIAL_COUNT * SPECIAL_SIZE, SPECIAL_COUNT) } else { (0, 0) };
    assert_eq!(live_of(&stacks, "leak_special"), want, "leak_special; {}", dump(&stacks));
    assert_eq!(live_of(&stacks, "churn"), (0, 0), "churn frees everything; {}", dump(&stacks));
    let calls = by_fn0(&stacks, "churn").iter().map(|s| s.num("total_count")).sum::<u64>();
    assert_eq!(calls, 100, "every churn allocation was seen; {}", dump(&stacks));
    stacks
}

fn linked_allocator(binary: &str, library: &str, family: &str) {
    let daemon = Daemon::start();
    let mut fixture = Fixture::spawn(binary, &[]);
    fixture.wait_line("started");
    let provider = wait_for_provider(&daemon, library, |path| path.ends_with(library));
    assert_eq!(provider["family"].as_str(), Some(family), "{provider:#}");
    let pid = fixture.pid();
    leak_and_check(&daemon, &mut fixture, pid, true);
    fixture.close_stdin_and_wait();
}

#[test]
fn jemalloc_leaks_are_exact() {
    linked_allocator(env!("ALLOC_LEAKER_JEMALLOC"), "libjemalloc.so.2", "jemalloc");
}

/// Tier 1 on an allocator other than the libc: with `--malloc-probes off` discovery lists libjemalloc without
/// probing it, and `leakprobe trace` attaches pid-scoped probes to it (and to the libc) in the fixture alone.
#[test]
fn trace_probes_a_process_jemalloc_pid_scoped_and_its_leaks_are_exact() {
    let daemon = Daemon::start_with_args(&["--malloc-probes", "off"]);
    let mut fixture = Fixture::spawn(env!("ALLOC_LEAKER_JEMALLOC"), &[]);
    fixture.wait_line("started");
    let provider = daemon.wait_for_provider("libjemalloc listed", |p| {
        p["path"].as_str().is_some_and(|path| path.ends_with("libjemalloc.so.2"))
    });
    assert_eq!(provider["family"].as_str(), Some("jemalloc"), "{provider:#}");
    assert_eq!(provider["supported"].as_bool(), Some(true), "{provider:#}");
    assert_eq!(provider["probes"].as_u64(), Some(0), "no system-wide probe with --malloc-probes off: {provider:#}");
    let socket = daemon.socket_str().to_owned();
    let pid = fixture.pid();
    let traced =
        daemon.cli_json(&["trace", "--socket", &socket, "--pid", &pid.to_string(), "--mode", "full", "--json"]);
    assert_eq!(traced["result"], "attached", "{traced:#}");
    leak_and_check(&daemon, &mut fixture, pid, true);
    fixture.close_stdin_and_wait();
}

#[test]
fn tcmalloc_leaks_are_exact() {
    linked_allocator(env!("ALLOC_LEAKER_TCMALLOC"), "libtcmalloc.so.4.5.10", "tcmalloc");
}

#[test]
fn mimalloc_leaks_are_exact() {
    linked_allocator(env!("ALLOC_LEAKER_MIMALLOC"), "libmimalloc.so.2.0", "mimalloc");
}

#[test]
fn a_static_musl_executable_is_its_own_allocator() {
    let binary = env!("ALLOC_LEAKER_STATIC");
    let daemon = Daemon::start();
    let mut fixture = Fixture::spawn(binary, &[]);
    fixture.wait_line("started");
    let provider = wait_for_provider(&daemon, "the static fixture", |path| path == binary);
    assert_eq!(provider["family"].as_str(), Some("musl"), "{provider:#}");
    assert_eq!(provider["static_symbols"].as_bool(), Some(true), "{provider:#}");
    let pid = fixture.pid();
    leak_and_check(&daemon, &mut fixture, pid, false);
    fixture.close_stdin_and_wait();
}

/// A static executable without its symbol table carries an allocator nothing can locate: discovery recognises it,
/// lists it as not supported with the reason (`status`, human and JSON), counts it, and `trace` says why it cannot
/// probe the process; the process runs on unharmed.
#[test]
fn a_stripped_static_executable_is_listed_as_not_supported_with_the_reason() {
    const REASON: &str = "static executable without a symbol table: malloc not found";
    let binary = env!("ALLOC_LEAKER_STATIC_STRIPPED");
    // Probes off until `trace` asks for them (with `all`, `trace` has nothing to add).
    let daemon = Daemon::start_with_args(&["--malloc-probes", "off"]);
    let mut fixture = Fixture::spawn(binary, &[]);
    fixture.wait_line("started");
    let pid = fixture.pid();
    let entry = daemon.wait_for_file("the stripped static fixture", &file_id(Path::new(binary)));
    assert_eq!(entry["path"].as_str(), Some(binary), "{entry:#}");
    assert_eq!(entry["supported"].as_bool(), Some(false), "{entry:#}");
    assert_eq!(entry["family"].as_str(), Some("unknown"), "{entry:#}");
    assert_eq!(entry["error"].as_str(), Some(REASON), "{entry:#}");
    assert_eq!((entry["probes"].as_u64(), entry["static_symbols"].as_bool()), (Some(0), Some(false)), "{entry:#}");
    assert!(daemon.counter("daemon_counters", "discovery_unsupported_files") >= 1);

    let socket = daemon.socket_str().to_owned();
    let out = daemon.run_cli(&["status", "--socket", &socket]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    println!("leakprobe status:\n{text}");
    let line = text.lines().find(|l| l.contains(binary)).unwrap_or_else(|| panic!("no line for {binary}: {text}"));
    assert!(line.contains("unknown") && line.contains(" no ") && line.contains(REASON), "{line}");
    assert!(text.contains("recognised but not supported"), "{text}");

    let traced = daemon.run_cli(&["trace", "--socket", &socket, "--pid", &pid.to_string()]);
    assert!(!traced.status.success(), "nothing to probe: {}", describe(&traced));
    let stderr = String::from_utf8_lossy(&traced.stderr);
    assert!(stderr.contains(REASON) && stderr.contains(binary), "trace says why: {stderr}");
    assert!(stderr.contains("422"), "nothing the daemon can do: 422, not a server error: {stderr}");

    fixture.send_line("go");
    fixture.wait_line("ready");
    let stacks = daemon.top(pid);
    assert!(stacks.is_empty(), "no malloc probe in it: {}", dump(&stacks));
    fixture.close_stdin_and_wait();
    assert!(daemon.status()["pid"].as_u64().is_some(), "the daemon still answers");
}

#[test]
fn an_allocator_loaded_with_dlopen_after_start_is_found_by_a_rescan() {
    // A copy outside the library directories: another file than the host's, which the daemon probes at start.
    let libs = tempfile::tempdir().expect("temp dir");
    let host = fs::canonicalize("/usr/lib/x86_64-linux-gnu/libmimalloc.so.2").expect("the host's libmimalloc");
    fs::copy(host, libs.path().join("libmimalloc.so.2")).expect("copy libmimalloc");
    let dir = libs.path().to_str().expect("utf-8 path").to_owned();
    let daemon = Daemon::start_with_args(&["--rescan-interval", "1s"]);
    let mut fixture = Fixture::spawn_with_env(env!("ALLOC_LEAKER_DLOPEN"), &[], &[("LD_LIBRARY_PATH", &dir)]);
    fixture.wait_line("started");
    let scans_before = daemon.counter("daemon_counters", "discovery_full_scans");
    fixture.send_line("load");
    fixture.wait_line("loaded");
    wait_for_provider(&daemon, "libmimalloc's copy after dlopen", |path| path.starts_with(&dir));
    assert!(daemon.counter("daemon_counters", "discovery_full_scans") > scans_before, "found by a rescan");
    let status = daemon.status();
    let cost = &status["discovery"]["last_full_scan"];
    assert!(cost["pids"].as_u64() > Some(0) && cost["microseconds"].as_u64() > Some(0), "scan cost: {cost:#}");
    let pid = fixture.pid();
    leak_and_check(&daemon, &mut fixture, pid, true);
    fixture.close_stdin_and_wait();
}

/// A container (own root filesystem, mount and pid namespaces, docker-style cgroup) with its own copy of the libc:
/// found as another file than the host's, probed, its leaks exact; reported with the container's id and the pid
/// as the container sees it, in JSON and in the tables.
#[test]
fn a_container_with_its_own_libc_and_pid_namespace() {
    let container = Container::new(env!("ALLOC_LEAKER_LIBC"), "alloc_leaker", 1 << 30);
    let daemon = Daemon::start();
    let mut fixture = container.spawn("alloc_leaker", &[]);
    fixture.wait_line("started");
    // The fixture is unshare's child, pid 1 in its namespace.
    let pid = program_pid(&fixture);
    // Found as its own file (device and inode of the copy), whatever path the daemon reaches it by.
    let file = file_id(&container.root().join("lib/x86_64-linux-gnu/libc.so.6"));
    let provider = daemon.wait_for_file("the container's libc", &file);
    assert_eq!(
        (provider["family"].as_str(), provider["supported"].as_bool()),
        (Some("glibc"), Some(true)),
        "{provider:#}"
    );
    let stacks = leak_and_check(&daemon, &mut fixture, pid, false);
    let leak = &by_fn0(&stacks, "leak_malloc")[0];
    assert_eq!(leak["ns_pid"].as_u64(), Some(1), "pid 1 in its own namespace: {leak:#}");
    assert_eq!(leak["pid"].as_u64(), Some(u64::from(pid)), "{leak:#}");
    assert_eq!(leak["container_id"].as_str(), Some(container.id()), "{leak:#}");
    assert_eq!(leak["cgroup"].as_str(), Some(container.cgroup().path().as_str()), "{leak:#}");
    // Symbolized from the container's file, which the host has at no path of its own.
    let module = leak.frames()[0]["module"].as_str().unwrap_or_default().to_owned();
    assert!(module.ends_with("/alloc_leaker"), "{leak:#}");
    assert_eq!(leak.function_at(1), Some("main"), "{leak:#}");
    // `--pid` takes the host pid; the tables show the short container id and the pid the container sees.
    let short = &container.id()[..12];
    let socket = daemon.socket_str().to_owned();
    let pid_arg = pid.to_string();
    for command in ["top", "stacks", "processes"] {
        let out = daemon.run_cli(&[command, "--socket", &socket, "--pid", &pid_arg]);
        assert!(out.status.success(), "{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        println!("leakprobe {command} --pid {pid}:\n{text}");
        let header = text.lines().next().unwrap_or_default();
        assert!(header.contains("CONTAINER") && header.contains("NS PID"), "{command}: {text}");
        let row = text.lines().find(|l| l.trim_start().starts_with(&pid_arg)).unwrap_or_default();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells.get(..3), Some(&[pid_arg.as_str(), short, "1"][..]), "{command}: {text}");
        if command != "processes" {
            assert!(text.contains("leak_malloc"), "{command}: {text}");
        }
    }
    fixture.close_stdin_and_wait();
}

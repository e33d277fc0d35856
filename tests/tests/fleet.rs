//! Where a fleet looks: the live heap pulled at `/debug/pprof/heap` on the metrics listener and read by Go's own
//! `go tool pprof`, its filters and errors, and the `service` identity of a process in a systemd unit.

use leakprobe_tests::expect::{ALPHA_COUNT, ALPHA_SIZE};
use leakprobe_tests::http::{RawResponse, get_tcp};
use leakprobe_tests::pprof::{Profile, go_tool_top};
use leakprobe_tests::unit::UnitCgroup;
use leakprobe_tests::{Daemon, StackExt, dump, observe_leaker, wait_for_fence};

fn heap(daemon: &Daemon, query: &str) -> RawResponse {
    get_tcp(daemon.metrics_addr(), &format!("/debug/pprof/heap{query}"), "*/*")
}

fn heap_profile(daemon: &Daemon, query: &str) -> (Vec<u8>, Profile) {
    let response = heap(daemon, query);
    assert_eq!(response.status, Some(200), "{response}");
    assert_eq!(response.header("content-type").as_deref(), Some("application/octet-stream"));
    let bytes = response.body_bytes().to_vec();
    let profile = Profile::from_gzip(&bytes);
    (bytes, profile)
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).expect("fits")
}

#[test]
fn heap_endpoint_is_read_by_go_tool_pprof() {
    let (daemon, fixture, stacks) = observe_leaker("basic");
    let pid = fixture.pid();
    let live: u64 = stacks.iter().map(StackExt::live_bytes).sum();
    let (bytes, profile) = heap_profile(&daemon, &format!("?pid={pid}"));
    assert!(profile.sample.iter().all(|s| profile.pid(s) == Some(pid)), "only the asked pid");
    assert_eq!(profile.total("inuse_space", pid), as_i64(live), "{}", dump(&stacks));
    assert!(profile.sample.iter().all(|s| profile.label(s, "service") == Some("leaker")), "service falls back to comm");

    // Go's reader: the default sample type is inuse_space, the leak's frames are named, the total is the heap.
    let top = go_tool_top(&bytes, &[]);
    println!("go tool pprof -top {}/debug/pprof/heap?pid={pid}:\n{top}", daemon.metrics_addr());
    assert!(top.contains("Type: inuse_space"), "{top}");
    let alpha = top.lines().find(|l| l.trim_end().ends_with(" leak_alpha")).unwrap_or_else(|| panic!("{top}"));
    let flat = alpha.split_whitespace().next().expect("flat column");
    assert_eq!(ALPHA_COUNT * ALPHA_SIZE, 10_000);
    assert_eq!(flat, "9.77kB", "10,000 bytes as pprof prints them: {top}");
    let objects = go_tool_top(&bytes, &["-sample_index=inuse_objects"]);
    assert!(objects.contains("Type: inuse_objects"), "{objects}");
    let line = objects.lines().find(|l| l.trim_end().ends_with(" leak_alpha")).unwrap_or_else(|| panic!("{objects}"));
    assert_eq!(line.split_whitespace().next(), Some(ALPHA_COUNT.to_string().as_str()), "{objects}");

    // The filters select the same process by name and by service; another name selects nothing.
    for query in ["?comm=leaker", "?service=leaker", ""] {
        let (_, by) = heap_profile(&daemon, query);
        assert_eq!(by.total("inuse_space", pid), as_i64(live), "{query}");
    }
    let (_, none) = heap_profile(&daemon, &format!("?pid={pid}&service=not-leaker"));
    assert!(none.sample.is_empty(), "no process of that service: an empty profile");
    let (_, none) = heap_profile(&daemon, "?container=0123456789ab");
    assert!(none.sample.iter().all(|s| profile.pid(s) != Some(pid)), "the fixture is in no container");
}

#[test]
fn heap_endpoint_rejects_bad_queries_and_can_be_off() {
    let daemon = Daemon::start();
    for (query, says) in [("?pid=abc", "pid: invalid digit"), ("?seconds=30", "unknown field `seconds`")] {
        let response = heap(&daemon, query);
        assert_eq!(response.status, Some(400), "{query}: {response}");
        assert!(response.body.contains(says), "{query}: {}", response.body);
        assert!(response.body.contains("parameters: pid, comm, service, container"), "{}", response.body);
    }
    let other = get_tcp(daemon.metrics_addr(), "/debug/pprof/profile", "*/*");
    assert_eq!(other.status, Some(404), "{other}");
    assert!(other.body.contains("GET /metrics and /debug/pprof/heap"), "{}", other.body);

    let off = Daemon::start_with_args(&["--no-pprof-endpoint"]);
    let response = heap(&off, "");
    assert_eq!(response.status, Some(404), "{response}");
    assert!(response.body.contains("serves only GET /metrics here"), "{}", response.body);
}

#[test]
fn a_process_in_a_systemd_unit_is_its_service() {
    let daemon = Daemon::start();
    let unit = UnitCgroup::new("leakprobe-fleet");
    let mut fixture = unit.leaker("basic");
    fixture.wait_line("ready");
    let pid = fixture.pid();
    let stacks = wait_for_fence(&daemon, pid);
    let live: u64 = stacks.iter().map(StackExt::live_bytes).sum();
    let (_, profile) = heap_profile(&daemon, &format!("?service={}", unit.name()));
    assert_eq!(profile.total("inuse_space", pid), as_i64(live), "{}", dump(&stacks));
    assert!(profile.sample.iter().all(|s| profile.label(s, "service") == Some(unit.name())));
    assert!(profile.sample.iter().all(|s| profile.pid(s) == Some(pid)), "only the unit's process");
    let (_, by_comm) = heap_profile(&daemon, &format!("?pid={pid}&service=leaker"));
    assert!(by_comm.sample.is_empty(), "a process in a unit is not named after its comm");
    drop(fixture);
}

//! Tier 0 (page faults attributed to stacks, every process), tier 1 (pid-scoped malloc probes: automatic
//! escalation and `leakprobe trace`) and the CPU budget, against the `tier0` fixture. Every assertion is on the
//! fixtures' own pids: tier 0 sees every process on the host.

use std::time::{Duration, Instant};

use leakprobe_tests::{Daemon, Fixture, StackExt, TIER0, dump, poll_until, wait_for_stack};
use serde_json::Value;

const PAGE: u64 = 4096;

fn spawn(args: &[&str]) -> Fixture {
    let mut fixture = Fixture::spawn(TIER0, args);
    fixture.wait_line("ready");
    fixture
}

/// `leakprobe faults --pid PID --json`: the process's report, if tier 0 has seen it.
fn faults_of(daemon: &Daemon, pid: u32) -> Option<Value> {
    daemon.faults_of(pid)
}

/// The one fault stack of `process` whose innermost frame is `function`, if any.
fn fault_stack<'a>(process: &'a Value, function: &str) -> Option<&'a Value> {
    process["stacks"].as_array()?.iter().find(|s| s.function_at(0) == Some(function))
}

/// The mapping stacks of `process` from system call `source` alone (`mmap`, `brk`) whose frames name `function`
/// (any stack for "").
fn map_stacks<'a>(process: &'a Value, source: &str, function: &str) -> Vec<&'a Value> {
    let stacks = process["map_stacks"].as_array().map(Vec::as_slice).unwrap_or_default();
    stacks
        .iter()
        .filter(|s| s["sources"] == serde_json::json!([source]))
        .filter(|s| function.is_empty() || s.has_function_containing(function))
        .collect()
}

fn pids_in(list: &Value) -> Vec<u64> {
    list.as_array()
        .map(|l| l.iter().filter_map(|e| e["pid"].as_u64().or(e["escalation"]["pid"].as_u64())).collect())
        .unwrap_or_default()
}

/// The attach points of `status` scoped to process `pid` (tier 1).
fn scoped_points(status: &Value, pid: u64) -> Vec<Value> {
    let points = status["attach_points"].as_array().map(Vec::as_slice).unwrap_or_default();
    points.iter().filter(|p| p["pid"].as_u64() == Some(pid)).cloned().collect()
}

#[test]
fn tier0_attributes_mmap_and_malloc_growth_to_the_touching_stacks_with_no_malloc_probes() {
    // The fixtures first: the daemon's start-up scan loads their unwind tables before they grow (a process
    // started later is walked by frame pointers until the scan after its exec, which would split the stacks).
    // 2048 pages of an anonymous mapping, touched by golike_touch: no malloc involved.
    let mut golike = spawn(&["golike", "2048"]);
    // 8 blocks of 256 KiB from malloc: glibc writes each block's header (page 0, inside malloc), cleak_touch the
    // other 63 pages.
    let mut cleak = spawn(&["cleak", "8"]);
    // Every fault sampled: each sampled fault weighs exactly one page, so bytes are exact.
    let daemon = Daemon::start_with_args(&["--malloc-probes", "off", "--fault-sample-interval", "1"]);
    let status = daemon.status();
    let uprobes: Vec<&Value> = status["attach_points"]
        .as_array()
        .expect("attach points")
        .iter()
        .filter(|p| p["kind"] != "tracepoint")
        .collect();
    assert!(uprobes.is_empty(), "--malloc-probes off attaches no uprobe: {uprobes:?}");
    assert_eq!(status["tier1"]["malloc_probes"], "off", "{status:#}");
    assert_eq!(status["tier0"]["enabled"], true, "{status:#}");

    golike.send_line("grow");
    cleak.send_line("grow");
    golike.wait_line("grown 1");
    cleak.wait_line("grown 1");

    let golike_pages = 2048;
    let cleak_pages = 8 * (256 * 1024 / PAGE - 1);
    // The touching functions are leaves without a frame of their own: the table walk goes on to their caller
    // and to `main` (a frame-pointer walk, `--unwind fp`, skips the direct caller).
    for (fixture, function, pages) in [(&golike, "golike_touch", golike_pages), (&cleak, "cleak_touch", cleak_pages)] {
        let pid = fixture.pid();
        let process = poll_until(Duration::from_secs(30), &format!("{function}'s faults of pid {pid}"), || {
            faults_of(&daemon, pid)
                .filter(|p| fault_stack(p, function).is_some_and(|s| s["sampled_faults"].as_u64() == Some(pages)))
        });
        let stack = fault_stack(&process, function).expect("found above");
        assert_eq!(stack.num("bytes"), pages * PAGE, "bytes first touched from {function}: {process:#}");
        assert!(stack.has_function_containing("main"), "the application's frames are in the stack: {stack:#}");
        assert_eq!(
            process["stacks"].as_array().expect("stacks")[0]["stack_id"],
            stack["stack_id"],
            "{function} touched most of pid {pid}'s memory: {process:#}"
        );
        assert!(process["tier1"].is_null(), "no tier-1 probes on pid {pid}: {process:#}");
    }
    // Mapping growth: the Go-like heap is one 4 GiB mmap; each 256 KiB block is an mmap of glibc's (256 KiB and
    // its header, a page). Every call sampled: each weighs its length. (Which frames a walk through glibc's
    // frameless malloc reaches varies: the exact stacks are the next test's.)
    // VmData comes with the next tick.
    let golike_process = poll_until(Duration::from_secs(30), "golike's VmData", || {
        faults_of(&daemon, golike.pid()).filter(|p| p["vm_data_bytes"].as_u64().is_some())
    });
    let heap = map_stacks(&golike_process, "mmap", "");
    assert!(heap.iter().any(|s| s.num("bytes") == 4 << 30), "the 4 GiB heap's mmap: {golike_process:#}");
    assert!(golike_process.num("vm_data_bytes") >= 4 << 30, "VmData holds the heap: {golike_process:#}");
    let blocks = 8 * (256 * 1024 + PAGE);
    let cleak_process = poll_until(Duration::from_secs(10), "cleak's mmap calls", || {
        faults_of(&daemon, cleak.pid())
            .filter(|p| map_stacks(p, "mmap", "").iter().map(|s| s.num("bytes")).sum::<u64>() >= blocks)
    });
    assert!(cleak_process.num("mapped_bytes") >= blocks, "{cleak_process:#}");
    let status = daemon.status();
    assert_eq!(status["tier0"]["mappings"], true, "{status:#}");
    assert!(status["kernel_counters"]["maps"].as_u64() >= Some(9), "{status:#}");
    assert!(status["kernel_counters"]["faults"].as_u64() >= Some(golike_pages + cleak_pages), "{status:#}");
    assert_eq!(status["kernel_counters"]["allocs"], 0, "no malloc probe fired: {status:#}");
    golike.close_stdin_and_wait();
    cleak.close_stdin_and_wait();
}

#[test]
fn mmap_and_brk_growth_is_attributed_to_the_calling_stack_exactly() {
    let daemon = Daemon::start_with_args(&["--malloc-probes", "off", "--fault-sample-interval", "1"]);
    let kib: u64 = 1024;
    let mut fixture = spawn(&["mapgrow", &kib.to_string()]);
    let rounds = 3;
    for round in 1..=rounds {
        fixture.send_line("grow");
        fixture.wait_line(&format!("grown {round}"));
    }
    let pid = fixture.pid();
    // Nothing was touched: no fault stack names mapgrow_round, while both system calls are attributed to it.
    let process = poll_until(Duration::from_secs(30), "both calls of every round", || {
        faults_of(&daemon, pid).filter(|p| {
            ["mmap", "brk"].iter().all(|source| {
                map_stacks(p, source, "mapgrow_round").iter().map(|s| s.num("sampled_calls")).sum::<u64>() == rounds
            })
        })
    });
    let bytes = |source| map_stacks(&process, source, "mapgrow_round").iter().map(|s| s.num("bytes")).sum::<u64>();
    assert_eq!(bytes("mmap"), rounds * kib * 1024, "{process:#}");
    assert_eq!(bytes("brk"), rounds * kib * 1024 / 16, "{process:#}");
    let stacks = process["stacks"].as_array().map(Vec::as_slice).unwrap_or_default();
    assert!(!stacks.iter().any(|s| s.has_function_containing("mapgrow")), "nothing touched: {process:#}");
    assert!(process.num("mapped_bytes") >= rounds * kib * 1024 * 17 / 16, "{process:#}");
    // The table shows it too.
    let out = daemon.run_cli(&["faults", "--socket", daemon.socket_str(), "--pid", &pid.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("anonymous memory mapped") && text.contains("brk"), "{text}");
    fixture.close_stdin_and_wait();
}

#[test]
fn a_fault_that_maps_a_transparent_huge_page_counts_the_whole_page() {
    // Every fault sampled. With huge pages, one fault per 2 MiB maps all of it; without (none free, or THP off on
    // the host), one fault per page: either way the bytes first touched from golike_touch are the bytes touched.
    let daemon = Daemon::start_with_args(&["--malloc-probes", "off", "--fault-sample-interval", "1"]);
    let pages: u64 = 8 * 512;
    let mut huge = spawn(&["hugelike", &pages.to_string()]);
    huge.send_line("grow");
    huge.wait_line("grown 1");
    let pid = huge.pid();
    let thp = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    let huge_kib: u64 = thp
        .lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("AnonHugePages");
    let host = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    eprintln!("AnonHugePages {huge_kib} kB; THP on the host: {}", host.trim());
    if !host.contains("[never]") {
        assert!(huge_kib >= 2048, "the fixture got no huge page (THP {}): {thp}", host.trim());
    }
    let process = poll_until(Duration::from_secs(30), "golike_touch's bytes", || {
        faults_of(&daemon, pid)
            .filter(|p| fault_stack(p, "golike_touch").is_some_and(|s| s.num("bytes") >= pages * PAGE))
    });
    let stack = fault_stack(&process, "golike_touch").expect("found above");
    assert_eq!(stack.num("bytes"), pages * PAGE, "{process:#}");
    // One sampled fault per huge page, one per base page for the rest.
    let huge_pages = huge_kib / 2048;
    assert_eq!(stack.num("sampled_faults"), huge_pages + (pages - huge_pages * 512), "{process:#}");
    let status = daemon.status();
    assert!(status["daemon_counters"]["fault_large_folios"].as_u64() >= Some(huge_pages), "{status:#}");
}

/// A daemon escalating automatically, fast (ticks of 200 ms, a 6 s window), only processes named `comm`: the
/// test must not attach probes to other processes growing on the host.
fn auto_daemon(comm: &str, extra: &[&str]) -> Daemon {
    let mut args = vec!["--malloc-probes", "auto", "--interval", "200ms", "--window", "6s", "--escalate-only", comm];
    args.extend_from_slice(extra);
    Daemon::start_with_args(&args)
}

#[test]
fn a_steady_leaker_is_escalated_automatically_and_reported_exactly_while_a_busy_process_is_not() {
    let daemon = auto_daemon("tier0", &[]);
    let started = Instant::now();
    // 64 KiB every 20 ms: 3.2 MB/s of anonymous memory, steadily.
    let leaker = spawn(&["leakloop", "20"]);
    let busy = spawn(&["busy"]);
    let (leaker_pid, busy_pid) = (u64::from(leaker.pid()), u64::from(busy.pid()));

    let escalated = poll_until(Duration::from_mins(1), "the leaker's automatic escalation", || {
        let status = daemon.status();
        status["tier1"]["escalated"].as_array()?.iter().find(|e| e["pid"].as_u64() == Some(leaker_pid)).cloned()
    });
    let took = started.elapsed();
    eprintln!("escalated after {took:?}: {escalated:#}");
    assert_eq!(escalated["trigger"], "auto", "{escalated:#}");
    assert_eq!(escalated["mode"], "full", "the daemon's mode: {escalated:#}");
    assert!(escalated["reason"].as_str().is_some_and(|r| r.contains("grows steadily")), "{escalated:#}");
    assert!(escalated["since_unix_ms"].as_u64() > Some(0) && escalated["until_unix_ms"].as_u64().is_some());

    // Its probes are listed in status, scoped to it; the busy process has none.
    poll_until(Duration::from_secs(10), "the leaker's pid-scoped probes in status", || {
        (!scoped_points(&daemon.status(), leaker_pid).is_empty()).then_some(())
    });
    let status = daemon.status();
    assert!(scoped_points(&status, busy_pid).is_empty(), "{:#}", status["attach_points"]);

    // Then the malloc stack, exactly: every block since the escalation is 64 KiB and live.
    let stacks = wait_for_stack(&daemon, leaker.pid(), "loop_leak with 10 blocks", |s| {
        s.function_at(0) == Some("loop_leak") && s.live_count() >= 10
    });
    let stack = stacks.iter().find(|s| s.function_at(0) == Some("loop_leak")).expect("found above");
    assert_eq!(stack.live_bytes(), stack.live_count() * 64 * 1024, "{}", dump(&stacks));
    assert_eq!(stack.live_bytes(), stack.total_bytes(), "nothing freed: {}", dump(&stacks));
    assert!(stack.has_function_containing("main"), "{}", dump(&stacks));

    // The busy process (malloc/free pairs, no growth) never got probes, though it calls malloc all the time.
    let status = daemon.status();
    assert!(!pids_in(&status["tier1"]["escalated"]).contains(&busy_pid), "{:#}", status["tier1"]);
    assert!(!pids_in(&status["tier1"]["ended"]).contains(&busy_pid), "{:#}", status["tier1"]);
    assert!(daemon.top(busy.pid()).is_empty(), "no malloc event from the busy process");
    let busy_faults = faults_of(&daemon, busy.pid());
    assert!(busy_faults.as_ref().is_none_or(|p| p["growing"] == false), "{busy_faults:#?}");
    let leaker_faults = faults_of(&daemon, leaker.pid()).expect("tier 0 saw the leaker");
    assert_eq!(leaker_faults["growing"], true, "{leaker_faults:#}");
    assert_eq!(leaker_faults["tier1"]["trigger"], "auto", "{leaker_faults:#}");
}

#[test]
fn trace_attaches_on_request_and_the_budget_detaches_a_malloc_heavy_process() {
    let daemon =
        Daemon::start_with_args(&["--malloc-probes", "off", "--interval", "200ms", "--cpu-budget-process", "1"]);
    let socket = daemon.socket_str().to_owned();
    let out = daemon.run_cli(&["trace", "--socket", &socket, "--pid", "999999999"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no process 999999999"), "{out:?}");

    let busy = spawn(&["busy"]);
    let pid = busy.pid().to_string();
    let traced = daemon.cli_json(&["trace", "--socket", &socket, "--pid", &pid, "--mode", "full", "--json"]);
    assert_eq!(traced["result"], "attached", "{traced:#}");
    assert_eq!(traced["escalation"]["trigger"], "request", "{traced:#}");
    assert_eq!(traced["escalation"]["mode"], "full", "{traced:#}");
    let points = poll_until(Duration::from_secs(10), "the pid-scoped probes in status", || {
        let points = scoped_points(&daemon.status(), u64::from(busy.pid()));
        (!points.is_empty()).then_some(points)
    });
    assert!(points.iter().any(|p| p["target"] == "malloc"), "{points:#?}");
    assert!(points.iter().any(|p| p["target"] == "free"), "{points:#?}");

    // Every malloc/free pair of the busy loop traps: far over 1% of a core. The budget raises the sampling
    // interval, then detaches, and says so.
    let ended = poll_until(Duration::from_mins(1), "the budget detaching the busy process", || {
        let status = daemon.status();
        status["tier1"]["ended"]
            .as_array()?
            .iter()
            .find(|e| e["escalation"]["pid"].as_u64() == Some(u64::from(busy.pid())))
            .cloned()
    });
    assert!(ended["why"].as_str().is_some_and(|w| w.contains("CPU budget")), "{ended:#}");
    assert!(ended["escalation"]["cpu_percent"].as_f64() > Some(1.0), "it was over budget: {ended:#}");
    let status = daemon.status();
    let budget = &status["budget"];
    assert_eq!(budget["bpf_stats"], true, "{budget:#}");
    let actions: Vec<&Value> = budget["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["pid"].as_u64() == Some(u64::from(busy.pid())))
        .collect();
    assert_eq!(actions.first().map(|a| &a["action"]), Some(&Value::from("sampling interval raised to 65536 bytes")));
    assert_eq!(actions.last().map(|a| &a["action"]), Some(&Value::from("detached")));
    assert!(status["daemon_counters"]["budget_actions"].as_u64() >= Some(2), "{status:#}");
    // Detached: the probes' cost falls back within the budget at the next checks.
    poll_until(Duration::from_secs(30), "the uprobes' cost back under the budget", || {
        let status = daemon.status();
        let escalated = pids_in(&status["tier1"]["escalated"]);
        (status["budget"]["uprobes_percent"].as_f64()? < 1.0 && !escalated.contains(&u64::from(busy.pid())))
            .then_some(())
    });
    poll_until(Duration::from_secs(10), "the pid-scoped probes gone from status", || {
        scoped_points(&daemon.status(), u64::from(busy.pid())).is_empty().then_some(())
    });
    let out = daemon.run_cli(&["trace", "--socket", &socket, "--pid", &pid, "--stop"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is not traced"), "{out:?}");
}

#[test]
fn a_process_shed_by_the_budget_shows_frozen_stacks_while_its_memory_keeps_growing() {
    let daemon = auto_daemon("busyleak", &["--cpu-budget-process", "1"]);
    // 64 KiB every 20 ms (3.2 MB/s) leaked from loop_leak, next to malloc/free pairs flat out: escalated for its
    // growth, its probes then cost far over 1% of a core, and the budget sheds it while the leak goes on.
    let fixture = spawn(&["busyleak", "20"]);
    let pid = fixture.pid();
    let ended = poll_until(Duration::from_secs(90), "the budget shedding the busy leaker", || {
        let status = daemon.status();
        status["tier1"]["ended"]
            .as_array()?
            .iter()
            .find(|e| e["escalation"]["pid"].as_u64() == Some(u64::from(pid)))
            .cloned()
    });
    assert!(ended["why"].as_str().is_some_and(|w| w.contains("CPU budget")), "{ended:#}");
    let ended_ms = ended["ended_unix_ms"].as_u64().expect("ended_unix_ms");

    // Every stack of the process is frozen, saying since when and why; none is judged `plateau`.
    let stacks = poll_until(Duration::from_secs(10), "pid's stacks frozen", || {
        let stacks = daemon.top(pid);
        stacks.iter().any(|s| s.has_function_containing("loop_leak")).then_some(stacks)
    });
    assert!(stacks.iter().all(|s| s["verdict"] == "frozen"), "{}", dump(&stacks));
    let leak = stacks.iter().find(|s| s.has_function_containing("loop_leak")).expect("found above");
    let frozen = &leak["frozen"];
    assert!(frozen["why"].as_str().is_some_and(|w| w.contains("CPU budget")), "{leak:#}");
    let since = frozen["since_unix_ms"].as_u64().expect("since_unix_ms");
    assert!(since.abs_diff(ended_ms) < 1_000, "frozen when detached ({ended_ms}): {leak:#}");

    // Fifteen ticks later the figures stand as they were, still frozen, while the process's anonymous memory,
    // read from /proc at every tick, goes on growing: its own verdict comes from there.
    std::thread::sleep(Duration::from_secs(3));
    let later = daemon.top(pid);
    let same = later.iter().find(|s| s["stack_id"] == leak["stack_id"]).expect("the stack is still there");
    assert_eq!(same["verdict"], "frozen", "{same:#}");
    assert_eq!((same.live_bytes(), &same["growth"]), (leak.live_bytes(), &leak["growth"]), "{same:#}");
    let pid_text = pid.to_string();
    let socket = daemon.socket_str().to_owned();
    let processes = daemon.cli_json(&["processes", "--socket", &socket, "--pid", &pid_text, "--json"]);
    let process = &processes["processes"][0];
    assert_eq!(process["pid"].as_u64(), Some(u64::from(pid)), "{processes:#}");
    assert_eq!(process["frozen"]["since_unix_ms"].as_u64(), Some(since), "{process:#}");
    assert_eq!(process["verdict_source"], "anon", "{process:#}");
    assert_eq!(process["verdict"], "leaking", "{process:#}");
    assert!(process["rss_anon_growth"]["rate_bytes_per_second"].as_f64() > Some(1e6), "{process:#}");

    // The tables say it too.
    let top = daemon.run_cli(&["top", "--socket", &socket, "--pid", &pid_text]);
    assert!(String::from_utf8_lossy(&top.stdout).contains("frozen since"), "{top:?}");
    let table = daemon.run_cli(&["processes", "--socket", &socket, "--pid", &pid_text]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("leaking (anon)") && text.contains("heap figures frozen since"), "{text}");
}

/// The first frame of `stack` outside the C library: the program's own code.
fn first_own_frame(stack: &Value) -> Option<&str> {
    let own = stack.frames().iter().find(|f| !f["module"].as_str().is_some_and(|m| m.contains("/libc.so")))?;
    own["function"].as_str()
}

/// Tier 0 with the default unwinder (the kernel's table walk): a small-object heap grown through glibc's
/// `malloc`, nothing attached to `malloc`, is attributed through glibc's frameless code to the program's own
/// function, for its faults and for the `brk` calls that grew it. A frame-pointer walk stopped in glibc.
#[test]
fn tier0_names_the_function_that_grows_a_glibc_heap() {
    // 4096 blocks of 4000 bytes: about 4000 pages, each first written inside malloc. Started first, so the
    // daemon's start-up scan has its tables loaded before it grows.
    let mut fixture = spawn(&["smallheap", "4096"]);
    let daemon = Daemon::start_with_args(&["--malloc-probes", "off", "--fault-sample-interval", "1"]);
    assert_eq!(daemon.status()["unwind"]["mode"], "tables");
    fixture.send_line("grow");
    fixture.wait_line("grown 1");
    let pid = fixture.pid();
    let pages = 4096 * 4000 / PAGE;
    let own_pages = |process: &Value| -> u64 {
        let stacks = process["stacks"].as_array().map(Vec::as_slice).unwrap_or_default();
        stacks.iter().filter(|s| first_own_frame(s) == Some("smallheap_grow")).map(|s| s.num("sampled_faults")).sum()
    };
    let all_pages = |process: &Value| -> u64 {
        let stacks = process["stacks"].as_array().map(Vec::as_slice).unwrap_or_default();
        stacks.iter().map(|s| s.num("sampled_faults")).sum()
    };
    // Faults lost to a full ring buffer on a loaded host are counted (`ringbuf_full_fault`), not attributed:
    // wait for most of them, then judge the share.
    let process = poll_until(Duration::from_secs(30), &format!("the faults of pid {pid}"), || {
        faults_of(&daemon, pid).filter(|p| all_pages(p) >= pages * 3 / 4)
    });
    assert!(own_pages(&process) * 100 >= all_pages(&process) * 95, "smallheap_grow holds the growth: {process:#}");
    let top = &process["stacks"].as_array().expect("stacks")[0];
    let in_libc = top.frames()[0]["module"].as_str().is_some_and(|m| m.contains("/libc.so"));
    assert!(in_libc, "the faults are taken inside malloc: {top:#}");
    assert_eq!(first_own_frame(top), Some("smallheap_grow"), "malloc's caller after glibc's frames: {top:#}");
    assert!(top.has_function_containing("main"), "and on to main: {top:#}");
    let grown = poll_until(Duration::from_secs(10), "the brk calls of pid {pid}", || {
        faults_of(&daemon, pid).filter(|p| !map_stacks(p, "brk", "").is_empty())
    });
    for stack in map_stacks(&grown, "brk", "") {
        assert_eq!(first_own_frame(stack), Some("smallheap_grow"), "brk from malloc from smallheap_grow: {stack:#}");
    }
    fixture.close_stdin_and_wait();
}

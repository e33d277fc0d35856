//! Whole stacks from code without frame pointers (a main binary at -O2, a shared library with
//! -fomit-frame-pointer, C++), allocator wrappers that name their caller, and the same stacks as frame pointers
//! give where those are present: by the kernel's table walk (the default, `--unwind auto`) and by the daemon's
//! unwinding of stack copies (`--unwind dwarf`).

use leakprobe_tests::expect::{
    ASPRINTF_BYTES, ASPRINTF_COUNT, DUP_COUNT, DUP_LEN, FENCE_SIZE, LIB_COUNT, LIB_SIZE, MAIN_COUNT, MAIN_SIZE,
    NDUP_COUNT, NDUP_LEN, NEW_ARRAY_COUNT, NEW_ARRAY_LEN, NEW_COUNT, NEW_SIZE,
};
use leakprobe_tests::stacks::{assert_live, only_by_fn0};
use leakprobe_tests::{
    Daemon, FRAMED, FRAMED_CXX, FRAMELESS, FRAMELESS_CXX, Fixture, StackExt, TIER0, dump, poll_until, wait_for_fence,
};
use std::time::Duration;

use serde_json::Value;

/// Full mode with dwarf unwinding copies 16 KiB per allocation: on a busy host that fills the ring buffer, so
/// each daemon traces only its fixture (`--pid`).
const DWARF: [&str; 4] = ["--mode", "full", "--unwind", "dwarf"];
/// Full mode with every other flag at its default: stacks walked in the kernel with the unwind tables.
const TABLES: [&str; 2] = ["--mode", "full"];

/// Starts `fixture args` (it waits for "go"), then a daemon per argument list tracing only it, lets it run to
/// its fence and returns the daemons, the fixture and each daemon's stacks of it.
fn observe_with(path: &str, args: &[&str], daemons: &[&[&str]]) -> (Vec<Daemon>, Fixture, Vec<Vec<Value>>) {
    let mut fixture = Fixture::spawn(path, args);
    fixture.wait_line("waiting");
    let pid = fixture.pid().to_string();
    let daemons: Vec<Daemon> = daemons
        .iter()
        .map(|flags| {
            let mut all = flags.to_vec();
            all.extend(["--pid", &pid]);
            Daemon::start_with_args(&all)
        })
        .collect();
    fixture.send_line("go");
    fixture.wait_line("ready");
    let stacks = daemons.iter().map(|d| wait_for_fence(d, fixture.pid())).collect();
    (daemons, fixture, stacks)
}

/// One daemon with `flags` on `fixture args`.
fn observe(path: &str, args: &[&str], flags: &[&str]) -> (Daemon, Fixture, Vec<Value>) {
    let (mut daemons, fixture, mut stacks) = observe_with(path, args, &[flags]);
    (daemons.remove(0), fixture, stacks.remove(0))
}

/// The function names of a stack's frames (empty for unnamed frames).
fn names(stack: &Value) -> Vec<&str> {
    stack.frames().iter().map(|f| f["function"].as_str().unwrap_or("")).collect()
}

/// Asserts `stack`'s frames start with `want`, in order.
fn assert_starts_with(stack: &Value, want: &[&str], stacks: &[Value]) {
    let names = names(stack);
    assert!(
        names.len() >= want.len() && names[..want.len()] == *want,
        "frames {names:?} should start with {want:?}; {}",
        dump(stacks)
    );
    assert_eq!(stack["truncated"].as_bool(), Some(false), "{}", dump(stacks));
}

/// The stacks in which `caller` is the first frame outside the C and C++ runtime libraries (libc, libstdc++),
/// after exactly one runtime frame: the wrapper, then its caller. At least one; several when the compiler gave
/// the caller several call sites (a loop of two iterations unrolled).
fn through_wrapper<'a>(stacks: &'a [Value], caller: &str) -> Vec<&'a Value> {
    let runtime =
        |frame: &Value| frame["module"].as_str().is_some_and(|m| m.contains("/libc.so") || m.contains("/libstdc++.so"));
    let found: Vec<&Value> =
        stacks.iter().filter(|s| s.frames().iter().any(|f| f["function"].as_str() == Some(caller))).collect();
    assert!(!found.is_empty(), "no stack names {caller}; {}", dump(stacks));
    for stack in &found {
        let frames = stack.frames();
        assert!(
            frames.len() > 1 && runtime(&frames[0]) && frames[1]["function"].as_str() == Some(caller),
            "{caller}'s stack should be the wrapper's frame then {caller}; {}",
            dump(stacks)
        );
        assert_eq!(stack["truncated"].as_bool(), Some(false), "{}", dump(stacks));
    }
    found
}

/// Live (bytes, count) summed over `stacks`.
fn live(stacks: &[&Value]) -> (u64, u64) {
    stacks.iter().fold((0, 0), |(b, c), s| (b + s.live_bytes(), c + s.live_count()))
}

/// The three-deep frameless chain in the main binary, unwound with `flags`; returns the daemon.
fn frameless_main(flags: &[&str]) -> Daemon {
    let (daemon, mut fixture, stacks) = observe(FRAMELESS, &["main"], flags);
    let stack = assert_live(&stacks, "leak_three", MAIN_COUNT * MAIN_SIZE, MAIN_COUNT);
    assert_starts_with(stack, &["leak_three", "level_two", "level_one", "mode_main", "main"], &stacks);
    fixture.close_stdin_and_wait();
    daemon
}

#[test]
fn frameless_main_binary_names_all_three_callers() {
    let daemon = frameless_main(&DWARF);
    let status = daemon.status();
    assert_eq!(status["unwind"]["mode"], "dwarf", "{status:#}");
    assert_eq!(status["unwind"]["stack_copy_bytes"].as_u64(), Some(16 << 10), "{status:#}");
    assert!(status["daemon_counters"]["stacks_dwarf"].as_u64().is_some_and(|n| n > MAIN_COUNT), "{status:#}");
    assert_eq!(status["daemon_counters"]["stacks_fp"].as_u64(), Some(0), "{status:#}");
}

#[test]
fn kernel_tables_name_all_three_frameless_callers() {
    let daemon = frameless_main(&TABLES);
    let status = daemon.status();
    assert_eq!(status["unwind"]["mode"], "tables", "{status:#}");
    let kernel = &status["kernel_counters"];
    assert!(kernel["unwind_table_frames"].as_u64().is_some_and(|n| n > MAIN_COUNT * 5), "{status:#}");
    let daemon_counters = &status["daemon_counters"];
    assert!(daemon_counters["unwind_tables_binaries_loaded"].as_u64().is_some_and(|n| n >= 3), "{status:#}");
    assert!(daemon_counters["unwind_tables_bytes_used"].as_u64().is_some_and(|n| n > 0), "{status:#}");
    let tables = status["discovery"]["unwind_tables"].as_array().cloned().unwrap_or_default();
    assert!(tables.iter().any(|t| t["path"].as_str().is_some_and(|p| p.ends_with("/frameless"))), "{status:#}");
}

/// The three-deep frameless chain in a shared library, unwound with `flags`.
fn frameless_lib(flags: &[&str]) {
    let (_daemon, mut fixture, stacks) = observe(FRAMELESS, &["lib"], flags);
    let stack = assert_live(&stacks, "lib_leak", LIB_COUNT * LIB_SIZE, LIB_COUNT);
    assert_starts_with(stack, &["lib_leak", "lib_middle", "lib_outer", "mode_lib", "main"], &stacks);
    let module = stack.frames()[0]["module"].as_str().unwrap_or("");
    assert!(module.ends_with("/libframeless.so"), "leak in the library: {module}");
    fixture.close_stdin_and_wait();
}

#[test]
fn frameless_shared_library_names_all_three_callers() {
    frameless_lib(&DWARF);
}

#[test]
fn kernel_tables_name_the_frameless_shared_library_chain() {
    frameless_lib(&TABLES);
}

/// `strdup`, `strndup`, `asprintf` from frameless callers, unwound with `flags`.
fn c_wrappers(flags: &[&str]) {
    let (_daemon, mut fixture, stacks) = observe(FRAMELESS, &["wrappers"], flags);

    let dup = through_wrapper(&stacks, "dup_caller");
    assert_eq!(live(&dup), (DUP_COUNT * (DUP_LEN + 1), DUP_COUNT), "{}", dump(&stacks));
    for stack in &dup {
        let wrapper = names(stack);
        assert!(wrapper[0].contains("strdup") && !wrapper[0].contains("strndup"), "strdup, then: {wrapper:?}");
        assert_eq!(&wrapper[1..4], ["dup_caller", "mode_wrappers", "main"], "{}", dump(&stacks));
    }

    let ndup = through_wrapper(&stacks, "ndup_caller");
    assert_eq!(live(&ndup), (NDUP_COUNT * (NDUP_LEN + 1), NDUP_COUNT), "{}", dump(&stacks));
    for stack in &ndup {
        let wrapper = names(stack);
        assert!(wrapper[0].contains("strndup"), "strndup, then: {wrapper:?}");
        assert_eq!(&wrapper[1..4], ["ndup_caller", "mode_wrappers", "main"], "{}", dump(&stacks));
    }

    // asprintf allocates in vasprintf's internals (asprintf calls them): its caller comes after both. glibc
    // shrinks the buffer to the string (realloc), so each leak is the string's size.
    let asprintf: Vec<&Value> =
        stacks.iter().filter(|s| s.live_count() > 0 && names(s).contains(&"asprintf_caller")).collect();
    assert_eq!(live(&asprintf), (ASPRINTF_COUNT * ASPRINTF_BYTES, ASPRINTF_COUNT), "{}", dump(&stacks));
    for stack in asprintf {
        let names = names(stack);
        let caller = names.iter().position(|n| *n == "asprintf_caller").unwrap_or(0);
        assert!(caller >= 1 && names[caller - 1].contains("asprintf"), "asprintf, then its caller: {names:?}");
        assert_eq!(names[caller + 1], "mode_wrappers", "{names:?}");
    }
    fixture.close_stdin_and_wait();
}

#[test]
fn c_wrappers_name_their_frameless_caller() {
    c_wrappers(&DWARF);
}

#[test]
fn kernel_tables_name_the_frameless_callers_of_c_wrappers() {
    c_wrappers(&TABLES);
}

/// `operator new[]` tail-calls `operator new` in libstdc++ (a jump: its frame is gone from any stack), so both
/// leaks show `operator new` and then the caller.
fn cxx_new(path: &str, flags: &[&str]) {
    let (_daemon, mut fixture, stacks) = observe(path, &[], flags);
    for (caller, bytes, count) in
        [("new_caller", NEW_SIZE, NEW_COUNT), ("new_array_caller", NEW_ARRAY_LEN * 4, NEW_ARRAY_COUNT)]
    {
        let found = through_wrapper(&stacks, caller);
        assert_eq!(live(&found), (count * bytes, count), "{caller}; {}", dump(&stacks));
        for stack in found {
            let wrapper = names(stack);
            assert!(wrapper[0].starts_with("operator new"), "operator new, then {caller}: {wrapper:?}");
            assert_eq!(&wrapper[1..3], [caller, "main"], "{}", dump(&stacks));
        }
    }
    fixture.close_stdin_and_wait();
}

#[test]
fn cxx_new_names_its_frameless_caller() {
    cxx_new(FRAMELESS_CXX, &DWARF);
}

#[test]
fn kernel_tables_name_the_cxx_new_caller_without_frame_pointers() {
    cxx_new(FRAMELESS_CXX, &TABLES);
}

/// libstdc++'s `operator new` keeps no frame pointer: a frame-pointer walk skips its caller even in a
/// program built with them. The table walk does not.
#[test]
fn kernel_tables_name_the_cxx_new_caller_with_frame_pointers() {
    cxx_new(FRAMED_CXX, &TABLES);
}

/// A binary with frame pointers, watched at once by a daemon walking them, by one unwinding stack copies with
/// tables and by one walking the tables in the kernel: all report the same frames, addresses included, up to `main` (the walk stops in glibc's frameless start
/// code after it), so stacks are keyed alike whichever unwinder made them.
#[test]
fn frame_pointer_binary_gives_the_same_stacks_both_ways() {
    let fp: &[&str] = &["--mode", "full", "--unwind", "fp"];
    let (daemons, mut fixture, stacks) = observe_with(FRAMED, &["main"], &[fp, &DWARF, &TABLES]);
    let (by_fp, by_dwarf, by_tables) = (&stacks[0], &stacks[1], &stacks[2]);
    for stacks in [by_fp, by_dwarf, by_tables] {
        let stack = assert_live(stacks, "leak_three", MAIN_COUNT * MAIN_SIZE, MAIN_COUNT);
        assert_starts_with(stack, &["leak_three", "level_two", "level_one", "mode_main", "main"], stacks);
        assert_live(stacks, "fence", FENCE_SIZE, 1);
    }
    let upto_main = |stack: &Value| -> Vec<String> {
        let frames = stack.frames();
        let end = frames.iter().position(|f| f["function"] == "main").unwrap_or_else(|| panic!("no main: {stack:#}"));
        frames[..=end].iter().map(|f| format!("{} {}", f["addr"], f["function"])).collect()
    };
    for function in ["leak_three", "fence"] {
        let (a, b) = (only_by_fn0(by_fp, function), only_by_fn0(by_dwarf, function));
        assert_eq!(upto_main(a), upto_main(b), "{function}: fp\n{}\ndwarf\n{}", dump(by_fp), dump(by_dwarf));
        let c = only_by_fn0(by_tables, function);
        assert_eq!(upto_main(a), upto_main(c), "{function}: fp\n{}\ntables\n{}", dump(by_fp), dump(by_tables));
    }
    assert_eq!(daemons[0].status()["unwind"]["mode"], "fp");
    assert_eq!(daemons[1].status()["unwind"]["mode"], "dwarf");
    assert_eq!(daemons[2].status()["unwind"]["mode"], "tables");
    fixture.close_stdin_and_wait();
}

/// Full mode with default flags and no `--pid`, while a malloc/free loop runs on every CPU beside the fixture:
/// records carry frames, not stack copies, so the ring buffer keeps up and the fixture's leak is exact, its
/// chain whole.
#[test]
fn kernel_tables_lose_nothing_beside_a_malloc_loop_on_every_cpu() {
    let mut fixture = Fixture::spawn(FRAMELESS, &["main"]);
    fixture.wait_line("waiting");
    let daemon = Daemon::start_with_args(&TABLES);
    // The loops start once the daemon is up (its start-up scan is not what is measured).
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    let mut busy: Vec<Fixture> = (0..cpus).map(|_| Fixture::spawn(TIER0, &["busy"])).collect();
    for fixture in &mut busy {
        fixture.wait_line("ready");
    }
    // The loops have been traced at full speed before the fixture allocates (how long that takes depends on the
    // machine's load, not on the daemon).
    poll_until(Duration::from_mins(1), "100,000 allocations of the busy loops traced", || {
        let status = daemon.status();
        (status["kernel_counters"]["allocs"].as_u64().unwrap_or(0) > 100_000).then_some(())
    });
    fixture.send_line("go");
    fixture.wait_line("ready");
    let stacks = wait_for_fence(&daemon, fixture.pid());
    let stack = assert_live(&stacks, "leak_three", MAIN_COUNT * MAIN_SIZE, MAIN_COUNT);
    assert_starts_with(stack, &["leak_three", "level_two", "level_one", "mode_main", "main"], &stacks);
    let status = daemon.status();
    let allocs = status["kernel_counters"]["allocs"].as_u64().unwrap_or(0);
    let lost = status["kernel_counters"]["ringbuf_full_alloc"].as_u64().unwrap_or(0);
    println!("{cpus} busy loops: {allocs} allocations reported, {lost} lost to a full ring buffer");
    fixture.close_stdin_and_wait();
    drop(busy);
}

//! Reading `StackReport` JSON values.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::Daemon;

/// How long the daemon may take to report a fixture's fence.
pub const FENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Accessors of one `StackReport`.
pub trait StackExt {
    /// A numeric field; fails when missing.
    fn num(&self, field: &str) -> u64;
    /// The frames array; fails when missing.
    fn frames(&self) -> &[Value];
    /// `frames[i].function`, when there is such a frame with a name.
    fn function_at(&self, i: usize) -> Option<&str>;
    /// Whether some frame's function contains `needle`.
    fn has_function_containing(&self, needle: &str) -> bool;
    fn live_bytes(&self) -> u64 {
        self.num("live_bytes")
    }
    fn live_count(&self) -> u64 {
        self.num("live_count")
    }
    fn total_bytes(&self) -> u64 {
        self.num("total_bytes")
    }
    fn total_count(&self) -> u64 {
        self.num("total_count")
    }
}

impl StackExt for Value {
    fn num(&self, field: &str) -> u64 {
        self[field].as_u64().unwrap_or_else(|| panic!("stack has no unsigned {field:?}: {self:#}"))
    }

    fn frames(&self) -> &[Value] {
        self["frames"].as_array().unwrap_or_else(|| panic!("stack has no frames array: {self:#}"))
    }

    fn function_at(&self, i: usize) -> Option<&str> {
        self.frames().get(i).and_then(|frame| frame["function"].as_str())
    }

    fn has_function_containing(&self, needle: &str) -> bool {
        self.frames().iter().any(|frame| frame["function"].as_str().is_some_and(|f| f.contains(needle)))
    }
}

/// A readable dump of `stacks` for panic messages.
pub fn dump(stacks: &[Value]) -> String {
    let mut out = format!("{} stacks:\n", stacks.len());
    for stack in stacks {
        let _ = writeln!(
            out,
            "  pid {} {} live {} B / {} | total {} B / {} | truncated {}",
            stack["pid"],
            stack["comm"],
            stack["live_bytes"],
            stack["live_count"],
            stack["total_bytes"],
            stack["total_count"],
            stack["truncated"]
        );
        for frame in stack["frames"].as_array().map_or(&[][..], Vec::as_slice) {
            let _ = writeln!(
                out,
                "      {} {} {}:{} [{}]",
                frame["addr"].as_str().unwrap_or("?"),
                frame["function"].as_str().unwrap_or("?"),
                frame["file"].as_str().unwrap_or("?"),
                frame["line"],
                frame["module"].as_str().unwrap_or("?"),
            );
        }
    }
    out
}

/// Polls `top --pid PID` until some stack satisfies `found`, and returns that snapshot.
pub fn wait_for_stack(daemon: &Daemon, pid: u32, what: &str, found: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + FENCE_TIMEOUT;
    loop {
        let stacks = daemon.top(pid);
        if stacks.iter().any(&found) {
            return stacks;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no stack of pid {pid} matched {what} within {FENCE_TIMEOUT:?}; last answer: {}\ndaemon log:\n{}",
            dump(&stacks),
            daemon.log()
        );
        std::thread::sleep(crate::POLL_INTERVAL);
    }
}

/// Waits until the daemon reports the C leaker's fence (`frames[0]` is `fence`, one live allocation): every event
/// the fixture caused before it has been processed. Returns the snapshot that had the fence.
pub fn wait_for_fence(daemon: &Daemon, pid: u32) -> Vec<Value> {
    let stacks = wait_for_stack(daemon, pid, "the fence (frames[0] == fence)", |s| {
        s.function_at(0) == Some("fence") && s.live_count() >= 1
    });
    assert_live(&stacks, "fence", crate::expect::FENCE_SIZE, 1);
    stacks
}

/// Every stack whose `frames[0]` is `function`.
pub fn by_fn0<'a>(stacks: &'a [Value], function: &str) -> Vec<&'a Value> {
    stacks.iter().filter(|s| s.function_at(0) == Some(function)).collect()
}

/// The one stack whose `frames[0]` is `function`; fails when there are none or several.
pub fn only_by_fn0<'a>(stacks: &'a [Value], function: &str) -> &'a Value {
    let found = by_fn0(stacks, function);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one stack with frames[0] == {function:?}, found {}; {}",
        found.len(),
        dump(stacks)
    );
    found[0]
}

/// Asserts the one stack of `function` has exactly `bytes` live in `count` allocations, and returns it.
pub fn assert_live<'a>(stacks: &'a [Value], function: &str, bytes: u64, count: u64) -> &'a Value {
    let stack = only_by_fn0(stacks, function);
    assert_eq!(
        (stack.live_bytes(), stack.live_count()),
        (bytes, count),
        "(live_bytes, live_count) of {function}; {}",
        dump(stacks)
    );
    stack
}

/// Asserts no stack whose `frames[0]` is `function` has live allocations.
pub fn assert_nothing_live(stacks: &[Value], function: &str) {
    for stack in by_fn0(stacks, function) {
        assert_eq!(
            (stack.live_bytes(), stack.live_count()),
            (0, 0),
            "{function} should have nothing live; {}",
            dump(stacks)
        );
    }
}

/// Asserts the live bytes of all the stacks together (one pid's) are exactly `expected`: nothing else is live.
pub fn assert_live_total(stacks: &[Value], expected: u64) {
    let total: u64 = stacks.iter().map(StackExt::live_bytes).sum();
    assert_eq!(total, expected, "live bytes over all stacks of the fixture; {}", dump(stacks));
}

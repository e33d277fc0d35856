//! The built `leakprobe` binary as a user first meets it, without a daemon or root.
//!
//! Being an integration test of this package, this also makes the test build (`cargo nextest run --workspace
//! --features leakprobe/bench`) build `target/debug/leakprobe`, the daemon the tests in `tests/` run, with the
//! same dependency features as everything else: a separate `cargo build -p leakprobe` resolves features for
//! this package alone and rebuilt part of the dependencies (about six minutes of a cold CI run).

use std::process::Command;

fn leakprobe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_leakprobe")).args(args).output().expect("running the leakprobe binary")
}

#[test]
fn version_and_help_answer_without_a_daemon() {
    let version = leakprobe(&["--version"]);
    assert!(version.status.success());
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), concat!("leakprobe ", env!("CARGO_PKG_VERSION")));
    let help = leakprobe(&["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for command in ["run", "top", "processes", "status", "export", "oom", "trace"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(command)), "{command} missing from --help:\n{help}");
    }
}

#[test]
fn a_missing_daemon_is_a_clear_error() {
    let out = leakprobe(&["status", "--socket", "/nonexistent/leakprobe.sock"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the daemon at /nonexistent/leakprobe.sock") && stderr.contains("leakprobe run"),
        "{stderr}"
    );
}

#[test]
fn a_bad_option_value_names_the_choices() {
    let out = leakprobe(&["top", "--by", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value 'nonsense' for '--by <BY>'") && stderr.contains("growth"), "{stderr}");
}

//! Startup and client errors: one clear line on stderr and a non-zero exit.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

use leakprobe_tests::{NOMALLOC_SO, daemon_bin, describe, run_with_timeout};

/// A daemon that fails to start must fail well within this.
const FAIL_TIMEOUT: Duration = Duration::from_mins(1);

fn leakprobe(args: &[&str]) -> Output {
    let mut cmd = Command::new(daemon_bin());
    cmd.args(args).env_remove("RUST_LOG");
    if args.first() == Some(&"run") {
        // A port of its own: the default one may be held by a daemon of a test running in parallel.
        cmd.args(["--metrics-addr", "127.0.0.1:0"]);
    }
    run_with_timeout(&mut cmd, FAIL_TIMEOUT)
}

/// Asserts a failed run: non-zero exit and exactly one non-empty line on stderr, which it returns.
fn one_line_failure(out: &Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} should fail\n{}", describe(out));
    assert!(out.status.code().is_some(), "{what} died from a signal instead of exiting\n{}", describe(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what} should print exactly one line on stderr\n{}", describe(out));
    // The cause chain is joined by ": "; each cause should be said once.
    let causes: Vec<&str> = lines[0].split(": ").collect();
    for (i, cause) in causes.iter().enumerate() {
        assert!(!causes[..i].contains(cause), "{what}: the error repeats {cause:?}: {:?}", lines[0]);
    }
    lines[0].to_owned()
}

#[test]
fn missing_libc_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("s.sock");
    let missing = "/nonexistent/libc.so.6";
    let out = leakprobe(&["run", "--socket", socket.to_str().expect("utf-8"), "--libc", missing]);
    let line = one_line_failure(&out, "run --libc /nonexistent/libc.so.6");
    assert!(line.contains(missing), "the error does not name {missing}: {line:?}");
    assert!(!socket.exists(), "a daemon that failed to start left its socket behind");
}

#[test]
fn libc_without_malloc_is_refused_naming_malloc() {
    let nm = Command::new("nm").args(["-D", NOMALLOC_SO]).output().expect("run nm -D");
    let symbols = String::from_utf8_lossy(&nm.stdout);
    assert!(nm.status.success() && !symbols.contains("malloc"), "{NOMALLOC_SO} must define no malloc:\n{symbols}");

    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("s.sock");
    let out = leakprobe(&["run", "--socket", socket.to_str().expect("utf-8"), "--libc", NOMALLOC_SO]);
    let line = one_line_failure(&out, "run --libc <a .so without malloc>");
    assert!(line.contains("malloc"), "the error does not name the missing symbol malloc: {line:?}");
    assert!(!socket.exists(), "a daemon that failed to start left its socket behind");
}

#[test]
fn client_without_daemon_fails_clearly() {
    let socket = "/nonexistent.sock";
    for args in
        [&["top", "--socket", socket][..], &["top", "--socket", socket, "--json"], &["status", "--socket", socket]]
    {
        let out = leakprobe(args);
        let line = one_line_failure(&out, &args.join(" "));
        assert!(line.contains(socket), "`{}` does not name the socket it could not reach: {line:?}", args.join(" "));
        assert!(out.stdout.is_empty(), "`{}` printed on stdout although it failed\n{}", args.join(" "), describe(&out));
    }
}

#[test]
fn run_as_non_root_without_capabilities_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Writable for nobody, so that the only thing missing is privileges.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod the temp dir");
    let socket = dir.path().join("s.sock");
    let bin = daemon_bin();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(["run", "--socket", socket.to_str().expect("utf-8"), "--metrics-addr", "127.0.0.1:0"])
        .env_remove("RUST_LOG");
    let out = run_with_timeout(&mut cmd, FAIL_TIMEOUT);
    let line = one_line_failure(&out, "run as nobody");
    assert!(
        line.starts_with("leakprobe: missing CAP_SYS_ADMIN (")
            && line.contains("CAP_SYS_PTRACE (")
            && line.contains("CAP_DAC_READ_SEARCH (")
            && line.contains("run as root")
            && line.contains("AmbientCapabilities=CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH"),
        "the error does not name the missing capabilities and how to grant them: {line:?}"
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(!socket.exists(), "a daemon that failed to start left its socket behind");
}

//! The tasks that run after setup.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use crate::setup::{EBPF_TOOLCHAIN, ToolEnv, check};

/// `cargo` in the workspace root with the tools on `PATH`.
pub fn cargo(root: &Path, env: &ToolEnv) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root).env("PATH", &env.path);
    cmd
}

pub fn build(root: &Path, env: &ToolEnv) -> Result<()> {
    check(cargo(root, env).args(["build", "--release", "--package", "leakprobe"]))
}

/// The release daemon with the hidden benchmark subcommands (`bench-ingest`, `bench-unwind`).
pub fn build_bench(root: &Path, env: &ToolEnv) -> Result<()> {
    check(cargo(root, env).args(["build", "--release", "--package", "leakprobe", "--features", "bench"]))
}

pub fn run_daemon(root: &Path, args: &[String]) -> Result<()> {
    let binary = root.join("target").join("release").join("leakprobe");
    check(Command::new(binary).arg("run").args(args))
}

pub fn run(root: &Path, env: &ToolEnv, args: &[String]) -> Result<()> {
    build(root, env)?;
    run_daemon(root, args)
}

/// The test build's features: the hidden benchmark subcommands, for the ingest test (`leakprobe bench-ingest`).
const TEST_FEATURES: [&str; 2] = ["--features", "leakprobe/bench"];

/// Builds what the tests run, in one invocation that is exactly nextest's own build (so that nextest then builds
/// nothing): the test binaries, and the daemon `target/debug/leakprobe` (the dev profile, optimized), which cargo
/// builds for the leakprobe package's integration tests (`leakprobe/tests/binary.rs`). Returns the daemon's path.
pub fn build_test_daemon(root: &Path, env: &ToolEnv) -> Result<PathBuf> {
    check(cargo(root, env).args(["test", "--no-run", "--workspace"]).args(TEST_FEATURES))?;
    Ok(test_daemon(root))
}

/// The daemon [`build_test_daemon`] builds.
pub fn test_daemon(root: &Path) -> PathBuf {
    root.join("target").join("debug").join("leakprobe")
}

pub fn test(root: &Path, env: &ToolEnv, args: &[String]) -> Result<()> {
    build_test_daemon(root, env)?;
    // nextest runs every test in its own process, fails when no test ran, and prints one summary line.
    check(cargo(root, env).args(["nextest", "run", "--workspace", "--no-fail-fast"]).args(TEST_FEATURES).args(args))
}

pub fn lint(root: &Path, env: &ToolEnv) -> Result<()> {
    check(cargo(root, env).args(["fmt", "--all", "--check"]))?;
    check(cargo(root, env).args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    // The eBPF crate as the kernel will see it: its own target, core built from source.
    check(
        cargo(root, env)
            .arg(format!("+{EBPF_TOOLCHAIN}"))
            .args(["clippy", "--package", "leakprobe-ebpf", "--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .args(["--", "-D", "warnings"]),
    )
}

/// Rewrites (or, with `check`, checks) `docs/cli.md`: the leakprobe crate's `cli_reference_is_current` test
/// generates it from the clap definitions, and writes it when `LEAKPROBE_WRITE_DOCS` is set.
pub fn docs(root: &Path, env: &ToolEnv, check_only: bool) -> Result<()> {
    let mut cmd = cargo(root, env);
    cmd.args(["test", "--package", "leakprobe", "--lib", "--", "--exact", "cli::reference::cli_reference_is_current"]);
    if !check_only {
        cmd.env("LEAKPROBE_WRITE_DOCS", "1");
    }
    check(&mut cmd)
}

//! Developer tasks: `cargo xtask setup|build|run|test|lint|bench|fuzz|soak|docs`.
//!
//! Every task that builds anything first runs `setup`, so each of them works on a fresh machine.

mod bench;
mod dist;
mod fuzz;
mod kernels;
mod setup;
mod ship;
mod soak;
mod tasks;

use std::{path::PathBuf, time::Instant};

use anyhow::Result;
use clap::{Parser, Subcommand};

/// leakprobe's developer tasks.
#[derive(Parser)]
#[command(about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the eBPF toolchain (rust-src, bpf-linker against the nightly's own LLVM), cargo-nextest,
    /// a C compiler, and mount the trace filesystems. Idempotent.
    Setup,
    /// Set up, then build the daemon (with its embedded eBPF object) in release mode.
    Build,
    /// Set up, build, and run the daemon with its embedded defaults (needs root).
    Run {
        /// Extra arguments passed to `leakprobe run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run every test: unit tests and the integration tests against the real eBPF programs
    /// (needs root), then every fuzz target for a bounded time, then the kernel matrix (`kernels`,
    /// with the daemon the tests ran), then the release artifacts as operators run them: `dist` and its checks,
    /// the .deb under systemd, the image under podman. With a test filter, only nextest.
    Test {
        /// Seconds to fuzz each target after the tests; 0 skips fuzzing.
        #[arg(long, default_value_t = 15)]
        fuzz_seconds: u64,
        /// Skip the kernel matrix (two guests under qemu, side by side: about 5 minutes under software
        /// emulation on a quiet 2-core host).
        #[arg(long)]
        no_kernels: bool,
        /// Skip the release artifacts (the static build, the .deb under systemd, the image under podman: about
        /// 7 minutes on a fresh clone, see docs/testing.md).
        #[arg(long)]
        no_release_artifacts: bool,
        /// Extra arguments passed to `cargo nextest run` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up (plus cargo-deb), build the static (musl) release binary once and make from it, in `target/dist/`:
    /// the binary, a .deb (unit, sysusers, tmpfiles, default configuration) and an OCI image archive built from
    /// scratch with buildah, named as `deploy/kubernetes/daemonset.yaml` names it; then check them.
    Dist {
        /// Then run them as `cargo xtask test` does: the .deb under systemd (`systemd-nspawn --boot`), the image
        /// under podman (needs root).
        #[arg(long)]
        run: bool,
    },
    /// Set up, build the daemon as `test` builds it and boot it on Debian 12's 6.1 and newest 6.12 kernels under
    /// qemu (virtme-ng): a smoke suite in each; prints each kernel's version and result (needs root).
    Kernels {
        /// Only judge again what the last run's guests wrote in `target/kernels/out-*`.
        #[arg(long)]
        judge_only: bool,
        /// Boot the static (musl) release binary of `dist` instead of the test build.
        #[arg(long)]
        static_binary: bool,
    },
    /// Set up, then check formatting and run clippy on the workspace and on the eBPF crate.
    Lint,
    /// Set up (plus bpftrace and heaptrack from Debian packages), build, then measure the cost per
    /// malloc+free pair of leakprobe full and sampled, a bpftrace memleak equivalent and heaptrack over
    /// nothing attached, the daemon's ingest rate, CPU and memory (needs root; takes a few minutes).
    Bench(bench::BenchArgs),
    /// Set up (plus cargo-fuzz), build the fuzz targets of `fuzz/` and run each for a bounded time: the socket
    /// API, configuration files, ring-buffer records and persisted OOM reports. Prints runs and execs/s.
    Fuzz(fuzz::FuzzArgs),
    /// Set up, build, then run a release daemon for `--minutes` against leakers, churners and thousands of
    /// short-lived processes; fail if its RSS or open descriptors trend upward or exited processes stay listed
    /// (needs root).
    Soak(soak::SoakArgs),
    /// Write the references generated from the code: `docs/cli.md` from the clap definitions. With `--check`,
    /// only fail when the checked-in file is stale.
    Docs {
        /// Check instead of writing.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    let env = setup::setup()?;
    match cli.command {
        Command::Setup => Ok(()),
        Command::Build => tasks::build(&root, &env),
        Command::Run { args } => tasks::run(&root, &env, &args),
        Command::Test { fuzz_seconds, no_kernels, no_release_artifacts, args } => {
            let started = Instant::now();
            let tests = tasks::test(&root, &env, &args);
            timed("build and nextest", started);
            if !args.is_empty() {
                return tests;
            }
            if fuzz_seconds > 0 {
                let started = Instant::now();
                fuzz::fuzz(&root, &env, &fuzz::FuzzArgs { seconds: fuzz_seconds, target: None })?;
                timed("fuzzing", started);
            }
            tests?;
            if !no_kernels {
                let started = Instant::now();
                kernels::kernels(&root, &tasks::test_daemon(&root))?;
                timed("the kernel matrix", started);
            }
            if no_release_artifacts { Ok(()) } else { ship_tests(&root, &env) }
        }
        Command::Dist { run } => {
            setup::ensure_cargo_deb()?;
            let dist = dist::dist(&root, &env)?;
            if run {
                ship::systemd_run(&root, &dist)?;
                ship::podman_run(&root, &dist)?;
            }
            Ok(())
        }
        Command::Kernels { judge_only: true, .. } => kernels::judge_again(&root),
        Command::Kernels { judge_only: false, static_binary: true } => {
            kernels::kernels(&root, &dist::static_binary(&root, &env)?)
        }
        Command::Kernels { judge_only: false, static_binary: false } => {
            kernels::kernels(&root, &tasks::build_test_daemon(&root, &env)?)
        }
        Command::Lint => tasks::lint(&root, &env),
        Command::Bench(args) => bench::bench(&root, &env, &args),
        Command::Fuzz(args) => fuzz::fuzz(&root, &env, &args),
        Command::Soak(args) => soak::soak(&root, &env, &args),
        Command::Docs { check } => tasks::docs(&root, &env, check),
    }
}

/// Prints how long a step of `cargo xtask test` took.
fn timed(what: &str, started: Instant) {
    eprintln!("test: {what} took {:.0?}", started.elapsed());
}

/// The release steps of `cargo xtask test`: one static release build for everything, each step timed.
fn ship_tests(root: &std::path::Path, env: &setup::ToolEnv) -> Result<()> {
    let started = Instant::now();
    setup::ensure_cargo_deb()?;
    timed("cargo-deb (installed once)", started);
    let started = Instant::now();
    let dist = dist::dist(root, env)?;
    timed("dist (static release build, .deb, image)", started);
    let started = Instant::now();
    ship::systemd_run(root, &dist)?;
    timed("the .deb under systemd", started);
    let started = Instant::now();
    ship::podman_run(root, &dist)?;
    timed("the image under podman", started);
    Ok(())
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

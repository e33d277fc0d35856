//! `cargo xtask setup`: everything the build and the tests need, from a fresh machine, idempotently.
//!
//! The eBPF crate is compiled by the nightly toolchain (for `-Z build-std=core`) and linked by
//! bpf-linker, which must load the *same* LLVM as that nightly: bitcode from LLVM N does not link with
//! LLVM M. So bpf-linker is built against the nightly's own `libLLVM.so`, with the `llvm-N` feature
//! read from `rustc +nightly -vV`, and installed once per machine under `$CARGO_HOME/leakprobe-tools` (like the
//! cargo subcommands setup installs), so that a fresh clone does not build it again; a stamp there records the
//! version and the exact libLLVM it was built against, and a new nightly rebuilds it.

use std::{
    env,
    ffi::OsString,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// The toolchain that compiles the eBPF crate (what aya-build runs through `rustup run`).
pub const EBPF_TOOLCHAIN: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// What the other tasks need from setup.
pub struct ToolEnv {
    /// `PATH` with the installed tools first.
    pub path: OsString,
}

pub fn setup() -> Result<ToolEnv> {
    let tools = machine_tools()?;
    let bin = tools.join("bin");
    mount_trace_filesystems();
    ensure_rust_src()?;
    ensure_bpf_linker(&tools)?;
    ensure_c_compiler()?;
    ensure_allocator_packages()?;
    ensure_packages(&FAULT_PACKAGES, "the fault tests")?;
    ensure_packages(&RUNTIME_PACKAGES, "the language runtime tests")?;
    ensure_packages(&SHIP_PACKAGES, "the release artifacts and their tests")?;
    ensure_musl_target()?;
    ensure_virtme_ng()?;
    ensure_nextest()?;
    ensure_promtool()?;
    let mut paths = vec![bin];
    paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    Ok(ToolEnv { path: env::join_paths(paths).context("PATH")? })
}

/// Where setup installs the tools it builds: `$CARGO_HOME/leakprobe-tools`, one per machine.
fn machine_tools() -> Result<PathBuf> {
    let cargo_home = match env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => PathBuf::from(env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?).join(".cargo"),
    };
    Ok(cargo_home.join("leakprobe-tools"))
}

pub fn step(msg: &str) {
    eprintln!("setup: {msg}");
}

/// Runs a command, failing with its command line when it fails.
pub fn check(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("failed to start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command and returns its standard output.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("failed to start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8(out.stdout).with_context(|| format!("{cmd:?} printed non-UTF-8"))
}

fn is_mounted(dir: &str) -> bool {
    fs::read_to_string("/proc/self/mounts")
        .is_ok_and(|mounts| mounts.lines().any(|line| line.split_whitespace().nth(1) == Some(dir)))
}

/// Mounts tracefs and debugfs where missing. Needs root; without it, says so and goes on (building does
/// not need them, only running the daemon and the tests does).
fn mount_trace_filesystems() {
    for (fstype, dir) in [("tracefs", "/sys/kernel/tracing"), ("debugfs", "/sys/kernel/debug")] {
        if is_mounted(dir) {
            continue;
        }
        step(&format!("mounting {fstype} on {dir}"));
        let result = Command::new("mount").args(["-t", fstype, "nodev", dir]).status();
        if !result.is_ok_and(|s| s.success()) {
            step(&format!("warning: could not mount {fstype} on {dir} (not root?); the daemon needs it"));
        }
    }
}

fn ensure_rust_src() -> Result<()> {
    let installed =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", EBPF_TOOLCHAIN]))
            .with_context(|| format!("the `{EBPF_TOOLCHAIN}` toolchain is needed to build the eBPF programs"))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        step(&format!("adding rust-src to {EBPF_TOOLCHAIN}"));
        check(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", EBPF_TOOLCHAIN]))?;
    }
    Ok(())
}

/// The LLVM major version and the shared LLVM library of the eBPF toolchain.
fn toolchain_llvm() -> Result<(u32, PathBuf)> {
    let version = output(Command::new("rustc").arg(format!("+{EBPF_TOOLCHAIN}")).arg("-vV"))?;
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc -vV` printed no LLVM version")?;
    let major: u32 = llvm
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("unparsable LLVM version {llvm:?}"))?;
    let sysroot = output(Command::new("rustc").arg(format!("+{EBPF_TOOLCHAIN}")).args(["--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    // The real library is the regular file `libLLVM.so.<major>.<minor>-rust-...` (its SONAME); the
    // `libLLVM-<major>-rust-...so` beside it is a linker script.
    let mut found = None;
    for entry in fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("libLLVM.so.{major}.")) {
            found = Some(entry.path());
        }
    }
    let path = found.with_context(|| format!("no libLLVM.so.{major}.* in {}", lib.display()))?;
    Ok((major, path))
}

fn ensure_bpf_linker(tools: &Path) -> Result<()> {
    let (major, libllvm) = toolchain_llvm()?;
    let stamp_path = tools.join("bpf-linker.stamp");
    let stamp = format!("bpf-linker {BPF_LINKER_VERSION} llvm-{major} {}\n", libllvm.display());
    let binary = tools.join("bin").join("bpf-linker");
    if binary.exists() && fs::read_to_string(&stamp_path).is_ok_and(|s| s == stamp) {
        return Ok(());
    }
    // A prefix whose lib/ holds the nightly's libLLVM under the two names the build and the loader look for:
    // `libLLVM.so` for `-lLLVM`, and its SONAME for the RUNPATH that bpf-linker's build script records.
    let prefix = tools.join("llvm");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    let soname = libllvm.file_name().context("libLLVM path has no file name")?;
    for name in [OsString::from("libLLVM.so"), soname.to_os_string()] {
        let link = prefix_lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {} to {}", link.display(), libllvm.display()))?;
    }
    step(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against {} (LLVM {major}); this takes about two minutes",
        libllvm.display()
    ));
    check(
        Command::new("cargo")
            .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked", "--no-default-features"])
            .args(["--features", &format!("llvm-{major}")])
            .arg("--root")
            .arg(tools)
            .env("LLVM_PREFIX", &prefix),
    )?;
    fs::write(&stamp_path, stamp)?;
    Ok(())
}

fn ensure_c_compiler() -> Result<()> {
    let runs = |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if runs("gcc") && runs("g++") {
        return Ok(());
    }
    step("installing gcc and g++ (the test fixtures are C and C++ programs)");
    check(Command::new("apt-get").arg("update"))?;
    check(Command::new("apt-get").args(["install", "-y", "--no-install-recommends", "gcc", "g++", "libc6-dev"]))
}

/// What the allocator fixtures link against or run in (tests/build.rs, tests/tests/allocators.rs): Debian's
/// jemalloc, tcmalloc (gperftools) and mimalloc development packages, musl-gcc for a statically linked fixture,
/// and `unshare` (util-linux) for the container fixture. Each is checked by a file it installs.
const ALLOCATOR_PACKAGES: [(&str, &str); 5] = [
    ("libjemalloc-dev", "/usr/lib/x86_64-linux-gnu/libjemalloc.so"),
    ("libgoogle-perftools-dev", "/usr/lib/x86_64-linux-gnu/libtcmalloc.so"),
    ("libmimalloc-dev", "/usr/lib/x86_64-linux-gnu/libmimalloc.so"),
    ("musl-tools", "/usr/bin/musl-gcc"),
    ("util-linux", "/usr/bin/unshare"),
];

/// What the fault tests (tests/tests/faults.rs) use: `bpftool` lists the kernel's eBPF links, programs and perf
/// attachments after the daemon stopped.
const FAULT_PACKAGES: [(&str, &str); 1] = [("bpftool", "/usr/sbin/bpftool")];

/// What the language runtime tests (tests/tests/languages.rs) build their Go fixture with: Debian's Go toolchain.
/// Python, Node.js and Java come with the machine's image (see docs/languages.md).
const RUNTIME_PACKAGES: [(&str, &str); 1] = [("golang-go", "/usr/bin/go")];

/// What `cargo xtask dist` and the tests of its artifacts use (xtask/src/dist.rs, ship.rs, kernels.rs): buildah
/// makes the image from scratch and podman runs it (with runc); busybox-static is the image's `chown` and the kernel matrix
/// guests' shell; setcap gives the image's binary its file capabilities; debootstrap and systemd-nspawn make and
/// boot the Debian 12 root the .deb is installed into; qemu and kmod boot the matrix's kernels (virtme-ng).
const SHIP_PACKAGES: [(&str, &str); 9] = [
    ("buildah", "/usr/bin/buildah"),
    ("podman", "/usr/bin/podman"),
    ("runc", "/usr/sbin/runc"),
    ("busybox-static", "/bin/busybox"),
    ("libcap2-bin", "/usr/sbin/setcap"),
    ("debootstrap", "/usr/sbin/debootstrap"),
    ("systemd-container", "/usr/bin/systemd-nspawn"),
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ("kmod", "/usr/bin/kmod"),
];

/// The static release binary's target (`cargo xtask dist`).
fn ensure_musl_target() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == crate::dist::MUSL_TARGET) {
        return Ok(());
    }
    step(&format!("adding the {} target (the static release binary)", crate::dist::MUSL_TARGET));
    check(Command::new("rustup").args(["target", "add", crate::dist::MUSL_TARGET]))
}

/// `virtme-ng` (`PyPI`) boots the kernel matrix's kernels (`cargo xtask kernels`).
fn ensure_virtme_ng() -> Result<()> {
    if Command::new("vng").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    step("installing virtme-ng (pip; the kernel matrix boots its kernels with it)");
    check(Command::new("python3").args(["-m", "pip", "install", "--quiet", "virtme-ng"]))
}

/// Installs cargo-deb (`cargo xtask dist` builds the .deb with it).
pub fn ensure_cargo_deb() -> Result<()> {
    ensure_cargo_subcommand("deb", "cargo-deb")
}

/// Installs the crate `package` with `cargo install --locked` unless `cargo SUBCOMMAND --version` runs.
fn ensure_cargo_subcommand(subcommand: &str, package: &str) -> Result<()> {
    if Command::new("cargo").args([subcommand, "--version"]).output().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    step(&format!("installing {package}"));
    check(Command::new("cargo").args(["install", package, "--locked"]))
}

fn ensure_allocator_packages() -> Result<()> {
    ensure_packages(&ALLOCATOR_PACKAGES, "the allocator test fixtures")
}

/// Installs the Debian packages of `packages` whose file is missing.
fn ensure_packages(packages: &[(&str, &str)], why: &str) -> Result<()> {
    let missing: Vec<&str> =
        packages.iter().filter(|(_, file)| !Path::new(file).exists()).map(|(package, _)| *package).collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!("installing {} ({why})", missing.join(" ")));
    let install = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "--no-install-recommends"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    if !install().status().is_ok_and(|s| s.success()) {
        check(Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"))?;
        check(&mut install())?;
    }
    Ok(())
}

/// The peers `cargo xtask bench` compares against, from Debian packages. Only the bench calls this, so
/// `cargo xtask test` never waits for them.
pub fn ensure_bench_peers() -> Result<()> {
    let runs = |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    let missing: Vec<&str> = ["bpftrace", "heaptrack"].into_iter().filter(|tool| !runs(tool)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!("installing {} (the bench's peers)", missing.join(" and ")));
    let install = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "--no-install-recommends"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive");
        // The bench's report is its standard output: apt's progress goes to standard error.
        cmd.stdout(std::io::stderr());
        cmd
    };
    if !install().status().is_ok_and(|s| s.success()) {
        check(Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"))?;
        check(&mut install())?;
    }
    Ok(())
}

fn ensure_nextest() -> Result<()> {
    ensure_cargo_subcommand("nextest", "cargo-nextest")
}

/// Installs cargo-fuzz (the fuzz targets are built and run with it; it uses the nightly toolchain that the
/// eBPF build already installs).
pub fn ensure_cargo_fuzz() -> Result<()> {
    ensure_cargo_subcommand("fuzz", "cargo-fuzz")
}

/// The Prometheus server must not start: only its `promtool` is wanted. `invoke-rc.d` asks this script
/// whether a package may start its service; exit status 101 means "no".
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Installs `promtool` (the tests check the metrics output and the alerting rules with it). Debian ships it
/// only in the `prometheus` package, whose post-install script would start the server: a temporary
/// `policy-rc.d` forbids that (on a machine without systemd, `invoke-rc.d` would run the init script).
fn ensure_promtool() -> Result<()> {
    if Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    step("installing promtool (Debian package `prometheus`; its service is not started)");
    let ours = !Path::new(POLICY_RC_D).exists();
    if ours {
        fs::write(POLICY_RC_D, "#!/bin/sh\n# Written by `cargo xtask setup` while it installs prometheus.\nexit 101\n")
            .with_context(|| format!("writing {POLICY_RC_D}"))?;
        fs::set_permissions(POLICY_RC_D, fs::Permissions::from_mode(0o755))?;
    }
    let installed = check(Command::new("apt-get").arg("update")).and_then(|()| {
        check(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "prometheus"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    });
    if ours {
        let _ = fs::remove_file(POLICY_RC_D);
    }
    installed?;
    if Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success()) {
        Ok(())
    } else {
        bail!("the `prometheus` package is installed but `promtool --version` does not run")
    }
}

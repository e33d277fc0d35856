//! Builds the eBPF object (`leakprobe-ebpf`, for `bpfel-unknown-none`, with the nightly toolchain and
//! bpf-linker) and leaves it in `OUT_DIR` for `include_bytes_aligned!`.

use std::{env, path::PathBuf};

use anyhow::{Context as _, bail};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest.parent().context("the crate sits in the workspace")?.to_path_buf();
    // `cargo xtask setup` installs bpf-linker in cargo's home, once per machine; put it first on PATH for the
    // nested eBPF build.
    let cargo_home = match env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => PathBuf::from(env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?).join(".cargo"),
    };
    println!("cargo:rerun-if-env-changed=CARGO_HOME");
    let tools = cargo_home.join("leakprobe-tools").join("bin");
    let mut paths = vec![tools];
    paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    if !paths.iter().any(|dir| dir.join("bpf-linker").exists()) {
        bail!("bpf-linker not found: run `cargo xtask setup` (it builds bpf-linker against the nightly's LLVM)");
    }
    // SAFETY: the build script is single-threaded; the child cargo that aya-build spawns inherits PATH.
    unsafe { env::set_var("PATH", env::join_paths(paths)?) };
    // aya-build echoes every line the nested cargo writes to stderr as `cargo:warning=`, so its progress
    // (`Compiling core ...`, `Finished ...`) would read as dozens of warnings. Quiet, the nested cargo prints
    // none; the compiler's own warnings and errors reach aya-build as JSON messages and stay visible. Progress
    // is cargo's own bar (`leakprobe(build)`). Not when the outer build asked for verbose output: cargo refuses
    // both at once.
    if env::var_os("CARGO_TERM_VERBOSE").is_none() {
        // SAFETY: as above.
        unsafe { env::set_var("CARGO_TERM_QUIET", "true") };
    }
    let ebpf_dir = workspace.join("leakprobe-ebpf");
    let root_dir = ebpf_dir.to_str().context("non-UTF-8 workspace path")?;
    let package = Package { name: "leakprobe-ebpf", root_dir, ..Package::default() };
    aya_build::build_ebpf([package], Toolchain::default())
}

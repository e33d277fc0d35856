//! Empty library target: the eBPF programs live in the `leakprobe` binary target (`src/main.rs`), built for
//! `bpfel-unknown-none` by the daemon's build script. This target lets the daemon depend on the crate so
//! cargo rebuilds the object when it changes.
#![no_std]

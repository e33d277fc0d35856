//! Rust fixture: leaks through the Rust global allocator (`System`, i.e. libc malloc).
//!
//! `rust_leak_site` leaks 12 boxed slices of 2048 bytes; `rust_fence` then leaks 4321 bytes the same way, prints
//! `ready` and the process waits for EOF on stdin. The numbers are mirrored in `leakprobe_tests::expect`. With the
//! argument `wait`, it first prints `waiting` and waits for a line on stdin (so a daemon can start meanwhile).

use std::hint::black_box;
use std::io::{Read, Write};

const LEAK_COUNT: usize = 12;
const LEAK_SIZE: usize = 2048;
const FENCE_SIZE: usize = 4321;

#[inline(never)]
fn rust_leak_site() {
    for _ in 0..black_box(LEAK_COUNT) {
        black_box(Box::leak(black_box(vec![1u8; black_box(LEAK_SIZE)]).into_boxed_slice()));
    }
}

#[inline(never)]
fn rust_fence() {
    black_box(Box::leak(black_box(vec![1u8; black_box(FENCE_SIZE)]).into_boxed_slice()));
}

fn main() {
    let mut stdin = std::io::stdin().lock();
    if std::env::args().nth(1).as_deref() == Some("wait") {
        let mut out = std::io::stdout().lock();
        out.write_all(b"waiting\n").expect("write waiting");
        out.flush().expect("flush waiting");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdin, &mut line).expect("read the go line");
    }
    rust_leak_site();
    rust_fence();
    let mut out = std::io::stdout().lock();
    out.write_all(b"ready\n").expect("write ready");
    out.flush().expect("flush ready");
    drop(out);
    let mut buf = [0u8; 256];
    while stdin.read(&mut buf).expect("read stdin") > 0 {}
}

//! Fuzz target: see [`leakprobe::fuzz::ring_records`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakprobe::fuzz::ring_records(data));

//! Fuzz target: see [`leakprobe::fuzz::config_file`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakprobe::fuzz::config_file(data));

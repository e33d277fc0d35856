//! Fuzz target: see [`leakprobe::fuzz::api_request`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakprobe::fuzz::api_request(data));

//! Fuzz target: see [`leakprobe::fuzz::oom_report_file`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leakprobe::fuzz::oom_report_file(data));

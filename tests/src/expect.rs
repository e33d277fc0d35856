//! The numbers the fixtures allocate. They mirror the `#define`s of `tests/fixtures/leaker.c` and the constants of
//! `tests/src/bin/rust-leaker.rs`; every leak size and count is distinct so stacks cannot be confused.

/// Bytes leaked by `fence()` (C) and `rust_fence()` (Rust).
pub const FENCE_SIZE: u64 = 4321;

// basic
pub const ALPHA_COUNT: u64 = 10;
pub const ALPHA_SIZE: u64 = 1000;
pub const BETA_COUNT: u64 = 5;
pub const BETA_SIZE: u64 = 4096;
pub const CHURN_COUNT: u64 = 1000;
pub const CHURN_SIZE: u64 = 48;
pub const CACHE_SLOTS: u64 = 8;
pub const CACHE_ROUNDS: u64 = 500;
pub const CACHE_SIZE: u64 = 128;

// calloc
pub const CALLOC_COUNT: u64 = 8;
pub const CALLOC_NMEMB: u64 = 16;
pub const CALLOC_SIZE: u64 = 100;

// realloc
/// Every chain is `realloc(NULL, 100)` then grown to each next size, all from one `realloc` call site.
pub const CHAIN_SIZES: [u64; 5] = [100, 200, 400, 800, 1600];
pub const CHAINS: u64 = 3;
pub const REALLOC_ZERO_COUNT: u64 = 4;
pub const REALLOC_ZERO_SIZE: u64 = 500;
pub const REALLOCARRAY_COUNT: u64 = 2;
pub const REALLOCARRAY_NMEMB: u64 = 10;
pub const REALLOCARRAY_SIZE: u64 = 50;

// memalign
pub const POSIX_MEMALIGN_COUNT: u64 = 4;
pub const POSIX_MEMALIGN_SIZE: u64 = 3000;
pub const ALIGNED_ALLOC_COUNT: u64 = 6;
pub const ALIGNED_ALLOC_SIZE: u64 = 512;
pub const MEMALIGN_COUNT: u64 = 3;
pub const MEMALIGN_SIZE: u64 = 700;
pub const VALLOC_COUNT: u64 = 2;
pub const VALLOC_SIZE: u64 = 5000;
pub const PVALLOC_COUNT: u64 = 2;
/// `pvalloc` rounds up to a page internally; the daemon reports the requested size.
pub const PVALLOC_SIZE: u64 = 100;

// failed
pub const CONTROL_COUNT: u64 = 3;
pub const CONTROL_SIZE: u64 = 333;
/// Allocated by `keep_after_failed_realloc`; the following `realloc(p, SIZE_MAX/2)` fails and must not free it.
pub const KEPT_SIZE: u64 = 900;

// threads
pub const THREAD_LEAK_COUNT: u64 = 6;
pub const THREAD_LEAK_SIZE: u64 = 1234;
pub const HANDOFF_COUNT: u64 = 4;
pub const HANDOFF_SIZE: u64 = 2345;

// late
pub const EARLY_COUNT: u64 = 3;
pub const EARLY_SIZE: u64 = 300;
pub const LATE_COUNT: u64 = 7;
pub const LATE_SIZE: u64 = 700;

// rust-leaker
pub const RUST_LEAK_COUNT: u64 = 12;
pub const RUST_LEAK_SIZE: u64 = 2048;

// frameless.c, libframeless.so and frameless_cxx.cc
pub const MAIN_COUNT: u64 = 7;
pub const MAIN_SIZE: u64 = 1234;
pub const LIB_COUNT: u64 = 6;
pub const LIB_SIZE: u64 = 2222;
/// `strdup` of a `DUP_LEN`-character string: `DUP_LEN + 1` bytes each.
pub const DUP_COUNT: u64 = 3;
pub const DUP_LEN: u64 = 40;
/// `strndup(text, NDUP_LEN)` of a longer text: `NDUP_LEN + 1` bytes each.
pub const NDUP_COUNT: u64 = 2;
pub const NDUP_LEN: u64 = 24;
pub const ASPRINTF_COUNT: u64 = 4;
/// `asprintf("leak %d of %s", i < 10, text)`: 10 + 49 characters and the NUL.
pub const ASPRINTF_BYTES: u64 = 60;
/// `new Blob()` of a `NEW_SIZE`-byte struct.
pub const NEW_COUNT: u64 = 5;
pub const NEW_SIZE: u64 = 300;
/// `new int[NEW_ARRAY_LEN]()`: `4 * NEW_ARRAY_LEN` bytes each.
pub const NEW_ARRAY_COUNT: u64 = 3;
pub const NEW_ARRAY_LEN: u64 = 250;

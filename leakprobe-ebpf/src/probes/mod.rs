//! The programs, one module per family. Every program is a thin wrapper over a `try_` function.

mod alloc;
mod fault;
mod free;
mod generator;
mod map;
mod oom;
mod process;
mod python;
mod session;
mod unwind;

//! The pure core: no I/O, no tokio, no aya; time comes in as a parameter (the events' timestamps).

pub mod analysis;
pub mod faults;
pub mod sampling;
pub mod stacks;
pub mod table;
pub mod tier1;

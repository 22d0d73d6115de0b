//! No acknowledged write lost: kills mid-write, file faults, full disks.
//!
//! One test binary per area (cargo runs binaries one after another and the
//! tests inside one in parallel); each file below is one subject.

#[path = "../common/mod.rs"]
mod common;

mod durability;
mod faults;

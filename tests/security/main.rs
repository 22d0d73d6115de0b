//! Who may see and do what: hostile SQL, column and table policies, static tokens and OAuth, sessions per principal, and the audit log.
//!
//! One test binary per area (cargo runs binaries one after another and the
//! tests inside one in parallel); each file below is one subject.

#[path = "../common/mod.rs"]
mod common;

mod attacks;
mod audit;
mod identity;
mod oauth_http;
mod oauth_tokens;
mod policy_leaks;
mod quotas;

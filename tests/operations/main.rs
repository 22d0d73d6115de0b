//! What operators run: metrics scraped by a real Prometheus, the sidecar's probes, the alert rules, dashboard and manifests, the configuration reference, and the module graph.
//!
//! One test binary per area (cargo runs binaries one after another and the
//! tests inside one in parallel); each file below is one subject.

#[path = "../common/mod.rs"]
mod common;

mod config;
mod kubernetes;
mod module_graph;
mod ops_assets;
mod prometheus;
mod sidecar;
mod traces;

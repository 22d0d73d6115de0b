//! `EROS_METRICS_*`: where the metrics and probes sidecar listens, declared
//! once.

use super::setting::{settings, AddressOrOff, ConfigError};

settings! {
    /// Validated sidecar settings.
    pub struct MetricsConfig;
    /// `EROS_METRICS_*` as `envy` reads them.
    pub struct MetricsEnv;
    /// One [`super::Setting`] per `EROS_METRICS_*` variable.
    pub mod metrics_vars;
    prefix = "EROS_METRICS_";

    /// Address of `/metrics`, `/livez`, `/readyz` and `/stats` (outside MCP auth); `off`
    /// disables the sidecar.
    addr <- addr: AddressOrOff = "127.0.0.1:9090", "an address such as 127.0.0.1:9090, or off";
}

impl MetricsConfig {
    /// No rules between settings: there is one.
    fn relate(&mut self, _raw: &MetricsEnv) -> Result<(), ConfigError> {
        Ok(())
    }
}

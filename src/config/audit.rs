//! `EROS_AUDIT_*`: the audit trail of tool calls and refused
//! authentications, declared once.

use super::setting::{named, settings, ConfigError, OptionalText, Parsed};
use crate::audit::{AuditSettings, AuditSink, SqlInAudit};

named!(SqlInAudit { Text = "text", Hash = "hash" });

settings! {
    /// Validated audit settings.
    pub struct AuditConfig;
    /// `EROS_AUDIT_*` as `envy` reads them.
    pub struct AuditEnv;
    /// One [`super::Setting`] per `EROS_AUDIT_*` variable.
    pub mod audit_vars;
    prefix = "EROS_AUDIT_";

    /// Where one JSON line per tool call and per refused request goes: a file path
    /// (append-only, created 0600, reopened on SIGHUP), `stderr`, or empty for none.
    log <- log: OptionalText = "", "a file path, stderr, or empty for no audit log";
    /// The SQL of each call as it was sent, or only its SHA-256.
    sql <- sql: Parsed<SqlInAudit> = "text", "text or hash";
    /// Whether parameter values are written (otherwise only their number).
    params <- params: Parsed<bool> = "false", "true or false";
    /// Whether a write whose audit record cannot be written and synced is
    /// refused (rolled back) rather than committed and counted.
    fail_closed <- fail_closed: Parsed<bool> = "true", "true or false";
}

impl AuditConfig {
    /// No rules between these settings.
    fn relate(&mut self, _raw: &AuditEnv) -> Result<(), ConfigError> {
        Ok(())
    }

    /// What the audit log is built with; `None` when it is off.
    /// Taken apart field by field, so a new setting must be placed here.
    pub fn audit_settings(&self) -> Option<AuditSettings> {
        let AuditConfig {
            log,
            sql,
            params,
            fail_closed,
        } = self.clone();
        let sink = match log?.as_str() {
            "stderr" => AuditSink::Stderr,
            path => AuditSink::File(path.into()),
        };
        Some(AuditSettings {
            sink,
            sql,
            param_values: params,
            fail_closed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<AuditConfig, ConfigError> {
        AuditConfig::from_vars(
            vars.iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        )
    }

    #[test]
    fn the_audit_log_is_off_by_default() {
        assert_eq!(AuditConfig::default().audit_settings(), None);
    }

    #[test]
    fn a_path_or_stderr_names_the_sink() {
        let settings = config(&[
            ("EROS_AUDIT_LOG", "/var/log/eros/audit.log"),
            ("EROS_AUDIT_SQL", "hash"),
            ("EROS_AUDIT_PARAMS", "true"),
        ])
        .unwrap()
        .audit_settings()
        .unwrap();
        assert_eq!(
            settings,
            AuditSettings {
                sink: AuditSink::File("/var/log/eros/audit.log".into()),
                sql: SqlInAudit::Hash,
                param_values: true,
                fail_closed: true,
            }
        );
        let stderr = config(&[("EROS_AUDIT_LOG", "stderr")])
            .unwrap()
            .audit_settings()
            .unwrap();
        assert_eq!(stderr.sink, AuditSink::Stderr);
        assert_eq!((stderr.sql, stderr.param_values), (SqlInAudit::Text, false));
    }

    #[test]
    fn an_unknown_sql_mode_is_refused() {
        let err = config(&[("EROS_AUDIT_SQL", "redact")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid EROS_AUDIT_SQL="redact": text or hash"#
        );
        let err = config(&[("EROS_AUDIT_PARMS", "true")]).unwrap_err();
        assert_eq!(err.variable, "EROS_AUDIT_PARMS");
    }
}

//! The quotas file (`EROS_AUTH_QUOTAS_FILE`): a default for principals not
//! named, and a section per named principal whose keys override the
//! default's one by one.
//!
//! ```toml
//! [default]
//! calls_per_minute = 600
//! burst = 60
//! in_flight = 8
//! sqlite_seconds_per_minute = 60
//! rows_per_minute = 1000000
//! bytes_per_minute = 200000000
//!
//! [principals.nightly-etl]
//! calls_per_minute = 6000
//! ```
//!
//! A key left out is not limited. The local user of stdio has no quota
//! unless it is named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a quotas file was refused.
#[derive(Debug, thiserror::Error)]
pub enum QuotaFileError {
    #[error("cannot read the quotas file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the quotas file {path} is invalid: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// What one principal may take; `None`: not limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Tool calls a minute, refilled evenly (a token bucket).
    pub calls_per_minute: Option<u32>,
    /// Calls that may be made at once after a pause (the bucket's size);
    /// defaults to a tenth of `calls_per_minute`, at least 1.
    pub burst: Option<u32>,
    /// Calls running at once.
    pub in_flight: Option<u32>,
    /// Seconds of database time a minute: from checkout to the answer, the
    /// statement's run time.
    pub sqlite_seconds_per_minute: Option<f64>,
    /// Rows returned a minute.
    pub rows_per_minute: Option<u64>,
    /// Bytes of answers a minute.
    pub bytes_per_minute: Option<u64>,
}

impl Limits {
    /// `self`, with each key it leaves out taken from `default`.
    fn over(self, default: &Limits) -> Limits {
        Limits {
            calls_per_minute: self.calls_per_minute.or(default.calls_per_minute),
            burst: self.burst.or(default.burst),
            in_flight: self.in_flight.or(default.in_flight),
            sqlite_seconds_per_minute: self
                .sqlite_seconds_per_minute
                .or(default.sqlite_seconds_per_minute),
            rows_per_minute: self.rows_per_minute.or(default.rows_per_minute),
            bytes_per_minute: self.bytes_per_minute.or(default.bytes_per_minute),
        }
    }

    /// The size of the calls bucket.
    pub fn burst_size(&self) -> Option<u32> {
        let rate = self.calls_per_minute?;
        Some(self.burst.unwrap_or(rate / 10).max(1))
    }

    fn check(&self, section: &str) -> Result<(), String> {
        let positive = |name: &str, value: Option<f64>| match value {
            Some(v) if !(v > 0.0 && v.is_finite()) => Err(format!(
                "[{section}] {name} = {v}: give a number above 0 (leave the key out for no limit)"
            )),
            _ => Ok(()),
        };
        positive("calls_per_minute", self.calls_per_minute.map(f64::from))?;
        positive("burst", self.burst.map(f64::from))?;
        positive("in_flight", self.in_flight.map(f64::from))?;
        positive("sqlite_seconds_per_minute", self.sqlite_seconds_per_minute)?;
        positive("rows_per_minute", self.rows_per_minute.map(|v| v as f64))?;
        positive("bytes_per_minute", self.bytes_per_minute.map(|v| v as f64))?;
        if self.burst.is_some() && self.calls_per_minute.is_none() {
            return Err(format!(
                "[{section}] burst is set without calls_per_minute: a burst is the size of the \
                 calls-per-minute bucket"
            ));
        }
        Ok(())
    }
}

/// The quotas file, read and checked.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaFile {
    /// For every principal the file does not name (not the local user).
    #[serde(default)]
    pub default: Limits,
    /// By principal name: a static token's name, an OAuth token's subject
    /// or client id, the local user's name.
    #[serde(default)]
    pub principals: BTreeMap<String, Limits>,
}

impl QuotaFile {
    pub fn read(path: &Path) -> Result<Self, QuotaFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| QuotaFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| QuotaFileError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: QuotaFile = toml::from_str(text).map_err(|err| err.to_string())?;
        file.default.check("default")?;
        for (name, limits) in &file.principals {
            // A section is checked as it applies: over the default.
            limits
                .over(&file.default)
                .check(&format!("principals.{name}"))?;
        }
        Ok(file)
    }

    /// The limits of the principal known by `names` (its name, then its
    /// client id), and whether the file names it; `local` principals get
    /// no default.
    pub fn limits_for<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
        local: bool,
    ) -> (Limits, Option<&str>) {
        for name in names {
            if let Some((named, limits)) = self.principals.get_key_value(name) {
                let base = if local {
                    Limits::default()
                } else {
                    self.default
                };
                return (limits.over(&base), Some(named.as_str()));
            }
        }
        if local {
            (Limits::default(), None)
        } else {
            (self.default, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [default]
        calls_per_minute = 60
        in_flight = 4

        [principals.etl]
        calls_per_minute = 600
        rows_per_minute = 100
    "#;

    #[test]
    fn a_named_principal_overrides_the_default_key_by_key() {
        let file = QuotaFile::parse(FILE).unwrap();
        let (limits, named) = file.limits_for(["etl"], false);
        assert_eq!(named, Some("etl"));
        assert_eq!(limits.calls_per_minute, Some(600));
        assert_eq!(limits.in_flight, Some(4));
        assert_eq!(limits.rows_per_minute, Some(100));
    }

    #[test]
    fn a_principal_not_named_gets_the_default() {
        let file = QuotaFile::parse(FILE).unwrap();
        let (limits, named) = file.limits_for(["someone"], false);
        assert_eq!(named, None);
        assert_eq!(limits, file.default);
    }

    #[test]
    fn the_local_user_has_no_quota_unless_named() {
        let file = QuotaFile::parse(FILE).unwrap();
        assert_eq!(file.limits_for(["alice"], true).0, Limits::default());
        let (limits, _) = file.limits_for(["etl"], true);
        assert_eq!(limits.in_flight, None);
        assert_eq!(limits.calls_per_minute, Some(600));
    }

    #[test]
    fn an_oauth_client_is_found_by_its_client_id_when_its_subject_is_not_named() {
        let file = QuotaFile::parse(FILE).unwrap();
        assert_eq!(file.limits_for(["sub-123", "etl"], false).1, Some("etl"));
    }

    #[test]
    fn a_zero_or_unknown_key_is_refused_naming_it() {
        let zero = QuotaFile::parse("[default]\nin_flight = 0\n").unwrap_err();
        assert!(zero.contains("in_flight"), "{zero}");
        let unknown = QuotaFile::parse("[default]\ncalls_per_hour = 5\n").unwrap_err();
        assert!(unknown.contains("calls_per_hour"), "{unknown}");
        let burst = QuotaFile::parse("[default]\nburst = 5\n").unwrap_err();
        assert!(burst.contains("burst"), "{burst}");
    }

    #[test]
    fn the_example_file_reads() {
        let file = QuotaFile::parse(include_str!("../../examples/quotas.toml")).unwrap();
        assert_eq!(file.default.in_flight, Some(8));
        assert_eq!(
            file.limits_for(["nightly-etl"], false).0.rows_per_minute,
            Some(1_000_000)
        );
    }

    #[test]
    fn the_burst_defaults_to_a_tenth_of_the_rate() {
        let limits = Limits {
            calls_per_minute: Some(600),
            ..Limits::default()
        };
        assert_eq!(limits.burst_size(), Some(60));
        let slow = Limits {
            calls_per_minute: Some(5),
            ..Limits::default()
        };
        assert_eq!(slow.burst_size(), Some(1));
    }
}

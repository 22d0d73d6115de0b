//! One configuration setting, declared once: its variable, default,
//! allowed values (a [`Rule`], whose text and check are one value) and doc
//! live in one entry of a [`settings!`] table, from which the raw `envy`
//! struct, the typed struct, the defaults, the validation, the error text
//! and the `VARIABLE=value` display are all derived.
//!
//! `envy` reads the variables of one prefix into the raw struct (one
//! `Option<String>` per variable); each value is then parsed on its own by
//! its [`Kind`], so a bad one is reported by the setting itself, naming the
//! variable, the value and what is allowed.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A configuration value that is not allowed, named so a person can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}={value:?}: {allowed}")]
pub struct ConfigError {
    /// The environment variable, with its prefix (`EROS_DB_POOL_SIZE`).
    pub variable: String,
    /// The value as it was given.
    pub value: String,
    /// What is allowed instead.
    pub allowed: String,
}

/// Everything said about one variable, from its table entry.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The layer's prefix (`EROS_DB_`).
    pub prefix: &'static str,
    /// The variable without its prefix, lowercased, as `envy` names it.
    pub key: &'static str,
    /// The default, as text; parsed like a given value.
    pub default: &'static str,
    /// What the variable accepts, for error messages: the text of the
    /// entry's [`Rule`], the same value that checks it.
    pub allowed: fn() -> String,
    /// What the setting does.
    pub doc: &'static str,
}

impl Setting {
    /// The full variable name (`EROS_DB_POOL_SIZE`).
    pub fn variable(&self) -> String {
        format!("{}{}", self.prefix, self.key.to_ascii_uppercase())
    }

    /// The error for `value`, saying what is allowed.
    pub fn invalid(&self, value: &str) -> ConfigError {
        self.invalid_because(value, (self.allowed)())
    }

    /// What the variable accepts, as error messages and the reference say.
    pub fn allowed(&self) -> String {
        (self.allowed)()
    }

    /// The error for `value` with an `allowed` text that depends on other
    /// settings (`... 10 times EROS_DB_POOL_SIZE (20)`).
    pub fn invalid_because(&self, value: &str, allowed: String) -> ConfigError {
        ConfigError {
            variable: self.variable(),
            value: value.to_string(),
            allowed,
        }
    }

    /// The text this setting takes: the given value, or the default when the
    /// variable is unset (or empty, for kinds where empty means nothing).
    pub fn text<'a, K: Kind>(&'a self, given: Option<&'a str>) -> &'a str {
        given
            .filter(|text| K::EMPTY_IS_A_VALUE || !text.is_empty())
            .unwrap_or(self.default)
    }

    /// Parses this setting's text with `K` and checks it with `valid`.
    pub fn read<K: Kind>(
        &self,
        given: Option<&str>,
        valid: impl Fn(&K::Value) -> bool,
    ) -> Result<K::Value, ConfigError> {
        let text = self.text::<K>(given);
        K::parse(text)
            .filter(|value| valid(value))
            .ok_or_else(|| self.invalid(text))
    }
}

/// Reads and writes the names of a small enum, as its variable spells them.
macro_rules! named {
    ($type:ident { $($variant:ident = $name:literal),* }) => {
        impl std::str::FromStr for $type {
            type Err = ();
            fn from_str(text: &str) -> Result<Self, ()> {
                match text {
                    $($name => Ok($type::$variant),)*
                    _ => Err(()),
                }
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self { $($type::$variant => $name,)* })
            }
        }
    };
}
pub(crate) use named;

/// What a setting of kind `K` accepts beyond being read by `K`: the text
/// people are shown and the check, one value so they cannot drift apart.
pub trait Rule<K: Kind> {
    fn admits(&self, value: &K::Value) -> bool;
    fn text(&self) -> String;
}

/// A plain description: whatever `K` reads is allowed.
impl<K: Kind> Rule<K> for &'static str {
    fn admits(&self, _value: &K::Value) -> bool {
        true
    }
    fn text(&self) -> String {
        self.to_string()
    }
}

/// Kinds whose values are bounded by numbers, and how a bound reads.
pub trait Bounded: Kind {
    /// How a bound is written in a table (`1000`, `0.5` seconds).
    type Bound: Copy + std::fmt::Display;
    fn at_least(value: &Self::Value, low: Self::Bound) -> bool;
    fn at_most(value: &Self::Value, high: Self::Bound) -> bool;
    /// `from 1 to 1000` as this kind says it.
    fn between_text(low: Self::Bound, high: Self::Bound) -> String;
    /// `at least 1` as this kind says it.
    fn at_least_text(low: Self::Bound) -> String;
}

/// From `low` to `high`, both included.
pub struct Between<B>(pub B, pub B);

impl<K: Bounded> Rule<K> for Between<K::Bound> {
    fn admits(&self, value: &K::Value) -> bool {
        K::at_least(value, self.0) && K::at_most(value, self.1)
    }
    fn text(&self) -> String {
        K::between_text(self.0, self.1)
    }
}

/// `low` or more.
pub struct AtLeast<B>(pub B);

impl<K: Bounded> Rule<K> for AtLeast<K::Bound> {
    fn admits(&self, value: &K::Value) -> bool {
        K::at_least(value, self.0)
    }
    fn text(&self) -> String {
        K::at_least_text(self.0)
    }
}

/// The rule of a table entry, typed by the entry's kind.
pub fn rule<K: Kind, R: Rule<K>>(rule: R) -> R {
    rule
}

/// How a kind of setting is written in the environment.
pub trait Kind {
    /// What the rest of the crate gets.
    type Value: Clone + PartialEq;
    /// Whether an empty variable is a value of its own (a list with nothing
    /// in it, `off`) rather than unset, which takes the default.
    const EMPTY_IS_A_VALUE: bool = false;
    fn parse(text: &str) -> Option<Self::Value>;
    /// The value as the variable would be written.
    fn show(value: &Self::Value) -> String;
    /// The value in debug output (secrets hide here).
    fn debug(value: &Self::Value) -> String {
        Self::show(value)
    }
}

/// Anything `FromStr` reads and `Display` writes back: whole numbers,
/// `true`/`false`, addresses, the transport and row format names.
pub struct Parsed<T>(std::marker::PhantomData<T>);

impl<T: FromStr + std::fmt::Display + Clone + PartialEq> Kind for Parsed<T> {
    type Value = T;
    fn parse(text: &str) -> Option<T> {
        text.parse().ok()
    }
    fn show(value: &T) -> String {
        value.to_string()
    }
}

macro_rules! whole_numbers {
    ($($t:ty),*) => {$(
        impl Bounded for Parsed<$t> {
            type Bound = $t;
            fn at_least(value: &$t, low: $t) -> bool {
                *value >= low
            }
            fn at_most(value: &$t, high: $t) -> bool {
                *value <= high
            }
            fn between_text(low: $t, high: $t) -> String {
                format!("a whole number from {low} to {high}")
            }
            fn at_least_text(low: $t) -> String {
                format!("a whole number of at least {low}")
            }
        }
    )*};
}
whole_numbers!(u32, u64, usize);

/// A whole number of bytes: read like any number, its bounds say "bytes".
pub struct Bytes<T>(std::marker::PhantomData<T>);

impl<T: FromStr + std::fmt::Display + Clone + PartialEq> Kind for Bytes<T> {
    type Value = T;
    fn parse(text: &str) -> Option<T> {
        text.parse().ok()
    }
    fn show(value: &T) -> String {
        value.to_string()
    }
}

impl<T: FromStr + std::fmt::Display + Clone + Copy + PartialOrd> Bounded for Bytes<T> {
    type Bound = T;
    fn at_least(value: &T, low: T) -> bool {
        *value >= low
    }
    fn at_most(value: &T, high: T) -> bool {
        *value <= high
    }
    fn between_text(low: T, high: T) -> String {
        format!("a whole number of bytes from {low} to {high}")
    }
    fn at_least_text(low: T) -> String {
        format!("a whole number of bytes, at least {low}")
    }
}

/// Longest duration any setting may have: a typo must not become a
/// timeout of years.
pub const MAX_SECONDS: f64 = 86_400.0;

/// A number of seconds from 0 to a day, fractions allowed.
pub struct Seconds;

impl Kind for Seconds {
    type Value = Duration;
    fn parse(text: &str) -> Option<Duration> {
        let seconds: f64 = text.parse().ok()?;
        (seconds.is_finite() && (0.0..=MAX_SECONDS).contains(&seconds))
            .then(|| Duration::from_secs_f64(seconds))
    }
    fn show(value: &Duration) -> String {
        value.as_secs_f64().to_string()
    }
}

impl Bounded for Seconds {
    type Bound = f64;
    fn at_least(value: &Duration, low: f64) -> bool {
        value.as_secs_f64() >= low
    }
    fn at_most(value: &Duration, high: f64) -> bool {
        value.as_secs_f64() <= high
    }
    fn between_text(low: f64, high: f64) -> String {
        format!("a number of seconds from {low} to {high} (fractions allowed)")
    }
    fn at_least_text(low: f64) -> String {
        Self::between_text(low, MAX_SECONDS)
    }
}

pub const MIB: u64 = 1024 * 1024;

/// A whole number of MiB, held as bytes.
pub struct Mib;

impl Kind for Mib {
    type Value = u64;
    fn parse(text: &str) -> Option<u64> {
        text.parse::<u64>().ok().map(|mib| mib.saturating_mul(MIB))
    }
    fn show(bytes: &u64) -> String {
        (bytes / MIB).to_string()
    }
}

/// Bounds of a MiB setting are written in MiB.
impl Bounded for Mib {
    type Bound = u64;
    fn at_least(bytes: &u64, low: u64) -> bool {
        *bytes >= low.saturating_mul(MIB)
    }
    fn at_most(bytes: &u64, high: u64) -> bool {
        *bytes <= high.saturating_mul(MIB)
    }
    fn between_text(low: u64, high: u64) -> String {
        format!("a whole number of MiB from {low} to {high}")
    }
    fn at_least_text(low: u64) -> String {
        format!("a whole number of MiB, at least {low}")
    }
}

/// A file path.
pub struct FilePath;

impl Kind for FilePath {
    type Value = PathBuf;
    fn parse(text: &str) -> Option<PathBuf> {
        Some(PathBuf::from(text))
    }
    fn show(value: &PathBuf) -> String {
        value.display().to_string()
    }
}

/// A file path, or nothing when empty.
pub struct OptionalPath;

impl Kind for OptionalPath {
    type Value = Option<PathBuf>;
    fn parse(text: &str) -> Option<Option<PathBuf>> {
        Some((!text.is_empty()).then(|| PathBuf::from(text)))
    }
    fn show(value: &Option<PathBuf>) -> String {
        value
            .as_ref()
            .map(|path| path.display().to_string())
            .unwrap_or_default()
    }
}

/// Any text, or nothing when empty.
pub struct OptionalText;

impl Kind for OptionalText {
    type Value = Option<String>;
    fn parse(text: &str) -> Option<Option<String>> {
        Some((!text.is_empty()).then(|| text.to_string()))
    }
    fn show(value: &Option<String>) -> String {
        value.clone().unwrap_or_default()
    }
}

/// A secret (a bearer token), or nothing when empty; never shown.
pub struct Secret;

impl Kind for Secret {
    type Value = Option<String>;
    fn parse(text: &str) -> Option<Option<String>> {
        Some((!text.is_empty()).then(|| text.to_string()))
    }
    fn show(value: &Option<String>) -> String {
        value
            .as_ref()
            .map(|_| "<set>".to_string())
            .unwrap_or_default()
    }
}

/// Comma-separated words, trimmed; empty means an empty list.
pub struct List;

impl Kind for List {
    type Value = Vec<String>;
    const EMPTY_IS_A_VALUE: bool = true;
    fn parse(text: &str) -> Option<Vec<String>> {
        Some(
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }
    fn show(value: &Vec<String>) -> String {
        value.join(",")
    }
}

/// A socket address, or `off` (or empty) for none.
pub struct AddressOrOff;

impl Kind for AddressOrOff {
    type Value = Option<std::net::SocketAddr>;
    const EMPTY_IS_A_VALUE: bool = true;
    fn parse(text: &str) -> Option<Self::Value> {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("off") {
            return Some(None);
        }
        text.parse().ok().map(Some)
    }
    fn show(value: &Self::Value) -> String {
        value.map_or_else(|| "off".to_string(), |addr| addr.to_string())
    }
}

/// Reads the variables starting with `prefix` into the raw struct `T` with
/// envy, after refusing any variable of that prefix no setting declares (a
/// misspelling would otherwise be silently ignored).
pub fn read_prefixed<T: serde::de::DeserializeOwned>(
    prefix: &str,
    settings: &[Setting],
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .collect();
    let unknown = vars.iter().find(|(name, _)| {
        let key = &name[prefix.len()..];
        !settings.iter().any(|s| s.key.eq_ignore_ascii_case(key))
    });
    if let Some((name, value)) = unknown {
        return Err(ConfigError {
            variable: name.clone(),
            value: value.clone(),
            allowed: "not a known variable (see .env.example)".into(),
        });
    }
    // Every field is an optional string, so envy fails only on what no
    // single variable caused (the same variable given twice).
    envy::prefixed(prefix)
        .from_iter(vars)
        .map_err(|err| ConfigError {
            variable: format!("{prefix}*"),
            value: String::new(),
            allowed: err.to_string(),
        })
}

/// Declares a layer's settings once, one entry each:
///
/// ```text
/// /// doc
/// typed_field <- env_key: Kind = "default", rule;
/// ```
///
/// where the rule is a [`Rule`]: a text for kinds that check themselves
/// (`"true or false"`), or a bound whose text is derived from it
/// (`Between(1, 1000)`, `AtLeast(0.1)`).
///
/// and derives the typed struct (`$config`, with `from_vars`, `from_env`,
/// `Default`, `Display` as `VARIABLE=value` lines, and a `Debug` that hides
/// secrets), the raw envy struct (`$raw`), and a module `$vars` with one
/// [`Setting`] constant per variable. Rules between settings go in the
/// layer's own `fn relate(&mut self, raw: &$raw) -> Result<(), ConfigError>`.
macro_rules! settings {
    (
        $(#[doc = $config_doc:literal])*
        pub struct $config:ident;
        $(#[doc = $raw_doc:literal])*
        pub struct $raw:ident;
        $(#[doc = $vars_doc:literal])*
        pub mod $vars:ident;
        prefix = $prefix:literal;
        $(
            $(#[doc = $doc:literal])*
            $field:ident <- $key:ident : $kind:ty = $default:literal, $rule:expr;
        )*
    ) => {
        $(#[doc = $config_doc])*
        #[derive(Clone, PartialEq)]
        pub struct $config {
            $(
                $(#[doc = $doc])*
                pub $field: <$kind as $crate::config::setting::Kind>::Value,
            )*
        }

        $(#[doc = $raw_doc])*
        #[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
        #[serde(default)]
        pub struct $raw {
            $( pub $key: Option<String>, )*
        }

        $(#[doc = $vars_doc])*
        #[allow(non_upper_case_globals)]
        pub mod $vars {
            use $crate::config::setting::Setting;
            $(
                $(#[doc = $doc])*
                pub const $key: Setting = Setting {
                    prefix: $prefix,
                    key: stringify!($key),
                    default: $default,
                    allowed: {
                        fn allowed() -> String {
                            #[allow(unused_imports)]
                            use super::*;
                            #[allow(unused_imports)]
                            use $crate::config::setting::{rule, AtLeast, Between, Rule};
                            Rule::<$kind>::text(&rule::<$kind, _>($rule))
                        }
                        allowed
                    },
                    doc: concat!($($doc, "\n"),*),
                };
            )*
        }

        impl $config {
            /// Prefix of every variable of this layer.
            pub const PREFIX: &'static str = $prefix;

            /// Every variable of this layer, in the order they are shown.
            pub const SETTINGS: &'static [$crate::config::setting::Setting] = &[$($vars::$key),*];

            /// Reads this layer's variables from the process environment.
            pub fn from_env() -> Result<Self, $crate::config::ConfigError> {
                Self::from_vars(std::env::vars())
            }

            /// Reads this layer's variables from the given pairs (others are ignored).
            pub fn from_vars<I>(vars: I) -> Result<Self, $crate::config::ConfigError>
            where
                I: IntoIterator<Item = (String, String)>,
            {
                let raw: $raw = $crate::config::setting::read_prefixed($prefix, Self::SETTINGS, vars)?;
                Self::from_raw(&raw)
            }

            /// Parses and checks every variable, then the rules between them.
            pub fn from_raw(raw: &$raw) -> Result<Self, $crate::config::ConfigError> {
                let mut config = Self {
                    $(
                        $field: $vars::$key.read::<$kind>(raw.$key.as_deref(), |value| {
                            #[allow(unused_imports)]
                            use $crate::config::setting::{rule, AtLeast, Between, Rule};
                            Rule::<$kind>::admits(&rule::<$kind, _>($rule), value)
                        })?,
                    )*
                };
                config.relate(raw)?;
                Ok(config)
            }
        }

        impl Default for $config {
            fn default() -> Self {
                Self::from_raw(&$raw::default()).expect("the declared defaults are valid")
            }
        }

        impl std::fmt::Display for $config {
            /// The effective settings, one `VARIABLE=value` line each.
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let lines = [
                    $( ($vars::$key, <$kind as $crate::config::setting::Kind>::show(&self.$field)), )*
                ];
                for (i, (setting, value)) in lines.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{}={}", setting.variable(), value)?;
                }
                Ok(())
            }
        }

        impl std::fmt::Debug for $config {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($config))
                    $(
                        .field(
                            stringify!($field),
                            &format_args!("{}", <$kind as $crate::config::setting::Kind>::debug(&self.$field)),
                        )
                    )*
                    .finish()
            }
        }
    };
}

pub(crate) use settings;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_and_flags_parse_strictly() {
        assert_eq!(Parsed::<u32>::parse("12"), Some(12));
        assert_eq!(Parsed::<u32>::parse("-1"), None);
        assert_eq!(Parsed::<u32>::parse(" 12"), None);
        assert_eq!(Parsed::<bool>::parse("false"), Some(false));
        assert_eq!(Parsed::<bool>::parse("yes"), None);
    }

    #[test]
    fn seconds_take_fractions_up_to_a_day() {
        assert_eq!(Seconds::parse("2.5"), Some(Duration::from_millis(2500)));
        assert_eq!(Seconds::parse("86400"), Some(Duration::from_secs(86_400)));
        assert_eq!(Seconds::parse("86401"), None);
        assert_eq!(Seconds::parse("-1"), None);
        assert_eq!(Seconds::parse("NaN"), None);
        assert_eq!(Seconds::show(&Duration::from_millis(50)), "0.05");
    }

    #[test]
    fn mib_are_held_as_bytes_and_shown_as_mib() {
        assert_eq!(Mib::parse("8"), Some(8 * MIB));
        assert_eq!(Mib::show(&(8 * MIB)), "8");
    }

    #[test]
    fn lists_are_comma_separated_and_trimmed() {
        assert_eq!(List::parse(" a, b ,,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(List::parse("").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn an_address_or_off() {
        assert_eq!(AddressOrOff::parse("OFF"), Some(None));
        assert_eq!(AddressOrOff::parse(""), Some(None));
        assert_eq!(
            AddressOrOff::parse("127.0.0.1:9090"),
            Some(Some("127.0.0.1:9090".parse().unwrap()))
        );
        assert_eq!(AddressOrOff::parse("9090"), None);
    }

    #[test]
    fn a_secret_is_never_shown() {
        assert_eq!(Secret::show(&Some("s3cret".into())), "<set>");
        assert_eq!(Secret::parse(""), Some(None));
    }

    const LIMIT: Setting = Setting {
        prefix: "TEST_",
        key: "limit",
        default: "7",
        allowed: || "a whole number from 1 to 9".to_string(),
        doc: "",
    };

    #[test]
    fn an_unset_or_empty_variable_takes_the_default() {
        assert_eq!(LIMIT.read::<Parsed<u32>>(None, |_| true), Ok(7));
        assert_eq!(LIMIT.read::<Parsed<u32>>(Some(""), |_| true), Ok(7));
    }

    #[test]
    fn a_bad_value_names_the_variable_the_value_and_what_is_allowed() {
        let err = LIMIT
            .read::<Parsed<u32>>(Some("12"), |n| (1..=9).contains(n))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid TEST_LIMIT="12": a whole number from 1 to 9"#
        );
    }

    #[test]
    fn a_variable_no_setting_declares_is_refused() {
        let err = read_prefixed::<std::collections::HashMap<String, String>>(
            "TEST_",
            &[LIMIT],
            [("TEST_LIMTI".to_string(), "3".to_string())],
        )
        .unwrap_err();
        assert_eq!(err.variable, "TEST_LIMTI");
        assert!(err.allowed.contains("not a known variable"));
    }
}

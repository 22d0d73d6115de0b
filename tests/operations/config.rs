//! Configuration: defaults, validation with one clear line per mistake, and
//! `.env.example` kept complete.

use std::time::Duration;

use eros_mcp::mcp::rows::RowFormat;

use eros_mcp::config::{
    AuditConfig, AuthConfig, Config, DatabaseConfig, McpConfig, MetricsConfig, Setting,
};

fn config(vars: &[(&str, &str)]) -> Result<DatabaseConfig, String> {
    DatabaseConfig::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .map_err(|e| e.to_string())
}

#[test]
fn defaults_match_the_spec() {
    let c = config(&[]).unwrap();
    assert_eq!(c.path.to_str(), Some("./database/eros_sd_main.db"));
    assert_eq!((c.pool_size, c.max_overflow, c.prewarm), (10, 5, 3));
    assert_eq!(c.checkout_timeout, Duration::from_secs(30));
    assert_eq!(c.connection_max_age, Duration::from_secs(300));
    assert_eq!(c.maintenance_interval, Duration::from_secs(60));
    assert!(c.health_check && c.migrate && c.read_only);
}

#[test]
fn variables_override_defaults_and_accept_fractional_seconds() {
    let c = config(&[
        ("EROS_DB_PATH", "/tmp/x.db"),
        ("EROS_DB_POOL_SIZE", "4"),
        ("EROS_DB_POOL_OVERFLOW", "0"),
        ("EROS_DB_POOL_TIMEOUT", "2.5"),
        ("EROS_DB_HEALTH_CHECK", "false"),
        ("OTHER_VARIABLE", "ignored"),
    ])
    .unwrap();
    assert_eq!(c.path.to_str(), Some("/tmp/x.db"));
    assert_eq!((c.pool_size, c.max_overflow), (4, 0));
    assert_eq!(c.checkout_timeout, Duration::from_millis(2500));
    assert!(!c.health_check);
}

#[test]
fn a_non_numeric_pool_size_names_the_variable_value_and_range() {
    let err = config(&[("EROS_DB_POOL_SIZE", "abc")]).unwrap_err();
    assert_eq!(
        err,
        r#"invalid EROS_DB_POOL_SIZE="abc": a whole number from 1 to 1000"#
    );
}

#[test]
fn a_pool_size_of_zero_is_refused() {
    let err = config(&[("EROS_DB_POOL_SIZE", "0")]).unwrap_err();
    assert!(err.starts_with(r#"invalid EROS_DB_POOL_SIZE="0""#), "{err}");
}

#[test]
fn a_negative_timeout_is_refused() {
    let err = config(&[("EROS_DB_POOL_TIMEOUT", "-1")]).unwrap_err();
    assert!(
        err.starts_with(r#"invalid EROS_DB_POOL_TIMEOUT="-1": a number of seconds"#),
        "{err}"
    );
}

#[test]
fn a_timeout_that_is_not_a_number_is_refused() {
    let err = config(&[("EROS_DB_POOL_TIMEOUT", "soon")]).unwrap_err();
    assert!(err.contains("EROS_DB_POOL_TIMEOUT=\"soon\""), "{err}");
}

#[test]
fn an_overflow_far_larger_than_the_pool_is_refused() {
    let err = config(&[("EROS_DB_POOL_SIZE", "2"), ("EROS_DB_POOL_OVERFLOW", "500")]).unwrap_err();
    assert!(err.contains("EROS_DB_POOL_OVERFLOW=\"500\""), "{err}");
    assert!(err.contains("10 times EROS_DB_POOL_SIZE (20)"), "{err}");
}

#[test]
fn a_pool_smaller_than_the_default_prewarm_prewarms_all_of_it() {
    let c = config(&[("EROS_DB_POOL_SIZE", "2")]).unwrap();
    assert_eq!((c.pool_size, c.prewarm), (2, 2));
}

#[test]
fn a_prewarm_above_the_pool_size_is_refused() {
    let err = config(&[("EROS_DB_POOL_SIZE", "2"), ("EROS_DB_POOL_PREWARM", "3")]).unwrap_err();
    assert!(err.contains("EROS_DB_POOL_PREWARM=\"3\""), "{err}");
}

#[test]
fn a_misspelled_variable_is_refused_instead_of_ignored() {
    let err = config(&[("EROS_DB_POOL_SZIE", "3")]).unwrap_err();
    assert!(
        err.contains("EROS_DB_POOL_SZIE") && err.contains("not a known variable"),
        "{err}"
    );
}

#[test]
fn a_boolean_that_is_not_true_or_false_is_refused() {
    let err = config(&[("EROS_DB_HEALTH_CHECK", "maybe")]).unwrap_err();
    assert_eq!(
        err,
        r#"invalid EROS_DB_HEALTH_CHECK="maybe": true or false"#
    );
}

/// Every declared setting has a `VARIABLE=default` line in `.env.example`.
/// Every declared variable is in `.env.example` with its default.
#[test]
fn env_example_documents_every_variable_with_its_default() {
    assert_documented(Config::settings());
}

fn assert_documented<'a>(settings: impl IntoIterator<Item = &'a Setting>) {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).unwrap();
    for setting in settings {
        let variable = setting.variable();
        let line = example
            .lines()
            .find(|line| line.starts_with(&format!("{variable}=")))
            .unwrap_or_else(|| panic!("{variable} is missing from .env.example"));
        let documented = line.split_once('=').unwrap().1;
        let expected = setting.default;
        let same = documented == expected
            || documented.parse::<f64>().is_ok()
                && documented.parse::<f64>().ok() == expected.parse::<f64>().ok();
        assert!(
            same,
            "{variable}: .env.example says {documented:?}, the default is {expected:?}"
        );
    }
}

#[test]
fn env_example_names_no_variable_the_server_does_not_declare() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).unwrap();
    let logging = ["EROS_LOG", "EROS_LOG_FORMAT"];
    for line in example.lines().filter(|line| line.starts_with("EROS_")) {
        let variable = line.split_once('=').unwrap().0;
        assert!(
            logging.contains(&variable) || Config::settings().any(|s| s.variable() == variable),
            "{variable} is in .env.example but not declared"
        );
    }
}

#[test]
fn the_metrics_sidecar_can_be_turned_off() {
    let config =
        MetricsConfig::from_vars([("EROS_METRICS_ADDR".to_string(), "off".to_string())]).unwrap();
    assert_eq!(config.addr, None);
    let err = MetricsConfig::from_vars([("EROS_METRICS_ADDR".to_string(), "9090".to_string())])
        .unwrap_err()
        .to_string();
    assert!(err.contains("EROS_METRICS_ADDR"), "{err}");
}

#[test]
fn env_example_parses_as_a_valid_configuration() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).unwrap();
    let vars: Vec<_> = dotenvy::from_read_iter(example.as_bytes())
        .map(Result::unwrap)
        .collect();
    let config = Config::from_vars(vars).unwrap();
    assert_eq!(config.database, DatabaseConfig::default());
    assert_eq!(config.mcp, McpConfig::default());
    assert_eq!(config.metrics, MetricsConfig::default());
    assert_eq!(config.auth, AuthConfig::default());
}

#[test]
fn comma_separated_lists_are_read_into_allow_lists() {
    let config = McpConfig::from_vars([(
        "EROS_MCP_ALLOWED_HOSTS".to_string(),
        "db.internal, 10.0.0.5".to_string(),
    )])
    .unwrap();
    assert_eq!(config.allowed_hosts, ["db.internal", "10.0.0.5"]);
}

#[test]
fn http_on_a_public_address_needs_a_token() {
    let vars = |extra: &[(&str, &str)]| {
        let mut vars = vec![
            ("EROS_MCP_TRANSPORT".to_string(), "http".to_string()),
            ("EROS_MCP_HTTP_ADDR".to_string(), "0.0.0.0:8080".to_string()),
        ];
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Config::from_vars(vars)
    };
    let err = vars(&[]).unwrap_err().to_string();
    assert!(err.contains("EROS_MCP_AUTH_TOKEN"), "{err}");
    assert!(vars(&[("EROS_MCP_AUTH_TOKEN", "s3cret-token")]).is_ok());
    assert!(vars(&[("EROS_AUTH_TOKENS_FILE", "/etc/eros/tokens.toml")]).is_ok());
    assert!(vars(&[("EROS_MCP_ALLOW_INSECURE", "true")]).is_ok());
}

#[test]
fn an_unknown_transport_is_refused() {
    let err = McpConfig::from_vars([(
        "EROS_MCP_TRANSPORT".to_string(),
        "carrier-pigeon".to_string(),
    )])
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(r#"invalid EROS_MCP_TRANSPORT="carrier-pigeon""#),
        "{err}"
    );
}

fn row_format(value: &str) -> Result<RowFormat, String> {
    McpConfig::from_vars([("EROS_MCP_ROW_FORMAT".to_string(), value.to_string())])
        .map(|config| config.row_format)
        .map_err(|e| e.to_string())
}

#[test]
fn rows_are_csv_by_default() {
    assert_eq!(McpConfig::default().row_format, RowFormat::Csv);
}

#[test]
fn json_rows_can_be_asked_for() {
    assert_eq!(row_format("json").unwrap(), RowFormat::Json);
}

#[test]
fn an_unknown_row_format_is_refused_with_the_choices() {
    let err = row_format("xml").unwrap_err();
    assert!(
        err.starts_with(r#"invalid EROS_MCP_ROW_FORMAT="xml""#) && err.contains("csv or json"),
        "{err}"
    );
}

#[test]
fn a_prewarm_that_is_not_a_number_is_refused_by_name() {
    let err = config(&[("EROS_DB_POOL_PREWARM", "lots")]).unwrap_err();
    assert!(
        err.starts_with(r#"invalid EROS_DB_POOL_PREWARM="lots""#),
        "{err}"
    );
}

fn mcp(name: &str, value: &str) -> Result<McpConfig, String> {
    McpConfig::from_vars([(name.to_string(), value.to_string())]).map_err(|e| e.to_string())
}

#[test]
fn client_limits_default_to_the_documented_values() {
    let config = McpConfig::default();
    assert_eq!(
        (
            config.max_in_flight,
            config.max_sessions,
            config.max_connections
        ),
        (32, 256, 512)
    );
    assert_eq!(config.session_idle_timeout, Duration::from_secs(300));
    assert_eq!(config.header_timeout, Duration::from_secs(10));
    assert_eq!(config.body_timeout, Duration::from_secs(30));
}

#[test]
fn client_limits_out_of_range_are_refused_naming_the_variable() {
    for (name, value) in [
        ("EROS_MCP_MAX_IN_FLIGHT", "0"),
        ("EROS_MCP_MAX_SESSIONS", "0"),
        ("EROS_MCP_MAX_CONNECTIONS", "0"),
        ("EROS_MCP_SESSION_IDLE_TIMEOUT", "0.5"),
        ("EROS_MCP_HEADER_TIMEOUT", "0"),
        ("EROS_MCP_BODY_TIMEOUT", "-1"),
        ("EROS_MCP_MAX_SESSIONS", "many"),
    ] {
        let err = mcp(name, value).unwrap_err();
        assert!(
            err.starts_with(&format!("invalid {name}={value:?}")),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }
    assert_eq!(
        mcp("EROS_MCP_HEADER_TIMEOUT", "2.5")
            .unwrap()
            .header_timeout,
        Duration::from_millis(2500)
    );
}

fn read_doc(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// The row docs/configuration.md holds for `setting`, derived from its
/// declaration: `| `VARIABLE` | `default` | allowed | meaning |`.
fn reference_row(setting: &Setting) -> String {
    let default = match setting.default {
        "" => "empty".to_string(),
        default => format!("`{default}`"),
    };
    let meaning: Vec<&str> = setting.doc.lines().map(str::trim).collect();
    format!(
        "| `{}` | {default} | {} | {} |",
        setting.variable(),
        setting.allowed(),
        meaning.join(" ")
    )
}

/// Every declared setting has its row in docs/configuration.md exactly as
/// its declaration says (default, allowed values, meaning), and every row
/// there names a declared variable. `BLESS=1` rewrites the rows from the
/// declarations instead of comparing.
#[test]
fn every_setting_is_in_the_configuration_reference_as_declared() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let mut reference = read_doc("docs/configuration.md");
    let bless = std::env::var_os("BLESS").is_some();
    for setting in Config::settings() {
        let variable = setting.variable();
        let expected = reference_row(setting);
        let row = reference
            .lines()
            .find(|line| line.starts_with(&format!("| `{variable}` |")))
            .unwrap_or_else(|| panic!("{variable} has no row in docs/configuration.md"))
            .to_string();
        if bless {
            reference = reference.replace(&row, &expected);
        } else {
            assert_eq!(
                row, expected,
                "docs/configuration.md differs from the declaration of {variable} \
                 (BLESS=1 cargo test --test operations config:: rewrites it)"
            );
        }
    }
    if bless {
        std::fs::write(&path, &reference).unwrap();
    }
    for row in reference
        .lines()
        .filter(|line| line.starts_with("| `EROS_"))
    {
        let variable = row.split('`').nth(1).unwrap();
        assert!(
            LOGGING.contains(&variable) || declared(variable),
            "{variable} is in docs/configuration.md but not declared"
        );
    }
}

/// The two variables the command line reads (clap, in `src/main.rs`).
const LOGGING: [&str; 2] = ["EROS_LOG", "EROS_LOG_FORMAT"];

/// Names the unit tests use to show that a misspelled variable is refused.
const MISSPELLED: [&str; 3] = ["EROS_AUTH_ISUER", "EROS_AUDIT_PARMS", "EROS_DB_POOL_SZIE"];

fn declared(variable: &str) -> bool {
    Config::settings().any(|s| s.variable() == variable)
}

/// Every `EROS_*` name written anywhere in the repository (code, messages,
/// docs, manifests, dashboards, scripts) is a declared variable, one of the
/// layers' prefixes, or a deliberate misspelling: renaming a variable in
/// its declaration fails here until every mention follows.
#[test]
fn every_variable_named_anywhere_is_declared() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let prefixes = [
        DatabaseConfig::PREFIX,
        eros_mcp::config::DatabasesConfig::PREFIX,
        McpConfig::PREFIX,
        AuthConfig::PREFIX,
        AuditConfig::PREFIX,
        MetricsConfig::PREFIX,
    ];
    let mut unknown = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with('.') && name != ".env.example" && name != ".ci"
                || ["target", "node_modules"].contains(&name.as_str())
            {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let mut rest = text.as_str();
            while let Some(at) = rest.find("EROS_") {
                let inside_a_word = rest[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(tail.len());
                let word = &tail[..end];
                rest = &tail[end..];
                let known = inside_a_word
                    || declared(word)
                    || LOGGING.contains(&word)
                    || MISSPELLED.contains(&word)
                    || word == "EROS_"
                    || prefixes.contains(&word);
                if !known {
                    unknown.push(format!(
                        "{}: {word}",
                        path.strip_prefix(root).unwrap().display()
                    ));
                }
            }
        }
    }
    unknown.sort();
    unknown.dedup();
    assert!(
        unknown.is_empty(),
        "undeclared variables named: {unknown:#?}"
    );
}

/// The README stays an overview: at most 250 lines, and it says nothing
/// happens "by default" (defaults are in docs/configuration.md).
#[test]
fn the_readme_stays_short() {
    let readme = read_doc("README.md");
    let lines = readme.lines().count();
    assert!(lines <= 250, "README.md has {lines} lines, more than 250");
    assert!(
        !readme.to_lowercase().contains("by default"),
        "README.md says \"by default\": defaults belong in docs/configuration.md"
    );
}

/// Defaults are stated once, in docs/configuration.md (checked against the
/// declarations above): the README and every other page name a variable
/// without its default, so none can go stale.
#[test]
fn no_page_but_the_configuration_reference_states_a_default() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut pages = vec!["README.md".to_string()];
    for entry in std::fs::read_dir(&docs).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".md") && name != "configuration.md" {
            pages.push(format!("docs/{name}"));
        }
    }
    for page in pages {
        let text = read_doc(&page);
        for setting in Config::settings().filter(|s| !s.default.is_empty()) {
            let variable = setting.variable();
            let default = setting.default;
            let stated = [
                format!("{variable}={default}"),
                format!("`{variable}` ({default}"),
                format!("`{variable}` (default"),
            ];
            for stated in stated {
                assert!(
                    !text.contains(&stated),
                    "{page} states {variable}'s default ({stated:?}); say it in docs/configuration.md"
                );
            }
            // A number in parentheses right after a variable is a default
            // written out by hand ("(30 s)", "(1 MiB)").
            let after = format!("`{variable}` (");
            for (at, _) in text.match_indices(&after) {
                let next = text[at + after.len()..].chars().next();
                assert!(
                    !next.is_some_and(|c| c.is_ascii_digit()),
                    "{page}: {variable} is followed by a number in parentheses; defaults are in docs/configuration.md"
                );
            }
        }
    }
}

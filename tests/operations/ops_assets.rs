//! The operations assets checked offline, one behaviour per test: the
//! Prometheus alert rules (promtool's own checks and unit tests, and what
//! operators rely on in each alert), the Grafana dashboard (loads by file
//! provisioning, scoped to its instance variable, shows what docs/operations.md
//! promises, and every expression parses in promtool), the Grafana
//! provisioning files, the Dockerfile, and that CI runs the README's test
//! command. The Kubernetes manifests are checked in tests/operations/kubernetes.rs.
//!
//! promtool and kubernetes-validate are the real tools: `.ci/provision`
//! installs them, and a test whose tool is missing fails saying so. What
//! needs a running server and Prometheus is in tests/operations/prometheus.rs.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::ops::promql::{self, contains_word, selectors};
use common::ops::tools::{run, tool};
use common::ops::{
    alert, dashboard, dockerfile_instructions, query_panels, read, repo, rules, yaml,
    DASHBOARD_PROVISIONING, DATASOURCE_PROVISIONING, RULES, RULES_TESTS,
};
use serde_json::{json, Value};

/// The datasource every panel and target must use: the template variable.
fn datasource_variable() -> Value {
    json!({"type": "prometheus", "uid": "${datasource}"})
}

/// Fails with every problem found, one per line.
fn assert_no_problems(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

// ---------------------------------------------------------------- alert rules

/// Each alert operators are told about (docs/operations.md, "Grafana,
/// alerts, Kubernetes"): the metric its expression must use and its `for`.
const ALERTS: [(&str, &str, Option<&str>); 11] = [
    (
        "EROSPoolUtilizationHigh",
        "mcp_db_pool_max_connections",
        Some("5m"),
    ),
    (
        "EROSPoolCheckoutTimeouts",
        "mcp_db_pool_checkout_timeouts_total",
        None,
    ),
    (
        "EROSConnectionFailures",
        "mcp_db_connections_failed_total",
        None,
    ),
    ("EROSNotReady", "mcp_ready", Some("2m")),
    ("EROSDown", "up{job=\"eros-mcp\"}", Some("1m")),
    ("EROSDatabaseFileChanged", "mcp_db_file_changed", None),
    ("EROSDatabaseCorrupt", "mcp_db_corruption_detected", None),
    (
        "EROSStatementsOverrunning",
        "mcp_db_statements_overrunning",
        Some("5m"),
    ),
    (
        "EROSReplicaLagging",
        "mcp_db_replica_lag_seconds > mcp_db_replica_max_lag_seconds",
        Some("2m"),
    ),
    (
        "EROSReplicaNoHeartbeat",
        "mcp_db_replica_max_lag_seconds unless mcp_db_replica_lag_seconds",
        Some("10m"),
    ),
    (
        "EROSQuotaRefusals",
        "mcp_quota_rejections_total",
        Some("10m"),
    ),
];

#[test]
fn the_alert_rules_pass_promtool_check_rules() {
    let report = run("promtool", &["check", "rules", RULES], None);
    assert!(
        report.success,
        "promtool check rules {RULES}:\n{}",
        report.text
    );
}

#[test]
fn the_alert_rules_pass_their_promtool_unit_tests() {
    let report = run("promtool", &["test", "rules", RULES_TESTS], None);
    assert!(
        report.success,
        "promtool test rules {RULES_TESTS}:\n{}",
        report.text
    );
}

#[test]
fn every_documented_alert_exists_and_uses_its_metric() {
    let problems = ALERTS
        .iter()
        .filter_map(|(name, metric, _)| match alert(name) {
            None => Some(format!("missing alert {name}")),
            Some(rule) if !rule["expr"].as_str().unwrap_or("").contains(metric) => Some(format!(
                "{name}: expr {} does not use {metric}",
                rule["expr"]
            )),
            Some(_) => None,
        })
        .collect();
    assert_no_problems(RULES, problems);
}

#[test]
fn alerts_that_wait_do_so_for_the_documented_time() {
    let problems = ALERTS
        .iter()
        .filter_map(|(name, _, wait)| {
            let wait = (*wait)?;
            let rule = alert(name)?;
            (rule["for"] != wait).then(|| format!("{name}: for is {}, want {wait}", rule["for"]))
        })
        .collect();
    assert_no_problems(RULES, problems);
}

#[test]
fn every_alert_is_labelled_warning_or_critical() {
    let problems = rules()
        .iter()
        .filter(|rule| rule["alert"].is_string())
        .filter(|rule| {
            !matches!(
                rule["labels"]["severity"].as_str(),
                Some("warning" | "critical")
            )
        })
        .map(|rule| format!("{}: severity label missing or unknown", rule["alert"]))
        .collect();
    assert_no_problems(RULES, problems);
}

#[test]
fn every_alert_has_a_summary_and_a_description() {
    let mut problems = Vec::new();
    for rule in rules().iter().filter(|rule| rule["alert"].is_string()) {
        for annotation in ["summary", "description"] {
            if rule["annotations"][annotation]
                .as_str()
                .unwrap_or("")
                .trim()
                .is_empty()
            {
                problems.push(format!(
                    "{}: annotation {annotation} missing",
                    rule["alert"]
                ));
            }
        }
    }
    assert_no_problems(RULES, problems);
}

// ---------------------------------------------------------------- dashboard

#[test]
fn the_dashboard_is_a_json_object() {
    let text = read(common::ops::DASHBOARD);
    let parsed: Result<Value, _> = serde_json::from_str(&text);
    assert!(
        parsed.as_ref().is_ok_and(Value::is_object),
        "{}: {parsed:?}",
        common::ops::DASHBOARD
    );
}

#[test]
fn the_dashboard_loads_by_file_provisioning_without_the_import_wizard() {
    // `__inputs` and `${DS_...}` placeholders belong to exports for sharing:
    // only the UI import wizard resolves them.
    let text = read(common::ops::DASHBOARD);
    assert!(
        !text.contains("__inputs"),
        "the dashboard contains \"__inputs\""
    );
    assert!(
        !text.contains("${DS_"),
        "the dashboard contains \"${{DS_\" placeholders"
    );
}

#[test]
fn the_dashboard_uid_is_eros_mcp() {
    assert_eq!(dashboard()["uid"], "eros-mcp");
}

#[test]
fn the_dashboard_schema_is_version_36_or_newer() {
    let version = &dashboard()["schemaVersion"];
    assert!(
        version.as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {version} is older than 36 (or not a number)"
    );
}

#[test]
fn the_dashboard_carries_no_database_id() {
    let id = &dashboard()["id"];
    assert!(
        id.is_null(),
        "a provisioned dashboard must not carry a database id (id={id})"
    );
}

/// The dashboard's template variable named `name`.
fn variable(name: &str) -> Value {
    dashboard()["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no template variable {name:?}"))
}

#[test]
fn the_datasource_variable_picks_a_prometheus_datasource() {
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource", "{datasource}");
    assert_eq!(datasource["query"], "prometheus", "{datasource}");
}

#[test]
fn the_instance_variable_lists_the_instances_exporting_the_pool_size() {
    let instance = variable("instance");
    assert_eq!(instance["type"], "query", "{instance}");
    let query = match &instance["query"] {
        Value::Object(query) => query["query"].clone(),
        query => query.clone(),
    };
    assert_eq!(
        query, "label_values(mcp_db_pool_size, instance)",
        "{instance}"
    );
    assert_eq!(instance["datasource"], datasource_variable(), "{instance}");
}

#[test]
fn panel_ids_are_unique() {
    let dashboard = dashboard();
    let mut seen = BTreeSet::new();
    let problems = common::ops::panels(&dashboard)
        .into_iter()
        .filter(|panel| !seen.insert(panel["id"].to_string()))
        .map(|panel| format!("duplicate panel id {} ({})", panel["id"], panel["title"]))
        .collect();
    assert_no_problems("dashboard", problems);
}

#[test]
fn every_panel_fits_the_24_column_grid() {
    let dashboard = dashboard();
    let problems = common::ops::panels(&dashboard)
        .into_iter()
        .filter(|panel| {
            let grid = &panel["gridPos"];
            grid["x"].as_u64().unwrap_or(0) + grid["w"].as_u64().unwrap_or(0) > 24
        })
        .map(|panel| format!("panel {} is wider than the grid", panel["title"]))
        .collect();
    assert_no_problems("dashboard", problems);
}

#[test]
fn every_panel_and_target_uses_the_datasource_variable() {
    let dashboard = dashboard();
    let mut problems = Vec::new();
    for panel in query_panels(&dashboard) {
        if panel["datasource"] != datasource_variable() {
            problems.push(format!(
                "panel {} datasource is {}",
                panel["title"], panel["datasource"]
            ));
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            if target["datasource"] != datasource_variable() {
                problems.push(format!(
                    "panel {} target {} datasource is {}",
                    panel["title"], target["refId"], target["datasource"]
                ));
            }
        }
    }
    assert_no_problems("dashboard", problems);
}

#[test]
fn every_panel_has_targets_and_every_target_an_expression() {
    let dashboard = dashboard();
    let mut problems = Vec::new();
    for panel in query_panels(&dashboard) {
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {} has no targets", panel["title"]));
        }
        for target in targets {
            if target["expr"].as_str().unwrap_or("").trim().is_empty() {
                problems.push(format!(
                    "panel {} target {} has no expr",
                    panel["title"], target["refId"]
                ));
            }
        }
    }
    assert_no_problems("dashboard", problems);
}

/// Every panel expression as written (Grafana variables not substituted).
fn panel_expressions() -> Vec<(String, String)> {
    let dashboard = dashboard();
    query_panels(&dashboard)
        .into_iter()
        .flat_map(|panel| {
            panel["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|target| {
                    (
                        panel["title"].as_str().unwrap_or("?").to_string(),
                        target["expr"].as_str().unwrap_or("").to_string(),
                    )
                })
        })
        .collect()
}

#[test]
fn every_metric_selector_is_scoped_to_the_instance_variable() {
    // The `$instance` to `.*` substitution of the PromQL checks relies on it,
    // and so do the users of the instance picker.
    let mut problems = Vec::new();
    for (title, expr) in panel_expressions() {
        for selector in selectors(&expr) {
            let matchers = selector.matchers.unwrap_or_default();
            if !matchers.contains("instance=~\"$instance\"") {
                problems.push(format!(
                    "panel {title:?}: {} lacks instance=~\"$instance\" in {expr:?}",
                    selector.metric
                ));
            }
        }
    }
    assert_no_problems("dashboard", problems);
}

#[test]
fn no_expression_matches_instance_other_than_by_the_variable() {
    let mut problems = Vec::new();
    for (title, expr) in panel_expressions() {
        for (at, _) in expr.match_indices("instance=") {
            let value = &expr[at + "instance=".len()..];
            let value = value.strip_prefix('~').unwrap_or(value);
            if value.starts_with('"') && !value.starts_with("\"$instance\"") {
                problems.push(format!(
                    "panel {title:?}: other instance matcher in {expr:?}"
                ));
            }
        }
    }
    assert_no_problems("dashboard", problems);
}

#[test]
fn the_dashboard_queries_every_pool_tool_and_database_metric() {
    let all: String = panel_expressions()
        .into_iter()
        .map(|(_, expr)| expr + " ")
        .collect();
    let problems = [
        "mcp_db_pool_size",
        "mcp_db_pool_available",
        "mcp_db_pool_in_use",
        "mcp_db_pool_overflow",
        "mcp_db_pool_max_connections",
        "mcp_db_pool_waiters",
        "mcp_db_connections_created_total",
        "mcp_db_connections_recycled_total",
        "mcp_db_connections_failed_total",
        "mcp_db_pool_checkout_timeouts_total",
        "mcp_db_pool_checkout_wait_seconds_bucket",
        "mcp_tool_calls_total",
        "mcp_tool_call_duration_seconds_bucket",
        "mcp_tool_rows_returned_total",
        "mcp_tool_bytes_returned_total",
        "mcp_db_file_size_bytes",
        "mcp_db_wal_size_bytes",
        "mcp_ready",
        "mcp_db_replica_lag_seconds",
        "mcp_db_replica_max_lag_seconds",
    ]
    .into_iter()
    .filter(|metric| !contains_word(&all, metric))
    .map(|metric| format!("no panel queries {metric}"))
    .collect();
    assert_no_problems("dashboard", problems);
}

#[test]
fn the_checkout_wait_panel_shows_p50_p95_and_p99() {
    let all: String = panel_expressions()
        .into_iter()
        .map(|(_, e)| e + " ")
        .collect();
    let problems = ["0.50", "0.95", "0.99"]
        .into_iter()
        .filter(|q| {
            let query = format!(
                "histogram_quantile({q}, sum by (instance, le) (rate(mcp_db_pool_checkout_wait_seconds_bucket"
            );
            !all.contains(&query)
        })
        .map(|q| format!("checkout wait p{} missing", &q[2..]))
        .collect();
    assert_no_problems("dashboard", problems);
}

#[test]
fn an_errors_panel_shows_the_calls_whose_outcome_is_not_ok() {
    assert!(
        panel_expressions()
            .iter()
            .any(|(_, e)| e.contains("outcome!=\"ok\"")),
        "no errors panel (outcome!=\"ok\")"
    );
}

#[test]
fn the_pool_utilization_panel_marks_the_80_percent_line() {
    let dashboard = dashboard();
    let panel = query_panels(&dashboard)
        .into_iter()
        .find(|p| p["title"] == "Pool utilization" && p["type"] == "timeseries")
        .expect("a timeseries panel titled \"Pool utilization\"");
    let steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"].clone();
    assert!(
        steps
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["value"] == 0.8),
        "Pool utilization thresholds lack 0.8: {steps}"
    );
}

#[test]
fn the_replica_lag_panel_draws_each_replicas_own_max_lag_as_a_dashed_red_line() {
    let dashboard = dashboard();
    let panel = query_panels(&dashboard)
        .into_iter()
        .find(|p| p["title"] == "Replica lag" && p["type"] == "timeseries")
        .expect("a timeseries panel titled \"Replica lag\"");
    assert_eq!(panel["fieldConfig"]["defaults"]["unit"], "s", "{panel}");
    let targets = panel["targets"].as_array().cloned().unwrap_or_default();
    let ref_of = |metric: &str| {
        targets
            .iter()
            .find(|t| t["expr"] == format!("{metric}{{instance=~\"$instance\"}}"))
            .and_then(|t| t["refId"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("Replica lag does not plot {metric} per instance"))
    };
    ref_of("mcp_db_replica_lag_seconds");
    let max = ref_of("mcp_db_replica_max_lag_seconds");
    // The threshold is the max-lag series itself, styled as a threshold line.
    let overrides = panel["fieldConfig"]["overrides"].as_array().cloned();
    let style = overrides
        .into_iter()
        .flatten()
        .find(|o| o["matcher"]["id"] == "byFrameRefID" && o["matcher"]["options"] == max)
        .unwrap_or_else(|| panic!("no override for the max-lag target {max}"));
    let property = |id: &str| {
        style["properties"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["id"] == id)
            .map(|p| p["value"].clone())
            .unwrap_or_else(|| panic!("the max-lag override lacks {id}: {style}"))
    };
    assert_eq!(property("color")["fixedColor"], "red", "{style}");
    assert_eq!(property("custom.lineStyle")["fill"], "dash", "{style}");
}

// ---------------------------------------------------------------- PromQL

#[test]
fn grafana_variables_become_values_prometheus_accepts() {
    let substituted = promql::substitute(
        "rate(x{instance=~\"$instance\"}[$__rate_interval]) + y{instance=~\"${instance:regex}\"}[${__range}] + [[instance]]",
        "test",
    );
    assert_eq!(
        substituted.as_deref(),
        Ok("rate(x{instance=~\".*\"}[1m]) + y{instance=~\".*\"}[1m] + .*")
    );
}

#[test]
fn an_unknown_grafana_variable_is_an_error_naming_it() {
    let err = promql::substitute("up{job=\"$job\"}", "dashboard: panel \"X\" A").unwrap_err();
    assert!(
        err.contains("\"$job\"") && err.contains("panel \"X\" A"),
        "{err}"
    );
}

#[test]
fn dashboard_and_rule_expressions_use_only_variables_the_checks_substitute() {
    let found = promql::expressions(&dashboard(), &yaml(RULES));
    let found = found.unwrap_or_else(|err| panic!("{err}"));
    // 39 panel queries and 10 alerts, less duplicates, when this was written.
    assert!(
        found.len() >= 30,
        "only {} expressions: {found:?}",
        found.len()
    );
}

#[test]
fn every_dashboard_and_rule_expression_parses_in_promtool() {
    // Prometheus' own parser, through promtool: each expression becomes a
    // recording rule of a generated rules file.
    let expressions = promql::expressions(&dashboard(), &yaml(RULES)).unwrap();
    let rules: Vec<Value> = expressions
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"record": format!("ops_assets:expr_{i}"), "expr": e.expr}))
        .collect();
    let file = json!({"groups": [{"name": "promql-expressions", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("expressions.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&file).unwrap()).unwrap();
    let report = run(
        "promtool",
        &["check", "rules", path.to_str().unwrap()],
        None,
    );
    let sources: Vec<String> = expressions
        .iter()
        .enumerate()
        .map(|(i, e)| format!("expr_{i}: {} = {}", e.source, e.expr))
        .collect();
    assert!(
        report.success,
        "promtool rejects an expression:\n{}\nexpressions:\n{}",
        report.text,
        sources.join("\n")
    );
}

// ---------------------------------------------------------------- Grafana provisioning

#[test]
fn the_provisioned_datasource_is_prometheus_with_uid_prometheus() {
    let file = yaml(DATASOURCE_PROVISIONING);
    let datasource = &file["datasources"][0];
    assert_eq!(file["apiVersion"], 1, "{DATASOURCE_PROVISIONING}");
    assert_eq!(datasource["type"], "prometheus", "{datasource}");
    assert_eq!(datasource["uid"], "prometheus", "{datasource}");
}

#[test]
fn the_provisioned_datasource_url_comes_from_the_environment() {
    let url = yaml(DATASOURCE_PROVISIONING)["datasources"][0]["url"].clone();
    assert!(
        url.as_str().is_some_and(|u| u.contains('$')),
        "datasource url {url} should come from an environment variable"
    );
}

#[test]
fn the_dashboard_provider_reads_files_from_an_absolute_path() {
    let file = yaml(DASHBOARD_PROVISIONING);
    let provider = &file["providers"][0];
    assert_eq!(file["apiVersion"], 1, "{DASHBOARD_PROVISIONING}");
    assert_eq!(provider["type"], "file", "{provider}");
    assert!(
        provider["options"]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with('/')),
        "options.path must be absolute: {provider}"
    );
}

// ---------------------------------------------------------------- Docker

/// Whether a Dockerfile instruction satisfies `matches`.
fn dockerfile_has(matches: impl Fn(&str) -> bool) -> bool {
    dockerfile_instructions().iter().any(|i| matches(i))
}

#[test]
fn the_image_is_built_by_a_locked_release_build_in_a_rust_stage() {
    let mut problems = Vec::new();
    if !dockerfile_has(|i| {
        i.starts_with("FROM rust:") && i.ends_with(" AS build") && i.split(' ').count() == 4
    }) {
        problems.push("no `FROM rust:<tag> AS build` stage".to_string());
    }
    if !dockerfile_has(|i| i.contains("cargo build --release --locked")) {
        problems.push("no `cargo build --release --locked`".to_string());
    }
    if !dockerfile_has(|i| i.starts_with("COPY migrations")) {
        problems.push("migrations/ (embedded at compile time) is not copied".to_string());
    }
    assert_no_problems("Dockerfile", problems);
}

#[test]
fn the_runtime_image_is_distroless_and_runs_as_uid_10001() {
    assert!(dockerfile_has(
        |i| i.starts_with("FROM gcr.io/distroless/cc-debian12")
    ));
    assert!(dockerfile_has(|i| i.starts_with("USER 10001")));
}

#[test]
fn the_image_serves_http_on_8080_and_metrics_on_9090_from_data() {
    let mut problems = Vec::new();
    for (what, ok) in [
        (
            "EXPOSE 8080 9090",
            dockerfile_has(|i| i == "EXPOSE 8080 9090"),
        ),
        (
            "ENTRYPOINT [\"eros-mcp\"]",
            dockerfile_has(|i| i == "ENTRYPOINT [\"eros-mcp\"]"),
        ),
    ] {
        if !ok {
            problems.push(format!("lacks {what}"));
        }
    }
    for setting in [
        "EROS_MCP_TRANSPORT=http",
        "EROS_MCP_HTTP_ADDR=0.0.0.0:8080",
        "EROS_METRICS_ADDR=0.0.0.0:9090",
        "EROS_DB_PATH=/data/",
    ] {
        if !dockerfile_has(|i| i.starts_with("ENV ") && i.contains(setting)) {
            problems.push(format!("lacks ENV {setting}"));
        }
    }
    assert_no_problems("Dockerfile", problems);
}

#[test]
fn the_docker_context_leaves_out_target_and_databases() {
    let ignore = read(".dockerignore");
    let lines: Vec<&str> = ignore.lines().map(str::trim).collect();
    assert!(lines.contains(&"target/"), ".dockerignore lacks target/");
    assert!(
        lines.iter().any(|l| l.starts_with("database/*.db")),
        ".dockerignore lacks database/*.db"
    );
}

/// Copies `source` (a file or a directory's contents) to `dest`.
fn copy_into(source: &Path, dest: &Path) {
    if source.is_dir() {
        std::fs::create_dir_all(dest).unwrap();
        for entry in std::fs::read_dir(source).unwrap() {
            let entry = entry.unwrap();
            copy_into(&entry.path(), &dest.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(source, dest)
            .unwrap_or_else(|err| panic!("copy {}: {err}", source.display()));
    }
}

#[test]
fn the_docker_build_stage_copies_every_file_cargo_needs() {
    // The build stage's COPY lines, replayed into a scratch directory, must
    // give cargo a loadable, locked project: every manifest, target and
    // workspace member it declares. `cargo fetch` loads all of them without
    // compiling (crates already in cargo's cache are not downloaded again).
    let instructions = dockerfile_instructions();
    let build_stage = instructions
        .iter()
        .skip_while(|i| !i.starts_with("FROM rust:"))
        .skip(1)
        .take_while(|i| !i.starts_with("FROM "));
    let context = tempfile::tempdir().unwrap();
    let mut copied = Vec::new();
    for copy in build_stage.filter_map(|i| i.strip_prefix("COPY ")) {
        let words: Vec<&str> = copy
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let (dest, sources) = words.split_last().expect("COPY <src>... <dest>");
        assert!(
            !dest.starts_with('/'),
            "COPY to {dest}: relative to WORKDIR expected"
        );
        // Docker's rules: into a directory when the destination ends with
        // `/` or there are several sources; a directory's contents are copied.
        let into_dir = dest.ends_with('/') || sources.len() > 1;
        let dest = context.path().join(dest.trim_start_matches("./"));
        for source in sources {
            let from = repo().join(source);
            assert!(
                from.exists(),
                "the Dockerfile copies {source}, which does not exist"
            );
            let to = if from.is_file() && into_dir {
                dest.join(Path::new(source).file_name().unwrap())
            } else {
                dest.clone()
            };
            copy_into(&from, &to);
            copied.push(source.to_string());
        }
    }
    let host = String::from_utf8(Command::new("rustc").arg("-vV").output().unwrap().stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .args(["fetch", "--locked", "--target", &host])
        .current_dir(context.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo cannot load the project from what the Dockerfile copies ({}):\n{}",
        copied.join(", "),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------- README and CI

/// The commands of the README's "Set up a fresh machine" block, comments dropped.
fn readme_setup_commands() -> Vec<String> {
    let readme = read("README.md");
    let section = readme
        .split_once("## Set up a fresh machine")
        .expect("README has \"## Set up a fresh machine\"")
        .1;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a ```sh block under \"Set up a fresh machine\"")
        .0;
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_readme_starts_with_two_commands_to_serve_and_to_test() {
    let commands = readme_setup_commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(commands[0].starts_with("cargo run"), "{commands:?}");
    assert!(commands[1].contains("cargo test"), "{commands:?}");
}

#[test]
fn ci_runs_the_readme_test_command_word_for_word() {
    let test_command = readme_setup_commands().pop().unwrap();
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == test_command),
        ".ci/run does not run the README's test command {test_command:?}"
    );
}

#[test]
fn the_tools_the_checks_need_are_installed() {
    // Named here so that a machine without them fails once with the fix
    // (`.ci/provision`), whatever else fails after.
    for name in ["promtool", "prometheus", "kubernetes-validate"] {
        tool(name);
    }
}

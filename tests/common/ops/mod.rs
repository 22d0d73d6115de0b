//! The operations assets as data: the Prometheus alert rules and their unit
//! tests, the Grafana dashboard and provisioning files, the Kubernetes
//! manifests and the Dockerfile, read from the repository; the PromQL in
//! them ([`promql`]) and the outside tools that check them ([`tools`]).
#![allow(dead_code)]

pub mod promql;
pub mod tools;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub const RULES: &str = "grafana/alerts/eros-mcp-rules.yaml";
pub const RULES_TESTS: &str = "grafana/alerts/eros-mcp-rules.test.yaml";
pub const DASHBOARD: &str = "grafana/dashboards/eros-mcp.json";
pub const DATASOURCE_PROVISIONING: &str = "grafana/provisioning/datasources/prometheus.yaml";
pub const DASHBOARD_PROVISIONING: &str = "grafana/provisioning/dashboards/eros-mcp.yaml";
pub const KUBERNETES: &str = "deploy/kubernetes";

/// The repository's root directory.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The text of a file, by its path from the repository root.
pub fn read(path: &str) -> String {
    let full = repo().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|err| panic!("read {}: {err}", full.display()))
}

/// A YAML file of one document, as JSON-shaped data.
pub fn yaml(path: &str) -> Value {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// Every non-empty document of a YAML file.
pub fn yaml_documents(path: &str) -> Vec<Value> {
    use serde::Deserialize;
    let text = read(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap_or_else(|err| panic!("{path}: {err}")))
        .filter(|document| !document.is_null())
        .collect()
}

/// A JSON file.
pub fn json(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// The Grafana dashboard.
pub fn dashboard() -> Value {
    json(DASHBOARD)
}

/// Every panel of a dashboard, the panels of collapsed rows included, in order.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, into: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            into.push(panel);
            walk(&panel["panels"], into);
        }
    }
    let mut all = Vec::new();
    walk(&dashboard["panels"], &mut all);
    all
}

/// The panels that query (every panel but the rows).
pub fn query_panels(dashboard: &Value) -> Vec<&Value> {
    panels(dashboard)
        .into_iter()
        .filter(|panel| panel["type"] != "row")
        .collect()
}

/// Every rule (alerting and recording) of the alert rules file, in order.
pub fn rules() -> Vec<Value> {
    yaml(RULES)["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The alerting rule named `name`.
pub fn alert(name: &str) -> Option<Value> {
    rules().into_iter().find(|rule| rule["alert"] == name)
}

/// One document of a Kubernetes manifest file.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The file's name inside deploy/kubernetes/.
    pub file: String,
    pub doc: Value,
}

impl Manifest {
    pub fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or("")
    }

    /// The API group of `apiVersion` ("" for the core group of `v1`).
    pub fn api_group(&self) -> &str {
        let api_version = self.doc["apiVersion"].as_str().unwrap_or("");
        api_version.rsplit_once('/').map_or("", |(group, _)| group)
    }

    /// Whether Kubernetes' own API schemas (which kubernetes-validate has
    /// offline) describe this kind: the core and `*.k8s.io` groups and the
    /// built-in ones without a dot (`apps`, `batch`...), not CRDs such as
    /// `monitoring.coreos.com` nor kustomize's `kustomize.config.k8s.io`.
    pub fn has_offline_schema(&self) -> bool {
        let group = self.api_group();
        !group.starts_with("kustomize.") && (!group.contains('.') || group.ends_with(".k8s.io"))
    }
}

/// Every manifest document in deploy/kubernetes/, by file name.
pub fn manifests() -> Vec<Manifest> {
    manifest_files()
        .into_iter()
        .flat_map(|path| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            yaml_documents(&format!("{KUBERNETES}/{file}"))
                .into_iter()
                .map(move |doc| Manifest {
                    file: file.clone(),
                    doc,
                })
        })
        .collect()
}

/// The `*.yaml` files of deploy/kubernetes/, sorted.
pub fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(KUBERNETES))
        .expect("deploy/kubernetes")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// The one manifest of `kind` (panics naming the kind when there is not
/// exactly one).
pub fn the(kind: &str) -> Value {
    let found: Vec<Manifest> = manifests()
        .into_iter()
        .filter(|m| m.kind() == kind)
        .collect();
    assert_eq!(found.len(), 1, "want exactly one {kind}, found {found:?}");
    found.into_iter().next().unwrap().doc
}

/// The manifest of `kind` named `name` (panics naming both when there is
/// not exactly one).
pub fn named(kind: &str, name: &str) -> Value {
    let found: Vec<Manifest> = manifests()
        .into_iter()
        .filter(|m| m.kind() == kind && m.doc["metadata"]["name"] == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "want exactly one {kind} named {name}, found {}",
        found.len()
    );
    found.into_iter().next().unwrap().doc
}

/// Every manifest of `kind`.
pub fn all(kind: &str) -> Vec<Value> {
    manifests()
        .into_iter()
        .filter(|m| m.kind() == kind)
        .map(|m| m.doc)
        .collect()
}

/// The primary's Deployment (deployment.yaml): the writer, with Litestream.
pub const PRIMARY: &str = "eros-mcp";
/// The read replicas' Deployment (deployment-replica.yaml).
pub const REPLICA: &str = "eros-mcp-replica";
/// Both Deployments that run eros-mcp.
pub const DEPLOYMENTS: [&str; 2] = [PRIMARY, REPLICA];
/// The Service of each Deployment: writes, and reads.
pub const SERVICES: [(&str, &str); 2] = [(PRIMARY, "eros-mcp"), (REPLICA, "eros-mcp-read")];

/// The pod template of the Deployment named `deployment`.
pub fn pod_template(deployment: &str) -> Value {
    named("Deployment", deployment)["spec"]["template"].clone()
}

/// The (only) container of the Deployment named `deployment`: eros-mcp.
pub fn container(deployment: &str) -> Value {
    let containers = pod_template(deployment)["spec"]["containers"].clone();
    let containers = containers.as_array().expect("containers");
    assert_eq!(
        containers.len(),
        1,
        "{deployment}: one container: {containers:?}"
    );
    containers[0].clone()
}

/// The init containers (native sidecars among them) of `deployment`, in order.
pub fn init_containers(deployment: &str) -> Vec<Value> {
    pod_template(deployment)["spec"]["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The init container named `name` of `deployment`.
pub fn init_container(deployment: &str, name: &str) -> Value {
    init_containers(deployment)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{deployment} has no init container {name}"))
}

/// Every container of `deployment`, init containers first.
pub fn all_containers(deployment: &str) -> Vec<Value> {
    let mut containers = init_containers(deployment);
    containers.push(container(deployment));
    containers
}

/// A container's literal `env` values by name (`valueFrom` entries left out).
pub fn env_values(container: &Value) -> std::collections::BTreeMap<String, String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// A container's `env` entries by name.
pub fn env_entries(container: &Value) -> std::collections::BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["name"].as_str().unwrap_or("").to_string(), e.clone()))
        .collect()
}

/// Kubernetes' `$(VAR)` expansion of a command argument from `env` (a
/// reference to a variable not in `env` stays as written, as the kubelet
/// leaves it; `$$` is a literal `$`).
pub fn expand_argument(argument: &str, env: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = argument;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after
            .strip_prefix('(')
            .and_then(|inner| inner.split_once(')'))
            .filter(|(name, _)| env.contains_key(*name))
        {
            out.push_str(&env[name]);
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The Dockerfile's lines, continuation lines joined, comments dropped.
pub fn dockerfile_instructions() -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim_end());
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

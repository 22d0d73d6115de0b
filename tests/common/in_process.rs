//! The real server run inside the test process: `app::run` (the same
//! assembly `main` runs: audit log, authentication, sessions, limits) on
//! its own thread and runtime, serving HTTP on a loopback port. Statements
//! still run in worker processes of the built binary, as in production.
//! For the protocol tests that need no process of their own (signals,
//! resource limits and faults do); stopped on drop.

use std::path::Path;
use std::time::{Duration, Instant};

use eros_mcp::app;
use eros_mcp::config::Config;
use eros_mcp::shutdown::Shutdown;
use rmcp::model::ProtocolVersion;

use super::mcp::{free_port, handshake, http_get_status, Client};
use eros_bench::client as mcp_client;

pub struct InProcessServer {
    pub port: u16,
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessServer {
    /// Serves `db` over HTTP with `env` set, and waits until `/mcp` answers.
    pub fn start(db: &Path, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut vars: Vec<(String, String)> = [
            ("EROS_DB_PATH", db.display().to_string()),
            ("EROS_MCP_TRANSPORT", "http".to_string()),
            ("EROS_MCP_HTTP_ADDR", format!("127.0.0.1:{port}")),
            ("EROS_METRICS_ADDR", "off".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // A setting given in `env` replaces the default above.
        vars.retain(|(name, _)| !env.iter().any(|(given, _)| given == name));
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_vars(vars).expect("a valid configuration");
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name(format!("in-process-server-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                if let Err(err) = runtime.block_on(app::run(config, stop, None)) {
                    panic!("the in-process server failed: {err}");
                }
            })
            .unwrap();
        let server = Self {
            port,
            shutdown,
            thread: Some(thread),
        };
        server.wait_until_listening();
        server
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if http_get_status(self.port, "/mcp") != 0 {
                return;
            }
            assert!(
                !self.thread.as_ref().unwrap().is_finished(),
                "the in-process server stopped before it served"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the in-process server did not listen on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// What SIGHUP does to the binary: re-read the configuration files.
    pub fn hang_up(&self) {
        self.shutdown.hang_up();
    }

    pub async fn client(&self, token: Option<&str>, version: &ProtocolVersion) -> Client {
        mcp_client::http(&self.url(), token, &handshake(version))
            .await
            .expect("MCP handshake over HTTP")
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The real server (`app::build`, as `main` assembles it) served by the
/// stdio loop over in-memory pipes, with a client session on the other
/// ends: the stdio protocol without a process. The loop ends when the
/// client does.
pub async fn stdio_client(db: &Path, env: &[(&str, &str)], version: &ProtocolVersion) -> Client {
    use std::sync::Arc;

    use eros_mcp::app::Observers;
    use eros_mcp::mcp::CallTracker;
    use eros_mcp::transport::{stdio, NoTransportObserver};

    let mut vars: Vec<(String, String)> = vec![
        ("EROS_DB_PATH".to_string(), db.display().to_string()),
        ("EROS_METRICS_ADDR".to_string(), "off".to_string()),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::from_vars(vars).expect("a valid configuration");
    let calls = CallTracker::new();
    let server = app::build(&config, &Observers::default(), Arc::clone(&calls))
        .await
        .expect("the server builds");
    let (client_end, server_end) = tokio::io::duplex(1 << 20);
    let (server_input, server_output) = tokio::io::split(server_end);
    tokio::spawn(stdio::serve_on(
        server,
        calls,
        Shutdown::new(),
        config.mcp.stdio_options(Arc::new(NoTransportObserver)),
        server_input,
        server_output,
    ));
    let (client_input, client_output) = tokio::io::split(client_end);
    mcp_client::streams(client_input, client_output, &handshake(version))
        .await
        .expect("MCP handshake over in-memory stdio")
}

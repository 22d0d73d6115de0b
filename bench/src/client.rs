//! The one place an rmcp client session is set up: over stdio to a child
//! process, over any pair of byte streams (an in-process server's), or over
//! streamable HTTP to a URL, in either protocol era. The
//! load generator and the server's integration tests both connect here.

use std::process::Stdio;

use rmcp::model::{ClientCapabilities, ClientConfig, Implementation, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient};

/// A connected client session.
pub type Session = RunningService<RoleClient, ClientConfig>;

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot start the server process: {0}")]
    Spawn(std::io::Error),
    #[error("the MCP handshake failed: {0}")]
    Handshake(String),
}

/// Who the client says it is and which protocol revision it speaks.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub client_name: String,
    pub client_version: String,
    pub protocol: ProtocolVersion,
}

impl Handshake {
    /// A client named `client_name`, version `client_version`, speaking `protocol`.
    pub fn new(client_name: &str, client_version: &str, protocol: ProtocolVersion) -> Self {
        Self {
            client_name: client_name.to_string(),
            client_version: client_version.to_string(),
            protocol,
        }
    }

    /// The client's capabilities and identity as sent to the server.
    pub fn config(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new(self.client_name.clone(), self.client_version.clone()),
        )
        .with_protocol_version(self.protocol.clone())
    }

    /// How the session starts: `initialize` up to 2025-11-25, `server/discover` after.
    pub fn lifecycle(&self) -> ClientLifecycleMode {
        if self.protocol.has_initialize() {
            ClientLifecycleMode::Initialize
        } else {
            ClientLifecycleMode::Discover {
                preferred_versions: vec![self.protocol.clone()],
            }
        }
    }
}

/// Starts `command` as a child speaking MCP on stdio (its stderr goes to
/// `stderr`) and opens a session with it. Returns the session and the child's pid.
pub async fn stdio(
    command: tokio::process::Command,
    stderr: Stdio,
    handshake: &Handshake,
) -> Result<(Session, Option<u32>), ClientError> {
    let (transport, _stderr) = TokioChildProcess::builder(command)
        .stderr(stderr)
        .spawn()
        .map_err(ClientError::Spawn)?;
    let pid = transport.id();
    let session = within(
        handshake
            .config()
            .serve_with_lifecycle(transport, handshake.lifecycle()),
    )
    .await?;
    Ok((session, pid))
}

/// Opens a session over `input` and `output`, the other ends of a server
/// speaking newline-delimited MCP (an in-process stdio loop).
pub async fn streams<R, W>(
    input: R,
    output: W,
    handshake: &Handshake,
) -> Result<Session, ClientError>
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
    W: tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    within(
        handshake
            .config()
            .serve_with_lifecycle((input, output), handshake.lifecycle()),
    )
    .await
}

/// Opens a session with the streamable HTTP endpoint at `url`, sending
/// `token` as a bearer token when given.
pub async fn http(
    url: &str,
    token: Option<&str>,
    handshake: &Handshake,
) -> Result<Session, ClientError> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_string());
    if let Some(token) = token {
        config = config.auth_header(token.to_string());
    }
    within(handshake.config().serve_with_lifecycle(
        StreamableHttpClientTransport::from_config(config),
        handshake.lifecycle(),
    ))
    .await
}

/// The longest a handshake may take: a server that never answers is an
/// error, not a client waiting for ever.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

async fn within<E: std::fmt::Display>(
    handshake: impl std::future::Future<Output = Result<Session, E>>,
) -> Result<Session, ClientError> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(session) => session.map_err(|err| ClientError::Handshake(err.to_string())),
        Err(_) => Err(ClientError::Handshake(format!(
            "no answer within {HANDSHAKE_TIMEOUT:?}"
        ))),
    }
}

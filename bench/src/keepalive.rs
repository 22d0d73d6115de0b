//! Keep-alive latency: sequential MCP calls over ONE HTTP/1.1 connection,
//! one at a time, as an agent with a persistent connection makes them.
//! Each call is timed from sending the request to the end of its answer,
//! so a per-request floor (Nagle's algorithm against delayed ACKs, for one)
//! shows in every percentile. A raw hyper connection rather than a pooled
//! client: if the server closed the connection the run fails instead of
//! quietly opening another.

use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::json;

use crate::stats::{ms, percentile};
use crate::workload::Workload;
use crate::{LoadError, ToolSpec};

/// What one keep-alive run does.
#[derive(Debug, Clone, Copy)]
pub struct KeepAlivePlan {
    pub workload: Workload,
    pub rows: u64,
    /// Unmeasured calls first.
    pub warmup: u64,
    pub calls: u64,
}

/// What a keep-alive run measured.
#[derive(Debug, Clone, Serialize)]
pub struct KeepAliveReport {
    pub workload: String,
    pub calls: u64,
    pub calls_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl std::fmt::Display for KeepAliveReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<10} one keep-alive connection, {} sequential calls: {:>7.0} calls/s  p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
            self.workload, self.calls, self.calls_per_second, self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// One HTTP/1.1 connection speaking MCP (2025-11-25, with a session).
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    uri: Uri,
    authority: String,
    token: Option<String>,
    session: Option<String>,
}

/// An answer: status and body.
struct Answer {
    status: StatusCode,
    session: Option<String>,
    body: Bytes,
}

fn connect_error(err: impl std::fmt::Display) -> LoadError {
    LoadError::Connect(err.to_string())
}

impl Connection {
    async fn open(url: &str, token: Option<&str>) -> Result<Self, LoadError> {
        let uri: Uri = url.parse().map_err(connect_error)?;
        if uri.scheme_str() != Some("http") {
            return Err(LoadError::Connect(format!("{url}: only http:// URLs")));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| LoadError::Connect(format!("{url} has no host")))?
            .clone();
        let port = authority.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((authority.host(), port))
            .await
            .map_err(connect_error)?;
        // As HTTP clients do (reqwest's default): what is measured is the
        // server's writing, not ours.
        stream.set_nodelay(true).map_err(connect_error)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(connect_error)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "the keep-alive connection ended");
            }
        });
        Ok(Self {
            sender,
            uri,
            authority: authority.to_string(),
            token: token.map(str::to_string),
            session: None,
        })
    }

    async fn post(&mut self, body: serde_json::Value) -> Result<Answer, LoadError> {
        let mut request = Request::post(self.uri.path())
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25");
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|err| LoadError::Protocol(err.to_string()))?;
        self.sender
            .ready()
            .await
            .map_err(|err| LoadError::Protocol(format!("the connection closed: {err}")))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|err| LoadError::Protocol(err.to_string()))?;
        let status = response.status();
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| LoadError::Protocol(err.to_string()))?
            .to_bytes();
        Ok(Answer {
            status,
            session,
            body,
        })
    }

    async fn start_session(&mut self) -> Result<(), LoadError> {
        let answer = self
            .post(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "eros-bench", "version": env!("CARGO_PKG_VERSION")}}}),
            )
            .await?;
        if answer.status != StatusCode::OK {
            return Err(LoadError::Connect(format!(
                "initialize answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            )));
        }
        self.session = answer.session;
        let answer = self
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        if !answer.status.is_success() {
            return Err(LoadError::Connect(format!(
                "notifications/initialized answered {}",
                answer.status
            )));
        }
        Ok(())
    }
}

/// Runs `plan` against the streamable HTTP endpoint at `url`.
pub async fn run(
    url: &str,
    token: Option<&str>,
    spec: &ToolSpec,
    plan: KeepAlivePlan,
) -> Result<KeepAliveReport, LoadError> {
    let mut connection = Connection::open(url, token).await?;
    connection.start_session().await?;
    let mut latencies = Vec::with_capacity(usize::try_from(plan.calls).unwrap_or(0));
    let started = Instant::now();
    let mut measured_from = started;
    for n in 1..=plan.warmup + plan.calls {
        if n == plan.warmup + 1 {
            measured_from = Instant::now();
        }
        let call = plan.workload.call(n, plan.rows);
        let request = json!({"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {
            "name": spec.tool, "arguments": {spec.sql_argument.as_str(): call.sql}}});
        let sent = Instant::now();
        let answer = connection.post(request).await?;
        let took = sent.elapsed();
        let text = String::from_utf8_lossy(&answer.body);
        let wrong = answer.status != StatusCode::OK
            || text.contains("\"isError\":true")
            || call
                .expect
                .iter()
                .any(|value| !text.contains(value.as_str()));
        if wrong {
            return Err(LoadError::WrongAnswers {
                failed: 1,
                calls: n,
                first: text.chars().take(300).collect(),
            });
        }
        if n > plan.warmup {
            latencies.push(took);
        }
    }
    let seconds = measured_from.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(KeepAliveReport {
        workload: plan.workload.name(),
        calls: plan.calls,
        calls_per_second: plan.calls as f64 / seconds.max(f64::EPSILON),
        p50_ms: ms(percentile(&latencies, 0.50)),
        p99_ms: ms(percentile(&latencies, 0.99)),
        max_ms: ms(latencies.last().copied().unwrap_or_default()),
    })
}

//! OpenTelemetry traces of the real binary, received by a real OTLP/HTTP
//! receiver run here on loopback and built from the official protocol
//! definitions (`opentelemetry-proto`): the span of a call continues the
//! trace its caller sent (the HTTP `traceparent` header, or
//! `_meta.traceparent`), carries the MCP and database attributes, has the
//! fair-share wait, checkout, statement and encoding as children, and its
//! trace id is in the audit line. A dead collector costs the calls nothing
//! and is counted; a protocol this build cannot speak stops startup.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common;

use common::mcp::{free_port, http_client, sample, HttpServer};
use common::{token_entry, TestDb};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};

const READER: &str = "reader-token-0123456789";

/// An OTLP/HTTP receiver on loopback: every span it was sent.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Receiver {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let kept = Arc::clone(&spans);
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let kept = Arc::clone(&kept);
                async move {
                    let request = ExportTraceServiceRequest::decode(body)
                        .expect("the exporter sends protobuf the definitions read");
                    let mut kept = kept.lock().unwrap();
                    for resource in request.resource_spans {
                        for scope in resource.scope_spans {
                            kept.extend(scope.spans);
                        }
                    }
                    // An empty ExportTraceServiceResponse.
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        let port = free_port();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { port, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The spans of `trace_id` (hex), once `count` of them arrived.
    async fn trace(&self, trace_id: &str, count: usize) -> Vec<Span> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found: Vec<Span> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|span| hex(&span.trace_id) == trace_id)
                .cloned()
                .collect();
            if found.len() >= count {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "only {} spans of trace {trace_id} arrived: {:?}",
                found.len(),
                found.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.clone())
        .map(|value| match value {
            AnyValue::StringValue(s) => json!(s),
            AnyValue::IntValue(i) => json!(i),
            AnyValue::BoolValue(b) => json!(b),
            AnyValue::DoubleValue(d) => json!(d),
            other => json!(format!("{other:?}")),
        })
}

/// A server over HTTP exporting traces to `endpoint`, with a static token
/// and an audit log.
fn start(db: &TestDb, endpoint: &str, extra: &[(&str, &str)]) -> HttpServer {
    let tokens = db.file("tokens.toml");
    std::fs::write(
        &tokens,
        token_entry("reporting-agent", READER, &["eros:read"]),
    )
    .unwrap();
    let log = db.file("audit.log");
    let mut env = vec![
        ("EROS_AUTH_TOKENS_FILE", tokens.to_str().unwrap()),
        ("EROS_AUDIT_LOG", log.to_str().unwrap()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_SERVICE_NAME", "eros-trace-test"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    env.extend_from_slice(extra);
    HttpServer::start_observed(db.path(), &env)
}

/// A 2026-07-28 `query` call with `meta` in its `_meta` and `headers`.
async fn query(server: &HttpServer, sql: &str, meta: Value, headers: &[(&str, &str)]) -> Value {
    query_at(&server.url(), sql, meta, headers).await
}

/// [`query`] to the server at `url`.
async fn query_at(url: &str, sql: &str, meta: Value, headers: &[(&str, &str)]) -> Value {
    let mut meta = meta;
    meta["io.modelcontextprotocol/protocolVersion"] = json!("2026-07-28");
    meta["io.modelcontextprotocol/clientCapabilities"] = json!({});
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "query", "arguments": {"sql": sql}, "_meta": meta}});
    let mut request = http_client()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "query")
        .header("authorization", format!("Bearer {READER}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let answer = request.body(body.to_string()).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.unwrap();
    // A JSON answer, or one server-sent event.
    let json = text
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap_or(&text);
    serde_json::from_str(json).unwrap()
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_continues_the_callers_trace_with_its_attributes_and_children() {
    let receiver = Receiver::start().await;
    let db = TestDb::new().with_demo_data();
    let server = start(&db, &receiver.endpoint(), &[]);
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let answer = query(
        &server,
        "SELECT handle FROM creators WHERE id = 3",
        json!({}),
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_ne!(answer["result"]["isError"], true, "{answer}");
    let spans = receiver.trace(TRACE, 5).await;
    let call = spans
        .iter()
        .find(|span| span.name == "tools/call query")
        .unwrap_or_else(|| panic!("no call span: {spans:?}"));
    assert_eq!(
        hex(&call.parent_span_id),
        PARENT,
        "the caller's span is the parent"
    );
    for (key, value) in [
        ("mcp.method.name", json!("tools/call")),
        ("gen_ai.tool.name", json!("query")),
        ("gen_ai.operation.name", json!("execute_tool")),
        ("enduser.id", json!("reporting-agent")),
        ("db.system.name", json!("sqlite")),
        ("db.namespace", json!("main")),
        (
            "db.query.text",
            json!("SELECT handle FROM creators WHERE id = 3"),
        ),
        ("db.response.returned_rows", json!(1)),
        ("eros.outcome", json!("ok")),
    ] {
        assert_eq!(attribute(call, key), Some(value), "{key} of {call:?}");
    }
    assert!(attribute(call, "eros.response.bytes").is_some());
    for child in [
        "fair_share.wait",
        "pool.checkout",
        "sqlite.execute",
        "encode",
    ] {
        let span = spans
            .iter()
            .find(|span| span.name == child)
            .unwrap_or_else(|| panic!("no {child} span: {spans:?}"));
        assert_eq!(span.parent_span_id, call.span_id, "{child}'s parent");
    }
    // The audit line names the same trace.
    let audit = std::fs::read_to_string(db.file("audit.log")).unwrap();
    let line: Value = audit
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|line| line["event"] == "tool_call")
        .unwrap();
    assert_eq!(line["trace_id"], TRACE, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_in_the_requests_meta_is_continued_too() {
    let receiver = Receiver::start().await;
    let db = TestDb::new().with_demo_data();
    let server = start(&db, &receiver.endpoint(), &[]);
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let parent = "b7ad6b7169203331";
    query(
        &server,
        "SELECT 1",
        json!({"traceparent": format!("00-{trace}-{parent}-01")}),
        &[],
    )
    .await;
    let spans = receiver.trace(trace, 1).await;
    let call = spans
        .iter()
        .find(|span| span.name == "tools/call query")
        .unwrap();
    assert_eq!(hex(&call.parent_span_id), parent);
    // The control: a call without a trace context starts a trace of its own.
    let answer = query(&server, "SELECT 2", json!({}), &[]).await;
    assert_ne!(answer["result"]["isError"], true);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let roots = receiver
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|span| span.name == "tools/call query" && span.parent_span_id.is_empty())
            .count();
        if roots == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no root span for the call without a trace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_costs_the_calls_nothing_and_is_counted() {
    let db = TestDb::new().with_demo_data();
    // Nothing listens there.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let server = start(&db, &dead, &[("OTEL_EXPORTER_OTLP_TIMEOUT", "500")]);
    for _ in 0..20 {
        let started = Instant::now();
        let answer = query(&server, "SELECT 1", json!({}), &[]).await;
        assert_ne!(answer["result"]["isError"], true);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, metrics) = server.sidecar("/metrics");
        if sample(&metrics, "mcp_trace_export_failures_total").unwrap_or(0.0) >= 1.0 {
            assert!(sample(&metrics, "mcp_trace_spans_dropped_total").unwrap_or(0.0) >= 1.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed export counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn an_otlp_protocol_this_build_cannot_speak_stops_startup_naming_it() {
    let db = TestDb::new().with_demo_data();
    let mut command = common::mcp::http_command(
        db.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
        free_port(),
        None,
    );
    command.stderr(std::process::Stdio::piped());
    let output = command.spawn().unwrap().wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc") && stderr.contains("http/protobuf"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_lines_of_a_call_carry_its_trace_id() {
    let receiver = Receiver::start().await;
    let db = TestDb::new().with_demo_data();
    let tokens = db.file("tokens.toml");
    std::fs::write(
        &tokens,
        token_entry("reporting-agent", READER, &["eros:read"]),
    )
    .unwrap();
    let endpoint = receiver.endpoint();
    let port = free_port();
    let mut command = common::mcp::http_command(
        db.path(),
        &[
            ("EROS_AUTH_TOKENS_FILE", tokens.to_str().unwrap()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("EROS_LOG", "eros_mcp=debug"),
        ],
        port,
        None,
    );
    let log = db.file("server.log");
    command.stderr(std::fs::File::create(&log).unwrap());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::mcp::http_get_status(port, "/mcp") == 0 {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-{PARENT}-01");
    let url = format!("http://127.0.0.1:{port}/mcp");
    query_at(
        &url,
        "SELECT 1",
        json!({}),
        &[("traceparent", &traceparent)],
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(&log).unwrap();
    let line = logged
        .lines()
        .find(|line| line.contains("tool call answered"))
        .unwrap_or_else(|| panic!("no line for the call:\n{logged}"));
    assert!(line.contains(&format!("trace_id={trace}")), "{line}");
}

//! Test-only: eros-mcp with the fixture tools, resources and prompts the
//! official MCP conformance suite calls by name (`test_simple_text`, ...).
//! The fixtures wrap the real server, whose tools stay as they are; the
//! product binary never carries them. `.ci/run` starts this over HTTP and
//! runs `@modelcontextprotocol/conformance` against it.
//!
//! Run: `EROS_MCP_HTTP_ADDR=127.0.0.1:8765 cargo run --example conformance_server`

use std::sync::Arc;
use std::time::Duration;

use eros_mcp::app::{self, Observers};
use eros_mcp::config::Config;
use eros_mcp::mcp::{CallTracker, ErosServer};
use eros_mcp::shutdown::Shutdown;
use rmcp::handler::server::router::tool::ToolRoute;
use rmcp::handler::server::tool::{ToolCallContext, ToolRouter};
use rmcp::model::*;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

/// A 1x1 PNG and a tiny WAV file.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
const WAV: &str = "UklGRigAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQQAAAAAAAAA";

#[derive(Clone)]
struct FixtureServer {
    inner: ErosServer,
    fixtures: Arc<ToolRouter<FixtureServer>>,
}

fn empty_schema() -> Arc<JsonObject> {
    match serde_json::json!({"type": "object", "properties": {}}) {
        serde_json::Value::Object(map) => Arc::new(map),
        _ => unreachable!(),
    }
}

fn fixed(name: &'static str, result: fn() -> CallToolResult) -> ToolRoute<FixtureServer> {
    ToolRoute::new_dyn(
        Tool::new(name, "conformance fixture", empty_schema()),
        move |_ctx| Box::pin(async move { Ok(result().into()) }),
    )
}

fn text(t: &str) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(t)])
}

#[allow(deprecated)]
fn fixture_tools() -> ToolRouter<FixtureServer> {
    let mut router = ToolRouter::new();
    router.add_route(fixed("test_simple_text", || {
        text("This is a simple text response for testing.")
    }));
    router.add_route(fixed("test_image_content", || {
        CallToolResult::success(vec![ContentBlock::image(PNG, "image/png")])
    }));
    router.add_route(fixed("test_audio_content", || {
        CallToolResult::success(vec![ContentBlock::audio(WAV, "audio/wav")])
    }));
    router.add_route(fixed("test_embedded_resource", || {
        CallToolResult::success(vec![ContentBlock::resource(
            ResourceContents::text(
                "This is an embedded resource content.",
                "test://embedded-resource",
            )
            .with_mime_type("text/plain"),
        )])
    }));
    router.add_route(fixed("test_multiple_content_types", || {
        CallToolResult::success(vec![
            ContentBlock::text("Multiple content types test:"),
            ContentBlock::image(PNG, "image/png"),
            ContentBlock::resource(
                ResourceContents::text(
                    r#"{"test":"data","value":123}"#,
                    "test://mixed-content-resource",
                )
                .with_mime_type("application/json"),
            ),
        ])
    }));
    router.add_route(fixed("test_error_handling", || {
        CallToolResult::error(vec![ContentBlock::text(
            "This tool intentionally returns an error for testing",
        )])
    }));
    router.add_route(fixed("test_streaming_elicitation", || {
        text("Streaming complete")
    }));
    router.add_route(fixed("test_logging_tool", || text("Logging evaluated")));
    router.add_route(ToolRoute::new_dyn(
        Tool::new(
            "test_tool_with_progress",
            "conformance fixture",
            empty_schema(),
        ),
        |ctx: ToolCallContext<'_, FixtureServer>| {
            let request = ctx.request_context.clone();
            Box::pin(async move {
                let token = request.meta.get_progress_token();
                for progress in [0.0, 50.0, 100.0] {
                    if let Some(token) = token.clone() {
                        let _ = request
                            .peer
                            .notify_progress(
                                ProgressNotificationParam::new(token, progress).with_total(100.0),
                            )
                            .await;
                    }
                    if progress < 100.0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Ok(text("progress done").into())
            })
        },
    ));
    router.add_route(ToolRoute::new_dyn(
        Tool::new(
            "test_tool_with_logging",
            "conformance fixture",
            empty_schema(),
        ),
        |ctx: ToolCallContext<'_, FixtureServer>| {
            let request = ctx.request_context.clone();
            Box::pin(async move {
                for (i, message) in [
                    "Tool execution started",
                    "Tool processing data",
                    "Tool execution completed",
                ]
                .iter()
                .enumerate()
                {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    let _ = request
                        .peer
                        .notify_logging_message(LoggingMessageNotificationParam::new(
                            LoggingLevel::Info,
                            serde_json::json!(message),
                        ))
                        .await;
                }
                Ok(text("Tool with logging executed successfully").into())
            })
        },
    ));
    router.add_route(ToolRoute::new_dyn(
        Tool::new(
            "test_missing_capability",
            "conformance fixture",
            empty_schema(),
        ),
        |ctx: ToolCallContext<'_, FixtureServer>| {
            let capabilities = ctx.request_context.client_capabilities();
            Box::pin(async move {
                if capabilities
                    .as_ref()
                    .and_then(|c| c.sampling.as_ref())
                    .is_none()
                {
                    let mut required = ClientCapabilities::default();
                    required.sampling = Some(Default::default());
                    return Err(ErrorData::missing_required_client_capability(required));
                }
                Ok(text("Success").into())
            })
        },
    ));
    router
}

fn fixture_prompts() -> Vec<Prompt> {
    vec![
        Prompt::new("test_simple_prompt", Some("conformance fixture"), None),
        Prompt::new(
            "test_prompt_with_arguments",
            Some("conformance fixture"),
            Some(vec![
                PromptArgument::new("arg1").with_required(true),
                PromptArgument::new("arg2").with_required(true),
            ]),
        ),
        Prompt::new(
            "test_prompt_with_embedded_resource",
            Some("conformance fixture"),
            Some(vec![PromptArgument::new("resourceUri").with_required(true)]),
        ),
        Prompt::new("test_prompt_with_image", Some("conformance fixture"), None),
    ]
}

fn fixture_prompt(request: &GetPromptRequestParams) -> Option<GetPromptResult> {
    let arg = |key: &str| {
        request
            .arguments
            .as_ref()
            .and_then(|a| a.get(key))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let messages = match request.name.as_str() {
        "test_simple_prompt" => vec![PromptMessage::new_text(
            Role::User,
            "This is a simple prompt for testing.",
        )],
        "test_prompt_with_arguments" => vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Prompt with arguments: arg1='{}', arg2='{}'",
                arg("arg1"),
                arg("arg2")
            ),
        )],
        "test_prompt_with_embedded_resource" => vec![
            PromptMessage::new(
                Role::User,
                ContentBlock::resource(
                    ResourceContents::text(
                        "Embedded resource content for testing.",
                        arg("resourceUri"),
                    )
                    .with_mime_type("text/plain"),
                ),
            ),
            PromptMessage::new_text(Role::User, "Please process the embedded resource above."),
        ],
        "test_prompt_with_image" => vec![
            PromptMessage::new(Role::User, ContentBlock::image(PNG, "image/png")),
            PromptMessage::new_text(Role::User, "Please analyze the image above."),
        ],
        _ => return None,
    };
    Some(GetPromptResult::new(messages))
}

fn fixture_resources() -> Vec<Resource> {
    vec![
        Resource::new("test://static-text", "static-text")
            .with_description("conformance fixture")
            .with_mime_type("text/plain"),
        Resource::new("test://static-binary", "static-binary")
            .with_description("conformance fixture")
            .with_mime_type("image/png"),
        Resource::new("test://watched-resource", "watched-resource")
            .with_description("conformance fixture")
            .with_mime_type("text/plain"),
    ]
}

fn fixture_resource(uri: &str) -> Option<ReadResourceResult> {
    let contents = match uri {
        "test://static-text" => {
            ResourceContents::text("This is the content of the static text resource.", uri)
                .with_mime_type("text/plain")
        }
        "test://static-binary" => ResourceContents::blob(PNG, uri).with_mime_type("image/png"),
        "test://watched-resource" => {
            ResourceContents::text("watched", uri).with_mime_type("text/plain")
        }
        _ => {
            let id = uri
                .strip_prefix("test://template/")?
                .strip_suffix("/data")?;
            let body = serde_json::json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
            ResourceContents::text(body.to_string(), uri).with_mime_type("application/json")
        }
    };
    Some(ReadResourceResult::new(vec![contents]))
}

impl ServerHandler for FixtureServer {
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        let mut info = self.inner.get_info();
        info.capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_prompts()
            .enable_completions()
            .enable_logging()
            .build();
        info
    }

    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        self.inner.supported_protocol_versions()
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = self.inner.list_tools(request, context).await?.tools;
        tools.extend(self.fixtures.list_all());
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if self.fixtures.has_route(&request.name) {
            self.fixtures
                .call(ToolCallContext::new(self, request, context))
                .await
        } else {
            self.inner.call_tool(request, context).await
        }
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.fixtures
            .get(name)
            .cloned()
            .or_else(|| self.inner.get_tool(name))
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let mut resources = self.inner.list_resources(request, context).await?.resources;
        resources.extend(fixture_resources());
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("test://template/{id}/data", "template")
                .with_description("conformance fixture")
                .with_mime_type("application/json"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        match fixture_resource(&request.uri) {
            Some(result) => Ok(result.into()),
            None => self.inner.read_resource(request, context).await,
        }
    }

    async fn subscribe(
        &self,
        _request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }

    async fn unsubscribe(
        &self,
        _request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let mut prompts = self.inner.list_prompts(request, context).await?.prompts;
        prompts.extend(fixture_prompts());
        Ok(ListPromptsResult::with_all_items(prompts))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        match fixture_prompt(&request) {
            Some(result) => Ok(result.into()),
            None => self.inner.get_prompt(request, context).await,
        }
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.inner.set_level(request, context).await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::from_env()?;
    config.mcp.transport = eros_mcp::config::Transport::Http;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals()?;
    let calls = CallTracker::new();
    let http = config.mcp.http_settings();
    let listener = eros_mcp::transport::http::bind(&http).await?;
    let observers = Observers::default();
    let inner = app::build(&config, &observers, Arc::clone(&calls)).await?;
    let server = FixtureServer {
        inner,
        fixtures: Arc::new(fixture_tools()),
    };
    eros_mcp::transport::http::serve(
        listener,
        server,
        &http,
        None,
        calls,
        shutdown,
        observers.transport,
    )
    .await?;
    Ok(())
}

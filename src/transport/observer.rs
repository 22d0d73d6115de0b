//! The transports' extension point for counting what the client limits do
//! (sessions opened and expired, requests and connections refused, stdio
//! reads held back), so the transports do not depend on a metrics library:
//! the sidecar implements this trait (and the audit log its two
//! authentication hooks); [`TransportObservers`] hands every event to each.

/// Why an HTTP request or connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `EROS_MCP_MAX_IN_FLIGHT` requests were already being served.
    InFlight,
    /// `EROS_MCP_MAX_CONNECTIONS` connections were already open.
    Connections,
    /// A connection without a token over the unauthenticated budget (in
    /// total or from its address), or closed for not authenticating in
    /// time.
    Unauthenticated,
}

impl Rejection {
    pub const ALL: [Rejection; 3] = [
        Rejection::InFlight,
        Rejection::Connections,
        Rejection::Unauthenticated,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::InFlight => "in_flight",
            Rejection::Connections => "connections",
            Rejection::Unauthenticated => "unauthenticated",
        }
    }
}

/// Receives the transports' limit events. Every method has a no-op default.
pub trait TransportObserver: Send + Sync + 'static {
    /// The stdio transport waited for an answer to be written before
    /// reading the next message.
    fn stdio_backpressure_waited(&self) {}
    /// An HTTP session was opened.
    fn session_opened(&self) {}
    /// An HTTP session was closed (deleted, expired or ended).
    fn session_closed(&self) {}
    /// An HTTP session was closed because it sat idle.
    fn session_expired(&self) {}
    /// A new HTTP session was refused at `EROS_MCP_MAX_SESSIONS`.
    fn session_rejected(&self) {}
    /// An HTTP request or connection was refused.
    fn request_rejected(&self, _reason: Rejection) {}
    /// An MCP TCP connection was accepted and is being served.
    fn connection_opened(&self) {}
    /// A served MCP TCP connection closed.
    fn connection_closed(&self) {}
    /// An HTTP request was refused with 401; `reason` is a short label
    /// (`missing_token`, `unknown_token`, or why an access token failed).
    fn authentication_failed(&self, _reason: &'static str) {}
    /// `principal`'s request for `operation` was refused with 403 for
    /// lacking `scope`.
    fn scope_refused(
        &self,
        _principal: &crate::identity::Principal,
        _operation: &super::operation::Operation,
        _scope: &str,
    ) {
    }
}

/// An observer that records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTransportObserver;

impl TransportObserver for NoTransportObserver {}

/// Several observers as one: each gets every event, in order.
pub struct TransportObservers(pub Vec<std::sync::Arc<dyn TransportObserver>>);

impl TransportObserver for TransportObservers {
    fn stdio_backpressure_waited(&self) {
        self.0.iter().for_each(|o| o.stdio_backpressure_waited());
    }
    fn session_opened(&self) {
        self.0.iter().for_each(|o| o.session_opened());
    }
    fn session_closed(&self) {
        self.0.iter().for_each(|o| o.session_closed());
    }
    fn session_expired(&self) {
        self.0.iter().for_each(|o| o.session_expired());
    }
    fn session_rejected(&self) {
        self.0.iter().for_each(|o| o.session_rejected());
    }
    fn request_rejected(&self, reason: Rejection) {
        self.0.iter().for_each(|o| o.request_rejected(reason));
    }
    fn connection_opened(&self) {
        self.0.iter().for_each(|o| o.connection_opened());
    }
    fn connection_closed(&self) {
        self.0.iter().for_each(|o| o.connection_closed());
    }
    fn authentication_failed(&self, reason: &'static str) {
        self.0.iter().for_each(|o| o.authentication_failed(reason));
    }
    fn scope_refused(
        &self,
        principal: &crate::identity::Principal,
        operation: &super::operation::Operation,
        scope: &str,
    ) {
        self.0
            .iter()
            .for_each(|o| o.scope_refused(principal, operation, scope));
    }
}

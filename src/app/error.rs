//! Why the server could not start, run or stop cleanly.

use crate::audit::AuditError;
use crate::auth::ValidatorError;
use crate::config::DatabasesError;
use crate::database::StartupError;
use crate::identity::tokens::TokensFileError;
use crate::mcp::DeclaredToolsError;
use crate::policy::PolicyError;
use crate::quota::QuotaFileError;
use crate::replication::restore::RestoreError;
use crate::sidecar::SidecarBindError;
use crate::transport::TransportError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("refusing to start on an empty database: {0}")]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    DeclaredTools(#[from] DeclaredToolsError),
    #[error(transparent)]
    Databases(#[from] DatabasesError),
    #[error(transparent)]
    ToolClash(crate::mcp::ToolClash),
    #[error(transparent)]
    Tokens(#[from] TokensFileError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Quotas(#[from] QuotaFileError),
    #[error("cannot set up OAuth: {0}")]
    OAuth(#[from] ValidatorError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("closing the database failed: {0}")]
    Close(#[source] rusqlite::Error),
    #[error("a startup task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Sidecar(#[from] SidecarBindError),
    #[error("cannot start the metrics sidecar's thread: {0}")]
    SidecarThread(#[source] std::io::Error),
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, #[source] std::io::Error),
}

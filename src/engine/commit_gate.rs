//! The last word before a write commits: a [`CommitGate`] the caller of a
//! write hands the engine, asked on the statement thread when the worker
//! is about to `COMMIT`. A refusal rolls the write back, so what the gate
//! needs to have happened first (the audit log's record of the write) is
//! never missing for a write that was acknowledged.

/// Asked once per write, before it commits.
pub trait CommitGate: Send + Sync {
    /// `Err(reason)` rolls the write back and answers the caller with
    /// [`super::QueryError::NotRecorded`].
    fn may_commit(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A gate that lets every write commit.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysCommit;

impl CommitGate for AlwaysCommit {}

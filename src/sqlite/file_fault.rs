//! What can be wrong with the database file, as the server reports it: the
//! file at the path is not the one it opened ([`FileFault`]), or a write
//! cannot succeed now ([`WriteFault`]); and a file's identity
//! ([`FileIdentity`]) to tell. Owned here so the file's health
//! ([`super::health`]) and the replica's copy gate
//! ([`super::copy_gate`]) speak of faults the same way.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Which file a path names: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileIdentity {
    pub device: u64,
    pub inode: u64,
}

impl FileIdentity {
    /// The identity of the file at `path` now.
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(Self {
            device: meta.dev(),
            inode: meta.ino(),
        })
    }
}

/// The file at the path is no longer the one the server opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum FileFault {
    #[error(
        "the database file at {path} was deleted (or renamed away) while the server had it open; \
         writes are refused so none is lost; restart the server after restoring the file"
    )]
    Deleted { path: PathBuf },
    #[error(
        "the database file at {path} was replaced while the server had it open; writes are \
         refused so none is lost; restart the server after restoring the file"
    )]
    Replaced { path: PathBuf },
    #[error(
        "waiting for the first restore of {path}: the replica's follower (litestream restore \
         -f) has not produced the file yet"
    )]
    AwaitingRestore { path: PathBuf },
    #[error(
        "the replica's database file {path} is missing (its follower is re-restoring it, or it \
         was removed); not ready until the file is back"
    )]
    Missing { path: PathBuf },
    #[error(
        "the replica's follower (litestream restore -f) stopped, so its copy {path} may hold a \
         torn transaction and is not served; restoring a fresh copy, retry shortly"
    )]
    FollowerStopped { path: PathBuf },
}

impl FileFault {
    /// A replica's fault that passes once its follower has restored the
    /// file: worth retrying.
    pub fn is_passing(&self) -> bool {
        matches!(
            self,
            FileFault::AwaitingRestore { .. }
                | FileFault::Missing { .. }
                | FileFault::FollowerStopped { .. }
        )
    }
}

/// Why a write cannot succeed right now (reads may still serve).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum WriteFault {
    #[error("the server is read-only (EROS_DB_READ_ONLY=true)")]
    Disabled,
    #[error(
        "the database file {path} is read-only (permissions or a read-only mount); writes fail \
         until it is writable again"
    )]
    ReadOnlyFile { path: PathBuf },
    #[error(
        "the directory of {path} is read-only (permissions or a read-only mount), so SQLite \
         cannot create its journal files"
    )]
    ReadOnlyDirectory { path: PathBuf },
    #[error(
        "the disk holding {path} is full (SQLITE_FULL on the last write); writes fail until \
         there is room, reads still serve"
    )]
    DiskFull { path: PathBuf },
    #[error("the last write to {path} failed with an I/O error ({detail}); check the disk")]
    Io { path: PathBuf, detail: String },
}

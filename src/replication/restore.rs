//! Restoring the database from its Litestream replica: the latest state
//! into an empty volume (`eros-mcp restore`, and `serve` on a replicated
//! primary before it opens the pool), or a point in time into a new file
//! (`eros-mcp restore --timestamp T --output PATH`).
//!
//! The real `litestream restore` does the work, always into a temporary
//! file beside the target (`NAME.restoring`); the server checks that file
//! with `PRAGMA integrity_check` and only then links it into place. A
//! target that already has data is never touched: the link fails rather
//! than replace a file that appeared meanwhile, and only an empty file is
//! renamed over. "No replica yet" (Litestream exits 0 and writes nothing
//! under `-if-replica-exists`) is told apart from "a replica that cannot be
//! read" (Litestream exits non-zero: credentials, an unreachable endpoint,
//! corrupt LTX files), which is refused with Litestream's own words.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rusqlite::OpenFlags;

use super::{Replication, ReplicationSettings, Role};

/// Why a restore did not happen, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("EROS_DB_REPLICA_URL is not set: there is no replica to restore from")]
    NoReplicaUrl,
    #[error(
        "cannot run Litestream ({bin}): {source}; install it or point EROS_DB_LITESTREAM_BIN at \
         the litestream binary"
    )]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the replica {url} cannot be read: `litestream restore` failed ({status}): {output}")]
    Litestream {
        url: String,
        status: String,
        output: String,
    },
    #[error(
        "the restored copy of {url} is corrupt (PRAGMA integrity_check: {found}); it was \
         discarded and nothing was put in place"
    )]
    Corrupt { url: String, found: String },
    #[error("refused to restore into {path}: the file already exists (choose a new --output)")]
    OutputExists { path: PathBuf },
    #[error(
        "refused to restore into {path}: it is the live database (EROS_DB_PATH); restore into a \
         new file with --output and swap it in with the server stopped"
    )]
    OutputIsLive { path: PathBuf },
    #[error(
        "refused to restore {path}: the database file is missing but {wal} holds data (a \
         write-ahead log without its database); move it away first, restoring beside it would \
         let SQLite apply it to the restored file"
    )]
    StrayWal { path: PathBuf, wal: PathBuf },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} appeared with data while it was being restored; it was left as it is")]
    Raced { path: PathBuf },
}

/// What [`restore_if_empty`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// The latest replicated state was restored into the database path.
    Restored { elapsed: Duration },
    /// The replica holds no backup yet: the server starts a new database.
    NoReplica,
    /// The database already has data: nothing was done.
    HasData,
}

/// A point in time in RFC 3339 (`2026-12-02T10:30:00Z`, fractions and
/// `+HH:MM` offsets allowed), the format `litestream restore -timestamp`
/// reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp(String);

impl Timestamp {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Timestamp {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if rfc3339(text.as_bytes()) {
            Ok(Timestamp(text.to_string()))
        } else {
            Err(format!(
                "{text:?} is not an RFC 3339 time: write it as 2026-12-02T10:30:00Z (a T between \
                 date and time, then Z or an offset such as +02:00)"
            ))
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` with each field in
/// range, as Go's `time.RFC3339` (Litestream's parser) reads it: chrono's
/// parser, held to an upper-case `T` and `Z` (chrono also takes a space).
fn rfc3339(text: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    text.as_bytes().get(10) == Some(&b'T')
        && !text.ends_with('z')
        && chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

/// At `serve` startup: a primary that Litestream replicates restores the
/// latest replicated state when its database is missing or empty (so a
/// forgotten init step cannot start it blank), and refuses to start when a
/// replica exists but cannot be read. Nothing happens in any other mode.
pub fn before_serving(settings: &ReplicationSettings, db: &Path) -> Result<(), RestoreError> {
    if settings.replication != Replication::Litestream || settings.role != Role::Primary {
        return Ok(());
    }
    restore_if_empty(settings, db).map(|_| ())
}

/// Restores the latest state of the replica into `db` when `db` is missing
/// or empty; does nothing when it has data or when no replica exists yet.
pub fn restore_if_empty(
    settings: &ReplicationSettings,
    db: &Path,
) -> Result<Restored, RestoreError> {
    let url = settings
        .replica_url
        .as_deref()
        .ok_or(RestoreError::NoReplicaUrl)?;
    match contents(db)? {
        Contents::Data => {
            tracing::info!(path = %db.display(), "the database has data: nothing to restore");
            return Ok(Restored::HasData);
        }
        Contents::StrayWal(wal) => {
            return Err(RestoreError::StrayWal {
                path: db.to_path_buf(),
                wal,
            })
        }
        Contents::Empty => {}
    }
    let started = Instant::now();
    let staged = staging_path(db);
    let Some(staged) = litestream_restore(settings, url, &staged, None)? else {
        tracing::info!(
            path = %db.display(),
            url,
            "no replica yet: starting with a new database (Litestream will replicate it)"
        );
        return Ok(Restored::NoReplica);
    };
    staged.check(url)?;
    staged.put_in_place(db, true)?;
    let elapsed = started.elapsed();
    tracing::info!(
        path = %db.display(),
        url,
        seconds = elapsed.as_secs_f64(),
        "restored the database from its replica"
    );
    Ok(Restored::Restored { elapsed })
}

/// Restores the replica into the new file `output`: its latest state, or
/// its state at `timestamp`. Refuses an `output` that exists or is the live
/// database `db`.
pub fn restore_into(
    settings: &ReplicationSettings,
    db: &Path,
    output: &Path,
    timestamp: Option<&Timestamp>,
) -> Result<Duration, RestoreError> {
    let url = settings
        .replica_url
        .as_deref()
        .ok_or(RestoreError::NoReplicaUrl)?;
    if same_file_path(output, db) {
        return Err(RestoreError::OutputIsLive {
            path: output.to_path_buf(),
        });
    }
    if output.symlink_metadata().is_ok() {
        return Err(RestoreError::OutputExists {
            path: output.to_path_buf(),
        });
    }
    let started = Instant::now();
    let staged = litestream_restore(settings, url, &staging_path(output), timestamp)?
        // Without -if-replica-exists Litestream fails instead; an empty
        // success would be a change in Litestream.
        .ok_or_else(|| RestoreError::Litestream {
            url: url.to_string(),
            status: "exit status 0".into(),
            output: "Litestream reported success but wrote no file".into(),
        })?;
    staged.check(url)?;
    staged.put_in_place(output, false)?;
    Ok(started.elapsed())
}

/// What is at a database path.
enum Contents {
    /// Missing, or an empty file with no write-ahead log holding data.
    Empty,
    /// Pages in the file or in its WAL (a new WAL database keeps its first
    /// pages in the WAL until a checkpoint).
    Data,
    /// No database but a WAL with data beside the path.
    StrayWal(PathBuf),
}

fn contents(db: &Path) -> Result<Contents, RestoreError> {
    let size = |path: &Path| match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(meta.len())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RestoreError::Io {
            action: "inspect",
            path: path.to_path_buf(),
            source,
        }),
    };
    let wal = sibling(db, "-wal");
    let wal_has_data = size(&wal)?.is_some_and(|len| len > 0);
    Ok(match size(db)? {
        Some(len) if len > 0 => Contents::Data,
        Some(_) if wal_has_data => Contents::Data,
        None if wal_has_data => Contents::StrayWal(wal),
        _ => Contents::Empty,
    })
}

/// `path` with `suffix` appended to its file name (`db.sqlite-wal`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Where Litestream restores before the file is checked and put in place.
fn staging_path(target: &Path) -> PathBuf {
    sibling(target, ".restoring")
}

/// Whether two paths name the same place, compared through their
/// directories' real paths (the files themselves may not exist).
fn same_file_path(a: &Path, b: &Path) -> bool {
    let resolve = |path: &Path| -> Option<PathBuf> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        Some(dir.canonicalize().ok()?.join(path.file_name()?))
    };
    a == b || matches!((resolve(a), resolve(b)), (Some(a), Some(b)) if a == b)
}

/// A restored file not yet in place.
struct Staged(PathBuf);

/// Runs `litestream restore` into `staged` (removing a leftover of an
/// interrupted restore first). `None` when, with no `timestamp`, the
/// replica holds no backup yet.
fn litestream_restore(
    settings: &ReplicationSettings,
    url: &str,
    staged: &Path,
    timestamp: Option<&Timestamp>,
) -> Result<Option<Staged>, RestoreError> {
    for leftover in [
        staged.to_path_buf(),
        sibling(staged, ".tmp"),
        sibling(staged, "-wal"),
        sibling(staged, "-shm"),
    ] {
        remove_if_present(&leftover)?;
    }
    let mut command = Command::new(&settings.litestream_bin);
    command.arg("restore").arg("-o").arg(staged);
    match timestamp {
        Some(at) => command.arg("-timestamp").arg(at.as_str()),
        None => command.arg("-if-replica-exists"),
    };
    // The environment (S3 credentials, endpoint settings) goes through.
    let out = command
        .arg(url)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| RestoreError::Spawn {
            bin: settings.litestream_bin.clone(),
            source,
        })?;
    if !out.status.success() {
        let _ = remove_if_present(staged);
        return Err(RestoreError::Litestream {
            url: url.to_string(),
            status: out.status.to_string(),
            output: litestream_words(&out.stdout, &out.stderr),
        });
    }
    Ok(staged.exists().then(|| Staged(staged.to_path_buf())))
}

/// Litestream's output on one line, at most a few KB of it (its error is
/// the last line; a retrying S3 client may print many before it).
fn litestream_words(stdout: &[u8], stderr: &[u8]) -> String {
    const MOST: usize = 2000;
    let text = format!(
        "{} {}",
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr)
    );
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.is_empty() {
        return "it printed nothing".into();
    }
    match words.char_indices().nth_back(MOST) {
        Some((cut, _)) => format!("...{}", &words[cut..]),
        None => words,
    }
}

fn remove_if_present(path: &Path) -> Result<(), RestoreError> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(RestoreError::Io {
            action: "remove the leftover",
            path: path.to_path_buf(),
            source: err,
        }),
        _ => Ok(()),
    }
}

impl Staged {
    /// `PRAGMA integrity_check` on the restored file; a corrupt one is
    /// removed.
    fn check(&self, url: &str) -> Result<(), RestoreError> {
        let found = integrity(&self.0);
        // Opening it may have left an empty WAL and index beside it.
        for extra in [sibling(&self.0, "-wal"), sibling(&self.0, "-shm")] {
            remove_if_present(&extra)?;
        }
        match found {
            Ok(()) => Ok(()),
            Err(found) => {
                let _ = remove_if_present(&self.0);
                Err(RestoreError::Corrupt {
                    url: url.to_string(),
                    found,
                })
            }
        }
    }

    /// Moves the file to `target`: linked when `target` is missing (the
    /// link fails rather than replace a file that appeared meanwhile), or
    /// renamed over it when `replace_empty` and it is still empty.
    fn put_in_place(self, target: &Path, replace_empty: bool) -> Result<(), RestoreError> {
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| RestoreError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::File::open(&self.0)
            .and_then(|file| file.sync_all())
            .map_err(io("flush", &self.0))?;
        match std::fs::hard_link(&self.0, target) {
            Ok(()) => std::fs::remove_file(&self.0).map_err(io("remove", &self.0))?,
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                let still_empty = replace_empty
                    && matches!(contents(target), Ok(Contents::Empty))
                    && target.exists();
                if !still_empty {
                    let _ = remove_if_present(&self.0);
                    return Err(if replace_empty {
                        RestoreError::Raced {
                            path: target.to_path_buf(),
                        }
                    } else {
                        RestoreError::OutputExists {
                            path: target.to_path_buf(),
                        }
                    });
                }
                std::fs::rename(&self.0, target)
                    .map_err(io("move the restored file to", target))?;
            }
            Err(err) => return Err(io("move the restored file to", target)(err)),
        }
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The new name is durable once its directory is.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("flush the directory", dir))?;
        }
        Ok(())
    }
}

/// `Ok` when `PRAGMA integrity_check` answers `ok` for the file at `path`.
fn integrity(path: &Path) -> Result<(), String> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|err| err.to_string())?;
    let lines = conn
        .prepare("PRAGMA integrity_check(20)")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|err| err.to_string())?;
    match lines.as_slice() {
        [ok] if ok == "ok" => Ok(()),
        _ => Err(lines.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_are_accepted_with_fractions_and_offsets() {
        for good in [
            "2026-12-02T10:30:00Z",
            "2026-12-02T10:30:00.123456789Z",
            "2026-12-02T10:30:00+02:00",
            "2026-12-02T10:30:00.5-05:30",
        ] {
            assert!(good.parse::<Timestamp>().is_ok(), "{good}");
        }
    }

    #[test]
    fn a_time_that_is_not_rfc3339_names_the_format() {
        for bad in [
            "yesterday",
            "2026-12-02 10:30:00Z",
            "2026-12-02T10:30:00",
            "2026-13-02T10:30:00Z",
            "2026-12-02T24:00:00Z",
            "2026-12-02T10:30:00.Z",
            "2026-12-02T10:30:00+0200",
            "",
        ] {
            let err = bad.parse::<Timestamp>().unwrap_err();
            assert!(err.contains("RFC 3339"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_new_wal_database_with_an_empty_main_file_has_data() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        std::fs::write(&db, b"").unwrap();
        std::fs::write(sibling(&db, "-wal"), b"frames").unwrap();
        assert!(matches!(contents(&db).unwrap(), Contents::Data));
    }

    /// Settings for a primary replicating to `replica_url`.
    fn replicated_to(replica_url: &str) -> ReplicationSettings {
        ReplicationSettings {
            replication: crate::replication::Replication::Litestream,
            role: crate::replication::Role::Primary,
            replica_url: Some(replica_url.into()),
            litestream_bin: "litestream".into(),
            follow: false,
            heartbeat_interval: std::time::Duration::from_secs(1),
            max_lag: std::time::Duration::from_secs(30),
        }
    }

    #[test]
    fn a_wal_without_its_database_is_refused_not_restored_beside() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        std::fs::write(sibling(&db, "-wal"), b"frames").unwrap();
        let settings = replicated_to("file:///nowhere");
        let err = restore_if_empty(&settings, &db).unwrap_err();
        assert!(matches!(err, RestoreError::StrayWal { .. }), "{err}");
        assert!(err.to_string().contains("db.sqlite-wal"), "{err}");
    }

    #[test]
    fn the_live_database_is_recognised_through_another_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        let other = dir.path().join(".").join("db.sqlite");
        assert!(same_file_path(&other, &db));
        assert!(!same_file_path(&dir.path().join("copy.sqlite"), &db));
    }

    #[test]
    fn a_missing_litestream_binary_is_named_with_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let settings = ReplicationSettings {
            litestream_bin: dir.path().join("no-such-litestream"),
            ..replicated_to("file:///nowhere")
        };
        let err = restore_if_empty(&settings, &dir.path().join("db.sqlite")).unwrap_err();
        assert!(matches!(err, RestoreError::Spawn { .. }), "{err}");
        assert!(err.to_string().contains("EROS_DB_LITESTREAM_BIN"), "{err}");
    }

    #[test]
    fn long_litestream_output_keeps_its_end() {
        let long = "retrying ".repeat(1000) + "Error: the last line";
        let words = litestream_words(long.as_bytes(), b"");
        assert!(words.len() < 2100);
        assert!(words.ends_with("Error: the last line"), "{words}");
    }
}

//! The `eros-mcp` binary: commands, exit codes and clean shutdown.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn eros(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eros-mcp"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

/// Runs `eros-mcp check` in `dir`, asserts it succeeded, returns its stdout.
fn check_succeeds(dir: &std::path::Path) -> String {
    let out = eros(dir).arg("check").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn an_invalid_variable_stops_the_program_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = eros(dir.path())
        .arg("check")
        .env("EROS_DB_POOL_SIZE", "abc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.trim(),
        r#"error: invalid EROS_DB_POOL_SIZE="abc": a whole number from 1 to 1000"#
    );
    assert!(!dir.path().join("database").exists(), "nothing was opened");
}

#[test]
fn a_dotenv_file_in_the_working_directory_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "EROS_DB_POOL_SIZE=7\nEROS_DB_PATH=./from-dotenv.db\n",
    )
    .unwrap();
    let stdout = check_succeeds(dir.path());
    assert!(stdout.contains("EROS_DB_POOL_SIZE=7"), "{stdout}");
    assert!(dir.path().join("from-dotenv.db").exists());
}

#[test]
fn check_creates_and_migrates_the_default_database_and_prints_stats() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = check_succeeds(dir.path());
    assert!(
        stdout.contains("EROS_DB_PATH=./database/eros_sd_main.db"),
        "{stdout}"
    );
    assert!(stdout.contains("\"total_connections\":3"), "{stdout}");
    assert!(dir.path().join("database/eros_sd_main.db").exists());
}

#[test]
fn check_fails_on_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.db"), vec![7u8; 4096]).unwrap();
    let out = eros(dir.path())
        .args(["check", "--db", "bad.db"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("not an SQLite database"), "{stderr}");
}

#[test]
fn demo_data_then_migrate_reports_the_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let out = eros(dir.path())
        .args(["demo-data", "--db", "demo.db"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = eros(dir.path())
        .args(["migrate", "--db", "demo.db"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let latest = eros_mcp::sqlite::migrations::latest_version();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("demo.db: schema version {latest} -> {latest}")
    );
}

#[cfg(unix)]
#[test]
fn serve_shuts_down_cleanly_on_sigterm_and_leaves_no_wal() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = eros(dir.path())
        .args(["serve", "--db", "served.db"])
        .env("EROS_MCP_TRANSPORT", "stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let db = dir.path().join("served.db");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.path().join("served.db-wal").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(db.exists());
    let wal = dir.path().join("served.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "WAL checkpointed"
    );
}

#[test]
fn the_readme_run_command_starts_the_server_binary() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let first_command = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|block| block.lines().next())
        .unwrap();
    assert!(
        first_command.starts_with("cargo run --release"),
        "{first_command}"
    );
    // `cargo run` runs the server even if the package gains another binary.
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("default-run = \"eros-mcp\""));
}

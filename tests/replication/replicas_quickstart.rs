//! `scripts/replicas-quickstart`, run as a person would: it starts a
//! primary, `litestream replicate` and two replicas (each running its
//! follower), prints their URLs; a write through the primary's `execute` (a
//! real MCP client over HTTP) shows up on both replicas; SIGINT stops every
//! process it started, followers included. The real binary and the real `litestream`.

use crate::common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::mcp::{call, handshake, rows, Client};
use common::ops::tools::tool;
use rmcp::model::ProtocolVersion;
use serde_json::json;

/// The script's processes: the script itself and the children it started,
/// killed (SIGKILL) on drop so that a failing test leaves nothing running.
struct Quickstart {
    script: Child,
    children: BTreeSet<u32>,
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        for pid in &self.children {
            // SAFETY: kill(2) on a pid this test recorded as the script's child.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.script.kill();
        let _ = self.script.wait();
    }
}

/// A first port such that it and the five after it the script uses are free.
fn free_port_base() -> u16 {
    common::mcp::free_ports(&[0, 1, 10, 11, 20, 21])
}

/// The pids whose parent is `parent`, with their command names.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
            let (head, tail) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_string();
            let ppid: u32 = tail.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some((pid, comm))
        })
        .collect()
}

/// Whether `pid` is still a process (and not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, tail)| tail.trim_start().to_string())
        })
        .is_some_and(|tail| !tail.starts_with('Z'))
}

async fn connect(url: &str) -> Client {
    eros_bench::client::http(url, None, &handshake(&ProtocolVersion::V_2025_11_25))
        .await
        .unwrap_or_else(|err| panic!("MCP session with {url}: {err}"))
}

#[test]
fn the_quickstart_replicates_a_write_to_both_replicas_and_stops_everything_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_port_base();
    let mut script = Command::new("bash");
    script
        .arg(common::ops::repo().join("scripts/replicas-quickstart"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("QUICKSTART_DIR", dir.path())
        .env("QUICKSTART_PORT", base.to_string())
        .env("QUICKSTART_EROS_MCP", env!("CARGO_BIN_EXE_eros-mcp"))
        .env("QUICKSTART_LITESTREAM", tool("litestream"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SIGINT at its default disposition even when the test runner was
    // started with it ignored (a background job of a script): bash cannot
    // trap a signal ignored on entry, and this test sends SIGINT.
    // SAFETY: signal(2) only, between fork and exec.
    unsafe {
        script.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut script = script.spawn().expect("start scripts/replicas-quickstart");
    let stdout = script.stdout.take().unwrap();
    let mut quickstart = Quickstart {
        script,
        children: BTreeSet::new(),
    };
    let (lines, printed) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    // Everything it prints until "quickstart: ready", and the URLs after.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut output = Vec::new();
    let mut urls = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match printed.recv_timeout(left) {
            Ok(line) => {
                if let Some(url) = line.split_whitespace().find(|w| w.ends_with("/mcp")) {
                    urls.push(url.to_string());
                }
                let done = line.contains("Ctrl-C stops everything");
                output.push(line);
                if done {
                    break;
                }
            }
            Err(_) => panic!(
                "the quickstart did not get ready within 240s; it printed:\n{}\nlogs in {}",
                output.join("\n"),
                dir.path().display()
            ),
        }
    }
    assert!(
        output.iter().any(|l| l == "quickstart: ready"),
        "{output:#?}"
    );
    let primary = format!("http://127.0.0.1:{base}/mcp");
    let replicas = [
        format!("http://127.0.0.1:{}/mcp", base + 10),
        format!("http://127.0.0.1:{}/mcp", base + 20),
    ];
    // The printed URLs (the "try it" lines repeat them).
    let printed_urls: BTreeSet<&str> = urls.iter().map(String::as_str).collect();
    for url in std::iter::once(&primary).chain(&replicas) {
        assert!(
            printed_urls.contains(url.as_str()),
            "{url} not printed: {output:#?}"
        );
    }

    // The four processes it runs are its own children, and each replica
    // runs its follower as its own.
    quickstart.children = children_of(quickstart.script.id())
        .into_iter()
        .filter(|(_, comm)| comm == "eros-mcp" || comm == "litestream")
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(
        quickstart.children.len(),
        4,
        "a primary, litestream and two replicas: {:?}",
        children_of(quickstart.script.id())
    );
    let followers: Vec<u32> = quickstart
        .children
        .iter()
        .flat_map(|pid| children_of(*pid))
        .filter(|(_, comm)| comm == "litestream")
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(
        followers.len(),
        2,
        "a follower per replica: {:?}",
        quickstart
            .children
            .iter()
            .map(|pid| children_of(*pid))
            .collect::<Vec<_>>()
    );
    quickstart.children.extend(&followers);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let writer = connect(&primary).await;
        for sql in [
            "CREATE TABLE quickstart_notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
            "INSERT INTO quickstart_notes (body) VALUES ('hello from the primary')",
        ] {
            let result = call(&writer, "execute", json!({ "sql": sql })).await;
            assert_ne!(result.is_error, Some(true), "{sql}: {result:?}");
        }
        writer.cancel().await.unwrap();
        for replica in &replicas {
            let reader = connect(replica).await;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let result = call(
                    &reader,
                    "query",
                    json!({ "sql": "SELECT body FROM quickstart_notes" }),
                )
                .await;
                if result.is_error != Some(true)
                    && rows(&result)["rows"] == json!([["hello from the primary"]])
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{replica} never showed the write: last answer {result:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            reader.cancel().await.unwrap();
        }
    });

    // SIGINT (Ctrl-C): the script stops everything and exits 0.
    // SAFETY: kill(2) on the script this test started.
    unsafe { libc::kill(quickstart.script.id() as libc::pid_t, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = quickstart.script.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the quickstart still runs 120s after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the quickstart exited with {status}");
    let left: Vec<u32> = quickstart
        .children
        .iter()
        .copied()
        .filter(|pid| alive(*pid))
        .collect();
    assert!(left.is_empty(), "still running after SIGINT: {left:?}");
}

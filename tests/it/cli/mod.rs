//! The `jitid` binary end to end. This file holds the harness (a `jitid dev`
//! server process and output helpers); the tests are by topic: fetch and
//! verify (`fetch.rs`), errors and exit codes (`errors.rs`), the CA
//! commands (`ca.rs`), the catalogue, approvals and reviews (`policy.rs`).

mod ca;
mod errors;
mod fetch;
mod policy;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use crate::support::jitid_bin;

/// A running `jitid` server process, stopped with SIGTERM on drop.
struct ServerProcess {
    child: Child,
    exports: Vec<(String, String)>,
}

impl ServerProcess {
    /// Starts `jitid dev` and reads its banner up to the last line.
    fn dev(dir: &Path) -> Self {
        Self::dev_with(dir, &[])
    }

    /// Starts `jitid dev` with extra arguments.
    fn dev_with(dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(jitid_bin())
            .args(["dev", "--dir"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--log", "warn"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut exports = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(assignment) = line.strip_prefix("export ") {
                let (key, value) = assignment.split_once('=').unwrap();
                exports.push((key.to_owned(), value.to_owned()));
            }
            if line.starts_with("# Other demo identities") {
                break;
            }
        }
        assert_eq!(
            exports.len(),
            4,
            "banner exports JITID_SERVER, _CA, _CERT, _KEY"
        );
        // Keep reading so the server never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, exports }
    }

    fn export(&self, key: &str) -> &str {
        &self.exports.iter().find(|(k, _)| k == key).unwrap().1
    }

    fn command(&self) -> Command {
        let mut command = Command::new(jitid_bin());
        command.env_clear().envs(self.exports.iter().cloned());
        command
    }

    /// Sends SIGTERM and returns the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

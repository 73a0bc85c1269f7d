//! Errors from the command line: one line on stderr, exit codes by kind,
//! and keys others can read refused by name, by the client and by `serve`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use super::stdout;
use crate::support::{CI_RUNNER, TestEnv, jitid_bin};

// The server runs in this process while the test blocks on the CLI, so
// it needs a runtime thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_are_one_line_with_exit_codes() {
    let env = TestEnv::start().await;
    let (cert, key) = env.identity_files(CI_RUNNER);
    let fetch = |args: &[&str], server: &str| {
        let out = env.dir.path().join("out");
        let mut command = Command::new(jitid_bin());
        command
            .env_clear()
            .env("JITID_SERVER", server)
            .env("JITID_CA", &env.ca.root_cert)
            .env("JITID_CERT", &cert)
            .env("JITID_KEY", &key)
            .args(["fetch", "x509", "--out"])
            .arg(out)
            .args(args);
        command
    };
    let check = |mut command: Command, code: i32, message: &str| {
        let output = command.output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(code), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("jitid: error: "), "{stderr}");
        assert!(stderr.contains(message), "expected {message:?} in {stderr}");
    };
    let url = env.url();
    check(
        fetch(&["--entitlement", "agent-research"], &url),
        3,
        "permission denied: spiffe://example.org/ci/runner-1 may not request",
    );
    check(
        fetch(&["--entitlement", "ci-publish", "--ttl", "2h"], &url),
        4,
        "invalid argument: ttl 2h exceeds the maximum of 10m",
    );
    check(
        fetch(&["--entitlement", "ci-publish"], "https://127.0.0.1:1"),
        5,
        "cannot connect to https://127.0.0.1:1",
    );
    // Usage errors are clap's: exit 2, with a usage hint.
    let output = fetch(&["--entitlement", "ci-publish", "--ttl", "soon"], &url)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("invalid value 'soon' for '--ttl <TTL>'")
    );
    assert_eq!(env.grants(), 0);

    // A client key that others can read is refused, naming the file.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    check(
        fetch(&["--entitlement", "ci-publish"], &url),
        1,
        "identity.key: private key is accessible by group or others (mode 0644)",
    );
}

#[test]
fn serve_refuses_a_readable_key_and_names_it() {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(jitid_bin())
        .args(["ca", "init", "--trust-domain", "example.org", "--dir"])
        .arg(work.path().join("ca"))
        .output()
        .unwrap();
    stdout(&output);
    let config = work.path().join("jitid.toml");
    std::fs::write(
        &config,
        "trust_domain = \"example.org\"\nlisten = \"127.0.0.1:0\"\n[ca]\ndir = \"ca\"\n",
    )
    .unwrap();
    let signing_key = work.path().join("ca/signing.key");
    std::fs::set_permissions(&signing_key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let output = Command::new(jitid_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("signing.key: private key is accessible by group or others (mode 0640)"),
        "{stderr}"
    );

    // A broken config names the key.
    std::fs::set_permissions(&signing_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        &config,
        "trust_domain = \"Example.org\"\n[ca]\ndir = \"ca\"\n",
    )
    .unwrap();
    let output = Command::new(jitid_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("`trust_domain`"));
}

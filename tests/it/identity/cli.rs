//! The commands, as a new host and an admin use them: `token create`
//! prints the token alone; `identity bootstrap` needs no certificate and
//! works once; `identity renew` replaces the very files it authenticates
//! with; `identity list` and `identity revoke` for admins; the exit codes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use super::serial_of;
use crate::support::{ADMIN, CI_RUNNER, TestEnv, exited, jitid_bin};

const HOST: &str = "spiffe://example.org/ci/host-9";

/// The CLI against the environment's server, as `cert`/`key` (or with no
/// identity at all).
fn run(env: &TestEnv, identity: Option<(&Path, &Path)>, args: &[&str]) -> Output {
    let mut command = Command::new(jitid_bin());
    command
        .env_clear()
        .env("JITID_SERVER", env.url())
        .env("JITID_CA", &env.ca.root_cert);
    if let Some((cert, key)) = identity {
        command.env("JITID_CERT", cert).env("JITID_KEY", key);
    }
    command.args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn serial_in(dir: &Path) -> String {
    serial_of(&jitid::ca::read_certs(&dir.join("identity.pem")).unwrap()[0])
}

// The server runs in this process while the test blocks on the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_joins_renews_in_place_and_an_admin_lists_and_revokes_it() {
    let env = TestEnv::start().await;
    let work = tempfile::tempdir().unwrap();
    let admin = env.identity_files(ADMIN);
    let admin = Some((admin.0.as_path(), admin.1.as_path()));
    let token = || {
        let created = run(&env, admin, &["token", "create", "--spiffe-id", HOST]);
        exited(&created, 0);
        let token = stdout(&created);
        assert_eq!(token.lines().count(), 1, "the token alone: {token:?}");
        assert!(token.starts_with("jitid-jt-"));
        token.trim().to_owned()
    };

    // Bootstrap, with no client certificate.
    let dir = work.path().join("host");
    let dir_text = dir.to_str().unwrap();
    let first = token();
    let joined = run(
        &env,
        None,
        &[
            "identity",
            "bootstrap",
            "--token",
            &first,
            "--out",
            dir_text,
        ],
    );
    let text = exited(&joined, 0);
    assert!(
        text.contains(&format!("bootstrapped attestation identity {HOST}")),
        "{text}"
    );
    let key = dir.join("identity.key");
    let cert = dir.join("identity.pem");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Once only.
    let elsewhere = work.path().join("elsewhere");
    let again = run(
        &env,
        None,
        &[
            "identity",
            "bootstrap",
            "--token",
            &first,
            "--out",
            elsewhere.to_str().unwrap(),
        ],
    );
    let text = exited(&again, 3);
    assert!(text.contains("unknown, expired or already used"), "{text}");
    // Not over an identity: refused before the token is spent.
    let second = token();
    let over = run(
        &env,
        None,
        &[
            "identity",
            "bootstrap",
            "--token",
            &second,
            "--out",
            dir_text,
        ],
    );
    let text = exited(&over, 1);
    assert!(
        text.contains("refusing to overwrite it (the token is not spent)"),
        "{text}"
    );
    exited(
        &run(
            &env,
            None,
            &[
                "identity",
                "bootstrap",
                "--token",
                &second,
                "--out",
                elsewhere.to_str().unwrap(),
            ],
        ),
        0,
    );

    // Renew in place, with the files it authenticates with.
    let host = Some((cert.as_path(), key.as_path()));
    let before = serial_in(&dir);
    let renewed = run(
        &env,
        host,
        &["identity", "renew", "--out", dir_text, "--output", "json"],
    );
    exited(&renewed, 0);
    let value: serde_json::Value = serde_json::from_slice(&renewed.stdout).unwrap();
    let after = serial_in(&dir);
    assert_ne!(after, before);
    assert_eq!(value["serial"], after.as_str());
    assert_eq!(value["spiffe_id"], HOST);
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Above the maximum: exit 4, the files untouched.
    let too_long = run(
        &env,
        host,
        &["identity", "renew", "--out", dir_text, "--ttl", "48h"],
    );
    exited(&too_long, 4);
    assert_eq!(serial_in(&dir), after);
    // The renewed identity fetches credentials.
    let svid_dir = work.path().join("svid");
    exited(
        &run(
            &env,
            host,
            &[
                "fetch",
                "x509",
                "--entitlement",
                "ci-publish",
                "--out",
                svid_dir.to_str().unwrap(),
            ],
        ),
        0,
    );

    // Admins list; others may not (exit 3).
    let listed = run(&env, admin, &["identity", "list", "--output", "json"]);
    exited(&listed, 0);
    let list: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let state_of = |serial: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|record| record["serial"] == serial)
            .map(|record| (record["state"].clone(), record["issued_via"].clone()))
    };
    assert_eq!(
        state_of(&before),
        Some(("active".into(), "bootstrapped".into()))
    );
    assert_eq!(state_of(&after), Some(("active".into(), "renewed".into())));
    let text = exited(&run(&env, host, &["identity", "list"]), 3);
    assert!(text.contains("only admins"), "{text}");

    // Revoke by serial: the next command with it is refused (exit 3) and
    // says why; its grant is ended.
    let revoked = run(
        &env,
        admin,
        &[
            "identity", "revoke", "--serial", &after, "--reason", "rebuilt",
        ],
    );
    let text = exited(&revoked, 0);
    assert!(
        text.contains(&format!("revoked attestation identity {after} of {HOST}")),
        "{text}"
    );
    assert!(text.contains("revoked grant "), "{text}");
    let refused = run(&env, host, &["grants", "list"]);
    exited(&refused, 3);
    assert!(
        stderr(&refused).contains(&format!(
            "attestation identity {after} of {HOST} was revoked: rebuilt"
        )),
        "{}",
        stderr(&refused)
    );
    let verify = env.cli(
        CI_RUNNER,
        &[
            "verify",
            "--x509",
            svid_dir.join("svid.pem").to_str().unwrap(),
        ],
    );
    let text = exited(&verify, 6);
    assert!(text.starts_with("REVOKED"), "{text}");
    // Text list: the state and the reason.
    let listed = run(&env, admin, &["identity", "list"]);
    let text = exited(&listed, 0);
    let line = text.lines().find(|line| line.starts_with(&after)).unwrap();
    assert!(
        line.contains("revoked") && line.contains("rebuilt") && line.contains(ADMIN),
        "{line}"
    );

    // Revoke by SPIFFE ID: every identity of it, the bootstrapped ones too.
    let other = Some((
        elsewhere.join("identity.pem"),
        elsewhere.join("identity.key"),
    ));
    let other = other
        .as_ref()
        .map(|(cert, key)| (cert.as_path(), key.as_path()));
    exited(&run(&env, other, &["grants", "list"]), 0);
    exited(
        &run(&env, admin, &["identity", "revoke", "--spiffe-id", HOST]),
        0,
    );
    exited(&run(&env, other, &["grants", "list"]), 3);
    // Name one target.
    exited(&run(&env, admin, &["identity", "revoke"]), 2);
}

#[test]
fn help_says_what_each_identity_command_needs() {
    let help = |args: &[&str]| {
        let output = Command::new(jitid_bin())
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0));
        stdout(&output)
    };
    // A new host has no certificate yet.
    let bootstrap = help(&["identity", "bootstrap"]);
    assert!(
        !bootstrap.contains("--cert") && !bootstrap.contains("--key"),
        "{bootstrap}"
    );
    assert!(bootstrap.contains("JITID_JOIN_TOKEN"), "{bootstrap}");
    for command in [
        &["identity", "renew"][..],
        &["identity", "bootstrap"],
        &["token", "create"],
    ] {
        let text = help(command);
        assert!(text.contains("Examples:\n  jitid "), "{command:?}: {text}");
    }
    let revoke = help(&["identity", "revoke"]);
    assert!(
        revoke.contains("--spiffe-id") && revoke.contains("--serial"),
        "{revoke}"
    );
}

//! The `jitid` binary's rough edges as a new user meets them: a closed
//! stdout, `exec` with approval and break-glass, a verdict said once,
//! `verify` during a Redis outage, a failed task shown as failed, errors
//! that name what to fix, help text, and one `--output` switch.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jitid::audit::RedisAuditLog;
use jitid::proto::v1 as pb;
use jitid::store::{RedisStore, RedisStoreConfig};

use crate::support::redis::RedisServer;
use crate::support::{AUDITOR, CI_RUNNER, SRE_A, TestEnv, exited, jitid_bin};

/// The CLI as `id` against `url`, as [`TestEnv::cli_at`], with the
/// environment the caller adds and stdout as given.
fn cli_command(env: &TestEnv, url: &str, id: &str, args: &[&str]) -> Command {
    let (cert, key) = env.identity_files(id);
    let mut command = Command::new(jitid_bin());
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("JITID_SERVER", url)
        .env("JITID_CA", &env.ca.root_cert)
        .env("JITID_CERT", &cert)
        .env("JITID_KEY", &key)
        .args(args);
    command
}

/// Runs the CLI with stdout a pipe whose reader is already closed.
fn with_closed_stdout(env: &TestEnv, id: &str, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    cli_command(env, &env.url(), id, args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Fetches an X.509-SVID into a new directory with the CLI; returns the
/// chain's path and the grant id.
fn fetch_x509(env: &TestEnv, dir: &std::path::Path) -> (String, String) {
    let out = dir.to_str().unwrap();
    let fetched = env.cli(
        CI_RUNNER,
        &[
            "fetch",
            "x509",
            "--entitlement",
            "ci-publish",
            "--out",
            out,
            "--output",
            "json",
        ],
    );
    exited(&fetched, 0);
    let value: serde_json::Value = serde_json::from_slice(&fetched.stdout).unwrap();
    (
        dir.join("svid.pem").to_str().unwrap().to_owned(),
        value["grant_id"].as_str().unwrap().to_owned(),
    )
}

// The server runs in this process while the test blocks on the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_output_quietly_and_keeps_the_exit_code() {
    let env = TestEnv::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (svid, grant) = fetch_x509(&env, &dir.path().join("svid"));

    for args in [
        &["grants", "list"][..],
        &["grants", "list", "--output", "json"],
        &["bundle"],
        &["bundle", "--format", "pem"],
        &["verify", "--x509", &svid],
    ] {
        let output = with_closed_stdout(&env, CI_RUNNER, args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(stderr(&output), "", "{args:?}");
    }
    // A verdict still sets the exit code when nobody reads it.
    exited(&env.cli(CI_RUNNER, &["revoke", "--grant", &grant]), 0);
    let output = with_closed_stdout(&env, CI_RUNNER, &["verify", "--x509", &svid]);
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    assert_eq!(stderr(&output), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_says_a_revoked_verdict_once_on_stdout() {
    let env = TestEnv::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (svid, grant) = fetch_x509(&env, &dir.path().join("svid"));
    exited(
        &env.cli(
            CI_RUNNER,
            &["revoke", "--grant", &grant, "--reason", "job cancelled"],
        ),
        0,
    );

    let text = env.cli(CI_RUNNER, &["verify", "--x509", &svid]);
    assert_eq!(text.status.code(), Some(6));
    assert!(stdout(&text).starts_with("REVOKED: "), "{}", stdout(&text));
    assert!(stdout(&text).contains("job cancelled"), "{}", stdout(&text));
    assert_eq!(stderr(&text), "", "the verdict is not an error");

    let json = env.cli(CI_RUNNER, &["verify", "--x509", &svid, "--output", "json"]);
    assert_eq!(json.status.code(), Some(6));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["status"], "REVOKED");
    assert_eq!(stderr(&json), "");
}

/// Waits for a child without blocking the runtime the server runs on.
async fn wait_child(mut child: std::process::Child) -> (Option<i32>, String, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            return (status.code(), stdout(&output), stderr(&output));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("did not exit: {}", stderr(&output));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const GATED: &str = r#"
[[entitlement]]
name = "gated-job"
actions = ["job:run"]
requesters = ["group:release"]
approvers = ["group:sre"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_waits_for_approval_and_takes_break_glass() {
    let env = TestEnv::start_with_catalogue(GATED).await;
    let script =
        r#"test -s "$JITID_SVID" && test -s "$JITID_SVID_KEY" && echo "grant=$JITID_GRANT""#;

    // Without --wait: refused before anything runs, pointing to --wait.
    let refused = env.cli(
        CI_RUNNER,
        &[
            "exec",
            "--entitlement",
            "gated-job",
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
    );
    let all = exited(&refused, 8);
    assert!(all.contains("exec --wait"), "{all}");

    // With --wait: pending until an approver approves, then it runs.
    let child = cli_command(
        &env,
        &env.url(),
        CI_RUNNER,
        &[
            "exec",
            "--entitlement",
            "gated-job",
            "--wait",
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let approver = env.client_for(SRE_A).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let pending = loop {
        let awaiting = approver
            .list_grants(pb::ListGrantsRequest {
                awaiting_my_approval: true,
                ..pb::ListGrantsRequest::default()
            })
            .await
            .unwrap();
        if let Some(grant) = awaiting.first() {
            break grant.summary.clone().unwrap().grant_id;
        }
        assert!(Instant::now() < deadline, "no pending grant");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    approver.approve(&pending, "ok").await.unwrap();
    let (code, out, err) = wait_child(child).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.contains("pending approval"), "{err}");
    assert_eq!(out.trim(), format!("grant={pending}"));
    // exec completed the task, and so the approved grant.
    let runner = env.client_for(CI_RUNNER).await;
    let grant = runner.get_grant(&pending).await.unwrap();
    assert_eq!(grant.state(), pb::GrantState::Completed);

    // Ctrl-C while waiting: exec stops waiting and runs nothing.
    let child = cli_command(
        &env,
        &env.url(),
        CI_RUNNER,
        &[
            "exec",
            "--entitlement",
            "gated-job",
            "--wait",
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let awaiting = approver
            .list_grants(pb::ListGrantsRequest {
                awaiting_my_approval: true,
                ..pb::ListGrantsRequest::default()
            })
            .await
            .unwrap();
        if !awaiting.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no pending grant");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let (code, out, err) = wait_child(child).await;
    assert_eq!(code, Some(130), "{out}{err}");
    assert_eq!(out, "", "the command did not run");
    assert!(err.contains("while waiting for approval"), "{err}");

    // Break-glass: issued at once, one grant flagged for review.
    let glass = env.cli(
        CI_RUNNER,
        &[
            "exec",
            "--entitlement",
            "db-migrate",
            "--break-glass",
            "--justification",
            "incident 311: the primary is down",
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
    );
    exited(&glass, 0);
    let grant_id = stdout(&glass)
        .trim()
        .trim_start_matches("grant=")
        .to_owned();
    let grant = runner.get_grant(&grant_id).await.unwrap();
    assert!(grant.break_glass);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_during_a_redis_outage_is_unknown_exit_6() {
    let mut redis = RedisServer::start();
    let mut env = TestEnv::start().await;
    let store = Arc::new(
        RedisStore::connect(RedisStoreConfig::new(&redis.url()))
            .await
            .unwrap(),
    );
    // As `jitid serve` with Redis: grants and the audit trail in Redis.
    let addr = env
        .spawn_audited(store.clone(), Arc::new(RedisAuditLog::new(store)), None)
        .await;
    let url = format!("https://127.0.0.1:{}", addr.port());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("svid");
    let fetched = cli_command(
        &env,
        &url,
        CI_RUNNER,
        &[
            "fetch",
            "x509",
            "--entitlement",
            "ci-publish",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    exited(&fetched, 0);
    let svid = out.join("svid.pem");
    let svid = svid.to_str().unwrap();
    let valid = cli_command(&env, &url, CI_RUNNER, &["verify", "--x509", svid])
        .output()
        .unwrap();
    exited(&valid, 0);

    redis.stop();
    let unknown = cli_command(
        &env,
        &url,
        CI_RUNNER,
        &["verify", "--x509", svid, "--output", "json"],
    )
    .output()
    .unwrap();
    assert_eq!(
        unknown.status.code(),
        Some(6),
        "{}{}",
        stdout(&unknown),
        stderr(&unknown)
    );
    let value: serde_json::Value = serde_json::from_slice(&unknown.stdout).unwrap();
    assert_eq!(value["status"], "UNKNOWN", "{value}");
    assert_eq!(stderr(&unknown), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_is_listed_as_failed() {
    let env = TestEnv::start().await;
    let failed = env.cli(
        CI_RUNNER,
        &[
            "exec",
            "--entitlement",
            "ci-publish",
            "--task",
            "job-bad",
            "--",
            "false",
        ],
    );
    exited(&failed, 1);
    let ok = env.cli(
        CI_RUNNER,
        &[
            "exec",
            "--entitlement",
            "ci-publish",
            "--task",
            "job-good",
            "--",
            "true",
        ],
    );
    exited(&ok, 0);

    let list = exited(
        &env.cli(CI_RUNNER, &["grants", "list", "--task", "job-bad"]),
        0,
    );
    assert!(list.contains("completed (failed)"), "{list}");
    let list = exited(
        &env.cli(CI_RUNNER, &["grants", "list", "--task", "job-good"]),
        0,
    );
    assert!(list.contains("completed"), "{list}");
    assert!(!list.contains("failed"), "{list}");

    let json = env.cli(
        CI_RUNNER,
        &["grants", "list", "--task", "job-bad", "--output", "json"],
    );
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let grant = &value[0];
    assert_eq!(grant["state"], "completed");
    assert_eq!(grant["outcome"], "failed");
    assert!(
        grant["end_reason"]
            .as_str()
            .unwrap()
            .starts_with("failed by")
    );

    let id = grant["grant_id"].as_str().unwrap();
    let shown = exited(&env.cli(CI_RUNNER, &["grants", "show", id]), 0);
    assert!(shown.contains("state        completed (failed)"), "{shown}");
    let shown = env.cli(CI_RUNNER, &["grants", "show", id, "--output", "json"]);
    let value: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(value["outcome"], "failed");
}

/// The one line on stderr of a command that failed with `code`.
fn error_line(output: &Output, code: i32) -> String {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("jitid: error: "), "{err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line_that_names_what_to_fix() {
    let env = TestEnv::start().await;
    let dir = tempfile::tempdir().unwrap();

    // Nothing listening: the server and the flag, the cause once.
    let refused = cli_command(&env, "https://127.0.0.1:1", CI_RUNNER, &["grants", "list"])
        .output()
        .unwrap();
    let err = error_line(&refused, 5);
    assert!(err.contains("https://127.0.0.1:1"), "{err}");
    assert!(err.contains("--server"), "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert_eq!(err.matches("transport error").count(), 1, "{err}");

    // A missing file: the file and its flag.
    let missing = env.cli(
        CI_RUNNER,
        &["grants", "list", "--ca", "/nonexistent/root.pem"],
    );
    let err = error_line(&missing, 1);
    assert!(
        err.contains("/nonexistent/root.pem") && err.contains("--ca"),
        "{err}"
    );
    assert_eq!(err.matches("No such file").count(), 0, "{err}");
    let missing = env.cli(CI_RUNNER, &["verify", "--x509", "/nonexistent/svid.pem"]);
    let err = error_line(&missing, 1);
    assert!(
        err.contains("/nonexistent/svid.pem") && err.contains("--x509"),
        "{err}"
    );

    // Roots that did not sign the server: say what --ca must be.
    let other = rcgen::generate_simple_self_signed(vec!["other".to_owned()]).unwrap();
    let other_root = dir.path().join("other.pem");
    std::fs::write(&other_root, other.cert.pem()).unwrap();
    let foreign = env.cli(
        CI_RUNNER,
        &["grants", "list", "--ca", other_root.to_str().unwrap()],
    );
    let err = error_line(&foreign, 5);
    assert!(err.contains("JITID_CA") && err.contains("root"), "{err}");
    assert_eq!(err.matches("UnknownIssuer").count(), 1, "{err}");

    // A certificate with another identity's key: both files named.
    let (cert, _) = env.identity_files(CI_RUNNER);
    let (_, key) = env.identity_files(SRE_A);
    let mismatch = env.cli(
        CI_RUNNER,
        &[
            "grants",
            "list",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    let err = error_line(&mismatch, 1);
    assert!(err.contains(cert.to_str().unwrap()), "{err}");
    assert!(err.contains(key.to_str().unwrap()), "{err}");

    // An output directory others can write to: refused before anything
    // is issued, with the fix.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let open = env.cli(
        CI_RUNNER,
        &[
            "fetch",
            "x509",
            "--entitlement",
            "ci-publish",
            "--out",
            shared.to_str().unwrap(),
        ],
    );
    let err = error_line(&open, 1);
    assert!(err.contains("chmod go-w"), "{err}");
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0, "{err}");
    assert_eq!(env.grants(), 0, "nothing issued: {err}");

    // An unknown entitlement: did you mean, or what you may request.
    let out = dir.path().join("x");
    let out = out.to_str().unwrap();
    let typo = env.cli(
        CI_RUNNER,
        &["fetch", "x509", "--entitlement", "ci-publsh", "--out", out],
    );
    let err = error_line(&typo, 3);
    assert!(err.contains("did you mean \"ci-publish\"?"), "{err}");
    let far = env.cli(
        CI_RUNNER,
        &["fetch", "x509", "--entitlement", "zzz", "--out", out],
    );
    let err = error_line(&far, 3);
    assert!(err.contains("you may request: ci-publish"), "{err}");

    // Usage errors: the same form, exit 2, no usage dump.
    let usage = env.cli(
        CI_RUNNER,
        &["fetch", "x509", "--entitlment", "ci-publish", "--out", out],
    );
    let err = error_line(&usage, 2);
    assert!(err.contains("--entitlment"), "{err}");
    assert!(err.contains("jitid fetch x509 --help"), "{err}");
    assert!(!err.contains("Usage:"), "{err}");
    let conflict = env.cli(
        CI_RUNNER,
        &["fetch", "x509", "--grant", "g", "--wait", "--out", out],
    );
    error_line(&conflict, 2);
    let no_ca = Command::new(jitid_bin())
        .env_clear()
        .args(["grants", "list"])
        .output()
        .unwrap();
    let err = error_line(&no_ca, 2);
    assert!(err.contains("--ca") && err.contains("JITID_CA"), "{err}");
    let group = Command::new(jitid_bin()).arg("fetch").output().unwrap();
    let err = error_line(&group, 2);
    assert!(err.contains("needs a subcommand: x509, jwt"), "{err}");
    let missing = Command::new(jitid_bin())
        .args(["fetch", "x509"])
        .output()
        .unwrap();
    let err = error_line(&missing, 2);
    assert!(err.contains("--out <OUT>"), "{err}");
}

#[test]
fn help_shows_what_each_command_uses() {
    let help = |args: &[&str]| {
        let output = Command::new(jitid_bin())
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0));
        stdout(&output)
    };
    let bundle = help(&["bundle"]);
    assert!(
        !bundle.contains("--cert") && !bundle.contains("--key"),
        "{bundle}"
    );
    assert!(bundle.contains("--ca"), "{bundle}");

    let exec = help(&["exec"]);
    for text in [
        "JITID_SVID",
        "JITID_SVID_KEY",
        "JITID_BUNDLE",
        "JITID_JWT",
        "Exit status",
        "--wait",
        "--break-glass",
        "Examples:",
    ] {
        assert!(exec.contains(text), "{text:?} in {exec}");
    }
    let deny = help(&["deny"]);
    assert!(deny.contains("--reason"), "{deny}");
    assert!(!deny.contains("--comment <"), "{deny}");
    for command in [
        &["fetch", "x509"][..],
        &["fetch", "jwt"],
        &["grants", "list"],
        &["revoke"],
        &["verify"],
        &["dev"],
        &["serve"],
        &["approve"],
    ] {
        let text = help(command);
        assert!(text.contains("Examples:\n  jitid "), "{command:?}: {text}");
        // --log comes last, under its own heading.
        let log = text.find("--log").unwrap();
        let options = text.find("Options:").unwrap();
        let help_flag = text.find("--help").unwrap();
        assert!(log > options && log > help_flag, "{command:?}: {text}");
    }
    // --comment still works for deny, --format for audit.
    let parsed = Command::new(jitid_bin())
        .env_clear()
        .args(["deny", "g", "--comment", "no", "--ca", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(parsed.status.code(), Some(1), "{}", stderr(&parsed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_output_switch_for_audit_policy_and_bench() {
    let env = TestEnv::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, grant) = fetch_x509(&env, &dir.path().join("svid"));

    // audit search/tail: --output json, --format jsonl still accepted.
    for flag in [["--output", "json"], ["--format", "jsonl"]] {
        let found = exited(
            &env.cli(
                AUDITOR,
                &["audit", "search", "--grant", &grant, flag[0], flag[1]],
            ),
            0,
        );
        assert!(found.lines().count() >= 2, "{found}");
        for line in found.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }
    let report = env.cli(AUDITOR, &["audit", "report", "--output", "json"]);
    exited(&report, 0);
    let value: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert!(
        value["entitlements"]["ci-publish"]["granted"]
            .as_u64()
            .unwrap()
            >= 1,
        "{value}"
    );
    let life = env.cli(AUDITOR, &["audit", "grant", &grant, "--output", "json"]);
    exited(&life, 0);
    let value: serde_json::Value = serde_json::from_slice(&life.stdout).unwrap();
    assert_eq!(value["grant_id"], grant.as_str());
    assert!(!value["events"].as_array().unwrap().is_empty(), "{value}");

    let config = env.dir.path().join("jitid.toml");
    let check = env.cli(
        CI_RUNNER,
        &[
            "policy",
            "check",
            config.to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    exited(&check, 0);
    let value: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(value["ok"], true);
    assert!(
        value["entitlements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "ci-publish"),
        "{value}"
    );

    // bench: the load generator's CPU line is not the server's.
    let bench = exited(
        &env.cli(
            CI_RUNNER,
            &["bench", "--requests", "5", "--concurrency", "1"],
        ),
        0,
    );
    assert!(bench.contains("cpu load generator jitid"), "{bench}");
    assert!(bench.contains("cpu server "), "{bench}");
}

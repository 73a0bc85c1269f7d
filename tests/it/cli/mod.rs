//! The `jitid` binary end to end: dev mode, fetch, bundle, CA commands,
//! errors and exit codes.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use crate::support::svid::{check_jwt_svid, check_x509_svid};
use crate::support::{CI_RUNNER, TestEnv, jitid_bin};

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

#[test]
fn dev_mode_then_fetch_verify_and_bundle() {
    let work = tempfile::tempdir().unwrap();
    let dev_dir = work.path().join("dev");
    let server = ServerProcess::dev(&dev_dir);
    let out = work.path().join("svid");

    // fetch x509, as the banner says.
    let output = run(server
        .command()
        .args([
            "fetch",
            "x509",
            "--entitlement",
            "ci-publish",
            "--task",
            "build-1",
            "--ttl",
            "5m",
            "--output",
            "json",
            "--out",
        ])
        .arg(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(json["spiffe_id"], "spiffe://example.org/ci/runner");
    assert_eq!(
        json["actions"],
        serde_json::json!(["read:source", "publish:artifacts"])
    );
    assert_eq!(json["task_id"], "build-1");
    assert!(
        json["grant_id"].is_string()
            && json["serial"].is_string()
            && json["expires_at"].is_string()
    );
    let key_mode = std::fs::metadata(out.join("svid.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);

    // openssl accepts the chain with the dev root.
    let svid_pem = out.join("svid.pem");
    let verify = run(Command::new("openssl")
        .args(["verify", "-CAfile", server.export("JITID_CA"), "-untrusted"])
        .arg(&svid_pem)
        .arg(&svid_pem));
    assert!(stdout(&verify).contains(": OK"));

    // The spiffe crate parses it as an X509-SVID; it meets every rule.
    let chain = jitid::ca::read_certs(&svid_pem).unwrap();
    let key_pem = std::fs::read_to_string(out.join("svid.key")).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let roots = jitid::ca::read_certs(Path::new(server.export("JITID_CA"))).unwrap();
    check_x509_svid(
        &chain,
        Some(key.secret_der()),
        &roots,
        "spiffe://example.org/ci/runner",
    );
    assert_eq!(
        jitid::ca::read_certs(&out.join("bundle.pem")).unwrap(),
        roots
    );

    // fetch jwt, verified against `jitid bundle --format spiffe`.
    let token = stdout(&run(server.command().args([
        "fetch",
        "jwt",
        "--entitlement",
        "ci-publish",
        "--audience",
        "artifacts.example.org",
    ])));
    let bundle = stdout(&run(server
        .command()
        .args(["bundle", "--format", "spiffe"])));
    check_jwt_svid(
        token.trim(),
        bundle.as_bytes(),
        "artifacts.example.org",
        "spiffe://example.org/ci/runner",
    );
    let pem = stdout(&run(server.command().args(["bundle", "--format", "pem"])));
    assert_eq!(
        pem,
        std::fs::read_to_string(server.export("JITID_CA")).unwrap()
    );

    // SIGTERM shuts down gracefully.
    assert!(server.terminate().success());

    // A second start reuses the trust domain.
    let root_before = std::fs::read(dev_dir.join("root.pem")).unwrap();
    let server = ServerProcess::dev(&dev_dir);
    assert_eq!(
        std::fs::read(dev_dir.join("root.pem")).unwrap(),
        root_before
    );
    drop(server);
}

use rustls::pki_types::pem::PemObject;

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
fn ca_init_and_issue_identity() {
    let work = tempfile::tempdir().unwrap();
    let ca_dir = work.path().join("ca");
    let init = || {
        Command::new(jitid_bin())
            .args(["ca", "init", "--trust-domain", "prod.example.com", "--dir"])
            .arg(&ca_dir)
            .output()
            .unwrap()
    };
    stdout(&init());
    for key in ["root.key", "signing.key", "jwt.key"] {
        let mode = std::fs::metadata(ca_dir.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let again = init();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));

    let out = work.path().join("workload");
    let issue = || {
        Command::new(jitid_bin())
            .args([
                "ca",
                "issue-identity",
                "--spiffe-id",
                "spiffe://prod.example.com/svc/api",
                "--ttl",
                "720h",
                "--out",
            ])
            .arg(&out)
            .arg("--ca-dir")
            .arg(&ca_dir)
            .output()
            .unwrap()
    };
    stdout(&issue());
    let mode = std::fs::metadata(out.join("identity.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let chain = jitid::ca::read_certs(&out.join("identity.pem")).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
    let lifetime = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert!(
        (720 * 3600..=720 * 3600 + 60).contains(&lifetime),
        "{lifetime}"
    );
    assert_eq!(issue().status.code(), Some(1), "refuses to overwrite");

    // An ID outside the CA's trust domain is refused.
    let output = Command::new(jitid_bin())
        .args([
            "ca",
            "issue-identity",
            "--spiffe-id",
            "spiffe://other.org/svc/api",
            "--out",
        ])
        .arg(work.path().join("other"))
        .arg("--ca-dir")
        .arg(&ca_dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("signing certificate names spiffe://prod.example.com")
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

/// The README's round trip on Redis: fetch, verify VALID, revoke, verify
/// REVOKED; then the grants commands, completion, and an admin.
#[test]
fn fetch_verify_revoke_verify_on_redis() {
    let redis = crate::support::redis::RedisServer::start();
    let work = tempfile::tempdir().unwrap();
    let dev_dir = work.path().join("dev");
    let server = ServerProcess::dev_with(&dev_dir, &["--redis", &redis.url()]);
    let out = work.path().join("svid");
    let fetched = stdout(&run(server
        .command()
        .args([
            "fetch",
            "x509",
            "--entitlement",
            "ci-publish",
            "--task",
            "build-7",
            "--output",
            "json",
            "--out",
        ])
        .arg(&out)));
    let fetched: serde_json::Value = serde_json::from_str(&fetched).unwrap();
    let grant_id = fetched["grant_id"].as_str().unwrap().to_owned();
    let svid = out.join("svid.pem");

    let valid = run(server.command().arg("verify").arg("--x509").arg(&svid));
    assert!(stdout(&valid).starts_with("VALID: live"));

    let listed = stdout(&run(server
        .command()
        .args(["grants", "list", "--output", "json"])));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["grant_id"], grant_id.as_str());
    assert_eq!(listed[0]["state"], "active");
    let shown = stdout(&run(server.command().args(["grants", "show", &grant_id])));
    assert!(shown.contains("state        active"), "{shown}");
    assert!(
        shown.contains(&format!(
            "credential   x509 {}",
            fetched["serial"].as_str().unwrap()
        )),
        "{shown}"
    );

    let revoked = stdout(&run(server.command().args([
        "revoke",
        "--grant",
        &grant_id,
        "--reason",
        "job cancelled",
    ])));
    assert_eq!(revoked.trim(), format!("revoked grant {grant_id}"));
    let invalid = run(server.command().arg("verify").arg("--x509").arg(&svid));
    assert_eq!(invalid.status.code(), Some(6), "exit 6: not valid");
    let text = String::from_utf8_lossy(&invalid.stdout);
    assert!(text.starts_with("REVOKED: grant"), "{text}");
    assert!(text.contains("job cancelled"), "{text}");
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("credential is REVOKED"));

    // A JWT, completed by its task; verified by audience.
    let token = stdout(&run(server.command().args([
        "fetch",
        "jwt",
        "--entitlement",
        "ci-publish",
        "--task",
        "build-8",
        "--audience",
        "artifacts",
    ])));
    let token = token.trim();
    assert!(
        stdout(&run(server.command().args([
            "verify",
            "--jwt",
            token,
            "--audience",
            "artifacts"
        ])))
        .starts_with("VALID")
    );
    let wrong = run(server.command().args([
        "verify",
        "--jwt",
        token,
        "--audience",
        "elsewhere",
        "--output",
        "json",
    ]));
    assert_eq!(wrong.status.code(), Some(6));
    let wrong: serde_json::Value = serde_json::from_slice(&wrong.stdout).unwrap();
    assert_eq!(wrong["status"], "INVALID");
    let completed = stdout(&run(server
        .command()
        .args(["complete", "--task", "build-8"])));
    assert!(completed.starts_with("completed grant "), "{completed}");
    let after = run(server
        .command()
        .args(["verify", "--jwt", token, "--audience", "artifacts"]));
    assert_eq!(after.status.code(), Some(6));

    // Unknown grants exit 7; another subject's grant is refused (3); the
    // demo admin may revoke it.
    let unknown =
        run(server
            .command()
            .args(["revoke", "--grant", "00000000-0000-4000-8000-000000000000"]));
    assert_eq!(
        unknown.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let again = stdout(&run(server
        .command()
        .args([
            "fetch",
            "x509",
            "--entitlement",
            "ci-publish",
            "--output",
            "json",
            "--out",
        ])
        .arg(&out)));
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    let again_id = again["grant_id"].as_str().unwrap();
    let agent = dev_dir.join("identities/agent");
    let refused = run(server
        .command()
        .env("JITID_CERT", agent.join("identity.pem"))
        .env("JITID_KEY", agent.join("identity.key"))
        .args(["revoke", "--grant", again_id]));
    assert_eq!(
        refused.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let ops = dev_dir.join("identities/ops");
    let by_admin = run(server
        .command()
        .env("JITID_CERT", ops.join("identity.pem"))
        .env("JITID_KEY", ops.join("identity.key"))
        .args([
            "revoke",
            "--subject",
            "spiffe://example.org/ci/runner",
            "--reason",
            "offboarded",
        ]));
    assert!(stdout(&by_admin).contains(&format!("revoked grant {again_id}")));
    // Missing target is a usage error.
    assert_eq!(
        run(server.command().args(["revoke"])).status.code(),
        Some(2)
    );
}

/// SIGHUP reloads the catalogue: the next decision changes; a malformed
/// file is refused with a precise error and the catalogue in force stays.
#[test]
fn catalogue_reload_on_sighup_keeps_the_last_good_one() {
    let work = tempfile::tempdir().unwrap();
    let dev_dir = work.path().join("dev");
    let server = ServerProcess::dev(&dev_dir);
    let out = work.path().join("svid");
    let fetch = |entitlement: &str| {
        run(server
            .command()
            .args(["fetch", "x509", "--entitlement", entitlement, "--out"])
            .arg(&out))
    };
    let hangup = || {
        let status = Command::new("kill")
            .args(["-HUP", &server.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let eventually = |entitlement: &str, code: i32| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let output = fetch(entitlement);
            if output.status.code() == Some(code) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{entitlement} never exited {code}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    assert!(fetch("ci-publish").status.success());

    let config_path = dev_dir.join("jitid.toml");
    let original = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        original.replace("name = \"ci-publish\"", "name = \"ci-release\""),
    )
    .unwrap();
    hangup();
    eventually("ci-publish", 3);
    assert!(fetch("ci-release").status.success());

    // A broken catalogue: the checker names file, entry and field, and the
    // server keeps the last good catalogue.
    let broken = original
        .replace("name = \"ci-publish\"", "name = \"ci-broken\"")
        .replace("max_ttl = \"30m\"", "max_ttl = \"2h\"");
    std::fs::write(&config_path, &broken).unwrap();
    let check = run(Command::new(jitid_bin())
        .args(["policy", "check"])
        .arg(&config_path));
    assert_eq!(check.status.code(), Some(1));
    let message = String::from_utf8_lossy(&check.stderr);
    assert!(
        message.contains(
            "jitid.toml: entitlement \"ci-broken\": `max_ttl`: 2h is above the ceiling of 30m"
        ),
        "{message}"
    );
    hangup();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        fetch("ci-release").status.success(),
        "the last good catalogue stays"
    );
    assert_eq!(fetch("ci-broken").status.code(), Some(3));

    std::fs::write(&config_path, &original).unwrap();
    let good = stdout(&run(Command::new(jitid_bin())
        .args(["policy", "check"])
        .arg(&config_path)));
    assert!(good.contains("ok, 4 entitlements"), "{good}");

    // Both reloads are in the audit trail's JSON-lines copy.
    let audit = dev_dir.join("audit.jsonl");
    let verify = || {
        run(Command::new(jitid_bin())
            .args(["audit", "verify", "--file"])
            .arg(&audit))
    };
    let reloads: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["kind"] == "catalogue_reloaded")
        .collect();
    assert_eq!(reloads.len(), 2, "{reloads:?}");
    assert_eq!(reloads[0]["details"]["reloaded"], true);
    assert_eq!(reloads[0]["actor"], "system");
    assert_eq!(reloads[1]["details"]["reloaded"], false);
    assert!(stdout(&verify()).contains("audit trail ok"));

    // A restarted server continues the file's chain.
    assert!(server.terminate().success());
    let server = ServerProcess::dev(&dev_dir);
    let out = work.path().join("again");
    assert!(
        run(server
            .command()
            .args(["fetch", "x509", "--entitlement", "ci-publish", "--out"])
            .arg(&out))
        .status
        .success()
    );
    let checked = stdout(&verify());
    assert!(checked.contains("audit trail ok"), "{checked}");
}

/// The approval and break-glass paths from the command line, on the dev
/// catalogue (with its change window opened to every hour, so the test
/// does not depend on the day): `policy explain`, `fetch --wait` released
/// by `approve`, separation of duties, break-glass and `reviews`.
#[test]
fn approvals_break_glass_and_reviews_from_the_cli() {
    let work = tempfile::tempdir().unwrap();

    // Explain against the catalogue as shipped: Saturday is outside the
    // prod_changes window, Monday morning inside it.
    let shipped = work.path().join("shipped.toml");
    std::fs::write(&shipped, jitid::dev::EXAMPLE_CONFIG).unwrap();
    let explain = |at: &str, ticket: &str| {
        run(Command::new(jitid_bin())
            .args(["policy", "explain", "--config"])
            .arg(&shipped)
            .args([
                "--as",
                "spiffe://example.org/ci/runner",
                "--entitlement",
                "prod-deploy",
                "--justification",
                "ship 2.4",
                "--ticket",
                ticket,
                "--context",
                "team=payments",
                "--at",
                at,
            ]))
    };
    let saturday = explain("2026-11-21T12:00:00Z", "CHG-7");
    assert_eq!(saturday.status.code(), Some(3));
    let text = String::from_utf8_lossy(&saturday.stdout);
    assert!(text.contains("window     prod_changes: closed"), "{text}");
    assert!(
        String::from_utf8_lossy(&saturday.stderr).contains(
            "do not permit \"deploy:prod/payments\" now: needs deploy-in-window: production deploys happen inside the prod_changes window"
        ),
        "{}",
        String::from_utf8_lossy(&saturday.stderr)
    );
    let monday = stdout(&explain("2026-11-23T10:00:00Z", "CHG-7"));
    assert!(
        monday.contains("decision     needs 1 approval(s) for prod-deploy for 5m"),
        "{monday}"
    );
    assert!(
        monday.contains("matched    conditions: deploy-in-window"),
        "{monday}"
    );
    assert!(
        monday.contains("matched    approval: 1 of group:sre"),
        "{monday}"
    );
    assert!(monday.contains("label      team=payments"), "{monday}");
    let wrong_ticket = explain("2026-11-23T10:00:00Z", "INC-1");
    assert_eq!(wrong_ticket.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&wrong_ticket.stderr)
            .contains("forbid it: change-ticket: the ticket must be a change ticket (CHG-...)")
    );

    // The dev server, its window open at all times.
    let dev_dir = work.path().join("dev");
    std::fs::create_dir(&dev_dir).unwrap();
    std::fs::set_permissions(&dev_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let always = jitid::dev::EXAMPLE_CONFIG
        .replace(
            "days = [\"mon\", \"tue\", \"wed\", \"thu\"]",
            "days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]",
        )
        .replace("start = \"09:00\"", "start = \"00:00\"")
        .replace("end = \"16:00\"", "end = \"24:00\"");
    std::fs::write(dev_dir.join("jitid.toml"), always).unwrap();
    let server = ServerProcess::dev(&dev_dir);
    let as_identity = |name: &str| {
        let mut command = server.command();
        let identity = dev_dir.join("identities").join(name);
        command
            .env("JITID_CERT", identity.join("identity.pem"))
            .env("JITID_KEY", identity.join("identity.key"));
        command
    };
    let out = work.path().join("deploy");
    let deploy = [
        "fetch",
        "x509",
        "--entitlement",
        "prod-deploy",
        "--justification",
        "ship payments 2.4",
        "--ticket",
        "CHG-7",
        "--out",
    ];

    // Straight away: needs approval (exit 8).
    let direct = run(server.command().args(deploy).arg(&out));
    assert_eq!(direct.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&direct.stderr).contains("needs 1 approval(s)"));

    // --wait requests the grant and blocks until it is approved.
    let mut waiting = server
        .command()
        .args(deploy)
        .arg(&out)
        .arg("--wait")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(waiting.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let grant = line
        .strip_prefix("grant ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no pending grant announced: {line:?}"))
        .to_owned();
    assert!(line.contains("is pending approval"), "{line}");

    // It is in the SRE's queue.
    let queue = stdout(&run(as_identity("ops").args([
        "grants",
        "list",
        "--awaiting-approval",
    ])));
    assert!(
        queue.contains(&grant) && queue.contains("pending"),
        "{queue}"
    );

    // The requester may not approve its own request; an SRE may.
    let own = run(server.command().args(["approve", &grant]));
    assert_eq!(own.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&own.stderr).contains("is not an approver"));
    let approved = stdout(&run(as_identity("ops").args([
        "approve",
        &grant,
        "--comment",
        "go",
    ])));
    assert!(
        approved.contains(&format!("grant {grant} is active")),
        "{approved}"
    );
    let fetched = waiting.wait_with_output().unwrap();
    assert!(
        fetched.status.success(),
        "fetch --wait exits 0 once approved"
    );
    assert!(out.join("svid.pem").exists());
    let shown = stdout(&run(server.command().args(["grants", "show", &grant])));
    assert!(
        shown.contains("approved by  spiffe://example.org/ops/admin"),
        "{shown}"
    );
    assert!(
        shown.contains("matched    conditions: deploy-in-window"),
        "{shown}"
    );

    // Break-glass: issued at once, flagged, reviewed by security.
    stdout(&run(server.command().args(["complete", "--grant", &grant])));
    let emergency = stdout(&run(server
        .command()
        .args([
            "fetch",
            "x509",
            "--entitlement",
            "prod-deploy",
            "--break-glass",
            "--justification",
            "INC-9: payments down",
            "--ticket",
            "INC-9",
            "--output",
            "json",
            "--out",
        ])
        .arg(work.path().join("emergency"))));
    let emergency: serde_json::Value = serde_json::from_str(&emergency).unwrap();
    let emergency_grant = emergency["grant_id"].as_str().unwrap().to_owned();
    let listed = stdout(&run(as_identity("reviewer").args(["reviews", "list"])));
    assert!(listed.contains(&emergency_grant), "{listed}");
    assert!(listed.contains("OPEN"), "{listed}");
    let not_reviewer =
        run(server
            .command()
            .args(["reviews", "ack", &emergency_grant, "--comment", "fine"]));
    assert_eq!(not_reviewer.status.code(), Some(3));
    stdout(&run(as_identity("reviewer").args([
        "reviews",
        "ack",
        &emergency_grant,
        "--comment",
        "outage confirmed",
    ])));
    let open = stdout(&run(as_identity("reviewer").args(["reviews", "list"])));
    assert!(open.trim().is_empty(), "{open}");
    let all = stdout(&run(
        as_identity("reviewer").args(["reviews", "list", "--all"])
    ));
    assert!(all.contains("outage confirmed"), "{all}");
}

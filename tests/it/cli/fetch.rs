//! Fetching and verifying from the command line: `jitid dev` then fetch,
//! verify and bundle; and the README's round trip on Redis, with the
//! grants commands, completion and revocation.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use rustls::pki_types::pem::PemObject;

use super::{ServerProcess, run, stdout};
use crate::support::svid::{check_jwt_svid, check_x509_svid};

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
    // The verdict is output, said once: nothing on stderr.
    assert_eq!(String::from_utf8_lossy(&invalid.stderr), "");

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

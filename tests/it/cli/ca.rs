//! The CA commands: `ca init` and `ca issue-identity`, the modes of the
//! keys they write, and what they refuse to overwrite or sign.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use super::stdout;
use crate::support::jitid_bin;

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

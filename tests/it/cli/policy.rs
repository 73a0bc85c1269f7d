//! The catalogue from the command line: reloading it on SIGHUP, `policy
//! explain`, approvals, separation of duties, break-glass and reviews.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use super::{ServerProcess, run, stdout};
use crate::support::jitid_bin;

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
    assert!(good.contains("ok, 5 entitlements"), "{good}");

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

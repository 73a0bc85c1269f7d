//! `jitid bench` runs every mode against a real server and counts what it
//! did; the figures themselves are for humans (see docs/benchmarks.md).

use std::time::Duration;

use jitid::bench::{BenchConfig, Mode, cpu, run, run_crypto_only};
use jitid::client::{ClientConfig, SvidRequest};
use jitid::proto::v1 as pb;

use crate::support::{CI_RUNNER, TestEnv};

fn config(env: &TestEnv, mode: Mode) -> BenchConfig {
    BenchConfig {
        mode,
        concurrency: 4,
        duration: Duration::from_secs(60),
        warmup: Duration::ZERO,
        requests: Some(12),
        rate: None,
        request: SvidRequest::entitlement("ci-publish"),
        new_connection: false,
        resume: false,
        client: ClientConfig {
            server: env.url(),
            server_roots: env.roots(),
            identity: Some(env.identity(CI_RUNNER)),
            retry: jitid::client::RetryPolicy::default(),
        },
        watch: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_runs_and_reports() {
    let env = TestEnv::start().await;
    // The server runs in this process: found by its listening port.
    let server = cpu::listener_of(env.url()[8..].parse().unwrap()).unwrap();
    assert_eq!(server.pid, std::process::id());

    // Exec first: each of its tasks is completed, so none stays active.
    let report = run(BenchConfig {
        watch: vec![server.clone()],
        ..config(&env, Mode::Exec)
    })
    .await
    .unwrap();
    assert_eq!(report.ok, 12, "{}", report.to_text());
    let client = env.client_for(CI_RUNNER).await;
    let grants = client
        .list_grants(pb::ListGrantsRequest::default())
        .await
        .unwrap();
    assert_eq!(grants.len(), 12);
    assert!(
        grants
            .iter()
            .all(|grant| grant.state == pb::GrantState::Completed as i32),
        "{grants:?}"
    );
    // One process watched: the server (this process, counted once).
    assert_eq!(report.cpu.len(), 1, "{:?}", report.cpu);
    assert_eq!(report.to_json()["cpu"][0]["pid"], std::process::id());
    assert!(report.to_text().contains("µs/request"));
    assert_eq!(report.memory.len(), 1);
    assert!(report.to_json()["memory"][0]["rss_bytes"].as_u64().unwrap() > 0);

    for (mode, new_connection, resume) in [
        (Mode::X509, false, false),
        (Mode::X509, true, false),
        (Mode::X509, true, true),
        (Mode::Jwt, false, false),
        (Mode::Verify, false, false),
        (Mode::Revocation, false, false),
    ] {
        let report = run(BenchConfig {
            new_connection,
            resume,
            // Paced: 12 requests due over about 0.1 s.
            rate: (mode == Mode::Jwt).then_some(120.0),
            ..config(&env, mode)
        })
        .await
        .unwrap();
        assert_eq!(report.ok, 12, "{mode:?}: {}", report.to_text());
        assert!(report.errors.is_empty(), "{mode:?}: {:?}", report.errors);
        assert_eq!(report.strict_misses, 0);
        assert!(report.percentile(0.5) <= report.percentile(0.99));
        let json = report.to_json();
        assert_eq!(json["ok"], 12);
        assert!(json["throughput_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(json["crypto_only"], false);
    }
}

#[test]
fn crypto_only_signs_without_a_server() {
    for mode in [Mode::X509, Mode::Jwt] {
        let report = run_crypto_only(mode, 2, Duration::from_secs(60), Some(20)).unwrap();
        assert_eq!(report.ok, 20, "{mode:?}: {}", report.to_text());
        assert!(report.errors.is_empty());
        assert!(report.crypto_only);
        assert!(report.to_text().contains("crypto only"));
    }
    assert!(run_crypto_only(Mode::Verify, 1, Duration::from_secs(1), Some(1)).is_err());
}

#[test]
fn the_cli_runs_crypto_only_with_no_server_or_identity() {
    let output = std::process::Command::new(crate::support::jitid_bin())
        .env_clear()
        .args([
            "bench",
            "--crypto-only",
            "--mode",
            "jwt",
            "--requests",
            "10",
        ])
        .args(["--concurrency", "1", "--output", "json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], 10);
    assert_eq!(report["crypto_only"], true);
}

#[test]
fn the_cli_refuses_a_zero_concurrency_or_rate() {
    let cases: [(&[&str], &str); 3] = [
        (&["--concurrency", "0"], "--concurrency"),
        (&["--rate", "0"], "--rate"),
        (&["--rate=-3"], "--rate"),
    ];
    for (args, named) in cases {
        let output = std::process::Command::new(crate::support::jitid_bin())
            .env_clear()
            .args(["bench", "--crypto-only", "--requests", "1"])
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}

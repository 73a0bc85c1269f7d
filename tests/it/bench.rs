//! `jitid bench` runs every mode against a real server and counts what it
//! did; the figures themselves are for humans (see BENCHMARKS.md).

use std::time::Duration;

use jitid::bench::{BenchConfig, Mode, run};
use jitid::client::{ClientConfig, SvidRequest};

use crate::support::{CI_RUNNER, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_runs_and_reports() {
    let env = TestEnv::start().await;
    for (mode, new_connection) in [
        (Mode::X509, false),
        (Mode::X509, true),
        (Mode::Jwt, false),
        (Mode::Verify, false),
        (Mode::Revocation, false),
    ] {
        let report = run(BenchConfig {
            mode,
            concurrency: 4,
            duration: Duration::from_secs(60),
            requests: Some(12),
            request: SvidRequest::entitlement("ci-publish"),
            new_connection,
            client: ClientConfig {
                server: env.url(),
                server_roots: env.roots(),
                identity: Some(env.identity(CI_RUNNER)),
                retry: jitid::client::RetryPolicy::default(),
            },
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
    }
}

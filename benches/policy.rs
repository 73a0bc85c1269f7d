//! What a decision costs on the issuance path: `policy::evaluate` on the
//! dev catalogue for a plain entitlement and for one with Cedar conditions,
//! and the JSON of the explanation the issuer records on the grant.
//!
//! ```sh
//! cargo bench --bench policy
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use jitid::config::Config;
use jitid::grant::Action;
use jitid::policy::{AccessRequest, RequestContext, evaluate};
use jitid::spiffe_id::SpiffeId;

mod support;
use support::time;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jitid.toml");
    std::fs::write(&path, jitid::dev::EXAMPLE_CONFIG).unwrap();
    let config = Config::load(&path).unwrap();
    let catalogue = &config.catalogue;
    let runner = SpiffeId::new("spiffe://example.org/ci/runner").unwrap();
    let context = RequestContext {
        environment: "prod".to_owned(),
        labels: [("repo".to_owned(), "payments".to_owned())].into(),
        source: Some("10.1.2.3".parse().unwrap()),
        attestation: None,
    };
    // A Monday, 10:00 UTC: inside the prod_changes window.
    let monday = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_392_000 + 10 * 3600);
    let actions: Vec<Action> = Vec::new();
    let plain = AccessRequest {
        entitlement: Some("ci-publish"),
        actions: &actions,
        ttl: None,
        justification: "",
        ticket: "",
        audiences: None,
        break_glass: false,
        live_grants: &[],
    };
    let conditioned = AccessRequest {
        entitlement: Some("prod-deploy"),
        justification: "ship payments 2.4",
        ticket: "CHG-7",
        ..plain
    };
    assert!(
        evaluate(catalogue, &runner, &conditioned, &context, monday)
            .result
            .is_ok()
    );
    time(
        "evaluate: ci-publish (no conditions)",
        "µs",
        200_000,
        || {
            black_box(evaluate(catalogue, &runner, &plain, &context, monday));
        },
    );
    time(
        "evaluate: prod-deploy (2 Cedar policies, 1 action)",
        "µs",
        20_000,
        || {
            black_box(evaluate(catalogue, &runner, &conditioned, &context, monday));
        },
    );
    let explanation = evaluate(catalogue, &runner, &plain, &context, monday).explanation;
    time(
        "explanation to JSON (recorded on the grant)",
        "µs",
        200_000,
        || {
            black_box(serde_json::to_string(&explanation).unwrap());
        },
    );
}

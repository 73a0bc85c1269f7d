//! What a relying party's local check costs: `RevocationCache::is_revoked`
//! with 100,000 revoked grants, 100,000 revoked credentials and 10,000
//! revoked tasks held, for a live credential (the common answer: every map
//! is looked up) and a revoked one.
//!
//! ```sh
//! cargo bench --bench revocation_cache
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use jitid::client::{CredentialClaims, RevocationCache};
use jitid::proto::v1 as pb;

mod support;
use support::time;

fn main() {
    let cache = RevocationCache::new(Duration::from_secs(3600));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let at = Some(prost_types::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: 0,
    });
    cache.apply(&pb::RevocationEvent {
        epoch: "epoch-1".to_owned(),
        heartbeat: true,
        at,
        ..Default::default()
    });
    for n in 0..100_000 {
        cache.apply(&pb::RevocationEvent {
            grant_ids: vec![uuid::Uuid::new_v4().to_string()],
            credential_id: format!("{n:040x}"),
            task_id: if n % 10 == 0 {
                format!("task-{n}")
            } else {
                String::new()
            },
            at,
            ..Default::default()
        });
    }
    let live_grant = uuid::Uuid::new_v4().to_string();
    let parents = [uuid::Uuid::new_v4().to_string()];
    let live = CredentialClaims {
        grant_id: &live_grant,
        credential_id: "ffffffffffffffffffffffffffffffffffffffff",
        task_id: "task-live",
        epoch: "epoch-1",
        parent_grant_ids: &parents,
    };
    let revoked = CredentialClaims {
        credential_id: &format!("{:040x}", 4242),
        ..live
    };
    assert!(!cache.is_revoked(&live).unwrap());
    assert!(cache.is_revoked(&revoked).unwrap());
    time(
        "is_revoked, live (grant, parent, credential, task)",
        "ns",
        2_000_000,
        || {
            black_box(cache.is_revoked(black_box(&live)).unwrap());
        },
    );
    time("is_revoked, revoked credential", "ns", 2_000_000, || {
        black_box(cache.is_revoked(black_box(&revoked)).unwrap());
    });
}

//! The delegation suite: delegation chains that round-trip, relying
//! parties that register and are forgotten, and their acknowledgements.

use std::time::{Duration, SystemTime};

use jitid::grant::{Ancestor, Delegation, Grant, GrantId, Shard};
use jitid::spiffe_id::SpiffeId;
use jitid::store::{GrantStore, RelyingParty};

use super::{ALICE, issue, millis_of};

/// Delegation records and relying parties' acknowledgements.
pub(super) async fn delegation_and_parties_conformance(store: &dyn GrantStore) {
    let minute = Duration::from_secs(60);
    let (root, _) = issue(store, ALICE, "agent-7", minute, None).await;
    let (mut child, _) = issue(store, ALICE, "agent-7", minute, Some(root.id)).await;
    child.delegation = Some(Delegation {
        spiffe_id: SpiffeId::new("spiffe://example.org/alice/task/agent-7/sub/search").unwrap(),
        chain: vec![Ancestor {
            grant_id: root.id,
            spiffe_id: SpiffeId::new("spiffe://example.org/alice/task/agent-7").unwrap(),
        }],
    });
    let child = Grant {
        id: GrantId::generate(Shard::of(&child.subject)),
        ..child
    };
    store.record_grant(&child).await.unwrap();
    assert_eq!(
        store.grant(child.id).await.unwrap(),
        Some(child.clone()),
        "the chain round-trips"
    );

    let now = SystemTime::UNIX_EPOCH + Duration::from_millis(millis_of(SystemTime::now()) as u64);
    let party = |name: &str, seen: SystemTime| RelyingParty {
        name: name.to_owned(),
        spiffe_id: SpiffeId::new("spiffe://example.org/svc/ledger").unwrap(),
        registered_at: now,
        last_seen: seen,
        cursor: "1-0".to_owned(),
    };
    store
        .register_relying_party(&party("ledger-a", now), minute)
        .await
        .unwrap();
    store
        .register_relying_party(&party("ledger-b", now), minute)
        .await
        .unwrap();
    // Heard from too long ago: forgotten.
    store
        .register_relying_party(&party("gone", now - 2 * minute), minute)
        .await
        .unwrap();
    let parties = store.relying_parties().await.unwrap();
    assert_eq!(
        parties.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["ledger-a", "ledger-b"]
    );
    assert_eq!(parties[0], party("ledger-a", now));

    let cursor = format!("{}-0", millis_of(now));
    assert!(store.applied(&cursor).await.unwrap().is_empty());
    store
        .mark_applied(&cursor, "ledger-a", now, minute)
        .await
        .unwrap();
    store
        .mark_applied(&cursor, "ledger-a", now + minute, minute)
        .await
        .unwrap();
    assert_eq!(
        store.applied(&cursor).await.unwrap(),
        vec![("ledger-a".to_owned(), now)],
        "the first acknowledgement stands"
    );
    assert!(store.mark_all_applied(&cursor, minute).await.unwrap());
    assert!(
        !store.mark_all_applied(&cursor, minute).await.unwrap(),
        "only once"
    );
    assert_eq!(store.applied(&cursor).await.unwrap().len(), 1);
}

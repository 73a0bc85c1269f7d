//! The attestation identity registry and join tokens, the same on every
//! backend: the check at attestation registers what it has not seen,
//! revocations by serial (seen or not) and by SPIFFE ID (identities issued
//! before it only), the list with states, undo, and join tokens taken once.

use std::time::{Duration, SystemTime};

use jitid::spiffe_id::SpiffeId;
use jitid::store::GrantStore;
use jitid::store::identities::{
    IdentityCheck, IdentityRecord, IdentityRevocation, IdentityStore, IssuedVia, JoinToken,
    PresentedIdentity, SerialRevocation,
};

const KEEP: Duration = Duration::from_secs(3600);

/// Now, to the millisecond the stores keep.
fn now() -> SystemTime {
    let millis = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    SystemTime::UNIX_EPOCH + Duration::from_millis(millis as u64)
}

fn serial() -> String {
    // 16 bytes, first bit clear, as jitid's.
    let mut serial = uuid::Uuid::new_v4().simple().to_string();
    serial.replace_range(0..1, "1");
    serial
}

fn presented<'a>(serial: &'a str, id: &'a SpiffeId, issued: SystemTime) -> PresentedIdentity<'a> {
    PresentedIdentity {
        serial,
        spiffe_id: id,
        not_before: issued - Duration::from_secs(10),
        not_after: issued + Duration::from_secs(600),
        issued_at: issued,
    }
}

fn revocation(at: SystemTime, reason: &str) -> IdentityRevocation {
    IdentityRevocation {
        at,
        by: "spiffe://example.org/ops/admin".to_owned(),
        reason: reason.to_owned(),
    }
}

async fn listed(store: &dyn IdentityStore, serial: &str) -> Option<IdentityRecord> {
    store
        .identities()
        .await
        .unwrap()
        .into_iter()
        .find(|record| record.serial == serial)
}

pub(super) async fn identities_conformance(grants: &dyn GrantStore) {
    let store = grants.identities().expect("the backend keeps identities");
    // Unique per run: a Redis shared by several suites sees them all.
    let id = SpiffeId::new(&format!(
        "spiffe://example.org/hosts/h-{}",
        uuid::Uuid::new_v4().simple()
    ))
    .unwrap();
    let other = SpiffeId::new(&format!("{id}-other")).unwrap();

    // Seen for the first time: good, and registered as minted offline.
    let offline = serial();
    let first_seen = now();
    let check = store
        .check_identity(&presented(&offline, &id, first_seen), KEEP)
        .await
        .unwrap();
    assert_eq!(check, IdentityCheck::Good);
    let record = listed(store, &offline).await.expect("registered");
    assert_eq!(record.spiffe_id.as_ref(), Some(&id));
    assert_eq!(record.via, IssuedVia::Offline);
    assert_eq!(record.issued_at, first_seen);
    assert_eq!(record.revoked, None);
    // Seen again: still good, still one record.
    assert_eq!(
        store
            .check_identity(&presented(&offline, &id, first_seen), KEEP)
            .await
            .unwrap(),
        IdentityCheck::Good
    );

    // Recorded when issued; listed oldest issued first.
    let renewed = serial();
    let issued = now() + Duration::from_millis(5);
    store
        .record_identity(
            &IdentityRecord {
                serial: renewed.clone(),
                spiffe_id: Some(id.clone()),
                not_before: issued - Duration::from_secs(10),
                not_after: issued + Duration::from_secs(600),
                via: IssuedVia::Renewed,
                issued_at: issued,
                revoked: None,
            },
            KEEP,
        )
        .await
        .unwrap();
    let order: Vec<String> = store
        .identities()
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.serial)
        .filter(|serial| *serial == offline || *serial == renewed)
        .collect();
    assert_eq!(order, [offline.clone(), renewed.clone()]);

    // Revoked by serial: refused, with who and why; a retry says so.
    let at = now();
    assert_eq!(
        store
            .revoke_identity_serial(&offline, &revocation(at, "lost laptop"), KEEP)
            .await
            .unwrap(),
        SerialRevocation::Revoked(id.clone())
    );
    match store
        .check_identity(&presented(&offline, &id, first_seen), KEEP)
        .await
        .unwrap()
    {
        IdentityCheck::Revoked(revoked) => {
            assert_eq!(revoked, revocation(at, "lost laptop"));
        }
        other => panic!("a revoked serial checked {other:?}"),
    }
    assert_eq!(
        store
            .revoke_identity_serial(&offline, &revocation(now(), "again"), KEEP)
            .await
            .unwrap(),
        SerialRevocation::AlreadyRevoked(Some(id.clone()))
    );
    // The other identity of the same ID is untouched.
    assert_eq!(
        store
            .check_identity(&presented(&renewed, &id, issued), KEEP)
            .await
            .unwrap(),
        IdentityCheck::Good
    );

    // A serial never seen is revoked for whenever it shows.
    let unseen = serial();
    assert_eq!(
        store
            .revoke_identity_serial(&unseen, &revocation(now(), "stolen"), KEEP)
            .await
            .unwrap(),
        SerialRevocation::Unseen
    );
    let tombstone = listed(store, &unseen).await.expect("listed");
    assert_eq!(tombstone.spiffe_id, None);
    assert_eq!(tombstone.via, IssuedVia::Unseen);
    assert!(matches!(
        store
            .check_identity(&presented(&unseen, &other, now()), KEEP)
            .await
            .unwrap(),
        IdentityCheck::Revoked(_)
    ));

    // Revoked by SPIFFE ID: every identity issued before, recorded or
    // not; one issued after is good; another ID is untouched.
    let before_unrecorded = serial();
    let cutoff = now() + Duration::from_millis(20);
    store
        .revoke_identity_id(&id, &revocation(cutoff, "decommissioned"), KEEP)
        .await
        .unwrap();
    for (serial, at) in [
        (&renewed, issued),
        (&before_unrecorded, cutoff - Duration::from_millis(10)),
    ] {
        match store
            .check_identity(&presented(serial, &id, at), KEEP)
            .await
            .unwrap()
        {
            IdentityCheck::Revoked(revoked) => assert_eq!(revoked.reason, "decommissioned"),
            other => panic!("an identity issued before the revocation checked {other:?}"),
        }
    }
    let after = serial();
    assert_eq!(
        store
            .check_identity(
                &presented(&after, &id, cutoff + Duration::from_millis(10)),
                KEEP
            )
            .await
            .unwrap(),
        IdentityCheck::Good
    );
    let elsewhere = serial();
    assert_eq!(
        store
            .check_identity(&presented(&elsewhere, &other, now()), KEEP)
            .await
            .unwrap(),
        IdentityCheck::Good
    );
    let renewed_record = listed(store, &renewed).await.unwrap();
    assert_eq!(
        renewed_record.revoked.map(|revoked| revoked.reason),
        Some("decommissioned".to_owned())
    );
    assert_eq!(listed(store, &after).await.unwrap().revoked, None);
    // A serial revocation stands over a later ID revocation's reason.
    assert_eq!(
        listed(store, &offline)
            .await
            .unwrap()
            .revoked
            .map(|revoked| revoked.reason),
        Some("lost laptop".to_owned())
    );

    // Undo: a discarded identity is gone.
    store.discard_identity(&after).await.unwrap();
    assert_eq!(listed(store, &after).await, None);

    // Join tokens: by hash, taken once, even by racing takers.
    let hash = format!("{:0>64}", uuid::Uuid::new_v4().simple());
    let token = JoinToken {
        hash: hash.clone(),
        spiffe_id: id.clone(),
        created_by: "spiffe://example.org/ops/admin".to_owned(),
        created_at: now(),
        expires_at: now() + Duration::from_secs(60),
    };
    store.put_join_token(&token).await.unwrap();
    // The same hash again leaves the first as it was.
    store
        .put_join_token(&JoinToken {
            spiffe_id: other.clone(),
            ..token.clone()
        })
        .await
        .unwrap();
    let (a, b, c, d) = tokio::join!(
        store.take_join_token(&hash),
        store.take_join_token(&hash),
        store.take_join_token(&hash),
        store.take_join_token(&hash),
    );
    let taken = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
    let winners: Vec<&JoinToken> = taken.iter().flatten().collect();
    assert_eq!(winners, [&token], "taken exactly once");
    assert_eq!(store.take_join_token(&hash).await.unwrap(), None);
    assert_eq!(
        store
            .take_join_token("0".repeat(64).as_str())
            .await
            .unwrap(),
        None
    );
    // Put back (an undo), it can be taken again, once.
    store.put_join_token(&token).await.unwrap();
    assert_eq!(store.take_join_token(&hash).await.unwrap(), Some(token));
}

/// The registry's keys expire on their own in Redis: each record and
/// revocation when nothing it covers can still be valid, the index with
/// the last record, a join token when it expires.
#[tokio::test]
async fn every_identity_key_expires_in_redis() {
    let redis = crate::support::redis::RedisServer::start();
    let store =
        jitid::store::RedisStore::connect(jitid::store::RedisStoreConfig::new(&redis.url()))
            .await
            .unwrap();
    let store: &dyn IdentityStore = &store;
    let id = SpiffeId::new("spiffe://example.org/hosts/expiring").unwrap();
    let issued = now();
    store
        .check_identity(&presented(&serial(), &id, issued), KEEP)
        .await
        .unwrap();
    store
        .revoke_identity_serial(&serial(), &revocation(issued, "unseen"), KEEP)
        .await
        .unwrap();
    store
        .revoke_identity_id(&id, &revocation(issued, ""), KEEP)
        .await
        .unwrap();
    store
        .put_join_token(&JoinToken {
            hash: "ab".repeat(32),
            spiffe_id: id.clone(),
            created_by: "spiffe://example.org/ops/admin".to_owned(),
            created_at: issued,
            expires_at: issued + Duration::from_secs(600),
        })
        .await
        .unwrap();
    let keys = redis.command(&[
        "EVAL",
        "return table.concat(redis.call('KEYS', '*'), ' ')",
        "0",
    ]);
    let keys: Vec<&str> = keys
        .split(' ')
        .filter(|key| key.contains("{ids}") || key.contains(":jt:"))
        .collect();
    assert_eq!(
        keys.len(),
        5,
        "two records, the ID's revocation, the index, a token: {keys:?}"
    );
    let longest = (KEEP + Duration::from_secs(600)).as_millis() as i64;
    for key in keys {
        let ttl: i64 = redis.command(&["PTTL", key]).parse().unwrap();
        assert!(ttl > 0 && ttl <= longest, "{key} expires: {ttl}");
    }
}

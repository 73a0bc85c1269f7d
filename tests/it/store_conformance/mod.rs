//! One conformance suite for every `GrantStore`: the in-memory store, a
//! real redis-server, and a real three-master Redis Cluster. Then the
//! Redis-only behaviour: key expiry, outages and a dataset lost on restart.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use jitid::grant::{
    Action, Ancestor, ApprovalRecord, Credential, CredentialId, Delegation, Epoch, Grant, GrantId,
    GrantState, Shard, TaskId,
};
use jitid::spiffe_id::SpiffeId;
use jitid::store::{
    AckOutcome, AddOutcome, CredentialRevocation, EndTarget, Ending, GrantStore, Liveness,
    LivenessQuery, MemoryStore, RedisStore, RedisStoreConfig, RelyingParty, Review, ReviewAck,
    RevocationEvent, StoreError,
};

use crate::support::redis::{RedisCluster, RedisServer};

const ALICE: &str = "spiffe://example.org/ci/alice";
const BOB: &str = "spiffe://example.org/ci/bob";

fn redis_config(urls: Vec<String>, cluster: bool) -> RedisStoreConfig {
    RedisStoreConfig {
        urls,
        cluster,
        ..RedisStoreConfig::new("")
    }
}

/// A grant and its first credential, as the issuer would make them.
async fn issue(
    store: &dyn GrantStore,
    subject: &str,
    task: &str,
    ttl: Duration,
    parent: Option<GrantId>,
) -> (Grant, Credential) {
    let subject = SpiffeId::new(subject).unwrap();
    // Stores keep milliseconds.
    let now = SystemTime::UNIX_EPOCH + Duration::from_millis(millis_of(SystemTime::now()) as u64);
    let grant = Grant {
        id: GrantId::generate(Shard::of(&subject)),
        subject,
        entitlement: "ci-publish".to_owned(),
        actions: vec![
            Action::new("read:source").unwrap(),
            Action::new("publish:artifacts").unwrap(),
        ],
        task_id: TaskId::new(task).unwrap(),
        parent,
        justification: "release 1.2".to_owned(),
        ticket: "CHG-42".to_owned(),
        created_at: now,
        expires_at: now + ttl,
        state: GrantState::Active,
        end_reason: None,
        epoch: store.epoch().await.unwrap(),
        break_glass: false,
        per_task: false,
        ttl,
        approvals: Vec::new(),
        decision: r#"{"outcome":"allow ci-publish"}"#.to_owned(),
        delegation: None,
    };
    let credential = Credential {
        id: CredentialId::new_jwt(grant.id),
        grant_id: grant.id,
        expires_at: grant.expires_at,
        revoked: false,
    };
    store.record_issuance(&grant, &credential).await.unwrap();
    (grant, credential)
}

async fn liveness(store: &dyn GrantStore, grant: &Grant, credential: &Credential) -> Liveness {
    store
        .liveness(LivenessQuery {
            credential: &credential.id,
            epoch: &grant.epoch,
            task: &grant.task_id,
        })
        .await
        .unwrap()
}

fn ending(state: GrantState, reason: &str) -> Ending {
    Ending {
        state,
        reason: reason.to_owned(),
        at: SystemTime::now(),
    }
}

fn millis_of(time: SystemTime) -> u128 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Every behaviour of a grant store.
async fn conformance(store: &dyn GrantStore) {
    let minute = Duration::from_secs(60);

    // Record, read back, list.
    let epoch = store.epoch().await.unwrap();
    assert_eq!(store.epoch().await.unwrap(), epoch, "the epoch is stable");
    let (grant, credential) = issue(store, ALICE, "build-1", minute, None).await;
    let stored = store.grant(grant.id).await.unwrap().expect("recorded");
    assert_eq!(stored.id, grant.id);
    assert_eq!(stored.subject, grant.subject);
    assert_eq!(stored.actions, grant.actions);
    assert_eq!(stored.task_id, grant.task_id);
    assert_eq!(stored.justification, grant.justification);
    assert_eq!(stored.ticket, grant.ticket);
    assert_eq!(stored.epoch, epoch);
    assert_eq!(stored.state, GrantState::Active);
    assert_eq!(millis_of(stored.expires_at), millis_of(grant.expires_at));
    assert_eq!(
        store.credentials(grant.id).await.unwrap(),
        vec![credential.clone()]
    );
    let alice = SpiffeId::new(ALICE).unwrap();
    let listed: Vec<GrantId> = store
        .grants_of(&alice)
        .await
        .unwrap()
        .iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(listed, vec![grant.id]);
    assert_eq!(
        liveness(store, &grant, &credential).await,
        Liveness::Live(stored.clone())
    );

    // A duplicate id or a stale epoch writes nothing.
    let error = store
        .record_issuance(&grant, &credential)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Conflict(id) if id == grant.id),
        "{error}"
    );
    let stale = Grant {
        id: GrantId::generate(Shard::of(&alice)),
        epoch: Epoch::from_string("stale".to_owned()),
        ..grant.clone()
    };
    let stale_credential = Credential {
        id: CredentialId::new_jwt(stale.id),
        grant_id: stale.id,
        ..credential.clone()
    };
    let error = store
        .record_issuance(&stale, &stale_credential)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::EpochChanged(current) if *current == epoch),
        "{error}"
    );
    assert_eq!(store.grant(stale.id).await.unwrap(), None);
    assert_eq!(store.grants_of(&alice).await.unwrap().len(), 1);

    // Unknown credentials and foreign epochs are never live.
    let (unknown_id, _) = CredentialId::new_x509(GrantId::generate(Shard::of(&alice)));
    let unknown = store
        .liveness(LivenessQuery {
            credential: &unknown_id,
            epoch: &epoch,
            task: &grant.task_id,
        })
        .await
        .unwrap();
    assert_eq!(unknown, Liveness::NotFound);
    let other_epoch = Epoch::from_string("0000000000000000".to_owned());
    let reset = store
        .liveness(LivenessQuery {
            credential: &credential.id,
            epoch: &other_epoch,
            task: &grant.task_id,
        })
        .await
        .unwrap();
    assert_eq!(reset, Liveness::EpochReset);

    // Revoking one credential leaves the grant active.
    assert_eq!(
        store
            .revoke_credential(&credential.id, &ending(GrantState::Revoked, "leaked"))
            .await
            .unwrap(),
        CredentialRevocation::Revoked
    );
    assert_eq!(
        store
            .revoke_credential(&credential.id, &ending(GrantState::Revoked, "again"))
            .await
            .unwrap(),
        CredentialRevocation::AlreadyRevoked
    );
    assert_eq!(
        store
            .revoke_credential(&unknown_id, &ending(GrantState::Revoked, "none"))
            .await
            .unwrap(),
        CredentialRevocation::NotFound
    );
    assert!(matches!(
        liveness(store, &grant, &credential).await,
        Liveness::CredentialRevoked(_)
    ));
    assert_eq!(
        store.grant(grant.id).await.unwrap().unwrap().state,
        GrantState::Active
    );
    assert!(store.credentials(grant.id).await.unwrap()[0].revoked);

    // X.509 credentials too, found by their serial alone.
    let bob = SpiffeId::new(BOB).unwrap();
    let x509_only = Grant {
        id: GrantId::generate(Shard::of(&bob)),
        subject: bob.clone(),
        ..grant.clone()
    };
    let (serial, _) = CredentialId::new_x509(x509_only.id);
    let x509_credential = Credential {
        id: serial.clone(),
        grant_id: x509_only.id,
        expires_at: x509_only.expires_at,
        revoked: false,
    };
    store
        .record_issuance(&x509_only, &x509_credential)
        .await
        .unwrap();
    assert_eq!(
        store.credentials(x509_only.id).await.unwrap(),
        vec![x509_credential.clone()]
    );
    assert!(matches!(
        liveness(store, &x509_only, &x509_credential).await,
        Liveness::Live(_)
    ));
    let found = CredentialId::parse(serial.value()).unwrap();
    assert_eq!(
        store
            .revoke_credential(&found, &ending(GrantState::Revoked, "x"))
            .await
            .unwrap(),
        CredentialRevocation::Revoked
    );
    assert!(matches!(
        liveness(store, &x509_only, &x509_credential).await,
        Liveness::CredentialRevoked(_)
    ));

    // Ending a grant is final and idempotent; it ends its delegations.
    let (parent, parent_credential) = issue(store, ALICE, "build-2", minute, None).await;
    let (child, child_credential) =
        issue(store, BOB, "build-2-step", minute, Some(parent.id)).await;
    assert!(matches!(
        liveness(store, &child, &child_credential).await,
        Liveness::Live(_)
    ));
    let ended = store
        .end(
            EndTarget::Grant(parent.id),
            &ending(GrantState::Revoked, "admin: compromised"),
        )
        .await
        .unwrap();
    assert_eq!(ended, vec![parent.id]);
    let again = store
        .end(
            EndTarget::Grant(parent.id),
            &ending(GrantState::Completed, "late"),
        )
        .await
        .unwrap();
    assert!(again.is_empty());
    let after = store.grant(parent.id).await.unwrap().unwrap();
    assert_eq!(after.state, GrantState::Revoked);
    assert_eq!(after.end_reason.as_deref(), Some("admin: compromised"));
    match liveness(store, &parent, &parent_credential).await {
        Liveness::GrantEnded(ended) => assert_eq!(ended.id, parent.id),
        other => panic!("parent: {other:?}"),
    }
    match liveness(store, &child, &child_credential).await {
        Liveness::GrantEnded(ended) => {
            assert_eq!(ended.id, parent.id, "the child ends with its parent")
        }
        other => panic!("child: {other:?}"),
    }

    // Completing a task ends only that subject's grants for that task.
    let (task_a1, task_a1_credential) = issue(store, ALICE, "deploy-7", minute, None).await;
    let (task_a2, _) = issue(store, ALICE, "deploy-7", minute, None).await;
    let (other_task, other_credential) = issue(store, ALICE, "deploy-8", minute, None).await;
    let (bob_same_task, bob_credential) = issue(store, BOB, "deploy-7", minute, None).await;
    let task = TaskId::new("deploy-7").unwrap();
    let mut ended = store
        .end(
            EndTarget::Task {
                subject: &alice,
                task: &task,
            },
            &ending(GrantState::Completed, "done"),
        )
        .await
        .unwrap();
    let mut expected = vec![task_a1.id, task_a2.id];
    ended.sort();
    expected.sort();
    assert_eq!(ended, expected);
    assert_eq!(
        store.grant(task_a1.id).await.unwrap().unwrap().state,
        GrantState::Completed
    );
    assert!(matches!(
        liveness(store, &task_a1, &task_a1_credential).await,
        Liveness::GrantEnded(_)
    ));
    assert!(matches!(
        liveness(store, &other_task, &other_credential).await,
        Liveness::Live(_)
    ));
    assert!(matches!(
        liveness(store, &bob_same_task, &bob_credential).await,
        Liveness::Live(_)
    ));

    // Revoking a subject ends everything it holds now, nobody else's.
    let ended = store
        .end(
            EndTarget::Subject(&alice),
            &ending(GrantState::Revoked, "admin: offboarded"),
        )
        .await
        .unwrap();
    assert_eq!(ended, {
        let mut ids = vec![grant.id, other_task.id];
        ids.sort();
        ids
    });
    assert!(matches!(
        liveness(store, &other_task, &other_credential).await,
        Liveness::GrantEnded(_)
    ));
    assert!(matches!(
        liveness(store, &bob_same_task, &bob_credential).await,
        Liveness::Live(_)
    ));
    // Grants issued afterwards are live again.
    let (fresh, fresh_credential) = issue(store, ALICE, "build-3", minute, None).await;
    assert!(matches!(
        liveness(store, &fresh, &fresh_credential).await,
        Liveness::Live(_)
    ));

    // Revoking a task reaches every holder.
    store
        .revoke_task(
            &task,
            &ending(GrantState::Revoked, "admin: incident 12"),
            minute,
        )
        .await
        .unwrap();
    assert_eq!(
        liveness(store, &bob_same_task, &bob_credential).await,
        Liveness::TaskRevoked {
            reason: "admin: incident 12".to_owned()
        }
    );
    // It ends what was granted before it, not what comes after.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (after_task, after_task_credential) = issue(store, BOB, "deploy-7", minute, None).await;
    assert!(matches!(
        liveness(store, &after_task, &after_task_credential).await,
        Liveness::Live(_)
    ));

    // The revocation stream: ordered, resumable, and woken by appends.
    let mut feed = store.revocation_feed().await.unwrap();
    let event = |reason: &str| RevocationEvent {
        epoch: epoch.clone(),
        at: SystemTime::now(),
        grants: vec![grant.id],
        credential: Some(credential.id.clone()),
        task: Some(task.clone()),
        reason: reason.to_owned(),
    };
    let first = store.publish(&event("first"), minute).await.unwrap();
    let second = store.publish(&event("second"), minute).await.unwrap();
    let all = feed.read("0", Duration::from_millis(100)).await.unwrap();
    let reasons: Vec<&str> = all.iter().map(|(_, e)| e.reason.as_str()).collect();
    assert_eq!(reasons, ["first", "second"]);
    assert_eq!(all[0].0, first);
    assert_eq!(all[1].1.grants, vec![grant.id]);
    assert_eq!(all[1].1.credential, Some(credential.id.clone()));
    assert_eq!(all[1].1.task, Some(task.clone()));
    let after_first = feed.read(&first, Duration::from_millis(100)).await.unwrap();
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].0, second);
    let started = Instant::now();
    assert!(
        feed.read(&second, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "a read waits for news"
    );
    let waiting = tokio::spawn(async move { feed.read(&second, Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    store.publish(&event("third"), minute).await.unwrap();
    let woken = waiting.await.unwrap().unwrap();
    assert_eq!(woken[0].1.reason, "third");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "woken by the append, not the timeout"
    );

    // Nothing outlives its expiry.
    let (short, short_credential) =
        issue(store, ALICE, "short", Duration::from_millis(1500), None).await;
    assert!(matches!(
        liveness(store, &short, &short_credential).await,
        Liveness::Live(_)
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.grant(short.id).await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "grant still there after its expiry"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        liveness(store, &short, &short_credential).await,
        Liveness::NotFound
    );
    assert!(store.credentials(short.id).await.unwrap().is_empty());
    assert!(
        !store
            .grants_of(&alice)
            .await
            .unwrap()
            .iter()
            .any(|g| g.id == short.id)
    );
}

/// Pending grants, approvals, credentials added under a grant, reviews.
async fn approvals_conformance(store: &dyn GrantStore) {
    let (template, _) = issue(store, BOB, "template", Duration::from_secs(60), None).await;
    let now = template.created_at;
    let pending = Grant {
        id: GrantId::generate(Shard::of(&template.subject)),
        task_id: TaskId::new("migration").unwrap(),
        state: GrantState::Pending,
        expires_at: now + Duration::from_millis(1500),
        ttl: Duration::from_secs(60),
        // JSON (with escapes) survives the record format.
        decision: r#"{"outcome":"needs 2 approval(s)","note":"a\u001fb \"q\""}"#.to_owned(),
        justification: "schema change".to_owned(),
        ..template.clone()
    };
    store.record_grant(&pending).await.unwrap();
    assert!(matches!(
        store.record_grant(&pending).await,
        Err(StoreError::Conflict(_))
    ));
    let stored = store.grant(pending.id).await.unwrap().unwrap();
    assert_eq!(stored.state, GrantState::Pending);
    assert_eq!(stored.ttl, Duration::from_secs(60));
    assert_eq!(stored.decision, pending.decision);
    assert!(store.credentials(pending.id).await.unwrap().is_empty());

    let queued: Vec<GrantId> = store
        .pending_grants()
        .await
        .unwrap()
        .iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(queued, [pending.id]);

    // Nothing is minted under a pending grant.
    let credential = Credential {
        id: CredentialId::new_jwt(pending.id),
        grant_id: pending.id,
        expires_at: now + Duration::from_secs(30),
        revoked: false,
    };
    assert_eq!(
        store.add_credential(&stored, &credential).await.unwrap(),
        AddOutcome::NotActive
    );

    // One approval: still pending. A stale read cannot overwrite it.
    let bob = SpiffeId::new(BOB).unwrap();
    let approver = |n: u64| ApprovalRecord {
        approver: SpiffeId::new(&format!("spiffe://example.org/sre/{n}")).unwrap(),
        at: now + Duration::from_millis(n),
        comment: if n == 1 {
            String::new()
        } else {
            format!("ok, {n} checks")
        },
    };
    let one = Grant {
        approvals: vec![approver(1)],
        ..stored.clone()
    };
    assert!(store.update_pending(&stored, &one).await.unwrap());
    assert!(!store.update_pending(&stored, &one).await.unwrap(), "stale");
    assert_eq!(store.grant(pending.id).await.unwrap().unwrap(), one);

    // The last approval activates it with a later expiry.
    let active = Grant {
        approvals: vec![approver(1), approver(2)],
        state: GrantState::Active,
        expires_at: now + Duration::from_secs(60),
        ..one.clone()
    };
    assert!(store.update_pending(&one, &active).await.unwrap());
    assert!(
        store.pending_grants().await.unwrap().is_empty(),
        "no longer pending"
    );
    assert!(
        !store.update_pending(&active, &active).await.unwrap(),
        "only pending grants change this way"
    );
    assert_eq!(
        store.add_credential(&active, &credential).await.unwrap(),
        AddOutcome::Added
    );
    assert_eq!(
        store.credentials(pending.id).await.unwrap(),
        std::slice::from_ref(&credential)
    );
    assert!(matches!(
        liveness(store, &active, &credential).await,
        Liveness::Live(_)
    ));
    // At most MAX_CREDENTIALS_PER_GRANT credentials under one grant.
    for _ in 1..jitid::store::MAX_CREDENTIALS_PER_GRANT {
        let more = Credential {
            id: CredentialId::new_jwt(active.id),
            ..credential.clone()
        };
        assert_eq!(
            store.add_credential(&active, &more).await.unwrap(),
            AddOutcome::Added
        );
    }
    assert_eq!(
        store.add_credential(&active, &credential).await.unwrap(),
        AddOutcome::Full
    );
    // It outlives the pending expiry.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let kept = store.grant(pending.id).await.unwrap().unwrap();
    assert_eq!(kept.state, GrantState::Active);
    assert_eq!(kept.approvals, active.approvals);
    assert!(
        store
            .grants_of(&bob)
            .await
            .unwrap()
            .iter()
            .any(|g| g.id == pending.id)
    );

    // A stale epoch mints nothing; an unknown grant neither.
    let stale = Grant {
        epoch: Epoch::from_string("gone".to_owned()),
        ..active.clone()
    };
    assert!(matches!(
        store.add_credential(&stale, &credential).await,
        Err(StoreError::EpochChanged(_))
    ));
    let unknown = Grant {
        id: GrantId::generate(Shard::of(&bob)),
        ..active.clone()
    };
    assert_eq!(
        store.add_credential(&unknown, &credential).await.unwrap(),
        AddOutcome::NotFound
    );

    // A pending grant can be withdrawn (ended) like an active one.
    let withdrawn = Grant {
        id: GrantId::generate(Shard::of(&bob)),
        expires_at: active.expires_at,
        ..pending.clone()
    };
    store.record_grant(&withdrawn).await.unwrap();
    let ended = store
        .end(
            EndTarget::Grant(withdrawn.id),
            &ending(GrantState::Revoked, "withdrawn"),
        )
        .await
        .unwrap();
    assert_eq!(ended, [withdrawn.id]);
    let after = store.grant(withdrawn.id).await.unwrap().unwrap();
    assert_eq!(after.state, GrantState::Revoked);
    assert!(!store.update_pending(&withdrawn, &active).await.unwrap());

    // Reviews: opened, listed, acknowledged once.
    let review = Review {
        grant_id: active.id,
        subject: bob.clone(),
        entitlement: active.entitlement.clone(),
        actions: active.actions.clone(),
        task_id: active.task_id.clone(),
        justification: "INC-1: primary down".to_owned(),
        ticket: String::new(),
        opened_at: now,
        expires_at: active.expires_at,
        ack: None,
    };
    store.open_review(&review).await.unwrap();
    let listed = store.reviews().await.unwrap();
    assert!(listed.contains(&review), "{listed:?}");
    let ack = ReviewAck {
        by: SpiffeId::new("spiffe://example.org/security/carol").unwrap(),
        at: now + Duration::from_secs(1),
        comment: "needed".to_owned(),
    };
    let acked = Review {
        ack: Some(ack.clone()),
        ..review.clone()
    };
    assert_eq!(
        store.ack_review(active.id, &ack).await.unwrap(),
        AckOutcome::Acked(acked.clone())
    );
    assert_eq!(
        store.ack_review(active.id, &ack).await.unwrap(),
        AckOutcome::AlreadyAcked(acked.clone())
    );
    assert!(store.reviews().await.unwrap().contains(&acked));
    assert_eq!(
        store.ack_review(withdrawn.id, &ack).await.unwrap(),
        AckOutcome::NotFound
    );
    store.drop_review(active.id).await.unwrap();
    assert!(
        !store
            .reviews()
            .await
            .unwrap()
            .iter()
            .any(|r| r.grant_id == active.id)
    );
}

/// Delegation records and relying parties' acknowledgements.
async fn delegation_and_parties_conformance(store: &dyn GrantStore) {
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

#[tokio::test]
async fn memory_store_conforms() {
    let store = MemoryStore::new(Arc::new(jitid::clock::SystemClock));
    conformance(&store).await;
    approvals_conformance(&store).await;
    delegation_and_parties_conformance(&store).await;
}

#[tokio::test]
async fn redis_store_conforms() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(redis_config(vec![redis.url()], false))
        .await
        .unwrap();
    conformance(&store).await;
    approvals_conformance(&store).await;
    delegation_and_parties_conformance(&store).await;
}

#[tokio::test]
async fn redis_cluster_store_conforms() {
    let cluster = RedisCluster::start();
    let store = RedisStore::connect(redis_config(cluster.urls(), true))
        .await
        .unwrap();
    conformance(&store).await;
    approvals_conformance(&store).await;
    delegation_and_parties_conformance(&store).await;
    // Grants of many subjects spread over the cluster's masters.
    for n in 0..20 {
        issue(
            &store,
            &format!("spiffe://example.org/svc/s{n}"),
            "t",
            Duration::from_secs(60),
            None,
        )
        .await;
    }
    let with_keys = cluster
        .ports()
        .iter()
        .filter(|port| crate::support::redis::tcp_command(**port, &["DBSIZE"]) != "0")
        .count();
    assert_eq!(with_keys, 3, "every master holds grants");
}

/// A grant record written before approvals existed (11 fields) still
/// reads, as an active grant whose whole life is its TTL.
#[tokio::test]
async fn redis_reads_records_written_before_approvals() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(redis_config(vec![redis.url()], false))
        .await
        .unwrap();
    let (grant, credential) = issue(&store, ALICE, "old", Duration::from_secs(60), None).await;
    let key = format!("jitid:{{{}}}:g:{}", grant.id.shard(), grant.id.simple());
    let record = redis.command(&["GET", &key]);
    // Drop the three fields added since: flags, ttl, decision.
    let (core, sections) = record.split_once('\u{1e}').unwrap();
    let old_core: Vec<&str> = core.split('\u{1f}').take(11).collect();
    let old = format!("{}\u{1e}{sections}", old_core.join("\u{1f}"));
    redis.command(&["SET", &key, &old, "KEEPTTL"]);
    let read = store.grant(grant.id).await.unwrap().unwrap();
    assert_eq!(read.state, GrantState::Active);
    assert_eq!(read.ttl, Duration::from_secs(60));
    assert!(read.decision.is_empty() && !read.break_glass && !read.per_task);
    assert!(matches!(
        liveness(&store, &grant, &credential).await,
        Liveness::Live(_)
    ));
    assert_eq!(store.grants_of(&grant.subject).await.unwrap().len(), 1);
}

#[tokio::test]
async fn every_redis_key_expires_except_the_epoch() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(redis_config(vec![redis.url()], false))
        .await
        .unwrap();
    let (grant, _) = issue(&store, ALICE, "build-1", Duration::from_secs(60), None).await;
    store
        .revoke_task(
            &grant.task_id,
            &ending(GrantState::Revoked, "x"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let keys = redis.command(&[
        "EVAL",
        "return table.concat(redis.call('KEYS', '*'), ' ')",
        "0",
    ]);
    let keys: Vec<&str> = keys.split(' ').collect();
    assert_eq!(keys.len(), 5, "{keys:?}");
    // (The revocation stream is trimmed by id instead; see publish.)
    for key in keys {
        let ttl: i64 = redis.command(&["PTTL", key]).parse().unwrap();
        if key == "jitid:epoch" || key.ends_with(":ep") {
            assert_eq!(ttl, -1, "{key} is kept");
        } else {
            assert!(ttl > 0 && ttl <= 60_000, "{key} expires: {ttl}");
        }
    }
}

#[tokio::test]
async fn redis_outage_fails_closed_and_recovers_with_a_new_epoch() {
    let mut redis = RedisServer::start();
    let store = RedisStore::connect(redis_config(vec![redis.url()], false))
        .await
        .unwrap();
    let (grant, credential) = issue(&store, ALICE, "build-1", Duration::from_secs(60), None).await;

    redis.stop();
    let error = store
        .liveness(LivenessQuery {
            credential: &credential.id,
            epoch: &grant.epoch,
            task: &grant.task_id,
        })
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
    let subject = SpiffeId::new(ALICE).unwrap();
    let attempt = Grant {
        id: GrantId::generate(Shard::of(&subject)),
        ..grant.clone()
    };
    let attempt_credential = Credential {
        id: CredentialId::new_jwt(attempt.id),
        grant_id: attempt.id,
        ..credential.clone()
    };
    let error = store
        .record_issuance(&attempt, &attempt_credential)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");

    // Back, but empty: what was minted before is not live again.
    redis.restart_empty();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match store
            .liveness(LivenessQuery {
                credential: &credential.id,
                epoch: &grant.epoch,
                task: &grant.task_id,
            })
            .await
        {
            Ok(liveness) => break liveness,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "store did not reconnect: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(after, Liveness::EpochReset);
    // A write under the old epoch is refused and names the new one.
    let error = store
        .record_issuance(&attempt, &attempt_credential)
        .await
        .unwrap_err();
    let StoreError::EpochChanged(new_epoch) = error else {
        panic!("expected EpochChanged, got {error}");
    };
    assert_ne!(new_epoch, grant.epoch);
    assert_eq!(store.epoch().await.unwrap(), new_epoch);
    let (fresh, fresh_credential) =
        issue(&store, ALICE, "build-2", Duration::from_secs(60), None).await;
    assert_eq!(fresh.epoch, new_epoch);
    assert!(matches!(
        liveness(&store, &fresh, &fresh_credential).await,
        Liveness::Live(_)
    ));
}

/// `rediss://` with a private CA and client certificates: the whole suite
/// over mutual TLS.
#[tokio::test]
async fn redis_over_mutual_tls_conforms() {
    use jitid::ca::{self, Authority, InitOptions, LeafRequest};
    use jitid::spiffe_id::TrustDomain;

    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let trust_domain = TrustDomain::new("example.org").unwrap();
    let paths = ca::init(
        &dir.path().join("ca"),
        &trust_domain,
        now,
        &InitOptions {
            root_ttl: Duration::from_secs(7200),
            signing_ttl: Duration::from_secs(3600),
        },
    )
    .unwrap();
    let authority = Authority::load(&paths, &trust_domain, now).unwrap();
    let write_identity = |name: &str, path: &str, ips: &[std::net::IpAddr]| {
        let id = SpiffeId::new(&format!("spiffe://example.org{path}")).unwrap();
        let issued = authority
            .issue_identity(
                LeafRequest {
                    spiffe_id: &id,
                    expires_at: now + Duration::from_secs(3600),
                    dns_names: &[],
                    ip_addresses: ips,
                },
                now,
            )
            .unwrap();
        let cert = dir.path().join(format!("{name}.pem"));
        let key = dir.path().join(format!("{name}.key"));
        jitid::keyfile::write_new(&cert, issued.chain_pem().as_bytes(), 0o644).unwrap();
        jitid::keyfile::write_new(&key, issued.key_pem().as_bytes(), 0o600).unwrap();
        (cert, key)
    };
    let (server_cert, server_key) =
        write_identity("redis", "/redis", &["127.0.0.1".parse().unwrap()]);
    let (client_cert, client_key) = write_identity("jitid", "/jitid", &[]);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = std::process::Command::new(
        std::env::var_os("JITID_TEST_REDIS_SERVER").unwrap_or_else(|| "redis-server".into()),
    )
    .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
    .arg("--tls-cert-file").arg(&server_cert)
    .arg("--tls-key-file").arg(&server_key)
    .arg("--tls-ca-cert-file").arg(&paths.root_cert)
    .args(["--tls-auth-clients", "yes", "--save", "", "--appendonly", "no"])
    .arg("--dir").arg(dir.path())
    .stdout(std::process::Stdio::null())
    .spawn()
    .expect("redis-server not found: install it with `apt-get install redis-server` (or run scripts/test)");

    let config = RedisStoreConfig {
        ca_file: Some(paths.root_cert.clone()),
        client_identity: Some((client_cert, client_key)),
        ..RedisStoreConfig::new(&format!("rediss://127.0.0.1:{port}"))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let store = loop {
        match RedisStore::connect(config.clone()).await {
            Ok(store) => break store,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "TLS redis never answered: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    conformance(&store).await;

    // Without a client certificate the server refuses us.
    let anonymous = RedisStoreConfig {
        client_identity: None,
        ..config
    };
    assert!(RedisStore::connect(anonymous).await.is_err());
    let _ = redis.kill();
    let _ = redis.wait();
}

//! The grant-store suite proper: recording and reading grants, epochs,
//! liveness, revoking credentials, ending grants, tasks and subjects, the
//! revocation stream, and expiry.

use std::time::{Duration, Instant, SystemTime};

use jitid::grant::{Credential, CredentialId, Epoch, Grant, GrantId, GrantState, Shard, TaskId};
use jitid::spiffe_id::SpiffeId;
use jitid::store::{
    CredentialRevocation, EndTarget, GrantStore, Liveness, LivenessQuery, RevocationEvent,
    StoreError,
};

use super::{ALICE, BOB, ending, issue, liveness, millis_of};

/// Every behaviour of a grant store.
pub(super) async fn conformance(store: &dyn GrantStore) {
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

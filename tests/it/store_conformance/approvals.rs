//! The approvals suite: pending grants and their index, approvals by
//! compare-and-set, credentials added under a grant, withdrawals and
//! break-glass reviews.

use std::time::Duration;

use jitid::grant::{
    ApprovalRecord, Credential, CredentialId, Epoch, Grant, GrantId, GrantState, Shard, TaskId,
};
use jitid::spiffe_id::SpiffeId;
use jitid::store::{
    AckOutcome, AddOutcome, EndTarget, GrantStore, Liveness, Review, ReviewAck, StoreError,
};

use super::{BOB, ending, issue, liveness};

/// Pending grants, approvals, credentials added under a grant, reviews.
pub(super) async fn approvals_conformance(store: &dyn GrantStore) {
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

//! The undo suite: what the issuer takes back when the audit trail refuses
//! a write's events. A discarded grant is gone as if never written, from
//! every index; a decision on a pending grant can be put back; nothing
//! else about a decided grant can be rewritten that way.

use std::time::Duration;

use jitid::grant::{
    ApprovalRecord, Credential, CredentialId, Grant, GrantId, GrantState, Shard, TaskId,
};
use jitid::spiffe_id::SpiffeId;
use jitid::store::{AddOutcome, CredentialRevocation, GrantStore, Liveness};

use super::{ALICE, ending, issue, liveness};

async fn pending_ids(store: &dyn GrantStore) -> Vec<GrantId> {
    store
        .pending_grants()
        .await
        .unwrap()
        .iter()
        .map(|g| g.id)
        .collect()
}

async fn listed_for(store: &dyn GrantStore, subject: &SpiffeId) -> Vec<GrantId> {
    store
        .grants_of(subject)
        .await
        .unwrap()
        .iter()
        .map(|g| g.id)
        .collect()
}

/// Discarding grants and putting decisions back.
pub(super) async fn undo_conformance(store: &dyn GrantStore) {
    let minute = Duration::from_secs(60);
    let alice = SpiffeId::new(ALICE).unwrap();

    // An issuance discarded: the grant, its credential and its place in the
    // subject's index are gone; a grant beside it is untouched.
    let (kept, kept_credential) = issue(store, ALICE, "build-1", minute, None).await;
    let (grant, credential) = issue(store, ALICE, "build-1", minute, None).await;
    assert!(matches!(
        liveness(store, &grant, &credential).await,
        Liveness::Live(_)
    ));
    store.discard_grant(grant.id).await.unwrap();
    assert_eq!(store.grant(grant.id).await.unwrap(), None);
    assert!(store.credentials(grant.id).await.unwrap().is_empty());
    assert_eq!(listed_for(store, &alice).await, [kept.id]);
    assert_eq!(
        liveness(store, &grant, &credential).await,
        Liveness::NotFound,
        "as if never minted"
    );
    assert_eq!(
        store
            .revoke_credential(&credential.id, &ending(GrantState::Revoked, "late"))
            .await
            .unwrap(),
        CredentialRevocation::NotFound
    );
    assert_eq!(store.grant(kept.id).await.unwrap(), Some(kept.clone()));
    assert_eq!(
        store.credentials(kept.id).await.unwrap(),
        std::slice::from_ref(&kept_credential)
    );
    assert!(matches!(
        liveness(store, &kept, &kept_credential).await,
        Liveness::Live(_)
    ));
    // Nothing of it is left to conflict with.
    store.record_issuance(&grant, &credential).await.unwrap();
    assert!(matches!(
        liveness(store, &grant, &credential).await,
        Liveness::Live(_)
    ));
    store.discard_grant(grant.id).await.unwrap();

    // A pending request discarded: approvers no longer see it.
    let requested = Grant {
        id: GrantId::generate(Shard::of(&alice)),
        task_id: TaskId::new("migration").unwrap(),
        state: GrantState::Pending,
        ..kept.clone()
    };
    store.record_grant(&requested).await.unwrap();
    assert!(pending_ids(store).await.contains(&requested.id));
    store.discard_grant(requested.id).await.unwrap();
    assert!(!pending_ids(store).await.contains(&requested.id));
    assert_eq!(store.grant(requested.id).await.unwrap(), None);
    assert!(!listed_for(store, &alice).await.contains(&requested.id));

    // Discarding what is not there is no error, nor is discarding twice.
    store
        .discard_grant(GrantId::generate(Shard::of(&alice)))
        .await
        .unwrap();
    store.discard_grant(requested.id).await.unwrap();
    assert_eq!(listed_for(store, &alice).await, [kept.id]);

    // An approval undone: the grant is exactly the pending one again, back
    // in the approvers' queue, and nothing is minted under it.
    let pending = Grant {
        id: GrantId::generate(Shard::of(&alice)),
        task_id: TaskId::new("migration").unwrap(),
        state: GrantState::Pending,
        expires_at: kept.created_at + Duration::from_secs(30),
        ..kept.clone()
    };
    store.record_grant(&pending).await.unwrap();
    let approved = Grant {
        approvals: vec![ApprovalRecord {
            approver: SpiffeId::new("spiffe://example.org/sre/1").unwrap(),
            at: pending.created_at + Duration::from_millis(1),
            comment: "ok".to_owned(),
        }],
        state: GrantState::Active,
        expires_at: pending.created_at + 2 * minute,
        ..pending.clone()
    };
    assert!(store.update_pending(&pending, &approved).await.unwrap());
    assert!(!pending_ids(store).await.contains(&pending.id));
    assert!(
        store.update_pending(&approved, &pending).await.unwrap(),
        "the approval is put back"
    );
    assert_eq!(
        store.grant(pending.id).await.unwrap(),
        Some(pending.clone())
    );
    assert!(pending_ids(store).await.contains(&pending.id));
    let credential = Credential {
        id: CredentialId::new_jwt(pending.id),
        grant_id: pending.id,
        expires_at: pending.expires_at,
        revoked: false,
    };
    assert_eq!(
        store.add_credential(&pending, &credential).await.unwrap(),
        AddOutcome::NotActive
    );
    assert!(
        !store.update_pending(&approved, &pending).await.unwrap(),
        "undone once: the grant is no longer the approved one"
    );

    // A denial undone the same way; the grant can then be decided again.
    let denied = Grant {
        state: GrantState::Denied,
        end_reason: Some("denied by spiffe://example.org/sre/2".to_owned()),
        ..pending.clone()
    };
    assert!(store.update_pending(&pending, &denied).await.unwrap());
    assert!(!pending_ids(store).await.contains(&pending.id));
    assert!(store.update_pending(&denied, &pending).await.unwrap());
    assert_eq!(
        store.grant(pending.id).await.unwrap(),
        Some(pending.clone())
    );
    assert!(pending_ids(store).await.contains(&pending.id));
    assert!(store.update_pending(&pending, &approved).await.unwrap());

    // A decided grant is not rewritten into another decided grant.
    let rewritten = Grant {
        approvals: Vec::new(),
        expires_at: approved.expires_at + minute,
        ..approved.clone()
    };
    assert!(!store.update_pending(&approved, &rewritten).await.unwrap());
    let revoked = Grant {
        state: GrantState::Revoked,
        ..approved.clone()
    };
    assert!(!store.update_pending(&approved, &revoked).await.unwrap());
    assert_eq!(
        store.grant(approved.id).await.unwrap(),
        Some(approved.clone())
    );
    let denied_instead = Grant {
        state: GrantState::Denied,
        ..kept.clone()
    };
    assert!(!store.update_pending(&kept, &denied_instead).await.unwrap());
    assert_eq!(store.grant(kept.id).await.unwrap(), Some(kept.clone()));
}

//! Revocation of attestation identities, through two replicas on one real
//! redis-server: by serial and by SPIFFE ID, refused at the next RPC even
//! on a connection opened before, on either replica; the grants of the
//! SPIFFE ID end (a credential issued before verifies REVOKED); the list
//! shows who revoked what and why; each step is audited.

use std::sync::Arc;

use jitid::audit::EventKind;
use jitid::audit::event::Event;
use jitid::client::{IdentityTarget, SvidRequest};
use jitid::proto::v1 as pb;
use jitid::store::{RedisStore, RedisStoreConfig};

use super::{anonymous, code, events_of, identity_with_serial};
use crate::support::redis::RedisServer;
use crate::support::{ADMIN, AGENT, CI_RUNNER, TestEnv, eventually};

async fn redis_env(redis: &RedisServer) -> (TestEnv, std::net::SocketAddr) {
    let store = || async {
        Arc::new(
            RedisStore::connect(RedisStoreConfig::new(&redis.url()))
                .await
                .unwrap(),
        )
    };
    let mut env = TestEnv::start_with(store().await).await;
    let second = env.spawn_server(store().await).await;
    (env, second)
}

#[tokio::test]
async fn a_revoked_serial_is_refused_at_its_next_rpc_and_its_grants_end() {
    let redis = RedisServer::start();
    let (env, second) = redis_env(&redis).await;
    let (identity, serial) = identity_with_serial(&env, CI_RUNNER);
    let runner = env.client_with(Some(identity.clone())).await;
    let runner_elsewhere = env.client_at(second, CI_RUNNER).await;
    let (_, second_serial) = identity_with_serial(&env, CI_RUNNER);
    let runner_other = env
        .client_with(Some(identity_with_serial(&env, CI_RUNNER).0))
        .await;
    let relying_party = env.client_for(AGENT).await;
    let admin = env.client_for(ADMIN).await;

    let svid = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task("job-1"))
        .await
        .unwrap();
    let verdict = relying_party.verify_x509(&svid.chain).await.unwrap();
    assert_eq!(verdict.status(), pb::VerifyStatus::Valid);

    let outcome = admin
        .revoke_identity(IdentityTarget::Serial(serial.clone()), "laptop lost")
        .await
        .unwrap();
    assert_eq!(outcome.spiffe_id, CI_RUNNER);
    assert!(!outcome.unseen && !outcome.already_revoked);
    assert_eq!(
        outcome.grant_ids,
        std::slice::from_ref(&svid.grant.grant_id)
    );

    // The same connection, opened before: refused at its next RPC.
    let refused = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await;
    assert_eq!(code(&refused), tonic::Code::Unauthenticated);
    let message = refused.unwrap_err().to_string();
    assert!(
        message.contains(&format!(
            "attestation identity {serial} of {CI_RUNNER} was revoked: laptop lost"
        )),
        "{message}"
    );
    // On the other replica too, with a new connection.
    let elsewhere = env
        .client_at(second, CI_RUNNER)
        .await
        .renew_identity(None)
        .await;
    assert!(elsewhere.is_ok(), "another identity of the ID still works");
    let again = jitid::client::Client::connect(jitid::client::ClientConfig {
        identity: Some(identity),
        ..env.client_config(second, CI_RUNNER)
    })
    .await
    .unwrap()
    .list_grants(pb::ListGrantsRequest::default())
    .await;
    assert_eq!(code(&again), tonic::Code::Unauthenticated);
    // Its grants ended: a credential issued before is REVOKED.
    let verdict = relying_party.verify_x509(&svid.chain).await.unwrap();
    assert_eq!(
        verdict.status(),
        pb::VerifyStatus::Revoked,
        "{}",
        verdict.reason
    );
    assert!(verdict.reason.contains("laptop lost"), "{}", verdict.reason);
    // Other identities of the same SPIFFE ID still attest (one serial was
    // revoked); they hold no grant now.
    runner_elsewhere
        .fetch_jwt_svid(&SvidRequest::entitlement("ci-publish"), &["a".to_owned()])
        .await
        .unwrap();
    runner_other
        .list_grants(pb::ListGrantsRequest::default())
        .await
        .unwrap();
    // A retry says it was revoked already.
    let retry = admin
        .revoke_identity(IdentityTarget::Serial(serial.clone()), "")
        .await
        .unwrap();
    assert!(retry.already_revoked);

    // A serial never presented: revoked for whenever it shows.
    let unseen = admin
        .revoke_identity(IdentityTarget::Serial(second_serial.clone()), "stolen")
        .await
        .unwrap();
    assert!(unseen.unseen && unseen.spiffe_id.is_empty());

    // The list: who revoked what, when and why.
    let listed = admin.list_identities().await.unwrap();
    let revoked = listed
        .iter()
        .find(|record| record.serial == serial)
        .unwrap();
    assert_eq!(revoked.state(), pb::IdentityState::Revoked);
    assert_eq!(revoked.revoked_reason, "laptop lost");
    assert_eq!(revoked.revoked_by, ADMIN);
    assert_eq!(revoked.spiffe_id, CI_RUNNER);
    let tombstone = listed
        .iter()
        .find(|record| record.serial == second_serial)
        .unwrap();
    assert_eq!(tombstone.state(), pb::IdentityState::Revoked);
    assert_eq!(tombstone.issued_via, "unseen");

    // Audited: the identity revocation with the grants it ended, the
    // subject's revocation, and the refused attestation.
    let revocations = events_of(&env, EventKind::IdentityRevoked).await;
    match revocations[0].event().unwrap() {
        Event::IdentityRevoked(revoked) => {
            assert_eq!(
                revoked.target,
                jitid::audit::event::IdentityTargetKind::Serial
            );
            assert_eq!(revoked.value, serial);
            assert_eq!(revoked.spiffe_id.as_deref(), Some(CI_RUNNER));
            assert_eq!(
                revoked.grants_ended,
                std::slice::from_ref(&svid.grant.grant_id)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(revocations[0].actor, ADMIN);
    let subject = events_of(&env, EventKind::Revocation).await;
    assert_eq!(subject[0].details["target"], "subject");
    assert_eq!(subject[0].details["value"], CI_RUNNER);
    eventually("the refused attestation in the trail", || async {
        events_of(&env, EventKind::AuthenticationFailure)
            .await
            .iter()
            .any(|event| {
                event.actor == CI_RUNNER
                    && event.details["reason"]
                        .as_str()
                        .is_some_and(|reason| reason.contains("was revoked: laptop lost"))
            })
    })
    .await;
}

#[tokio::test]
async fn revoking_a_spiffe_id_refuses_every_identity_issued_before_and_no_later_one() {
    let redis = RedisServer::start();
    let (env, second) = redis_env(&redis).await;
    let admin = env.client_for(ADMIN).await;
    let used = env.client_for(CI_RUNNER).await;
    used.fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    // Minted before the revocation, presented only after it.
    let (never_seen, _) = identity_with_serial(&env, CI_RUNNER);
    let bystander = env.client_for(AGENT).await;

    let outcome = admin
        .revoke_identity(
            IdentityTarget::SpiffeId(CI_RUNNER.to_owned()),
            "decommissioned",
        )
        .await
        .unwrap();
    assert_eq!(outcome.spiffe_id, CI_RUNNER);
    assert_eq!(outcome.grant_ids.len(), 1);

    let refused = used.list_grants(pb::ListGrantsRequest::default()).await;
    assert_eq!(code(&refused), tonic::Code::Unauthenticated);
    let late = jitid::client::Client::connect(jitid::client::ClientConfig {
        identity: Some(never_seen),
        ..env.client_config(second, CI_RUNNER)
    })
    .await
    .unwrap();
    let refused = late.renew_identity(None).await;
    assert_eq!(code(&refused), tonic::Code::Unauthenticated);
    assert!(refused.unwrap_err().to_string().contains("decommissioned"));
    // Another SPIFFE ID is untouched.
    bystander
        .list_grants(pb::ListGrantsRequest::default())
        .await
        .unwrap();

    // An identity issued after the revocation attests (here from a join
    // token: the host gets back in only through an admin).
    let token = admin
        .create_join_token(CI_RUNNER, None)
        .await
        .unwrap()
        .token;
    let fresh = anonymous(&env)
        .await
        .bootstrap_identity(&token, None)
        .await
        .unwrap();
    let back = env.client_with(Some(fresh.client_identity())).await;
    back.fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();

    let states: Vec<(String, pb::IdentityState)> = admin
        .list_identities()
        .await
        .unwrap()
        .into_iter()
        .filter(|record| record.spiffe_id == CI_RUNNER)
        .map(|record| (record.issued_via.clone(), record.state()))
        .collect();
    assert_eq!(
        states,
        [
            ("offline".to_owned(), pb::IdentityState::Revoked),
            ("offline".to_owned(), pb::IdentityState::Revoked),
            ("bootstrapped".to_owned(), pb::IdentityState::Active),
        ]
    );
}

#[tokio::test]
async fn only_admins_revoke_list_and_create_join_tokens() {
    let env = TestEnv::start().await;
    let runner = env.client_for(CI_RUNNER).await;
    assert_eq!(
        code(
            &runner
                .revoke_identity(IdentityTarget::SpiffeId(AGENT.to_owned()), "")
                .await
        ),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        code(&runner.list_identities().await),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        code(&runner.create_join_token(CI_RUNNER, None).await),
        tonic::Code::PermissionDenied
    );
    // Malformed targets are named.
    let admin = env.client_for(ADMIN).await;
    for (target, field) in [
        (IdentityTarget::Serial("not hex".to_owned()), "serial"),
        (IdentityTarget::SpiffeId("nope".to_owned()), "spiffe_id"),
        (
            IdentityTarget::SpiffeId("spiffe://other.org/x".to_owned()),
            "spiffe_id",
        ),
    ] {
        let error = admin.revoke_identity(target, "").await;
        assert_eq!(code(&error), tonic::Code::InvalidArgument);
        assert!(error.unwrap_err().to_string().contains(field));
    }
    // Nothing was revoked by any of it.
    runner
        .list_grants(pb::ListGrantsRequest::default())
        .await
        .unwrap();
    assert!(events_of(&env, EventKind::IdentityRevoked).await.is_empty());
}

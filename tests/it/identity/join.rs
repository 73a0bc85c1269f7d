//! Join tokens: created by an admin, exchanged without a client
//! certificate for a first identity that gets SVIDs, good once (also across
//! replicas racing for it), refused once expired, never spent on a bad
//! request, and audited by id, never by their text.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jitid::audit::EventKind;
use jitid::audit::event::Event;
use jitid::client::SvidRequest;
use jitid::proto::v1 as pb;
use jitid::store::{RedisStore, RedisStoreConfig};

use super::{anonymous, code, events_of, trail};
use crate::support::redis::RedisServer;
use crate::support::{ADMIN, CI_RUNNER, TestEnv};

const HOST: &str = "spiffe://example.org/ci/host-7";

#[tokio::test]
async fn a_join_token_bootstraps_an_identity_once_and_it_gets_svids() {
    let env = TestEnv::start().await;
    let admin = env.client_for(ADMIN).await;
    let created = admin.create_join_token(HOST, None).await.unwrap();
    assert!(
        created.token.starts_with("jitid-jt-"),
        "a recognisable token"
    );
    assert!(created.token.len() >= 50, "256 random bits");
    assert_eq!(created.token_id.len(), 12);
    assert_eq!(created.spiffe_id, HOST);
    let expires = jitid::convert::system_time(created.expires_at.as_ref().unwrap()).unwrap();
    assert!(
        expires <= SystemTime::now() + Duration::from_secs(600),
        "10 minutes by default"
    );

    // No client certificate needed.
    let host = anonymous(&env).await;
    // A malformed request is refused before the token is spent.
    let mut grpc = host.grpc();
    let bad = grpc
        .bootstrap_identity(pb::BootstrapIdentityRequest {
            join_token: created.token.clone(),
            csr: b"nonsense".to_vec(),
            ttl: None,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let too_long = host
        .bootstrap_identity(&created.token, Some(Duration::from_secs(48 * 3600)))
        .await;
    assert_eq!(code(&too_long), tonic::Code::InvalidArgument);

    let identity = host.bootstrap_identity(&created.token, None).await.unwrap();
    assert_eq!(identity.spiffe_id, HOST);
    assert_eq!(identity.chain[1], *env.authority.attestation_cert());
    // Once only: a second use is refused like an unknown token.
    let again = host.bootstrap_identity(&created.token, None).await;
    assert_eq!(code(&again), tonic::Code::PermissionDenied);
    let used_message = again.unwrap_err().to_string();
    let unknown = host.bootstrap_identity("jitid-jt-nope", None).await;
    assert_eq!(code(&unknown), tonic::Code::PermissionDenied);
    assert_eq!(unknown.unwrap_err().to_string(), used_message);
    assert!(used_message.contains("unknown, expired or already used"));

    // The identity attests and gets an SVID of its SPIFFE ID.
    let client = env.client_with(Some(identity.client_identity())).await;
    let svid = client
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    assert_eq!(svid.grant.spiffe_id, HOST);
    crate::support::svid::check_x509_svid(&svid.chain, Some(&svid.key_pkcs8), &env.roots(), HOST);

    // Listed as bootstrapped.
    let listed = admin.list_identities().await.unwrap();
    let record = listed
        .iter()
        .find(|record| record.serial == identity.serial)
        .unwrap();
    assert_eq!(record.issued_via, "bootstrapped");
    assert_eq!(record.state(), pb::IdentityState::Active);

    // Audited by the token's id; its text is nowhere in the trail.
    let created_events = events_of(&env, EventKind::JoinTokenCreated).await;
    assert_eq!(created_events.len(), 1);
    assert_eq!(created_events[0].actor, ADMIN);
    assert_eq!(
        created_events[0].details["token"],
        created.token_id.as_str()
    );
    let used = events_of(&env, EventKind::JoinTokenUsed).await;
    assert_eq!(used.len(), 1);
    match used[0].event().unwrap() {
        Event::JoinTokenUsed(used) => {
            assert_eq!(used.token, created.token_id);
            assert_eq!(used.created_by, ADMIN);
            assert_eq!(used.serial, identity.serial);
        }
        other => panic!("{other:?}"),
    }
    let issued = events_of(&env, EventKind::IdentityIssued).await;
    assert_eq!(issued[0].actor, HOST);
    assert_eq!(issued[0].details["via"], "bootstrapped");
    assert_eq!(issued[0].details["join_token"], created.token_id.as_str());
    let secret = created.token.trim_start_matches("jitid-jt-");
    for event in trail(&env).await {
        assert!(!event.to_line().contains(secret), "{event:?}");
    }
}

#[tokio::test]
async fn an_expired_join_token_is_refused() {
    let env = TestEnv::start().await;
    let admin = env.client_for(ADMIN).await;
    let created = admin
        .create_join_token(HOST, Some(Duration::from_secs(1)))
        .await
        .unwrap();
    let expires = jitid::convert::system_time(created.expires_at.as_ref().unwrap()).unwrap();
    // Past its expiry (a wait for a point in time, not for an outcome).
    if let Ok(left) = expires.duration_since(SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(100)).await;
    }
    let refused = anonymous(&env)
        .await
        .bootstrap_identity(&created.token, None)
        .await;
    assert_eq!(code(&refused), tonic::Code::PermissionDenied);
    assert!(events_of(&env, EventKind::JoinTokenUsed).await.is_empty());

    // Out of range or foreign: refused at creation.
    let too_long = admin
        .create_join_token(HOST, Some(Duration::from_secs(25 * 3600)))
        .await;
    assert_eq!(code(&too_long), tonic::Code::InvalidArgument);
    let foreign = admin
        .create_join_token("spiffe://other.org/ci/host", None)
        .await;
    assert_eq!(code(&foreign), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn two_replicas_cannot_both_take_one_join_token() {
    let redis = RedisServer::start();
    let store = || async {
        Arc::new(
            RedisStore::connect(RedisStoreConfig::new(&redis.url()))
                .await
                .unwrap(),
        )
    };
    let mut env = TestEnv::start_with(store().await).await;
    let second = env.spawn_server(store().await).await;
    let admin = env.client_for(ADMIN).await;
    let first_host = anonymous(&env).await;
    let second_host = jitid::client::Client::connect(jitid::client::ClientConfig {
        identity: None,
        ..env.client_config(second, CI_RUNNER)
    })
    .await
    .unwrap();
    for _ in 0..5 {
        let token = admin.create_join_token(HOST, None).await.unwrap().token;
        let (one, two) = tokio::join!(
            first_host.bootstrap_identity(&token, None),
            second_host.bootstrap_identity(&token, None),
        );
        let won = [one.is_ok(), two.is_ok()];
        assert_eq!(
            won.iter().filter(|ok| **ok).count(),
            1,
            "exactly one replica took it: {one:?} {two:?}"
        );
        let lost = if one.is_ok() { two } else { one };
        assert_eq!(code(&lost), tonic::Code::PermissionDenied);
    }
    assert_eq!(events_of(&env, EventKind::JoinTokenUsed).await.len(), 5);
}

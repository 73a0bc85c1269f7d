//! A token used at one replica is refused at another: the claim is in the
//! Redis they share.

use std::sync::Arc;

use jitid::client::SvidRequest;
use jitid::proto::v1 as pb;
use jitid::store::{RedisStore, RedisStoreConfig};

use crate::support::ADMIN;
use crate::support::oidc::{GITHUB_APP, OidcEnv, github_claims};
use crate::support::redis::RedisServer;

#[tokio::test]
async fn a_token_replayed_through_a_second_replica_is_refused() {
    let redis = RedisServer::start();
    let store = |url: String| async move {
        Arc::new(
            RedisStore::connect(RedisStoreConfig::new(&url))
                .await
                .unwrap(),
        )
    };
    let mut oidc = OidcEnv::start_on(store(redis.url()).await).await;
    let second = oidc.env.spawn_server(store(redis.url()).await).await;
    let token = oidc.github_rsa.sign(&github_claims());
    let first = oidc
        .client(&token)
        .await
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    let error = oidc
        .client_at(second, &token)
        .await
        .fetch_jwt_svid(&SvidRequest::entitlement("ci-publish"), &["aud".to_owned()])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::Unauthenticated), "{error}");
    assert!(
        error.to_string().contains("OIDC token already used"),
        "{error}"
    );
    // Both replicas list the one grant the token made.
    let admin = oidc.env.client_for(ADMIN).await;
    let grants = admin
        .list_grants(pb::ListGrantsRequest {
            subject: GITHUB_APP.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(
        grants[0].summary.as_ref().unwrap().grant_id,
        first.grant.grant_id
    );
    // Under its grant, the token works at the second replica too.
    oidc.client_at(second, &token)
        .await
        .fetch_jwt_svid(
            &SvidRequest::under_grant(&first.grant.grant_id),
            &["aud".to_owned()],
        )
        .await
        .unwrap();
    let _ = &mut oidc;
}

#[tokio::test]
async fn with_the_store_out_of_reach_a_token_gets_nothing() {
    let mut redis = RedisServer::start();
    let store = Arc::new(
        RedisStore::connect(RedisStoreConfig::new(&redis.url()))
            .await
            .unwrap(),
    );
    let oidc = OidcEnv::start_on(store).await;
    let client = oidc.client(&oidc.github_ec.sign(&github_claims())).await;
    redis.stop();
    for error in [
        client
            .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
            .await
            .unwrap_err(),
        client
            .fetch_jwt_svid(&SvidRequest::entitlement("ci-publish"), &["aud".to_owned()])
            .await
            .unwrap_err(),
    ] {
        assert_eq!(error.code(), Some(tonic::Code::Unavailable), "{error}");
    }
}

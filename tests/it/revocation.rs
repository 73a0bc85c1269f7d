//! Revocation, task completion and liveness checks through the real server:
//! who may revoke what, what `Verify` answers, and how it fails closed when
//! Redis goes away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jitid::client::{CacheError, Client, ClientError, RevocationCache, SvidRequest, X509Svid};
use jitid::proto::v1::{
    self as pb, complete_task_request::Target as Complete, revoke_request::Target,
};
use jitid::store::{RedisStore, RedisStoreConfig};

use crate::support::redis::RedisServer;
use crate::support::{ADMIN, AGENT, CI_RUNNER, TestEnv};

fn status_of(response: &pb::VerifyResponse) -> pb::VerifyStatus {
    pb::VerifyStatus::try_from(response.status).unwrap()
}

async fn x509_status(client: &Client, svid: &X509Svid) -> (pb::VerifyStatus, String) {
    let response = client.verify_x509(&svid.chain).await.unwrap();
    (status_of(&response), response.reason)
}

async fn jwt_status(client: &Client, token: &str, audience: &str) -> (pb::VerifyStatus, String) {
    let response = client.verify_jwt(token, audience).await.unwrap();
    (status_of(&response), response.reason)
}

fn code(error: &ClientError) -> tonic::Code {
    error.code().unwrap_or(tonic::Code::Unknown)
}

async fn redis_store(redis: &RedisServer) -> Arc<RedisStore> {
    Arc::new(
        RedisStore::connect(RedisStoreConfig::new(&redis.url()))
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn verify_then_revoke_credential_and_grant() {
    let env = TestEnv::start().await;
    let runner = env.client_for(CI_RUNNER).await;
    let relying_party = env.client_for(AGENT).await;
    let svid = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task("build-9"))
        .await
        .unwrap();
    let jwt = runner
        .fetch_jwt_svid(
            &SvidRequest::entitlement("ci-publish").task("build-9"),
            &["artifacts".to_owned()],
        )
        .await
        .unwrap();

    let response = relying_party.verify_x509(&svid.chain).await.unwrap();
    assert_eq!(
        status_of(&response),
        pb::VerifyStatus::Valid,
        "{}",
        response.reason
    );
    assert_eq!(response.spiffe_id, CI_RUNNER);
    assert_eq!(response.grant_id, svid.grant.grant_id);
    assert_eq!(response.actions, ["read:source", "publish:artifacts"]);
    assert_eq!(response.task_id, "build-9");
    assert_eq!(response.credential_id, svid.serial);
    assert_eq!(
        jwt_status(&relying_party, &jwt.token, "artifacts").await.0,
        pb::VerifyStatus::Valid
    );
    let (status, reason) = jwt_status(&relying_party, &jwt.token, "elsewhere").await;
    assert_eq!(status, pb::VerifyStatus::Invalid);
    assert!(
        reason.contains("not for audience \"elsewhere\""),
        "{reason}"
    );

    // The owner revokes one credential: only that one stops being live.
    let outcome = runner
        .revoke(
            Target::CredentialId(svid.serial.clone()),
            "key leaked in a log",
        )
        .await
        .unwrap();
    assert!(outcome.credential_revoked);
    assert_eq!(
        x509_status(&relying_party, &svid).await,
        (pb::VerifyStatus::Revoked, "credential revoked".to_owned())
    );
    assert_eq!(
        jwt_status(&relying_party, &jwt.token, "artifacts").await.0,
        pb::VerifyStatus::Valid
    );

    // Then the JWT's grant.
    let outcome = runner
        .revoke(Target::GrantId(jwt.grant.grant_id.clone()), "job cancelled")
        .await
        .unwrap();
    assert_eq!(outcome.grant_ids, vec![jwt.grant.grant_id.clone()]);
    let (status, reason) = jwt_status(&relying_party, &jwt.token, "artifacts").await;
    assert_eq!(status, pb::VerifyStatus::Revoked);
    assert!(
        reason.contains("revoked by spiffe://example.org/ci/runner-1: job cancelled"),
        "{reason}"
    );

    // The record shows what happened.
    let record = runner.get_grant(&jwt.grant.grant_id).await.unwrap();
    assert_eq!(record.state, pb::GrantState::Revoked as i32);
    assert_eq!(record.credentials.len(), 1);
    let record = runner.get_grant(&svid.grant.grant_id).await.unwrap();
    assert_eq!(record.state, pb::GrantState::Active as i32);
    assert!(record.credentials[0].revoked);
    let revoked = runner
        .list_grants(pb::ListGrantsRequest {
            state: pb::GrantState::Revoked as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(revoked.len(), 1);
}

#[tokio::test]
async fn who_may_revoke_what() {
    let env = TestEnv::start().await;
    let runner = env.client_for(CI_RUNNER).await;
    let agent = env.client_for(AGENT).await;
    let admin = env.client_for(ADMIN).await;
    let svid = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();

    let error = agent
        .revoke(Target::GrantId(svid.grant.grant_id.clone()), "")
        .await
        .unwrap_err();
    assert_eq!(code(&error), tonic::Code::PermissionDenied, "{error}");
    assert!(
        error.to_string().contains("belongs to another subject"),
        "{error}"
    );
    let error = agent
        .revoke(Target::CredentialId(svid.serial.clone()), "")
        .await
        .unwrap_err();
    assert_eq!(code(&error), tonic::Code::PermissionDenied, "{error}");
    let error = agent
        .revoke(Target::Subject(CI_RUNNER.to_owned()), "")
        .await
        .unwrap_err();
    assert_eq!(code(&error), tonic::Code::PermissionDenied, "{error}");
    let error = agent.get_grant(&svid.grant.grant_id).await.unwrap_err();
    assert_eq!(code(&error), tonic::Code::PermissionDenied, "{error}");
    let error = agent
        .list_grants(pb::ListGrantsRequest {
            subject: CI_RUNNER.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code(&error), tonic::Code::PermissionDenied, "{error}");
    assert_eq!(x509_status(&agent, &svid).await.0, pb::VerifyStatus::Valid);

    // Malformed and unknown targets.
    let error = runner
        .revoke(Target::GrantId("not-a-uuid".to_owned()), "")
        .await
        .unwrap_err();
    assert_eq!(code(&error), tonic::Code::InvalidArgument, "{error}");
    let error = runner
        .revoke(
            Target::GrantId("00000000-0000-4000-8000-000000000000".to_owned()),
            "",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&error), tonic::Code::NotFound, "{error}");
    let error = runner
        .revoke(Target::CredentialId("abc".to_owned()), "")
        .await
        .unwrap_err();
    assert_eq!(code(&error), tonic::Code::InvalidArgument, "{error}");
    let mut grpc = runner.grpc();
    let error: ClientError = grpc
        .revoke(pb::RevokeRequest {
            target: None,
            reason: String::new(),
        })
        .await
        .unwrap_err()
        .into();
    assert_eq!(code(&error), tonic::Code::InvalidArgument);

    // An admin may read and revoke anyone's grant.
    let listed = admin
        .list_grants(pb::ListGrantsRequest {
            subject: CI_RUNNER.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    admin.get_grant(&svid.grant.grant_id).await.unwrap();
    let outcome = admin
        .revoke(Target::GrantId(svid.grant.grant_id.clone()), "incident 7")
        .await
        .unwrap();
    assert_eq!(outcome.grant_ids, vec![svid.grant.grant_id.clone()]);
    let (status, reason) = x509_status(&agent, &svid).await;
    assert_eq!(status, pb::VerifyStatus::Revoked);
    assert!(
        reason.contains("revoked by spiffe://example.org/ops/admin: incident 7"),
        "{reason}"
    );
}

#[tokio::test]
async fn completing_a_task_ends_its_credentials() {
    let env = TestEnv::start().await;
    let runner = env.client_for(CI_RUNNER).await;
    let request = SvidRequest::entitlement("ci-publish").task("job-77");
    let first = runner.fetch_x509_svid(&request).await.unwrap();
    let second = runner
        .fetch_jwt_svid(&request, &["a".to_owned()])
        .await
        .unwrap();
    let other = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task("job-78"))
        .await
        .unwrap();

    let mut ended = runner
        .complete_task(Complete::TaskId("job-77".to_owned()))
        .await
        .unwrap();
    ended.sort();
    let mut expected = vec![first.grant.grant_id.clone(), second.grant.grant_id.clone()];
    expected.sort();
    assert_eq!(ended, expected);
    let (status, reason) = x509_status(&runner, &first).await;
    assert_eq!(status, pb::VerifyStatus::Revoked);
    assert!(reason.contains("completed"), "{reason}");
    assert_eq!(
        jwt_status(&runner, &second.token, "a").await.0,
        pb::VerifyStatus::Revoked
    );
    assert_eq!(
        x509_status(&runner, &other).await.0,
        pb::VerifyStatus::Valid
    );
    // Completing again is harmless; another subject's grant is not its to complete.
    assert!(
        runner
            .complete_task(Complete::TaskId("job-77".to_owned()))
            .await
            .unwrap()
            .is_empty()
    );
    let agent = env.client_for(AGENT).await;
    let error = agent
        .complete_task(Complete::GrantId(other.grant.grant_id.clone()))
        .await
        .unwrap_err();
    assert_eq!(code(&error), tonic::Code::PermissionDenied);
    runner
        .complete_task(Complete::GrantId(other.grant.grant_id.clone()))
        .await
        .unwrap();
    assert_eq!(
        x509_status(&runner, &other).await.0,
        pb::VerifyStatus::Revoked
    );
}

#[tokio::test]
async fn admins_revoke_tasks_and_subjects() {
    let env = TestEnv::start().await;
    let runner = env.client_for(CI_RUNNER).await;
    let agent = env.client_for(AGENT).await;
    let admin = env.client_for(ADMIN).await;
    let runner_svid = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task("shared-9"))
        .await
        .unwrap();
    let agent_svid = agent
        .fetch_x509_svid(&SvidRequest::entitlement("agent-research").task("shared-9"))
        .await
        .unwrap();
    let outcome = admin
        .revoke(Target::TaskId("shared-9".to_owned()), "incident 8")
        .await
        .unwrap();
    assert!(outcome.task_revoked);
    for svid in [&runner_svid, &agent_svid] {
        let (status, reason) = x509_status(&admin, svid).await;
        assert_eq!(status, pb::VerifyStatus::Revoked);
        assert!(
            reason.starts_with("task revoked: revoked by spiffe://example.org/ops/admin"),
            "{reason}"
        );
    }

    // Revoking a subject ends what it holds now, not what it gets later.
    let held = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    let outcome = admin
        .revoke(Target::Subject(CI_RUNNER.to_owned()), "offboarded")
        .await
        .unwrap();
    assert!(outcome.grant_ids.contains(&held.grant.grant_id));
    assert_eq!(
        x509_status(&admin, &held).await.0,
        pb::VerifyStatus::Revoked
    );
    let later = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    assert_eq!(x509_status(&admin, &later).await.0, pb::VerifyStatus::Valid);
}

#[tokio::test]
async fn expired_and_foreign_credentials() {
    let env = TestEnv::start().await;
    let runner = env.client_for(CI_RUNNER).await;
    let jwt = runner
        .fetch_jwt_svid(
            &SvidRequest::entitlement("ci-publish").ttl(Duration::from_secs(1)),
            &["a".to_owned()],
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = jwt_status(&runner, &jwt.token, "a").await;
        if status == pb::VerifyStatus::Expired {
            break;
        }
        assert_eq!(status, pb::VerifyStatus::Valid);
        assert!(Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A credential from another jitid deployment is not authentic here.
    let other = TestEnv::start().await;
    let foreign = other
        .client_for(CI_RUNNER)
        .await
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    let (status, reason) = x509_status(&runner, &foreign).await;
    assert_eq!(status, pb::VerifyStatus::Invalid);
    assert!(reason.contains("chain does not verify"), "{reason}");
    let mut tampered = jwt.token.clone();
    tampered.push('x');
    assert_eq!(
        jwt_status(&runner, &tampered, "a").await.0,
        pb::VerifyStatus::Invalid
    );
    let error = runner.verify_jwt(&jwt.token, "").await.unwrap_err();
    assert_eq!(code(&error), tonic::Code::InvalidArgument);
    let error = env
        .client_with(None)
        .await
        .verify_x509(&foreign.chain)
        .await
        .unwrap_err();
    assert_eq!(code(&error), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn redis_down_fails_closed_and_a_wiped_redis_revokes_everything_before() {
    let mut redis = RedisServer::start();
    let env = TestEnv::start_with(redis_store(&redis).await).await;
    let runner = env.client_for(CI_RUNNER).await;
    let before = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    assert_eq!(
        x509_status(&runner, &before).await.0,
        pb::VerifyStatus::Valid
    );

    redis.stop();
    let error = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap_err();
    assert_eq!(code(&error), tonic::Code::Unavailable, "{error}");
    let error = runner
        .fetch_jwt_svid(&SvidRequest::entitlement("ci-publish"), &["a".to_owned()])
        .await
        .unwrap_err();
    assert_eq!(code(&error), tonic::Code::Unavailable, "{error}");
    // Never VALID without the store: the relying party's own attestation
    // identity cannot be checked against the denylist, so the check is
    // refused before it starts (fail closed).
    let error = runner.verify_x509(&before.chain).await.unwrap_err();
    assert_eq!(code(&error), tonic::Code::Unavailable, "{error}");
    assert!(
        error
            .to_string()
            .contains("attestation denylist unavailable"),
        "{error}"
    );
    let error = runner
        .revoke(Target::GrantId(before.grant.grant_id.clone()), "")
        .await
        .unwrap_err();
    assert_eq!(code(&error), tonic::Code::Unavailable, "{error}");

    // Redis comes back empty: service resumes, and nothing minted before is live.
    redis.restart_empty();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match runner
            .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
            .await
        {
            Ok(svid) => break svid,
            Err(error) => {
                assert_eq!(code(&error), tonic::Code::Unavailable, "{error}");
                assert!(Instant::now() < deadline, "service did not resume");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let (status, reason) = x509_status(&runner, &before).await;
    assert_eq!(status, pb::VerifyStatus::Revoked);
    assert!(reason.starts_with("epoch reset"), "{reason}");
    assert_eq!(
        x509_status(&runner, &after).await.0,
        pb::VerifyStatus::Valid
    );
}

#[tokio::test]
async fn a_revocation_through_one_server_is_seen_by_another_at_once() {
    let redis = RedisServer::start();
    let mut env = TestEnv::start_with(redis_store(&redis).await).await;
    let second = env.spawn_server(redis_store(&redis).await).await;
    let runner = env.client_for(CI_RUNNER).await;
    let relying_party = env.client_at(second, AGENT).await;
    for round in 0..5 {
        let svid = runner
            .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task(&format!("job-{round}")))
            .await
            .unwrap();
        assert_eq!(
            x509_status(&relying_party, &svid).await.0,
            pb::VerifyStatus::Valid
        );
        runner
            .revoke(Target::GrantId(svid.grant.grant_id.clone()), "")
            .await
            .unwrap();
        // No waiting: the very next check on the other server sees it.
        assert_eq!(
            x509_status(&relying_party, &svid).await.0,
            pb::VerifyStatus::Revoked
        );
    }
}

#[tokio::test]
async fn the_revocation_stream_feeds_a_local_cache_and_resumes() {
    let redis = RedisServer::start();
    let env = TestEnv::start_with(redis_store(&redis).await).await;
    let runner = env.client_for(CI_RUNNER).await;
    let relying_party = env.client_for(AGENT).await;
    let first = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task("a"))
        .await
        .unwrap();
    let second = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task("b"))
        .await
        .unwrap();

    // The raw stream: a heartbeat with the epoch, then events with cursors.
    let mut stream = relying_party.watch_revocations("").await.unwrap();
    let hello = stream.message().await.unwrap().unwrap();
    assert!(hello.heartbeat);
    let epoch = jitid::ca::GrantExtension::from_certificate(first.chain[0].as_ref())
        .unwrap()
        .epoch;
    assert_eq!(hello.epoch, epoch);
    runner
        .revoke(Target::GrantId(first.grant.grant_id.clone()), "done")
        .await
        .unwrap();
    let event = loop {
        let message = stream.message().await.unwrap().unwrap();
        if !message.heartbeat {
            break message;
        }
    };
    assert_eq!(event.grant_ids, vec![first.grant.grant_id.clone()]);
    assert!(event.reason.ends_with(": done"), "{}", event.reason);
    drop(stream);

    // A cache fails closed until it has caught up with the stream.
    let unsynced = RevocationCache::new(Duration::from_secs(3600));
    assert_eq!(
        unsynced.is_certificate_revoked(second.chain[0].as_ref()),
        Err(CacheError::NotSynced)
    );
    // A cache that follows the stream sees the next revocation quickly.
    let (cache, task) = RevocationCache::follow(relying_party.clone(), Duration::from_secs(3600));
    wait_until(|| {
        cache
            .is_certificate_revoked(first.chain[0].as_ref())
            .unwrap_or(false)
    })
    .await;
    assert!(
        !cache
            .is_certificate_revoked(second.chain[0].as_ref())
            .unwrap()
    );
    runner
        .revoke(Target::CredentialId(second.serial.clone()), "")
        .await
        .unwrap();
    wait_until(|| {
        cache
            .is_certificate_revoked(second.chain[0].as_ref())
            .unwrap_or(false)
    })
    .await;

    // Disconnected, it misses nothing: it resumes from its cursor.
    task.abort();
    let cursor = cache.cursor().unwrap();
    let third = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task("c"))
        .await
        .unwrap();
    runner
        .complete_task(Complete::TaskId("c".to_owned()))
        .await
        .unwrap();
    let mut resumed = relying_party.watch_revocations(&cursor).await.unwrap();
    let mut seen = Vec::new();
    while seen.is_empty() {
        let message = resumed.message().await.unwrap().unwrap();
        seen.extend(message.grant_ids);
    }
    assert_eq!(
        seen,
        vec![third.grant.grant_id.clone()],
        "only what came after the cursor"
    );
    let (cache, _task) = RevocationCache::follow(relying_party.clone(), Duration::from_secs(3600));
    wait_until(|| {
        cache
            .is_certificate_revoked(third.chain[0].as_ref())
            .unwrap_or(false)
    })
    .await;
    assert!(
        cache
            .is_certificate_revoked(first.chain[0].as_ref())
            .unwrap(),
        "replayed from the start"
    );
    // Without heartbeats it stops answering rather than answer stale.
    cache.set_max_staleness(Duration::from_millis(1));
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(matches!(
        cache.is_certificate_revoked(third.chain[0].as_ref()),
        Err(CacheError::Stale(_))
    ));
}

async fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "condition never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_revocation_is_not_acknowledged_until_replicas_have_it() {
    let redis = RedisServer::start();
    let strict = RedisStore::connect(RedisStoreConfig {
        wait_replicas: 1,
        wait_timeout: Duration::from_millis(50),
        ..RedisStoreConfig::new(&redis.url())
    })
    .await
    .unwrap();
    let env = TestEnv::start_with(Arc::new(strict)).await;
    let runner = env.client_for(CI_RUNNER).await;
    let svid = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    // This redis-server has no replica, so WAIT 1 never succeeds.
    let error = runner
        .revoke(Target::GrantId(svid.grant.grant_id.clone()), "")
        .await
        .unwrap_err();
    assert_eq!(code(&error), tonic::Code::Unavailable);
    assert!(
        error
            .to_string()
            .contains("revocation acknowledged by 0 of 1 replicas; not acknowledged, retry"),
        "{error}"
    );
}

#[tokio::test]
async fn revocation_streams_end_at_shutdown_and_refuse_bad_cursors() {
    let env = TestEnv::start().await;
    let client = env.client_for(AGENT).await;
    let error = client.watch_revocations("12-ab").await.unwrap_err();
    assert_eq!(code(&error), tonic::Code::InvalidArgument, "{error}");
    let mut stream = client.watch_revocations("").await.unwrap();
    assert!(stream.message().await.unwrap().unwrap().heartbeat);
    drop(env);
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        while let Ok(Some(_)) = stream.message().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived the server's shutdown");
}

#[tokio::test]
async fn a_forged_expired_certificate_is_invalid_not_expired() {
    let env = TestEnv::start().await;
    let client = env.client_for(AGENT).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(CI_RUNNER.try_into().unwrap())];
    let extension = jitid::ca::GrantExtension {
        grant_id: "00000000-0000-4000-8000-000000000000".to_owned(),
        task_id: "t".to_owned(),
        entitlement: "ci-publish".to_owned(),
        actions: vec!["publish:artifacts".to_owned()],
        epoch: "e".to_owned(),
        break_glass: false,
        parent_grant_ids: Vec::new(),
    };
    params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        jitid::ca::GRANT_EXTENSION_OID,
        extension.to_der(),
    )];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let forged = params.self_signed(&key).unwrap();
    let response = client.verify_x509(&[forged.der().clone()]).await.unwrap();
    assert_eq!(
        status_of(&response),
        pb::VerifyStatus::Invalid,
        "{}",
        response.reason
    );
    assert!(
        response.spiffe_id.is_empty(),
        "claims of a forgery are not echoed"
    );
}

#[tokio::test]
async fn one_caller_cannot_take_every_revocation_stream_from_relying_parties() {
    let env = TestEnv::start_with_limits(
        "max_revocation_streams = 3\nmax_grant_streams = 3\nmax_streams_per_caller = 2",
    )
    .await;
    let greedy = env.client_for(AGENT).await;
    let _first = greedy.watch_revocations("").await.unwrap();
    let _second = greedy.watch_revocations("").await.unwrap();
    let error = greedy.watch_revocations("").await.unwrap_err();
    assert_eq!(code(&error), tonic::Code::ResourceExhausted, "{error}");
    assert!(
        error.to_string().contains("max_streams_per_caller"),
        "{error}"
    );

    // Another caller takes the last shared place; then the shared places
    // are gone for anonymous followers...
    let other = env.client_for(CI_RUNNER).await;
    let _third = other.watch_revocations("").await.unwrap();
    let error = other.watch_revocations("").await.unwrap_err();
    assert_eq!(code(&error), tonic::Code::ResourceExhausted, "{error}");
    // ...but not for a relying party under its configured name.
    let ledger = env.client_for("spiffe://example.org/svc/ledger").await;
    let _named = ledger.watch_revocations_as("", "ledger-a").await.unwrap();

    // Grant streams have a per-caller share too.
    let grant = greedy
        .fetch_x509_svid(&SvidRequest::entitlement("agent-research").task("streams"))
        .await
        .unwrap()
        .grant
        .grant_id;
    let _w1 = greedy.watch_grant(&grant).await.unwrap();
    let _w2 = greedy.watch_grant(&grant).await.unwrap();
    let error = greedy.watch_grant(&grant).await.unwrap_err();
    assert_eq!(code(&error), tonic::Code::ResourceExhausted, "{error}");
}

#[tokio::test]
async fn relying_party_names_are_bound_to_identities_in_the_config() {
    let env = TestEnv::start().await;
    // A name the config does not list: refused, whoever asks.
    let ledger = env.client_for("spiffe://example.org/svc/ledger").await;
    let error = ledger
        .watch_revocations_as("", "ledger-z")
        .await
        .unwrap_err();
    assert_eq!(code(&error), tonic::Code::PermissionDenied, "{error}");
    assert!(
        error.to_string().contains("[revocation.relying_parties]"),
        "{error}"
    );
    // A listed name from an identity it is not bound to: refused, before
    // the real party has even registered.
    let squatter = env.client_for(AGENT).await;
    for attempt in [
        squatter
            .watch_revocations_as("", "ledger-a")
            .await
            .map(drop),
        squatter.ack_revocations("ledger-a", "").await.map(drop),
    ] {
        let error = attempt.unwrap_err();
        assert_eq!(code(&error), tonic::Code::PermissionDenied, "{error}");
        assert!(error.to_string().contains("is bound to"), "{error}");
    }
    // The party it is bound to registers.
    ledger.watch_revocations_as("", "ledger-a").await.unwrap();
}

#[tokio::test]
async fn one_acknowledgement_records_a_bounded_number_of_revocations() {
    use tokio_stream::StreamExt as _;
    let env = TestEnv::start_with_limits("caller_rate = 0").await;
    let ledger = env.client_for("spiffe://example.org/svc/ledger").await;
    let mut stream = ledger.watch_revocations_as("", "ledger-a").await.unwrap();
    let runner = env.client_for(CI_RUNNER).await;
    for n in 0..300 {
        let svid = runner
            .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task(&format!("t{n}")))
            .await
            .unwrap();
        runner
            .revoke(
                pb::revoke_request::Target::GrantId(svid.grant.grant_id),
                "done",
            )
            .await
            .unwrap();
    }
    let mut seen = 0;
    let mut last = String::new();
    while seen < 300 {
        let event = stream.next().await.unwrap().unwrap();
        if !event.heartbeat {
            seen += 1;
            last = event.cursor;
        }
    }
    // 256 now, the rest with the next acknowledgement of the same cursor.
    assert_eq!(
        ledger.ack_revocations("ledger-a", &last).await.unwrap(),
        256
    );
    assert_eq!(ledger.ack_revocations("ledger-a", &last).await.unwrap(), 44);
    assert_eq!(ledger.ack_revocations("ledger-a", &last).await.unwrap(), 0);
}

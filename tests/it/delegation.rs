//! Agent frameworks: per-task identities delegated to narrower ones;
//! sender-constrained JWTs; tasks that end completed or failed; and proof
//! that a revocation reached every registered relying party.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jitid::ca::GrantExtension;
use jitid::client::AuditEventsExt as _;
use jitid::client::{
    Client, ClientConfig, ClientError, RevocationCache, SvidRequest, TaskIdentity,
    check_confirmation,
};
use jitid::proto::v1::{self as pb, complete_task_request::Target as Complete};
use jitid::store::{RedisStore, RedisStoreConfig};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;

use crate::support::redis::RedisServer;
use crate::support::{ADMIN, AGENT, CI_RUNNER, TestEnv, exited};

/// Entitlements and settings these tests add to the harness's.
const EXTRA: &str = r#"
[[entitlement]]
name = "agent-delegating"
actions = ["kb:read", "tool:search", "tool:summarize"]
requesters = ["spiffe://example.org/agents/planner"]
identity = "per-task"
max_ttl = "15m"
delegation_depth = 2

[[entitlement]]
name = "bound-api"
actions = ["api:call"]
requesters = ["spiffe://example.org/agents/planner"]
bind_jwt = true

[revocation]
ack_bound = "300ms"
"#;

const ROOT_ID: &str = "spiffe://example.org/agents/planner/task/ticket-9";
const SEARCH_ID: &str = "spiffe://example.org/agents/planner/task/ticket-9/sub/search";

fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&json).unwrap()
}

fn refused(result: Result<TaskIdentity, ClientError>, code: tonic::Code, text: &str) {
    match result {
        Err(error) => {
            assert_eq!(error.code(), Some(code), "{error}");
            assert!(error.to_string().contains(text), "{text:?} not in {error}");
        }
        Ok(identity) => panic!("delegated {}", identity.grant_id()),
    }
}

async fn wait_until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}: never happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status_of(client: &Client, token: &str, audience: &str) -> pb::VerifyResponse {
    client.verify_jwt(token, audience).await.unwrap()
}

#[tokio::test]
async fn an_agent_delegates_narrower_identities_that_end_with_their_task() {
    let env = TestEnv::start_with_catalogue(EXTRA).await;
    let agent = env.client_for(AGENT).await;
    let relying_party = env.client_for(CI_RUNNER).await;
    let (cache, _follower) =
        RevocationCache::follow(relying_party.clone(), Duration::from_secs(3600));

    let task = TaskIdentity::request(
        &agent,
        &SvidRequest::entitlement("agent-delegating").task("ticket-9"),
    )
    .await
    .unwrap();
    assert_eq!(task.depth(), 0);
    let root = task.jwt_svid(&["kb.example.org".to_owned()]).await.unwrap();
    assert_eq!(root.grant.spiffe_id, ROOT_ID);
    assert!(claims(&root.token).get("act").is_none());

    // A tool gets one action for a minute, under its own SPIFFE ID.
    let search = task
        .delegate("search", &["tool:search"], Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(search.delegated_spiffe_id(), Some(SEARCH_ID));
    assert_eq!(search.depth(), 1);
    assert_eq!(search.actions(), ["tool:search"]);
    assert_eq!(search.task_id(), "ticket-9");
    assert!(search.expires_at().unwrap() <= task.expires_at().unwrap());
    let tool = search
        .jwt_svid(&["search.example.org".to_owned()])
        .await
        .unwrap();
    let tool_claims = claims(&tool.token);
    assert_eq!(tool_claims["sub"], SEARCH_ID);
    assert_eq!(tool_claims["scope"], "tool:search");
    assert_eq!(tool_claims["act"], json!({ "sub": ROOT_ID }));
    assert_eq!(tool_claims["jitid_parents"], json!([task.grant_id()]));
    let tool_x509 = search.x509_svid().await.unwrap();
    let extension = GrantExtension::from_certificate(tool_x509.chain[0].as_ref()).unwrap();
    assert_eq!(extension.parent_grant_ids, [task.grant_id()]);
    assert_eq!(extension.grant_id, search.grant_id());
    // Unmodified SPIFFE libraries accept the delegated SVID.
    let parsed = spiffe::X509Svid::parse_from_der(
        &tool_x509
            .chain
            .iter()
            .flat_map(|cert| cert.to_vec())
            .collect::<Vec<_>>(),
        &tool_x509.key_pkcs8,
    )
    .unwrap();
    assert_eq!(parsed.spiffe_id().to_string(), SEARCH_ID);

    let verdict = status_of(&relying_party, &tool.token, "search.example.org").await;
    assert_eq!(
        verdict.status(),
        pb::VerifyStatus::Valid,
        "{}",
        verdict.reason
    );
    assert_eq!(verdict.actors, [ROOT_ID]);
    assert_eq!(verdict.parent_grant_ids, [task.grant_id()]);

    // Two levels deep: the chain of actors nests, most recent outermost.
    let fetch = search
        .delegate("fetch", &[] as &[&str], None)
        .await
        .unwrap();
    assert_eq!(fetch.depth(), 2);
    assert_eq!(fetch.actions(), ["tool:search"], "all of the parent's");
    let fetch_token = fetch
        .jwt_svid(&["web.example.org".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        claims(&fetch_token.token)["act"],
        json!({ "sub": SEARCH_ID, "act": { "sub": ROOT_ID } })
    );

    // Never wider, never longer, never deeper.
    refused(
        fetch.delegate("deeper", &["tool:search"], None).await,
        tonic::Code::PermissionDenied,
        "would be 3 levels deep; entitlement \"agent-delegating\" allows 2",
    );
    refused(
        search.delegate("wide", &["kb:read"], None).await,
        tonic::Code::PermissionDenied,
        "action \"kb:read\" is not among parent grant",
    );
    refused(
        search
            .delegate("long", &["tool:search"], Some(Duration::from_secs(120)))
            .await,
        tonic::Code::InvalidArgument,
        "a delegation never outlives its parent",
    );
    refused(
        search.delegate("a/b", &["tool:search"], None).await,
        tonic::Code::InvalidArgument,
        "name: must be 1 to 64 letters",
    );
    let plain = TaskIdentity::request(&agent, &SvidRequest::entitlement("agent-research"))
        .await
        .unwrap();
    refused(
        plain.delegate("x", &["kb:read"], None).await,
        tonic::Code::PermissionDenied,
        "is not delegable",
    );
    let stranger = env.client_for(CI_RUNNER).await;
    let result = stranger
        .delegate(pb::DelegateRequest {
            parent_grant_id: task.grant_id().to_owned(),
            name: "mine".to_owned(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        result.unwrap_err().code(),
        Some(tonic::Code::PermissionDenied),
        "only the owner delegates"
    );

    // The cache knows the tool's certificate is live, then that it is not
    // once its root task completes: its parent is named in the certificate.
    wait_until("the cache syncs", async || {
        cache.is_certificate_revoked(tool_x509.chain[0].as_ref()) == Ok(false)
    })
    .await;
    let (root_grant, search_grant, fetch_grant) = (
        task.grant_id().to_owned(),
        search.grant_id().to_owned(),
        fetch.grant_id().to_owned(),
    );
    let mut ended = task.complete().await.unwrap();
    ended.sort();
    let mut expected = vec![root_grant, search_grant.clone(), fetch_grant.clone()];
    expected.sort();
    assert_eq!(ended, expected, "the task and every delegation under it");
    for (token, audience) in [
        (&tool.token, "search.example.org"),
        (&fetch_token.token, "web.example.org"),
    ] {
        let verdict = status_of(&relying_party, token, audience).await;
        assert_eq!(
            verdict.status(),
            pb::VerifyStatus::Revoked,
            "{}",
            verdict.reason
        );
    }
    wait_until("the cache learns", async || {
        cache.is_certificate_revoked(tool_x509.chain[0].as_ref()) == Ok(true)
    })
    .await;
    for grant in [&search_grant, &fetch_grant] {
        let record = agent.get_grant(grant).await.unwrap();
        assert_eq!(record.state(), pb::GrantState::Completed, "{grant}");
    }
    // Ending a child leaves its parent alone; the children are already
    // ended, so dropping them changes nothing.
    drop((search, fetch));

    // A dropped identity completes its grant.
    let dropped = TaskIdentity::request(
        &agent,
        &SvidRequest::entitlement("agent-delegating").task("ticket-10"),
    )
    .await
    .unwrap();
    let dropped_id = dropped.grant_id().to_owned();
    drop(dropped);
    wait_until("a dropped identity completes", async || {
        agent.get_grant(&dropped_id).await.unwrap().state() == pb::GrantState::Completed
    })
    .await;
    // A detached one does not.
    let detached = plain.detach();
    let id = detached.summary.unwrap().grant_id;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        agent.get_grant(&id).await.unwrap().state(),
        pb::GrantState::Active
    );
}

#[tokio::test]
async fn revoking_a_parent_revokes_its_delegations_in_the_store_and_in_verify() {
    let env = TestEnv::start_with_catalogue(EXTRA).await;
    let agent = env.client_for(AGENT).await;
    let admin = env.client_for(ADMIN).await;
    let task = TaskIdentity::request(
        &agent,
        &SvidRequest::entitlement("agent-delegating").task("ticket-11"),
    )
    .await
    .unwrap();
    let child = task
        .delegate("sum", &["tool:summarize"], None)
        .await
        .unwrap();
    let child_x509 = child.x509_svid().await.unwrap();
    let revoked = admin
        .revoke(
            pb::revoke_request::Target::GrantId(task.grant_id().to_owned()),
            "prompt injection suspected",
        )
        .await
        .unwrap();
    assert!(revoked.grant_ids.contains(&child.grant_id().to_owned()));
    let verdict = admin.verify_x509(&child_x509.chain).await.unwrap();
    assert_eq!(verdict.status(), pb::VerifyStatus::Revoked);
    assert_eq!(
        agent.get_grant(child.grant_id()).await.unwrap().state(),
        pb::GrantState::Revoked
    );
    // Nothing more can be minted or delegated under either.
    let error = child.x509_svid().await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::FailedPrecondition));
    refused(
        task.delegate("late", &["kb:read"], None).await,
        tonic::Code::FailedPrecondition,
        "nothing can be delegated from it",
    );
    drop(child.detach());
    drop(task.detach());
}

// The server runs in this process while the test blocks on the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_jwt_is_valid_only_with_the_certificate_it_was_requested_with() {
    let env = TestEnv::start_with_catalogue(EXTRA).await;
    let relying_party = env.client_for(CI_RUNNER).await;
    // The agent's own attestation certificate, which it presents over mTLS.
    let (cert, key) = env.identity_files(AGENT);
    let config = ClientConfig::from_files(&env.url(), &env.ca.root_cert, Some((&cert, &key)));
    let agent = Client::connect(config.unwrap()).await.unwrap();
    let agent_der = CertificateDer::from_pem_file(&cert).unwrap();
    let other_der = CertificateDer::from_pem_file(env.identity_files(CI_RUNNER).0).unwrap();

    let bound = agent
        .fetch_jwt_svid(
            &SvidRequest::entitlement("agent-research").bound_to_certificate(),
            &["api.example.org".to_owned()],
        )
        .await
        .unwrap();
    assert!(claims(&bound.token)["cnf"]["x5t#S256"].is_string());
    let check = |presenter: Option<&[u8]>| {
        let relying_party = relying_party.clone();
        let token = bound.token.clone();
        let presenter = presenter.map(<[u8]>::to_vec);
        async move {
            relying_party
                .verify_presented_jwt(&token, "api.example.org", presenter.as_deref())
                .await
                .unwrap()
        }
    };
    let verdict = check(Some(agent_der.as_ref())).await;
    assert_eq!(
        verdict.status(),
        pb::VerifyStatus::Valid,
        "{}",
        verdict.reason
    );
    assert!(verdict.certificate_bound);
    let verdict = check(Some(other_der.as_ref())).await;
    assert_eq!(verdict.status(), pb::VerifyStatus::Invalid);
    assert!(
        verdict.reason.contains("bound to another certificate"),
        "{}",
        verdict.reason
    );
    let verdict = check(None).await;
    assert_eq!(verdict.status(), pb::VerifyStatus::Invalid);
    assert!(
        verdict.reason.contains("bound to a certificate"),
        "{}",
        verdict.reason
    );
    check_confirmation(&bound.token, agent_der.as_ref()).unwrap();
    check_confirmation(&bound.token, other_der.as_ref()).unwrap_err();

    // Unbound tokens need no certificate; an entitlement may bind them all.
    let unbound = agent
        .fetch_jwt_svid(
            &SvidRequest::entitlement("agent-research"),
            &["api.example.org".to_owned()],
        )
        .await
        .unwrap();
    let verdict = relying_party
        .verify_jwt(&unbound.token, "api.example.org")
        .await
        .unwrap();
    assert_eq!(verdict.status(), pb::VerifyStatus::Valid);
    assert!(!verdict.certificate_bound);
    check_confirmation(&unbound.token, other_der.as_ref()).unwrap();
    let always = agent
        .fetch_jwt_svid(
            &SvidRequest::entitlement("bound-api"),
            &["api.example.org".to_owned()],
        )
        .await
        .unwrap();
    assert!(claims(&always.token)["cnf"]["x5t#S256"].is_string());
    // The CLI binds on request too.
    let output = env.cli(
        AGENT,
        &[
            "fetch",
            "jwt",
            "--entitlement",
            "agent-research",
            "--audience",
            "a.example.org",
            "--bind",
        ],
    );
    let token = exited(&output, 0);
    assert!(
        claims(token.trim())["cnf"]["x5t#S256"].is_string(),
        "{token}"
    );
}

// The server runs in this process while the test blocks on the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_ends_its_grants_like_a_completed_one() {
    let env = TestEnv::start().await;
    let runner = env.client_for(CI_RUNNER).await;
    let admin = env.client_for(ADMIN).await;
    let svid = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task("build-13"))
        .await
        .unwrap();
    let ended = runner
        .end_task(
            Complete::TaskId("build-13".to_owned()),
            pb::TaskOutcome::Failed,
        )
        .await
        .unwrap();
    assert_eq!(ended, std::slice::from_ref(&svid.grant.grant_id));
    let record = runner.get_grant(&svid.grant.grant_id).await.unwrap();
    assert_eq!(record.state(), pb::GrantState::Completed);
    assert!(
        record
            .end_reason
            .starts_with("failed by spiffe://example.org/ci/runner-1")
    );
    let verdict = admin.verify_x509(&svid.chain).await.unwrap();
    assert_eq!(verdict.status(), pb::VerifyStatus::Revoked);
    let trail = admin
        .audit_events(pb::QueryAuditRequest {
            kinds: vec!["task_completed".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(trail.events.len(), 1);
    assert_eq!(trail.events[0].details["outcome"], "failed");
    // The CLI says how a task ended too.
    let second = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task("build-14"))
        .await
        .unwrap();
    let output = env.cli(
        CI_RUNNER,
        &["complete", "--task", "build-14", "--outcome", "failed"],
    );
    assert!(exited(&output, 0).contains(&second.grant.grant_id));
}

// The server runs in this process while the test blocks on the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relying_parties_acknowledge_revocations_and_the_issuer_proves_removal() {
    let redis = RedisServer::start();
    let mut env = TestEnv::start_with_catalogue(EXTRA).await;
    let store = Arc::new(
        RedisStore::connect(RedisStoreConfig::new(&redis.url()))
            .await
            .unwrap(),
    );
    let addr = env.spawn_server(store).await;
    let url = format!("https://127.0.0.1:{}", addr.port());
    let runner = env.client_at(addr, CI_RUNNER).await;
    let ledger = env.client_at(addr, "spiffe://example.org/svc/ledger").await;
    let admin = env.client_at(addr, ADMIN).await;
    let (a, _) = RevocationCache::follow_as(ledger.clone(), Duration::from_secs(3600), "ledger-a");
    let (b, _) = RevocationCache::follow_as(ledger.clone(), Duration::from_secs(3600), "ledger-b");
    // A third party registers but applies nothing.
    let _stalled = ledger
        .watch_revocations_as("", "ledger-stalled")
        .await
        .unwrap();
    // A name belongs to whoever registered it.
    let error = admin.ack_revocations("ledger-a", "").await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::PermissionDenied));
    let error = ledger.ack_revocations("bad name", "").await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::InvalidArgument));

    let svid = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task("build-77"))
        .await
        .unwrap();
    let leaf = svid.chain[0].as_ref();
    wait_until("both caches sync", async || {
        a.is_certificate_revoked(leaf) == Ok(false) && b.is_certificate_revoked(leaf) == Ok(false)
    })
    .await;
    // Nothing ended yet: nothing to apply.
    let status = runner
        .revocation_status(&svid.grant.grant_id)
        .await
        .unwrap();
    assert_eq!(status.state(), pb::GrantState::Active);
    assert!(status.cursor.is_empty());

    // The owner ends its grant with its attestation identity alone: the
    // credential itself is not needed.
    runner
        .revoke(
            pb::revoke_request::Target::GrantId(svid.grant.grant_id.clone()),
            "job cancelled",
        )
        .await
        .unwrap();
    let mut status = pb::RevocationStatusResponse::default();
    wait_until(
        "two parties apply it and the third is overdue",
        async || {
            status = runner
                .revocation_status(&svid.grant.grant_id)
                .await
                .unwrap();
            let applied = status.relying_parties.iter().filter(|p| p.applied).count();
            let overdue = status.relying_parties.iter().filter(|p| p.overdue).count();
            applied == 2 && overdue == 1
        },
    )
    .await;
    assert!(a.is_certificate_revoked(leaf).unwrap() && b.is_certificate_revoked(leaf).unwrap());
    assert_eq!(status.state(), pb::GrantState::Revoked);
    assert!(!status.all_applied);
    let names: Vec<&str> = status
        .relying_parties
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["ledger-a", "ledger-b", "ledger-stalled"]);
    assert!(status.relying_parties[2].overdue && !status.relying_parties[2].applied);

    let output = env.cli_at(
        &url,
        CI_RUNNER,
        &["revocation", "status", "--grant", &svid.grant.grant_id],
    );
    let text = exited(&output, 6);
    assert!(
        text.contains("visible at 2/3 relying parties, slowest"),
        "{text}"
    );
    assert!(
        text.contains("ledger-stalled") && text.contains("overdue"),
        "{text}"
    );

    // A cursor that is not on the stream is refused and changes nothing.
    let error = ledger
        .ack_revocations("ledger-stalled", "99999999999999-0")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::InvalidArgument), "{error}");
    // The third catches up; then all have applied it, and the trail says
    // so once.
    ledger
        .ack_revocations("ledger-stalled", &status.cursor)
        .await
        .unwrap();
    let output = env.cli_at(
        &url,
        CI_RUNNER,
        &["revocation", "status", "--grant", &svid.grant.grant_id],
    );
    let text = exited(&output, 0);
    assert!(text.contains("visible at 3/3 relying parties"), "{text}");
    let status = runner
        .revocation_status(&svid.grant.grant_id)
        .await
        .unwrap();
    assert!(status.all_applied);
    let trail = admin
        .audit_events(pb::QueryAuditRequest {
            kinds: vec!["revocation_applied".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(trail.events.len(), 1, "{:?}", trail.events);
    let event = &trail.events[0];
    assert_eq!(event.grant.as_deref(), Some(svid.grant.grant_id.as_str()));
    assert_eq!(
        event.details["relying_parties"].as_array().unwrap().len(),
        3
    );

    // Another subject may not ask; a grant nobody knows is NOT_FOUND.
    let error = ledger
        .revocation_status(&svid.grant.grant_id)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::PermissionDenied));
    let error = runner
        .revocation_status("00000000-0000-4000-8000-000000000000")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::NotFound));
}

//! Request-time policy through the real server: required justification
//! and ticket, allowed audiences, `max_active`, named groups and per-task
//! identities.

use jitid::client::{ClientError, SvidRequest};
use jitid::proto::v1::{self as pb, complete_task_request::Target as Complete};

use crate::support::svid::{check_jwt_svid, check_x509_svid};
use crate::support::{AGENT, CI_RUNNER, TestEnv};

fn denied(error: &ClientError, message: &str) {
    assert_eq!(error.code(), Some(tonic::Code::PermissionDenied), "{error}");
    assert!(
        error.to_string().contains(message),
        "expected {message:?} in {error}"
    );
}

#[tokio::test]
async fn required_fields_audiences_and_max_active() {
    let env = TestEnv::start().await;
    let runner = env.client_for(CI_RUNNER).await;
    let deploy = SvidRequest::entitlement("prod-deploy").task("deploy-1");

    let error = runner.fetch_x509_svid(&deploy).await.unwrap_err();
    denied(
        &error,
        "entitlement \"prod-deploy\" requires a justification",
    );
    let with_reason = deploy.clone().justification("ship payments 2.4");
    let error = runner.fetch_x509_svid(&with_reason).await.unwrap_err();
    denied(&error, "entitlement \"prod-deploy\" requires a ticket");
    assert_eq!(env.grants(), 0);

    let complete = with_reason.clone().ticket("CHG-1234");
    let first = runner.fetch_x509_svid(&complete).await.unwrap();
    // Group "release" admits the CI runner; high risk defaults to 5m.
    let ttl = first
        .grant
        .expires_at
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(ttl <= std::time::Duration::from_secs(300), "{ttl:?}");
    let record = runner.get_grant(&first.grant.grant_id).await.unwrap();
    assert_eq!(record.justification, "ship payments 2.4");

    // max_active = 1: a second concurrent grant is refused until the first ends.
    let error = runner.fetch_x509_svid(&complete).await.unwrap_err();
    denied(
        &error,
        "already holds 1 active grants of entitlement \"prod-deploy\" (max_active)",
    );
    runner
        .complete_task(Complete::GrantId(first.grant.grant_id.clone()))
        .await
        .unwrap();

    // Only the entitlement's audiences may be named.
    let error = runner
        .fetch_jwt_svid(
            &complete,
            &["deploy.example.org".to_owned(), "elsewhere".to_owned()],
        )
        .await
        .unwrap_err();
    denied(
        &error,
        "audience \"elsewhere\" is not allowed for entitlement \"prod-deploy\"",
    );
    runner
        .fetch_jwt_svid(&complete, &["deploy.example.org".to_owned()])
        .await
        .unwrap();
    assert_eq!(env.grants(), 2);

    // Not in the group: refused.
    let agent = env.client_for(AGENT).await;
    let error = agent.fetch_x509_svid(&complete).await.unwrap_err();
    denied(&error, "may not request entitlement \"prod-deploy\"");
}

#[tokio::test]
async fn per_task_identities() {
    let env = TestEnv::start().await;
    let agent = env.client_for(AGENT).await;
    let request = SvidRequest::entitlement("agent-task").task("research-17");
    let per_task = format!("{AGENT}/task/research-17");

    let svid = agent.fetch_x509_svid(&request).await.unwrap();
    check_x509_svid(&svid.chain, Some(&svid.key_pkcs8), &svid.bundle, &per_task);
    assert_eq!(svid.grant.spiffe_id, per_task);
    let jwt = agent
        .fetch_jwt_svid(&request, &["kb".to_owned()])
        .await
        .unwrap();
    let bundle = agent.fetch_bundle().await.unwrap();
    let (_, claims) = check_jwt_svid(&jwt.token, &bundle.spiffe_json, "kb", &per_task);
    assert_eq!(claims["sub"], per_task.as_str());

    let response = agent.verify_x509(&svid.chain).await.unwrap();
    assert_eq!(
        response.status,
        pb::VerifyStatus::Valid as i32,
        "{}",
        response.reason
    );
    assert_eq!(response.spiffe_id, per_task);

    // The grant still belongs to the attested agent, who may end it.
    let listed = agent
        .list_grants(pb::ListGrantsRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|grant| grant.summary.as_ref().unwrap().spiffe_id == AGENT)
    );
    let ended = agent
        .complete_task(Complete::TaskId("research-17".to_owned()))
        .await
        .unwrap();
    assert_eq!(ended.len(), 2);
    let response = agent.verify_x509(&svid.chain).await.unwrap();
    assert_eq!(response.status, pb::VerifyStatus::Revoked as i32);
}

//! Approvals, break-glass and context conditions through the real server:
//! pending grants, N-of-M approval with separation of duties, WatchGrant,
//! minting under an approved grant, pending expiry, break-glass reviews,
//! and Cedar conditions over change windows, tickets and labels.

use std::time::{Duration, SystemTime};

use jitid::ca::GrantExtension;
use jitid::client::{ClientError, SvidRequest};
use jitid::proto::v1::{self as pb, revoke_request::Target as Revoke};

use crate::support::svid::check_x509_svid;
use crate::support::{
    ADMIN, AGENT, CI_RUNNER, SECURITY_A, SECURITY_B, SRE_A, SRE_B, SRE_C, TestEnv,
};

fn refused(error: &ClientError, code: tonic::Code, message: &str) {
    assert_eq!(error.code(), Some(code), "{error}");
    assert!(
        error.to_string().contains(message),
        "expected {message:?} in {error}"
    );
}

#[tokio::test]
async fn n_of_m_approval_with_separation_of_duties() {
    let env = TestEnv::start().await;
    let requester = env.client_for(SRE_A).await;
    let migrate = SvidRequest::entitlement("db-migrate").task("migration-7");

    // Issuing straight away is refused: the entitlement needs approval.
    let error = requester.fetch_x509_svid(&migrate).await.unwrap_err();
    refused(
        &error,
        tonic::Code::FailedPrecondition,
        "entitlement \"db-migrate\" needs 2 approval(s)",
    );
    assert_eq!(env.grants(), 0);

    let pending = requester.request_grant(&migrate).await.unwrap();
    assert_eq!(pending.state(), pb::GrantState::Pending);
    let grant_id = pending.summary.as_ref().unwrap().grant_id.clone();
    let decision: serde_json::Value = serde_json::from_str(&pending.decision).unwrap();
    assert_eq!(decision["entitlement"], "db-migrate");
    assert_eq!(decision["risk"], "critical");
    assert_eq!(decision["groups"], serde_json::json!(["sre"]));
    assert!(
        decision["matched"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("approval: 2 of group:sre")),
        "{decision}"
    );

    // Nothing can be minted under a pending grant.
    let error = requester
        .fetch_x509_svid(&SvidRequest::under_grant(&grant_id))
        .await
        .unwrap_err();
    refused(
        &error,
        tonic::Code::FailedPrecondition,
        "is pending approval",
    );

    // Approvers find it in their queue; the requester and outsiders do not.
    let queue = |client: jitid::client::Client| async move {
        client
            .list_grants(pb::ListGrantsRequest {
                awaiting_my_approval: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|grant| grant.summary.unwrap().grant_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        queue(env.client_for(SRE_B).await).await,
        std::slice::from_ref(&grant_id)
    );
    assert!(queue(env.client_for(SRE_A).await).await.is_empty());
    assert!(queue(env.client_for(SECURITY_A).await).await.is_empty());

    // The requester waits on the grant stream.
    let waiter = {
        let client = env.client_for(SRE_A).await;
        let grant_id = grant_id.clone();
        tokio::spawn(async move { client.wait_for_grant(&grant_id).await })
    };

    // Separation of duties: the requester is an approver, but not of its own.
    let error = requester.approve(&grant_id, "").await.unwrap_err();
    refused(
        &error,
        tonic::Code::PermissionDenied,
        "may not approve or deny it (separation of duties)",
    );
    // Outside the approver groups, admins included.
    for outsider in [SECURITY_A, ADMIN] {
        let error = env
            .client_for(outsider)
            .await
            .approve(&grant_id, "")
            .await
            .unwrap_err();
        refused(
            &error,
            tonic::Code::PermissionDenied,
            "is not an approver of entitlement \"db-migrate\"",
        );
    }

    let bob = env.client_for(SRE_B).await;
    let after_one = bob.approve(&grant_id, "looks fine").await.unwrap();
    assert_eq!(after_one.state(), pb::GrantState::Pending);
    assert_eq!(after_one.approvals.len(), 1);
    let error = bob.approve(&grant_id, "").await.unwrap_err();
    refused(
        &error,
        tonic::Code::FailedPrecondition,
        "has already approved",
    );
    assert!(!waiter.is_finished(), "one approval of two is not enough");
    assert!(
        queue(env.client_for(SRE_B).await).await.is_empty(),
        "approved once"
    );
    assert_eq!(
        queue(env.client_for(SRE_C).await).await,
        std::slice::from_ref(&grant_id)
    );

    let active = env
        .client_for(SRE_C)
        .await
        .approve(&grant_id, "")
        .await
        .unwrap();
    assert_eq!(active.state(), pb::GrantState::Active);
    let approvers: Vec<&str> = active
        .approvals
        .iter()
        .map(|a| a.approver.as_str())
        .collect();
    assert_eq!(approvers, [SRE_B, SRE_C]);
    let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter wakes when the grant is approved")
        .unwrap()
        .unwrap();
    assert_eq!(woke.state(), pb::GrantState::Active);

    // Approved: the lifetime starts now (critical risk: 2 minutes).
    let expires = active.summary.as_ref().unwrap().expires_at.unwrap().seconds;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now + 100..=now + 121).contains(&expires),
        "{expires} {now}"
    );

    // Only the requester mints under it.
    let under = SvidRequest::under_grant(&grant_id);
    let error = bob.fetch_x509_svid(&under).await.unwrap_err();
    refused(
        &error,
        tonic::Code::PermissionDenied,
        "belongs to another subject",
    );
    let error = requester
        .fetch_x509_svid(&under.clone().task("other"))
        .await
        .unwrap_err();
    refused(
        &error,
        tonic::Code::InvalidArgument,
        "names an existing grant",
    );
    let svid = requester.fetch_x509_svid(&under).await.unwrap();
    check_x509_svid(&svid.chain, Some(&svid.key_pkcs8), &svid.bundle, SRE_A);
    assert_eq!(svid.grant.grant_id, grant_id);
    assert_eq!(svid.grant.task_id, "migration-7");
    let extension = GrantExtension::from_certificate(&svid.chain[0]).unwrap();
    assert_eq!(extension.actions, ["db:migrate", "db:read"]);
    assert!(!extension.break_glass);
    let jwt = requester
        .fetch_jwt_svid(&under, &["db.example.org".to_owned()])
        .await
        .unwrap();
    let verdict = requester
        .verify_jwt(&jwt.token, "db.example.org")
        .await
        .unwrap();
    assert_eq!(
        verdict.status(),
        pb::VerifyStatus::Valid,
        "{}",
        verdict.reason
    );
    assert_eq!(
        requester
            .get_grant(&grant_id)
            .await
            .unwrap()
            .credentials
            .len(),
        2
    );

    // A revoked grant mints nothing more, and its credentials are dead.
    requester
        .revoke(Revoke::GrantId(grant_id.clone()), "done early")
        .await
        .unwrap();
    let error = requester.fetch_x509_svid(&under).await.unwrap_err();
    refused(&error, tonic::Code::FailedPrecondition, "is revoked");
    let verdict = requester.verify_x509(&svid.chain).await.unwrap();
    assert_eq!(verdict.status(), pb::VerifyStatus::Revoked);

    // A denial ends a request; the requester hears it.
    let second = requester.request_grant(&migrate).await.unwrap();
    let second_id = second.summary.unwrap().grant_id;
    let denied = bob.deny(&second_id, "not during the freeze").await.unwrap();
    assert_eq!(denied.state(), pb::GrantState::Denied);
    assert_eq!(
        denied.end_reason,
        format!("denied by {SRE_B}: not during the freeze")
    );
    let heard = requester.wait_for_grant(&second_id).await.unwrap();
    assert_eq!(heard.state(), pb::GrantState::Denied);
    let error = env
        .client_for(SRE_C)
        .await
        .approve(&second_id, "")
        .await
        .unwrap_err();
    refused(
        &error,
        tonic::Code::FailedPrecondition,
        "is denied, not pending",
    );
}

#[tokio::test]
async fn a_pending_request_expires() {
    let env = TestEnv::start().await;
    let runner = env.client_for(CI_RUNNER).await;
    let pending = runner
        .request_grant(&SvidRequest::entitlement("quick-approval"))
        .await
        .unwrap();
    assert_eq!(pending.state(), pb::GrantState::Pending);
    let grant_id = pending.summary.unwrap().grant_id;
    // pending_ttl = "2s": nobody approves, and the request lapses.
    let last = tokio::time::timeout(Duration::from_secs(10), runner.wait_for_grant(&grant_id))
        .await
        .expect("the stream ends when the request expires")
        .unwrap();
    assert_eq!(last.state(), pb::GrantState::Expired);
    let error = env
        .client_for(SRE_A)
        .await
        .approve(&grant_id, "")
        .await
        .unwrap_err();
    refused(&error, tonic::Code::NotFound, "no live grant");
}

#[tokio::test]
async fn break_glass_is_issued_flagged_and_reviewed() {
    let env = TestEnv::start().await;
    let carol = env.client_for(SECURITY_A).await;
    let emergency = SvidRequest::entitlement("db-migrate")
        .task("incident-99")
        .break_glass();

    let error = carol.fetch_x509_svid(&emergency).await.unwrap_err();
    refused(
        &error,
        tonic::Code::PermissionDenied,
        "break-glass on entitlement \"db-migrate\" requires a justification",
    );
    let error = env
        .client_for(CI_RUNNER)
        .await
        .fetch_x509_svid(
            &SvidRequest::entitlement("ci-publish")
                .break_glass()
                .justification("x"),
        )
        .await
        .unwrap_err();
    refused(
        &error,
        tonic::Code::PermissionDenied,
        "does not allow break-glass",
    );
    let error = carol
        .fetch_x509_svid(
            &emergency
                .clone()
                .justification("INC-99: primary is down")
                .ttl(Duration::from_secs(180)),
        )
        .await
        .unwrap_err();
    refused(
        &error,
        tonic::Code::InvalidArgument,
        "exceeds the maximum of 2m",
    );
    assert_eq!(env.grants(), 0);

    // Issued at once, no approval, with the break-glass TTL.
    let emergency = emergency.justification("INC-99: primary is down");
    let svid = carol.fetch_x509_svid(&emergency).await.unwrap();
    check_x509_svid(&svid.chain, Some(&svid.key_pkcs8), &svid.bundle, SECURITY_A);
    assert!(
        GrantExtension::from_certificate(&svid.chain[0])
            .unwrap()
            .break_glass
    );
    let left = svid
        .grant
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(left <= Duration::from_secs(120), "{left:?}");
    let record = carol.get_grant(&svid.grant.grant_id).await.unwrap();
    assert!(record.break_glass);
    assert_eq!(record.state(), pb::GrantState::Active);
    let jwt = carol
        .fetch_jwt_svid(
            &SvidRequest::under_grant(&svid.grant.grant_id),
            &["db.example.org".to_owned()],
        )
        .await
        .unwrap();
    let payload = jwt.token.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["jitid_break_glass"], true);

    // A review is open; reviewers see it, others do not.
    let erin = env.client_for(SECURITY_B).await;
    let open = erin.list_reviews(false).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].grant_id, svid.grant.grant_id);
    assert_eq!(open[0].subject, SECURITY_A);
    assert_eq!(open[0].justification, "INC-99: primary is down");
    assert!(!open[0].acknowledged);
    let sre = env.client_for(SRE_B).await;
    assert!(sre.list_reviews(true).await.unwrap().is_empty());
    assert_eq!(
        env.client_for(ADMIN)
            .await
            .list_reviews(false)
            .await
            .unwrap()
            .len(),
        1
    );

    // Not by the one who used it, not by a non-reviewer, not without a comment.
    let error = carol
        .ack_review(&svid.grant.grant_id, "all good")
        .await
        .unwrap_err();
    refused(&error, tonic::Code::PermissionDenied, "may not review it");
    let error = sre
        .ack_review(&svid.grant.grant_id, "all good")
        .await
        .unwrap_err();
    refused(&error, tonic::Code::PermissionDenied, "does not review");
    let error = erin
        .ack_review(&svid.grant.grant_id, " ")
        .await
        .unwrap_err();
    refused(&error, tonic::Code::InvalidArgument, "comment: is required");

    // Unreviewed uses stay listed, even after the grant ends.
    carol
        .revoke(
            Revoke::GrantId(svid.grant.grant_id.clone()),
            "incident over",
        )
        .await
        .unwrap();
    assert_eq!(erin.list_reviews(false).await.unwrap().len(), 1);

    let acked = erin
        .ack_review(
            &svid.grant.grant_id,
            "failover was needed; runbook followed",
        )
        .await
        .unwrap();
    assert!(acked.acknowledged);
    assert_eq!(acked.acknowledged_by, SECURITY_B);
    assert!(erin.list_reviews(false).await.unwrap().is_empty());
    let all = erin.list_reviews(true).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].comment, "failover was needed; runbook followed");
    let error = erin
        .ack_review(&svid.grant.grant_id, "again")
        .await
        .unwrap_err();
    refused(
        &error,
        tonic::Code::FailedPrecondition,
        "already acknowledged",
    );
}

/// Windows built around today (UTC), so one is open now and one is not.
fn windows_around_now() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let today = ((now / 86_400 + 3) % 7) as usize;
    let others: Vec<String> = (0..7)
        .filter(|&d| d != today)
        .map(|d| format!("\"{}\"", days[d]))
        .collect();
    format!(
        r#"
[windows.today]
days = ["{}"]
start = "00:00"
end = "24:00"

[windows.other_days]
days = [{}]
start = "00:00"
end = "24:00"

[[entitlement]]
name = "staging-deploy"
actions = ["deploy:staging", "deploy:canary"]
requesters = ["group:release"]
conditions = """
@id("in-window")
@reason("inside the today window")
permit (principal in Group::"release", action, resource) when {{ context.windows.today }};

@id("not-from-forks")
@reason("builds from forks may not deploy")
forbid (principal, action, resource) when {{ context.labels has repo && context.labels.repo like "fork/*" }};

@id("no-canary-in-test")
forbid (principal, action == Action::"deploy:canary", resource) when {{ context.environment == "test" }};
"""

[[entitlement]]
name = "weekend-deploy"
actions = ["deploy:weekend"]
requesters = ["group:release"]
conditions = """
@id("other-days-only")
@reason("only inside the other_days window")
permit (principal, action, resource) when {{ context.windows.other_days }};
"""
"#,
        days[today],
        others.join(", ")
    )
}

#[tokio::test]
async fn conditions_see_windows_tickets_labels_and_environment() {
    // Close to midnight the windows would flip under the test.
    let seconds_into_day = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 86_400;
    if seconds_into_day > 86_400 - 15 {
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    let env = TestEnv::start_with_catalogue(&windows_around_now()).await;
    let runner = env.client_for(CI_RUNNER).await;

    // Inside the window: auto-approved, and the grant names the policy.
    let staging = SvidRequest::entitlement("staging-deploy").with_actions(&["deploy:staging"]);
    let svid = runner.fetch_x509_svid(&staging).await.unwrap();
    let record = runner.get_grant(&svid.grant.grant_id).await.unwrap();
    let decision: serde_json::Value = serde_json::from_str(&record.decision).unwrap();
    assert_eq!(decision["windows"]["today"], true);
    assert_eq!(decision["windows"]["other_days"], false);
    assert_eq!(decision["context"]["environment"], "test");
    assert!(
        decision["matched"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("conditions: in-window")),
        "{decision}"
    );

    // Outside a window: denied with the reason.
    let error = runner
        .fetch_x509_svid(&SvidRequest::entitlement("weekend-deploy"))
        .await
        .unwrap_err();
    refused(
        &error,
        tonic::Code::PermissionDenied,
        "conditions of entitlement \"weekend-deploy\" do not permit \"deploy:weekend\" now: needs other-days-only: only inside the other_days window",
    );

    // A forbid on a label, and one on an action in this environment.
    let error = runner
        .fetch_x509_svid(&staging.clone().label("repo", "fork/evil"))
        .await
        .unwrap_err();
    refused(
        &error,
        tonic::Code::PermissionDenied,
        "forbid it: not-from-forks: builds from forks may not deploy",
    );
    runner
        .fetch_x509_svid(&staging.clone().label("repo", "main/payments"))
        .await
        .unwrap();
    let error = runner
        .fetch_x509_svid(&SvidRequest::entitlement("staging-deploy"))
        .await
        .unwrap_err();
    refused(
        &error,
        tonic::Code::PermissionDenied,
        "forbid it: no-canary-in-test",
    );

    // Principal conditions: an agent is not in group release.
    let error = env
        .client_for(AGENT)
        .await
        .fetch_x509_svid(&staging)
        .await
        .unwrap_err();
    refused(&error, tonic::Code::PermissionDenied, "may not request");

    // Malformed labels are refused before policy runs.
    let error = runner
        .fetch_x509_svid(&staging.label("bad key", "x"))
        .await
        .unwrap_err();
    refused(
        &error,
        tonic::Code::InvalidArgument,
        "labels: key \"bad key\"",
    );
    assert_eq!(env.grants(), 2);
}

#[tokio::test]
async fn break_glass_needs_a_real_reason_and_cannot_outrun_its_reviews() {
    use jitid::audit::{AuditLog, EventKind};
    let env = TestEnv::start().await;
    let carol = env.client_for(SECURITY_A).await;
    let emergency = SvidRequest::entitlement("db-migrate").break_glass();

    // Trivial text is not a reason.
    let error = carol
        .fetch_x509_svid(&emergency.clone().justification("fix"))
        .await
        .unwrap_err();
    refused(
        &error,
        tonic::Code::PermissionDenied,
        "at least 20 characters",
    );

    // Three uses may await review at once (the default); the fourth waits
    // for a reviewer.
    let mut grants = Vec::new();
    for n in 1..=3 {
        let svid = carol
            .fetch_x509_svid(
                &emergency
                    .clone()
                    .justification(&format!("INC-{n}: the primary is down"))
                    .task(&format!("incident-{n}")),
            )
            .await
            .unwrap();
        grants.push(svid.grant.grant_id);
    }
    let fourth = emergency
        .clone()
        .justification("INC-4: the primary is down again")
        .task("incident-4");
    let error = carol.fetch_x509_svid(&fourth).await.unwrap_err();
    refused(
        &error,
        tonic::Code::PermissionDenied,
        "3 break-glass uses of spiffe://example.org/security/carol await review",
    );

    // Repeats are flagged for the reviewer in the trail.
    let events = env.audit.read(0, 10_000).await.unwrap();
    let flagged: Vec<Option<u64>> = events
        .iter()
        .filter(|event| event.kind == EventKind::BreakGlass)
        .map(|event| event.details["unreviewed_before"].as_u64())
        .collect();
    assert_eq!(flagged, [None, Some(1), Some(2)]);

    // Once a reviewer acknowledges one, the next use goes through.
    env.client_for(SECURITY_B)
        .await
        .ack_review(&grants[0], "failover needed; runbook followed")
        .await
        .unwrap();
    carol.fetch_x509_svid(&fourth).await.unwrap();
}

#[tokio::test]
async fn approvals_and_separation_of_duties_count_principals_not_identities() {
    // Alice has two identities; so does the on-call team "dba".
    let env = TestEnv::start_with_catalogue(
        "[principals]\nalice = [\"spiffe://example.org/sre/alice\", \"spiffe://example.org/sre/alice-laptop\"]\ndba = [\"spiffe://example.org/ci/dba/*\", \"spiffe://example.org/sre/dba/*\"]\n",
    )
    .await;
    let requester = env.client_for(SRE_C).await;
    let pending = requester
        .request_grant(&SvidRequest::entitlement("db-migrate").task("m-1"))
        .await
        .unwrap();
    let grant_id = pending.summary.unwrap().grant_id;
    env.client_for(SRE_A)
        .await
        .approve(&grant_id, "looks right")
        .await
        .unwrap();
    // Alice's other identity is still Alice: not a second approval.
    let laptop = env
        .client_for("spiffe://example.org/sre/alice-laptop")
        .await;
    let error = laptop.approve(&grant_id, "again").await.unwrap_err();
    refused(
        &error,
        tonic::Code::FailedPrecondition,
        "principal:alice has already approved grant",
    );
    assert!(
        laptop
            .list_grants(pb::ListGrantsRequest {
                awaiting_my_approval: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty(),
        "not offered to Alice again"
    );
    // Someone else completes the two approvals.
    let approved = env
        .client_for(SRE_B)
        .await
        .approve(&grant_id, "ok")
        .await
        .unwrap();
    assert_eq!(approved.state(), pb::GrantState::Active);

    // A request made by one identity of the dba team cannot be approved by
    // another of its identities.
    let pending = env
        .client_for("spiffe://example.org/ci/dba/runner")
        .await
        .request_grant(&SvidRequest::entitlement("db-migrate").task("m-2"))
        .await
        .unwrap();
    let error = env
        .client_for("spiffe://example.org/sre/dba/oncall")
        .await
        .approve(&pending.summary.unwrap().grant_id, "mine")
        .await
        .unwrap_err();
    refused(
        &error,
        tonic::Code::PermissionDenied,
        "acts for principal:dba",
    );
}

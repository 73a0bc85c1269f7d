//! Unit tests of what a caller attested by an OIDC token may do, on the
//! manual clock: one grant per token (a replay is refused with nothing
//! written), never outliving the token, only under its own grant and
//! task, and nothing an admin does.

use std::collections::BTreeMap;

use super::*;
use crate::issuer::{CompleteTarget, OidcEvidence, Outcome, RevokeTarget};

/// A caller attested by token `token_id`, good for `lifetime` from `now`.
fn token_caller(
    id: &str,
    token_id: &str,
    now: SystemTime,
    lifetime: Duration,
    task: Option<&str>,
) -> Caller {
    Caller {
        spiffe_id: SpiffeId::new(id).unwrap(),
        source: None,
        certificate_thumbprint: None,
        attestation: Attestation::Oidc(OidcEvidence {
            provider: "github".to_owned(),
            token_id: token_id.to_owned(),
            expires_at: now + lifetime,
            task: task.map(str::to_owned),
            claims: BTreeMap::from([("ref".to_owned(), "refs/heads/main".into())]),
        }),
    }
}

fn with_task(name: &str, task: &str) -> GrantRequest {
    request(GrantFields {
        entitlement: name.to_owned(),
        task_id: task.to_owned(),
        ..GrantFields::default()
    })
}

fn expect<T: std::fmt::Debug>(result: Result<T, IssueError>, says: &str) -> IssueError {
    let error = result.unwrap_err();
    assert!(error.to_string().contains(says), "{says:?} not in {error}");
    error
}

#[tokio::test]
async fn a_token_makes_one_grant_and_a_replay_is_refused_with_nothing_written() {
    let env = Env::new();
    let now = env.clock.now();
    let job = token_caller(RUNNER, "jti-1", now, 10 * MINUTE, None);
    let issued = env
        .issuer
        .issue_x509(&job, &entitlement("ci-publish"), &env.csr)
        .await
        .unwrap();
    for replay in [
        env.issuer
            .issue_x509(&job, &entitlement("ci-publish"), &env.csr)
            .await
            .map(|_| ()),
        env.issuer
            .issue_jwt(&job, &entitlement("ci-publish"), &["aud".to_owned()], false)
            .await
            .map(|_| ()),
        env.issuer
            .request_grant(&job, &entitlement("ci-publish"))
            .await
            .map(|_| ()),
    ] {
        let error = expect(replay, "OIDC token already used");
        assert!(error.is_unauthenticated(), "{error:?}");
    }
    let grants = env.grants(RUNNER).await;
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0].id, issued.grant.id);
    // A replay is audited as a refused request.
    let refusals = env
        .events()
        .await
        .iter()
        .filter(|event| {
            event.kind == EventKind::Decision
                && event
                    .details
                    .to_string()
                    .contains("OIDC token already used")
        })
        .count();
    assert_eq!(refusals, 3);
    // Another token of the same job is another grant.
    let rerun = token_caller(RUNNER, "jti-2", now, 10 * MINUTE, None);
    env.issuer
        .issue_x509(&rerun, &entitlement("ci-publish"), &env.csr)
        .await
        .unwrap();
    assert_eq!(env.grants(RUNNER).await.len(), 2);
}

#[tokio::test]
async fn a_grant_attested_by_a_token_never_outlives_it() {
    let env = Env::new();
    let now = env.clock.now();
    // ci-publish grants 5 minutes by default; the token has 90 seconds.
    let job = token_caller(RUNNER, "jti-1", now, Duration::from_secs(90), None);
    let token_expiry = now + Duration::from_secs(90);
    let issued = env
        .issuer
        .issue_x509(&job, &entitlement("ci-publish"), &env.csr)
        .await
        .unwrap();
    assert!(issued.grant.expires_at <= token_expiry);
    let (grant, credentials) = env
        .issuer
        .get_grant(&job, &issued.grant.id.to_string())
        .await
        .unwrap();
    assert_eq!(grant.expires_at, token_expiry);
    assert!(grant.ttl <= Duration::from_secs(90));
    assert!(credentials.iter().all(|c| c.expires_at <= token_expiry));
    // Credentials under it, later, are bounded by it too.
    env.clock.advance(MINUTE);
    let jwt = env
        .issuer
        .issue_jwt(&job, &under(&grant, None), &["aud".to_owned()], false)
        .await
        .unwrap();
    assert_eq!(jwt.grant.expires_at, token_expiry);
    expect(
        env.issuer
            .issue_x509(&job, &under(&grant, Some(MINUTE)), &env.csr)
            .await,
        "exceeds what is left of grant",
    );
    // A token longer-lived than the entitlement changes nothing.
    let long = token_caller(RUNNER, "jti-long", env.clock.now(), 60 * MINUTE, None);
    let issued = env
        .issuer
        .issue_x509(&long, &entitlement("ci-publish"), &env.csr)
        .await
        .unwrap();
    assert_eq!(
        issued.grant.expires_at,
        crate::clock::whole_seconds(env.clock.now() + 5 * MINUTE)
    );
}

#[tokio::test]
async fn a_token_uses_only_the_grant_and_task_it_made() {
    let env = Env::new();
    let now = env.clock.now();
    let first = token_caller(RUNNER, "jti-1", now, 10 * MINUTE, None);
    let second = token_caller(RUNNER, "jti-2", now, 10 * MINUTE, None);
    let mine = env
        .issuer
        .issue_x509(&first, &with_task("ci-publish", "job-1"), &env.csr)
        .await
        .unwrap()
        .grant;
    let theirs = env
        .issuer
        .issue_x509(&second, &with_task("ci-publish", "job-2"), &env.csr)
        .await
        .unwrap()
        .grant;
    // The same SPIFFE ID, so the store would let it: the token does not.
    expect(
        env.issuer
            .issue_x509(&first, &under(&theirs, None), &env.csr)
            .await,
        "may use only the grant its token made",
    );
    let error = expect(
        env.issuer
            .complete(
                &first,
                &CompleteTarget::Grant(theirs.id.to_string()),
                Outcome::Completed,
            )
            .await,
        "may use only the grant its token made",
    );
    assert!(error.is_permission_denied());
    expect(
        env.issuer
            .complete(
                &first,
                &CompleteTarget::Task("job-2".to_owned()),
                Outcome::Completed,
            )
            .await,
        "may end only the task of the grant its token made (job-1), not job-2",
    );
    // A token that made nothing may not name any grant.
    let fresh = token_caller(RUNNER, "jti-3", now, 10 * MINUTE, None);
    expect(
        env.issuer
            .issue_x509(&fresh, &under(&mine, None), &env.csr)
            .await,
        "has made no grant yet",
    );
    // Its own: fine, and completing its task ends only its grant.
    env.issuer
        .issue_x509(&first, &under(&mine, None), &env.csr)
        .await
        .unwrap();
    let ended = env
        .issuer
        .complete(
            &first,
            &CompleteTarget::Task("job-1".to_owned()),
            Outcome::Completed,
        )
        .await
        .unwrap();
    assert_eq!(ended, [mine.id]);
    let (theirs_now, _) = env
        .issuer
        .get_grant(&second, &theirs.id.to_string())
        .await
        .unwrap();
    assert_eq!(theirs_now.state, GrantState::Active);
}

#[tokio::test]
async fn a_token_delegates_only_from_its_grant_and_mints_under_the_child() {
    let env = Env::new();
    let now = env.clock.now();
    let agent = token_caller(AGENT, "jti-a", now, 10 * MINUTE, None);
    let other = token_caller(AGENT, "jti-b", now, 10 * MINUTE, None);
    let parent = env
        .issuer
        .request_grant(&agent, &entitlement("agent-research"))
        .await
        .unwrap();
    let foreign = env
        .issuer
        .request_grant(&other, &entitlement("agent-research"))
        .await
        .unwrap();
    let spec = |parent: &Grant| {
        DelegationRequest::parse(
            &parent.id.to_string(),
            "summarise".to_owned(),
            &["kb:read".to_owned()],
            None,
            String::new(),
        )
        .unwrap()
    };
    expect(
        env.issuer.delegate(&agent, &spec(&foreign)).await,
        "may use only the grant its token made",
    );
    let child = env.issuer.delegate(&agent, &spec(&parent)).await.unwrap();
    assert!(child.expires_at <= now + 10 * MINUTE);
    env.issuer
        .issue_jwt(&agent, &under(&child, None), &["aud".to_owned()], false)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_providers_task_is_the_grants_and_another_is_refused_leaving_the_token_unused() {
    let env = Env::new();
    let now = env.clock.now();
    let job = token_caller(RUNNER, "jti-1", now, 10 * MINUTE, Some("4711-1"));
    let error = expect(
        env.issuer
            .issue_x509(&job, &with_task("ci-publish", "other"), &env.csr)
            .await,
        "task_id other: a caller attested by an OIDC token works on the task its token names (4711-1)",
    );
    assert!(error.is_permission_denied());
    // Refused by policy: still unused too.
    expect(
        env.issuer
            .issue_x509(&job, &entitlement("agent-research"), &env.csr)
            .await,
        "may not request entitlement",
    );
    assert!(env.grants(RUNNER).await.is_empty());
    let issued = env
        .issuer
        .issue_x509(&job, &entitlement("ci-publish"), &env.csr)
        .await
        .unwrap();
    assert_eq!(issued.grant.task_id.as_str(), "4711-1");
    let again = token_caller(RUNNER, "jti-2", now, 10 * MINUTE, Some("4711-2"));
    let issued = env
        .issuer
        .issue_x509(&again, &with_task("ci-publish", "4711-2"), &env.csr)
        .await
        .unwrap();
    assert_eq!(issued.grant.task_id.as_str(), "4711-2");
}

#[tokio::test]
async fn a_token_caller_is_never_an_admin_and_cannot_wait_for_approval() {
    let env = Env::new();
    let now = env.clock.now();
    // A token whose template made an admin-looking ID.
    let ops = token_caller(
        "spiffe://example.org/ops/admin",
        "jti-ops",
        now,
        10 * MINUTE,
        None,
    );
    let runner = caller(RUNNER);
    let grant = env
        .issuer
        .request_grant(&runner, &entitlement("ci-publish"))
        .await
        .unwrap();
    let id = grant.id.to_string();
    expect(
        env.issuer
            .revoke(&ops, &RevokeTarget::Grant(id.clone()), "")
            .await,
        "a caller attested by an OIDC token may not revoke",
    );
    assert!(matches!(
        env.issuer.audit_trail(&ops),
        Err(IssueError::Forbidden(_))
    ));
    expect(env.issuer.reviews(&ops, true).await, "may not review");
    expect(env.issuer.awaiting_approval(&ops).await, "may not approve");
    expect(env.issuer.get_grant(&ops, &id).await, "");
    let listed = env
        .issuer
        .list_grants(
            &ops,
            &GrantFilter {
                subject: Some(RUNNER.to_owned()),
                ..GrantFilter::default()
            },
        )
        .await;
    assert!(listed.is_err() || listed.is_ok_and(|grants| grants.is_empty()));

    let job = token_caller(RUNNER, "jti-1", now, 10 * MINUTE, None);
    let pending = env
        .issuer
        .request_grant(&runner, &entitlement("db-migrate"))
        .await
        .unwrap();
    expect(
        env.issuer
            .approve(&job, &pending.id.to_string(), "ok")
            .await,
        "may not approve or deny",
    );
    let error = expect(
        env.issuer
            .request_grant(&job, &entitlement("db-migrate"))
            .await,
        "needs approval, and a grant attested by an OIDC token cannot wait for it",
    );
    assert!(error.is_failed_precondition());
    // Break-glass is at once, so it is allowed, and bounded by the token.
    let issued = env
        .issuer
        .issue_x509(
            &job,
            &break_glass("INC-9: the primary database is down"),
            &env.csr,
        )
        .await
        .unwrap();
    assert!(issued.grant.expires_at <= now + 10 * MINUTE);
}

//! Unit tests of the use cases on a manual clock, the memory store and the
//! memory trail: the time rules without real waits, and audit before
//! effect (a trail that refuses leaves nothing active or listed).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::*;
use crate::audit::log::AuditLogError;
use crate::audit::upkeep::{Expiring, SignedCheckpoint};
use crate::audit::{
    AppendOutcome, AuditEvent, AuditMode, Chained, EventKind, Head, MemoryAuditLog,
};
use crate::clock::ManualClock;
use crate::config::Config;
use crate::grant::GrantState;
use crate::spiffe_id::SpiffeId;
use crate::store::MemoryStore;

#[cfg(test)]
mod oidc;

const RUNNER: &str = "spiffe://example.org/ci/runner-1";
const AGENT: &str = "spiffe://example.org/agents/planner";
const SRE_A: &str = "spiffe://example.org/sre/alice";
const SRE_B: &str = "spiffe://example.org/sre/bob";
const SECURITY: &str = "spiffe://example.org/security/carol";

const CONFIG: &str = r#"
trust_domain = "example.org"
admins = ["spiffe://example.org/ops/*"]
[groups]
release = ["spiffe://example.org/ci/*"]
sre = ["spiffe://example.org/sre/*"]
security = ["spiffe://example.org/security/*"]
[ca]
dir = "ca"

[[entitlement]]
name = "ci-publish"
actions = ["read:source", "publish:artifacts"]
requesters = ["spiffe://example.org/ci/*"]
default_ttl = "5m"
max_ttl = "10m"

[[entitlement]]
name = "db-migrate"
risk = "critical"
actions = ["db:migrate", "db:read"]
requesters = ["group:release"]
approvers = ["group:sre"]
min_approvals = 2
pending_ttl = "2m"
break_glass = { max_ttl = "2m", reviewers = ["group:security"] }

[[entitlement]]
name = "agent-research"
actions = ["kb:read", "tool:search"]
requesters = ["spiffe://example.org/agents/planner"]
max_ttl = "15m"
delegation_depth = 2
"#;

/// An audit trail that can be told to refuse every append.
#[derive(Debug, Default)]
struct Trail {
    inner: MemoryAuditLog,
    refusing: AtomicBool,
}

#[async_trait]
impl AuditLog for Trail {
    async fn head(&self) -> Result<Head, AuditLogError> {
        self.inner.head().await
    }

    async fn append(
        &self,
        expected: &Head,
        chained: &Chained,
    ) -> Result<AppendOutcome, AuditLogError> {
        if self.refusing.load(Ordering::SeqCst) {
            return Err(AuditLogError::Unavailable("the test trail refuses".into()));
        }
        self.inner.append(expected, chained).await
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, AuditLogError> {
        self.inner.read(after, limit).await
    }

    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<Expiring>, AuditLogError> {
        self.inner.due(now, limit).await
    }

    async fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditLogError> {
        self.inner.checkpoint().await
    }

    async fn trim(&self, checkpoint: &SignedCheckpoint) -> Result<(), AuditLogError> {
        self.inner.trim(checkpoint).await
    }

    async fn lease(&self, holder: &str, ttl: Duration) -> Result<bool, AuditLogError> {
        self.inner.lease(holder, ttl).await
    }
}

struct Env {
    _dir: tempfile::TempDir,
    issuer: Issuer,
    clock: Arc<ManualClock>,
    trail: Arc<Trail>,
    csr: Vec<u8>,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let config = Config::parse(CONFIG, &dir.path().join("jitid.toml"), dir.path()).unwrap();
        let paths = crate::ca::init(
            &dir.path().join("ca"),
            &config.trust_domain,
            now,
            &crate::ca::InitOptions {
                root_ttl: Duration::from_secs(48 * 3600),
                signing_ttl: Duration::from_secs(24 * 3600),
            },
        )
        .unwrap();
        let authority = Arc::new(Authority::load(&paths, &config.trust_domain, now).unwrap());
        let clock = Arc::new(ManualClock::new(now));
        let store = Arc::new(MemoryStore::new(clock.clone()));
        let trail = Arc::new(Trail::default());
        let issuer = Issuer::new(authority, config.catalogue.clone(), store, clock.clone())
            .with_admins(config.admins)
            .with_auditor(Auditor::start(
                trail.clone(),
                None,
                AuditMode::FailClosed,
                None,
            ));
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .der()
            .to_vec();
        Self {
            _dir: dir,
            issuer,
            clock,
            trail,
            csr,
        }
    }

    fn refuse(&self, refusing: bool) {
        self.trail.refusing.store(refusing, Ordering::SeqCst);
    }

    async fn events(&self) -> Vec<AuditEvent> {
        self.trail.inner.read(0, 10_000).await.unwrap()
    }

    async fn grants(&self, who: &str) -> Vec<Grant> {
        self.issuer
            .list_grants(&caller(who), &GrantFilter::default())
            .await
            .unwrap()
    }
}

fn caller(id: &str) -> Caller {
    Caller {
        spiffe_id: SpiffeId::new(id).unwrap(),
        source: None,
        certificate_thumbprint: Some("thumb".to_owned()),
        attestation: crate::issuer::Attestation::Identity(crate::issuer::IdentityEvidence {
            serial: "01".to_owned(),
            not_before: std::time::SystemTime::UNIX_EPOCH,
            not_after: std::time::SystemTime::UNIX_EPOCH
                + std::time::Duration::from_secs(4_000_000_000),
        }),
    }
}

fn request(fields: GrantFields) -> GrantRequest {
    GrantRequest::parse(fields).unwrap()
}

fn entitlement(name: &str) -> GrantRequest {
    request(GrantFields {
        entitlement: name.to_owned(),
        ..GrantFields::default()
    })
}

/// A break-glass request for `db-migrate`.
fn break_glass(justification: &str) -> GrantRequest {
    request(GrantFields {
        entitlement: "db-migrate".to_owned(),
        break_glass: true,
        justification: justification.to_owned(),
        ..GrantFields::default()
    })
}

fn under(grant: &Grant, ttl: Option<Duration>) -> GrantRequest {
    request(GrantFields {
        grant_id: grant.id.to_string(),
        ttl,
        ..GrantFields::default()
    })
}

fn assert_audit_refused<T: std::fmt::Debug>(result: Result<T, IssueError>) {
    match result {
        Err(IssueError::Audit(_)) => {}
        other => panic!("expected the trail's refusal, got {other:?}"),
    }
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_refused_trail_leaves_no_new_grant_behind() {
    let env = Env::new();
    let runner = caller(RUNNER);
    env.refuse(true);
    assert_audit_refused(
        env.issuer
            .issue_x509(&runner, &entitlement("ci-publish"), &env.csr)
            .await,
    );
    assert_audit_refused(
        env.issuer
            .issue_jwt(
                &runner,
                &entitlement("ci-publish"),
                &["aud".to_owned()],
                false,
            )
            .await,
    );
    assert_audit_refused(
        env.issuer
            .request_grant(&runner, &entitlement("ci-publish"))
            .await,
    );
    assert_audit_refused(
        env.issuer
            .request_grant(&runner, &entitlement("db-migrate"))
            .await,
    );
    let break_glass = break_glass("INC-1: the primary database is down");
    assert_audit_refused(env.issuer.issue_x509(&runner, &break_glass, &env.csr).await);
    assert!(env.grants(RUNNER).await.is_empty());
    let admin = caller("spiffe://example.org/ops/admin");
    assert!(env.issuer.reviews(&admin, true).await.unwrap().is_empty());
    assert!(
        env.issuer
            .awaiting_approval(&caller(SRE_A))
            .await
            .unwrap()
            .is_empty()
    );
    // With the trail back, the same requests go through, and everything
    // kept has its events.
    env.refuse(false);
    env.issuer
        .issue_x509(&runner, &break_glass, &env.csr)
        .await
        .unwrap();
    assert_eq!(env.grants(RUNNER).await.len(), 1);
    assert_eq!(env.issuer.reviews(&admin, true).await.unwrap().len(), 1);
    let kinds: Vec<EventKind> = env.events().await.iter().map(|event| event.kind).collect();
    assert!(kinds.contains(&EventKind::BreakGlass), "{kinds:?}");
    assert!(kinds.contains(&EventKind::CredentialIssued), "{kinds:?}");
}

#[tokio::test]
async fn a_refused_trail_leaves_no_credential_under_an_existing_grant() {
    let env = Env::new();
    let runner = caller(RUNNER);
    let grant = env
        .issuer
        .request_grant(&runner, &entitlement("ci-publish"))
        .await
        .unwrap();
    env.refuse(true);
    assert_audit_refused(
        env.issuer
            .issue_x509(&runner, &under(&grant, None), &env.csr)
            .await,
    );
    env.refuse(false);
    let (_, credentials) = env
        .issuer
        .get_grant(&runner, &grant.id.to_string())
        .await
        .unwrap();
    assert!(
        credentials.iter().all(|credential| credential.revoked),
        "{credentials:?}"
    );
}

#[tokio::test]
async fn a_refused_trail_undoes_approvals_denials_reviews_and_delegations() {
    let env = Env::new();
    let runner = caller(RUNNER);
    let pending = env
        .issuer
        .request_grant(&runner, &entitlement("db-migrate"))
        .await
        .unwrap();
    let id = pending.id.to_string();
    env.refuse(true);
    assert_audit_refused(env.issuer.approve(&caller(SRE_A), &id, "ok").await);
    assert_audit_refused(env.issuer.deny(&caller(SRE_B), &id, "no").await);
    env.refuse(false);
    let (now, _) = env.issuer.get_grant(&runner, &id).await.unwrap();
    assert_eq!(now, pending, "the pending grant is as it was");

    // A review's acknowledgement.
    let break_glass = break_glass("INC-2: the primary database is down");
    let issued = env
        .issuer
        .issue_x509(&runner, &break_glass, &env.csr)
        .await
        .unwrap();
    let reviewer = caller(SECURITY);
    env.refuse(true);
    assert_audit_refused(
        env.issuer
            .ack_review(&reviewer, &issued.grant.id.to_string(), "looked fine")
            .await,
    );
    env.refuse(false);
    let open = env.issuer.reviews(&reviewer, false).await.unwrap();
    assert_eq!(open.len(), 1, "the review is open again");
    env.issuer
        .ack_review(&reviewer, &issued.grant.id.to_string(), "looked fine")
        .await
        .unwrap();

    // A delegation.
    let agent = caller(AGENT);
    let parent = env
        .issuer
        .request_grant(&agent, &entitlement("agent-research"))
        .await
        .unwrap();
    let delegation = DelegationRequest::parse(
        &parent.id.to_string(),
        "search".to_owned(),
        &["tool:search".to_owned()],
        None,
        String::new(),
    )
    .unwrap();
    env.refuse(true);
    assert_audit_refused(env.issuer.delegate(&agent, &delegation).await);
    env.refuse(false);
    assert_eq!(env.grants(AGENT).await, vec![parent]);
}

#[tokio::test]
async fn refused_requests_are_audited_but_malformed_ones_never_reach_the_trail() {
    let env = Env::new();
    let runner = caller(RUNNER);
    let error = env
        .issuer
        .issue_x509(&runner, &entitlement("nope"), &env.csr)
        .await
        .unwrap_err();
    assert!(error.is_permission_denied(), "{error}");
    let events = env.events().await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].kind, EventKind::Decision);
    // A 60 KB justification is refused where the request is parsed.
    let oversized = GrantRequest::parse(GrantFields {
        entitlement: "ci-publish".to_owned(),
        justification: "x".repeat(60 * 1024),
        ..GrantFields::default()
    });
    assert!(oversized.is_err());
    // A CSR that is not one is refused before policy or the trail.
    let error = env
        .issuer
        .issue_x509(&runner, &entitlement("ci-publish"), b"not a csr")
        .await
        .unwrap_err();
    assert!(error.is_invalid_argument(), "{error}");
    assert_eq!(env.events().await.len(), 2);
}

#[tokio::test]
async fn a_credential_under_a_grant_never_outlives_it() {
    let env = Env::new();
    let runner = caller(RUNNER);
    let grant = env
        .issuer
        .request_grant(&runner, &entitlement("ci-publish"))
        .await
        .unwrap();
    assert_eq!(
        grant.expires_at,
        crate::clock::whole_seconds(env.clock.now() + 5 * MINUTE),
        "the entitlement's default TTL"
    );
    env.clock.advance(4 * MINUTE);
    // Two minutes asked, one left: refused, never shortened.
    let error = env
        .issuer
        .issue_x509(&runner, &under(&grant, Some(2 * MINUTE)), &env.csr)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("ttl: 2m exceeds what is left of grant"),
        "{error}"
    );
    // Nothing asked: the credential ends with the grant.
    let issued = env
        .issuer
        .issue_jwt(&runner, &under(&grant, None), &["aud".to_owned()], false)
        .await
        .unwrap();
    assert_eq!(issued.grant.expires_at, grant.expires_at);
    // Past its end the grant is gone.
    env.clock.advance(2 * MINUTE);
    let error = env
        .issuer
        .issue_x509(&runner, &under(&grant, None), &env.csr)
        .await
        .unwrap_err();
    assert!(error.is_not_found(), "{error}");
}

#[tokio::test]
async fn a_pending_grant_lapses_and_an_approved_one_runs_from_its_approval() {
    let env = Env::new();
    let runner = caller(RUNNER);
    let first = env
        .issuer
        .request_grant(&runner, &entitlement("db-migrate"))
        .await
        .unwrap();
    assert_eq!(first.state, GrantState::Pending);
    // pending_ttl = 2m: nobody approves in time.
    env.clock.advance(2 * MINUTE + Duration::from_secs(1));
    let error = env
        .issuer
        .approve(&caller(SRE_A), &first.id.to_string(), "")
        .await
        .unwrap_err();
    assert!(error.is_not_found(), "{error}");

    let second = env
        .issuer
        .request_grant(&runner, &entitlement("db-migrate"))
        .await
        .unwrap();
    let id = second.id.to_string();
    env.clock.advance(MINUTE);
    let once = env.issuer.approve(&caller(SRE_A), &id, "").await.unwrap();
    assert_eq!(once.state, GrantState::Pending, "two approvals are needed");
    // The requester may not approve its own request, and an approver only
    // once.
    assert!(
        env.issuer
            .approve(&runner, &id, "")
            .await
            .unwrap_err()
            .is_permission_denied()
    );
    assert!(
        env.issuer
            .approve(&caller(SRE_A), &id, "")
            .await
            .unwrap_err()
            .is_failed_precondition()
    );
    env.clock.advance(Duration::from_secs(30));
    let approved = env.issuer.approve(&caller(SRE_B), &id, "").await.unwrap();
    assert_eq!(approved.state, GrantState::Active);
    assert_eq!(
        approved.expires_at,
        crate::clock::whole_seconds(env.clock.now() + approved.ttl),
        "the lifetime starts at the last approval"
    );
}

#[tokio::test]
async fn a_delegation_never_widens_or_outlives_its_parent() {
    let env = Env::new();
    let agent = caller(AGENT);
    let parent = env
        .issuer
        .request_grant(
            &agent,
            &request(GrantFields {
                entitlement: "agent-research".to_owned(),
                ttl: Some(10 * MINUTE),
                ..GrantFields::default()
            }),
        )
        .await
        .unwrap();
    let delegate = |actions: &[&str], ttl| {
        let actions: Vec<String> = actions.iter().map(|a| (*a).to_owned()).collect();
        DelegationRequest::parse(
            &parent.id.to_string(),
            "tool".to_owned(),
            &actions,
            ttl,
            String::new(),
        )
        .unwrap()
    };
    let wider = env
        .issuer
        .delegate(&agent, &delegate(&["deploy:prod"], None))
        .await
        .unwrap_err();
    assert!(wider.is_permission_denied(), "{wider}");
    env.clock.advance(8 * MINUTE);
    let longer = env
        .issuer
        .delegate(&agent, &delegate(&[], Some(5 * MINUTE)))
        .await
        .unwrap_err();
    assert!(
        longer
            .to_string()
            .ends_with("a delegation never outlives its parent"),
        "{longer}"
    );
    let child = env
        .issuer
        .delegate(&agent, &delegate(&["tool:search"], None))
        .await
        .unwrap();
    assert_eq!(child.expires_at, parent.expires_at);
    assert_eq!(child.actions.len(), 1);
    assert_eq!(child.parent, Some(parent.id));
    // Ending the parent ends the child.
    env.issuer
        .complete(
            &agent,
            &CompleteTarget::Grant(parent.id.to_string()),
            Outcome::Completed,
        )
        .await
        .unwrap();
    let (child_now, _) = env
        .issuer
        .get_grant(&agent, &child.id.to_string())
        .await
        .unwrap();
    assert_eq!(child_now.state, GrantState::Completed);
}

#[tokio::test]
async fn the_catalogue_in_force_decides_minting_under_a_grant() {
    let env = Env::new();
    let runner = caller(RUNNER);
    let grant = env
        .issuer
        .request_grant(&runner, &entitlement("ci-publish"))
        .await
        .unwrap();
    let without = CONFIG.replace("name = \"ci-publish\"", "name = \"ci-other\"");
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(&without, &dir.path().join("jitid.toml"), Path::new(".")).unwrap();
    env.issuer.replace_catalogue(config.catalogue);
    let error = env
        .issuer
        .issue_x509(&runner, &under(&grant, None), &env.csr)
        .await
        .unwrap_err();
    assert!(error.is_permission_denied(), "{error}");
}

#[tokio::test]
async fn minting_approving_and_delegating_keep_to_the_entitlement_as_it_is_now() {
    let env = Env::new();
    let runner = caller(RUNNER);
    let grant = env
        .issuer
        .request_grant(&runner, &entitlement("ci-publish"))
        .await
        .unwrap();
    let pending = env
        .issuer
        .request_grant(&runner, &entitlement("db-migrate"))
        .await
        .unwrap();
    // A reload takes `publish:artifacts` and `db:migrate` away.
    let narrower = CONFIG
        .replace(
            "actions = [\"read:source\", \"publish:artifacts\"]",
            "actions = [\"read:source\"]",
        )
        .replace(
            "actions = [\"db:migrate\", \"db:read\"]",
            "actions = [\"db:read\"]",
        );
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(&narrower, &dir.path().join("jitid.toml"), Path::new(".")).unwrap();
    env.issuer.replace_catalogue(config.catalogue);

    let issued = env
        .issuer
        .issue_x509(&runner, &under(&grant, None), &env.csr)
        .await
        .unwrap();
    let extension =
        crate::extension::GrantExtension::from_certificate(issued.chain[0].as_ref()).unwrap();
    let actions: Vec<String> = extension.actions.iter().map(ToString::to_string).collect();
    assert_eq!(
        actions,
        ["read:source"],
        "the credential carries what is allowed now"
    );

    env.issuer
        .approve(&caller(SRE_A), &pending.id.to_string(), "ok")
        .await
        .unwrap();
    let approved = env
        .issuer
        .approve(&caller(SRE_B), &pending.id.to_string(), "ok")
        .await
        .unwrap();
    assert_eq!(approved.state, GrantState::Active);
    assert_eq!(
        approved.actions,
        [crate::grant::Action::new("db:read").unwrap()]
    );

    // With every action of a grant gone, nothing more is minted under it.
    let none = narrower.replace("actions = [\"read:source\"]", "actions = [\"write:docs\"]");
    let config = Config::parse(&none, &dir.path().join("jitid.toml"), Path::new(".")).unwrap();
    env.issuer.replace_catalogue(config.catalogue);
    let error = env
        .issuer
        .issue_x509(&runner, &under(&grant, None), &env.csr)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no action left"), "{error}");
}

#[tokio::test]
async fn verify_follows_the_grant_and_the_clock() {
    let env = Env::new();
    let runner = caller(RUNNER);
    let issued = env
        .issuer
        .issue_x509(
            &runner,
            &request(GrantFields {
                entitlement: "ci-publish".to_owned(),
                ttl: Some(2 * MINUTE),
                ..GrantFields::default()
            }),
            &env.csr,
        )
        .await
        .unwrap();
    let presented = Presented::X509(issued.chain.clone());
    assert_eq!(
        env.issuer.verify(&presented).await.status,
        VerifyStatus::Valid
    );
    env.clock.advance(3 * MINUTE);
    assert_eq!(
        env.issuer.verify(&presented).await.status,
        VerifyStatus::Expired
    );

    let second = env
        .issuer
        .issue_jwt(
            &runner,
            &entitlement("ci-publish"),
            &["aud".to_owned()],
            false,
        )
        .await
        .unwrap();
    let jwt = Presented::Jwt {
        token: second.token.clone(),
        audience: "aud".to_owned(),
        presenter: None,
    };
    assert_eq!(env.issuer.verify(&jwt).await.status, VerifyStatus::Valid);
    let wrong_audience = Presented::Jwt {
        token: second.token,
        audience: "other".to_owned(),
        presenter: None,
    };
    assert_eq!(
        env.issuer.verify(&wrong_audience).await.status,
        VerifyStatus::Invalid
    );
    env.issuer
        .complete(
            &runner,
            &CompleteTarget::Grant(second.grant.id.to_string()),
            Outcome::Failed,
        )
        .await
        .unwrap();
    let verdict = env.issuer.verify(&jwt).await;
    assert_eq!(verdict.status, VerifyStatus::Revoked);
    assert!(verdict.reason.contains("failed by"), "{}", verdict.reason);
}

#[tokio::test]
async fn only_owners_and_admins_revoke_and_no_one_reviews_their_own_break_glass() {
    let env = Env::new();
    let runner = caller(RUNNER);
    let grant = env
        .issuer
        .request_grant(&runner, &entitlement("ci-publish"))
        .await
        .unwrap();
    let target = RevokeTarget::Grant(grant.id.to_string());
    let other = caller("spiffe://example.org/ci/runner-2");
    let error = env.issuer.revoke(&other, &target, "").await.unwrap_err();
    assert!(error.is_permission_denied(), "{error}");
    let admin = caller("spiffe://example.org/ops/admin");
    let outcome = env.issuer.revoke(&admin, &target, "done").await.unwrap();
    assert_eq!(outcome.grants, vec![grant.id]);

    let break_glass = break_glass("INC-3: the primary database is down");
    // A release runner uses break-glass; only a security reviewer closes it.
    let user = caller("spiffe://example.org/ci/runner-3");
    let issued = env
        .issuer
        .issue_x509(&user, &break_glass, &env.csr)
        .await
        .unwrap();
    assert!(issued.grant.break_glass);
    assert!(
        issued.grant.expires_at <= env.clock.now() + 2 * MINUTE,
        "break-glass has its own, shorter maximum"
    );
    let error = env
        .issuer
        .ack_review(&user, &issued.grant.id.to_string(), "fine")
        .await
        .unwrap_err();
    assert!(error.is_permission_denied(), "{error}");
    let error = env
        .issuer
        .ack_review(&caller(SECURITY), &issued.grant.id.to_string(), " ")
        .await
        .unwrap_err();
    assert!(error.is_invalid_argument(), "{error}");
}

#[tokio::test]
async fn a_liveness_answer_the_trail_refuses_is_never_valid() {
    let env = Env::new();
    let runner = caller(RUNNER);
    let issued = env
        .issuer
        .issue_x509(&runner, &entitlement("ci-publish"), &env.csr)
        .await
        .unwrap();
    let presented = Presented::X509(issued.chain.clone());
    let relying_party = caller("spiffe://example.org/svc/ledger");
    let verdict = env.issuer.verify_for(&relying_party, &presented).await;
    assert_eq!(verdict.status, VerifyStatus::Valid);
    env.refuse(true);
    let verdict = env.issuer.verify_for(&relying_party, &presented).await;
    assert_eq!(verdict.status, VerifyStatus::Unknown, "{}", verdict.reason);
    assert!(
        !verdict.reason.contains("refuses"),
        "no internal detail: {}",
        verdict.reason
    );
    // A refusal stays a refusal.
    env.clock.advance(10 * MINUTE);
    let verdict = env.issuer.verify_for(&relying_party, &presented).await;
    assert_eq!(verdict.status, VerifyStatus::Expired);
}

mod identity;

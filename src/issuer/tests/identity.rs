//! Unit tests of the attestation identity use cases on a manual clock:
//! who may renew, the lifetime limits, the denylist at attestation (by
//! serial, by SPIFFE ID for identities issued before), and audit before
//! effect (a refused trail hands out no identity and spends no token).

use super::*;
use crate::issuer::{IdentityEvidence, IdentityLimits, IdentityTarget, OidcEvidence};

const ADMIN: &str = "spiffe://example.org/ops/admin";

/// A caller attested by an identity with `serial`, issued now.
fn identity_caller(env: &Env, id: &str, serial: &str, lifetime: Duration) -> Caller {
    let now = env.clock.now();
    Caller::with_identity(
        SpiffeId::new(id).unwrap(),
        IdentityEvidence {
            serial: serial.to_owned(),
            not_before: now - crate::ca::BACKDATE,
            not_after: now + lifetime,
        },
    )
}

fn refusal(result: Result<(), AttestationRefusal>) -> String {
    match result {
        Err(refusal) => refusal.to_string(),
        Ok(()) => panic!("attested, expected a refusal"),
    }
}

#[tokio::test]
async fn only_an_identity_renews_itself_within_the_limits() {
    let env = Env::new();
    let issuer = &env.issuer;
    let oidc = Caller {
        attestation: Attestation::Oidc(OidcEvidence {
            provider: "github".to_owned(),
            token_id: "jti-1".to_owned(),
            expires_at: env.clock.now() + MINUTE,
            task: None,
            claims: Default::default(),
        }),
        ..caller(RUNNER)
    };
    match issuer.renew_identity(&oidc, &env.csr, None).await {
        Err(IssueError::Forbidden(message)) => {
            assert!(
                message.contains("only an identity renews itself"),
                "{message}"
            );
        }
        other => panic!("a token renewed an identity: {other:?}"),
    }

    let limits = IdentityLimits {
        ttl: Duration::from_secs(3600),
        max_ttl: Duration::from_secs(2 * 3600),
    };
    let env = Env::new();
    let issuer = env.issuer.with_identity_limits(limits);
    let runner = caller(RUNNER);
    let renewed = issuer
        .renew_identity(&runner, &env.csr, None)
        .await
        .unwrap();
    assert_eq!(renewed.not_after, env.clock.now() + limits.ttl);
    assert_eq!(renewed.spiffe_id.as_str(), RUNNER);
    let error = issuer
        .renew_identity(&runner, &env.csr, Some(3 * limits.ttl))
        .await
        .unwrap_err();
    assert!(error.is_invalid_argument(), "{error:?}");
    assert!(
        issuer
            .renew_identity(&runner, b"nonsense", None)
            .await
            .unwrap_err()
            .is_invalid_argument()
    );
}

#[tokio::test]
async fn the_denylist_refuses_by_serial_and_by_id_for_identities_issued_before() {
    let env = Env::new();
    let admin = caller(ADMIN);
    let day = Duration::from_secs(24 * 3600);
    let first = identity_caller(&env, RUNNER, "0a01", day);
    let second = identity_caller(&env, RUNNER, "0a02", day);
    env.issuer.check_attestation(&first).await.unwrap();
    env.issuer.check_attestation(&second).await.unwrap();

    // By serial: that identity only. (A reason as long as allowed still
    // fits the revocation of the grants.)
    let long = "x".repeat(crate::issuer::MAX_JUSTIFICATION_BYTES);
    let spare = identity_caller(&env, RUNNER, "0a0f", day);
    env.issuer.check_attestation(&spare).await.unwrap();
    let outcome = env
        .issuer
        .revoke_identity(&admin, &IdentityTarget::Serial("0a0f".to_owned()), &long)
        .await
        .unwrap();
    assert_eq!(
        outcome.spiffe_id.as_ref().map(SpiffeId::as_str),
        Some(RUNNER)
    );
    env.issuer
        .revoke_identity(&admin, &IdentityTarget::Serial("0A:01".to_owned()), "lost")
        .await
        .unwrap();
    let refused = refusal(env.issuer.check_attestation(&first).await);
    assert_eq!(
        refused,
        format!("attestation identity 0a01 of {RUNNER} was revoked: lost (revoked by {ADMIN})")
    );
    env.issuer.check_attestation(&second).await.unwrap();

    // By SPIFFE ID: every identity issued before; one issued later passes.
    env.clock.advance(MINUTE);
    env.issuer
        .revoke_identity(&admin, &IdentityTarget::SpiffeId(RUNNER.to_owned()), "")
        .await
        .unwrap();
    let refused = refusal(env.issuer.check_attestation(&second).await);
    assert!(
        refused.ends_with(&format!("was revoked: revoked by {ADMIN}")),
        "{refused}"
    );
    env.clock.advance(MINUTE);
    let later = identity_caller(&env, RUNNER, "0a03", day);
    env.issuer.check_attestation(&later).await.unwrap();
    // Another SPIFFE ID, and callers attested otherwise, are untouched.
    env.issuer
        .check_attestation(&identity_caller(&env, AGENT, "0b01", day))
        .await
        .unwrap();

    // An identity living longer than the maximum does not attest.
    let long = identity_caller(&env, AGENT, "0b02", day + MINUTE);
    assert!(refusal(env.issuer.check_attestation(&long).await).contains("identity_max_ttl"));
    // Records stay listed for identity_max_ttl past their NotAfter, then
    // are forgotten.
    env.clock.advance(day);
    let listed = env.issuer.list_identities(&admin).await.unwrap();
    assert!(listed.iter().any(|record| record.serial == "0a03"));
    env.clock.advance(2 * day);
    assert!(
        env.issuer.list_identities(&admin).await.unwrap().is_empty(),
        "every record expired"
    );
}

#[tokio::test]
async fn a_refused_trail_hands_out_no_identity_and_spends_no_join_token() {
    let env = Env::new();
    let admin = caller(ADMIN);
    let runner = caller(RUNNER);
    env.refuse(true);
    assert_audit_refused(env.issuer.renew_identity(&runner, &env.csr, None).await);
    assert_audit_refused(
        env.issuer
            .create_join_token(&admin, "spiffe://example.org/ci/host-1", None)
            .await,
    );
    env.refuse(false);
    assert!(env.issuer.list_identities(&admin).await.unwrap().is_empty());

    let token = env
        .issuer
        .create_join_token(&admin, "spiffe://example.org/ci/host-1", None)
        .await
        .unwrap();
    assert!(
        !format!("{token:?}").contains(&token.token),
        "Debug hides it"
    );
    env.refuse(true);
    assert_audit_refused(
        env.issuer
            .bootstrap_identity(&token.token, &env.csr, None, None)
            .await,
    );
    env.refuse(false);
    assert!(env.issuer.list_identities(&admin).await.unwrap().is_empty());
    // The token was put back: it works, once.
    let issued = env
        .issuer
        .bootstrap_identity(&token.token, &env.csr, None, None)
        .await
        .unwrap();
    assert_eq!(issued.spiffe_id.as_str(), "spiffe://example.org/ci/host-1");
    assert!(matches!(
        env.issuer
            .bootstrap_identity(&token.token, &env.csr, None, None)
            .await,
        Err(IssueError::Forbidden(_))
    ));
    // Expired tokens are refused too.
    let expiring = env
        .issuer
        .create_join_token(&admin, "spiffe://example.org/ci/host-2", Some(MINUTE))
        .await
        .unwrap();
    env.clock.advance(MINUTE);
    assert!(matches!(
        env.issuer
            .bootstrap_identity(&expiring.token, &env.csr, None, None)
            .await,
        Err(IssueError::Forbidden(_))
    ));
    let kinds: Vec<EventKind> = env.events().await.iter().map(|event| event.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::JoinTokenCreated,
            EventKind::JoinTokenUsed,
            EventKind::IdentityIssued,
            EventKind::JoinTokenCreated,
        ]
    );
}

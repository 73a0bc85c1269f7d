//! Attestation failures: each gets UNAUTHENTICATED with a message that says
//! what was wrong, and nothing is recorded.

use std::time::{Duration, SystemTime};

use jitid::client::{Client, ClientConfig, ClientError, RetryPolicy, SvidRequest};
use jitid::spiffe_id::TrustDomain;

use crate::support::{CI_RUNNER, TestEnv};

async fn expect_unauthenticated(env: &TestEnv, client: &Client, message: &str) {
    let error = client
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap_err();
    match &error {
        ClientError::Status {
            code, message: got, ..
        } => {
            assert_eq!(*code, tonic::Code::Unauthenticated, "{error}");
            assert!(got.contains(message), "expected {message:?} in {got:?}");
        }
        other => panic!("expected a status, got {other}"),
    }
    let error = client
        .fetch_jwt_svid(&SvidRequest::entitlement("ci-publish"), &["aud".to_owned()])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::Unauthenticated));
    assert_eq!(env.grants(), 0, "nothing recorded");
}

#[tokio::test]
async fn no_client_certificate() {
    let env = TestEnv::start().await;
    let client = env.client_with(None).await;
    expect_unauthenticated(&env, &client, "no client certificate").await;
}

#[tokio::test]
async fn untrusted_ca() {
    let env = TestEnv::start().await;
    let other_dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let paths = jitid::ca::init(
        other_dir.path(),
        &TrustDomain::new("example.org").unwrap(),
        now,
        &jitid::ca::InitOptions {
            root_ttl: Duration::from_secs(7200),
            signing_ttl: Duration::from_secs(3600),
        },
    )
    .unwrap();
    let rogue =
        jitid::ca::Authority::load(&paths, &TrustDomain::new("example.org").unwrap(), now).unwrap();
    let spiffe_id = jitid::spiffe_id::SpiffeId::new(CI_RUNNER).unwrap();
    let issued = rogue
        .issue_attestation_identity(
            jitid::ca::LeafRequest {
                spiffe_id: &spiffe_id,
                expires_at: now + Duration::from_secs(3600),
                dns_names: &[],
                ip_addresses: &[],
            },
            now,
        )
        .unwrap();
    let identity = jitid::client::ClientIdentity::new(
        issued.chain,
        rustls::pki_types::PrivateKeyDer::Pkcs8(issued.key_pkcs8.into()),
    );
    let client = env.client_with(Some(identity)).await;
    expect_unauthenticated(&env, &client, "not issued by a trusted attestation CA").await;
}

#[tokio::test]
async fn expired_client_certificate() {
    let env = TestEnv::start().await;
    let now = SystemTime::now();
    let identity = env.identity_valid(
        CI_RUNNER,
        now - Duration::from_secs(7200),
        now - Duration::from_secs(3600),
    );
    let client = env.client_with(Some(identity)).await;
    expect_unauthenticated(&env, &client, "client certificate has expired").await;
}

#[tokio::test]
async fn two_uri_sans() {
    let env = TestEnv::start().await;
    let identity = env.identity_with_uris(&[CI_RUNNER, "spiffe://example.org/ci/other"]);
    let client = env.client_with(Some(identity)).await;
    expect_unauthenticated(
        &env,
        &client,
        "exactly one SPIFFE ID URI SAN, found 2 URI SANs",
    )
    .await;
}

#[tokio::test]
async fn no_or_invalid_spiffe_id() {
    let env = TestEnv::start().await;
    let client = env.client_with(Some(env.identity_with_uris(&[]))).await;
    expect_unauthenticated(&env, &client, "found 0 URI SANs").await;
    let client = env
        .client_with(Some(
            env.identity_with_uris(&["https://example.org/ci/runner"]),
        ))
        .await;
    expect_unauthenticated(&env, &client, "which is invalid").await;
}

#[tokio::test]
async fn foreign_trust_domain() {
    let env = TestEnv::start().await;
    let client = env
        .client_with(Some(
            env.identity_with_uris(&["spiffe://other.org/ci/runner"]),
        ))
        .await;
    expect_unauthenticated(&env, &client, "is not in trust domain example.org").await;
}

#[tokio::test]
async fn client_verifies_the_server() {
    let env = TestEnv::start().await;
    let other_dir = tempfile::tempdir().unwrap();
    let paths = jitid::ca::init(
        other_dir.path(),
        &TrustDomain::new("example.org").unwrap(),
        SystemTime::now(),
        &jitid::ca::InitOptions {
            root_ttl: Duration::from_secs(7200),
            signing_ttl: Duration::from_secs(3600),
        },
    )
    .unwrap();
    let error = Client::connect(ClientConfig {
        server: env.url(),
        server_roots: jitid::ca::read_certs(&paths.root_cert).unwrap(),
        identity: Some(env.identity(CI_RUNNER)),
        retry: RetryPolicy::default(),
    })
    .await
    .unwrap_err();
    assert!(matches!(error, ClientError::Connect { .. }), "{error}");
}

#[tokio::test]
async fn an_issued_svid_is_not_an_attestation_identity() {
    // By default the server trusts the attestation CA alone, so an SVID
    // (from the signing CA) does not even chain there.
    let env = TestEnv::start().await;
    let runner = env.client_for(CI_RUNNER).await;
    let svid = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    let identity = jitid::client::ClientIdentity::new(
        svid.chain.clone(),
        rustls::pki_types::PrivateKeyDer::Pkcs8(svid.key_pkcs8.clone().into()),
    );
    let holder = env.client_with(Some(identity)).await;
    let error = holder
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::Unauthenticated));
    assert!(
        error
            .to_string()
            .contains("not issued by a trusted attestation CA"),
        "{error}"
    );
    assert_eq!(env.grants(), 1, "only the first grant");
}

#[tokio::test]
async fn an_issued_svid_is_refused_even_where_the_root_attests() {
    // An operator who trusts the whole root for attestation still cannot
    // attest with an SVID: it is a credential for one task, and may not
    // mint more.
    let env =
        TestEnv::start_with_catalogue("[attestation]\ntrust_anchors = [\"ca/root.pem\"]\n").await;
    let runner = env.client_for(CI_RUNNER).await;
    let svid = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    let identity = jitid::client::ClientIdentity::new(
        svid.chain.clone(),
        rustls::pki_types::PrivateKeyDer::Pkcs8(svid.key_pkcs8.clone().into()),
    );
    let holder = env.client_with(Some(identity)).await;
    let error = holder
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::Unauthenticated));
    assert!(
        error.to_string().contains(&format!(
            "is a jitid SVID (issued for grant {})",
            svid.grant.grant_id
        )),
        "{error}"
    );
    assert_eq!(env.grants(), 1, "only the first grant");
}

#[tokio::test]
async fn a_flood_of_failed_authentications_is_tallied_not_recorded_one_by_one() {
    use jitid::audit::{AuditLog, EventKind};
    let env = TestEnv::start().await;
    let stranger = env.client_with(None).await;
    for _ in 0..300 {
        let error = stranger
            .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(tonic::Code::Unauthenticated));
    }
    // Issuance goes on.
    env.client_for(CI_RUNNER)
        .await
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();

    // Each window (500 ms here) records an address's first failure at
    // once and the rest as one tally when it closes: all 300 are
    // accounted for, in a handful of events.
    let counted = |events: &[jitid::audit::AuditEvent]| -> (usize, u64) {
        let failures: Vec<_> = events
            .iter()
            .filter(|event| event.kind == EventKind::AuthenticationFailure)
            .collect();
        let total = failures
            .iter()
            .map(|event| event.details["repeated"].as_u64().unwrap_or(1))
            .sum();
        (failures.len(), total)
    };
    let accounted = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let events = env.audit.read(0, 100_000).await.unwrap();
            let (recorded, total) = counted(&events);
            if total >= 300 {
                return (recorded, total, events);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let (recorded, total, events) = accounted.expect("the tally was never recorded");
    assert_eq!(total, 300);
    assert!(recorded <= 10, "{recorded} events for 300 failures");
    let tally = events
        .iter()
        .find(|event| event.details.get("repeated").is_some())
        .expect("a tally");
    assert_eq!(tally.details["remote"], "127.0.0.1");
    assert_eq!(tally.details["window_seconds"], 1);
    assert!(
        events
            .iter()
            .any(|event| event.kind == EventKind::CredentialIssued),
        "the issuance is in the trail"
    );
}

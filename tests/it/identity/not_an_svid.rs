//! An attestation identity is never an SVID: `Verify` answers INVALID
//! with the reason, and the client library's SPIFFE peer verifier (the one
//! a service's rustls server config uses) refuses it with its own error.
//! (That an SVID is never an attestation identity is
//! `attestation::an_issued_svid_*`.)

use jitid::client::{RotatingIdentity, SvidRequest};
use jitid::proto::v1 as pb;
use rustls::pki_types::UnixTime;
use rustls::server::danger::ClientCertVerifier;

use crate::support::{AGENT, CI_RUNNER, TestEnv};

#[tokio::test]
async fn an_attestation_identity_is_refused_as_an_svid() {
    let env = TestEnv::start().await;
    let runner = env.client_for(CI_RUNNER).await;
    let identity = runner.renew_identity(None).await.unwrap();

    // Verify: authentic, jitid's, and still not a credential.
    let relying_party = env.client_for(AGENT).await;
    let verdict = relying_party.verify_x509(&identity.chain).await.unwrap();
    assert_eq!(verdict.status(), pb::VerifyStatus::Invalid);
    assert!(
        verdict
            .reason
            .contains("an attestation identity, not an SVID"),
        "{}",
        verdict.reason
    );

    // The peer verifier of a service's rotating identity.
    let service = RotatingIdentity::builder_with_client(
        env.client_for(CI_RUNNER).await,
        SvidRequest::entitlement("ci-publish"),
    )
    .build()
    .await
    .unwrap();
    let peers = service.peer_verifier();
    let refused = peers
        .verify_client_cert(&identity.chain[0], &identity.chain[1..], UnixTime::now())
        .unwrap_err();
    assert!(
        format!("{refused:?}").contains("AttestationIdentity"),
        "{refused:?}"
    );
    // An SVID of the same service passes.
    let svid = service.svid();
    peers
        .verify_client_cert(
            &svid.svid().chain[0],
            &svid.svid().chain[1..],
            UnixTime::now(),
        )
        .unwrap();
}

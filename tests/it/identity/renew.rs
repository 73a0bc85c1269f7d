//! Renewal: a fresh identity for the same SPIFFE ID, from the attestation
//! CA, for a key made by the client, that attests at once; its lifetime is
//! bounded by the config; and an identity that lives longer than the
//! server accepts does not attest.

use std::time::{Duration, SystemTime};

use jitid::audit::EventKind;
use jitid::audit::event::Event;
use jitid::client::SvidRequest;
use jitid::proto::v1 as pb;
use x509_parser::prelude::*;

use super::{code, events_of, identity_with_serial};
use crate::support::{ADMIN, CI_RUNNER, TestEnv};

#[tokio::test]
async fn a_renewed_identity_is_fresh_from_the_attestation_ca_and_attests() {
    let env = TestEnv::start().await;
    let (identity, old_serial) = identity_with_serial(&env, CI_RUNNER);
    let runner = env.client_with(Some(identity)).await;

    let before = SystemTime::now();
    let renewed = runner.renew_identity(None).await.unwrap();
    assert_eq!(renewed.spiffe_id, CI_RUNNER);
    assert_ne!(renewed.serial, old_serial);
    // The default lifetime, 24h (here no later than the test CA, which
    // lives 24h itself).
    let day = Duration::from_secs(24 * 3600);
    let expected = (before + day).min(env.authority.attestation_not_after());
    assert!(renewed.not_after >= expected - Duration::from_secs(1));
    assert!(renewed.not_after <= SystemTime::now() + day);
    // Signed by the attestation CA, for the key made here; clientAuth only
    // and marked, with the attested ID as its only URI SAN.
    assert_eq!(renewed.chain.len(), 2);
    assert_eq!(renewed.chain[1], *env.authority.attestation_cert());
    let (_, leaf) = parse_x509_certificate(renewed.chain[0].as_ref()).unwrap();
    assert!(jitid::ca::is_attestation_identity(&leaf));
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert_eq!(jitid::ca::uri_sans(&leaf).unwrap(), [CI_RUNNER]);
    let key = rcgen::KeyPair::try_from(renewed.key_pkcs8.as_slice()).unwrap();
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    assert_eq!(serial_hex(&leaf), renewed.serial);

    // It attests: a credential for the same SPIFFE ID.
    let with_renewed = env.client_with(Some(renewed.client_identity())).await;
    let svid = with_renewed
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    assert_eq!(svid.grant.spiffe_id, CI_RUNNER);
    // And renews in turn, for less if asked.
    let shorter = with_renewed
        .renew_identity(Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert!(shorter.not_after <= SystemTime::now() + Duration::from_secs(3600));

    // Above identity_max_ttl: refused, never shortened.
    let error = with_renewed
        .renew_identity(Some(Duration::from_secs(48 * 3600)))
        .await;
    assert_eq!(code(&error), tonic::Code::InvalidArgument);
    assert!(
        error.unwrap_err().to_string().contains("identity_max_ttl"),
        "names the setting"
    );
    // A CSR whose signature does not verify.
    let mut grpc = with_renewed.grpc();
    let refused = grpc
        .renew_identity(pb::RenewIdentityRequest {
            csr: b"not a csr".to_vec(),
            ttl: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("csr"), "{}", refused.message());

    // The list: the first identity seen (offline), the renewed ones.
    let admin = env.client_for(ADMIN).await;
    let listed = admin.list_identities().await.unwrap();
    let via = |serial: &str| {
        listed
            .iter()
            .find(|record| record.serial == serial)
            .map(|record| (record.issued_via.clone(), record.state()))
    };
    assert_eq!(
        via(&old_serial),
        Some(("offline".to_owned(), pb::IdentityState::Active))
    );
    assert_eq!(
        via(&renewed.serial),
        Some(("renewed".to_owned(), pb::IdentityState::Active))
    );

    // Audited: which identity renewed into which, never a key.
    let issued: Vec<_> = events_of(&env, EventKind::IdentityIssued)
        .await
        .into_iter()
        .map(|event| match event.event().unwrap() {
            Event::IdentityIssued(issued) => (event.actor, issued),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(issued.len(), 2);
    assert_eq!(issued[0].0, CI_RUNNER);
    assert_eq!(issued[0].1.via, jitid::audit::event::IssuedVia::Renewed);
    assert_eq!(issued[0].1.serial, renewed.serial);
    assert_eq!(
        issued[0].1.renewed_from.as_deref(),
        Some(old_serial.as_str())
    );
    assert_eq!(
        issued[1].1.renewed_from.as_deref(),
        Some(renewed.serial.as_str())
    );
}

#[tokio::test]
async fn an_identity_that_lives_longer_than_the_server_accepts_does_not_attest() {
    let env = TestEnv::start_with_catalogue(
        "[attestation]\nidentity_ttl = \"1h\"\nidentity_max_ttl = \"1h\"\n",
    )
    .await;
    let now = SystemTime::now();
    let long = env.identity_valid(CI_RUNNER, now, now + Duration::from_secs(2 * 3600));
    let client = env.client_with(Some(long)).await;
    let error = client
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await;
    assert_eq!(code(&error), tonic::Code::Unauthenticated);
    let message = error.unwrap_err().to_string();
    assert!(
        message.contains("longer than this server accepts") && message.contains("identity_max_ttl"),
        "{message}"
    );
    assert_eq!(env.grants(), 0);
}

fn serial_hex(leaf: &X509Certificate<'_>) -> String {
    jitid::ca::serial_hex(leaf.raw_serial())
}

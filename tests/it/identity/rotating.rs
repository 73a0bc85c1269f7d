//! A service's rotating identity renews its own attestation identity: on
//! its own, with a new key, written back to the files it was read from
//! (key 0600), and used for the issuer calls that follow, after the first
//! identity has expired.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use jitid::client::{ClientConfig, RotatingIdentity, SvidRequest};
use jitid::proto::v1 as pb;

use super::serial_of;
use crate::support::{ADMIN, CI_RUNNER, TestEnv, eventually};

/// Renewed identities live 6 s here, so one renews about every 3 s.
const SHORT_IDENTITIES: &str = "[attestation]\nidentity_ttl = \"6s\"\n";

fn leaf_serial(path: &std::path::Path) -> String {
    serial_of(&jitid::ca::read_certs(path).unwrap()[0])
}

#[tokio::test]
async fn a_rotating_identity_renews_its_attestation_identity_on_its_own() {
    let env = TestEnv::start_with_catalogue(SHORT_IDENTITIES).await;
    let first_expiry = SystemTime::now() + Duration::from_secs(6);
    let (cert, key) = env.identity_files_until(CI_RUNNER, first_expiry);
    let first_serial = leaf_serial(&cert);
    let config =
        ClientConfig::from_files(&env.url(), &env.ca.root_cert, Some((&cert, &key))).unwrap();
    let service = RotatingIdentity::builder(config, SvidRequest::entitlement("ci-publish"))
        .build()
        .await
        .unwrap();

    // Renewed on its own, and written back in place.
    eventually("the identity file renewed", || async {
        leaf_serial(&cert) != first_serial
    })
    .await;
    let renewed_serial = leaf_serial(&cert);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let chain = jitid::ca::read_certs(&cert).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
    assert!(jitid::ca::is_attestation_identity(&leaf));
    assert_eq!(jitid::ca::uri_sans(&leaf).unwrap(), [CI_RUNNER]);
    // The files go together: they are what the next process starts with.
    jitid::client::Client::connect(
        ClientConfig::from_files(&env.url(), &env.ca.root_cert, Some((&cert, &key))).unwrap(),
    )
    .await
    .unwrap()
    .list_grants(pb::ListGrantsRequest::default())
    .await
    .unwrap();

    // The server recorded it as renewed from the first.
    let admin = env.client_for(ADMIN).await;
    let listed = admin.list_identities().await.unwrap();
    let record = listed
        .iter()
        .find(|record| record.serial == renewed_serial)
        .expect("listed");
    assert_eq!(record.issued_via, "renewed");
    assert_eq!(record.spiffe_id, CI_RUNNER);

    // Once the first identity has expired, the service still gets SVIDs
    // and reaches the issuer: it calls with the renewed one.
    eventually("the first identity to expire", || async {
        SystemTime::now() > first_expiry + Duration::from_secs(1)
    })
    .await;
    let before = service.svid().serial().to_owned();
    service.renew_now();
    eventually("an SVID after the first identity expired", || async {
        service.svid().serial() != before
    })
    .await;
    service
        .client()
        .list_grants(pb::ListGrantsRequest::default())
        .await
        .unwrap();
}

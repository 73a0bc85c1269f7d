//! Independent checks of what jitid issues: the SPIFFE rules of
//! shared/spiffe.md, validated with x509-parser, webpki and the `spiffe`
//! crate rather than with jitid's own code.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use jitid::ca::GrantExtension;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use x509_parser::prelude::*;

/// Checks an X509-SVID chain against every leaf rule and the trust anchors;
/// returns its grant extension.
pub fn check_x509_svid(
    chain: &[CertificateDer<'static>],
    key_pkcs8: Option<&[u8]>,
    roots: &[CertificateDer<'static>],
    expected_id: &str,
) -> GrantExtension {
    let now = SystemTime::now();
    assert!(
        chain.len() >= 2,
        "chain must carry the signing intermediate"
    );

    // The `spiffe` crate, as a relying party's library would.
    if let Some(key) = key_pkcs8 {
        let concatenated: Vec<u8> = chain.iter().flat_map(|c| c.as_ref().to_vec()).collect();
        let svid = spiffe::X509Svid::parse_from_der(&concatenated, key)
            .expect("the spiffe crate accepts the X509-SVID");
        assert_eq!(svid.spiffe_id().to_string(), expected_id);
    }

    // RFC 5280 path validation with webpki, to the trust anchors.
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(store), jitid::crypto::provider())
            .build()
            .unwrap();
    verifier
        .verify_client_cert(
            &chain[0],
            &chain[1..],
            UnixTime::since_unix_epoch(now.duration_since(SystemTime::UNIX_EPOCH).unwrap()),
        )
        .expect("the chain validates to the trust bundle");

    let (_, leaf) = parse_x509_certificate(chain[0].as_ref()).unwrap();
    let (_, signer) = parse_x509_certificate(chain[1].as_ref()).unwrap();

    // exactly one URI SAN, the attested ID.
    let uris: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .expect("SAN present")
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, [expected_id]);
    // cA=false, present.
    let basic = leaf
        .basic_constraints()
        .unwrap()
        .expect("basicConstraints present");
    assert!(!basic.value.ca);
    // key usage critical, digitalSignature, no CA bits.
    let key_usage = leaf.key_usage().unwrap().expect("keyUsage present");
    assert!(key_usage.critical);
    assert!(key_usage.value.digital_signature());
    assert!(!key_usage.value.key_cert_sign() && !key_usage.value.crl_sign());
    // EKU serverAuth and clientAuth.
    let eku = leaf.extended_key_usage().unwrap().expect("EKU present");
    assert!(eku.value.server_auth && eku.value.client_auth);
    // NotBefore back-dated; NotAfter never past the signing CA's.
    let not_before = leaf.validity().not_before.timestamp();
    let now_secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(not_before <= now_secs - 5, "NotBefore is back-dated");
    assert!(leaf.validity().not_after <= signer.validity().not_after);
    // The grant extension is non-critical and decodes.
    let oid = x509_parser::der_parser::oid::Oid::from(jitid::ca::GRANT_EXTENSION_OID).unwrap();
    let extension = leaf
        .get_extension_unique(&oid)
        .unwrap()
        .expect("grant extension present");
    assert!(!extension.critical);
    GrantExtension::from_certificate(chain[0].as_ref()).unwrap()
}

/// Validates a JWT-SVID with the `spiffe` crate against the `jwt-svid` keys
/// of a SPIFFE bundle, and returns its header and claims.
pub fn check_jwt_svid(
    token: &str,
    spiffe_bundle_json: &[u8],
    audience: &str,
    expected_id: &str,
) -> (serde_json::Value, serde_json::Value) {
    // A consumer extracts only jwt-svid keys (SPIFFE bundle §6).
    let bundle: serde_json::Value = serde_json::from_slice(spiffe_bundle_json).unwrap();
    let keys: Vec<serde_json::Value> = bundle["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|key| key["use"] == "jwt-svid")
        .cloned()
        .collect();
    assert!(!keys.is_empty(), "bundle has jwt-svid keys");
    let jwks = serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap();
    let trust_domain = spiffe::TrustDomain::new("example.org").unwrap();
    let jwt_bundle = spiffe::JwtBundle::from_jwt_authorities(trust_domain, &jwks).unwrap();
    let mut bundles = spiffe::JwtBundleSet::new();
    bundles.add_bundle(jwt_bundle);
    let svid = spiffe::JwtSvid::parse_and_validate(token, &bundles, &[audience])
        .expect("the spiffe crate validates the JWT-SVID");
    assert_eq!(svid.spiffe_id().to_string(), expected_id);

    let mut parts = token.split('.');
    let decode = |part: &str| -> serde_json::Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    };
    let header = decode(parts.next().unwrap());
    let claims = decode(parts.next().unwrap());
    let mut header_keys: Vec<&String> = header.as_object().unwrap().keys().collect();
    header_keys.sort();
    assert_eq!(header_keys, ["alg", "kid", "typ"]);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert!(claims["exp"].is_u64() && claims["iat"].is_u64());
    let iat = claims["iat"].as_u64().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(iat <= now, "iat is not in the future");
    (header, claims)
}

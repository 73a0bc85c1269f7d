//! Unit tests of the peer verifier and of SVID checks, on hand-made
//! certificates: every refusal the verifier can give, on both sides.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use tokio::sync::watch;

use super::{Bundle, CurrentSvid, GrantInfo, SpiffePeerVerifier, TrustBundle};
use crate::extension::{GRANT_EXTENSION_OID, GrantExtension};
use crate::proto::v1 as pb;
use crate::{RevocationCache, X509Svid};

const HOUR: Duration = Duration::from_secs(3600);

/// A leaf to make: what differs from a good X.509-SVID of `svc/a`.
struct Leaf {
    uris: &'static [&'static str],
    is_ca: bool,
    cert_sign: bool,
    client_auth: bool,
    expired: bool,
    grant: Option<&'static str>,
    /// Carries the attestation identity marker.
    attestation_identity: bool,
}

const GOOD: Leaf = Leaf {
    uris: &["spiffe://example.org/svc/a"],
    is_ca: false,
    cert_sign: false,
    client_auth: true,
    expired: false,
    grant: None,
    attestation_identity: false,
};

struct Ca {
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    named_ca("example.org root")
}

fn named_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = vec![SanType::URI("spiffe://example.org".try_into().unwrap())];
    let der = params.self_signed(&key).unwrap().der().clone();
    Ca {
        der,
        issuer: Issuer::new(params, key),
    }
}

/// A leaf signed by `ca` and its PKCS#8 key.
fn leaf(ca: &Ca, leaf: &Leaf) -> (CertificateDer<'static>, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = leaf
        .uris
        .iter()
        .map(|uri| SanType::URI((*uri).try_into().unwrap()))
        .chain([SanType::DnsName("svc.internal".try_into().unwrap())])
        .collect();
    if leaf.is_ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if leaf.cert_sign {
        params.key_usages.push(KeyUsagePurpose::KeyCertSign);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    if leaf.client_auth {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    let now = SystemTime::now();
    let (from, until) = if leaf.expired {
        (now - 2 * HOUR, now - HOUR)
    } else {
        (now - Duration::from_secs(10), now + HOUR)
    };
    params.not_before = from.into();
    params.not_after = until.into();
    if let Some(grant_id) = leaf.grant {
        let extension = GrantExtension {
            grant_id: grant_id.to_owned(),
            task_id: "task-1".to_owned(),
            entitlement: "svc".to_owned(),
            actions: vec!["svc:call".to_owned()],
            epoch: "epoch-1".to_owned(),
            break_glass: false,
            parent_grant_ids: Vec::new(),
        };
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            GRANT_EXTENSION_OID,
            extension.to_der(),
        )];
    }
    if leaf.attestation_identity {
        params
            .custom_extensions
            .push(crate::extension::identity_marker_rcgen());
    }
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.der().clone(), key.serialize_der())
}

fn bundle(authorities: Vec<CertificateDer<'static>>) -> watch::Receiver<Arc<TrustBundle>> {
    let bundle = Bundle {
        trust_domain: "example.org".to_owned(),
        spiffe_json: Vec::new(),
        x509_authorities: authorities,
        sequence: 1,
    };
    let trust_bundle = TrustBundle::new(bundle, None, &crate::crypto::provider()).unwrap();
    watch::channel(Arc::new(trust_bundle)).1
}

fn verifier(ca: &Ca) -> SpiffePeerVerifier {
    SpiffePeerVerifier::new(bundle(vec![ca.der.clone()]), &crate::crypto::provider())
}

/// Verifies `cert` as a client and as a server; both answers must agree
/// (`Ok` or the same error), which is returned as text.
fn check(verifier: &SpiffePeerVerifier, cert: &CertificateDer<'_>) -> Result<(), String> {
    let answer = |client_side| {
        verifier
            .verify_peer(cert, &[], UnixTime::now(), client_side)
            .map(drop)
            .map_err(|error| format!("{error:?}"))
    };
    let (as_client, as_server) = (answer(true), answer(false));
    assert_eq!(as_client, as_server, "sides disagree");
    as_client
}

fn refused(answer: Result<(), String>, why: &str) {
    match answer {
        Ok(()) => panic!("accepted, expected {why}"),
        Err(error) => assert!(error.contains(why), "expected {why}, got {error}"),
    }
}

#[test]
fn accepts_an_svid_of_the_trust_domain_on_both_sides() {
    let ca = ca();
    let (cert, _) = leaf(&ca, &GOOD);
    check(&verifier(&ca), &cert).unwrap();
}

#[test]
fn refuses_what_is_not_an_svid_of_the_trust_domain() {
    let ca = ca();
    let verifier = verifier(&ca);
    let cases: &[(Leaf, &str)] = &[
        (
            Leaf {
                uris: &["spiffe://other.org/svc/a"],
                ..GOOD
            },
            "ForeignTrustDomain",
        ),
        (
            Leaf {
                uris: &["spiffe://example.org/a", "spiffe://example.org/b"],
                ..GOOD
            },
            "2 URI SANs",
        ),
        (Leaf { uris: &[], ..GOOD }, "0 URI SANs"),
        (
            Leaf {
                uris: &["spiffe://example.org"],
                ..GOOD
            },
            "has no path",
        ),
        (
            Leaf {
                uris: &["https://example.org/svc/a"],
                ..GOOD
            },
            "invalid SPIFFE ID",
        ),
        (
            Leaf {
                cert_sign: true,
                ..GOOD
            },
            "keyCertSign",
        ),
        (
            Leaf {
                is_ca: true,
                ..GOOD
            },
            "CaUsedAsEndEntity",
        ),
        (
            Leaf {
                expired: true,
                ..GOOD
            },
            "Expired",
        ),
        // jitid's attestation identities prove a workload to jitid only.
        (
            Leaf {
                attestation_identity: true,
                ..GOOD
            },
            "AttestationIdentity",
        ),
    ];
    for (case, why) in cases {
        let (cert, _) = leaf(&ca, case);
        refused(check(&verifier, &cert), why);
    }
    // Signed by another CA, or by one that only has the same name.
    let (stranger, _) = leaf(&named_ca("elsewhere"), &GOOD);
    refused(check(&verifier, &stranger), "UnknownIssuer");
    let (impostor, _) = leaf(&self::ca(), &GOOD);
    refused(check(&verifier, &impostor), "BadSignature");
    // No X.509 authorities: nothing is trusted.
    let empty = SpiffePeerVerifier::new(bundle(Vec::new()), &crate::crypto::provider());
    let (cert, _) = leaf(&ca, &GOOD);
    refused(check(&empty, &cert), "EmptyBundle");
}

#[test]
fn checks_the_extended_key_usage_of_the_side_the_peer_plays() {
    let ca = ca();
    let (server_only, _) = leaf(
        &ca,
        &Leaf {
            client_auth: false,
            ..GOOD
        },
    );
    let verifier = verifier(&ca);
    verifier
        .verify_peer(&server_only, &[], UnixTime::now(), false)
        .unwrap();
    verifier
        .verify_peer(&server_only, &[], UnixTime::now(), true)
        .unwrap_err();
}

#[test]
fn authorizes_by_allow_list() {
    let ca = ca();
    let (cert, _) = leaf(&ca, &GOOD);
    let exact = verifier(&ca).allow("spiffe://example.org/svc/a").unwrap();
    check(&exact, &cert).unwrap();
    let prefix = verifier(&ca).allow("spiffe://example.org/svc/*").unwrap();
    check(&prefix, &cert).unwrap();
    let other = verifier(&ca).allow("spiffe://example.org/svc/b").unwrap();
    refused(check(&other, &cert), "NotAllowed");
    let either = other.allow("spiffe://example.org/svc/a").unwrap();
    check(&either, &cert).unwrap();
    assert!(verifier(&ca).allow("spiffe://example.org/").is_err());
}

#[test]
fn checks_revocation_and_fails_closed() {
    let ca = ca();
    let (cert, _) = leaf(
        &ca,
        &Leaf {
            grant: Some("grant-1"),
            ..GOOD
        },
    );
    let cache = RevocationCache::new(HOUR);
    let verifier = verifier(&ca).check_revocation(cache.clone());
    refused(check(&verifier, &cert), "NotSynced");
    let heartbeat = pb::RevocationEvent {
        heartbeat: true,
        epoch: "epoch-1".to_owned(),
        ..Default::default()
    };
    cache.apply(&heartbeat);
    check(&verifier, &cert).unwrap();
    // Not issued by jitid: the cache cannot say, so refused.
    let (foreign, _) = leaf(&ca, &GOOD);
    refused(check(&verifier, &foreign), "Missing");
    cache.apply(&pb::RevocationEvent {
        grant_ids: vec!["grant-1".to_owned()],
        ..Default::default()
    });
    refused(check(&verifier, &cert), "Revoked");
}

#[test]
fn an_svid_is_published_only_if_its_key_matches_and_it_is_unexpired() {
    let ca = ca();
    let provider = crate::crypto::provider();
    let (cert, key) = leaf(&ca, &GOOD);
    let (_, other_key) = leaf(&ca, &GOOD);
    let svid = |key: Vec<u8>| X509Svid {
        chain: vec![cert.clone()],
        key_pkcs8: key,
        bundle: vec![ca.der.clone()],
        serial: "01".to_owned(),
        grant: GrantInfo {
            grant_id: "grant-1".to_owned(),
            spiffe_id: "spiffe://example.org/svc/a".to_owned(),
            entitlement: "svc".to_owned(),
            actions: Vec::new(),
            task_id: "task-1".to_owned(),
            expires_at: SystemTime::now() + HOUR,
        },
    };
    let now = SystemTime::now();
    let current = CurrentSvid::new(svid(key.clone()), &provider, now).unwrap();
    assert_eq!(current.spiffe_id().as_str(), "spiffe://example.org/svc/a");
    assert!(current.not_after() > now);
    let shown = format!("{current:?}");
    assert!(shown.contains("<redacted>"), "{shown}");
    let error = CurrentSvid::new(svid(other_key), &provider, now).unwrap_err();
    assert!(error.to_string().contains("unusable"), "{error}");
    let later = now + 2 * HOUR;
    let error = CurrentSvid::new(svid(key), &provider, later).unwrap_err();
    assert!(error.to_string().contains("expired"), "{error}");
}

//! Unit tests of the CA: creation, loading checks, and the shape of what it
//! signs.

use std::os::unix::fs::PermissionsExt;

use x509_parser::prelude::*;

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn options() -> InitOptions {
    InitOptions {
        root_ttl: 48 * HOUR,
        signing_ttl: 24 * HOUR,
    }
}

fn fresh_ca() -> (tempfile::TempDir, Authority) {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let paths = init(dir.path(), &td(), now, &options()).unwrap();
    let authority = Authority::load(&paths, &td(), now).unwrap();
    (dir, authority)
}

#[test]
fn act_claims_nest_the_most_recent_actor_outermost() {
    let actors = ["spiffe://td/a/sub/b", "spiffe://td/a"];
    let act = Actor::chain(&actors).unwrap();
    assert_eq!(
        serde_json::to_value(&act).unwrap(),
        serde_json::json!({"sub": "spiffe://td/a/sub/b", "act": {"sub": "spiffe://td/a"}})
    );
    assert_eq!(act.flatten(), actors);
    assert_eq!(Actor::chain::<&str>(&[]), None);
}

#[test]
fn init_writes_private_keys_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let paths = init(dir.path(), &td(), SystemTime::now(), &options()).unwrap();
    for key in [
        &paths.signing_key,
        &paths.jwt_key,
        &paths.attestation_key,
        &root_key_path(dir.path()),
    ] {
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    let error = init(dir.path(), &td(), SystemTime::now(), &options()).unwrap_err();
    assert!(
        error.to_string().contains("refusing to overwrite"),
        "{error}"
    );
}

#[test]
fn load_refuses_readable_keys_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let paths = init(dir.path(), &td(), SystemTime::now(), &options()).unwrap();
    std::fs::set_permissions(&paths.jwt_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = Authority::load(&paths, &td(), SystemTime::now()).unwrap_err();
    assert!(matches!(
        error,
        CaError::KeyFile(KeyFileError::TooOpen { .. })
    ));
    assert!(error.to_string().contains("jwt.key"), "{error}");
}

#[test]
fn load_refuses_foreign_trust_domain_mismatched_key_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let paths = init(dir.path(), &td(), now, &options()).unwrap();
    let other = TrustDomain::new("other.org").unwrap();
    assert!(matches!(
        Authority::load(&paths, &other, now),
        Err(CaError::Invalid(_))
    ));
    assert!(matches!(
        Authority::load(&paths, &td(), now + 25 * HOUR),
        Err(CaError::SigningCaExpired(_))
    ));
    // Swap in another CA's signing key.
    let other_dir = tempfile::tempdir().unwrap();
    let other_paths = init(other_dir.path(), &td(), now, &options()).unwrap();
    std::fs::copy(&other_paths.signing_key, &paths.signing_key).unwrap();
    let error = Authority::load(&paths, &td(), now).unwrap_err();
    assert!(error.to_string().contains("does not match"), "{error}");
}

#[test]
fn signed_svid_carries_attested_id_and_grant() {
    let (_dir, authority) = fresh_ca();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr_der = rcgen::CertificateParams::new(vec!["evil.example".to_owned()])
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let csr = VerifiedCsr::from_der(csr_der.der()).unwrap();
    let id = SpiffeId::new("spiffe://example.org/ci/runner").unwrap();
    let extension = GrantExtension {
        grant_id: "g".to_owned(),
        task_id: "t".to_owned(),
        entitlement: "e".to_owned(),
        actions: vec!["a".to_owned()],
        epoch: "e".to_owned(),
        break_glass: false,
        parent_grant_ids: Vec::new(),
    };
    let now = SystemTime::now();
    let signed = authority
        .sign_x509_svid(
            &csr,
            LeafRequest {
                spiffe_id: &id,
                expires_at: now + 300 * Duration::from_secs(1),
                dns_names: &[],
                ip_addresses: &[],
            },
            &extension,
            &[0x42; 20],
            now,
        )
        .unwrap();
    assert_eq!(signed.chain.len(), 2);
    let (_, leaf) = parse_x509_certificate(signed.chain[0].as_ref()).unwrap();
    let uris: Vec<_> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|name| name.to_string())
        .collect();
    assert_eq!(uris, ["URI(spiffe://example.org/ci/runner)"]);
    assert_eq!(leaf.raw_serial_as_string().replace(':', ""), signed.serial);
    assert_eq!(
        GrantExtension::from_certificate(signed.chain[0].as_ref()).unwrap(),
        extension
    );
    let ext_oid = x509_parser::der_parser::oid::Oid::from(GRANT_EXTENSION_OID).unwrap();
    assert!(
        !leaf
            .get_extension_unique(&ext_oid)
            .unwrap()
            .unwrap()
            .critical
    );
}

#[test]
fn credentials_never_outlive_the_signing_ca() {
    let (_dir, authority) = fresh_ca();
    let id = SpiffeId::new("spiffe://example.org/svc/a").unwrap();
    let now = SystemTime::now();
    let issued = authority
        .issue_server_identity(
            LeafRequest {
                spiffe_id: &id,
                expires_at: now + 1000 * HOUR,
                dns_names: &[],
                ip_addresses: &[],
            },
            now,
        )
        .unwrap();
    assert_eq!(issued.not_after, authority.signing_not_after());
    let foreign = SpiffeId::new("spiffe://other.org/svc/a").unwrap();
    let error = authority
        .issue_server_identity(
            LeafRequest {
                spiffe_id: &foreign,
                expires_at: now + HOUR,
                dns_names: &[],
                ip_addresses: &[],
            },
            now,
        )
        .unwrap_err();
    assert!(matches!(error, CaError::ForeignId(_)));
    assert!(!format!("{issued:?}").contains(&format!("{:?}", &issued.key_pkcs8[..8])));
}

fn svid_claims() -> JwtSvidClaims {
    JwtSvidClaims {
        sub: "spiffe://example.org/a".to_owned(),
        aud: vec!["x".to_owned()],
        exp: 2_000_000_000,
        iat: 1_000_000_000,
        jti: "j".to_owned(),
        scope: "a b".to_owned(),
        jitid_grant: "g".to_owned(),
        jitid_task: "t".to_owned(),
        jitid_entitlement: "e".to_owned(),
        jitid_epoch: "x".to_owned(),
        jitid_break_glass: false,
        jitid_parents: Vec::new(),
        act: None,
        cnf: None,
    }
}

#[test]
fn only_a_jwt_svid_typ_verifies_as_a_jwt_svid() {
    let (_dir, authority) = fresh_ca();
    let now = SystemTime::now();
    let svid = authority.sign_jwt_svid(&svid_claims()).unwrap();
    assert!(authority.verify_jwt_svid(&svid, "x", now).is_ok());
    let jose = authority.jwt_key.sign("JOSE", &svid_claims()).unwrap();
    assert!(authority.verify_jwt_svid(&jose, "x", now).is_ok());
    // Even with the JWT-SVID key, a checkpoint's typ is not an SVID's.
    let checkpoint = authority
        .jwt_key
        .sign("jitid-audit-checkpoint+jwt", &svid_claims())
        .unwrap();
    match authority.verify_jwt_svid(&checkpoint, "x", now) {
        Err(PresentedError::Invalid(message)) => {
            assert!(message.contains("is not a JWT-SVID's"), "{message}");
        }
        other => panic!("a checkpoint typ verified as an SVID: {other:?}"),
    }
}

#[test]
fn checkpoints_have_their_own_key_outside_the_bundle() {
    let (_dir, authority) = fresh_ca();
    let now = SystemTime::now();
    // Whatever its typ and claims, a document signed with the audit key
    // never verifies as a JWT-SVID: the bundle does not have that key.
    for typ in ["JOSE", "jitid-audit-checkpoint+jwt"] {
        let document = authority.sign_jws(typ, &svid_claims()).unwrap();
        assert!(
            authority.verify_jwt_svid(&document, "x", now).is_err(),
            "{typ}"
        );
    }
    let audit_kid = &authority.document_authorities()[0].kid;
    assert!(
        authority
            .bundle()
            .jwt_authorities
            .iter()
            .all(|key| key.kid != *audit_kid),
        "the audit key is not a JWT-SVID authority"
    );
    let jwks = authority.document_jwks_json();
    let keys = crate::ca::TrustBundle::document_authorities_from_json(&jwks).unwrap();
    assert_eq!(keys[0].kid, *audit_kid);
    assert!(crate::ca::TrustBundle::jwt_authorities_from_json(&jwks).is_err());
}

#[test]
fn a_ca_without_the_audit_key_names_the_command_that_adds_it() {
    let (dir, _) = fresh_ca();
    let paths = CaPaths::in_dir(dir.path());
    std::fs::remove_file(&paths.audit_key).unwrap();
    let trust_domain = td();
    let error = Authority::load(&paths, &trust_domain, SystemTime::now()).unwrap_err();
    assert!(matches!(error, CaError::NoAuditKey(_)), "{error:?}");
    assert!(
        error.to_string().contains("jitid ca add-audit-key --dir"),
        "{error}"
    );
    crate::ca::add_audit_key(dir.path()).unwrap();
    Authority::load(&paths, &trust_domain, SystemTime::now()).unwrap();
    assert!(
        crate::ca::add_audit_key(dir.path()).is_err(),
        "never overwritten"
    );
}

#[test]
fn jwt_header_has_exactly_alg_kid_typ() {
    let (_dir, authority) = fresh_ca();
    let token = authority.sign_jwt_svid(&svid_claims()).unwrap();
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    let mut keys: Vec<_> = header.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["alg", "kid", "typ"]);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(
        header["kid"],
        authority.bundle().jwt_authorities[0].kid.as_str()
    );
    assert!(format!("{authority:?}").contains("redacted"));
}

/// The extended key usages of a leaf: (serverAuth, clientAuth).
fn eku(leaf: &X509Certificate<'_>) -> (bool, bool) {
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    (eku.server_auth, eku.client_auth)
}

#[test]
fn attestation_identities_come_from_their_own_ca_and_never_pass_for_svids() {
    let (_dir, authority) = fresh_ca();
    let id = SpiffeId::new("spiffe://example.org/ci/runner").unwrap();
    let now = SystemTime::now();
    let request = LeafRequest {
        spiffe_id: &id,
        expires_at: now + 1000 * HOUR,
        dns_names: &[],
        ip_addresses: &[],
    };
    let issued = authority.issue_attestation_identity(request, now).unwrap();
    // Clamped to the attestation CA, and chained to it, not to the signing CA.
    assert_eq!(issued.not_after, authority.attestation_not_after());
    assert_eq!(&issued.chain[1], authority.attestation_cert());
    assert_ne!(issued.chain[1], authority.signing_cert);
    let (_, leaf) = parse_x509_certificate(issued.chain[0].as_ref()).unwrap();
    assert_eq!(leaf.raw_serial_as_string().replace(':', ""), issued.serial);
    assert!(crate::extension::is_attestation_identity(&leaf));
    assert_eq!(eku(&leaf), (false, true), "clientAuth only");
    let marker =
        x509_parser::der_parser::oid::Oid::from(crate::extension::IDENTITY_MARKER_OID).unwrap();
    assert!(
        !leaf
            .get_extension_unique(&marker)
            .unwrap()
            .unwrap()
            .critical
    );
    let (_, signer) = parse_x509_certificate(issued.chain[1].as_ref()).unwrap();
    assert!(
        signer
            .subject()
            .to_string()
            .contains("jitid attestation CA example.org")
    );
    assert!(matches!(
        signer
            .basic_constraints()
            .unwrap()
            .unwrap()
            .value
            .path_len_constraint,
        Some(0)
    ));

    // Offline, Verify names it for what it is.
    match authority.verify_x509_svid(&issued.chain, now) {
        Err(PresentedError::Invalid(message)) => {
            assert!(
                message.contains("an attestation identity, not an SVID"),
                "{message}"
            );
        }
        other => panic!("an attestation identity verified as an SVID: {other:?}"),
    }

    // From a CSR: the caller's key, the attested ID, the same shape.
    let key = rcgen::KeyPair::generate().unwrap();
    let csr_der = rcgen::CertificateParams::new(vec!["evil.example".to_owned()])
        .unwrap()
        .serialize_request(&key)
        .unwrap();
    let csr = VerifiedCsr::from_der(csr_der.der()).unwrap();
    let signed = authority
        .sign_attestation_identity(&csr, &id, now + HOUR, now)
        .unwrap();
    let (_, leaf) = parse_x509_certificate(signed.chain[0].as_ref()).unwrap();
    assert!(crate::extension::is_attestation_identity(&leaf));
    assert_eq!(eku(&leaf), (false, true));
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    assert!(uri_sans(&leaf).unwrap() == ["spiffe://example.org/ci/runner"]);

    // The server's own certificate stays on the signing CA, unmarked.
    let server = authority.issue_server_identity(request, now).unwrap();
    let (_, leaf) = parse_x509_certificate(server.chain[0].as_ref()).unwrap();
    assert!(!crate::extension::is_attestation_identity(&leaf));
    assert_eq!(eku(&leaf), (true, true));
    assert_eq!(server.chain[1], authority.signing_cert);

    let foreign = SpiffeId::new("spiffe://other.org/ci/runner").unwrap();
    assert!(matches!(
        authority.sign_attestation_identity(&csr, &foreign, now + HOUR, now),
        Err(CaError::ForeignId(_))
    ));
}

#[test]
fn a_ca_without_the_attestation_ca_names_the_command_that_adds_it() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let paths = init(dir.path(), &td(), now, &options()).unwrap();
    std::fs::remove_file(&paths.attestation_cert).unwrap();
    std::fs::remove_file(&paths.attestation_key).unwrap();
    let error = Authority::load(&paths, &td(), now).unwrap_err();
    assert!(matches!(error, CaError::NoAttestationCa(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("jitid ca add-attestation-ca --dir"),
        "{error}"
    );

    let (trust_domain, added) = add_attestation_ca(dir.path(), None, now, 24 * HOUR).unwrap();
    assert_eq!(trust_domain, td());
    assert_eq!(added, paths);
    let mode = std::fs::metadata(&paths.attestation_key)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let authority = Authority::load(&paths, &td(), now).unwrap();
    assert!(authority.attestation_not_after() <= now + 48 * HOUR);
    // Never over an existing one.
    let again = add_attestation_ca(dir.path(), None, now, HOUR).unwrap_err();
    assert!(
        again.to_string().contains("refusing to overwrite"),
        "{again}"
    );
}

#[test]
fn load_refuses_an_attestation_ca_of_another_root_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let paths = init(dir.path(), &td(), now, &options()).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = init(other_dir.path(), &td(), now, &options()).unwrap();
    std::fs::copy(&other.attestation_key, &paths.attestation_key).unwrap();
    let error = Authority::load(&paths, &td(), now).unwrap_err();
    assert!(error.to_string().contains("does not match"), "{error}");
    std::fs::copy(&other.attestation_cert, &paths.attestation_cert).unwrap();
    let error = Authority::load(&paths, &td(), now).unwrap_err();
    assert!(
        error.to_string().contains("attestation.pem")
            && error.to_string().contains("not signed by a root"),
        "{error}"
    );
}

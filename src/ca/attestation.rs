//! The attestation CA: the intermediate that signs attestation identities
//! and nothing else. Created by `init` beside the signing CA (or added to
//! an older CA directory by [`add_attestation_ca`]), loaded by
//! [`Authority::load`], and used by [`Authority::issue_attestation_identity`]
//! (a key made here, for `jitid ca issue-identity` and `jitid dev`) and
//! [`Authority::sign_attestation_identity`] (the caller's key, from a CSR:
//! renewal and join tokens).
//!
//! Its identities are X509-SVID-shaped leaves with EKU clientAuth only and
//! the attestation identity marker, so neither a SPIFFE peer verifier nor
//! `Verify` takes one for an SVID; and since the server trusts this CA
//! alone for attestation by default, no SVID attests a caller.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;

use super::x509::{LeafTemplate, ca_params, hex, leaf_params, random_serial};
use super::{
    Authority, BACKDATE, CaError, CaPaths, IssuedIdentity, LeafRequest, SignedX509, VerifiedCsr,
    asn1_time, check_signing_cert, intermediate_issuer, parse_cert, read_certs, root_key_path,
};
use crate::keyfile::{self, KEY_MODE, KeyFileError, PUBLIC_MODE};
use crate::spiffe_id::{SpiffeId, TrustDomain};

/// The loaded attestation CA.
pub(super) struct AttestationCa {
    cert: CertificateDer<'static>,
    not_after: SystemTime,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// Makes the attestation CA's certificate and key, signed by the root.
pub(super) fn create(
    trust_domain: &TrustDomain,
    root: &rcgen::Issuer<'_, impl rcgen::SigningKey>,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<(rcgen::Certificate, rcgen::KeyPair), CaError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let params = ca_params(
        trust_domain,
        &format!("jitid attestation CA {trust_domain}"),
        0,
        not_before,
        not_after,
    )?;
    let cert = params.signed_by(&key, root)?;
    Ok((cert, key))
}

/// Adds an attestation CA, living `ttl` (no longer than the root), to a CA
/// directory made before attestation identities had their own
/// intermediate, for the trust domain its root names. Reads the root key
/// (`root.key` in `dir`, unless `root_key` names another file); refuses to
/// overwrite an attestation CA. Returns the trust domain and the paths.
pub fn add_attestation_ca(
    dir: &Path,
    root_key: Option<&Path>,
    now: SystemTime,
    ttl: Duration,
) -> Result<(TrustDomain, CaPaths), CaError> {
    let paths = CaPaths::in_dir(dir);
    for path in [&paths.attestation_cert, &paths.attestation_key] {
        if path.exists() {
            return Err(KeyFileError::Exists(path.clone()).into());
        }
    }
    let root_key_file = root_key.map_or_else(|| root_key_path(dir), Path::to_owned);
    let root_key_pem = keyfile::read_private(&root_key_file)?;
    let root_key = rcgen::KeyPair::from_pem(&root_key_pem).map_err(|_| CaError::Pem {
        path: root_key_file.clone(),
        what: "not a PKCS#8 private key",
    })?;
    let roots = read_certs(&paths.root_cert)?;
    let root = roots
        .iter()
        .find(|root| {
            parse_cert(root, &paths.root_cert).is_ok_and(|parsed| {
                parsed.public_key().subject_public_key.data.as_ref() == root_key.public_key_raw()
            })
        })
        .ok_or_else(|| {
            CaError::Invalid(format!(
                "{} is not the key of a root in {}",
                root_key_file.display(),
                paths.root_cert.display()
            ))
        })?;
    let parsed_root = parse_cert(root, &paths.root_cert)?;
    let root_not_after = asn1_time(&parsed_root.validity().not_after);
    let trust_domain = super::uri_sans(&parsed_root)
        .unwrap_or_default()
        .into_iter()
        .find_map(|uri| uri.strip_prefix("spiffe://").map(TrustDomain::new))
        .and_then(Result::ok)
        .ok_or_else(|| {
            CaError::Invalid(format!(
                "the root in {} names no trust domain (a spiffe:// URI SAN)",
                paths.root_cert.display()
            ))
        })?;
    let root_issuer = rcgen::Issuer::from_ca_cert_der(root, root_key)?;
    let (cert, key) = create(
        &trust_domain,
        &root_issuer,
        now - Duration::from_secs(60),
        (now + ttl).min(root_not_after),
    )?;
    keyfile::write_new(
        &paths.attestation_key,
        key.serialize_pem().as_bytes(),
        KEY_MODE,
    )?;
    keyfile::write_new(&paths.attestation_cert, cert.pem().as_bytes(), PUBLIC_MODE)?;
    Ok((trust_domain, paths))
}

/// Reads the attestation CA's key (refused if others can read it); a
/// directory without the attestation CA is [`CaError::NoAttestationCa`].
pub(super) fn read_key(paths: &CaPaths) -> Result<String, CaError> {
    if !paths.attestation_cert.exists() && !paths.attestation_key.exists() {
        let dir = paths
            .attestation_cert
            .parent()
            .unwrap_or_else(|| Path::new("."));
        return Err(CaError::NoAttestationCa(dir.to_owned()));
    }
    Ok(keyfile::read_private(&paths.attestation_key)?)
}

// === impl AttestationCa ===

impl AttestationCa {
    /// Loads and checks the attestation CA: a CA of `trust_domain`, signed
    /// by one of `roots`, unexpired at `now`, matching its key.
    pub(super) fn load(
        paths: &CaPaths,
        key_pem: &str,
        roots: &[CertificateDer<'static>],
        trust_domain: &TrustDomain,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        let cert = read_certs(&paths.attestation_cert)?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::Pem {
                path: paths.attestation_cert.clone(),
                what: "no certificate found",
            })?;
        let parsed = parse_cert(&cert, &paths.attestation_cert)?;
        check_signing_cert(&parsed, roots, trust_domain, &paths.root_cert).map_err(|error| {
            CaError::Invalid(format!("{}: {error}", paths.attestation_cert.display()))
        })?;
        let not_after = asn1_time(&parsed.validity().not_after);
        if not_after <= now {
            return Err(CaError::AttestationCaExpired(not_after));
        }
        let issuer = intermediate_issuer(
            &cert,
            &parsed,
            key_pem,
            (&paths.attestation_cert, &paths.attestation_key),
        )?;
        Ok(Self {
            cert,
            not_after,
            issuer,
        })
    }
}

// === impl Authority ===

impl Authority {
    /// The attestation CA's certificate: the default attestation trust
    /// anchor.
    pub fn attestation_cert(&self) -> &CertificateDer<'static> {
        &self.attestation.cert
    }

    /// NotAfter of the attestation CA; no attestation identity outlives it.
    pub fn attestation_not_after(&self) -> SystemTime {
        self.attestation.not_after
    }

    /// Mints a key pair and an attestation identity for it, valid from
    /// `now` (back-dated by [`BACKDATE`]) until `expires_at` (clamped to the
    /// attestation CA's NotAfter). DNS and IP names in `request` are
    /// ignored: an identity is named by its SPIFFE ID alone.
    pub fn issue_attestation_identity(
        &self,
        request: LeafRequest<'_>,
        now: SystemTime,
    ) -> Result<IssuedIdentity, CaError> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let serial = random_serial();
        let (params, not_after) =
            self.identity_params(request.spiffe_id, request.expires_at, &serial, now)?;
        let leaf = params.signed_by(&key_pair, &self.attestation.issuer)?;
        Ok(IssuedIdentity {
            chain: vec![leaf.der().clone(), self.attestation.cert.clone()],
            key_pkcs8: key_pair.serialize_der(),
            serial: hex(&serial),
            not_before: now - BACKDATE,
            not_after,
        })
    }

    /// Signs an attestation identity of `spiffe_id` for the key in `csr`
    /// (whose subject and extensions are ignored), valid as for
    /// [`Authority::issue_attestation_identity`].
    pub fn sign_attestation_identity(
        &self,
        csr: &VerifiedCsr,
        spiffe_id: &SpiffeId,
        expires_at: SystemTime,
        now: SystemTime,
    ) -> Result<SignedX509, CaError> {
        let serial = random_serial();
        let (params, not_after) = self.identity_params(spiffe_id, expires_at, &serial, now)?;
        let leaf = params.signed_by(csr.public_key(), &self.attestation.issuer)?;
        Ok(SignedX509 {
            chain: vec![leaf.der().clone(), self.attestation.cert.clone()],
            serial: hex(&serial),
            not_after,
        })
    }

    fn identity_params(
        &self,
        spiffe_id: &SpiffeId,
        expires_at: SystemTime,
        serial: &[u8],
        now: SystemTime,
    ) -> Result<(rcgen::CertificateParams, SystemTime), CaError> {
        if !spiffe_id.is_member_of(&self.trust_domain) {
            return Err(CaError::ForeignId(spiffe_id.clone()));
        }
        let not_after = expires_at.min(self.attestation.not_after);
        if not_after <= now {
            return Err(CaError::AttestationCaExpired(self.attestation.not_after));
        }
        let params = leaf_params(LeafTemplate {
            spiffe_id,
            serial,
            not_before: now - BACKDATE,
            not_after,
            dns_names: &[],
            ip_addresses: &[],
            extension: None,
            attestation_identity: true,
        })?;
        Ok((params, not_after))
    }
}

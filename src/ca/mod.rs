//! The certificate authority: creates the trust domain's PKI (`init`), loads
//! it ([`Authority::load`]), and signs X509-SVIDs, JWT-SVIDs and attestation
//! identities. Pure apart from reading and writing its own files: every
//! operation takes `now`.
//!
//! Two intermediates sit under the root: the signing CA (`signing.pem`)
//! signs SVIDs and the server's own certificate; the attestation CA
//! (`attestation.pem`, see `attestation.rs`) signs attestation identities
//! and nothing else, so the server can trust it alone for attestation and
//! no SVID ever chains there.

mod attestation;
mod bundle;
mod csr;
mod jwt;
mod verify;
mod x509;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

pub use crate::crypto::certificate_thumbprint;
pub use crate::extension::{
    ExtensionError, GRANT_EXTENSION_OID, GRANT_EXTENSION_OID_STR, GrantExtension,
    IDENTITY_MARKER_OID, IDENTITY_MARKER_OID_STR, is_attestation_identity,
};
pub use attestation::add_attestation_ca;
pub use bundle::{JwtAuthority, REFRESH_HINT, TrustBundle, X509Authority};
pub use csr::{CsrError, MAX_CSR_BYTES, VerifiedCsr};
pub use jwt::{Actor, Confirmation, EcPublicJwk, JwtSvidClaims};
pub use verify::{JwsError, PresentedCredential, PresentedError, verify_jws};
pub use x509::{BACKDATE, hex as serial_hex};

use crate::clock::unix_seconds;
use crate::crypto::der_to_pem;
use crate::keyfile::{self, KEY_MODE, KeyFileError, PUBLIC_MODE};
use crate::spiffe_id::{SpiffeId, TrustDomain};
use jwt::JwtKey;
use x509::{LeafTemplate, ca_params, hex, leaf_params, random_serial};

/// Errors of the certificate authority.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A key or certificate file could not be read or written.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// A PEM file holds no usable object.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        what: &'static str,
    },
    /// The CA's files are inconsistent or unusable.
    #[error("invalid CA: {0}")]
    Invalid(String),
    /// rcgen could not build or sign a certificate.
    #[error("certificate signing failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A JWT could not be signed.
    #[error("JWT signing failed: {0}")]
    Jwt(String),
    /// The ID is not in the CA's trust domain.
    #[error("{0} is not in this CA's trust domain")]
    ForeignId(SpiffeId),
    /// The signing CA has expired or expires before the credential starts.
    #[error("signing CA certificate expired at {} (Unix time)", unix_seconds(*.0))]
    SigningCaExpired(SystemTime),
    /// The CA directory was made before attestation identities had their
    /// own intermediate.
    #[error(
        "{} has no attestation CA (attestation.pem and attestation.key); add one with \
         `jitid ca add-attestation-ca --dir {}` (it needs the root key)",
        .0.display(),
        .0.display()
    )]
    NoAttestationCa(PathBuf),
    /// The CA directory has no key to sign the audit trail's checkpoints
    /// with (made before they had their own).
    #[error(
        "{} is missing: checkpoints of the audit trail have their own key; run `jitid ca add-audit-key --dir {}`",
        .0.display(),
        .0.parent().map(Path::display).map(|dir| dir.to_string()).unwrap_or_default()
    )]
    NoAuditKey(PathBuf),
    /// The attestation CA has expired or expires before the identity starts.
    #[error("attestation CA certificate expired at {} (Unix time)", unix_seconds(*.0))]
    AttestationCaExpired(SystemTime),
}

/// Validity of the CA certificates `init` creates.
#[derive(Debug, Clone, Copy)]
pub struct InitOptions {
    /// Lifetime of the root certificate.
    pub root_ttl: Duration,
    /// Lifetime of the signing intermediate.
    pub signing_ttl: Duration,
}

/// A signed X509-SVID with its chain.
#[derive(Debug, Clone)]
pub struct SignedX509 {
    /// DER certificates, leaf first, then the signing CA.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's serial number, lowercase hex.
    pub serial: String,
    /// The leaf's NotAfter.
    pub not_after: SystemTime,
}

/// A certificate and private key minted by the CA for an identity (an
/// attestation identity or the server's own certificate).
pub struct IssuedIdentity {
    /// DER certificates, leaf first, then the intermediate that signed it.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER private key.
    pub key_pkcs8: Vec<u8>,
    /// The leaf's serial number, lowercase hex.
    pub serial: String,
    /// The leaf's NotBefore (back-dated by [`BACKDATE`]).
    pub not_before: SystemTime,
    /// The leaf's NotAfter.
    pub not_after: SystemTime,
}

/// What a leaf X509-SVID is issued for.
#[derive(Debug, Clone, Copy)]
pub struct LeafRequest<'a> {
    /// The SPIFFE ID (from attestation).
    pub spiffe_id: &'a SpiffeId,
    /// NotAfter wanted; clamped to the signing CA's NotAfter.
    pub expires_at: SystemTime,
    /// DNS SANs besides the URI SAN.
    pub dns_names: &'a [String],
    /// IP SANs besides the URI SAN.
    pub ip_addresses: &'a [IpAddr],
}

/// A loaded certificate authority for one trust domain.
pub struct Authority {
    trust_domain: TrustDomain,
    signing_cert: CertificateDer<'static>,
    signing_not_after: SystemTime,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    jwt_key: JwtKey,
    /// Signs the audit trail's checkpoints: not in the trust bundle.
    audit_key: JwtKey,
    bundle: TrustBundle,
    x509_verifier: Option<std::sync::Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    attestation: attestation::AttestationCa,
}

/// Paths of the certificate authority's files, as written by `jitid ca init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPaths {
    /// Root certificate(s), PEM: the trust anchors of the trust domain.
    pub root_cert: PathBuf,
    /// Signing intermediate certificate, PEM.
    pub signing_cert: PathBuf,
    /// Signing intermediate key, PKCS#8 PEM, mode 0600.
    pub signing_key: PathBuf,
    /// JWT-SVID signing key, PKCS#8 PEM, mode 0600.
    pub jwt_key: PathBuf,
    /// Attestation intermediate certificate, PEM: signs attestation
    /// identities only, and is the server's default attestation trust
    /// anchor.
    pub attestation_cert: PathBuf,
    /// Attestation intermediate key, PKCS#8 PEM, mode 0600.
    pub attestation_key: PathBuf,
    /// The key that signs the audit trail's checkpoints and head lines,
    /// PKCS#8 PEM, mode 0600: never an SVID key.
    pub audit_key: PathBuf,
}

/// Creates a root, a signing intermediate and an attestation intermediate
/// (ECDSA P-256, both living `signing_ttl`) and a JWT signing key in
/// `dir`. Keys are written 0600. Refuses to overwrite any file.
pub fn init(
    dir: &Path,
    trust_domain: &TrustDomain,
    now: SystemTime,
    options: &InitOptions,
) -> Result<CaPaths, CaError> {
    let paths = CaPaths::in_dir(dir);
    let root_key_path = root_key_path(dir);
    for path in [
        &paths.root_cert,
        &root_key_path,
        &paths.signing_cert,
        &paths.signing_key,
        &paths.jwt_key,
        &paths.attestation_cert,
        &paths.attestation_key,
        &paths.audit_key,
    ] {
        if path.exists() {
            return Err(KeyFileError::Exists(path.clone()).into());
        }
    }
    keyfile::create_private_dir(dir)?;

    let not_before = now - Duration::from_secs(60);
    let root_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let root_params = ca_params(
        trust_domain,
        &format!("jitid root CA {trust_domain}"),
        1,
        not_before,
        now + options.root_ttl,
    )?;
    let root_cert = root_params.self_signed(&root_key)?;
    let root_issuer = rcgen::Issuer::new(root_params, &root_key);

    let signing_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let signing_params = ca_params(
        trust_domain,
        &format!("jitid signing CA {trust_domain}"),
        0,
        not_before,
        now + options.signing_ttl.min(options.root_ttl),
    )?;
    let signing_cert = signing_params.signed_by(&signing_key, &root_issuer)?;
    let (attestation_cert, attestation_key) = attestation::create(
        trust_domain,
        &root_issuer,
        not_before,
        now + options.signing_ttl.min(options.root_ttl),
    )?;

    let jwt_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;

    keyfile::write_new(
        &root_key_path,
        root_key.serialize_pem().as_bytes(),
        KEY_MODE,
    )?;
    keyfile::write_new(
        &paths.signing_key,
        signing_key.serialize_pem().as_bytes(),
        KEY_MODE,
    )?;
    keyfile::write_new(&paths.jwt_key, jwt_key.serialize_pem().as_bytes(), KEY_MODE)?;
    add_audit_key(dir)?;
    keyfile::write_new(
        &paths.attestation_key,
        attestation_key.serialize_pem().as_bytes(),
        KEY_MODE,
    )?;
    keyfile::write_new(&paths.root_cert, root_cert.pem().as_bytes(), PUBLIC_MODE)?;
    keyfile::write_new(
        &paths.signing_cert,
        signing_cert.pem().as_bytes(),
        PUBLIC_MODE,
    )?;
    keyfile::write_new(
        &paths.attestation_cert,
        attestation_cert.pem().as_bytes(),
        PUBLIC_MODE,
    )?;
    Ok(paths)
}

/// Writes a new key for the audit trail's checkpoints (`audit.key`,
/// ECDSA P-256, 0600) into a CA directory that has none; `init` writes one
/// too. Refuses to overwrite it.
pub fn add_audit_key(dir: &Path) -> Result<PathBuf, CaError> {
    let path = CaPaths::in_dir(dir).audit_key;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    keyfile::write_new(&path, key.serialize_pem().as_bytes(), KEY_MODE)?;
    Ok(path)
}

/// Where `init` puts the root key. The server never reads it; operators
/// should move it offline.
pub fn root_key_path(dir: &Path) -> PathBuf {
    dir.join("root.key")
}

// === impl CaPaths ===

impl CaPaths {
    /// The standard file names inside a CA directory.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            root_cert: dir.join("root.pem"),
            signing_cert: dir.join("signing.pem"),
            signing_key: dir.join("signing.key"),
            jwt_key: dir.join("jwt.key"),
            attestation_cert: dir.join("attestation.pem"),
            attestation_key: dir.join("attestation.key"),
            audit_key: dir.join("audit.key"),
        }
    }
}

// === impl Authority ===

impl Authority {
    /// Loads and checks the CA's files: key files must be private, the
    /// signing and attestation certificates must be CAs of `trust_domain`
    /// signed by a root, unexpired at `now`, and match their keys. A
    /// directory without the attestation CA is refused with the command
    /// that adds it ([`CaError::NoAttestationCa`]).
    pub fn load(
        paths: &CaPaths,
        trust_domain: &TrustDomain,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        // Key permissions are checked first so a leaked key is reported even
        // when something else is wrong too.
        let signing_key_pem = keyfile::read_private(&paths.signing_key)?;
        let jwt_key_pem = keyfile::read_private(&paths.jwt_key)?;
        let audit_key_pem = match keyfile::read_private(&paths.audit_key) {
            Err(KeyFileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(CaError::NoAuditKey(paths.audit_key.clone()));
            }
            other => other?,
        };
        let attestation_key_pem = attestation::read_key(paths)?;

        let roots = read_certs(&paths.root_cert)?;
        let signing_cert = read_certs(&paths.signing_cert)?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::Pem {
                path: paths.signing_cert.clone(),
                what: "no certificate found",
            })?;

        let mut x509_authorities = Vec::with_capacity(roots.len());
        let mut newest = SystemTime::UNIX_EPOCH;
        for root in &roots {
            let parsed = parse_cert(root, &paths.root_cert)?;
            let key =
                EcPublicJwk::from_uncompressed_point(&parsed.public_key().subject_public_key.data)
                    .ok_or_else(|| {
                        CaError::Invalid(
                            "root certificates must have EC P-256 or P-384 keys".to_owned(),
                        )
                    })?;
            newest = newest.max(asn1_time(&parsed.validity().not_before));
            x509_authorities.push(X509Authority {
                cert: root.clone(),
                key,
            });
        }

        let parsed = parse_cert(&signing_cert, &paths.signing_cert)?;
        check_signing_cert(&parsed, &roots, trust_domain, &paths.root_cert)?;
        let signing_not_after = asn1_time(&parsed.validity().not_after);
        if signing_not_after <= now {
            return Err(CaError::SigningCaExpired(signing_not_after));
        }
        newest = newest.max(asn1_time(&parsed.validity().not_before));

        let issuer = intermediate_issuer(
            &signing_cert,
            &parsed,
            &signing_key_pem,
            (&paths.signing_cert, &paths.signing_key),
        )?;
        let jwt_key = JwtKey::from_pem(&jwt_key_pem)?;
        let audit_key = JwtKey::from_pem(&audit_key_pem)?;
        if audit_key.kid() == jwt_key.kid() {
            return Err(CaError::Invalid(
                "audit.key must not be the JWT-SVID key: checkpoints have their own".to_owned(),
            ));
        }

        let bundle = TrustBundle {
            trust_domain: trust_domain.clone(),
            x509_authorities,
            jwt_authorities: vec![JwtAuthority {
                kid: jwt_key.kid().to_owned(),
                key: jwt_key.public().clone(),
            }],
            // Replicas loading the same files agree on the sequence; a new
            // CA or key has a later NotBefore, so the sequence increases.
            sequence: unix_seconds(newest),
        };

        let x509_verifier = verify::x509_verifier(&roots);
        let attestation = attestation::AttestationCa::load(
            paths,
            &attestation_key_pem,
            &roots,
            trust_domain,
            now,
        )?;
        Ok(Self {
            trust_domain: trust_domain.clone(),
            signing_cert,
            signing_not_after,
            issuer,
            jwt_key,
            audit_key,
            bundle,
            x509_verifier,
            attestation,
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The trust bundle.
    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// NotAfter of the signing CA; no credential outlives it.
    pub fn signing_not_after(&self) -> SystemTime {
        self.signing_not_after
    }

    /// Signs an X509-SVID for the key in `csr`, carrying `extension`, with
    /// the given serial number (positive, at most 20 bytes, not starting
    /// with a zero byte).
    pub fn sign_x509_svid(
        &self,
        csr: &VerifiedCsr,
        request: LeafRequest<'_>,
        extension: &GrantExtension,
        serial: &[u8],
        now: SystemTime,
    ) -> Result<SignedX509, CaError> {
        if serial.is_empty() || serial.len() > 20 || serial[0] == 0 || serial[0] >= 0x80 {
            return Err(CaError::Invalid(
                "serial must be a positive integer of at most 20 bytes".to_owned(),
            ));
        }
        let (params, not_after) = self.leaf(request, serial, Some(extension), now)?;
        let leaf = params.signed_by(csr.public_key(), &self.issuer)?;
        Ok(SignedX509 {
            chain: vec![leaf.der().clone(), self.signing_cert.clone()],
            serial: hex(serial),
            not_after,
        })
    }

    /// Mints a key pair and an X509-SVID for it from the signing CA,
    /// without a grant extension: the server's own certificate (or another
    /// server's, such as a test Redis). Attestation identities come from
    /// [`Authority::issue_attestation_identity`] instead.
    pub fn issue_server_identity(
        &self,
        request: LeafRequest<'_>,
        now: SystemTime,
    ) -> Result<IssuedIdentity, CaError> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let serial = random_serial();
        let (params, not_after) = self.leaf(request, &serial, None, now)?;
        let leaf = params.signed_by(&key_pair, &self.issuer)?;
        Ok(IssuedIdentity {
            chain: vec![leaf.der().clone(), self.signing_cert.clone()],
            key_pkcs8: key_pair.serialize_der(),
            serial: hex(&serial),
            not_before: now - BACKDATE,
            not_after,
        })
    }

    /// Signs JWT-SVID claims.
    pub fn sign_jwt_svid(&self, claims: &JwtSvidClaims) -> Result<String, CaError> {
        self.jwt_key.sign("JWT", claims)
    }

    /// Signs `claims` as a compact JWS with the trust domain's document
    /// key (`audit.key`: ES256, header `typ`, `alg`, `kid`), for documents
    /// other than SVIDs whose format their owner defines (the audit
    /// trail's checkpoints); [`verify_jws`] checks them against
    /// [`Authority::document_authorities`]. The key is not the JWT-SVID
    /// key and not in the trust bundle, and `typ` must name the format
    /// (`JWT` is refused): nothing signed here passes for a JWT-SVID.
    pub fn sign_jws(&self, typ: &str, claims: &impl serde::Serialize) -> Result<String, CaError> {
        if typ.eq_ignore_ascii_case("JWT") {
            return Err(CaError::Jwt(
                "a JWS that is not a JWT-SVID needs its own typ".to_owned(),
            ));
        }
        self.audit_key.sign(typ, claims)
    }

    /// The public key [`Authority::sign_jws`] signs with, to check
    /// checkpoints by.
    pub fn document_authorities(&self) -> Vec<JwtAuthority> {
        vec![JwtAuthority {
            kid: self.audit_key.kid().to_owned(),
            key: self.audit_key.public().clone(),
        }]
    }

    /// [`Authority::document_authorities`] as a JWK Set (`use: audit`), as
    /// `jitid ca audit-key` prints it for `jitid audit verify --bundle`.
    pub fn document_jwks_json(&self) -> Vec<u8> {
        let key = self.audit_key.public();
        serde_json::to_vec(&serde_json::json!({ "keys": [{
            "kty": "EC",
            "crv": key.crv,
            "x": key.x,
            "y": key.y,
            "kid": self.audit_key.kid(),
            "alg": "ES256",
            "use": "audit",
        }]}))
        .unwrap_or_default()
    }

    fn leaf(
        &self,
        request: LeafRequest<'_>,
        serial: &[u8],
        extension: Option<&GrantExtension>,
        now: SystemTime,
    ) -> Result<(rcgen::CertificateParams, SystemTime), CaError> {
        if !request.spiffe_id.is_member_of(&self.trust_domain) {
            return Err(CaError::ForeignId(request.spiffe_id.clone()));
        }
        let not_after = request.expires_at.min(self.signing_not_after);
        if not_after <= now {
            return Err(CaError::SigningCaExpired(self.signing_not_after));
        }
        let params = leaf_params(LeafTemplate {
            spiffe_id: request.spiffe_id,
            serial,
            not_before: now - BACKDATE,
            not_after,
            dns_names: request.dns_names,
            ip_addresses: request.ip_addresses,
            extension: extension.map(GrantExtension::to_rcgen),
            attestation_identity: false,
        })?;
        Ok((params, not_after))
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .field("signing_not_after", &self.signing_not_after)
            .field("signing_key", &"<redacted>")
            .field("jwt_key", &self.jwt_key)
            .field("audit_key", &self.audit_key)
            .finish()
    }
}

// === impl IssuedIdentity ===

impl IssuedIdentity {
    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        self.chain
            .iter()
            .map(|cert| der_to_pem("CERTIFICATE", cert.as_ref()))
            .collect()
    }

    /// The private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        der_to_pem("PRIVATE KEY", &self.key_pkcs8)
    }
}

impl fmt::Debug for IssuedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedIdentity")
            .field("chain", &self.chain.len())
            .field("key_pkcs8", &"<redacted>")
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// Reads every certificate in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let text = keyfile::read_public(path)?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| CaError::Pem {
            path: path.to_owned(),
            what: "malformed PEM",
        })?;
    if certs.is_empty() {
        return Err(CaError::Pem {
            path: path.to_owned(),
            what: "no certificate found",
        });
    }
    Ok(certs)
}

/// The URI SANs of a certificate; `None` when its SAN extension is
/// malformed or duplicated.
pub fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Option<Vec<&'a str>> {
    match cert.subject_alternative_name() {
        Ok(Some(san)) => Some(
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect(),
        ),
        Ok(None) => Some(Vec::new()),
        Err(_) => None,
    }
}

/// Converts an X.509 time to `SystemTime`.
pub fn asn1_time(time: &x509_parser::time::ASN1Time) -> SystemTime {
    let seconds = time.timestamp();
    if seconds >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs())
    }
}

fn parse_cert<'a>(
    der: &'a CertificateDer<'_>,
    path: &Path,
) -> Result<X509Certificate<'a>, CaError> {
    x509_parser::parse_x509_certificate(der.as_ref())
        .map(|(_, cert)| cert)
        .map_err(|_| CaError::Pem {
            path: path.to_owned(),
            what: "not a valid X.509 certificate",
        })
}

/// The rcgen issuer of an intermediate: its certificate (`der`, parsed)
/// and its key, which must be the certificate's; `files` (certificate,
/// key) name them in errors.
fn intermediate_issuer(
    der: &CertificateDer<'static>,
    parsed: &X509Certificate<'_>,
    key_pem: &str,
    files: (&Path, &Path),
) -> Result<rcgen::Issuer<'static, rcgen::KeyPair>, CaError> {
    let (cert_path, key_path) = files;
    let key_pair = rcgen::KeyPair::from_pem(key_pem).map_err(|_| CaError::Pem {
        path: key_path.to_owned(),
        what: "not a PKCS#8 private key",
    })?;
    if key_pair.public_key_raw() != parsed.public_key().subject_public_key.data.as_ref() {
        return Err(CaError::Invalid(format!(
            "{} does not match {}",
            key_path.display(),
            cert_path.display()
        )));
    }
    Ok(rcgen::Issuer::from_ca_cert_der(der, key_pair)?)
}

fn check_signing_cert(
    cert: &X509Certificate<'_>,
    roots: &[CertificateDer<'_>],
    trust_domain: &TrustDomain,
    roots_path: &Path,
) -> Result<(), CaError> {
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let can_sign = matches!(cert.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign());
    if !is_ca || !can_sign {
        return Err(CaError::Invalid(
            "signing certificate must have cA=true and keyCertSign".to_owned(),
        ));
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && *uri != trust_domain.id_string()
            {
                return Err(CaError::Invalid(format!(
                    "signing certificate names {uri}, not {}",
                    trust_domain.id_string()
                )));
            }
        }
    }
    let signed_by_root = roots.iter().any(|root| {
        x509_parser::parse_x509_certificate(root.as_ref())
            .map(|(_, root)| cert.verify_signature(Some(root.public_key())).is_ok())
            .unwrap_or(false)
    });
    if !signed_by_root {
        return Err(CaError::Invalid(format!(
            "signing certificate is not signed by a root in {}",
            roots_path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

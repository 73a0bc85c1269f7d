//! What a client asks for and what it gets back: [`SvidRequest`], the SVIDs
//! with the grant they were issued under, and the trust bundle.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;

use crate::ClientError;
use crate::proto::v1 as pb;

/// What to ask for; see `jitid.v1.GrantSpec`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SvidRequest {
    /// Entitlement name, or empty to let the server pick one by actions.
    pub entitlement: String,
    /// Actions, a subset of the entitlement's; empty for all of them.
    pub actions: Vec<String>,
    /// Task id; empty lets the server generate one.
    pub task_id: String,
    /// TTL; `None` for the entitlement's default.
    pub ttl: Option<Duration>,
    /// Why the credential is needed.
    pub justification: String,
    /// A change or incident ticket reference.
    pub ticket: String,
    /// An emergency (break-glass) request.
    pub break_glass: bool,
    /// Labels for the entitlement's conditions.
    pub labels: BTreeMap<String, String>,
    /// Mint under this existing active grant instead of creating one.
    pub grant_id: String,
    /// Bind a JWT-SVID to our attestation certificate (`cnf`, RFC 8705).
    pub bind_to_certificate: bool,
}

/// The grant a credential was issued under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantInfo {
    /// Grant id.
    pub grant_id: String,
    /// The SPIFFE ID the credential names.
    pub spiffe_id: String,
    /// Entitlement used.
    pub entitlement: String,
    /// Actions granted.
    pub actions: Vec<String>,
    /// Task id.
    pub task_id: String,
    /// When grant and credential expire.
    pub expires_at: SystemTime,
}

/// An X.509-SVID with the private key generated for it.
#[derive(Clone)]
pub struct X509Svid {
    /// DER chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER private key; never left this process.
    pub key_pkcs8: Vec<u8>,
    /// DER trust anchors of the trust domain.
    pub bundle: Vec<CertificateDer<'static>>,
    /// Leaf serial, lowercase hex.
    pub serial: String,
    /// The grant.
    pub grant: GrantInfo,
}

/// A JWT-SVID.
#[derive(Clone)]
pub struct JwtSvid {
    /// The compact JWS. A bearer credential: never log it.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// The grant.
    pub grant: GrantInfo,
}

/// The trust bundle as served.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Trust domain name.
    pub trust_domain: String,
    /// SPIFFE bundle JSON.
    pub spiffe_json: Vec<u8>,
    /// DER root certificates.
    pub x509_authorities: Vec<CertificateDer<'static>>,
    /// `spiffe_sequence`.
    pub sequence: u64,
}

// === impl SvidRequest ===

impl SvidRequest {
    /// A request for the whole action set of `name`.
    pub fn entitlement(name: &str) -> Self {
        Self {
            entitlement: name.to_owned(),
            ..Self::default()
        }
    }

    /// A request for `actions`, under whichever entitlement covers them.
    pub fn actions<S: AsRef<str>>(actions: &[S]) -> Self {
        Self {
            actions: actions.iter().map(|a| a.as_ref().to_owned()).collect(),
            ..Self::default()
        }
    }

    /// Narrows the request to `actions`.
    pub fn with_actions<S: AsRef<str>>(mut self, actions: &[S]) -> Self {
        self.actions = actions.iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// Sets the task id.
    pub fn task(mut self, task_id: &str) -> Self {
        self.task_id = task_id.to_owned();
        self
    }

    /// Sets the TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the justification.
    pub fn justification(mut self, text: &str) -> Self {
        self.justification = text.to_owned();
        self
    }

    /// Sets the ticket reference.
    pub fn ticket(mut self, reference: &str) -> Self {
        self.ticket = reference.to_owned();
        self
    }

    /// A credential under an existing active grant of the caller (say, one
    /// approved after [`Client::request_grant`](crate::Client::request_grant)).
    pub fn under_grant(grant_id: &str) -> Self {
        Self {
            grant_id: grant_id.to_owned(),
            ..Self::default()
        }
    }

    /// Marks the request as break-glass.
    pub fn break_glass(mut self) -> Self {
        self.break_glass = true;
        self
    }

    /// Adds a label for the entitlement's conditions.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Binds a JWT-SVID to our attestation certificate: relying parties
    /// accept it only from a peer presenting that certificate.
    pub fn bound_to_certificate(mut self) -> Self {
        self.bind_to_certificate = true;
        self
    }

    pub(crate) fn to_proto(&self) -> pb::GrantSpec {
        pb::GrantSpec {
            entitlement: self.entitlement.clone(),
            actions: self.actions.clone(),
            task_id: self.task_id.clone(),
            ttl: self.ttl.map(|ttl| prost_types::Duration {
                seconds: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(ttl.subsec_nanos()).unwrap_or(0),
            }),
            justification: self.justification.clone(),
            ticket: self.ticket.clone(),
            break_glass: self.break_glass,
            labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            grant_id: self.grant_id.clone(),
        }
    }
}

// === impl X509Svid / JwtSvid ===

impl X509Svid {
    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        pem_certs(&self.chain)
    }

    /// The private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        crate::crypto::der_to_pem("PRIVATE KEY", &self.key_pkcs8)
    }

    /// The trust anchors as PEM.
    pub fn bundle_pem(&self) -> String {
        pem_certs(&self.bundle)
    }
}

impl fmt::Debug for X509Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Svid")
            .field("serial", &self.serial)
            .field("grant", &self.grant)
            .field("key_pkcs8", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSvid")
            .field("jti", &self.jti)
            .field("grant", &self.grant)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A new P-256 key and a DER CSR for it (no subject: the SVID's identity
/// comes from attestation). What [`Client::fetch_x509_svid`](crate::Client::fetch_x509_svid)
/// sends, for callers that make their own requests (`jitid bench`).
pub fn new_key_and_csr() -> Result<(rcgen::KeyPair, Vec<u8>), rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?.der().to_vec();
    Ok((key, csr))
}

pub(crate) fn grant_info(grant: Option<pb::GrantSummary>) -> Result<GrantInfo, ClientError> {
    let grant = grant.ok_or_else(|| ClientError::InvalidResponse("no grant summary".to_owned()))?;
    let expires = grant
        .expires_at
        .ok_or_else(|| ClientError::InvalidResponse("grant has no expiry".to_owned()))?;
    let expires_at = crate::convert::system_time(&expires).ok_or_else(|| {
        ClientError::InvalidResponse("grant expiry before 1970 or malformed".to_owned())
    })?;
    Ok(GrantInfo {
        grant_id: grant.grant_id,
        spiffe_id: grant.spiffe_id,
        entitlement: grant.entitlement,
        actions: grant.actions,
        task_id: grant.task_id,
        expires_at,
    })
}

fn pem_certs(certs: &[CertificateDer<'_>]) -> String {
    certs
        .iter()
        .map(|cert| crate::crypto::der_to_pem("CERTIFICATE", cert.as_ref()))
        .collect()
}

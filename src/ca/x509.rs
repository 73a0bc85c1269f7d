//! Certificate templates: the root, signing and attestation CAs, and leaf
//! X509-SVIDs (workload credentials, the server's own certificate) and
//! attestation identities, each shaped to the X509-SVID rules in
//! shared/spiffe.md.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType, SerialNumber,
};

use crate::spiffe_id::{SpiffeId, TrustDomain};

/// How far NotBefore is back-dated, for verifiers whose clocks run behind.
pub const BACKDATE: Duration = Duration::from_secs(10);

/// What goes into a leaf X509-SVID.
#[derive(Debug)]
pub(crate) struct LeafTemplate<'a> {
    pub(crate) spiffe_id: &'a SpiffeId,
    pub(crate) serial: &'a [u8],
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
    pub(crate) dns_names: &'a [String],
    pub(crate) ip_addresses: &'a [IpAddr],
    pub(crate) extension: Option<CustomExtension>,
    /// An attestation identity: EKU clientAuth only, and the attestation
    /// identity marker, so it can never pass for an SVID.
    pub(crate) attestation_identity: bool,
}

/// Parameters of a CA certificate for `trust_domain`. `path_len` 1 for the
/// root (it signs the intermediates), 0 for the signing and attestation
/// CAs (they sign leaves).
pub(crate) fn ca_params(
    trust_domain: &TrustDomain,
    common_name: &str,
    path_len: u8,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    // A signing certificate's SPIFFE ID is the trust domain's, without a
    // path (X509-SVID §3.1, spiffe.md X-08).
    params.subject_alt_names = vec![SanType::URI(trust_domain.id_string().try_into()?)];
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Parameters of a leaf X509-SVID: exactly one URI SAN, `cA=false`, key
/// usage digitalSignature (critical), EKU serverAuth + clientAuth. An
/// attestation identity has the same shape but EKU clientAuth only and the
/// attestation identity marker.
pub(crate) fn leaf_params(template: LeafTemplate<'_>) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name("");
    let mut names = vec![SanType::URI(template.spiffe_id.as_str().try_into()?)];
    for dns in template.dns_names {
        names.push(SanType::DnsName(dns.as_str().try_into()?));
    }
    names.extend(
        template
            .ip_addresses
            .iter()
            .copied()
            .map(SanType::IpAddress),
    );
    params.subject_alt_names = names;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = if template.attestation_identity {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    } else {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    };
    params.not_before = template.not_before.into();
    params.not_after = template.not_after.into();
    params.serial_number = Some(SerialNumber::from_slice(template.serial));
    params.use_authority_key_identifier_extension = true;
    params.custom_extensions = template.extension.into_iter().collect();
    if template.attestation_identity {
        params
            .custom_extensions
            .push(crate::extension::identity_marker_rcgen());
    }
    Ok(params)
}

/// A random positive 127-bit serial number, as big-endian bytes with no
/// leading zero byte (so its hex form is the same everywhere).
pub(crate) fn random_serial() -> [u8; 16] {
    let mut serial = [0u8; 16];
    // The system RNG failing is unrecoverable; uuid's v4 generator uses the
    // same source, so fall back to it instead of panicking.
    if aws_lc_rs::rand::fill(&mut serial).is_err() {
        serial = uuid::Uuid::new_v4().into_bytes();
    }
    serial[0] &= 0x7f;
    if serial[0] == 0 {
        serial[0] = 0x01;
    }
    serial
}

/// Lowercase hex, as serials are shown everywhere in jitid.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "jitid");
    if !common_name.is_empty() {
        name.push(DnType::CommonName, common_name);
    }
    name
}

//! PKCS#10 certification requests: parse, check proof of possession, and
//! keep only the public key. Subject, SANs and requested extensions are
//! ignored: the SVID's identity comes from attestation.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// Largest accepted CSR, in bytes.
pub const MAX_CSR_BYTES: usize = 8 * 1024;

/// Why a CSR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// No CSR was sent.
    #[error("csr is empty")]
    Empty,
    /// The CSR is larger than [`MAX_CSR_BYTES`].
    #[error("csr is larger than {MAX_CSR_BYTES} bytes")]
    TooLarge,
    /// The bytes are not a DER PKCS#10 request.
    #[error("csr is not a DER PKCS#10 certification request")]
    Malformed,
    /// The request's signature does not verify with its own key.
    #[error("csr signature does not verify (no proof of possession of the key)")]
    BadSignature,
    /// The key type is not supported.
    #[error("csr key type is not supported; use ECDSA P-256 or P-384, Ed25519, or RSA 2048-4096")]
    UnsupportedKey,
    /// An RSA key of an unsupported size.
    #[error("csr RSA key has {0} bits; 2048 to 4096 are accepted")]
    RsaKeySize(usize),
}

/// The public key of a CSR whose signature verified.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    public_key: rcgen::SubjectPublicKeyInfo,
}

impl VerifiedCsr {
    /// Parses a DER CSR and verifies its self-signature.
    pub fn from_der(der: &[u8]) -> Result<Self, CsrError> {
        if der.is_empty() {
            return Err(CsrError::Empty);
        }
        if der.len() > MAX_CSR_BYTES {
            return Err(CsrError::TooLarge);
        }
        let (rest, csr) =
            X509CertificationRequest::from_der(der).map_err(|_| CsrError::Malformed)?;
        if !rest.is_empty() {
            return Err(CsrError::Malformed);
        }
        let spki = &csr.certification_request_info.subject_pki;
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => {
                let bits = rsa.key_size();
                if !(2048..=4096).contains(&bits) {
                    return Err(CsrError::RsaKeySize(bits));
                }
            }
            // Only the curves jitid signs for: a P-521 key would otherwise
            // fail later as a "signature that does not verify".
            Ok(PublicKey::EC(_)) => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|parameters| parameters.as_oid().ok());
                if !curve.is_some_and(|oid| oid == OID_EC_P256 || oid == OID_NIST_EC_P384) {
                    return Err(CsrError::UnsupportedKey);
                }
            }
            Ok(PublicKey::Unknown(_)) => {}
            _ => return Err(CsrError::UnsupportedKey),
        }
        // rcgen recognises exactly the key types jitid signs for
        // (P-256, P-384, Ed25519, RSA); anything else is refused here.
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
            .map_err(|_| CsrError::UnsupportedKey)?;
        csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
        Ok(Self { public_key })
    }

    /// The requester's public key.
    pub fn public_key(&self) -> &rcgen::SubjectPublicKeyInfo {
        &self.public_key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_for(key: &rcgen::KeyPair) -> Vec<u8> {
        let params = rcgen::CertificateParams::new(vec!["ignored.example".to_owned()]).unwrap();
        params.serialize_request(key).unwrap().der().to_vec()
    }

    #[test]
    fn accepts_supported_keys() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            VerifiedCsr::from_der(&csr_for(&key)).unwrap();
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(VerifiedCsr::from_der(b"").unwrap_err(), CsrError::Empty);
        assert_eq!(
            VerifiedCsr::from_der(b"nonsense").unwrap_err(),
            CsrError::Malformed
        );
        assert_eq!(
            VerifiedCsr::from_der(&vec![0x30; MAX_CSR_BYTES + 1]).unwrap_err(),
            CsrError::TooLarge
        );
        // P-521 is refused as a key type, not as a bad signature.
        let p521 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
        assert_eq!(
            VerifiedCsr::from_der(&csr_for(&p521)).unwrap_err(),
            CsrError::UnsupportedKey
        );
        let key = rcgen::KeyPair::generate().unwrap();
        let mut der = csr_for(&key);
        let last = der.len() - 1;
        der[last] ^= 0x01;
        assert_eq!(
            VerifiedCsr::from_der(&der).unwrap_err(),
            CsrError::BadSignature
        );
    }
}

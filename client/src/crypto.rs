//! The pieces of cryptography every layer shares: the one rustls crypto
//! provider (aws-lc-rs), PEM encoding and certificate thumbprints.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The crypto provider jitid uses for every TLS config: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// PEM-encodes one DER object with Unix line endings.
pub fn der_to_pem(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The `x5t#S256` thumbprint of a DER certificate (RFC 8705 §3.1): base64url
/// without padding of its SHA-256, as a `cnf` claim binds a token to it.
pub fn certificate_thumbprint(cert_der: &[u8]) -> String {
    use base64::Engine as _;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

//! The pieces of cryptography every layer shares: the one rustls crypto
//! provider (aws-lc-rs) and PEM encoding.

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

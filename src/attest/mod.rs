//! Attestation: how a caller proves its SPIFFE ID. Each method turns the
//! evidence it is shown into a [`Caller`](crate::issuer::Caller) carrying
//! the [`Attestation`](crate::issuer::Attestation) it was attested by:
//! its method, and the facts policy and the audit trail may use.
//!
//! - [`x509`]: an attestation identity, the mTLS client certificate.
//!
//! The server picks the method from what a request carries; the issuer
//! below sees only the attested caller.

pub mod x509;

pub use x509::{AnchorError, AttestationError, Attestor};

//! Attestation: how a caller proves its SPIFFE ID. Each method turns the
//! evidence it is shown into a [`Caller`](crate::issuer::Caller) carrying
//! the [`Attestation`](crate::issuer::Attestation) it was attested by:
//! its method, and the facts policy and the audit trail may use.
//!
//! - [`x509`]: an attestation identity, the mTLS client certificate.
//! - [`oidc`]: an OIDC token from a configured issuer (a CI platform, a
//!   Kubernetes cluster), sent as `authorization: Bearer`.
//!
//! The server picks the method from what a request carries; the issuer
//! below sees only the attested caller.

pub mod oidc;
pub mod x509;

pub use oidc::{OidcAttestor, OidcError};
pub use x509::{AnchorError, AttestationError, Attestor};

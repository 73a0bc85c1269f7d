//! The jitid client library: what a service embeds to get, rotate and check
//! SPIFFE identities issued by jitid.
#![doc = include_str!("../README.md")]
//!
//! ## Modules
//!
//! The crate root holds the client API: [`Client`] and its configuration,
//! the [`RotatingIdentity`] of a service (which renews its own
//! [`AttestationIdentity`] too), the [`RevocationCache`] of a relying party
//! and the [`TaskIdentity`] of an agent. Beside it, the
//! pieces that the jitid server shares with its clients:
//! - [`spiffe_id`]: SPIFFE IDs and trust domains as always-valid types.
//! - [`extension`]: the X.509 grant extension, shared by the CA and relying
//!   parties.
//! - [`keyfile`], [`crypto`]: secret files and the shared crypto provider.
//! - [`incoming`]: the TLS accept loop that the server and the rotating
//!   identity share.
//! - [`proto`]: generated protobuf and gRPC code, and [`convert`]: its
//!   times, durations and grant states to and from the standard library.

pub mod convert;
pub mod crypto;
pub mod extension;
pub mod incoming;
pub mod keyfile;
pub mod proto;
pub mod spiffe_id;

mod client;
mod config;
mod error;
mod identity;
mod retry;
mod revocation;
mod rotating;
mod svid;
mod task;
mod tls;
mod token;

pub use client::{AuditLines, Client, Connector};
pub use config::{ClientConfig, ClientIdentity};
pub use error::ClientError;
pub use identity::{AttestationIdentity, IdentityTarget};
pub use retry::RetryPolicy;
pub use revocation::{CacheError, CredentialClaims, DEFAULT_MAX_STALENESS, RevocationCache};
pub use rotating::{
    CurrentSvid, PeerError, RenewalSchedule, RotatingIdentity, RotatingIdentityBuilder,
    RotationError, SpiffeIncoming, SpiffePeer, SpiffePeerVerifier, SpiffeTlsStream, SvidResolver,
    TrustBundle,
};
pub use svid::{Bundle, GrantInfo, JwtSvid, SvidRequest, X509Svid, new_key_and_csr};
pub use task::{TaskIdentity, check_confirmation};
pub use token::OidcToken;

/// The Rust examples of the project's README and docs/, compiled as
/// doctests of this crate (they use only `jitid_client`), so a renamed item
/// fails the build; an example that needs a server is `no_run`.
#[cfg(doctest)]
mod docs {
    #[doc = include_str!("../../README.md")]
    struct Readme;
    #[doc = include_str!("../../docs/agents.md")]
    struct Agents;
    #[doc = include_str!("../../docs/services.md")]
    struct Services;
    #[doc = include_str!("../../docs/revocation.md")]
    struct Revocation;
    #[doc = include_str!("../../docs/api.md")]
    struct Api;
    #[doc = include_str!("../../docs/credentials.md")]
    struct Credentials;
}

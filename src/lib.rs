//! jitid: a just-in-time workload identity issuer.
//!
//! Workloads attest their SPIFFE ID over mTLS, ask for one action set for
//! one task, and receive minute-scale X.509-SVIDs or JWT-SVIDs. Each
//! issuance is a grant, recorded in a [`store::GrantStore`].
//!
//! Modules in reading order, from the pure core to the edges:
//! - [`spiffe_id`], [`grant`], [`clock`]: plain data and time.
//! - [`policy`]: the entitlement catalogue and the request-time decision.
//! - [`extension`]: the X.509 grant extension, shared by the CA and relying
//!   parties.
//! - [`ca`]: the trust domain's PKI and signing of SVIDs.
//! - [`store`]: where grants and credentials are recorded.
//! - [`audit`]: the hash-chained audit trail and its writer.
//! - [`issuer`]: the use cases, over the above.
//! - [`attest`]: attestation methods, each turning evidence into an
//!   attested caller.
//! - [`config`], [`keyfile`], [`crypto`]: configuration, secret files and
//!   the shared crypto provider.
//! - [`server`]: gRPC over mTLS; the only module that sees tonic statuses
//!   and peer certificates.
//! - [`incoming`]: the TLS accept loop that the server and the client
//!   library's rotating identity share.
//! - [`client`]: the library workloads embed (its own crate,
//!   `jitid_client`, re-exported here with what reads audit events through it).
//! - [`mod@bench`]: the load generator behind `jitid bench`.
//! - [`dev`]: the one-command development trust domain.
//! - [`proto`]: generated protobuf and gRPC code.
//!
//! [`spiffe_id`], [`extension`], [`keyfile`], [`crypto`], [`incoming`] and
//! [`proto`] are owned by the client crate (`client/`, `jitid_client`),
//! which builds without the server's dependencies; they are re-exported
//! here under their old paths.

pub mod app;
pub mod attest;
pub mod audit;
pub mod bench;
pub mod ca;
pub mod client;
pub mod clock;
pub mod config;
pub mod dev;
pub mod grant;
pub mod issuer;
pub mod policy;
pub mod redis_conn;
pub mod server;
pub mod store;

// Shared with the client crate, which owns them; the paths stay
// `jitid::proto`, `crate::spiffe_id` and so on.
pub use jitid_client::{convert, crypto, extension, incoming, keyfile, proto, spiffe_id};

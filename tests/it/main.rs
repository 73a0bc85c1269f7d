//! Integration tests: the real server over real mTLS on ephemeral ports,
//! driven by the real client library and the built `jitid` binary.

// A test binary has no public API.
#![allow(unreachable_pub, missing_docs)]
// Harness helpers fail the test loudly; that is their job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod approvals;
mod attestation;
mod audit;
mod audit_trail;
mod bench;
mod cli;
mod cli_edges;
mod connections;
mod delegation;
mod docs;
mod exec;
mod identity;
mod issue_jwt;
mod issue_x509;
mod oidc;
mod overload;
mod policy;
mod requests;
mod revocation;
mod rotation;
mod store_conformance;
mod tidy;

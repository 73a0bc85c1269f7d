//! Attestation identities end to end, through the real server over real
//! mTLS (and a real redis-server where replicas share them), the client
//! library and the CLI: renewal (`renew.rs`), revocation and the list
//! (`revoke.rs`), join tokens (`join.rs`), an identity is never an SVID
//! (`not_an_svid.rs`), a rotating identity renews its own (`rotating.rs`),
//! and the commands (`cli.rs`).

mod cli;
mod join;
mod not_an_svid;
mod renew;
mod revoke;
mod rotating;

use std::time::{Duration, SystemTime};

use jitid::audit::{AuditEvent, AuditLog, EventKind};
use jitid::ca::LeafRequest;
use jitid::client::{Client, ClientError, ClientIdentity};
use jitid::spiffe_id::SpiffeId;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::TestEnv;

/// An attestation identity for `id` from the test CA, with its serial.
fn identity_with_serial(env: &TestEnv, id: &str) -> (ClientIdentity, String) {
    let spiffe_id = SpiffeId::new(id).unwrap();
    let now = SystemTime::now();
    let issued = env
        .authority
        .issue_attestation_identity(
            LeafRequest {
                spiffe_id: &spiffe_id,
                expires_at: now + Duration::from_secs(3600),
                dns_names: &[],
                ip_addresses: &[],
            },
            now,
        )
        .unwrap();
    let identity = ClientIdentity::new(
        issued.chain,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_pkcs8)),
    );
    (identity, issued.serial)
}

/// The serial of a DER certificate, lowercase hex.
fn serial_of(cert: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
    jitid::ca::serial_hex(cert.raw_serial())
}

/// The gRPC code of a failed call, and says so if it did not fail.
fn code<T: std::fmt::Debug>(result: &Result<T, ClientError>) -> tonic::Code {
    match result {
        Ok(value) => panic!("expected a refusal, got {value:?}"),
        Err(error) => error.code().unwrap_or(tonic::Code::Unknown),
    }
}

/// Every event of the environment's trail so far.
async fn trail(env: &TestEnv) -> Vec<AuditEvent> {
    env.audit.read(0, 100_000).await.unwrap()
}

/// The events of `kind` in the trail.
async fn events_of(env: &TestEnv, kind: EventKind) -> Vec<AuditEvent> {
    trail(env)
        .await
        .into_iter()
        .filter(|event| event.kind == kind)
        .collect()
}

/// A client of the environment's server without a client certificate.
async fn anonymous(env: &TestEnv) -> Client {
    env.client_with(None).await
}

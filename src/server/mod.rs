//! The gRPC server: accepts TLS connections, attests each client, and
//! serves the `jitid.v1.Issuer` API plus gRPC health and reflection.
//!
//! **API boundary.** This is the only module that knows tonic statuses and
//! peer certificates; the issuer below it sees a [`Caller`](crate::issuer::Caller).

mod admission;
mod audit_query;
mod auth_failures;
mod bearer;
mod grpc;
mod identity;
mod stream_slots;
mod streams;
mod tls;
mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use tls::{PeerInfo, TlsSetupError};

use crate::attest::OidcAttestor;
use crate::config::{AdmissionConfig, ServerIdentityConfig, StreamLimits};
use crate::incoming::ConnectionLimits;
use crate::issuer::Issuer;
use crate::proto::v1::issuer_server::IssuerServer;

/// What the server needs besides the issuer.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// How the server names itself in its own certificate.
    pub identity: ServerIdentityConfig,
    /// DER CA certificates whose client certificates attest callers.
    pub attestation_anchors: Vec<CertificateDer<'static>>,
    /// Largest accepted request message, in bytes.
    pub max_request_bytes: usize,
    /// How many RPCs that do work are taken on at once, and per caller.
    pub admission: AdmissionConfig,
    /// How many connections are taken on, and how long they may be quiet.
    pub connections: ConnectionLimits,
    /// How many long-lived streams are served, in all and per caller.
    pub streams: StreamLimits,
    /// The window authentication failures are tallied over.
    pub failure_window: Duration,
    /// Checks the OIDC tokens callers send as `authorization: Bearer`.
    pub oidc: Arc<OidcAttestor>,
}

/// Most HTTP/2 streams one connection may have open at once. A client
/// past it waits for a stream of its own connection to end; so each
/// connection holds at most this many decoded requests. 100 is the
/// smallest value RFC 9113 recommends.
const MAX_STREAMS_PER_CONNECTION: u32 = 100;

/// Longest wait between HTTP/2 keepalive pings to a connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// How long a peer has to acknowledge a keepalive ping before its
/// connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// gRPC reflection could not be set up.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves on `listener` until `shutdown` resolves, then drains in-flight
/// RPCs and returns.
pub async fn serve(
    listener: TcpListener,
    issuer: Arc<Issuer>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let clock = issuer.clock().clone();
    let clock_for_tokens = clock.clone();
    let server_tls = tls::server_tls(
        issuer.authority(),
        &settings.identity,
        &settings.attestation_anchors,
        clock.as_ref(),
    )?;
    let acceptor = TlsAcceptor::from(server_tls.config);
    let attestor = server_tls.attestor;

    let rotation = tokio::spawn(rotate_server_cert(
        issuer.clone(),
        settings.identity.clone(),
        server_tls.cert_sender,
    ));

    let (incoming, accept_loop) = crate::incoming::accept(
        listener,
        acceptor,
        settings.connections,
        move |tls, remote_addr| {
            let attestation = attestor.attest(tls.get_ref().1.peer_certificates(), clock.now());
            if let Err(error) = &attestation {
                tracing::info!(%remote_addr, %error, "client attestation failed");
            }
            Some(PeerInfo {
                remote_addr,
                attestation,
            })
        },
    );

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<IssuerServer<grpc::IssuerService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let admission = admission::Admission::new(&settings.admission);
    let issuer_service = IssuerServer::new(grpc::IssuerService::new(
        issuer,
        stopped,
        admission,
        settings.streams,
        settings.failure_window,
    ))
    .max_decoding_message_size(settings.max_request_bytes);
    // Streams end when shutdown starts, so draining does not wait on them.
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };

    // Pings keep a live peer's connection from going quiet (its
    // acknowledgements are reads), and find dead peers.
    let keepalive = (settings.connections.idle_timeout / 3).min(KEEPALIVE_INTERVAL);
    let result = tonic::transport::Server::builder()
        .layer(bearer::BearerLayer::new(settings.oidc, clock_for_tokens))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(keepalive))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(issuer_service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    accept_loop.abort();
    rotation.abort();
    tracing::info!("server stopped");
    Ok(result?)
}

/// Re-mints the server's certificate at two thirds of its lifetime; on
/// failure keeps the current one and retries every 10 seconds.
async fn rotate_server_cert(
    issuer: Arc<Issuer>,
    identity: ServerIdentityConfig,
    sender: tokio::sync::watch::Sender<Arc<rustls::sign::CertifiedKey>>,
) {
    let provider = crate::crypto::provider();
    let mut wait = identity.cert_ttl * 2 / 3;
    loop {
        tokio::time::sleep(wait).await;
        let now = issuer.clock().now();
        match tls::mint_server_cert(issuer.authority(), &identity, now, &provider) {
            Ok(cert) => {
                sender.send_replace(Arc::new(cert));
                tracing::info!(spiffe_id = %identity.spiffe_id, "rotated server certificate");
                wait = identity.cert_ttl * 2 / 3;
            }
            Err(error) => {
                tracing::error!(%error, "server certificate rotation failed; keeping the current one");
                wait = Duration::from_secs(10);
            }
        }
    }
}

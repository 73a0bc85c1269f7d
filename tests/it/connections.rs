//! Connection limits: a peer that never speaks after the TLS handshake is
//! cut off at the preface timeout, and one source address cannot hold more
//! than its share of connections.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::support::TestEnv;

/// Upper bound on waiting for the server to act, so a failing test ends
/// instead of hanging; far above the limits under test.
const PATIENCE: Duration = Duration::from_secs(30);

/// A TLS connection to the server that presents no client certificate and
/// then sends nothing: not even the HTTP/2 preface.
async fn silent_connection(env: &TestEnv) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for root in env.roots() {
        roots.add(root).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(jitid::crypto::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(env.addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// Waits until the server closes `connection` (EOF or an error); panics
/// if it is still open after [`PATIENCE`].
async fn closed_by_server(connection: &mut TlsStream<TcpStream>) {
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(PATIENCE, async {
        loop {
            match connection.read(&mut buf).await {
                // HTTP/2 settings the server sends first are fine; what
                // matters is that the connection then ends.
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server left a silent connection open");
}

#[tokio::test]
async fn a_connection_that_never_sends_the_preface_is_closed() {
    let env = TestEnv::start_with_limits("preface_timeout = \"300ms\"").await;
    let mut connection = silent_connection(&env).await.unwrap();
    closed_by_server(&mut connection).await;
    // The server still serves everyone else.
    let client = env.client_for(crate::support::CI_RUNNER).await;
    client.fetch_bundle().await.unwrap();
}

#[tokio::test]
async fn one_source_cannot_hold_more_than_its_connections() {
    let env = TestEnv::start_with_limits("max_connections_per_source = 2").await;
    let first = silent_connection(&env).await.unwrap();
    let _second = silent_connection(&env).await.unwrap();

    // The third from the same address is closed before its handshake.
    let third = silent_connection(&env).await;
    assert!(
        third.is_err(),
        "a third connection from one source was served"
    );

    // Once one closes, its place is free again.
    drop(first);
    let again = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(connection) = silent_connection(&env).await {
                return connection;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(again.is_ok(), "a freed place was never given back");
}

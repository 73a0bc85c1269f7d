//! TLS connections for tonic's `serve_with_incoming`, shared by jitid's
//! server and the client library's rotating identity: an accept loop that
//! runs each handshake in its own task with a deadline, and a stream that
//! carries what was learnt about its peer (tonic hands it to each request
//! as connection info).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server-side TLS connection and what is known of its peer; tonic puts
/// a clone of the peer in each request's extensions.
#[derive(Debug)]
pub struct PeerStream<P> {
    inner: TlsStream<TcpStream>,
    peer: P,
}

/// Accepts connections on `listener` and handshakes each with `acceptor`
/// in its own task; `identify` turns a finished handshake into the peer
/// (or `None` to drop the connection). The loop stops when the returned
/// stream is dropped or the handle aborted.
pub fn accept<P, F>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    identify: F,
) -> (ReceiverStream<io::Result<PeerStream<P>>>, JoinHandle<()>)
where
    P: Send + 'static,
    F: Fn(&TlsStream<TcpStream>, SocketAddr) -> Option<P> + Send + Sync + 'static,
{
    let (connections, incoming) = mpsc::channel(256);
    let identify = Arc::new(identify);
    let accept_loop = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = connections.closed() => return,
            };
            let (tcp, remote_addr) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let identify = identify.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::debug!(%remote_addr, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote_addr, "TLS handshake timed out");
                        return;
                    }
                };
                if let Some(peer) = identify(&tls, remote_addr) {
                    let _ = connections.send(Ok(PeerStream { inner: tls, peer })).await;
                }
            });
        }
    });
    (ReceiverStream::new(incoming), accept_loop)
}

// === impl PeerStream ===

impl<P> PeerStream<P> {
    /// What is known of the peer.
    pub fn peer(&self) -> &P {
        &self.peer
    }
}

impl<P: Clone + Send + Sync + 'static> Connected for PeerStream<P> {
    type ConnectInfo = P;

    fn connect_info(&self) -> P {
        self.peer.clone()
    }
}

impl<P: Unpin> AsyncRead for PeerStream<P> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<P: Unpin> AsyncWrite for PeerStream<P> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

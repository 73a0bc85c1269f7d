//! TLS connections for tonic's `serve_with_incoming`, shared by jitid's
//! server and the client library's rotating identity: an accept loop that
//! caps connections in total and per source address and runs each
//! handshake in its own task with a deadline, and a stream that carries
//! what was learnt about its peer (tonic hands it to each request as
//! connection info) and closes itself when its peer goes quiet.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What an accept loop takes on: connections in total and per source
/// address, and how long a connection may stay quiet. A server that sends
/// HTTP/2 keepalive pings more often than `idle_timeout` keeps every live
/// peer's connection open (each ping's acknowledgement is a read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Most connections open at once from one source address.
    pub max_per_source: usize,
    /// How long a client may take, after the TLS handshake, to send its
    /// first bytes (the HTTP/2 preface).
    pub preface_timeout: Duration,
    /// How long a connection may go without its peer sending anything.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// 4096 connections, 256 per source address, 10 s for the preface,
    /// 5 minutes idle.
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_per_source: 256,
            preface_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// A server-side TLS connection and what is known of its peer; tonic puts
/// a clone of the peer in each request's extensions.
#[derive(Debug)]
pub struct PeerStream<P> {
    inner: TlsStream<TcpStream>,
    peer: P,
    /// Fires when the peer has been quiet too long; reset by each read.
    quiet: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    /// Gives the connection's place back when it closes.
    _slot: Slot,
}

/// The open connections, in total and per source address.
#[derive(Debug, Default)]
struct Occupancy {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// One connection's place in the [`Occupancy`]; given back on drop.
#[derive(Debug)]
struct Slot {
    occupancy: Arc<Mutex<Occupancy>>,
    source: IpAddr,
}

/// Accepts connections on `listener` within `limits` and handshakes each
/// with `acceptor` in its own task; `identify` turns a finished handshake
/// into the peer (or `None` to drop the connection). The loop stops when
/// the returned stream is dropped or the handle aborted.
pub fn accept<P, F>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: ConnectionLimits,
    identify: F,
) -> (ReceiverStream<io::Result<PeerStream<P>>>, JoinHandle<()>)
where
    P: Send + 'static,
    F: Fn(&TlsStream<TcpStream>, SocketAddr) -> Option<P> + Send + Sync + 'static,
{
    let (connections, incoming) = mpsc::channel(256);
    let identify = Arc::new(identify);
    let occupancy = Arc::new(Mutex::new(Occupancy::default()));
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
            // Over a cap, the connection is closed before any TLS work.
            let Some(slot) = Slot::take(&occupancy, remote_addr.ip(), &limits) else {
                tracing::debug!(%remote_addr, "connection refused: over the connection limits");
                continue;
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
                    let stream = PeerStream {
                        inner: tls,
                        peer,
                        quiet: Box::pin(tokio::time::sleep(limits.preface_timeout)),
                        idle_timeout: limits.idle_timeout,
                        _slot: slot,
                    };
                    let _ = connections.send(Ok(stream)).await;
                }
            });
        }
    });
    (ReceiverStream::new(incoming), accept_loop)
}

// === impl Slot ===

impl Slot {
    /// A place for a connection from `source`, if the limits allow one.
    fn take(
        occupancy: &Arc<Mutex<Occupancy>>,
        source: IpAddr,
        limits: &ConnectionLimits,
    ) -> Option<Self> {
        // IPv4 clients of a dual-stack listener count as their IPv4 address.
        let source = source.to_canonical();
        let mut open = occupancy.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= limits.max_connections {
            return None;
        }
        let from_source = open.by_source.entry(source).or_insert(0);
        if *from_source >= limits.max_per_source {
            return None;
        }
        *from_source += 1;
        open.total += 1;
        Some(Self {
            occupancy: occupancy.clone(),
            source,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .occupancy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.by_source.remove(&self.source);
            }
        }
    }
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
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let deadline = Instant::now() + self.idle_timeout;
                    self.quiet.as_mut().reset(deadline);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            // Waiting for the peer: give up once it has been quiet too long.
            Poll::Pending => match self.quiet.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer sent nothing within the preface or idle timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
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

//! A gRPC service whose only credential is a rotating X.509-SVID from
//! jitid. It accepts callers that present an SVID of its trust domain
//! (optionally only `--allow`ed SPIFFE IDs) that jitid has not revoked, and
//! tells each caller which client certificate it saw.
//!
//! ```sh
//! cargo run --example svid_server -- --ca certs/dev/root.pem \
//!     --cert greeter/identity.pem --key greeter/identity.key \
//!     --entitlement greeter --listen 127.0.0.1:50051 \
//!     --allow 'spiffe://example.org/svc/*'
//! ```
//!
//! Prints `listening on ADDR` once it accepts calls, a `svid ...` line per
//! SVID it gets, and a `hello ...` line per call.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use jitid_client::{RevocationCache, RotatingIdentity, SpiffePeer};
use tonic::{Request, Response, Status};

use common::greeter::greeter_server::{Greeter, GreeterServer};
use common::greeter::{HelloReply, HelloRequest};

/// How long revocation entries are kept: longer than any SVID lives.
const REVOCATIONS_KEPT: Duration = Duration::from_secs(3600);
/// How long to wait for the revocation cache before giving up.
const CACHE_DEADLINE: Duration = Duration::from_secs(30);

/// A gRPC greeter served over mTLS with rotating SVIDs from jitid.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    issuer: common::IssuerArgs,
    /// Address to listen on (port 0 picks one; the line `listening on`
    /// says which).
    #[arg(long, env = "GREETER_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Accept only these SPIFFE IDs or patterns (`spiffe://td/prefix/*`);
    /// repeatable. Default: any ID of the trust domain.
    #[arg(long)]
    allow: Vec<String>,
}

struct Hello {
    identity: RotatingIdentity,
}

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let peer = request
            .extensions()
            .get::<SpiffePeer>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no SPIFFE peer"))?;
        let server_serial = self.identity.svid().serial().to_owned();
        println!("hello from={} serial={}", peer.spiffe_id, peer.serial);
        Ok(Response::new(HelloReply {
            message: format!("hello, {}", request.get_ref().name),
            client_spiffe_id: peer.spiffe_id.to_string(),
            client_serial: peer.serial,
            server_serial,
        }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_logging();
    let args = Args::parse();
    let identity = args.issuer.rotating_identity().await?;

    // Revoked callers are refused at their next handshake. The cache fails
    // closed, so wait until it has caught up before accepting anyone.
    let (revocations, _feed) = RevocationCache::follow(identity.client(), REVOCATIONS_KEPT);
    let started = Instant::now();
    while let Err(error) = revocations.ready() {
        if started.elapsed() > CACHE_DEADLINE {
            anyhow::bail!("the revocation cache did not catch up: {error}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut peers = identity.peer_verifier().check_revocation(revocations);
    for pattern in &args.allow {
        peers = peers.allow(pattern)?;
    }

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let incoming = identity.incoming(listener, peers)?;
    tonic::transport::Server::builder()
        .add_service(GreeterServer::new(Hello {
            identity: identity.clone(),
        }))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

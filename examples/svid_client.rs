//! A gRPC client whose only credential is a rotating X.509-SVID from jitid.
//! It calls the greeter of `svid_server` every `--interval` over a new
//! connection (so each call is a new mTLS handshake with the current SVID)
//! and prints what the server saw.
//!
//! ```sh
//! cargo run --example svid_client -- --ca certs/dev/root.pem \
//!     --cert caller/identity.pem --key caller/identity.key \
//!     --entitlement greeter --server https://127.0.0.1:50051 \
//!     --server-id spiffe://example.org/svc/greeter
//! ```
//!
//! Prints a `svid ...` line per SVID it gets, and per call either
//! `call ok local_serial=.. client_serial=.. server_serial=..` (the serial
//! it holds, the one the server saw, the server's) or
//! `call failed local_serial=.. after_serial=.. grant=.. error=..`.

mod common;

use std::time::Duration;

use clap::Parser;
use jitid_client::{RotatingIdentity, SpiffePeerVerifier};

use common::greeter::greeter_client::GreeterClient;
use common::greeter::{HelloReply, HelloRequest};

/// Calls a greeter over mTLS with rotating SVIDs from jitid.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    issuer: common::IssuerArgs,
    /// The greeter's URL.
    #[arg(
        long,
        env = "GREETER_SERVER",
        default_value = "https://127.0.0.1:50051"
    )]
    server: String,
    /// Accept only a server with one of these SPIFFE IDs or patterns;
    /// repeatable. Default: any ID of the trust domain.
    #[arg(long)]
    server_id: Vec<String>,
    /// Time between calls.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Stop after this many calls (default: never).
    #[arg(long)]
    calls: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_logging();
    let args = Args::parse();
    let identity = args.issuer.rotating_identity().await?;
    let mut peers = identity.peer_verifier();
    for pattern in &args.server_id {
        peers = peers.allow(pattern)?;
    }
    let mut ticks = tokio::time::interval(args.interval);
    let mut made = 0u64;
    while args.calls.is_none_or(|calls| made < calls) {
        ticks.tick().await;
        made += 1;
        let local = identity.svid();
        match call(&identity, &args.server, peers.clone()).await {
            Ok(reply) => println!(
                "call ok local_serial={} client_serial={} server_serial={}",
                local.serial(),
                reply.client_serial,
                reply.server_serial
            ),
            // The SVID may rotate while the call connects: the handshake
            // used the one before the call or the one after it.
            Err(error) => println!(
                "call failed local_serial={} after_serial={} grant={} error={error:#}",
                local.serial(),
                identity.svid().serial(),
                local.grant().grant_id
            ),
        }
    }
    Ok(())
}

/// One call over a new connection.
async fn call(
    identity: &RotatingIdentity,
    server: &str,
    peers: SpiffePeerVerifier,
) -> anyhow::Result<HelloReply> {
    let channel = identity.connect(server, peers).await?;
    let reply = GreeterClient::new(channel)
        .say_hello(HelloRequest {
            name: identity.svid().spiffe_id().to_string(),
        })
        .await?;
    Ok(reply.into_inner())
}

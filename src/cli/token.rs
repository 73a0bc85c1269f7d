//! `jitid token create`: a one-time join token for a new host's first
//! attestation identity (admins), printed once and nowhere kept.

use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use super::args::{ConnArgs, connect, duration};
use super::output::{Output, timestamp_text};

const CREATE_HELP: &str = "\
Prints the token alone on stdout (with --output json: the token with its id,
SPIFFE ID and expiry). It is shown once: the server keeps only its hash, the
audit trail only its id. Hand it to the new host over a channel you trust;
there, `jitid identity bootstrap --token T --out DIR` exchanges it, once, for
an attestation identity.

Examples:
  jitid token create --spiffe-id spiffe://example.org/hosts/build-7
  JOIN_TOKEN=$(jitid token create --spiffe-id spiffe://example.org/hosts/build-7 --ttl 30m)";

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a one-time join token that bootstraps an attestation identity
    /// of a SPIFFE ID (admins).
    #[command(after_help = CREATE_HELP)]
    Create {
        /// The SPIFFE ID the identity will carry.
        #[arg(long)]
        spiffe_id: String,
        /// How long the token may wait to be used (at most 24h).
        #[arg(long, default_value = "10m", value_parser = duration)]
        ttl: Duration,
        /// What to print.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

pub(crate) async fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            spiffe_id,
            ttl,
            output,
            conn,
        } => {
            let client = connect(&conn, true).await?;
            let created = client.create_join_token(&spiffe_id, Some(ttl)).await?;
            match output {
                Output::Json => outln!(
                    "{}",
                    json!({
                        "token": created.token,
                        "token_id": created.token_id,
                        "spiffe_id": created.spiffe_id,
                        "expires_at": timestamp_text(created.expires_at.as_ref()),
                    })
                ),
                Output::Text => outln!("{}", created.token),
            }
            Ok(())
        }
    }
}

//! `jitid verify`: check a credential as a relying party would; exit 0
//! only if it is valid.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use jitid::ca;
use jitid::client::ClientError;
use jitid::proto::v1 as pb;
use serde_json::json;

use super::args::{ConnArgs, check_file, connect};
use super::exit::NotValid;
use super::output::{Output, timestamp_text, verify_status_name};

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// A PEM X.509-SVID chain, leaf first.
    #[arg(long, conflicts_with_all = ["jwt"], required_unless_present = "jwt")]
    x509: Option<PathBuf>,
    /// A JWT-SVID.
    #[arg(long, requires = "audience")]
    jwt: Option<String>,
    /// Your own audience, which the JWT must name.
    #[arg(long)]
    audience: Option<String>,
    /// What to print.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    #[command(flatten)]
    conn: ConnArgs,
}

pub(crate) async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let client = connect(&args.conn, true).await?;
    let answer = match (&args.x509, &args.jwt) {
        (Some(path), _) => {
            check_file(path, "--x509")?;
            let chain = ca::read_certs(path)?;
            client.verify_x509(&chain).await
        }
        (None, Some(token)) => {
            let audience = args.audience.as_deref().unwrap_or_default();
            client.verify_jwt(token.trim(), audience).await
        }
        (None, None) => bail!("give --x509 FILE or --jwt TOKEN --audience AUD"),
    };
    let response = match answer {
        // The server is up but its store is not (it could not even check
        // our own attestation): liveness is unknown, which is a verdict.
        Err(ClientError::Status {
            code: tonic::Code::Unavailable,
            message,
            ..
        }) => pb::VerifyResponse {
            status: pb::VerifyStatus::Unknown.into(),
            reason: message,
            ..Default::default()
        },
        answer => answer?,
    };
    let status = verify_status_name(response.status);
    match args.output {
        Output::Json => outln!(
            "{}",
            json!({
                "status": status,
                "reason": response.reason,
                "spiffe_id": response.spiffe_id,
                "grant_id": response.grant_id,
                "entitlement": response.entitlement,
                "actions": response.actions,
                "task_id": response.task_id,
                "credential_id": response.credential_id,
                "expires_at": timestamp_text(response.expires_at.as_ref()),
            })
        ),
        Output::Text => {
            outln!("{status}: {}", response.reason);
            if !response.spiffe_id.is_empty() {
                outln!("spiffe id    {}", response.spiffe_id);
                outln!("grant        {}", response.grant_id);
                outln!("actions      {}", response.actions.join(" "));
                outln!("task         {}", response.task_id);
                outln!(
                    "expires      {}",
                    timestamp_text(response.expires_at.as_ref())
                );
            }
        }
    }
    if status != "VALID" {
        return Err(NotValid {
            status,
            reason: response.reason,
        }
        .into());
    }
    Ok(())
}

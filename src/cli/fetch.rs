//! `jitid fetch x509`, `jitid fetch jwt` and `jitid bundle`: credentials
//! (waiting for approval with `--wait`) and the trust bundle, and the
//! credential files `fetch` and `exec` write.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use jitid::client::{Client, SvidRequest};
use jitid::keyfile::{self, KEY_MODE, PUBLIC_MODE};
use jitid::proto::v1 as pb;
use serde_json::json;

use super::args::{
    ApprovalArgs, ConnArgs, RequestArgs, ServerArgs, connect_anonymous, connect_attested,
};
use super::exit::Refused;
use super::oidc::TokenArgs;
use super::output::{Output, grant_json, print_grant, state_name};

#[derive(Subcommand)]
pub(crate) enum FetchCommand {
    /// Fetch an X.509-SVID: the key is generated here and never sent.
    #[command(after_help = super::help::FETCH_X509)]
    X509(FetchX509Args),
    /// Fetch a JWT-SVID and print it.
    #[command(after_help = super::help::FETCH_JWT)]
    Jwt(FetchJwtArgs),
}

#[derive(Args)]
pub(crate) struct GrantArgs {
    #[command(flatten)]
    request: RequestArgs,
    #[command(flatten)]
    approval: ApprovalArgs,
    /// Mint under this existing active grant (e.g. an approved one).
    #[arg(long, conflicts_with_all = ["entitlement", "actions", "task", "justification", "ticket", "break_glass", "labels", "wait"])]
    grant: Option<String>,
}

#[derive(Args)]
pub(crate) struct FetchX509Args {
    #[command(flatten)]
    grant: GrantArgs,
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// Directory for svid.pem (chain), svid.key (0600) and bundle.pem.
    #[arg(long)]
    out: PathBuf,
    /// What to print.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Args)]
pub(crate) struct FetchJwtArgs {
    #[command(flatten)]
    grant: GrantArgs,
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    token: TokenArgs,
    /// Audience (repeat for several).
    #[arg(long, required = true)]
    audience: Vec<String>,
    /// Bind the token to the --cert identity (`cnf`, RFC 8705): relying
    /// parties accept it only from a peer presenting that certificate.
    #[arg(long)]
    bind: bool,
    /// What to print: the token alone, or JSON with the grant.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum BundleFormat {
    Spiffe,
    Pem,
}

#[derive(Args)]
pub(crate) struct BundleArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "spiffe")]
    format: BundleFormat,
}

/// The X.509-SVID chain, leaf first, in a directory `fetch x509` or `exec`
/// writes.
pub(crate) const SVID_FILE: &str = "svid.pem";
/// Its private key (0600).
pub(crate) const KEY_FILE: &str = "svid.key";
/// The trust anchors.
pub(crate) const BUNDLE_FILE: &str = "bundle.pem";

pub(crate) async fn run(command: FetchCommand) -> anyhow::Result<()> {
    match command {
        FetchCommand::X509(args) => fetch_x509(args).await,
        FetchCommand::Jwt(args) => fetch_jwt(args).await,
    }
}

fn svid_request(args: &GrantArgs) -> SvidRequest {
    SvidRequest {
        grant_id: args.grant.clone().unwrap_or_default(),
        ..args.request.to_svid_request(&args.approval)
    }
}

/// The request to mint with: `request` as given, or with `--wait`, under
/// a grant requested now and approved while we wait (`fetch` and `exec`).
pub(crate) async fn approved_request(
    client: &Client,
    request: SvidRequest,
    approval: &ApprovalArgs,
) -> anyhow::Result<SvidRequest> {
    if !approval.wait {
        return Ok(request);
    }
    let grant = client.request_grant(&request).await?;
    let summary = grant.summary.clone().unwrap_or_default();
    let grant = if grant.state() == pb::GrantState::Pending {
        eprintln!(
            "grant {} for {} is pending approval; an approver runs: jitid approve {}",
            summary.grant_id, summary.entitlement, summary.grant_id
        );
        client.wait_for_grant(&summary.grant_id).await?
    } else {
        grant
    };
    match grant.state() {
        pb::GrantState::Active => {}
        state => {
            return Err(Refused(format!(
                "grant {} was not approved: {}{}",
                summary.grant_id,
                state_name(state.into()),
                if grant.end_reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", grant.end_reason)
                }
            ))
            .into());
        }
    }
    // The TTL went into the grant; the credential lasts as long as it.
    Ok(SvidRequest::under_grant(&summary.grant_id))
}

async fn fetch_x509(args: FetchX509Args) -> anyhow::Result<()> {
    // A directory someone else could write to is refused before anything
    // is issued, so no credential is minted that cannot be kept safe.
    keyfile::create_private_dir(&args.out)?;
    let client = connect_attested(&args.conn, &args.token).await?;
    let request =
        approved_request(&client, svid_request(&args.grant), &args.grant.approval).await?;
    let svid = client.fetch_x509_svid(&request).await?;
    write_svid_files(&args.out, &svid)?;
    match args.output {
        Output::Json => {
            let mut value = grant_json(&svid.grant);
            value["serial"] = json!(svid.serial);
            value["files"] = json!({
                "svid": args.out.join(SVID_FILE),
                "key": args.out.join(KEY_FILE),
                "bundle": args.out.join(BUNDLE_FILE),
            });
            outln!("{value}");
        }
        Output::Text => {
            print_grant(&svid.grant);
            outln!("serial       {}", svid.serial);
            outln!(
                "wrote        {}/svid.pem (chain), svid.key (0600), bundle.pem",
                args.out.display()
            );
        }
    }
    Ok(())
}

/// Writes key first, then chain, then bundle, each atomically, so a reader
/// that sees the new chain also finds the new key.
pub(crate) fn write_svid_files(out: &Path, svid: &jitid::client::X509Svid) -> anyhow::Result<()> {
    keyfile::create_private_dir(out)?;
    keyfile::write_replace(&out.join(KEY_FILE), svid.key_pem().as_bytes(), KEY_MODE)?;
    keyfile::write_replace(
        &out.join(SVID_FILE),
        svid.chain_pem().as_bytes(),
        PUBLIC_MODE,
    )?;
    keyfile::write_replace(
        &out.join(BUNDLE_FILE),
        svid.bundle_pem().as_bytes(),
        PUBLIC_MODE,
    )?;
    Ok(())
}

async fn fetch_jwt(args: FetchJwtArgs) -> anyhow::Result<()> {
    let client = connect_attested(&args.conn, &args.token).await?;
    let mut request =
        approved_request(&client, svid_request(&args.grant), &args.grant.approval).await?;
    request.bind_to_certificate = args.bind;
    let svid = client.fetch_jwt_svid(&request, &args.audience).await?;
    match args.output {
        Output::Json => {
            let mut value = grant_json(&svid.grant);
            value["jti"] = json!(svid.jti);
            value["token"] = json!(svid.token);
            outln!("{value}");
        }
        Output::Text => outln!("{}", svid.token),
    }
    Ok(())
}

pub(crate) async fn bundle(args: BundleArgs) -> anyhow::Result<()> {
    let client = connect_anonymous(&args.server).await?;
    let bundle = client.fetch_bundle().await?;
    match args.format {
        BundleFormat::Spiffe => out!("{}", String::from_utf8_lossy(&bundle.spiffe_json)),
        BundleFormat::Pem => {
            for cert in &bundle.x509_authorities {
                out!(
                    "{}",
                    jitid::crypto::der_to_pem("CERTIFICATE", cert.as_ref())
                );
            }
        }
    }
    Ok(())
}

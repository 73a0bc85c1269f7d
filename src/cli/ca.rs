//! `jitid ca init`, `jitid ca add-attestation-ca` and `jitid ca
//! issue-identity`: creating the trust domain's PKI and minting attestation
//! identities from it offline.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::Subcommand;
use jitid::ca::{self, Authority, InitOptions, LeafRequest};
use jitid::keyfile::{self, KEY_MODE, PUBLIC_MODE};
use jitid::spiffe_id::{SpiffeId, TrustDomain};

use super::args::duration;

#[derive(Subcommand)]
pub(crate) enum CaCommand {
    /// Create a root CA, a signing and an attestation intermediate, and a
    /// JWT key (ECDSA P-256).
    Init {
        /// Trust domain, e.g. example.org.
        #[arg(long)]
        trust_domain: String,
        /// Directory to write into; existing files are never overwritten.
        #[arg(long)]
        dir: PathBuf,
        /// Lifetime of the root.
        #[arg(long, default_value = "87600h", value_parser = duration)]
        root_ttl: Duration,
        /// Lifetime of the signing and attestation intermediates.
        #[arg(long, default_value = "8760h", value_parser = duration)]
        signing_ttl: Duration,
    },
    /// Add the attestation intermediate to a CA directory made before it
    /// existed (needs the root key).
    AddAttestationCa {
        /// The CA directory (root.pem; attestation.pem and attestation.key
        /// are written there).
        #[arg(long, env = "JITID_CA_DIR", default_value = "certs/dev")]
        dir: PathBuf,
        /// The root key, if not DIR/root.key (e.g. brought back from
        /// offline storage).
        #[arg(long)]
        root_key: Option<PathBuf>,
        /// Lifetime of the attestation intermediate (at most the root's).
        #[arg(long, default_value = "8760h", value_parser = duration)]
        ttl: Duration,
    },
    /// Add a key for the audit trail's checkpoints to a CA directory made
    /// before they had their own.
    AddAuditKey {
        /// The CA directory (audit.key is written there, 0600).
        #[arg(long, env = "JITID_CA_DIR", default_value = "certs/dev")]
        dir: PathBuf,
    },
    /// Print the public key that checks the audit trail's checkpoints, as
    /// a JWK Set for `jitid audit verify --bundle`.
    AuditKey {
        /// The CA directory.
        #[arg(long, env = "JITID_CA_DIR", default_value = "certs/dev")]
        dir: PathBuf,
        /// Its trust domain.
        #[arg(long, default_value = "example.org")]
        trust_domain: String,
    },
    /// Mint an attestation identity (certificate + key) for a workload,
    /// offline, from the attestation CA.
    IssueIdentity {
        /// The workload's SPIFFE ID.
        #[arg(long)]
        spiffe_id: String,
        /// Lifetime; the server refuses identities that live longer than
        /// its `[attestation] identity_max_ttl` (24h by default).
        #[arg(long, default_value = "24h", value_parser = duration)]
        ttl: Duration,
        /// Directory for identity.pem and identity.key.
        #[arg(long)]
        out: PathBuf,
        /// The CA directory (attestation.pem, attestation.key).
        #[arg(long, env = "JITID_CA_DIR", default_value = "certs/dev")]
        ca_dir: PathBuf,
    },
}

pub(crate) fn run(command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Init {
            trust_domain,
            dir,
            root_ttl,
            signing_ttl,
        } => {
            let trust_domain = TrustDomain::new(&trust_domain)
                .with_context(|| format!("invalid trust domain {trust_domain:?}"))?;
            let paths = ca::init(
                &dir,
                &trust_domain,
                SystemTime::now(),
                &InitOptions {
                    root_ttl,
                    signing_ttl,
                },
            )?;
            outln!(
                "created CA for trust domain {trust_domain} in {}",
                dir.display()
            );
            outln!("  root certificate     {}", paths.root_cert.display());
            outln!(
                "  root key (0600)      {}  (move it offline; the server does not need it)",
                ca::root_key_path(&dir).display()
            );
            outln!("  signing certificate  {}", paths.signing_cert.display());
            outln!("  signing key (0600)   {}", paths.signing_key.display());
            outln!(
                "  attestation CA       {}",
                paths.attestation_cert.display()
            );
            outln!(
                "  attestation key (0600) {}",
                paths.attestation_key.display()
            );
            outln!("  JWT signing key      {}", paths.jwt_key.display());
            Ok(())
        }
        CaCommand::AddAuditKey { dir } => {
            let path = ca::add_audit_key(&dir)
                .with_context(|| format!("adding the audit key to {}", dir.display()))?;
            outln!("added the audit key {} (0600)", path.display());
            Ok(())
        }
        CaCommand::AuditKey { dir, trust_domain } => {
            let trust_domain = jitid::spiffe_id::TrustDomain::new(&trust_domain)
                .with_context(|| format!("--trust-domain {trust_domain}"))?;
            let authority =
                ca::Authority::load(&ca::CaPaths::in_dir(&dir), &trust_domain, SystemTime::now())
                    .with_context(|| format!("loading the CA in {}", dir.display()))?;
            outln!(
                "{}",
                String::from_utf8_lossy(&authority.document_jwks_json())
            );
            Ok(())
        }
        CaCommand::AddAttestationCa { dir, root_key, ttl } => {
            let (trust_domain, paths) =
                ca::add_attestation_ca(&dir, root_key.as_deref(), SystemTime::now(), ttl)
                    .with_context(|| format!("adding the attestation CA to {}", dir.display()))?;
            outln!(
                "added the attestation CA for trust domain {trust_domain} in {}",
                dir.display()
            );
            outln!(
                "  attestation CA       {}",
                paths.attestation_cert.display()
            );
            outln!(
                "  attestation key (0600) {}",
                paths.attestation_key.display()
            );
            outln!(
                "identities issued before by the signing CA no longer attest: issue new ones \
                 with `jitid ca issue-identity` (or a join token)"
            );
            Ok(())
        }
        CaCommand::IssueIdentity {
            spiffe_id,
            ttl,
            out,
            ca_dir,
        } => {
            let spiffe_id = SpiffeId::new(&spiffe_id)
                .with_context(|| format!("invalid SPIFFE ID {spiffe_id:?}"))?;
            let trust_domain = TrustDomain::new(spiffe_id.trust_domain_name())?;
            let now = SystemTime::now();
            let authority =
                Authority::load(&jitid::config::CaPaths::in_dir(&ca_dir), &trust_domain, now)
                    .with_context(|| format!("loading the CA in {}", ca_dir.display()))?;
            let cert_path = out.join("identity.pem");
            let key_path = out.join("identity.key");
            for path in [&cert_path, &key_path] {
                if path.exists() {
                    bail!(
                        "{} already exists; refusing to overwrite it",
                        path.display()
                    );
                }
            }
            let issued = authority.issue_attestation_identity(
                LeafRequest {
                    spiffe_id: &spiffe_id,
                    expires_at: now + ttl,
                    dns_names: &[],
                    ip_addresses: &[],
                },
                now,
            )?;
            keyfile::create_private_dir(&out)?;
            keyfile::write_new(&key_path, issued.key_pem().as_bytes(), KEY_MODE)?;
            keyfile::write_new(&cert_path, issued.chain_pem().as_bytes(), PUBLIC_MODE)?;
            outln!(
                "issued attestation identity {spiffe_id} (serial {}), valid until {}",
                issued.serial,
                humantime::format_rfc3339_seconds(issued.not_after)
            );
            outln!("  certificate  {}", cert_path.display());
            outln!("  key (0600)   {}", key_path.display());
            Ok(())
        }
    }
}

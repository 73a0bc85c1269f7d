//! The development trust domain behind `jitid dev`: a CA, an example config
//! with realistic entitlements, and demo workload identities (attestation
//! identities from the attestation CA), created once in a directory (by
//! default `certs/dev/`) and reused afterwards; an identity near its end,
//! or from before the attestation CA, is minted again.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::ca::{self, Authority, CaError, InitOptions, LeafRequest};
use crate::config::{CaPaths, Config, ConfigError};
use crate::keyfile::{self, KEY_MODE, PUBLIC_MODE};
use crate::spiffe_id::{SpiffeId, TrustDomain};

/// The dev trust domain (`example.org` is reserved for examples, RFC 2606).
pub const DEV_TRUST_DOMAIN: &str = "example.org";
/// Name of the dev config file inside the dev directory.
pub const CONFIG_FILE: &str = "jitid.toml";
/// Lifetime of demo identities: the default `[attestation]
/// identity_max_ttl`, so the dev server accepts them.
pub const IDENTITY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Demo identities closer than this to expiry are minted again (each
/// `jitid dev`; in between, `jitid identity renew` renews one).
const RENEW_BEFORE: Duration = Duration::from_secs(12 * 3600);

/// Errors setting up the dev trust domain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// The CA could not be created, loaded or used.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The dev config is invalid (edited by hand?).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A demo identity name is not a valid SPIFFE ID.
    #[error("demo identity {0}: invalid SPIFFE ID")]
    Identity(&'static str),
}

/// A demo workload identity.
#[derive(Debug, Clone)]
pub struct DevIdentity {
    /// Short name, also its directory under `identities/`.
    pub name: &'static str,
    /// Its SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// PEM chain.
    pub cert: PathBuf,
    /// PEM key, mode 0600.
    pub key: PathBuf,
}

/// The dev trust domain on disk.
#[derive(Debug, Clone)]
pub struct DevEnv {
    /// The directory, absolute.
    pub dir: PathBuf,
    /// The config file.
    pub config_path: PathBuf,
    /// The CA files.
    pub ca: CaPaths,
    /// Demo identities.
    pub identities: Vec<DevIdentity>,
    /// Whether this call created the CA.
    pub created: bool,
}

/// Demo workloads: (name, SPIFFE ID path).
const DEMO_IDENTITIES: &[(&str, &str)] = &[
    ("ci-runner", "/ci/runner"),
    ("agent", "/agents/planner"),
    ("payments", "/svc/payments"),
    ("ops", "/ops/admin"),
    ("reviewer", "/security/reviewer"),
];

/// Creates whatever of the dev trust domain is missing in `dir` and returns
/// where everything is.
pub fn ensure(dir: &Path, now: SystemTime) -> Result<DevEnv, DevError> {
    keyfile::create_private_dir(dir).map_err(CaError::from)?;
    let dir = dir.canonicalize().map_err(|source| {
        CaError::from(keyfile::KeyFileError::Io {
            path: dir.to_owned(),
            source,
        })
    })?;
    let trust_domain =
        TrustDomain::new(DEV_TRUST_DOMAIN).map_err(|_| DevError::Identity("trust domain"))?;
    let ca_paths = CaPaths::in_dir(&dir);
    let created = !ca_paths.root_cert.exists();
    if !created && !ca_paths.attestation_cert.exists() {
        // A dev directory from before the attestation CA: add it.
        ca::add_attestation_ca(&dir, None, now, DEV_CA_TTL)?;
    }
    if !created && !ca_paths.audit_key.exists() {
        // ...or from before checkpoints had their own key.
        ca::add_audit_key(&dir)?;
    }
    if created {
        ca::init(
            &dir,
            &trust_domain,
            now,
            &InitOptions {
                root_ttl: Duration::from_secs(10 * 365 * 24 * 3600),
                signing_ttl: DEV_CA_TTL,
            },
        )?;
    }

    let config_path = dir.join(CONFIG_FILE);
    if !config_path.exists() {
        keyfile::write_new(&config_path, EXAMPLE_CONFIG.as_bytes(), PUBLIC_MODE)
            .map_err(CaError::from)?;
    }
    // Parse it now so a broken hand edit is reported before anything else.
    Config::load(&config_path)?;

    let authority = Authority::load(&ca_paths, &trust_domain, now)?;
    let mut identities = Vec::with_capacity(DEMO_IDENTITIES.len());
    for &(name, path) in DEMO_IDENTITIES {
        let spiffe_id = trust_domain
            .workload_id(path)
            .map_err(|_| DevError::Identity(name))?;
        let identity_dir = dir.join("identities").join(name);
        let identity = DevIdentity {
            name,
            spiffe_id,
            cert: identity_dir.join("identity.pem"),
            key: identity_dir.join("identity.key"),
        };
        if needs_identity(&identity, now) {
            keyfile::create_private_dir(&identity_dir).map_err(CaError::from)?;
            let issued = authority.issue_attestation_identity(
                LeafRequest {
                    spiffe_id: &identity.spiffe_id,
                    expires_at: now + IDENTITY_TTL,
                    dns_names: &[],
                    ip_addresses: &[],
                },
                now,
            )?;
            keyfile::write_replace(&identity.key, issued.key_pem().as_bytes(), KEY_MODE)
                .map_err(CaError::from)?;
            keyfile::write_replace(&identity.cert, issued.chain_pem().as_bytes(), PUBLIC_MODE)
                .map_err(CaError::from)?;
        }
        identities.push(identity);
    }

    Ok(DevEnv {
        dir,
        config_path,
        ca: ca_paths,
        identities,
        created,
    })
}

/// Lifetime of the dev intermediates.
const DEV_CA_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Whether a demo identity is missing, about to expire, or not an
/// attestation identity (minted before the attestation CA).
fn needs_identity(identity: &DevIdentity, now: SystemTime) -> bool {
    if !identity.key.exists() {
        return true;
    }
    let Ok(certs) = ca::read_certs(&identity.cert) else {
        return true;
    };
    let Some(leaf) = certs.first() else {
        return true;
    };
    match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, cert)) => {
            ca::asn1_time(&cert.validity().not_after) < now + RENEW_BEFORE
                || !ca::is_attestation_identity(&cert)
        }
        Err(_) => true,
    }
}

/// The config `jitid dev` writes: one entitlement per kind of user.
pub const EXAMPLE_CONFIG: &str = r#"# jitid development config, written by `jitid dev`. Edit freely.
# Paths are relative to this file.

trust_domain = "example.org"
listen = "127.0.0.1:8443"
# Callers that may revoke anything and read any grant.
admins = ["spiffe://example.org/ops/*"]
# "memory" (one server, lost on restart) or "redis" (shared by replicas):
store = "memory"
# Conditions see it as context.environment.
environment = "dev"
# [redis]
# url = "redis://127.0.0.1:6379"   # or rediss://..., unix:///run/redis.sock
# wait_replicas = 0                # replicas that must acknowledge a revocation

[ca]
# root.pem, signing.pem + signing.key, attestation.pem + attestation.key,
# jwt.key (keys 0600).
dir = "."

[audit]
# A JSON-lines copy of the hash-chained audit trail, one event a line;
# check it with `jitid audit verify --file audit.jsonl`.
jsonl = "audit.jsonl"
# Who may read the trail (`jitid audit tail|search|report|grant`), besides
# admins.
auditors = ["spiffe://example.org/security/*"]

[server]
# The server's own X509-SVID is minted at startup and rotated.
spiffe_id = "spiffe://example.org/jitid"
dns_names = ["localhost"]
ip_addresses = ["127.0.0.1"]
cert_ttl = "1h"

# CI jobs can attest with their platform's OIDC token instead of a stored
# key (docs/ci.md): uncomment for GitHub Actions. The issuer's keys come
# from jwks_url, or, with no network, from a copy of them in a file.
# [[attestation.oidc]]
# name = "github"
# issuer = "https://token.actions.githubusercontent.com"
# audiences = ["jitid"]
# jwks_file = "github-jwks.json"
# # jwks_url = "https://token.actions.githubusercontent.com/.well-known/jwks"
# spiffe_id = "ci/github/{repository}"     # spiffe://example.org/ci/github/acme/app
# task = "{run_id}-{run_attempt}"
# [attestation.oidc.bound_claims]         # every one must match; * globs
# repository_owner = "acme"

[limits]
max_request_bytes = 65536
max_ttl = "1h"
# Generous for a laptop and `jitid bench`, which mints many credentials from
# one identity; production keeps the defaults (100 requests a second per
# caller, 1000 unexpired grants per subject).
caller_rate = 20000
caller_burst = 20000
max_grants_per_subject = 1000000

[groups]
release = ["spiffe://example.org/ci/*"]
sre = ["spiffe://example.org/ops/*"]
security = ["spiffe://example.org/security/*"]

# Change windows (UTC) that conditions see as context.windows.<name>.
[windows.prod_changes]
days = ["mon", "tue", "wed", "thu"]
start = "09:00"
end = "16:00"

# A CI job publishes what it built.
[[entitlement]]
name = "ci-publish"
owner = "release-engineering"
purpose = "CI jobs read source and publish build artifacts"
actions = ["read:source", "publish:artifacts"]
requesters = ["spiffe://example.org/ci/*"]
default_ttl = "10m"
max_ttl = "30m"

# A release is published only by a CI job that proved itself with its
# platform's OIDC token (never a stored key), from the main branch.
[[entitlement]]
name = "release-from-ci"
owner = "release-engineering"
purpose = "CI jobs on main publish releases, attested by their OIDC token"
actions = ["publish:release"]
requesters = ["spiffe://example.org/ci/*"]
attestation = ["oidc"]
conditions = """
@id("main-only")
@reason("only the main branch releases")
permit (principal, action, resource)
when { context.attestation.method == "oidc" && context.attestation.claims.ref == "refs/heads/main" };
"""

# An AI agent works on one research task, calling tools on the way. Each
# task gets its own identity: spiffe://example.org/agents/planner/task/<id>.
[[entitlement]]
name = "agent-research"
owner = "ml-platform"
purpose = "An agent task reads the knowledge base and calls search and summarise tools"
actions = ["kb:read", "tool:search", "tool:summarize"]
requesters = ["spiffe://example.org/agents/*"]
identity = "per-task"
default_ttl = "5m"
max_ttl = "15m"
# Its tools get narrower identities: `jitid delegate`, `TaskIdentity::delegate`.
delegation_depth = 2

# A production deploy: high risk, so approved by someone in SRE (never the
# requester), only inside the change window, with a justification and a
# change ticket, one at a time. In an emergency, break-glass issues it at
# once for 5 minutes and security reviews the use afterwards.
[[entitlement]]
name = "prod-deploy"
owner = "payments-team"
purpose = "Deploy the payments service to production"
risk = "high"
actions = ["deploy:prod/payments"]
requesters = ["group:release"]
require = ["justification", "ticket"]
max_active = 1
approvers = ["group:sre"]
min_approvals = 1
pending_ttl = "30m"
break_glass = { max_ttl = "5m", reviewers = ["group:security"] }
conditions = """
@id("deploy-in-window")
@reason("production deploys happen inside the prod_changes window")
permit (principal, action, resource) when { context.windows.prod_changes };

@id("change-ticket")
@reason("the ticket must be a change ticket (CHG-...)")
forbid (principal, action, resource)
unless { context.ticket like "CHG-*" || context.break_glass };
"""

# A service talks mTLS to the ledger, rotating its certificate every few minutes.
[[entitlement]]
name = "payments-ledger"
owner = "payments-team"
purpose = "The payments service reads and writes the ledger over mTLS"
actions = ["ledger:read", "ledger:write"]
requesters = ["spiffe://example.org/svc/payments"]
default_ttl = "5m"
max_ttl = "10m"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let first = ensure(dir.path(), now).unwrap();
        assert!(first.created);
        let root = std::fs::read(&first.ca.root_cert).unwrap();
        let key = std::fs::read(&first.identities[0].key).unwrap();

        let second = ensure(dir.path(), now).unwrap();
        assert!(!second.created);
        assert_eq!(std::fs::read(&second.ca.root_cert).unwrap(), root);
        assert_eq!(std::fs::read(&second.identities[0].key).unwrap(), key);

        // An identity about to expire is minted again.
        let later = now + IDENTITY_TTL - Duration::from_secs(3600);
        let third = ensure(dir.path(), later).unwrap();
        assert_ne!(std::fs::read(&third.identities[0].key).unwrap(), key);
    }

    #[tokio::test]
    async fn the_commented_oidc_provider_loads_once_uncommented() {
        let dir = tempfile::tempdir().unwrap();
        let start = EXAMPLE_CONFIG.find("# [[attestation.oidc]]").unwrap();
        let end = EXAMPLE_CONFIG[start..].find("\n\n").unwrap() + start;
        let block = &EXAMPLE_CONFIG[start..end];
        let uncommented: String = block
            .lines()
            .map(|line| line.strip_prefix("# ").unwrap_or(line))
            .filter(|line| !line.starts_with("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let text = EXAMPLE_CONFIG.replace(block, &uncommented);
        assert!(text.contains("\n[[attestation.oidc]]\n"), "{text}");
        std::fs::write(dir.path().join("github-jwks.json"), r#"{"keys": []}"#).unwrap();
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(&path, &text).unwrap();
        let config = Config::load(&path).unwrap();
        let [github] = config.attestation_oidc.as_slice() else {
            panic!("{:?}", config.attestation_oidc);
        };
        assert_eq!(github.name, "github");
        assert_eq!(github.spiffe_id.as_str(), "ci/github/{repository}");
        crate::attest::OidcAttestor::new(
            config.attestation_oidc.clone(),
            config.trust_domain.clone(),
            SystemTime::now(),
        )
        .await
        .unwrap();
        assert!(
            config
                .catalogue
                .entitlement("release-from-ci")
                .and_then(|e| e.attestation.clone())
                .is_some()
        );
    }
}

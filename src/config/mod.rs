//! The server's configuration: one TOML file, parsed once at startup into
//! typed values. Errors name the file and the key.
//!
//! Relative paths in the file are resolved against the file's directory, so
//! a config and its certificates can move together.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::attest::oidc::{
    Binding, BoundClaims, DEFAULT_CLOCK_SKEW, JwksSource, ProviderConfig, Template,
};
use crate::incoming::ConnectionLimits;
use crate::policy::{Catalogue, CatalogueError, IdPattern, TtlLimits};
use crate::spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};
use crate::store::RedisStoreConfig;

pub use crate::ca::CaPaths;
pub use crate::clock::parse_duration;

/// Default address the server listens on.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// Default lifetime of the server's own serving certificate.
pub const DEFAULT_SERVER_CERT_TTL: Duration = Duration::from_secs(3600);
/// Default cap on one request message, in bytes.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Default cap on the RPCs worked on at once (`limits.max_in_flight`).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Default rate limit per caller SPIFFE ID (`limits.caller_rate`,
/// `limits.caller_burst`): 100 requests a second, 200 at once.
pub const DEFAULT_CALLER_RATE: CallerRate = CallerRate {
    per_second: 100.0,
    burst: 200,
};
/// Default lifetime of an attestation identity the server issues
/// (`attestation.identity_ttl`), and the default longest one it accepts
/// (`attestation.identity_max_ttl`).
pub const DEFAULT_IDENTITY_TTL: Duration = Duration::from_secs(24 * 3600);

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("invalid config {path}: {error}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, with line and column (in the message,
        /// so it is not repeated as a cause).
        error: toml::de::Error,
    },
    /// A key has a value that parses but is not acceptable.
    #[error("invalid config {path}: `{key}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The entitlement catalogue is invalid.
    #[error("invalid config {path}: {error}")]
    Catalogue {
        /// The file.
        path: PathBuf,
        /// What is wrong (in the message, so it is not repeated as a cause).
        error: CatalogueError,
    },
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The trust domain this deployment vouches for.
    pub trust_domain: TrustDomain,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the certificate authority's files are.
    pub ca: CaPaths,
    /// The server's own identity.
    pub server: ServerIdentityConfig,
    /// PEM files of the CAs whose client certificates attest callers
    /// (default: the attestation CA, `ca.attestation_cert`).
    pub attestation_trust_anchors: Vec<PathBuf>,
    /// `[[attestation.oidc]]`: the issuers whose tokens attest callers.
    pub attestation_oidc: Vec<ProviderConfig>,
    /// How long attestation identities live (`[attestation] identity_ttl`,
    /// `identity_max_ttl`).
    pub identity: IdentityConfig,
    /// Largest accepted request message, in bytes.
    pub max_request_bytes: usize,
    /// How much work the server takes on: in flight, and per caller.
    pub admission: AdmissionConfig,
    /// `[limits]` on connections: how many, and how long they may be quiet.
    pub connections: ConnectionLimits,
    /// `[limits]` on long-lived streams.
    pub streams: StreamLimits,
    /// Most unexpired grants one subject may hold
    /// (`limits.max_grants_per_subject`).
    pub max_grants_per_subject: usize,
    /// The entitlement catalogue.
    pub catalogue: Catalogue,
    /// The deployment's environment (e.g. `prod`), which conditions see as
    /// `context.environment`.
    pub environment: String,
    /// Callers that may revoke anything and read any grant.
    pub admins: Vec<IdPattern>,
    /// Where grants are recorded.
    pub store: StoreConfig,
    /// The audit trail's sinks and failure mode.
    pub audit: AuditConfig,
    /// `[revocation]`: how relying parties' acknowledgements are judged.
    pub revocation: RevocationConfig,
}

/// The lifetimes of attestation identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityConfig {
    /// What a renewal or a join token gets unless it asks for less
    /// (`identity_ttl`, default [`DEFAULT_IDENTITY_TTL`]).
    pub ttl: Duration,
    /// The longest lifetime the server issues, or accepts at attestation
    /// (`identity_max_ttl`, default [`DEFAULT_IDENTITY_TTL`]); a revocation
    /// by SPIFFE ID is kept that long.
    pub max_ttl: Duration,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_IDENTITY_TTL,
            max_ttl: DEFAULT_IDENTITY_TTL,
        }
    }
}

/// `[limits]` on load: how many RPCs that do work the server takes on at
/// once, and how fast each caller may send them. Requests past either are
/// refused at once with RESOURCE_EXHAUSTED and a retry hint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionConfig {
    /// Most such RPCs worked on at once, server-wide (`max_in_flight`,
    /// default [`DEFAULT_MAX_IN_FLIGHT`]).
    pub max_in_flight: usize,
    /// Each caller's rate limit, if any (`caller_rate`, `caller_burst`;
    /// default [`DEFAULT_CALLER_RATE`], `caller_rate = 0` for none).
    pub caller_rate: Option<CallerRate>,
}

/// A rate limit per caller SPIFFE ID: a bucket of `burst` requests that
/// refills at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallerRate {
    /// Requests per second a caller may sustain.
    pub per_second: f64,
    /// Requests a caller that has been idle may send at once.
    pub burst: u32,
}

impl Default for AdmissionConfig {
    /// [`DEFAULT_MAX_IN_FLIGHT`], [`DEFAULT_CALLER_RATE`].
    fn default() -> Self {
        Self {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            caller_rate: Some(DEFAULT_CALLER_RATE),
        }
    }
}

/// `[revocation]`: proof of removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationConfig {
    /// How long a registered relying party may take to apply a revocation
    /// before `RevocationStatus` flags it (default 5s).
    pub ack_bound: Duration,
    /// How long a relying party stays registered without being heard from
    /// (default 1m; a following cache is heard from every heartbeat).
    pub relying_party_ttl: Duration,
    /// `[revocation.relying_parties]`: each relying-party name, and the
    /// SPIFFE IDs that may follow and acknowledge under it. A name not
    /// here is refused.
    pub relying_parties: BTreeMap<String, IdPattern>,
}

/// `[limits]` on long-lived streams: how many are served at once, in all
/// and per caller. Relying parties following under a name of
/// `[revocation.relying_parties]` do not count against the shared cap of
/// revocation streams, so anonymous followers cannot crowd them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Most `WatchRevocations` streams without a relying-party name
    /// (`max_revocation_streams`, default 256).
    pub max_revocation_streams: usize,
    /// Most `WatchGrant` streams (`max_grant_streams`, default 256).
    pub max_grant_streams: usize,
    /// Most streams of each kind one caller may hold
    /// (`max_streams_per_caller`, default 8); a relying-party name holds
    /// at most this many too.
    pub max_streams_per_caller: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_revocation_streams: 256,
            max_grant_streams: 256,
            max_streams_per_caller: 8,
        }
    }
}

/// `[audit]`: the central trail lives in the grant store (memory or
/// Redis); a JSON-lines copy can go to a file or stdout for a SIEM.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// Where the JSON-lines copy goes, if anywhere.
    pub jsonl: Option<AuditSinkConfig>,
    /// What a failed audit write does to the operation.
    pub mode: crate::audit::AuditMode,
    /// Share of `Verify` answers recorded, 0 to 1 (default 1).
    pub liveness_sample: f64,
    /// Callers besides admins that may read the trail (`QueryAudit`).
    pub auditors: Vec<IdPattern>,
    /// Cut events older than this.
    pub max_age: Duration,
    /// Keep at most this many events (default: [`DEFAULT_MAX_EVENTS`] for
    /// the store in use).
    pub max_events: Option<u64>,
    /// How often expiries are recorded and retention applied.
    pub upkeep_interval: Duration,
    /// The window authentication failures are tallied over: the first
    /// from an address in a window is recorded at once, the rest as one
    /// event when it closes (default 60s).
    pub failure_window: Duration,
    /// Whether to keep a trail at all. Always true from a config file;
    /// only `jitid dev --no-audit` turns it off, to measure what auditing
    /// costs.
    pub enabled: bool,
}

/// Events the central trail keeps by default: in memory, and in Redis.
pub const DEFAULT_MAX_EVENTS: (u64, u64) = (100_000, 1_000_000);
/// How long the central trail keeps events by default.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

impl AuditConfig {
    /// What the central trail keeps, on `store`.
    pub fn retention(&self, store: &StoreConfig) -> crate::audit::upkeep::Retention {
        crate::audit::upkeep::Retention {
            max_age: Some(self.max_age),
            max_events: Some(self.max_events.unwrap_or(match store {
                StoreConfig::Memory => DEFAULT_MAX_EVENTS.0,
                StoreConfig::Redis(_) => DEFAULT_MAX_EVENTS.1,
            })),
        }
    }
}

/// The JSON-lines sink's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSinkConfig {
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

/// Which grant store to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In process memory: one server, nothing survives a restart.
    Memory,
    /// Redis, shared by every replica.
    Redis(RedisStoreConfig),
}

/// How the server names itself in its serving certificate.
#[derive(Debug, Clone)]
pub struct ServerIdentityConfig {
    /// The server's SPIFFE ID (the certificate's URI SAN).
    pub spiffe_id: SpiffeId,
    /// DNS names clients dial.
    pub dns_names: Vec<String>,
    /// IP addresses clients dial.
    pub ip_addresses: Vec<IpAddr>,
    /// Lifetime of each serving certificate; it is renewed at 2/3 of that.
    pub cert_ttl: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    trust_domain: String,
    listen: Option<String>,
    ca: RawCa,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    attestation: RawAttestation,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default, rename = "entitlement")]
    entitlements: Vec<crate::policy::RawEntitlement>,
    #[serde(default)]
    admins: Vec<String>,
    #[serde(default)]
    groups: HashMap<String, Vec<String>>,
    #[serde(default)]
    principals: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    windows: std::collections::BTreeMap<String, crate::policy::RawWindow>,
    environment: Option<String>,
    store: Option<String>,
    redis: Option<RawRedis>,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    revocation: RawRevocation,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRevocation {
    ack_bound: Option<String>,
    relying_party_ttl: Option<String>,
    #[serde(default)]
    relying_parties: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    jsonl: Option<String>,
    mode: Option<String>,
    liveness_sample: Option<f64>,
    #[serde(default)]
    auditors: Vec<String>,
    max_age: Option<String>,
    max_events: Option<u64>,
    upkeep_interval: Option<String>,
    failure_window: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: Option<String>,
    urls: Option<Vec<String>>,
    #[serde(default)]
    cluster: bool,
    key_prefix: Option<String>,
    #[serde(default)]
    wait_replicas: u64,
    wait_timeout: Option<String>,
    timeout: Option<String>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCa {
    dir: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    spiffe_id: Option<String>,
    dns_names: Option<Vec<String>>,
    ip_addresses: Option<Vec<String>>,
    cert_ttl: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAttestation {
    trust_anchors: Option<Vec<PathBuf>>,
    #[serde(default)]
    oidc: Vec<RawOidc>,
    identity_ttl: Option<String>,
    identity_max_ttl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidc {
    name: String,
    issuer: String,
    audiences: Vec<String>,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    jwks_ca_file: Option<PathBuf>,
    spiffe_id: String,
    task: Option<String>,
    clock_skew: Option<String>,
    #[serde(default)]
    bound_claims: std::collections::BTreeMap<String, BoundValues>,
}

/// A `bound_claims` value: one value, or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum BoundValues {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_request_bytes: Option<usize>,
    max_in_flight: Option<usize>,
    caller_rate: Option<f64>,
    caller_burst: Option<u32>,
    max_grants_per_subject: Option<usize>,
    max_revocation_streams: Option<usize>,
    max_grant_streams: Option<usize>,
    max_streams_per_caller: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_source: Option<usize>,
    preface_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_ttl: Option<String>,
    max_ttl_by_risk: Option<RawRiskTtls>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRiskTtls {
    low: Option<String>,
    medium: Option<String>,
    high: Option<String>,
    critical: Option<String>,
}

// === impl Config ===

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, path, base)
    }

    /// Parses config text; `path` names it in errors and relative paths are
    /// resolved against `base`.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            error,
        })?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };

        let trust_domain = TrustDomain::new(&raw.trust_domain)
            .map_err(|error| invalid("trust_domain", error.to_string()))?;
        let listen = raw
            .listen
            .as_deref()
            .unwrap_or(DEFAULT_LISTEN)
            .parse::<SocketAddr>()
            .map_err(|error| invalid("listen", error.to_string()))?;

        let ca_dir = base.join(&raw.ca.dir);
        let ca = CaPaths::in_dir(&ca_dir);

        let server_id = match raw.server.spiffe_id {
            Some(id) => SpiffeId::new(&id)
                .map_err(|error| invalid("server.spiffe_id", error.to_string()))?,
            None => default_server_id(&trust_domain)
                .map_err(|error| invalid("trust_domain", error.to_string()))?,
        };
        if !server_id.is_member_of(&trust_domain) {
            return Err(invalid(
                "server.spiffe_id",
                format!("{server_id} is not in trust domain {trust_domain}"),
            ));
        }
        let ip_addresses = raw
            .server
            .ip_addresses
            .unwrap_or_else(|| vec!["127.0.0.1".to_owned()])
            .iter()
            .map(|ip| ip.parse::<IpAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| invalid("server.ip_addresses", error.to_string()))?;
        let cert_ttl = match raw.server.cert_ttl {
            Some(text) => parse_duration(&text).map_err(|m| invalid("server.cert_ttl", m))?,
            None => DEFAULT_SERVER_CERT_TTL,
        };
        let server = ServerIdentityConfig {
            spiffe_id: server_id,
            dns_names: raw
                .server
                .dns_names
                .unwrap_or_else(|| vec!["localhost".to_owned()]),
            ip_addresses,
            cert_ttl,
        };

        let identity = identity_config(&raw.attestation, &invalid)?;
        let attestation_trust_anchors = match raw.attestation.trust_anchors {
            Some(paths) if paths.is_empty() => {
                return Err(invalid(
                    "attestation.trust_anchors",
                    "needs at least one PEM file".to_owned(),
                ));
            }
            Some(paths) => paths.iter().map(|p| base.join(p)).collect(),
            None => vec![ca.attestation_cert.clone()],
        };

        let attestation_oidc = raw
            .attestation
            .oidc
            .into_iter()
            .map(|raw| oidc_provider(raw, base, &invalid))
            .collect::<Result<Vec<_>, _>>()?;
        for (index, provider) in attestation_oidc.iter().enumerate() {
            let earlier = &attestation_oidc[..index];
            if earlier.iter().any(|other| other.name == provider.name) {
                return Err(invalid(
                    "attestation.oidc.name",
                    format!("{:?} is used by two providers", provider.name),
                ));
            }
            if earlier.iter().any(|other| other.issuer == provider.issuer) {
                return Err(invalid(
                    "attestation.oidc.issuer",
                    format!(
                        "{:?}: issuer {:?} is used by two providers (a token's iss picks its provider)",
                        provider.name, provider.issuer
                    ),
                ));
            }
        }

        let max_request_bytes = raw
            .limits
            .max_request_bytes
            .unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        if !(1024..=4 * 1024 * 1024).contains(&max_request_bytes) {
            return Err(invalid(
                "limits.max_request_bytes",
                "must be between 1024 and 4194304".to_owned(),
            ));
        }
        let admission = admission_config(&raw.limits, &invalid)?;
        let connections = connection_limits(&raw.limits, &invalid)?;
        let streams = stream_limits(&raw.limits, &invalid)?;
        let max_grants_per_subject = match raw.limits.max_grants_per_subject {
            None => crate::store::DEFAULT_MAX_GRANTS_PER_SUBJECT,
            Some(cap) if (1..=10_000_000).contains(&cap) => cap,
            Some(_) => {
                return Err(invalid(
                    "limits.max_grants_per_subject",
                    "must be between 1 and 10000000".to_owned(),
                ));
            }
        };
        let mut limits = TtlLimits::default();
        if let Some(text) = raw.limits.max_ttl {
            limits.ceiling = parse_duration(&text).map_err(|m| invalid("limits.max_ttl", m))?;
        }
        let by_risk = raw.limits.max_ttl_by_risk.unwrap_or_default();
        for (index, (key, text)) in [
            ("limits.max_ttl_by_risk.low", by_risk.low),
            ("limits.max_ttl_by_risk.medium", by_risk.medium),
            ("limits.max_ttl_by_risk.high", by_risk.high),
            ("limits.max_ttl_by_risk.critical", by_risk.critical),
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(text) = text {
                limits.by_risk[index] = parse_duration(&text).map_err(|m| invalid(key, m))?;
            }
        }

        let catalogue = Catalogue::from_raw(
            raw.entitlements,
            &raw.groups,
            raw.windows,
            &trust_domain,
            &limits,
        )
        .and_then(|catalogue| catalogue.with_principals(&raw.principals))
        .map_err(|error| ConfigError::Catalogue {
            path: path.to_owned(),
            error,
        })?;
        let environment = raw.environment.unwrap_or_default();
        if environment.len() > 64 || environment.chars().any(char::is_control) {
            return Err(invalid(
                "environment",
                "must be at most 64 bytes of printable text".to_owned(),
            ));
        }

        let admins = raw
            .admins
            .iter()
            .map(|text| IdPattern::parse(text).map_err(|message| invalid("admins", message)))
            .collect::<Result<Vec<_>, _>>()?;

        let store = match (raw.store.as_deref().unwrap_or("memory"), raw.redis) {
            ("memory", _) => StoreConfig::Memory,
            ("redis", None) => {
                return Err(invalid(
                    "redis",
                    "store = \"redis\" needs a [redis] table with url".to_owned(),
                ));
            }
            ("redis", Some(redis)) => StoreConfig::Redis(redis_config(redis, base, &invalid)?),
            (other, _) => {
                return Err(invalid(
                    "store",
                    format!("{other:?} is not \"memory\" or \"redis\""),
                ));
            }
        };

        let revocation_duration = |field: &'static str, text: &Option<String>, default| {
            let value = match text {
                None => default,
                Some(text) => parse_duration(text).map_err(|message| invalid(field, message))?,
            };
            if value < Duration::from_millis(10) {
                return Err(invalid(field, "must be at least 10ms".to_owned()));
            }
            Ok(value)
        };
        let revocation = RevocationConfig {
            ack_bound: revocation_duration(
                "revocation.ack_bound",
                &raw.revocation.ack_bound,
                crate::store::DEFAULT_ACK_BOUND,
            )?,
            relying_party_ttl: revocation_duration(
                "revocation.relying_party_ttl",
                &raw.revocation.relying_party_ttl,
                crate::store::DEFAULT_PARTY_TTL,
            )?,
            relying_parties: raw
                .revocation
                .relying_parties
                .iter()
                .map(|(name, pattern)| {
                    let field = format!("revocation.relying_parties.{name}");
                    let name_ok = !name.is_empty()
                        && name.len() <= 128
                        && name != "."
                        && name != ".."
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
                    if !name_ok {
                        return Err(invalid(
                            &field,
                            "a name is 1 to 128 letters, digits, '.', '-' or '_'".to_owned(),
                        ));
                    }
                    let pattern =
                        IdPattern::parse(pattern).map_err(|error| invalid(&field, error))?;
                    Ok((name.clone(), pattern))
                })
                .collect::<Result<_, _>>()?,
        };

        let audit = AuditConfig {
            jsonl: match raw.audit.jsonl.as_deref() {
                None | Some("") => None,
                Some("-" | "stdout") => Some(AuditSinkConfig::Stdout),
                Some(path) => Some(AuditSinkConfig::File(base.join(path))),
            },
            mode: match raw.audit.mode.as_deref() {
                None | Some("fail-closed") => crate::audit::AuditMode::FailClosed,
                Some("degraded") => crate::audit::AuditMode::Degraded,
                Some(other) => {
                    return Err(invalid(
                        "audit.mode",
                        format!("{other:?} is not \"fail-closed\" or \"degraded\""),
                    ));
                }
            },
            liveness_sample: match raw.audit.liveness_sample {
                None => 1.0,
                Some(share) if (0.0..=1.0).contains(&share) => share,
                Some(share) => {
                    return Err(invalid(
                        "audit.liveness_sample",
                        format!("{share} is not between 0 and 1"),
                    ));
                }
            },
            auditors: raw
                .audit
                .auditors
                .iter()
                .map(|text| {
                    IdPattern::parse(text).map_err(|message| invalid("audit.auditors", message))
                })
                .collect::<Result<Vec<_>, _>>()?,
            max_age: match raw.audit.max_age.as_deref() {
                None => DEFAULT_MAX_AGE,
                Some(text) => {
                    parse_duration(text).map_err(|message| invalid("audit.max_age", message))?
                }
            },
            max_events: match raw.audit.max_events {
                Some(0) => {
                    return Err(invalid("audit.max_events", "must be at least 1".to_owned()));
                }
                max => max,
            },
            enabled: true,
            upkeep_interval: match raw.audit.upkeep_interval.as_deref() {
                None => Duration::from_secs(10),
                Some(text) => match parse_duration(text) {
                    Ok(interval) if interval >= Duration::from_millis(10) => interval,
                    Ok(_) => {
                        return Err(invalid(
                            "audit.upkeep_interval",
                            "must be at least 10ms".to_owned(),
                        ));
                    }
                    Err(message) => return Err(invalid("audit.upkeep_interval", message)),
                },
            },
            failure_window: match raw.audit.failure_window.as_deref() {
                None => Duration::from_secs(60),
                Some(text) => match parse_duration(text) {
                    Ok(window)
                        if (Duration::from_millis(100)..=Duration::from_secs(3600))
                            .contains(&window) =>
                    {
                        window
                    }
                    Ok(_) => {
                        return Err(invalid(
                            "audit.failure_window",
                            "must be between 100ms and 1h".to_owned(),
                        ));
                    }
                    Err(message) => return Err(invalid("audit.failure_window", message)),
                },
            },
        };

        Ok(Self {
            trust_domain,
            listen,
            ca,
            server,
            attestation_trust_anchors,
            attestation_oidc,
            identity,
            max_request_bytes,
            admission,
            connections,
            streams,
            max_grants_per_subject,
            catalogue,
            environment,
            admins,
            store,
            audit,
            revocation,
        })
    }
}

fn identity_config(
    raw: &RawAttestation,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<IdentityConfig, ConfigError> {
    let read = |key: &str, text: &Option<String>| match text {
        None => Ok(DEFAULT_IDENTITY_TTL),
        Some(text) => match parse_duration(text) {
            Ok(ttl) if ttl >= Duration::from_secs(1) => Ok(ttl),
            Ok(_) => Err(invalid(key, "must be at least 1s".to_owned())),
            Err(message) => Err(invalid(key, message)),
        },
    };
    let ttl = read("attestation.identity_ttl", &raw.identity_ttl)?;
    let max_ttl = read("attestation.identity_max_ttl", &raw.identity_max_ttl)?;
    if ttl > max_ttl {
        return Err(invalid(
            "attestation.identity_ttl",
            "must not exceed attestation.identity_max_ttl".to_owned(),
        ));
    }
    Ok(IdentityConfig { ttl, max_ttl })
}

fn admission_config(
    raw: &RawLimits,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<AdmissionConfig, ConfigError> {
    let max_in_flight = raw.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
    if !(1..=65_536).contains(&max_in_flight) {
        return Err(invalid(
            "limits.max_in_flight",
            "must be between 1 and 65536".to_owned(),
        ));
    }
    let per_second = raw.caller_rate.unwrap_or(DEFAULT_CALLER_RATE.per_second);
    if !(per_second == 0.0 || (0.001..=1_000_000.0).contains(&per_second)) {
        return Err(invalid(
            "limits.caller_rate",
            format!("{per_second} is not 0 (off) or between 0.001 and 1000000 requests per second"),
        ));
    }
    let caller_rate = match (per_second > 0.0, raw.caller_burst) {
        (false, None) => None,
        (false, Some(_)) => {
            return Err(invalid(
                "limits.caller_burst",
                "needs limits.caller_rate".to_owned(),
            ));
        }
        (true, Some(burst)) if !(1..=1_000_000).contains(&burst) => {
            return Err(invalid(
                "limits.caller_burst",
                "must be between 1 and 1000000".to_owned(),
            ));
        }
        (true, None) if raw.caller_rate.is_none() => Some(DEFAULT_CALLER_RATE),
        (true, burst) => Some(CallerRate {
            per_second,
            // One second's worth by default, and at least one request.
            burst: burst.unwrap_or(per_second.ceil() as u32),
        }),
    };
    Ok(AdmissionConfig {
        max_in_flight,
        caller_rate,
    })
}

fn stream_limits(
    raw: &RawLimits,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<StreamLimits, ConfigError> {
    let defaults = StreamLimits::default();
    let limit = |key: &str, value: Option<usize>, default: usize| match value {
        None => Ok(default),
        Some(value) if (1..=65_536).contains(&value) => Ok(value),
        Some(_) => Err(invalid(key, "must be between 1 and 65536".to_owned())),
    };
    Ok(StreamLimits {
        max_revocation_streams: limit(
            "limits.max_revocation_streams",
            raw.max_revocation_streams,
            defaults.max_revocation_streams,
        )?,
        max_grant_streams: limit(
            "limits.max_grant_streams",
            raw.max_grant_streams,
            defaults.max_grant_streams,
        )?,
        max_streams_per_caller: limit(
            "limits.max_streams_per_caller",
            raw.max_streams_per_caller,
            defaults.max_streams_per_caller,
        )?,
    })
}

fn connection_limits(
    raw: &RawLimits,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<ConnectionLimits, ConfigError> {
    let defaults = ConnectionLimits::default();
    let max_connections = raw.max_connections.unwrap_or(defaults.max_connections);
    if !(1..=1_000_000).contains(&max_connections) {
        return Err(invalid(
            "limits.max_connections",
            "must be between 1 and 1000000".to_owned(),
        ));
    }
    let max_per_source = raw
        .max_connections_per_source
        .unwrap_or(defaults.max_per_source.min(max_connections));
    if !(1..=max_connections).contains(&max_per_source) {
        return Err(invalid(
            "limits.max_connections_per_source",
            format!("must be between 1 and limits.max_connections ({max_connections})"),
        ));
    }
    let timeout = |key: &str, text: &Option<String>, default: Duration, range: (u64, u64)| {
        let Some(text) = text else {
            return Ok(default);
        };
        let value = parse_duration(text).map_err(|message| invalid(key, message))?;
        let (least, most) = (
            Duration::from_millis(range.0),
            Duration::from_millis(range.1),
        );
        if value < least || value > most {
            return Err(invalid(
                key,
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(least),
                    humantime::format_duration(most)
                ),
            ));
        }
        Ok(value)
    };
    Ok(ConnectionLimits {
        max_connections,
        max_per_source,
        preface_timeout: timeout(
            "limits.preface_timeout",
            &raw.preface_timeout,
            defaults.preface_timeout,
            (100, 300_000),
        )?,
        idle_timeout: timeout(
            "limits.idle_timeout",
            &raw.idle_timeout,
            defaults.idle_timeout,
            (1_000, 86_400_000),
        )?,
    })
}

/// One `[[attestation.oidc]]` entry, validated; errors name the entry and
/// the key.
fn oidc_provider(
    raw: RawOidc,
    base: &Path,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<ProviderConfig, ConfigError> {
    let name_ok = !raw.name.is_empty()
        && raw.name.len() <= 64
        && raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(invalid(
            "attestation.oidc.name",
            format!(
                "{:?} is not 1 to 64 letters, digits, '-', '_' or '.'",
                raw.name
            ),
        ));
    }
    let name = raw.name;
    let field = |key: &str, message: String| {
        invalid(
            &format!("attestation.oidc.{key}"),
            format!("{name:?}: {message}"),
        )
    };
    if raw.issuer.is_empty() || raw.issuer.len() > 1024 || raw.issuer.chars().any(char::is_control)
    {
        return Err(field(
            "issuer",
            "must be the iss its tokens carry (1 to 1024 printable bytes)".to_owned(),
        ));
    }
    if raw.audiences.is_empty() || raw.audiences.iter().any(String::is_empty) {
        return Err(field(
            "audiences",
            "needs at least one non-empty audience".to_owned(),
        ));
    }
    let jwks = match (raw.jwks_file, raw.jwks_url) {
        (Some(file), None) => {
            if raw.jwks_ca_file.is_some() {
                return Err(field(
                    "jwks_ca_file",
                    "goes with jwks_url, not jwks_file".to_owned(),
                ));
            }
            JwksSource::File(base.join(file))
        }
        (None, Some(url)) => {
            if !url.starts_with("https://") {
                return Err(field(
                    "jwks_url",
                    format!("{url:?}: keys are fetched over https:// only"),
                ));
            }
            JwksSource::Url {
                url,
                ca_file: raw.jwks_ca_file.map(|path| base.join(path)),
            }
        }
        _ => {
            return Err(field(
                "jwks_file",
                "set exactly one of jwks_file or jwks_url".to_owned(),
            ));
        }
    };
    let spiffe_id = Template::parse(raw.spiffe_id.strip_prefix('/').unwrap_or(&raw.spiffe_id))
        .and_then(|template| template.check_path().map(|()| template))
        .map_err(|message| field("spiffe_id", message))?;
    let task = raw
        .task
        .map(|text| {
            Template::parse(&text).and_then(|template| template.check_task().map(|()| template))
        })
        .transpose()
        .map_err(|message| field("task", message))?;
    let clock_skew = match raw.clock_skew {
        None => DEFAULT_CLOCK_SKEW,
        Some(text) => match parse_duration(&text) {
            Ok(skew) if skew <= Duration::from_secs(600) => skew,
            Ok(_) => return Err(field("clock_skew", "must be at most 10m".to_owned())),
            Err(message) => return Err(field("clock_skew", message)),
        },
    };
    if raw.bound_claims.is_empty() {
        return Err(field(
            "bound_claims",
            "needs at least one binding: without one, every token the issuer signs for these \
             audiences is accepted (on GitHub, any repository's)"
                .to_owned(),
        ));
    }
    let bound_claims = raw
        .bound_claims
        .into_iter()
        .map(|(claim, values)| {
            let values = match values {
                BoundValues::One(value) => vec![value],
                BoundValues::Many(values) => values,
            };
            Binding::parse(&claim, &values)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|message| field("bound_claims", message))?;
    Ok(ProviderConfig {
        name,
        issuer: raw.issuer,
        audiences: raw.audiences,
        jwks,
        spiffe_id,
        task,
        clock_skew,
        bound_claims: BoundClaims::new(bound_claims),
    })
}

fn redis_config(
    raw: RawRedis,
    base: &Path,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<RedisStoreConfig, ConfigError> {
    let urls = match (raw.url, raw.urls) {
        (Some(url), None) => vec![url],
        (None, Some(urls)) if !urls.is_empty() => urls,
        _ => {
            return Err(invalid(
                "redis.url",
                "set exactly one of url or urls".to_owned(),
            ));
        }
    };
    for url in &urls {
        if !["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Err(invalid(
                "redis.url",
                "must start with redis://, rediss:// or unix://".to_owned(),
            ));
        }
    }
    if !raw.cluster && urls.len() > 1 {
        return Err(invalid(
            "redis.urls",
            "several URLs need cluster = true".to_owned(),
        ));
    }
    if raw.cluster && raw.wait_replicas > 0 {
        return Err(invalid(
            "redis.wait_replicas",
            "WAIT is supported on a standalone Redis only".to_owned(),
        ));
    }
    let duration = |key: &str, text: Option<String>, default: Duration| match text {
        None => Ok(default),
        Some(text) => parse_duration(&text).map_err(|message| invalid(key, message)),
    };
    Ok(RedisStoreConfig {
        urls,
        cluster: raw.cluster,
        key_prefix: raw.key_prefix.unwrap_or_else(|| "jitid".to_owned()),
        wait_replicas: raw.wait_replicas,
        wait_timeout: duration(
            "redis.wait_timeout",
            raw.wait_timeout,
            Duration::from_millis(100),
        )?,
        timeout: duration("redis.timeout", raw.timeout, Duration::from_millis(500))?,
        ca_file: raw.ca_file.map(|path| base.join(path)),
        client_identity: match (raw.cert_file, raw.key_file) {
            (Some(cert), Some(key)) => Some((base.join(cert), base.join(key))),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "redis.cert_file",
                    "cert_file and key_file go together".to_owned(),
                ));
            }
        },
    })
}

/// The server's default SPIFFE ID: `spiffe://<trust-domain>/jitid`.
pub fn default_server_id(trust_domain: &TrustDomain) -> Result<SpiffeId, SpiffeIdError> {
    trust_domain.workload_id("/jitid")
}

#[cfg(test)]
mod tests;

//! SPIFFE IDs and trust domains as always-valid types (SPIFFE-ID spec §2).
//!
//! Parsing is strict and canonical: jitid accepts exactly the form that every
//! SPIFFE library accepts (lowercase `spiffe://`, lowercase trust domain, no
//! percent-encoding, no empty or dot segments), so anything it emits passes
//! go-spiffe, py-spiffe and the Rust `spiffe` crate alike.

use std::fmt;
use std::str::FromStr;

const SCHEME_PREFIX: &str = "spiffe://";
const MAX_ID_BYTES: usize = 2048;
const MAX_TRUST_DOMAIN_BYTES: usize = 255;

/// Why a string is not a valid SPIFFE ID or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The string does not start with `spiffe://`.
    #[error("SPIFFE ID must start with \"spiffe://\"")]
    WrongScheme,
    /// The trust domain is empty.
    #[error("trust domain is empty")]
    EmptyTrustDomain,
    /// The trust domain contains a character outside `[a-z0-9.-_]`.
    #[error(
        "trust domain contains {0:?}; only lowercase letters, digits, '.', '-' and '_' are allowed"
    )]
    BadTrustDomainChar(char),
    /// The trust domain is longer than 255 bytes.
    #[error("trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes")]
    TrustDomainTooLong,
    /// A path segment is empty (`//` or a trailing `/`).
    #[error("path has an empty segment or a trailing '/'")]
    EmptySegment,
    /// A path segment is `.` or `..`.
    #[error("path has a '.' or '..' segment")]
    DotSegment,
    /// A path segment contains a character outside `[a-zA-Z0-9.-_]`.
    #[error("path contains {0:?}; only letters, digits, '.', '-' and '_' are allowed in segments")]
    BadPathChar(char),
    /// The whole ID is longer than 2048 bytes.
    #[error("SPIFFE ID is longer than {MAX_ID_BYTES} bytes")]
    TooLong,
    /// The ID has no path where a workload ID is required.
    #[error("SPIFFE ID has no path; a workload ID needs one")]
    MissingPath,
}

/// A trust domain name, e.g. `example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

/// A SPIFFE ID with a non-empty path: `spiffe://<trust-domain>/<path>`.
///
/// Workload identities always have a path (X509-SVID §3.1); the trust
/// domain's own ID (`spiffe://example.org`) is [`TrustDomain::id_string`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: String,
    trust_domain_len: usize,
}

// === impl TrustDomain ===

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`, no scheme).
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        validate_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The trust domain name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of the trust domain itself: `spiffe://<name>`.
    pub fn id_string(&self) -> String {
        format!("{SCHEME_PREFIX}{}", self.0)
    }

    /// The workload ID `spiffe://<name><path>`; `path` starts with `/`.
    pub fn workload_id(&self, path: &str) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::new(&format!("{SCHEME_PREFIX}{}{path}", self.0))
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

// === impl SpiffeId ===

impl SpiffeId {
    /// Parses a workload SPIFFE ID in canonical form.
    pub fn new(id: &str) -> Result<Self, SpiffeIdError> {
        if id.len() > MAX_ID_BYTES {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = id
            .strip_prefix(SCHEME_PREFIX)
            .ok_or(SpiffeIdError::WrongScheme)?;
        let (trust_domain, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        validate_trust_domain(trust_domain)?;
        if path.is_empty() {
            return Err(SpiffeIdError::MissingPath);
        }
        validate_path(path)?;
        Ok(Self {
            id: id.to_owned(),
            trust_domain_len: trust_domain.len(),
        })
    }

    /// The trust domain name.
    pub fn trust_domain_name(&self) -> &str {
        &self.id[SCHEME_PREFIX.len()..SCHEME_PREFIX.len() + self.trust_domain_len]
    }

    /// Whether the ID belongs to `trust_domain`.
    pub fn is_member_of(&self, trust_domain: &TrustDomain) -> bool {
        self.trust_domain_name() == trust_domain.as_str()
    }

    /// The path, starting with `/`.
    pub fn path(&self) -> &str {
        &self.id[SCHEME_PREFIX.len() + self.trust_domain_len..]
    }

    /// The whole ID as a string.
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A set of SPIFFE IDs: one exact ID, or every ID under a path prefix.
/// Entitlements name their requesters with these, relying parties their
/// allowed peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdPattern {
    /// Exactly this ID.
    Exact(SpiffeId),
    /// Any ID of the trust domain whose path starts with `path_prefix`
    /// (which ends in `/`). Written `spiffe://<td>/<prefix>/*`.
    Prefix {
        /// The trust domain.
        trust_domain: TrustDomain,
        /// The path prefix, ending in `/`.
        path_prefix: String,
    },
}

// === impl IdPattern ===

impl fmt::Display for IdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(id) => write!(f, "{id}"),
            Self::Prefix {
                trust_domain,
                path_prefix,
            } => write!(f, "spiffe://{trust_domain}{path_prefix}*"),
        }
    }
}

impl IdPattern {
    /// Parses `spiffe://td/exact/path` or `spiffe://td/prefix/*`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(prefix) = text.strip_suffix("/*") {
            // Validate the prefix as an ID (or a bare trust domain).
            let (trust_domain, path) = match SpiffeId::new(prefix) {
                Ok(id) => (id.trust_domain_name().to_owned(), format!("{}/", id.path())),
                Err(_) => {
                    let name = prefix.strip_prefix("spiffe://").unwrap_or("");
                    (name.to_owned(), "/".to_owned())
                }
            };
            let trust_domain = TrustDomain::new(&trust_domain)
                .map_err(|error| format!("{text:?} is not a valid pattern: {error}"))?;
            return Ok(Self::Prefix {
                trust_domain,
                path_prefix: path,
            });
        }
        SpiffeId::new(text)
            .map(Self::Exact)
            .map_err(|error| format!("{text:?} is not a valid SPIFFE ID: {error}"))
    }

    /// Whether `id` matches.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Exact(exact) => exact == id,
            Self::Prefix {
                trust_domain,
                path_prefix,
            } => id.is_member_of(trust_domain) && id.path().starts_with(path_prefix.as_str()),
        }
    }

    /// Whether every ID the pattern matches is in `trust_domain`.
    pub fn is_in(&self, trust_domain: &TrustDomain) -> bool {
        match self {
            Self::Exact(id) => id.is_member_of(trust_domain),
            Self::Prefix {
                trust_domain: own, ..
            } => own == trust_domain,
        }
    }
}

/// Checks one path segment (without slashes) against ID-06/ID-07. Also used
/// for values that become path segments, such as task ids.
pub fn validate_segment(segment: &str) -> Result<(), SpiffeIdError> {
    if segment.is_empty() {
        return Err(SpiffeIdError::EmptySegment);
    }
    if segment == "." || segment == ".." {
        return Err(SpiffeIdError::DotSegment);
    }
    if let Some(bad) = segment
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(SpiffeIdError::BadPathChar(bad));
    }
    Ok(())
}

fn validate_trust_domain(name: &str) -> Result<(), SpiffeIdError> {
    if name.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if name.len() > MAX_TRUST_DOMAIN_BYTES {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        return Err(SpiffeIdError::BadTrustDomainChar(bad));
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    // `path` starts with '/', so the first split element is empty.
    path.split('/').skip(1).try_for_each(validate_segment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<(&str, &str), SpiffeIdError>) {
        let got = SpiffeId::new(input)
            .map(|id| (id.trust_domain_name().to_owned(), id.path().to_owned()));
        let expected = expected.map(|(td, path)| (td.to_owned(), path.to_owned()));
        assert_eq!(got, expected, "input {input:?}");
    }

    #[test]
    fn parses_canonical_ids() {
        check(
            "spiffe://example.org/ci/job",
            Ok(("example.org", "/ci/job")),
        );
        check("spiffe://a_b-c.9/X.y-z_0", Ok(("a_b-c.9", "/X.y-z_0")));
        check("spiffe://10.0.0.1/x", Ok(("10.0.0.1", "/x")));
    }

    #[test]
    fn rejects_what_spiffe_forbids() {
        use SpiffeIdError::*;
        check("https://example.org/x", Err(WrongScheme));
        check("SPIFFE://example.org/x", Err(WrongScheme));
        check("spiffe:///x", Err(EmptyTrustDomain));
        check("spiffe://Example.org/x", Err(BadTrustDomainChar('E')));
        check("spiffe://a@td/x", Err(BadTrustDomainChar('@')));
        check("spiffe://td:443/x", Err(BadTrustDomainChar(':')));
        check("spiffe://td/x?q=1", Err(BadPathChar('?')));
        check("spiffe://td/x#f", Err(BadPathChar('#')));
        check("spiffe://td/a%20b", Err(BadPathChar('%')));
        check("spiffe://td/a//b", Err(EmptySegment));
        check("spiffe://td/a/", Err(EmptySegment));
        check("spiffe://td/a/../b", Err(DotSegment));
        check("spiffe://td/./b", Err(DotSegment));
        check("spiffe://td", Err(MissingPath));
        check(&format!("spiffe://td/{}", "a".repeat(2048)), Err(TooLong));
        check(
            &format!("spiffe://{}/a", "a".repeat(256)),
            Err(TrustDomainTooLong),
        );
    }

    #[test]
    fn display_round_trips() {
        let id = SpiffeId::new("spiffe://example.org/svc/payments").unwrap();
        assert_eq!(SpiffeId::new(&id.to_string()).unwrap(), id);
        let td = TrustDomain::new("example.org").unwrap();
        assert!(id.is_member_of(&td));
        assert_eq!(td.id_string(), "spiffe://example.org");
        assert_eq!(td.workload_id("/svc/payments").unwrap(), id);
    }
}

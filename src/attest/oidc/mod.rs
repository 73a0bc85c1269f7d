//! Attestation by OIDC token: a CI job's (GitHub Actions, GitLab) or a
//! Kubernetes pod's token, from an issuer configured in
//! `[[attestation.oidc]]`, proves a SPIFFE ID made from its claims.
//!
//! [`OidcAttestor::attest`] picks the provider by the token's `iss`, and
//! checks the token (`token.rs`: `alg` RS256 or ES256 only, the signature
//! against the key its `kid` names (`jwks.rs`), `aud`, `exp`, `nbf`,
//! `iat`), then the provider's claim bindings, and fills its templates
//! (`claims.rs`) into the caller's SPIFFE ID and task. What it returns is
//! a [`Caller`] with [`Attestation::Oidc`]; that each token is used once,
//! and that its grant never outlives it, are the issuer's rules.
//!
//! A token is a bearer secret: it is never logged, and no type here shows
//! it in `Debug`.

mod claims;
mod jwks;
mod token;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use self::claims::{
    Binding, BindingMismatch, BoundClaims, ClaimPath, Glob, Template, TemplateError,
};
pub use self::jwks::{JwksSource, MAX_AGE, MIN_REFRESH};

use self::jwks::{FileSource, KeyError, KeySet, UrlSource};
use self::token::shown;
use crate::issuer::{Attestation, Caller, OidcEvidence};
use crate::spiffe_id::TrustDomain;

/// The default allowance for clocks that disagree (`clock_skew`), as in
/// Vault's JWT auth.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// One `[[attestation.oidc]]` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Its unique name, recorded with every caller it attests.
    pub name: String,
    /// The `iss` its tokens carry, exactly.
    pub issuer: String,
    /// A token's `aud` must name one of these.
    pub audiences: Vec<String>,
    /// Where its signing keys are.
    pub jwks: JwksSource,
    /// The caller's SPIFFE ID path under the trust domain, from claims.
    pub spiffe_id: Template,
    /// The grant's task id, from claims, if the provider sets it.
    pub task: Option<Template>,
    /// How far in the future `nbf` and `iat` may be.
    pub clock_skew: Duration,
    /// What the claims must say.
    pub bound_claims: BoundClaims,
}

/// Checks tokens from the configured providers.
#[derive(Debug)]
pub struct OidcAttestor {
    providers: Vec<Provider>,
    trust_domain: TrustDomain,
}

#[derive(Debug)]
struct Provider {
    config: ProviderConfig,
    keys: KeySet,
}

/// Why a token did not attest a caller. Every message starts with
/// `OIDC token:` and never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// Not a well-formed token.
    #[error("OIDC token: malformed: {0}")]
    Malformed(String),
    /// `alg: none`: an unsigned token.
    #[error("OIDC token: alg none is not allowed")]
    AlgNone,
    /// An algorithm outside the allow-list (HMAC among them).
    #[error("OIDC token: alg {0} is not allowed (RS256 or ES256 only)")]
    AlgNotAllowed(String),
    /// The header names no key.
    #[error("OIDC token: its header has no kid")]
    NoKid,
    /// No provider has this issuer.
    #[error("OIDC token: issuer {0} is not configured ([[attestation.oidc]] issuer)")]
    UnknownIssuer(String),
    /// The issuer's keys have no such `kid`, even read again.
    #[error("OIDC token: unknown kid {kid} for issuer {provider:?}")]
    UnknownKid {
        /// The provider.
        provider: String,
        /// The `kid`, quoted.
        kid: String,
    },
    /// The key the `kid` names is not for this `alg`.
    #[error("OIDC token: key {kid} is not a {alg} signing key")]
    KeyMismatch {
        /// The `kid`, quoted.
        kid: String,
        /// The token's `alg`.
        alg: &'static str,
    },
    /// The issuer's key could not be used.
    #[error("OIDC token: {0}")]
    BadKey(String),
    /// The signature does not verify.
    #[error("OIDC token: the signature does not verify")]
    BadSignature,
    /// No `aud`.
    #[error("OIDC token: it has no aud")]
    NoAudience,
    /// The `aud` names none of the provider's audiences.
    #[error("OIDC token: audience {0} not accepted")]
    AudienceNotAccepted(String),
    /// No `exp`.
    #[error("OIDC token: it has no exp")]
    NoExpiry,
    /// Past its `exp`.
    #[error("OIDC token: it has expired")]
    Expired,
    /// Before its `nbf`.
    #[error("OIDC token: it is not valid yet (nbf)")]
    NotYetValid,
    /// Its `iat` is in the future.
    #[error("OIDC token: it is issued in the future (iat)")]
    IssuedInFuture,
    /// A claim binding failed (PERMISSION_DENIED).
    #[error("OIDC token: {0}")]
    Binding(String),
    /// The claims do not make a valid SPIFFE ID or task (PERMISSION_DENIED).
    #[error("OIDC token: {0}")]
    Template(String),
    /// No keys of the issuer could be read (UNAVAILABLE: a retry may work).
    #[error("OIDC token: no keys of issuer {provider:?} are available: {reason}")]
    KeysUnavailable {
        /// The provider.
        provider: String,
        /// Why.
        reason: String,
    },
}

/// A provider that could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("[[attestation.oidc]] {name:?}: {message}")]
pub struct OidcSetupError {
    /// The provider.
    pub name: String,
    /// What is wrong.
    pub message: String,
}

// === impl OidcError ===

impl OidcError {
    /// Whether the token is genuine but its claims are refused: a binding,
    /// or claims that make no valid SPIFFE ID or task.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Self::Binding(_) | Self::Template(_))
    }

    /// Whether the issuer's keys could not be read: a retry may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::KeysUnavailable { .. })
    }
}

// === impl OidcAttestor ===

impl OidcAttestor {
    /// Sets up `providers`: a JWKS file is read now (unreadable or
    /// malformed is an error), a JWKS URL on first use.
    pub async fn new(
        providers: Vec<ProviderConfig>,
        trust_domain: TrustDomain,
        now: SystemTime,
    ) -> Result<Self, OidcSetupError> {
        let mut built = Vec::with_capacity(providers.len());
        for config in providers {
            let failed = |message: String| OidcSetupError {
                name: config.name.clone(),
                message,
            };
            let keys = match &config.jwks {
                JwksSource::File(path) => {
                    KeySet::read_now(Arc::new(FileSource { path: path.clone() }), now)
                        .await
                        .map_err(|message| failed(format!("jwks_file: {message}")))?
                }
                JwksSource::Url { url, ca_file } => KeySet::new(Arc::new(
                    UrlSource::new(url, ca_file.as_deref())
                        .map_err(|message| failed(format!("jwks_url: {message}")))?,
                )),
            };
            built.push(Provider { config, keys });
        }
        Ok(Self {
            providers: built,
            trust_domain,
        })
    }

    /// Whether any provider is configured.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Checks `token` at `now` and returns the caller it attests.
    pub async fn attest(&self, token: &str, now: SystemTime) -> Result<Caller, OidcError> {
        let unverified = token::read(token)?;
        let provider = self
            .providers
            .iter()
            .find(|provider| provider.config.issuer == unverified.issuer)
            .ok_or_else(|| OidcError::UnknownIssuer(shown(&unverified.issuer)))?;
        let config = &provider.config;
        let jwk = provider
            .keys
            .key(&unverified.kid, now)
            .await
            .map_err(|error| match error {
                KeyError::UnknownKid => OidcError::UnknownKid {
                    provider: config.name.clone(),
                    kid: shown(&unverified.kid),
                },
                KeyError::Unavailable(reason) => OidcError::KeysUnavailable {
                    provider: config.name.clone(),
                    reason,
                },
            })?;
        if !unverified.alg.fits(&jwk) {
            return Err(OidcError::KeyMismatch {
                kid: shown(&unverified.kid),
                alg: unverified.alg.as_str(),
            });
        }
        let claims = token::verify_signature(token, unverified.alg, &jwk)?;
        // Signed: now the claims may be believed. The issuer picked the
        // provider; it must still be the one signed.
        match claims.get("iss") {
            Some(serde_json::Value::String(issuer)) if *issuer == config.issuer => {}
            _ => return Err(OidcError::UnknownIssuer(shown(&unverified.issuer))),
        }
        token::check_audience(&claims, &config.audiences)?;
        let expires_at = token::check_time(&claims, now, config.clock_skew)?;
        let token_id = token::token_id(&claims, token)?;
        config
            .bound_claims
            .check(&claims)
            .map_err(|mismatch| OidcError::Binding(mismatch.to_string()))?;
        let path = config
            .spiffe_id
            .render_path(&claims)
            .map_err(|error| OidcError::Template(error.to_string()))?;
        let spiffe_id = self
            .trust_domain
            .workload_id(&format!("/{path}"))
            .map_err(|error| {
                OidcError::Template(format!(
                    "the claims make no valid SPIFFE ID ({error}) from {:?}",
                    config.spiffe_id.as_str()
                ))
            })?;
        let task = match &config.task {
            Some(template) => Some(
                template
                    .render_task(&claims)
                    .map_err(|error| OidcError::Template(error.to_string()))?
                    .to_string(),
            ),
            None => None,
        };
        Ok(Caller {
            spiffe_id,
            source: None,
            certificate_thumbprint: None,
            attestation: Attestation::Oidc(OidcEvidence {
                provider: config.name.clone(),
                token_id,
                expires_at,
                task,
                claims,
            }),
        })
    }
}

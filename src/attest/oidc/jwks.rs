//! Where a provider's signing keys come from: a JWKS file, read at
//! startup, or a JWKS URL, fetched over HTTPS only. Either way the keys
//! are cached and read again when they are older than [`MAX_AGE`] or a
//! token names a `kid` they do not hold (a key rotation), at most once per
//! [`MIN_REFRESH`] per provider. A failed read keeps the keys held; with
//! none at all, tokens are refused as unavailable (a retry may succeed).
//!
//! Time is passed in, so the refresh rules are tested on a manual clock.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use jsonwebtoken::jwk::Jwk;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Keys older than this are read again before use.
pub const MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// A provider's keys are read at most this often (a token with an unknown
/// `kid` must not make jitid hammer its issuer).
pub const MIN_REFRESH: Duration = Duration::from_secs(10);
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted, in bytes.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Where a provider's keys are, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS document on disk.
    File(PathBuf),
    /// A JWKS document served over HTTPS.
    Url {
        /// The `https://` URL.
        url: String,
        /// PEM roots to verify its server with, instead of the system's.
        ca_file: Option<PathBuf>,
    },
}

/// Reads a JWKS document, wherever it is.
#[async_trait]
pub(crate) trait Fetch: Send + Sync + std::fmt::Debug {
    /// The document's bytes, or why not.
    async fn fetch(&self) -> Result<Vec<u8>, String>;
}

/// A provider's keys, cached.
#[derive(Debug)]
pub(crate) struct KeySet {
    source: Arc<dyn Fetch>,
    held: RwLock<Held>,
    /// Held while reading the source, so that many requests with one
    /// unknown `kid` make one read.
    reading: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Held {
    keys: Option<Vec<Jwk>>,
    read_at: Option<SystemTime>,
    tried_at: Option<SystemTime>,
    last_error: Option<String>,
}

/// Why no key was found for a `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// The keys held (read again if allowed) have no such `kid`.
    UnknownKid,
    /// No keys could be read at all.
    Unavailable(String),
}

// === impl KeySet ===

impl KeySet {
    /// Keys read from `source` on first use.
    pub(crate) fn new(source: Arc<dyn Fetch>) -> Self {
        Self {
            source,
            held: RwLock::default(),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// Keys read from `source` now (a file at startup): unreadable or
    /// malformed is an error.
    pub(crate) async fn read_now(source: Arc<dyn Fetch>, now: SystemTime) -> Result<Self, String> {
        let set = Self::new(source);
        let keys = parse(&set.source.fetch().await?)?;
        let mut held = set.held();
        held.keys = Some(keys);
        held.read_at = Some(now);
        held.tried_at = Some(now);
        drop(held);
        Ok(set)
    }

    /// The key named `kid`, reading the source again when the keys held are
    /// old or lack it (within the rate limit).
    pub(crate) async fn key(&self, kid: &str, now: SystemTime) -> Result<Jwk, KeyError> {
        let fresh = {
            let held = self.read_held();
            (!held.stale(now)).then(|| held.find(kid)).flatten()
        };
        if let Some(key) = fresh {
            return Ok(key);
        }
        let _reading = self.reading.lock().await;
        // Another request may have read them meanwhile.
        let (stale, may_try) = {
            let held = self.read_held();
            (held.stale(now), held.may_try(now))
        };
        if stale && may_try {
            self.refresh(now).await;
        }
        let (found, have_keys, may_try) = {
            let held = self.read_held();
            (held.find(kid), held.keys.is_some(), held.may_try(now))
        };
        if let Some(key) = found {
            return Ok(key);
        }
        if have_keys && may_try {
            // An unknown kid: the issuer may have rotated its keys.
            self.refresh(now).await;
            let found = self.read_held().find(kid);
            if let Some(key) = found {
                return Ok(key);
            }
        }
        let held = self.read_held();
        match (&held.keys, &held.last_error) {
            (Some(_), _) => Err(KeyError::UnknownKid),
            (None, Some(error)) => Err(KeyError::Unavailable(error.clone())),
            (None, None) => Err(KeyError::Unavailable(
                "not read yet; retry in a few seconds".to_owned(),
            )),
        }
    }

    async fn refresh(&self, now: SystemTime) {
        self.held().tried_at = Some(now);
        let read = match self.source.fetch().await {
            Ok(bytes) => parse(&bytes),
            Err(error) => Err(error),
        };
        let mut held = self.held();
        match read {
            Ok(keys) => {
                held.keys = Some(keys);
                held.read_at = Some(now);
                held.last_error = None;
            }
            Err(error) => {
                tracing::warn!(%error, source = ?self.source, "reading an OIDC issuer's keys failed; keeping the keys held");
                held.last_error = Some(error);
            }
        }
    }

    fn held(&self) -> std::sync::RwLockWriteGuard<'_, Held> {
        self.held
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read_held(&self) -> std::sync::RwLockReadGuard<'_, Held> {
        self.held
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

// === impl Held ===

impl Held {
    fn stale(&self, now: SystemTime) -> bool {
        match self.read_at {
            None => true,
            Some(at) => now.duration_since(at).is_ok_and(|age| age >= MAX_AGE),
        }
    }

    fn may_try(&self, now: SystemTime) -> bool {
        match self.tried_at {
            None => true,
            // A clock that went back allows a try.
            Some(at) => now
                .duration_since(at)
                .map_or(true, |gap| gap >= MIN_REFRESH),
        }
    }

    fn find(&self, kid: &str) -> Option<Jwk> {
        self.keys
            .as_ref()?
            .iter()
            .find(|key| key.common.key_id.as_deref() == Some(kid))
            .cloned()
    }
}

/// The keys of a JWKS document that have a `kid`. A key jsonwebtoken
/// cannot read (another key type) is skipped, not fatal: the others still
/// serve.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<Jwk>, String> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(bytes)
        .map_err(|error| format!("not a JWKS document ({{\"keys\": [...]}}): {error}"))?;
    Ok(document
        .keys
        .into_iter()
        .filter_map(|key| serde_json::from_value::<Jwk>(key).ok())
        .filter(|key| key.common.key_id.is_some())
        .collect())
}

/// A JWKS file.
#[derive(Debug)]
pub(crate) struct FileSource {
    pub(crate) path: PathBuf,
}

#[async_trait]
impl Fetch for FileSource {
    async fn fetch(&self) -> Result<Vec<u8>, String> {
        tokio::fs::read(&self.path)
            .await
            .map_err(|error| format!("cannot read {}: {error}", self.path.display()))
    }
}

/// A JWKS URL, fetched over HTTPS only.
pub(crate) struct UrlSource {
    url: reqwest::Url,
    client: reqwest::Client,
}

impl UrlSource {
    /// A client for `url` that speaks only HTTPS and trusts the roots in
    /// `ca_file`, or the system's.
    pub(crate) fn new(url: &str, ca_file: Option<&Path>) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|error| format!("{url:?}: {error}"))?;
        if url.scheme() != "https" {
            return Err(format!("{url}: only https:// is allowed"));
        }
        let client = https_client(ca_file)?;
        Ok(Self { url, client })
    }
}

impl std::fmt::Debug for UrlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url.as_str())
    }
}

#[async_trait]
impl Fetch for UrlSource {
    async fn fetch(&self) -> Result<Vec<u8>, String> {
        let failed = |error: &dyn std::fmt::Display| format!("fetching {}: {error}", self.url);
        let mut response = self
            .client
            .get(self.url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|error| failed(&error_chain(&error)))?;
        if !response.status().is_success() {
            return Err(failed(&format!("HTTP {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
        {
            return Err(failed(&format!("larger than {MAX_JWKS_BYTES} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| failed(&error_chain(&error)))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(failed(&format!("larger than {MAX_JWKS_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// An HTTPS-only client with jitid's TLS provider, trusting the PEM roots
/// in `ca_file` or else the system's, for fetching issuers' keys.
pub(crate) fn https_client(ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let text = std::fs::read(path)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&text) {
                let cert = cert.map_err(|_| format!("{}: malformed PEM", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|error| format!("{}: {error}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no certificate found", path.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no system root certificates found; give jwks_ca_file".to_owned());
            }
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::crypto::provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|error| error_chain(&error))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

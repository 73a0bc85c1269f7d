//! Where the server is, how to trust it, and who we are: [`ClientConfig`]
//! and the attestation identity, read from PEM files.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::keyfile;
use crate::{ClientError, RetryPolicy};

/// Where the server is, how to trust it, and who we are.
#[derive(Clone)]
pub struct ClientConfig {
    /// `https://host:port` of the server.
    pub server: String,
    /// DER root certificates that the server's certificate chains to.
    pub server_roots: Vec<CertificateDer<'static>>,
    /// The attestation identity, or `None` (only the bundle can be fetched).
    pub identity: Option<ClientIdentity>,
    /// How requests the server sheds under load are retried.
    pub retry: RetryPolicy,
}

/// An attestation identity: a certificate chain and its private key.
#[derive(Clone)]
pub struct ClientIdentity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: std::sync::Arc<PrivateKeyDer<'static>>,
    /// The certificate and key files it was read from, if it was: a
    /// rotating identity writes its renewals back there.
    pub(crate) files: Option<(PathBuf, PathBuf)>,
}

// === impl ClientConfig ===

impl ClientConfig {
    /// Reads the server roots and, if given, the identity from PEM files.
    /// The key file must not be readable by group or others.
    pub fn from_files(
        server: &str,
        server_roots: &Path,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Self, ClientError> {
        let server_roots = read_pem_certs(server_roots)?;
        let identity = identity
            .map(|(cert, key)| ClientIdentity::from_files(cert, key))
            .transpose()?;
        Ok(Self {
            server: server.to_owned(),
            server_roots,
            identity,
            retry: RetryPolicy::default(),
        })
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("server_roots", &self.server_roots.len())
            .field("identity", &self.identity)
            .field("retry", &self.retry)
            .finish()
    }
}

// === impl ClientIdentity ===

impl ClientIdentity {
    /// An identity from DER parts.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        Self {
            chain,
            key: std::sync::Arc::new(key),
            files: None,
        }
    }

    /// Reads a PEM chain and a PEM private key (refused if others can read it).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, ClientError> {
        let chain = read_pem_certs(cert)?;
        let key_pem = keyfile::read_private(key)?;
        let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| ClientError::Config(format!("{}: no private key found", key.display())))?;
        Ok(Self {
            files: Some((cert.to_owned(), key.to_owned())),
            ..Self::new(chain, key_der)
        })
    }

    /// The certificate and key files it was read from, if it was.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        self.files
            .as_ref()
            .map(|(cert, key)| (cert.as_path(), key.as_path()))
    }

    /// Whether its leaf is a jitid attestation identity (it carries the
    /// attestation identity marker), which a rotating identity renews.
    pub fn is_attestation_identity(&self) -> bool {
        self.chain
            .first()
            .is_some_and(|leaf| crate::extension::der_is_attestation_identity(leaf.as_ref()))
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("chain", &self.chain.len())
            .field("key", &"<redacted>")
            .field("files", &self.files)
            .finish()
    }
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let text = keyfile::read_public(path)?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ClientError::Config(format!("{}: malformed PEM", path.display())))?;
    if certs.is_empty() {
        return Err(ClientError::Config(format!(
            "{}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

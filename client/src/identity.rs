//! Attestation identities on the client side: [`AttestationIdentity`] (a
//! certificate chain with the key generated here for it), and the
//! [`Client`] calls that get one (renewal with the current identity, a join
//! token for the first one) or manage them (join tokens, revocation, the
//! list; admins).

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::crypto::der_to_pem;
use crate::keyfile::{self, KEY_MODE, PUBLIC_MODE};
use crate::proto::v1 as pb;
use crate::svid::new_key_and_csr;
use crate::{Client, ClientError, ClientIdentity};

/// An attestation identity issued by jitid, with the key generated for it
/// in this process.
#[derive(Clone)]
pub struct AttestationIdentity {
    /// DER chain: the identity, then the attestation CA.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER private key; never left this process.
    pub key_pkcs8: Vec<u8>,
    /// The identity's serial, lowercase hex.
    pub serial: String,
    /// The SPIFFE ID it carries.
    pub spiffe_id: String,
    /// When it expires.
    pub not_after: SystemTime,
}

/// What to revoke with [`Client::revoke_identity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityTarget {
    /// One identity, by serial (hex).
    Serial(String),
    /// Every identity of a SPIFFE ID issued before now.
    SpiffeId(String),
}

// === impl AttestationIdentity ===

impl AttestationIdentity {
    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        self.chain
            .iter()
            .map(|cert| der_to_pem("CERTIFICATE", cert.as_ref()))
            .collect()
    }

    /// The private key as PKCS#8 PEM (a secret: never log it).
    pub fn key_pem(&self) -> String {
        der_to_pem("PRIVATE KEY", &self.key_pkcs8)
    }

    /// The identity as a [`ClientConfig`](crate::ClientConfig) takes it.
    pub fn client_identity(&self) -> ClientIdentity {
        ClientIdentity::new(
            self.chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone())),
        )
    }

    /// Writes the chain to `cert` and the key to `key` (mode 0600), each
    /// atomically (a reader sees the old file or the new one, never part
    /// of one), the key first; either may exist and is replaced.
    pub fn write_files(&self, cert: &Path, key: &Path) -> Result<(), ClientError> {
        keyfile::write_replace(key, self.key_pem().as_bytes(), KEY_MODE)?;
        keyfile::write_replace(cert, self.chain_pem().as_bytes(), PUBLIC_MODE)?;
        Ok(())
    }

    fn from_response(
        response: pb::IdentityResponse,
        key: &rcgen::KeyPair,
    ) -> Result<Self, ClientError> {
        if response.cert_chain.is_empty() {
            return Err(ClientError::InvalidResponse(
                "empty certificate chain".to_owned(),
            ));
        }
        let not_after = response
            .not_after
            .as_ref()
            .and_then(crate::convert::system_time)
            .ok_or_else(|| ClientError::InvalidResponse("identity has no expiry".to_owned()))?;
        Ok(Self {
            chain: response
                .cert_chain
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            key_pkcs8: key.serialize_der(),
            serial: response.serial,
            spiffe_id: response.spiffe_id,
            not_after,
        })
    }
}

impl fmt::Debug for AttestationIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttestationIdentity")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

// === impl Client ===

impl Client {
    /// Renews the attestation identity this client connected with: a
    /// P-256 key generated here (only its CSR leaves the process), a fresh
    /// identity of the same SPIFFE ID for it, living `ttl` (`None`: the
    /// server's `identity_ttl`). Connect again with the new one for it to
    /// attest; the old one stays valid until it expires or is revoked.
    pub async fn renew_identity(
        &self,
        ttl: Option<Duration>,
    ) -> Result<AttestationIdentity, ClientError> {
        let (key, csr) = new_key_and_csr()?;
        let request = pb::RenewIdentityRequest {
            csr,
            ttl: ttl.map(crate::convert::duration),
        };
        let response = self
            .unary(request, |mut grpc, request| async move {
                grpc.renew_identity(request).await
            })
            .await?;
        AttestationIdentity::from_response(response, &key)
    }

    /// Exchanges a one-time join token for a first attestation identity
    /// (of the SPIFFE ID the token names), for a key generated here. Needs
    /// no identity: a client connected without one does.
    pub async fn bootstrap_identity(
        &self,
        join_token: &str,
        ttl: Option<Duration>,
    ) -> Result<AttestationIdentity, ClientError> {
        let (key, csr) = new_key_and_csr()?;
        let request = pb::BootstrapIdentityRequest {
            join_token: join_token.to_owned(),
            csr,
            ttl: ttl.map(crate::convert::duration),
        };
        let response = self
            .unary(request, |mut grpc, request| async move {
                grpc.bootstrap_identity(request).await
            })
            .await?;
        AttestationIdentity::from_response(response, &key)
    }

    /// Creates a join token for `spiffe_id`, good once for `ttl` (`None`:
    /// 10 minutes) (admins). The token is in the response only.
    pub async fn create_join_token(
        &self,
        spiffe_id: &str,
        ttl: Option<Duration>,
    ) -> Result<pb::CreateJoinTokenResponse, ClientError> {
        let request = pb::CreateJoinTokenRequest {
            spiffe_id: spiffe_id.to_owned(),
            ttl: ttl.map(crate::convert::duration),
        };
        self.unary(request, |mut grpc, request| async move {
            grpc.create_join_token(request).await
        })
        .await
    }

    /// Revokes one attestation identity, or every identity of a SPIFFE ID
    /// issued before now, and ends that SPIFFE ID's grants (admins).
    pub async fn revoke_identity(
        &self,
        target: IdentityTarget,
        reason: &str,
    ) -> Result<pb::RevokeIdentityResponse, ClientError> {
        use pb::revoke_identity_request::Target;
        let request = pb::RevokeIdentityRequest {
            target: Some(match target {
                IdentityTarget::Serial(serial) => Target::Serial(serial),
                IdentityTarget::SpiffeId(id) => Target::SpiffeId(id),
            }),
            reason: reason.to_owned(),
        };
        self.unary(request, |mut grpc, request| async move {
            grpc.revoke_identity(request).await
        })
        .await
    }

    /// The attestation identities the server knows, with their state
    /// (admins).
    pub async fn list_identities(&self) -> Result<Vec<pb::IdentityRecord>, ClientError> {
        let response = self
            .unary(
                pb::ListIdentitiesRequest {},
                |mut grpc, request| async move { grpc.list_identities(request).await },
            )
            .await?;
        Ok(response.identities)
    }
}

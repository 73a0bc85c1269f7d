//! The client library workloads embed: connects to jitid over mTLS with an
//! attestation identity, generates keys locally, and fetches X.509-SVIDs,
//! JWT-SVIDs and the trust bundle.
//!
//! ```no_run
//! # async fn run() -> Result<(), jitid::client::ClientError> {
//! use jitid::client::{Client, ClientConfig, SvidRequest};
//! let config = ClientConfig::from_files(
//!     "https://127.0.0.1:8443",
//!     "certs/dev/root.pem".as_ref(),
//!     Some(("identity.pem".as_ref(), "identity.key".as_ref())),
//! )?;
//! let client = Client::connect(config).await?;
//! let svid = client
//!     .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task("build-42"))
//!     .await?;
//! println!("{} until {:?}", svid.grant.spiffe_id, svid.grant.expires_at);
//! # Ok(()) }
//! ```

mod retry;
mod revocation;
mod rotating;
mod task;
mod tls;

pub use retry::RetryPolicy;
pub use revocation::{CacheError, CredentialClaims, DEFAULT_MAX_STALENESS, RevocationCache};
pub use rotating::{
    CurrentSvid, PeerError, RenewalSchedule, RotatingIdentity, RotatingIdentityBuilder,
    RotationError, SpiffeIncoming, SpiffePeer, SpiffePeerVerifier, SpiffeTlsStream, SvidResolver,
    TrustBundle,
};
pub use task::{TaskIdentity, check_confirmation};

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::keyfile::{self, KeyFileError};
use crate::proto::RETRY_PUSHBACK_TRAILER;
use crate::proto::v1::{self as pb, issuer_client::IssuerClient};
use rotating::random_sample;

/// How long connecting (TCP + TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one RPC may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the client library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration is unusable (bad URL, bad PEM).
    #[error("{0}")]
    Config(String),
    /// A key or certificate file could not be read.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// The server could not be reached or the TLS handshake failed.
    #[error("cannot connect to {server}: {source}")]
    Connect {
        /// The server URL.
        server: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The server answered with an error status.
    #[error("{}: {message}", code_name(*.code))]
    Status {
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
        /// How long the server asked us to wait before retrying, when it
        /// shed the request under load (see [`ClientError::retry_after`]).
        retry_after: Option<Duration>,
    },
    /// A local key could not be generated.
    #[error("key generation failed: {0}")]
    KeyGeneration(#[from] rcgen::Error),
    /// The server's answer is malformed.
    #[error("invalid response from server: {0}")]
    InvalidResponse(String),
}

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
    chain: Vec<CertificateDer<'static>>,
    key: std::sync::Arc<PrivateKeyDer<'static>>,
}

/// What to ask for; see `jitid.v1.GrantSpec`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SvidRequest {
    /// Entitlement name, or empty to let the server pick one by actions.
    pub entitlement: String,
    /// Actions, a subset of the entitlement's; empty for all of them.
    pub actions: Vec<String>,
    /// Task id; empty lets the server generate one.
    pub task_id: String,
    /// TTL; `None` for the entitlement's default.
    pub ttl: Option<Duration>,
    /// Why the credential is needed.
    pub justification: String,
    /// A change or incident ticket reference.
    pub ticket: String,
    /// An emergency (break-glass) request.
    pub break_glass: bool,
    /// Labels for the entitlement's conditions.
    pub labels: BTreeMap<String, String>,
    /// Mint under this existing active grant instead of creating one.
    pub grant_id: String,
    /// Bind a JWT-SVID to our attestation certificate (`cnf`, RFC 8705).
    pub bind_to_certificate: bool,
}

/// The grant a credential was issued under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantInfo {
    /// Grant id.
    pub grant_id: String,
    /// The SPIFFE ID the credential names.
    pub spiffe_id: String,
    /// Entitlement used.
    pub entitlement: String,
    /// Actions granted.
    pub actions: Vec<String>,
    /// Task id.
    pub task_id: String,
    /// When grant and credential expire.
    pub expires_at: SystemTime,
}

/// An X.509-SVID with the private key generated for it.
#[derive(Clone)]
pub struct X509Svid {
    /// DER chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 DER private key; never left this process.
    pub key_pkcs8: Vec<u8>,
    /// DER trust anchors of the trust domain.
    pub bundle: Vec<CertificateDer<'static>>,
    /// Leaf serial, lowercase hex.
    pub serial: String,
    /// The grant.
    pub grant: GrantInfo,
}

/// A JWT-SVID.
#[derive(Clone)]
pub struct JwtSvid {
    /// The compact JWS. A bearer credential: never log it.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// The grant.
    pub grant: GrantInfo,
}

/// The trust bundle as served.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Trust domain name.
    pub trust_domain: String,
    /// SPIFFE bundle JSON.
    pub spiffe_json: Vec<u8>,
    /// DER root certificates.
    pub x509_authorities: Vec<CertificateDer<'static>>,
    /// `spiffe_sequence`.
    pub sequence: u64,
}

/// A connection to a jitid server.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    grpc: IssuerClient<Channel>,
    retry: RetryPolicy,
}

// === impl ClientError ===

impl ClientError {
    /// The gRPC code, when the server answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// How long the server asked us to wait before retrying: set only when
    /// it shed the request under load (RESOURCE_EXHAUSTED with a
    /// `grpc-retry-pushback-ms` trailer), which it does before any work,
    /// so nothing was issued or recorded. A [`Client`] has retried such a
    /// request as its [`RetryPolicy`] allows before returning it.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Status { code, .. } => matches!(
                code,
                tonic::Code::Unavailable | tonic::Code::ResourceExhausted | tonic::Code::Aborted
            ),
            _ => false,
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        // A pushback that is not a count of milliseconds means "do not
        // retry" (gRPC A6).
        let retry_after = (status.code() == tonic::Code::ResourceExhausted)
            .then(|| status.metadata().get(RETRY_PUSHBACK_TRAILER))
            .flatten()
            .and_then(|value| value.to_str().ok()?.parse().ok())
            .map(Duration::from_millis);
        Self::Status {
            code: status.code(),
            message: status.message().to_owned(),
            retry_after,
        }
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::ResourceExhausted => "resource exhausted",
        tonic::Code::OutOfRange => "out of range",
        tonic::Code::DeadlineExceeded => "deadline exceeded",
        tonic::Code::Internal => "internal error",
        tonic::Code::NotFound => "not found",
        tonic::Code::FailedPrecondition => "failed precondition",
        tonic::Code::Aborted => "aborted",
        _ => "error",
    }
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
        }
    }

    /// Reads a PEM chain and a PEM private key (refused if others can read it).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, ClientError> {
        let chain = read_pem_certs(cert)?;
        let key_pem = keyfile::read_private(key)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| ClientError::Config(format!("{}: no private key found", key.display())))?;
        Ok(Self::new(chain, key))
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("chain", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

// === impl SvidRequest ===

impl SvidRequest {
    /// A request for the whole action set of `name`.
    pub fn entitlement(name: &str) -> Self {
        Self {
            entitlement: name.to_owned(),
            ..Self::default()
        }
    }

    /// A request for `actions`, under whichever entitlement covers them.
    pub fn actions<S: AsRef<str>>(actions: &[S]) -> Self {
        Self {
            actions: actions.iter().map(|a| a.as_ref().to_owned()).collect(),
            ..Self::default()
        }
    }

    /// Narrows the request to `actions`.
    pub fn with_actions<S: AsRef<str>>(mut self, actions: &[S]) -> Self {
        self.actions = actions.iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// Sets the task id.
    pub fn task(mut self, task_id: &str) -> Self {
        self.task_id = task_id.to_owned();
        self
    }

    /// Sets the TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the justification.
    pub fn justification(mut self, text: &str) -> Self {
        self.justification = text.to_owned();
        self
    }

    /// Sets the ticket reference.
    pub fn ticket(mut self, reference: &str) -> Self {
        self.ticket = reference.to_owned();
        self
    }

    /// A credential under an existing active grant of the caller (say, one
    /// approved after [`Client::request_grant`]).
    pub fn under_grant(grant_id: &str) -> Self {
        Self {
            grant_id: grant_id.to_owned(),
            ..Self::default()
        }
    }

    /// Marks the request as break-glass.
    pub fn break_glass(mut self) -> Self {
        self.break_glass = true;
        self
    }

    /// Adds a label for the entitlement's conditions.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Binds a JWT-SVID to our attestation certificate: relying parties
    /// accept it only from a peer presenting that certificate.
    pub fn bound_to_certificate(mut self) -> Self {
        self.bind_to_certificate = true;
        self
    }

    pub(crate) fn to_proto(&self) -> pb::GrantSpec {
        pb::GrantSpec {
            entitlement: self.entitlement.clone(),
            actions: self.actions.clone(),
            task_id: self.task_id.clone(),
            ttl: self.ttl.map(|ttl| prost_types::Duration {
                seconds: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(ttl.subsec_nanos()).unwrap_or(0),
            }),
            justification: self.justification.clone(),
            ticket: self.ticket.clone(),
            break_glass: self.break_glass,
            labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            grant_id: self.grant_id.clone(),
        }
    }
}

// === impl X509Svid / JwtSvid ===

impl X509Svid {
    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        pem_certs(&self.chain)
    }

    /// The private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        crate::crypto::der_to_pem("PRIVATE KEY", &self.key_pkcs8)
    }

    /// The trust anchors as PEM.
    pub fn bundle_pem(&self) -> String {
        pem_certs(&self.bundle)
    }
}

impl fmt::Debug for X509Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Svid")
            .field("serial", &self.serial)
            .field("grant", &self.grant)
            .field("key_pkcs8", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSvid")
            .field("jti", &self.jti)
            .field("grant", &self.grant)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Opens connections that share one TLS configuration, so that each
/// connection after the first resumes an earlier TLS session: an
/// abbreviated handshake with no certificate signatures on either side.
/// For clients that reconnect; [`Client::connect`] starts afresh, as a
/// new process does.
#[derive(Clone)]
pub struct Connector {
    server: String,
    tls: tokio_rustls::TlsConnector,
    retry: RetryPolicy,
}

impl Connector {
    /// Builds the TLS configuration for `config` (checked here, once).
    pub fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        Ok(Self {
            server: config.server.clone(),
            tls: tls::connector(config)?,
            retry: config.retry,
        })
    }

    /// Opens a new connection (see [`Client::connect`]).
    pub async fn connect(&self) -> Result<Client, ClientError> {
        let channel = tls_channel(&self.server, self.tls.clone(), Some(RPC_TIMEOUT)).await?;
        Ok(Client {
            grpc: IssuerClient::new(channel.clone()),
            channel,
            retry: self.retry,
        })
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

// === impl Client ===

impl Client {
    /// Connects over mTLS (TLS 1.3, h2). Fails if the server cannot be
    /// reached or its certificate does not chain to `server_roots` for the
    /// host in the URL.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        Connector::new(&config)?.connect().await
    }

    /// Sends a unary request; while the server sheds it under load, waits
    /// and sends it again as the [`RetryPolicy`] says. Every unary call
    /// goes through here.
    async fn unary<Req, Res, Fut>(
        &self,
        request: Req,
        rpc: impl Fn(IssuerClient<Channel>, Req) -> Fut,
    ) -> Result<Res, ClientError>
    where
        Req: Clone,
        Fut: Future<Output = Result<tonic::Response<Res>, tonic::Status>>,
    {
        let mut attempt = 1;
        loop {
            let error = match rpc(self.grpc.clone(), request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => ClientError::from(status),
            };
            let wait = error
                .retry_after()
                .and_then(|pushback| self.retry.delay(attempt, pushback, random_sample()));
            let Some(wait) = wait else {
                return Err(error);
            };
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Generates a P-256 key locally, sends a CSR, and returns the SVID with
    /// its key. The key never leaves this process.
    pub async fn fetch_x509_svid(&self, request: &SvidRequest) -> Result<X509Svid, ClientError> {
        let (key, csr) = new_key_and_csr()?;
        let response = self.issue_x509_from_csr(request, csr).await?;
        Ok(X509Svid {
            key_pkcs8: key.serialize_der(),
            ..response
        })
    }

    /// Sends a caller-made DER CSR. The returned SVID has no key.
    pub async fn issue_x509_from_csr(
        &self,
        request: &SvidRequest,
        csr_der: Vec<u8>,
    ) -> Result<X509Svid, ClientError> {
        let request = pb::IssueX509SvidRequest {
            grant: Some(request.to_proto()),
            csr: csr_der,
        };
        let response = self
            .unary(request, |mut grpc, request| async move {
                grpc.issue_x509_svid(request).await
            })
            .await?;
        if response.cert_chain.is_empty() {
            return Err(ClientError::InvalidResponse(
                "empty certificate chain".to_owned(),
            ));
        }
        Ok(X509Svid {
            chain: response
                .cert_chain
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            key_pkcs8: Vec::new(),
            bundle: response
                .bundle
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            serial: response.serial,
            grant: grant_info(response.grant)?,
        })
    }

    /// Fetches a JWT-SVID for `audiences`.
    pub async fn fetch_jwt_svid(
        &self,
        request: &SvidRequest,
        audiences: &[String],
    ) -> Result<JwtSvid, ClientError> {
        let request = pb::IssueJwtSvidRequest {
            grant: Some(request.to_proto()),
            audiences: audiences.to_vec(),
            bind_to_certificate: request.bind_to_certificate,
        };
        let response = self
            .unary(request, |mut grpc, request| async move {
                grpc.issue_jwt_svid(request).await
            })
            .await?;
        Ok(JwtSvid {
            token: response.token,
            jti: response.jti,
            grant: grant_info(response.grant)?,
        })
    }

    /// Fetches the trust bundle.
    pub async fn fetch_bundle(&self) -> Result<Bundle, ClientError> {
        let response = self
            .unary(pb::FetchBundleRequest {}, |mut grpc, request| async move {
                grpc.fetch_bundle(request).await
            })
            .await?;
        Ok(Bundle {
            trust_domain: response.trust_domain,
            spiffe_json: response.spiffe_bundle,
            x509_authorities: response
                .x509_authorities
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            sequence: response.sequence,
        })
    }

    /// Revokes a credential, grant, task or subject.
    pub async fn revoke(
        &self,
        target: pb::revoke_request::Target,
        reason: &str,
    ) -> Result<pb::RevokeResponse, ClientError> {
        let request = pb::RevokeRequest {
            target: Some(target),
            reason: reason.to_owned(),
        };
        self.unary(request, |mut grpc, request| async move {
            grpc.revoke(request).await
        })
        .await
    }

    /// Says a task (or one grant) is done; returns the grants ended.
    pub async fn complete_task(
        &self,
        target: pb::complete_task_request::Target,
    ) -> Result<Vec<String>, ClientError> {
        self.end_task(target, pb::TaskOutcome::Completed).await
    }

    /// Says a task (or one grant) ended, completed or failed; returns the
    /// grants ended. Either way its credentials stop being live.
    pub async fn end_task(
        &self,
        target: pb::complete_task_request::Target,
        outcome: pb::TaskOutcome,
    ) -> Result<Vec<String>, ClientError> {
        let request = pb::CompleteTaskRequest {
            target: Some(target),
            outcome: outcome.into(),
        };
        let response = self
            .unary(request, |mut grpc, request| async move {
                grpc.complete_task(request).await
            })
            .await?;
        Ok(response.grant_ids)
    }

    /// Asks the server whether an X.509-SVID chain (leaf first) is valid
    /// and live.
    pub async fn verify_x509(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> Result<pb::VerifyResponse, ClientError> {
        let credential = pb::verify_request::Credential::X509(pb::X509Credential {
            cert_chain: chain.iter().map(|cert| cert.to_vec()).collect(),
        });
        self.verify(credential).await
    }

    /// Asks the server whether a JWT-SVID presented to `audience` is valid
    /// and live.
    pub async fn verify_jwt(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<pb::VerifyResponse, ClientError> {
        self.verify_presented_jwt(token, audience, None).await
    }

    /// [`Client::verify_jwt`] for a token presented over mTLS with the DER
    /// certificate `presenter`: a token bound to a certificate is valid only
    /// with that one.
    pub async fn verify_presented_jwt(
        &self,
        token: &str,
        audience: &str,
        presenter: Option<&[u8]>,
    ) -> Result<pb::VerifyResponse, ClientError> {
        let credential = pb::verify_request::Credential::Jwt(pb::JwtCredential {
            token: token.to_owned(),
            audience: audience.to_owned(),
            presenter_certificate: presenter.map(<[u8]>::to_vec).unwrap_or_default(),
        });
        self.verify(credential).await
    }

    async fn verify(
        &self,
        credential: pb::verify_request::Credential,
    ) -> Result<pb::VerifyResponse, ClientError> {
        let request = pb::VerifyRequest {
            credential: Some(credential),
        };
        self.unary(request, |mut grpc, request| async move {
            grpc.verify(request).await
        })
        .await
    }

    /// Lists unexpired grants (the caller's, or a subject's for admins).
    pub async fn list_grants(
        &self,
        request: pb::ListGrantsRequest,
    ) -> Result<Vec<pb::GrantRecord>, ClientError> {
        let response = self
            .unary(request, |mut grpc, request| async move {
                grpc.list_grants(request).await
            })
            .await?;
        Ok(response.grants)
    }

    /// One grant with its credentials.
    pub async fn get_grant(&self, grant_id: &str) -> Result<pb::GrantRecord, ClientError> {
        let request = pb::GetGrantRequest {
            grant_id: grant_id.to_owned(),
        };
        self.unary(request, |mut grpc, request| async move {
            grpc.get_grant(request).await
        })
        .await?
        .grant
        .ok_or_else(|| ClientError::InvalidResponse("no grant in response".to_owned()))
    }

    /// Creates a grant without minting: pending when the entitlement needs
    /// approval, active otherwise.
    pub async fn request_grant(
        &self,
        request: &SvidRequest,
    ) -> Result<pb::GrantRecord, ClientError> {
        let request = pb::RequestGrantRequest {
            grant: Some(request.to_proto()),
        };
        self.unary(request, |mut grpc, request| async move {
            grpc.request_grant(request).await
        })
        .await?
        .grant
        .ok_or_else(|| ClientError::InvalidResponse("no grant in response".to_owned()))
    }

    /// Approves a pending grant.
    pub async fn approve(
        &self,
        grant_id: &str,
        comment: &str,
    ) -> Result<pb::GrantRecord, ClientError> {
        let request = pb::ApproveRequest {
            grant_id: grant_id.to_owned(),
            comment: comment.to_owned(),
        };
        self.unary(request, |mut grpc, request| async move {
            grpc.approve(request).await
        })
        .await?
        .grant
        .ok_or_else(|| ClientError::InvalidResponse("no grant in response".to_owned()))
    }

    /// Denies a pending grant.
    pub async fn deny(&self, grant_id: &str, reason: &str) -> Result<pb::GrantRecord, ClientError> {
        let request = pb::DenyRequest {
            grant_id: grant_id.to_owned(),
            reason: reason.to_owned(),
        };
        self.unary(request, |mut grpc, request| async move {
            grpc.deny(request).await
        })
        .await?
        .grant
        .ok_or_else(|| ClientError::InvalidResponse("no grant in response".to_owned()))
    }

    /// Streams a grant's record now and after each change.
    pub async fn watch_grant(
        &self,
        grant_id: &str,
    ) -> Result<tonic::Streaming<pb::GrantRecord>, ClientError> {
        let mut grpc = self.grpc.clone();
        Ok(grpc
            .watch_grant(pb::WatchGrantRequest {
                grant_id: grant_id.to_owned(),
            })
            .await?
            .into_inner())
    }

    /// Waits until a grant is no longer pending and returns its record
    /// (active, denied, ended or expired).
    pub async fn wait_for_grant(&self, grant_id: &str) -> Result<pb::GrantRecord, ClientError> {
        let mut stream = self.watch_grant(grant_id).await?;
        while let Some(record) = stream.message().await? {
            if record.state() != pb::GrantState::Pending {
                return Ok(record);
            }
        }
        Err(ClientError::InvalidResponse(
            "grant stream ended while the grant was pending".to_owned(),
        ))
    }

    /// Streams the audit events a query selects (admins and auditors).
    pub async fn query_audit(
        &self,
        request: pb::QueryAuditRequest,
    ) -> Result<tonic::Streaming<pb::QueryAuditResponse>, ClientError> {
        let mut grpc = self.grpc.clone();
        Ok(grpc.query_audit(request).await?.into_inner())
    }

    /// Every event a query selects (it must not follow), each checked
    /// against its hash, and the signed checkpoint the trail starts
    /// after, if the scan began there.
    pub async fn audit_events(
        &self,
        request: pb::QueryAuditRequest,
    ) -> Result<AuditEvents, ClientError> {
        let mut stream = self.query_audit(request).await?;
        let mut found = AuditEvents::default();
        while let Some(response) = stream.message().await? {
            if !response.checkpoint.is_empty() {
                found.checkpoint = Some(response.checkpoint);
            }
            for line in &response.events {
                found.events.push(checked_event(line)?);
            }
        }
        Ok(found)
    }

    /// Break-glass reviews the caller may see.
    pub async fn list_reviews(&self, all: bool) -> Result<Vec<pb::Review>, ClientError> {
        let request = pb::ListReviewsRequest {
            include_acknowledged: all,
        };
        let response = self
            .unary(request, |mut grpc, request| async move {
                grpc.list_reviews(request).await
            })
            .await?;
        Ok(response.reviews)
    }

    /// Acknowledges a break-glass review with a comment.
    pub async fn ack_review(
        &self,
        grant_id: &str,
        comment: &str,
    ) -> Result<pb::Review, ClientError> {
        let request = pb::AckReviewRequest {
            grant_id: grant_id.to_owned(),
            comment: comment.to_owned(),
        };
        self.unary(request, |mut grpc, request| async move {
            grpc.ack_review(request).await
        })
        .await?
        .review
        .ok_or_else(|| ClientError::InvalidResponse("no review in response".to_owned()))
    }

    /// Opens the revocation stream after `cursor` (empty: from the oldest
    /// event kept).
    pub async fn watch_revocations(
        &self,
        cursor: &str,
    ) -> Result<tonic::Streaming<pb::RevocationEvent>, ClientError> {
        self.watch_revocations_as(cursor, "").await
    }

    /// [`Client::watch_revocations`] as registered relying party
    /// `relying_party` (empty: anonymous), which then acknowledges what it
    /// applied with [`Client::ack_revocations`].
    pub async fn watch_revocations_as(
        &self,
        cursor: &str,
        relying_party: &str,
    ) -> Result<tonic::Streaming<pb::RevocationEvent>, ClientError> {
        let mut grpc = self.grpc.clone();
        Ok(grpc
            .watch_revocations(pb::WatchRevocationsRequest {
                cursor: cursor.to_owned(),
                relying_party: relying_party.to_owned(),
            })
            .await?
            .into_inner())
    }

    /// The underlying mTLS channel, for other services on the same server
    /// (gRPC health, reflection).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The generated gRPC client, for RPCs this wrapper does not cover.
    pub fn grpc(&self) -> IssuerClient<Channel> {
        self.grpc.clone()
    }
}

/// A tonic channel to `server` (`https://host:port`) over `connector`:
/// TLS is done by the connector, so the scheme tonic sees is plain http.
/// The host is sent as SNI (not for an IP address) and checked by the
/// connector's verifier.
pub(crate) async fn tls_channel(
    server: &str,
    connector: tokio_rustls::TlsConnector,
    rpc_timeout: Option<Duration>,
) -> Result<Channel, ClientError> {
    let invalid = || ClientError::Config(format!("invalid server URL {server:?}"));
    let uri: Uri = server.parse().map_err(|_| invalid())?;
    if uri.scheme_str() != Some("https") {
        return Err(ClientError::Config(format!(
            "server URL {server:?} must start with https://"
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| ClientError::Config(format!("server URL {server:?} has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let server_name = ServerName::try_from(host.clone())
        .map_err(|_| ClientError::Config(format!("invalid server host {host:?}")))?;
    let mut endpoint = Endpoint::from_shared(format!("http://{}", authority(&host, port)))
        .map_err(|_| invalid())?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(timeout) = rpc_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            let host = host.clone();
            async move {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|source| ClientError::Connect {
            server: server.to_owned(),
            source,
        })
}

/// A new P-256 key and a DER CSR for it (no subject: the SVID's identity
/// comes from attestation).
pub(crate) fn new_key_and_csr() -> Result<(rcgen::KeyPair, Vec<u8>), rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?.der().to_vec();
    Ok((key, csr))
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn grant_info(grant: Option<pb::GrantSummary>) -> Result<GrantInfo, ClientError> {
    let grant = grant.ok_or_else(|| ClientError::InvalidResponse("no grant summary".to_owned()))?;
    let expires = grant
        .expires_at
        .ok_or_else(|| ClientError::InvalidResponse("grant has no expiry".to_owned()))?;
    let seconds = u64::try_from(expires.seconds)
        .map_err(|_| ClientError::InvalidResponse("grant expiry before 1970".to_owned()))?;
    Ok(GrantInfo {
        grant_id: grant.grant_id,
        spiffe_id: grant.spiffe_id,
        entitlement: grant.entitlement,
        actions: grant.actions,
        task_id: grant.task_id,
        expires_at: SystemTime::UNIX_EPOCH
            + Duration::from_secs(seconds)
            + Duration::from_nanos(u64::try_from(expires.nanos).unwrap_or(0)),
    })
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

fn pem_certs(certs: &[CertificateDer<'_>]) -> String {
    certs
        .iter()
        .map(|cert| crate::crypto::der_to_pem("CERTIFICATE", cert.as_ref()))
        .collect()
}

/// What [`Client::audit_events`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditEvents {
    /// The signed checkpoint the trail starts after (a JWS).
    pub checkpoint: Option<String>,
    /// The events, in chain order.
    pub events: Vec<crate::audit::AuditEvent>,
}

/// Parses an event line from `QueryAudit` and checks it matches its hash.
pub fn checked_event(line: &str) -> Result<crate::audit::AuditEvent, ClientError> {
    let event = crate::audit::AuditEvent::from_line(line)
        .map_err(|error| ClientError::InvalidResponse(format!("audit event: {error}")))?;
    if event.computed_hash() != event.hash {
        return Err(ClientError::InvalidResponse(format!(
            "audit event {} does not match its hash",
            event.seq
        )));
    }
    Ok(event)
}

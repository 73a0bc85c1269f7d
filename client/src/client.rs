//! [`Client`]: one connection to a jitid server and its RPCs, each unary
//! call retried as the [`RetryPolicy`] allows while the server sheds it.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tonic::transport::Channel;

use crate::proto::v1::{self as pb, issuer_client::IssuerClient};
use crate::rotating::random_sample;
use crate::svid::{grant_info, new_key_and_csr};
use crate::tls::tls_channel;
use crate::{
    Bundle, ClientConfig, ClientError, JwtSvid, OidcToken, RetryPolicy, SvidRequest, X509Svid,
};

/// How long one RPC may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to a jitid server: connects over mTLS with an attestation
/// identity, generates keys locally, and fetches X.509-SVIDs, JWT-SVIDs and
/// the trust bundle.
///
/// ```no_run
/// # async fn run() -> Result<(), jitid_client::ClientError> {
/// use jitid_client::{Client, ClientConfig, SvidRequest};
/// let config = ClientConfig::from_files(
///     "https://127.0.0.1:8443",
///     "certs/dev/root.pem".as_ref(),
///     Some(("identity.pem".as_ref(), "identity.key".as_ref())),
/// )?;
/// let client = Client::connect(config).await?;
/// let svid = client
///     .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task("build-42"))
///     .await?;
/// println!("{} until {:?}", svid.grant.spiffe_id, svid.grant.expires_at);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    grpc: IssuerClient<Channel>,
    retry: RetryPolicy,
    /// Sent with every call instead of attesting with a certificate.
    token: Option<OidcToken>,
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
            tls: crate::tls::connector(config)?,
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
            token: None,
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

    /// Attests every call with an OIDC token (`authorization: Bearer`)
    /// instead of a client certificate; connect with no
    /// [`ClientConfig::identity`] then. The server checks the token, which
    /// it accepts for one new grant: mint, complete and delegate under
    /// that grant afterwards ([`SvidRequest::under_grant`]).
    pub fn with_oidc_token(mut self, token: OidcToken) -> Self {
        self.token = Some(token);
        self
    }

    /// `message` as a request, with the token if there is one.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.header());
        }
        request
    }

    /// Sends a unary request; while the server sheds it under load, waits
    /// and sends it again as the [`RetryPolicy`] says. Every unary call
    /// goes through here.
    pub(crate) async fn unary<Req, Res, Fut>(
        &self,
        request: Req,
        rpc: impl Fn(IssuerClient<Channel>, tonic::Request<Req>) -> Fut,
    ) -> Result<Res, ClientError>
    where
        Req: Clone,
        Fut: Future<Output = Result<tonic::Response<Res>, tonic::Status>>,
    {
        let mut attempt = 1;
        loop {
            let error = match rpc(self.grpc.clone(), self.request(request.clone())).await {
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

    /// Lists unexpired grants (the caller's, or a subject's for admins),
    /// following the pages of the reply to the end.
    pub async fn list_grants(
        &self,
        mut request: pb::ListGrantsRequest,
    ) -> Result<Vec<pb::GrantRecord>, ClientError> {
        let mut grants = Vec::new();
        loop {
            let response = self
                .unary(request.clone(), |mut grpc, request| async move {
                    grpc.list_grants(request).await
                })
                .await?;
            grants.extend(response.grants);
            if response.next_page_token.is_empty() {
                return Ok(grants);
            }
            if response.next_page_token == request.page_token {
                return Err(ClientError::InvalidResponse(
                    "ListGrants returned the same page token twice".to_owned(),
                ));
            }
            request.page_token = response.next_page_token;
        }
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
            .watch_grant(self.request(pb::WatchGrantRequest {
                grant_id: grant_id.to_owned(),
            }))
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
        Ok(grpc.query_audit(self.request(request)).await?.into_inner())
    }

    /// Every event line a query selects (it must not follow), as sent,
    /// and the signed checkpoint the trail starts after, if the scan
    /// began there. The lines are not checked here: parsing them and
    /// checking each against its hash is the audit trail's business (the
    /// `jitid` crate's `jitid::client::AuditEventsExt`).
    pub async fn audit_lines(
        &self,
        request: pb::QueryAuditRequest,
    ) -> Result<AuditLines, ClientError> {
        let mut stream = self.query_audit(request).await?;
        let mut found = AuditLines::default();
        while let Some(response) = stream.message().await? {
            if !response.checkpoint.is_empty() {
                found.checkpoint = Some(response.checkpoint);
            }
            found.lines.extend(response.events);
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
            .watch_revocations(self.request(pb::WatchRevocationsRequest {
                cursor: cursor.to_owned(),
                relying_party: relying_party.to_owned(),
            }))
            .await?
            .into_inner())
    }

    /// The underlying mTLS channel, for other services on the same server
    /// (gRPC health, reflection).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The generated gRPC client, for RPCs this wrapper does not cover.
    /// Its calls carry no OIDC token: add it to each request yourself.
    pub fn grpc(&self) -> IssuerClient<Channel> {
        self.grpc.clone()
    }
}

/// What [`Client::audit_lines`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditLines {
    /// The signed checkpoint the trail starts after (a JWS).
    pub checkpoint: Option<String>,
    /// The event lines (canonical JSON), in chain order.
    pub lines: Vec<String>,
}

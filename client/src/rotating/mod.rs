//! A rotating identity for services: keeps a fresh X.509-SVID and the trust
//! bundle in memory, renews them (and its own attestation identity) in the
//! background, and hands them to rustls and tonic so that every new
//! handshake uses the current ones. See [`RotatingIdentity`].

mod attestation;
mod schedule;
mod transport;
mod verify;

pub use schedule::RenewalSchedule;
pub(super) use schedule::{random_sample, unit};
pub use transport::{SpiffeIncoming, SpiffePeer, SpiffeTlsStream, SvidResolver};
pub use verify::{PeerError, SpiffePeerVerifier};

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::{Bundle, Client, ClientConfig, ClientError, GrantInfo, SvidRequest, X509Svid};
use crate::spiffe_id::{SpiffeId, TrustDomain};

/// How often the bundle is refreshed when the issuer gives no hint
/// (SPIFFE bundle spec: a low interval, 5 minutes suggested).
const DEFAULT_BUNDLE_REFRESH: Duration = Duration::from_secs(300);

/// Errors of the rotating identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotationError {
    /// Talking to the issuer (or to a peer) failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The issuer returned an SVID that cannot be used.
    #[error("unusable X.509-SVID: {0}")]
    InvalidSvid(String),
    /// The issuer returned a bundle that cannot be used.
    #[error("unusable trust bundle: {0}")]
    InvalidBundle(String),
    /// A setting is out of range or unparsable.
    #[error("{0}")]
    Config(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// An X.509-SVID as published by a [`RotatingIdentity`]: the SVID, what its
/// leaf says, and the rustls [`CertifiedKey`] built once for it.
#[derive(Clone)]
pub struct CurrentSvid {
    svid: X509Svid,
    spiffe_id: SpiffeId,
    not_after: SystemTime,
    certified_key: Arc<CertifiedKey>,
}

/// A trust bundle as published by a [`RotatingIdentity`], with the root
/// store and client verifier built once for it.
#[derive(Clone)]
pub struct TrustBundle {
    bundle: Bundle,
    trust_domain: TrustDomain,
    refresh_hint: Option<Duration>,
    /// `None` when the bundle has no X.509 authorities: nothing verifies.
    roots: Option<Roots>,
}

#[derive(Clone)]
struct Roots {
    store: Arc<RootCertStore>,
    client_verifier: Arc<dyn ClientCertVerifier>,
}

/// A service's own X.509-SVID and trust bundle, kept fresh in the
/// background; cheap to clone (clones share one state and one pair of
/// tasks).
///
/// [`RotatingIdentity::builder`] connects to jitid with the service's
/// attestation identity and fetches a first SVID (a P-256 key generated
/// here; only its CSR leaves the process) and the bundle. A background
/// task renews the SVID at about 70% of its remaining lifetime (see
/// [`RenewalSchedule`]), retries with exponential backoff on failure, and
/// keeps the last good SVID until it expires; another refreshes the bundle
/// at the issuer's `refresh_hint`. Each new one is published on a
/// [`tokio::sync::watch`] channel ([`RotatingIdentity::subscribe`]). The
/// tasks stop when the identity, and every rustls config made from it, is
/// dropped.
///
/// When its issuer config holds a jitid attestation identity, a third task
/// renews that too (`RenewIdentity`, with a key generated here) once about
/// half of what was left of it has passed, and connects again with the new
/// one, so later calls to the issuer attest with it; if the identity was
/// read from files ([`ClientConfig::from_files`]) the renewed one is
/// written back there (the key 0600), so a restart picks it up. A
/// long-running service thus needs no new key by hand. Turn it off with
/// [`RotatingIdentityBuilder::renew_attestation_identity`].
///
/// Peers are authenticated by [`SpiffePeerVerifier`]: the chain against the
/// current bundle, the SPIFFE ID against the trust domain and an optional
/// allow-list, and optionally the credential against a
/// [`RevocationCache`](super::RevocationCache) (fail closed).
///
/// A gRPC server and a client of it, both with identities from jitid:
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use jitid_client::{ClientConfig, RevocationCache, RotatingIdentity, SvidRequest};
///
/// // The attestation identity that proves to jitid who this service is.
/// let issuer = ClientConfig::from_files(
///     "https://jitid.example.org:8443",
///     "/etc/jitid/root.pem".as_ref(),
///     Some(("/etc/jitid/identity.pem".as_ref(), "/etc/jitid/identity.key".as_ref())),
/// )?;
/// let identity = RotatingIdentity::builder(issuer, SvidRequest::entitlement("greeter"))
///     .build()
///     .await?;
///
/// // Server side: only `svc/caller` may call, and not once it is revoked.
/// let (revocations, _feed) =
///     RevocationCache::follow(identity.client(), std::time::Duration::from_secs(3600));
/// let peers = identity
///     .peer_verifier()
///     .allow("spiffe://example.org/svc/caller")?
///     .check_revocation(revocations);
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:50051").await?;
/// let incoming = identity.incoming(listener, peers)?;
/// let (_, service) = tonic_health::server::health_reporter(); // your service here
/// tokio::spawn(
///     tonic::transport::Server::builder()
///         .add_service(service)
///         .serve_with_incoming(incoming),
/// );
///
/// // Client side: a tonic channel to a peer that must be `svc/greeter`.
/// let peers = identity.peer_verifier().allow("spiffe://example.org/svc/greeter")?;
/// let channel = identity.connect("https://greeter.internal:50051", peers).await?;
/// let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
/// health.check(tonic_health::pb::HealthCheckRequest::default()).await?;
/// # Ok(()) }
/// ```
///
/// In a handler, [`SpiffePeer`] names the caller:
/// `request.extensions().get::<SpiffePeer>()`.
#[derive(Clone)]
pub struct RotatingIdentity {
    shared: Arc<Shared>,
}

struct Shared {
    /// The connection to the issuer, made again with each renewed
    /// attestation identity.
    client: watch::Receiver<Client>,
    provider: Arc<CryptoProvider>,
    renew_now: Arc<Notify>,
    svid: watch::Receiver<Arc<CurrentSvid>>,
    bundle: watch::Receiver<Arc<TrustBundle>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Configures and starts a [`RotatingIdentity`].
#[derive(Debug)]
pub struct RotatingIdentityBuilder {
    issuer: Issuer,
    request: SvidRequest,
    schedule: RenewalSchedule,
    renew_attestation: bool,
    attestation_ttl: Option<Duration>,
}

#[derive(Debug)]
enum Issuer {
    Config(ClientConfig),
    Client(Client),
}

// === impl RotatingIdentity ===

impl RotatingIdentity {
    /// A builder for an identity fetched from the issuer `config` points at
    /// (with the service's attestation identity) under `request`, e.g.
    /// `SvidRequest::entitlement("greeter")`.
    pub fn builder(config: ClientConfig, request: SvidRequest) -> RotatingIdentityBuilder {
        RotatingIdentityBuilder::new(Issuer::Config(config), request)
    }

    /// [`Self::builder`] over an existing connection to the issuer.
    pub fn builder_with_client(client: Client, request: SvidRequest) -> RotatingIdentityBuilder {
        RotatingIdentityBuilder::new(Issuer::Client(client), request)
    }

    /// The current SVID.
    pub fn svid(&self) -> Arc<CurrentSvid> {
        self.shared.svid.borrow().clone()
    }

    /// The current trust bundle.
    pub fn bundle(&self) -> Arc<TrustBundle> {
        self.shared.bundle.borrow().clone()
    }

    /// A receiver that sees each new SVID.
    pub fn subscribe(&self) -> watch::Receiver<Arc<CurrentSvid>> {
        self.shared.svid.clone()
    }

    /// A receiver that sees each new trust bundle.
    pub fn subscribe_bundle(&self) -> watch::Receiver<Arc<TrustBundle>> {
        self.shared.bundle.clone()
    }

    /// The connection to the issuer, e.g. for
    /// [`RevocationCache::follow`](super::RevocationCache::follow) or to
    /// revoke or complete grants: the one made with the current attestation
    /// identity. A connection attests with the identity it was made with,
    /// so after a renewal take it again rather than keep a clone for longer
    /// than an identity lives.
    pub fn client(&self) -> Client {
        self.shared.client.borrow().clone()
    }

    /// A verifier of SPIFFE peers against this identity's current bundle;
    /// narrow it with [`SpiffePeerVerifier::allow`] and
    /// [`SpiffePeerVerifier::check_revocation`].
    pub fn peer_verifier(&self) -> SpiffePeerVerifier {
        SpiffePeerVerifier::new(self.shared.bundle.clone(), &self.shared.provider)
    }

    /// Renews the SVID now instead of at its scheduled time, e.g. after a
    /// peer refused it as revoked. The new one is published as usual.
    pub fn renew_now(&self) {
        self.shared.renew_now.notify_one();
    }

    /// A certificate resolver, for rustls clients and servers, that always
    /// presents the current SVID.
    pub fn cert_resolver(&self) -> Arc<SvidResolver> {
        Arc::new(SvidResolver::new(self.clone()))
    }
}

impl fmt::Debug for RotatingIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingIdentity")
            .field("svid", &self.svid())
            .field("bundle", &self.bundle())
            .finish_non_exhaustive()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

// === impl RotatingIdentityBuilder ===

impl RotatingIdentityBuilder {
    fn new(issuer: Issuer, request: SvidRequest) -> Self {
        Self {
            issuer,
            request,
            schedule: RenewalSchedule::default(),
            renew_attestation: true,
            attestation_ttl: None,
        }
    }

    /// Whether the attestation identity of the issuer config is renewed
    /// too (default true; only an identity from jitid's attestation CA, and
    /// only with [`RotatingIdentity::builder`], which has the config).
    pub fn renew_attestation_identity(mut self, renew: bool) -> Self {
        self.renew_attestation = renew;
        self
    }

    /// The lifetime asked for renewed attestation identities (default:
    /// the server's `[attestation] identity_ttl`).
    pub fn attestation_identity_ttl(mut self, ttl: Duration) -> Self {
        self.attestation_ttl = Some(ttl);
        self
    }

    /// Renews after this fraction of the SVID's remaining lifetime, in
    /// `(0, 1]` (default 0.7).
    pub fn renew_fraction(mut self, fraction: f64) -> Self {
        self.schedule.fraction = fraction;
        self
    }

    /// Renews up to this fraction of the wait earlier, at random, in
    /// `[0, 1)` (default 0.1).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.schedule.jitter = jitter;
        self
    }

    /// The shortest and longest wait between renewals (default 1 s and
    /// 1 h).
    pub fn wait_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.schedule.min_wait = min;
        self.schedule.max_wait = max;
        self
    }

    /// The first and the longest retry delay after failures (default
    /// 500 ms and 30 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.schedule.backoff_initial = initial;
        self.schedule.backoff_max = max;
        self
    }

    /// Replaces the whole schedule.
    pub fn schedule(mut self, schedule: RenewalSchedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Connects to the issuer, fetches the first SVID and bundle, and
    /// starts renewing them. Fails if either cannot be had now.
    pub async fn build(self) -> Result<RotatingIdentity, RotationError> {
        let schedule = self.schedule;
        if !(schedule.fraction > 0.0 && schedule.fraction <= 1.0) {
            return Err(RotationError::Config(format!(
                "renew fraction must be in (0, 1], not {}",
                schedule.fraction
            )));
        }
        if !(0.0..1.0).contains(&schedule.jitter) {
            return Err(RotationError::Config(format!(
                "jitter must be in [0, 1), not {}",
                schedule.jitter
            )));
        }
        if schedule.min_wait > schedule.max_wait || schedule.backoff_initial.is_zero() {
            return Err(RotationError::Config(
                "the minimum wait must not exceed the maximum, and backoff must not be zero"
                    .to_owned(),
            ));
        }
        let (client, renewable) = match self.issuer {
            Issuer::Config(config) => {
                let client = Client::connect(config.clone()).await?;
                let renewable = config
                    .identity
                    .as_ref()
                    .is_some_and(super::ClientIdentity::is_attestation_identity);
                (
                    client,
                    (self.renew_attestation && renewable).then_some(config),
                )
            }
            Issuer::Client(client) => (client, None),
        };
        let provider = crate::crypto::provider();
        let first_svid = CurrentSvid::fetch(&client, &self.request, &provider).await?;
        let first_bundle = TrustBundle::fetch(&client, &provider).await?;
        tracing::info!(
            spiffe_id = %first_svid.spiffe_id,
            serial = %first_svid.serial(),
            grant = %first_svid.grant().grant_id,
            "fetched X.509-SVID"
        );
        let (svid_sender, svid) = watch::channel(Arc::new(first_svid));
        let (bundle_sender, bundle) = watch::channel(Arc::new(first_bundle));
        let renew_now = Arc::new(Notify::new());
        let (client_sender, clients) = watch::channel(client);
        let mut tasks = vec![
            tokio::spawn(renew_svids(
                clients.clone(),
                self.request,
                schedule,
                provider.clone(),
                svid_sender,
                renew_now.clone(),
            )),
            tokio::spawn(refresh_bundles(
                clients.clone(),
                schedule,
                provider.clone(),
                bundle_sender,
            )),
        ];
        if let Some(config) = renewable {
            tasks.push(tokio::spawn(attestation::renew_attestation(
                config,
                self.attestation_ttl,
                attestation::schedule(schedule),
                provider.clone(),
                client_sender,
            )));
        }
        Ok(RotatingIdentity {
            shared: Arc::new(Shared {
                client: clients,
                provider,
                renew_now,
                svid,
                bundle,
                tasks,
            }),
        })
    }
}

// === impl CurrentSvid ===

impl CurrentSvid {
    /// Fetches an SVID (a fresh key, a CSR) and checks it before use.
    async fn fetch(
        client: &Client,
        request: &SvidRequest,
        provider: &CryptoProvider,
    ) -> Result<Self, RotationError> {
        let svid = client.fetch_x509_svid(request).await?;
        Self::new(svid, provider, SystemTime::now())
    }

    /// Checks that `svid` is an unexpired X.509-SVID whose key matches.
    fn new(
        svid: X509Svid,
        provider: &CryptoProvider,
        now: SystemTime,
    ) -> Result<Self, RotationError> {
        let leaf = svid
            .chain
            .first()
            .ok_or_else(|| RotationError::InvalidSvid("empty chain".to_owned()))?;
        let leaf = verify::parse_svid_leaf(leaf.as_ref())
            .map_err(|error| RotationError::InvalidSvid(error.to_string()))?;
        if leaf.not_after <= now {
            return Err(RotationError::InvalidSvid("already expired".to_owned()));
        }
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(svid.key_pkcs8.clone()));
        // `from_der` also checks that the key is the certificate's.
        let certified_key = CertifiedKey::from_der(svid.chain.clone(), key, provider)
            .map_err(|error| RotationError::InvalidSvid(error.to_string()))?;
        Ok(Self {
            svid,
            spiffe_id: leaf.spiffe_id,
            not_after: leaf.not_after,
            certified_key: Arc::new(certified_key),
        })
    }

    /// The SVID with its private key.
    pub fn svid(&self) -> &X509Svid {
        &self.svid
    }

    /// The SPIFFE ID it names.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The leaf's serial, lowercase hex.
    pub fn serial(&self) -> &str {
        &self.svid.serial
    }

    /// The grant it was issued under.
    pub fn grant(&self) -> &GrantInfo {
        &self.svid.grant
    }

    /// When the leaf expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The chain and signing key, as rustls presents them.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified_key
    }
}

impl fmt::Debug for CurrentSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.svid.serial)
            .field("grant_id", &self.svid.grant.grant_id)
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

// === impl TrustBundle ===

impl TrustBundle {
    async fn fetch(client: &Client, provider: &Arc<CryptoProvider>) -> Result<Self, RotationError> {
        let bundle = client.fetch_bundle().await?;
        // `spiffe_refresh_hint`: integer seconds (SPIFFE bundle format).
        let refresh_hint = serde_json::from_slice::<serde_json::Value>(&bundle.spiffe_json)
            .ok()
            .and_then(|json| json.get("spiffe_refresh_hint")?.as_u64())
            .filter(|seconds| *seconds > 0)
            .map(Duration::from_secs);
        Self::new(bundle, refresh_hint, provider)
    }

    fn new(
        bundle: Bundle,
        refresh_hint: Option<Duration>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, RotationError> {
        let invalid = |error: &dyn fmt::Display| RotationError::InvalidBundle(error.to_string());
        let trust_domain = TrustDomain::new(&bundle.trust_domain).map_err(|e| invalid(&e))?;
        let roots = if bundle.x509_authorities.is_empty() {
            // SPIFFE bundle spec: no keys means no SVID of this trust
            // domain is valid; the verifier then refuses every peer.
            None
        } else {
            let mut store = RootCertStore::empty();
            for authority in &bundle.x509_authorities {
                store.add(authority.clone()).map_err(|e| invalid(&e))?;
            }
            let store = Arc::new(store);
            let client_verifier =
                WebPkiClientVerifier::builder_with_provider(store.clone(), provider.clone())
                    .build()
                    .map_err(|e| invalid(&e))?;
            Some(Roots {
                store,
                client_verifier,
            })
        };
        Ok(Self {
            bundle,
            trust_domain,
            refresh_hint,
            roots,
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The bundle as the issuer served it (SPIFFE JSON, DER authorities,
    /// sequence).
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The DER X.509 authorities that peers' chains must lead to.
    pub fn x509_authorities(&self) -> &[CertificateDer<'static>] {
        &self.bundle.x509_authorities
    }

    /// How often the issuer asks to be polled, if it says.
    pub fn refresh_hint(&self) -> Option<Duration> {
        self.refresh_hint
    }

    fn same_content(&self, other: &Self) -> bool {
        self.bundle.trust_domain == other.bundle.trust_domain
            && self.bundle.sequence == other.bundle.sequence
            && self.bundle.x509_authorities == other.bundle.x509_authorities
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("trust_domain", &self.trust_domain)
            .field("sequence", &self.bundle.sequence)
            .field("x509_authorities", &self.bundle.x509_authorities.len())
            .field("refresh_hint", &self.refresh_hint)
            .finish()
    }
}

// === background tasks ===

/// Renews the SVID on `schedule` (or when `renew_now` is notified)
/// forever, publishing each new one; on failure keeps the current one and
/// retries with backoff.
async fn renew_svids(
    clients: watch::Receiver<Client>,
    request: SvidRequest,
    schedule: RenewalSchedule,
    provider: Arc<CryptoProvider>,
    sender: watch::Sender<Arc<CurrentSvid>>,
    renew_now: Arc<Notify>,
) {
    let mut failures = 0u32;
    loop {
        let wait = if failures == 0 {
            let not_after = sender.borrow().not_after;
            let remaining = not_after
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            schedule.renew_in(remaining, random_sample())
        } else {
            schedule.retry_in(failures, random_sample())
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = renew_now.notified() => {}
        }
        let client = clients.borrow().clone();
        match CurrentSvid::fetch(&client, &request, &provider).await {
            Ok(svid) => {
                failures = 0;
                tracing::info!(
                    spiffe_id = %svid.spiffe_id,
                    serial = %svid.serial(),
                    grant = %svid.grant().grant_id,
                    "renewed X.509-SVID"
                );
                sender.send_replace(Arc::new(svid));
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let expired = sender.borrow().not_after <= SystemTime::now();
                if expired {
                    tracing::error!(%error, failures, "X.509-SVID renewal failed and the current SVID has expired");
                } else {
                    tracing::warn!(%error, failures, "X.509-SVID renewal failed; keeping the current SVID");
                }
            }
        }
    }
}

/// Refreshes the bundle at the issuer's hint forever, publishing it when
/// its content changes; on failure keeps the current one and retries with
/// backoff.
async fn refresh_bundles(
    clients: watch::Receiver<Client>,
    schedule: RenewalSchedule,
    provider: Arc<CryptoProvider>,
    sender: watch::Sender<Arc<TrustBundle>>,
) {
    let mut failures = 0u32;
    loop {
        let wait = if failures == 0 {
            let hint = sender
                .borrow()
                .refresh_hint
                .unwrap_or(DEFAULT_BUNDLE_REFRESH);
            schedule.refresh_in(hint, random_sample())
        } else {
            schedule.retry_in(failures, random_sample())
        };
        tokio::time::sleep(wait).await;
        let client = clients.borrow().clone();
        match TrustBundle::fetch(&client, &provider).await {
            Ok(bundle) => {
                failures = 0;
                if !sender.borrow().same_content(&bundle) {
                    tracing::info!(sequence = bundle.bundle.sequence, "trust bundle changed");
                    sender.send_replace(Arc::new(bundle));
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(%error, failures, "trust bundle refresh failed; keeping the current one");
            }
        }
    }
}

#[cfg(test)]
mod tests;

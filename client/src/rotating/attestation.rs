//! The rotating identity's own attestation identity: renewed with itself
//! (`RenewIdentity`, a key generated here) once past about half of what is
//! left of it, so a long-running service needs no new key by hand. The new
//! identity is checked, connected with, and published to the other tasks,
//! whose later calls go over the new connection; when it was read from
//! files, it is written back there (key 0600, each file atomically).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use super::{RenewalSchedule, RotationError, random_sample};
use crate::{Client, ClientConfig, ClientIdentity};

/// Renew when this share of the identity's remaining lifetime has passed.
const RENEW_FRACTION: f64 = 0.5;
/// The longest wait between two renewals: identities live hours, not years.
const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The schedule of attestation identity renewals: the service's own
/// jitter, shortest wait and backoff, at half the remaining lifetime.
pub(super) fn schedule(service: RenewalSchedule) -> RenewalSchedule {
    RenewalSchedule {
        fraction: RENEW_FRACTION,
        max_wait: MAX_WAIT,
        ..service
    }
}

/// When the leaf of `identity` expires, if it can be read.
pub(super) fn not_after(identity: &ClientIdentity) -> Option<SystemTime> {
    let leaf = identity.chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let seconds = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Renews the attestation identity of `config` forever, publishing a
/// connection made with each new one on `clients`; on failure keeps the
/// current one and retries with backoff.
pub(super) async fn renew_attestation(
    mut config: ClientConfig,
    ttl: Option<Duration>,
    schedule: RenewalSchedule,
    provider: Arc<CryptoProvider>,
    clients: watch::Sender<Client>,
) {
    let mut failures = 0u32;
    loop {
        let current = config.identity.as_ref().and_then(not_after);
        let wait = if failures == 0 {
            let remaining = current
                .and_then(|at| at.duration_since(SystemTime::now()).ok())
                .unwrap_or_default();
            schedule.renew_in(remaining, random_sample())
        } else {
            schedule.retry_in(failures, random_sample())
        };
        tokio::time::sleep(wait).await;
        match renew_once(&config, ttl, &provider, &clients).await {
            Ok(next) => {
                failures = 0;
                config = next;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                if current.is_none_or(|at| at <= SystemTime::now()) {
                    tracing::error!(%error, failures, "attestation identity renewal failed and the current identity has expired");
                } else {
                    tracing::warn!(%error, failures, "attestation identity renewal failed; keeping the current identity");
                }
            }
        }
    }
}

/// One renewal: the new identity, checked, connected with and published;
/// then written back to the files it came from, if any. Returns the config
/// with the new identity.
async fn renew_once(
    config: &ClientConfig,
    ttl: Option<Duration>,
    provider: &CryptoProvider,
    clients: &watch::Sender<Client>,
) -> Result<ClientConfig, RotationError> {
    let client = clients.borrow().clone();
    let renewed = client.renew_identity(ttl).await?;
    // The key must be the certificate's (as for an SVID, before use).
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(renewed.key_pkcs8.clone()));
    CertifiedKey::from_der(renewed.chain.clone(), key, provider)
        .map_err(|error| RotationError::InvalidSvid(format!("renewed identity: {error}")))?;
    let mut identity = renewed.client_identity();
    identity.files = config
        .identity
        .as_ref()
        .and_then(|current| current.files.clone());
    let next = ClientConfig {
        identity: Some(identity),
        ..config.clone()
    };
    let connected = Client::connect(next.clone()).await?;
    clients.send_replace(connected);
    tracing::info!(
        spiffe_id = %renewed.spiffe_id,
        serial = %renewed.serial,
        "renewed the attestation identity"
    );
    if let Some((cert, key)) = next.identity.as_ref().and_then(ClientIdentity::files) {
        // In use already; a file that cannot be written is reported, and
        // written again at the next renewal.
        if let Err(error) = renewed.write_files(cert, key) {
            tracing::error!(%error, cert = %cert.display(), "the renewed attestation identity could not be written back");
        }
    }
    Ok(next)
}

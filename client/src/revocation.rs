//! A local denylist for relying parties, fed by `WatchRevocations`: checks
//! a presented credential in memory, with no round trip, and keeps itself
//! current across disconnects by resuming from its cursor.
//!
//! The cache fails closed: until it has caught up with the stream, or when
//! it has not heard from the issuer for a while, it answers with an error
//! instead of "not revoked".
//!
//! ```no_run
//! # async fn run(client: jitid_client::Client, leaf_der: &[u8]) {
//! use jitid_client::RevocationCache;
//! let (cache, _task) = RevocationCache::follow(client, std::time::Duration::from_secs(3600));
//! if cache.is_certificate_revoked(leaf_der).unwrap_or(true) {
//!     // refuse the connection
//! }
//! # }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::task::JoinHandle;

use super::Client;
use crate::extension::{ExtensionError, GrantExtension};

/// How long the cache trusts itself without a heartbeat (three heartbeat
/// intervals).
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(15);

/// Why the cache cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// It has not caught up with the revocation stream yet.
    #[error("revocation cache has not caught up with the issuer yet")]
    NotSynced,
    /// It has not heard from the issuer for longer than its limit.
    #[error("revocation cache is stale: no heartbeat for {0:?}")]
    Stale(Duration),
    /// The certificate carries no readable grant extension.
    #[error(transparent)]
    Extension(#[from] ExtensionError),
}
use crate::proto::v1 as pb;

/// What a credential says about itself, as a relying party reads it from
/// the X.509 grant extension or the JWT's `jitid_*` claims.
#[derive(Debug, Clone, Copy)]
pub struct CredentialClaims<'a> {
    /// The grant id.
    pub grant_id: &'a str,
    /// The serial (lowercase hex, no colons) or `jti`.
    pub credential_id: &'a str,
    /// The task id.
    pub task_id: &'a str,
    /// The store epoch it was minted under.
    pub epoch: &'a str,
    /// For a delegated credential, its ancestor grants: ending any of
    /// them ends it too.
    pub parent_grant_ids: &'a [String],
}

/// A denylist kept current from the revocation stream. Cheap to clone;
/// clones share the same list.
#[derive(Debug, Clone)]
pub struct RevocationCache {
    inner: Arc<RwLock<State>>,
}

#[derive(Debug)]
struct State {
    /// Entries are kept this long after the event: the longest a
    /// credential can live.
    keep_for: Duration,
    max_staleness: Duration,
    /// When the last heartbeat arrived: the stream had nothing more.
    caught_up_at: Option<Instant>,
    epoch: Option<String>,
    cursor: Option<String>,
    grants: HashMap<String, SystemTime>,
    credentials: HashMap<String, SystemTime>,
    tasks: HashMap<String, SystemTime>,
    applied: u64,
}

// === impl RevocationCache ===

impl RevocationCache {
    /// An empty cache whose entries live `keep_for` (at least the longest
    /// TTL the issuer grants).
    pub fn new(keep_for: Duration) -> Self {
        Self {
            inner: Arc::new(RwLock::new(State {
                keep_for,
                max_staleness: DEFAULT_MAX_STALENESS,
                caught_up_at: None,
                epoch: None,
                cursor: None,
                grants: HashMap::new(),
                credentials: HashMap::new(),
                tasks: HashMap::new(),
                applied: 0,
            })),
        }
    }

    /// A cache fed by `client`'s revocation stream in a background task,
    /// which reconnects with backoff and resumes from the last cursor.
    /// Dropping the handle does not stop it; abort it to stop.
    pub fn follow(client: Client, keep_for: Duration) -> (Self, JoinHandle<()>) {
        let cache = Self::new(keep_for);
        let task = tokio::spawn(cache.clone().run(client, None));
        (cache, task)
    }

    /// [`Self::follow`] as registered relying party `name`: after applying
    /// events it acknowledges their cursor (batched while an acknowledgement
    /// is in flight), so the issuer can prove when this party stopped
    /// accepting what was revoked (`jitid revocation status`).
    pub fn follow_as(client: Client, keep_for: Duration, name: &str) -> (Self, JoinHandle<()>) {
        let cache = Self::new(keep_for);
        let (applied, acks) = tokio::sync::watch::channel(String::new());
        let acker = tokio::spawn(acknowledge(client.clone(), name.to_owned(), acks));
        let follower = cache.clone();
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            follower.run(client, Some((name, applied))).await;
            acker.abort();
        });
        (cache, task)
    }

    async fn run(
        self,
        client: Client,
        party: Option<(String, tokio::sync::watch::Sender<String>)>,
    ) {
        let mut backoff = Duration::from_millis(100);
        let name = party.as_ref().map_or("", |(name, _)| name.as_str());
        loop {
            let cursor = self.cursor().unwrap_or_default();
            match client.watch_revocations_as(&cursor, name).await {
                Ok(mut stream) => {
                    while let Ok(Some(event)) = stream.message().await {
                        self.apply(&event);
                        if let Some((_, applied)) = &party
                            && !event.cursor.is_empty()
                        {
                            applied.send_if_modified(|cursor| {
                                let changed = *cursor != event.cursor;
                                cursor.clone_from(&event.cursor);
                                changed
                            });
                        }
                        backoff = Duration::from_millis(100);
                    }
                }
                Err(error) => tracing::warn!(%error, "revocation stream unavailable"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Applies one event (or heartbeat) from the stream.
    pub fn apply(&self, event: &pb::RevocationEvent) {
        let at = event
            .at
            .as_ref()
            .and_then(crate::convert::system_time)
            .unwrap_or_else(SystemTime::now);
        let mut state = self.write();
        let until = at + state.keep_for;
        // Heartbeats come when the stream has nothing more, carrying the
        // epoch read afresh; events carry the epoch they were published
        // under, which may be older, so only heartbeats set it.
        if event.heartbeat {
            state.caught_up_at = Some(Instant::now());
            if !event.epoch.is_empty() {
                state.epoch = Some(event.epoch.clone());
            }
        }
        if !event.cursor.is_empty() {
            state.cursor = Some(event.cursor.clone());
        }
        for grant in &event.grant_ids {
            state.grants.insert(grant.clone(), until);
        }
        if !event.credential_id.is_empty() {
            state.credentials.insert(event.credential_id.clone(), until);
        }
        if !event.task_id.is_empty() {
            state.tasks.insert(event.task_id.clone(), until);
        }
        state.applied += 1;
        if state.applied.is_multiple_of(256) {
            let now = SystemTime::now();
            state.grants.retain(|_, until| *until > now);
            state.credentials.retain(|_, until| *until > now);
            state.tasks.retain(|_, until| *until > now);
        }
    }

    /// How long the cache answers without a heartbeat before it reports
    /// itself stale.
    pub fn set_max_staleness(&self, max_staleness: Duration) {
        self.write().max_staleness = max_staleness;
    }

    /// Whether the credential is known to be revoked: its grant, itself or
    /// its task was revoked, or it was minted under another epoch than the
    /// issuer's current one. A credential the cache knows nothing about is
    /// not revoked (check signature and expiry separately). Fails when the
    /// cache has not caught up, or has not heard from the issuer lately.
    pub fn is_revoked(&self, claims: &CredentialClaims<'_>) -> Result<bool, CacheError> {
        let state = self.read();
        state.ready()?;
        let now = SystemTime::now();
        let denied = |entries: &HashMap<String, SystemTime>, key: &str| {
            entries.get(key).is_some_and(|until| *until > now)
        };
        Ok(state
            .epoch
            .as_deref()
            .is_some_and(|epoch| epoch != claims.epoch)
            || denied(&state.grants, claims.grant_id)
            || claims
                .parent_grant_ids
                .iter()
                .any(|parent| denied(&state.grants, parent))
            || denied(&state.credentials, claims.credential_id)
            || denied(&state.tasks, claims.task_id))
    }

    /// [`Self::is_revoked`] for a DER X.509-SVID leaf.
    pub fn is_certificate_revoked(&self, leaf_der: &[u8]) -> Result<bool, CacheError> {
        let extension = GrantExtension::from_certificate(leaf_der)?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf_der)
            .map_err(|_| ExtensionError::BadCertificate)?;
        let serial: String = cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.is_revoked(&CredentialClaims {
            grant_id: &extension.grant_id,
            credential_id: &serial,
            task_id: &extension.task_id,
            epoch: &extension.epoch,
            parent_grant_ids: &extension.parent_grant_ids,
        })
    }

    /// Whether the cache can answer now: it has caught up with the stream
    /// and heard from the issuer lately. A service may wait for this
    /// before it starts accepting peers.
    pub fn ready(&self) -> Result<(), CacheError> {
        self.read().ready()
    }

    /// The cursor of the last event applied.
    pub fn cursor(&self) -> Option<String> {
        self.read().cursor.clone()
    }

    /// The issuer's epoch as last heard.
    pub fn epoch(&self) -> Option<String> {
        self.read().epoch.clone()
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Acknowledges the latest applied cursor whenever it changes; changes
/// made while an acknowledgement is in flight are sent together after it.
async fn acknowledge(
    client: Client,
    name: String,
    mut applied: tokio::sync::watch::Receiver<String>,
) {
    while applied.changed().await.is_ok() {
        let cursor = applied.borrow_and_update().clone();
        if let Err(error) = client.ack_revocations(&name, &cursor).await {
            tracing::warn!(%error, relying_party = %name, "could not acknowledge revocations");
        }
    }
}

// === impl State ===

impl State {
    fn ready(&self) -> Result<(), CacheError> {
        let Some(caught_up_at) = self.caught_up_at else {
            return Err(CacheError::NotSynced);
        };
        let silence = caught_up_at.elapsed();
        if silence > self.max_staleness {
            return Err(CacheError::Stale(silence));
        }
        Ok(())
    }
}

//! The composition root: [`App`] builds the server `jitid serve` and
//! `jitid dev` run from a [`Config`] (the authority, attestation anchors,
//! store, audit trail, JSON-lines sink, upkeep and the [`Issuer`] with
//! every setting of the config), serves it on a listener, and reloads the
//! entitlement catalogue on SIGHUP. The integration tests build their
//! servers through it too, so they run what users run.
//!
//! Every part comes from the config unless the builder is given one
//! ([`AppBuilder::with_store`], [`AppBuilder::with_audit_log`],
//! [`AppBuilder::with_sink`], [`AppBuilder::with_clock`]): plain overrides,
//! for embedding and tests, that replace one part and leave the wiring of
//! the rest as it is.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::attest::oidc::{OidcAttestor, OidcSetupError};
use crate::audit::event::{CatalogueReloaded, Envelope, Event, ReloadRefused, Reloaded};
use crate::audit::upkeep::{CheckpointSigner, SignedCheckpoint};
use crate::audit::{
    self, AuditEvent, AuditLog, Auditor, Head, JsonLinesSink, MemoryAuditLog, Record,
    RedisAuditLog, Upkeep,
};
use crate::ca::{self, Authority, CaError};
use crate::clock::{Clock, SystemClock};
use crate::config::{AuditSinkConfig, Config, ConfigError, StoreConfig};
use crate::issuer::Issuer;
use crate::server::{self, ServeError, ServerSettings};
use crate::store::{GrantStore, MemoryStore, RedisStore, StoreError};

/// Why the server could not be built, started or reloaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The CA's files could not be loaded or did not check out.
    #[error("loading the certificate authority")]
    Authority(#[source] CaError),
    /// An attestation trust anchor file could not be read.
    #[error("loading attestation trust anchors")]
    Anchors(#[source] CaError),
    /// An `[[attestation.oidc]]` provider could not be set up (its JWKS
    /// file, its roots).
    #[error(transparent)]
    Oidc(#[from] OidcSetupError),
    /// The JSON-lines audit file, whose chain the memory trail continues,
    /// could not be read.
    #[error("cannot read {}", path.display())]
    ReadAuditFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The last line of the JSON-lines audit file is not an audit event.
    #[error(
        "{}: the last line is not an audit event ({message}); refusing to continue a chain I cannot read",
        path.display()
    )]
    CorruptAuditFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with the line.
        message: String,
    },
    /// The JSON-lines audit file does not reach the head it is known to
    /// have reached.
    #[error("refusing to append to the audit file: {0}")]
    AuditFileTail(#[source] audit::file::TailError),
    /// The checkpoint the continued chain starts from could not be signed.
    #[error("signing the audit checkpoint: {0}")]
    Checkpoint(String),
    /// The memory trail could not be started at that checkpoint.
    #[error("starting the audit trail at its checkpoint")]
    Trail(#[source] crate::audit::log::AuditLogError),
    /// Redis, which holds grants and the trail, could not be reached.
    #[error("cannot connect to Redis (jitid fails closed: it never issues untracked credentials)")]
    Redis(#[source] StoreError),
    /// The JSON-lines audit file could not be opened for appending.
    #[error("cannot open the audit file {}", path.display())]
    AuditSink {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file did not load on reload; the catalogue in force
    /// stays.
    #[error(transparent)]
    Reload(ConfigError),
    /// The server stopped with an error.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Builds an [`App`]: everything from the config, except what an override
/// replaces.
pub struct AppBuilder {
    config: Config,
    config_path: PathBuf,
    clock: Option<Arc<dyn Clock>>,
    store: Option<Arc<dyn GrantStore>>,
    audit_log: Option<Arc<dyn AuditLog>>,
    sink: Option<JsonLinesSink>,
}

/// The server as the config describes it, built and ready to serve.
pub struct App {
    config: Config,
    config_path: PathBuf,
    issuer: Arc<Issuer>,
    settings: ServerSettings,
    store_kind: &'static str,
}

// === impl AppBuilder ===

impl AppBuilder {
    /// Override: the time everything is judged by, instead of the system
    /// clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Override: keep grants in `store` instead of the store the config
    /// names. The audit trail still follows the config unless
    /// [`with_audit_log`](Self::with_audit_log) replaces it too.
    pub fn with_store(mut self, store: Arc<dyn GrantStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Override: append the audit trail to `log` instead of the config's
    /// (the memory trail continuing the JSON-lines file, or Redis).
    pub fn with_audit_log(mut self, log: Arc<dyn AuditLog>) -> Self {
        self.audit_log = Some(log);
        self
    }

    /// Override: copy the trail to `sink` instead of the config's
    /// `[audit] jsonl`.
    pub fn with_sink(mut self, sink: JsonLinesSink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Loads the CA, connects the store, continues or opens the trail,
    /// starts the audit writer (with its upkeep) and builds the issuer.
    /// Must run inside a Tokio runtime: the audit writer is a task.
    pub async fn build(self) -> Result<App, AppError> {
        let config = self.config;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let authority = Arc::new(
            Authority::load(&config.ca, &config.trust_domain, clock.now())
                .map_err(AppError::Authority)?,
        );
        let mut anchors = Vec::new();
        for path in &config.attestation_trust_anchors {
            anchors.extend(ca::read_certs(path).map_err(AppError::Anchors)?);
        }
        // A file that lost its tail is refused before anything is appended.
        let file_tail = match &config.audit.jsonl {
            Some(AuditSinkConfig::File(path)) if config.audit.enabled && self.sink.is_none() => {
                audit_file_tail(path, &authority)?
            }
            _ => None,
        };
        let oidc = OidcAttestor::new(
            config.attestation_oidc.clone(),
            config.trust_domain.clone(),
            clock.now(),
        )
        .await?;
        let store_kind = match (&self.store, &config.store) {
            (Some(_), _) => "given",
            (None, StoreConfig::Memory) => "memory",
            (None, StoreConfig::Redis(_)) => "redis",
        };
        let (store, audit_log): (Arc<dyn GrantStore>, Arc<dyn AuditLog>) = match &config.store {
            StoreConfig::Memory => {
                let store = match self.store {
                    Some(store) => store,
                    None => Arc::new(
                        MemoryStore::new(clock.clone())
                            .with_grant_cap(config.max_grants_per_subject),
                    ),
                };
                let log = match self.audit_log {
                    Some(log) => log,
                    None => Arc::new(continue_memory_trail(file_tail, &authority, &*clock).await?),
                };
                (store, log)
            }
            StoreConfig::Redis(redis) => match (self.store, self.audit_log) {
                (Some(store), Some(log)) => (store, log),
                (store, log) => {
                    let redis_store = Arc::new(
                        RedisStore::connect(redis.clone())
                            .await
                            .map_err(AppError::Redis)?
                            .with_grant_cap(config.max_grants_per_subject),
                    );
                    (
                        store.unwrap_or_else(|| redis_store.clone()),
                        log.unwrap_or_else(|| Arc::new(RedisAuditLog::new(redis_store))),
                    )
                }
            },
        };
        let sink = match (self.sink, &config.audit.jsonl) {
            _ if !config.audit.enabled => None,
            (Some(sink), _) => Some(sink),
            (None, None) => None,
            (None, Some(AuditSinkConfig::Stdout)) => Some(JsonLinesSink::stdout()),
            (None, Some(AuditSinkConfig::File(path))) => Some(JsonLinesSink::file(path).map_err(
                |source| AppError::AuditSink {
                    path: path.clone(),
                    source,
                },
            )?),
        };
        let upkeep = Upkeep {
            clock: clock.clone(),
            interval: config.audit.upkeep_interval,
            retention: config.audit.retention(&config.store),
            signer: authority.clone(),
        };
        let mut issuer = Issuer::new(authority, config.catalogue.clone(), store, clock)
            .with_admins(config.admins.clone())
            .with_auditors(config.audit.auditors.clone())
            .with_environment(config.environment.clone())
            .with_liveness_sample(config.audit.liveness_sample)
            .with_relying_parties(
                config.revocation.ack_bound,
                config.revocation.relying_party_ttl,
                config.revocation.relying_parties.clone(),
            )
            .with_identity_limits(crate::issuer::IdentityLimits {
                ttl: config.identity.ttl,
                max_ttl: config.identity.max_ttl,
            });
        if config.audit.enabled {
            issuer = issuer.with_auditor(Auditor::start(
                audit_log,
                sink,
                config.audit.mode,
                Some(upkeep),
            ));
        } else {
            tracing::warn!("no audit trail (--no-audit): for measuring its cost only");
        }
        let settings = ServerSettings {
            identity: config.server.clone(),
            attestation_anchors: anchors,
            max_request_bytes: config.max_request_bytes,
            admission: config.admission,
            connections: config.connections,
            streams: config.streams,
            failure_window: config.audit.failure_window,
            oidc: Arc::new(oidc),
        };
        Ok(App {
            config,
            config_path: self.config_path,
            issuer: Arc::new(issuer),
            settings,
            store_kind,
        })
    }
}

// === impl App ===

impl App {
    /// Starts building the server `config` describes; `config_path` is the
    /// file it was loaded from, which a reload reads again.
    pub fn builder(config: Config, config_path: &Path) -> AppBuilder {
        AppBuilder {
            config,
            config_path: config_path.to_owned(),
            clock: None,
            store: None,
            audit_log: None,
            sink: None,
        }
    }

    /// The config the server was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The issuer the server answers with.
    pub fn issuer(&self) -> &Arc<Issuer> {
        &self.issuer
    }

    /// Binds the config's listen address.
    pub async fn bind(&self) -> Result<TcpListener, AppError> {
        let addr = self.config.listen;
        TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Listen { addr, source })
    }

    /// Reads the config file again and puts its entitlement catalogue in
    /// force, returning how many entitlements it has. Either way the
    /// outcome is logged and recorded in the audit trail
    /// (`catalogue_reloaded`); a file that does not load is returned as
    /// [`AppError::Reload`] and the catalogue in force stays. A failure to
    /// record is logged, not returned: the reload has happened.
    pub async fn reload(&self) -> Result<usize, AppError> {
        reload_catalogue(&self.issuer, &self.config_path).await
    }

    /// Serves on `listener` until `shutdown` resolves, then drains
    /// in-flight RPCs and returns. While it serves, each SIGHUP calls
    /// [`App::reload`].
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), AppError> {
        let addr = listener.local_addr().map_err(|source| AppError::Listen {
            addr: self.config.listen,
            source,
        })?;
        tracing::info!(
            trust_domain = %self.config.trust_domain,
            %addr,
            entitlements = self.config.catalogue.entitlements().len(),
            store = self.store_kind,
            "jitid server starting"
        );
        // Listen before serving, so a SIGHUP once callers are answered
        // reloads rather than kills.
        let reloader = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(hangups) => Some(tokio::spawn(reload_on_hangup(
                self.issuer.clone(),
                self.config_path.clone(),
                hangups,
            ))),
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGHUP; the catalogue will not reload");
                None
            }
        };
        let issuer = self.issuer.clone();
        let served = server::serve(listener, self.issuer, self.settings, shutdown).await;
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        // The audit file ends with a signed head, so a cut is seen later.
        issuer.seal_audit().await;
        Ok(served?)
    }
}

/// On each SIGHUP, reloads the catalogue (see [`App::reload`]).
async fn reload_on_hangup(
    issuer: Arc<Issuer>,
    config_path: PathBuf,
    mut hangups: tokio::signal::unix::Signal,
) {
    while hangups.recv().await.is_some() {
        // The outcome is logged and audited there.
        let _ = reload_catalogue(&issuer, &config_path).await;
    }
}

async fn reload_catalogue(issuer: &Issuer, config_path: &Path) -> Result<usize, AppError> {
    let file = config_path.display().to_string();
    let (event, outcome) = match Config::load(config_path) {
        Ok(config) => {
            let count = config.catalogue.entitlements().len();
            issuer.replace_catalogue(config.catalogue);
            tracing::info!(entitlements = count, "catalogue reloaded");
            (
                CatalogueReloaded::Reloaded(Reloaded {
                    file,
                    entitlements: count as u64,
                }),
                Ok(count),
            )
        }
        Err(error) => {
            let message = format!("{error:#}");
            tracing::error!(
                error = %message,
                "catalogue reload failed; keeping the catalogue in force"
            );
            (
                CatalogueReloaded::Refused(ReloadRefused {
                    file,
                    error: message,
                }),
                Err(AppError::Reload(error)),
            )
        }
    };
    let envelope = Envelope {
        at: issuer.clock().now(),
        actor: audit::SYSTEM.to_owned(),
        subject: None,
        grant: None,
        task: None,
    };
    let record = Record::new(envelope, &Event::CatalogueReloaded(event));
    if let Err(error) = issuer.audit(vec![record]).await {
        tracing::error!(%error, "catalogue reload not recorded in the audit trail");
    }
    outcome
}

/// The memory trail dies with the process; its JSON-lines file, if any, is
/// the lasting copy, so the trail continues the file's chain, from a
/// checkpoint of where the file ends.
async fn continue_memory_trail(
    start: Option<(Head, String)>,
    authority: &Authority,
    clock: &dyn Clock,
) -> Result<MemoryAuditLog, AppError> {
    let log = MemoryAuditLog::starting_at(
        start
            .as_ref()
            .map_or_else(Head::genesis, |(head, _)| head.clone()),
    );
    if let Some((head, time)) = start {
        let token = authority
            .sign_checkpoint(&head, &time, clock.now())
            .map_err(AppError::Checkpoint)?;
        log.trim(&SignedCheckpoint {
            seq: head.seq,
            token,
        })
        .await
        .map_err(AppError::Trail)?;
    }
    Ok(log)
}

/// The head and time of the last event of a JSON-lines audit file (none
/// for a missing or empty file), once the file is known to reach the head
/// its head file names (see [`audit::file`]): a file that lost its tail is
/// refused, so nothing is appended, or signed, over the cut.
fn audit_file_tail(path: &Path, authority: &Authority) -> Result<Option<(Head, String)>, AppError> {
    let head = match audit::file::read_head(path).map_err(AppError::AuditFileTail)? {
        Some(token) => Some(
            audit::checkpoint::verify_checkpoint(&token, &authority.document_authorities())
                .map_err(|message| {
                    AppError::AuditFileTail(audit::file::TailError::BadHead {
                        path: audit::file::head_path(path),
                        message,
                    })
                })?,
        ),
        None => None,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(AppError::ReadAuditFile {
                path: path.to_owned(),
                source,
            });
        }
    };
    // The events from the end back to the head's, newest first.
    let mut tail = Vec::new();
    for line in text.lines().rev() {
        if line.trim().is_empty() || audit::file::Seal::parse(line).is_some() {
            continue;
        }
        let event = AuditEvent::from_line(line).map_err(|message| AppError::CorruptAuditFile {
            path: path.to_owned(),
            message,
        })?;
        let reached = head.as_ref().is_none_or(|head| event.seq <= head.seq);
        tail.push(event);
        if reached {
            break;
        }
    }
    tail.reverse();
    if let Some(head) = &head {
        audit::file::check_tail(path, &tail, head).map_err(AppError::AuditFileTail)?;
    }
    Ok(tail.pop().map(|event| (event.head(), event.time)))
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::audit::{EventKind, verify_chain};

    /// The dev trust domain in a fresh directory: a CA, and a config with
    /// the memory store and a JSON-lines audit file.
    fn dev_config() -> (tempfile::TempDir, Config, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let env = crate::dev::ensure(&dir.path().join("dev"), SystemTime::now()).unwrap();
        let config = Config::load(&env.config_path).unwrap();
        (dir, config, env.config_path)
    }

    fn audit_file(config: &Config) -> PathBuf {
        match &config.audit.jsonl {
            Some(AuditSinkConfig::File(path)) => path.clone(),
            other => panic!("the dev config has no audit file: {other:?}"),
        }
    }

    fn file_events(path: &Path) -> Vec<AuditEvent> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| AuditEvent::from_line(line).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn reload_puts_a_good_catalogue_in_force_keeps_it_on_a_bad_one_and_records_both() {
        let (_dir, config, path) = dev_config();
        let trail = Arc::new(MemoryAuditLog::new());
        let app = App::builder(config, &path)
            .with_audit_log(trail.clone())
            .build()
            .await
            .unwrap();
        let original = std::fs::read_to_string(&path).unwrap();
        let renamed = original.replace("name = \"ci-publish\"", "name = \"ci-release\"");
        assert_ne!(renamed, original);
        std::fs::write(&path, &renamed).unwrap();
        let count = app.reload().await.unwrap();
        assert_eq!(count, app.config().catalogue.entitlements().len());
        let catalogue = app.issuer().catalogue();
        assert!(catalogue.entitlement("ci-release").is_some());
        assert!(catalogue.entitlement("ci-publish").is_none());

        std::fs::write(&path, "this is not toml").unwrap();
        let error = app.reload().await.unwrap_err();
        assert!(matches!(error, AppError::Reload(_)), "{error:?}");
        assert!(app.issuer().catalogue().entitlement("ci-release").is_some());

        let events = trail.read(0, 100).await.unwrap();
        let reloads: Vec<&AuditEvent> = events
            .iter()
            .filter(|event| event.kind == EventKind::CatalogueReloaded)
            .collect();
        assert_eq!(reloads.len(), 2, "{events:#?}");
        assert_eq!(reloads[0].details["reloaded"], true);
        assert_eq!(reloads[0].actor, audit::SYSTEM);
        assert_eq!(reloads[1].details["reloaded"], false);
    }

    #[tokio::test]
    async fn the_memory_trail_continues_the_chain_of_its_json_lines_file() {
        let (_dir, config, path) = dev_config();
        let file = audit_file(&config);
        for _ in 0..2 {
            // Each App is a server started afresh on the same files.
            let app = App::builder(config.clone(), &path).build().await.unwrap();
            app.reload().await.unwrap();
        }
        let events = file_events(&file);
        assert_eq!(events.len(), 2);
        let head = verify_chain(&Head::genesis(), &events).unwrap();
        assert_eq!(head.seq, 2);
    }

    #[tokio::test]
    async fn an_audit_file_that_lost_its_tail_is_refused_at_startup() {
        let (_dir, config, path) = dev_config();
        let file = audit_file(&config);
        let app = App::builder(config.clone(), &path).build().await.unwrap();
        for _ in 0..5 {
            app.reload().await.unwrap();
        }
        app.issuer().seal_audit().await;
        for _ in 0..3 {
            app.reload().await.unwrap();
        }
        app.issuer().seal_audit().await;
        drop(app);

        // Eight events, sealed by signed head lines (the last one at the
        // end, at the seal), and the head file naming the last event.
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let events = || {
            lines
                .iter()
                .filter(|line| audit::file::Seal::parse(line).is_none())
        };
        assert_eq!(events().count(), 8, "{text}");
        let head = audit::file::read_head(&file).unwrap().unwrap();
        assert_eq!(
            audit::file::Seal::parse(lines[lines.len() - 1]),
            Some(audit::file::Seal::Head(head))
        );
        let position = |seq: u64| {
            lines
                .iter()
                .position(|line| line.starts_with(&format!("{{\"seq\":{seq},")))
                .unwrap()
        };
        // A file that reaches its head is continued.
        App::builder(config.clone(), &path).build().await.unwrap();

        // Cut the last three events and the head line after them: the
        // file now ends where an earlier head line left it, but its head
        // file knows better.
        let cut = position(6);
        std::fs::write(&file, lines[..cut].join("\n") + "\n").unwrap();
        let error = App::builder(config.clone(), &path)
            .build()
            .await
            .err()
            .unwrap();
        assert!(
            matches!(
                &error,
                AppError::AuditFileTail(audit::file::TailError::Behind {
                    ends: 5,
                    head: 8,
                    ..
                })
            ),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("removed from its end"),
            "{error}"
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap().lines().count(),
            cut,
            "nothing appended over the cut"
        );

        // An event rewritten at the head's place is refused too.
        let mut rewritten: Vec<String> = lines.iter().map(|line| (*line).to_owned()).collect();
        let eighth = position(8);
        rewritten[eighth] = rewritten[eighth].replacen("\"hash\":\"", "\"hash\":\"0", 1);
        std::fs::write(&file, rewritten.join("\n") + "\n").unwrap();
        let error = App::builder(config, &path).build().await.err().unwrap();
        assert!(
            matches!(
                &error,
                AppError::AuditFileTail(audit::file::TailError::Diverged { seq: 8, .. })
            ),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_audit_file_whose_last_line_is_not_an_event_is_not_continued() {
        let (_dir, config, path) = dev_config();
        let file = audit_file(&config);
        std::fs::write(&file, "{\"seq\": \n").unwrap();
        let error = App::builder(config, &path).build().await.err().unwrap();
        assert!(
            matches!(&error, AppError::CorruptAuditFile { path, .. } if *path == file),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("refusing to continue a chain"),
            "{error}"
        );
    }
}

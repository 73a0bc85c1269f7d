//! The Redis connection that the grant store and the audit trail share: how
//! to reach Redis ([`RedisStoreConfig`]: standalone or Cluster, TLS), and
//! [`RedisHandle`], a cheap-to-clone handle on one connection that both send
//! their commands through. It knows no key and no record format: those
//! belong to `store::RedisStore` and `audit::RedisAuditLog`, which each
//! keep to their own keys and may share one handle (and so one multiplexed
//! connection).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::keyfile;

/// How to reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStoreConfig {
    /// `redis://`, `rediss://` or `unix://` URLs; one for a standalone
    /// server, the seed nodes for a Cluster.
    pub urls: Vec<String>,
    /// Whether `urls` are Redis Cluster nodes.
    pub cluster: bool,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Replicas that must acknowledge a revocation before it is reported
    /// done (Redis `WAIT`); 0 for none. Standalone only.
    pub wait_replicas: u64,
    /// How long to wait for those acknowledgements.
    pub wait_timeout: Duration,
    /// Timeout of each command and connection attempt.
    pub timeout: Duration,
    /// For `rediss://`: PEM CA certificate(s) to trust instead of the
    /// system roots.
    pub ca_file: Option<PathBuf>,
    /// For `rediss://` with client authentication: PEM certificate and
    /// private key (the key must not be readable by group or others).
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

/// Why Redis could not be reached or did not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisConnError {
    /// Redis answered with an error, or could not be reached.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// The configuration cannot be used (no URL, unreadable TLS files).
    #[error("{0}")]
    Config(String),
    /// Writes were not acknowledged by enough replicas in time.
    #[error("acknowledged by {acked} of {wanted} replicas")]
    NotReplicated {
        /// Replicas that acknowledged.
        acked: u64,
        /// Replicas required.
        wanted: u64,
    },
}

/// One connection to Redis and the configuration it was made with; cheap
/// to clone (clones share the connection).
#[derive(Clone)]
pub struct RedisHandle {
    connection: RedisConnection,
    config: Arc<RedisStoreConfig>,
}

/// A standalone connection that reconnects, a plain one (for blocking
/// reads), or a Cluster connection.
#[derive(Clone)]
pub struct RedisConnection(Inner);

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Multiplexed(redis::aio::MultiplexedConnection),
    Cluster(ClusterConnection),
}

// === impl RedisStoreConfig ===

impl RedisStoreConfig {
    /// A standalone Redis at `url` with the defaults: prefix `jitid`, no
    /// `WAIT`, 500 ms timeouts, system TLS roots.
    pub fn new(url: &str) -> Self {
        Self {
            urls: vec![url.to_owned()],
            cluster: false,
            key_prefix: "jitid".to_owned(),
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            ca_file: None,
            client_identity: None,
        }
    }
}

// === impl RedisHandle ===

impl RedisHandle {
    /// Connects (and fails if Redis cannot be reached now; later outages are
    /// reported per command and recovered from without a restart).
    pub async fn connect(config: RedisStoreConfig) -> Result<Self, RedisConnError> {
        if config.urls.is_empty() {
            return Err(RedisConnError::Config("no Redis URL configured".to_owned()));
        }
        let connection = if config.cluster {
            let mut builder = redis::cluster::ClusterClient::builder(config.urls.clone())
                .connection_timeout(config.timeout)
                .response_timeout(config.timeout)
                .retries(1);
            if let Some(certificates) = tls_certificates(&config)? {
                builder = builder.certs(certificates);
            }
            let client = builder.build()?;
            Inner::Cluster(client.get_async_connection().await?)
        } else {
            let client = standalone_client(&config)?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.timeout))
                .set_response_timeout(Some(config.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            Inner::Single(
                client
                    .get_connection_manager_with_config(manager_config)
                    .await?,
            )
        };
        Ok(Self {
            connection: RedisConnection(connection),
            config: Arc::new(config),
        })
    }

    /// The configuration the handle was made with.
    pub fn config(&self) -> &RedisStoreConfig {
        &self.config
    }

    /// The prefix of every key.
    pub fn key_prefix(&self) -> &str {
        &self.config.key_prefix
    }

    /// The shared connection, to send commands through.
    pub fn connection(&self) -> RedisConnection {
        self.connection.clone()
    }

    /// A connection of its own whose commands may block for up to `wait`
    /// (plus the timeout) without stalling every other command, as a shared
    /// one would: for blocking stream reads.
    pub async fn blocking_connection(
        &self,
        wait: Duration,
    ) -> Result<RedisConnection, RedisConnError> {
        let config = &self.config;
        let response_timeout = Some(wait + config.timeout);
        let connection = if config.cluster {
            let mut builder = redis::cluster::ClusterClient::builder(config.urls.clone())
                .connection_timeout(config.timeout)
                .response_timeout(wait + config.timeout);
            if let Some(certificates) = tls_certificates(config)? {
                builder = builder.certs(certificates);
            }
            let client = builder.build()?;
            Inner::Cluster(client.get_async_connection().await?)
        } else {
            let client = standalone_client(config)?;
            let connection_config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.timeout))
                .set_response_timeout(response_timeout);
            Inner::Multiplexed(
                client
                    .get_multiplexed_async_connection_with_config(&connection_config)
                    .await?,
            )
        };
        Ok(RedisConnection(connection))
    }

    /// Waits for replicas to acknowledge the writes so far, if configured
    /// (`wait_replicas`).
    pub async fn replicate(&self) -> Result<(), RedisConnError> {
        let wanted = self.config.wait_replicas;
        if wanted == 0 {
            return Ok(());
        }
        let mut connection = self.connection();
        let acked: u64 = redis::cmd("WAIT")
            .arg(wanted)
            .arg(u64::try_from(self.config.wait_timeout.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut connection)
            .await?;
        if acked < wanted {
            return Err(RedisConnError::NotReplicated { acked, wanted });
        }
        Ok(())
    }
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may carry a password: show only how many there are.
        f.debug_struct("RedisHandle")
            .field("urls", &self.config.urls.len())
            .field("cluster", &self.config.cluster)
            .field("key_prefix", &self.config.key_prefix)
            .finish_non_exhaustive()
    }
}

/// A client for the first URL, with the configured TLS material.
fn standalone_client(config: &RedisStoreConfig) -> Result<redis::Client, RedisConnError> {
    let url = config.urls[0].as_str();
    match tls_certificates(config)? {
        Some(certificates) => Ok(redis::Client::build_with_tls(url, certificates)?),
        None => Ok(redis::Client::open(url)?),
    }
}

/// The CA and client identity for `rediss://`, when configured.
fn tls_certificates(
    config: &RedisStoreConfig,
) -> Result<Option<redis::TlsCertificates>, RedisConnError> {
    if config.ca_file.is_none() && config.client_identity.is_none() {
        return Ok(None);
    }
    let read = |path: &PathBuf| {
        std::fs::read(path)
            .map_err(|error| RedisConnError::Config(format!("{}: {error}", path.display())))
    };
    let root_cert = config.ca_file.as_ref().map(read).transpose()?;
    let client_tls = match &config.client_identity {
        Some((cert, key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: keyfile::read_private(key)
                .map_err(|error| RedisConnError::Config(error.to_string()))?
                .into_bytes(),
        }),
        None => None,
    };
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

// === impl RedisConnection ===

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Inner::Single(connection) => connection.req_packed_command(cmd),
            Inner::Multiplexed(connection) => connection.req_packed_command(cmd),
            Inner::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Inner::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Inner::Multiplexed(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Inner::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Inner::Single(connection) => connection.get_db(),
            Inner::Multiplexed(connection) => connection.get_db(),
            Inner::Cluster(connection) => connection.get_db(),
        }
    }
}

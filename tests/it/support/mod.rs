//! Shared harness: a test CA, a running server, and clients for chosen
//! identities. Servers are built by `jitid::app::App` from the config file
//! the harness writes, as `jitid serve` builds them; the harness only
//! hands in the store and the audit trail it inspects (and a sink).

pub mod oidc;
pub mod redis;
pub mod svid;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jitid::app::App;
use jitid::audit::upkeep::Retention;
use jitid::audit::{AuditLog, JsonLinesSink, MemoryAuditLog};
use jitid::ca::{self, Authority, InitOptions, LeafRequest};
use jitid::client::{Client, ClientConfig, ClientIdentity, RetryPolicy};
use jitid::clock::{Clock, SystemClock};
use jitid::config::{CaPaths, Config};
use jitid::spiffe_id::{SpiffeId, TrustDomain};
use jitid::store::{GrantStore, MemoryStore};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::oneshot;

pub const TRUST_DOMAIN: &str = "example.org";
pub const CI_RUNNER: &str = "spiffe://example.org/ci/runner-1";
pub const AGENT: &str = "spiffe://example.org/agents/planner";

/// The entitlements every test server starts with.
pub const ENTITLEMENTS: &str = r#"
[[entitlement]]
name = "ci-publish"
actions = ["read:source", "publish:artifacts"]
requesters = ["spiffe://example.org/ci/*"]
default_ttl = "5m"
max_ttl = "10m"

[[entitlement]]
name = "agent-research"
actions = ["kb:read", "tool:search"]
requesters = ["spiffe://example.org/agents/planner"]
max_ttl = "15m"

[[entitlement]]
name = "prod-deploy"
risk = "high"
actions = ["deploy:prod/payments"]
requesters = ["group:release"]
require = ["justification", "ticket"]
max_active = 1
audiences = ["deploy.example.org"]
approval = "auto"

[[entitlement]]
name = "db-migrate"
risk = "critical"
actions = ["db:migrate", "db:read"]
requesters = ["group:release", "group:sre", "group:security"]
approvers = ["group:sre"]
min_approvals = 2
break_glass = { max_ttl = "2m", reviewers = ["group:security"] }

[[entitlement]]
name = "quick-approval"
actions = ["cache:flush"]
requesters = ["group:release"]
approvers = ["group:sre"]
pending_ttl = "2s"

[[entitlement]]
name = "agent-task"
risk = "low"
actions = ["kb:read"]
requesters = ["spiffe://example.org/agents/planner"]
identity = "per-task"
"#;

pub const ADMIN: &str = "spiffe://example.org/ops/admin";
/// May read the audit trail (`[audit] auditors`), nothing else.
pub const AUDITOR: &str = "spiffe://example.org/audit/ann";
/// How often test servers record expiries and apply retention.
/// The relying-party names of the test config, each bound to the ledger
/// service.
const RELYING_PARTIES: &str = "[revocation.relying_parties]\nledger-a = \"spiffe://example.org/svc/ledger\"\nledger-b = \"spiffe://example.org/svc/ledger\"\nledger-stalled = \"spiffe://example.org/svc/ledger\"\n";

pub const UPKEEP: Duration = Duration::from_millis(100);
pub const SRE_A: &str = "spiffe://example.org/sre/alice";
pub const SRE_B: &str = "spiffe://example.org/sre/bob";
pub const SRE_C: &str = "spiffe://example.org/sre/dave";
pub const SECURITY_A: &str = "spiffe://example.org/security/carol";
pub const SECURITY_B: &str = "spiffe://example.org/security/erin";

/// A CA on disk, a server on an ephemeral port, and its store.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub ca: CaPaths,
    pub authority: Arc<Authority>,
    pub store: Arc<MemoryStore>,
    /// The audit trail of servers started without one of their own.
    pub audit: Arc<MemoryAuditLog>,
    pub addr: SocketAddr,
    config: Config,
    config_path: PathBuf,
    servers: Vec<oneshot::Sender<()>>,
}

impl TestEnv {
    /// A server on the in-memory store.
    pub async fn start() -> Self {
        Self::start_inner(None, "", "").await
    }

    /// A server on the given store (the memory store stays unused).
    pub async fn start_with(store: Arc<dyn GrantStore>) -> Self {
        Self::start_inner(Some(store), "", "").await
    }

    /// A server whose config has `extra` (windows, entitlements) appended.
    pub async fn start_with_catalogue(extra: &str) -> Self {
        Self::start_inner(None, extra, "").await
    }

    /// A server on `store` (or the memory store) whose config has `extra`
    /// appended.
    pub async fn start_on_with_catalogue(store: Option<Arc<dyn GrantStore>>, extra: &str) -> Self {
        Self::start_inner(store, extra, "").await
    }

    /// A server whose `[limits]` table has `limits` (lines) added.
    pub async fn start_with_limits(limits: &str) -> Self {
        Self::start_inner(None, "", limits).await
    }

    async fn start_inner(store: Option<Arc<dyn GrantStore>>, extra: &str, limits: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let trust_domain = TrustDomain::new(TRUST_DOMAIN).unwrap();
        let now = SystemTime::now();
        let ca_dir = dir.path().join("ca");
        let ca = ca::init(
            &ca_dir,
            &trust_domain,
            now,
            &InitOptions {
                root_ttl: Duration::from_secs(48 * 3600),
                signing_ttl: Duration::from_secs(24 * 3600),
            },
        )
        .unwrap();
        let config_path = dir.path().join("jitid.toml");
        let config_text = format!(
            "trust_domain = \"{TRUST_DOMAIN}\"\nlisten = \"127.0.0.1:0\"\nadmins = [\"spiffe://example.org/ops/*\"]\nenvironment = \"test\"\n[groups]\nrelease = [\"spiffe://example.org/ci/*\"]\nsre = [\"spiffe://example.org/sre/*\"]\nsecurity = [\"spiffe://example.org/security/*\"]\n[audit]\nauditors = [\"spiffe://example.org/audit/*\"]\nupkeep_interval = \"{upkeep}ms\"\nfailure_window = \"500ms\"\n[ca]\ndir = \"ca\"\n[limits]\nmax_request_bytes = 65536\n{limits}\n{RELYING_PARTIES}\n{ENTITLEMENTS}\n{extra}",
            upkeep = UPKEEP.as_millis()
        );
        std::fs::write(&config_path, &config_text).unwrap();
        let config = Config::load(&config_path).unwrap();

        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let authority = Arc::new(Authority::load(&ca, &trust_domain, now).unwrap());
        let memory = Arc::new(MemoryStore::new(clock.clone()));
        let mut env = Self {
            dir,
            ca,
            authority,
            store: memory.clone(),
            audit: Arc::new(MemoryAuditLog::new()),
            addr: "127.0.0.1:0".parse().unwrap(),
            config,
            config_path,
            servers: Vec::new(),
        };
        env.addr = env.spawn_server(store.unwrap_or(memory)).await;
        env
    }

    /// Starts another server with the same CA and config on `store`;
    /// returns its address. It stops when the environment is dropped.
    pub async fn spawn_server(&mut self, store: Arc<dyn GrantStore>) -> SocketAddr {
        let audit = self.audit.clone();
        self.spawn_audited(store, audit, None).await
    }

    /// Starts another server on `store` whose audit trail goes to `audit`
    /// (and `sink`).
    pub async fn spawn_audited(
        &mut self,
        store: Arc<dyn GrantStore>,
        audit: Arc<dyn AuditLog>,
        sink: Option<JsonLinesSink>,
    ) -> SocketAddr {
        self.spawn_retaining(store, audit, sink, Retention::default())
            .await
    }

    /// [`TestEnv::spawn_audited`], with the trail looked after every
    /// [`UPKEEP`] and trimmed to `retention` (a limit it leaves out is the
    /// config's default, as for `jitid serve`).
    pub async fn spawn_retaining(
        &mut self,
        store: Arc<dyn GrantStore>,
        audit: Arc<dyn AuditLog>,
        sink: Option<JsonLinesSink>,
        retention: Retention,
    ) -> SocketAddr {
        let mut config = self.config.clone();
        if let Some(max_age) = retention.max_age {
            config.audit.max_age = max_age;
        }
        config.audit.max_events = retention.max_events;
        let mut app = App::builder(config, &self.config_path)
            .with_store(store)
            .with_audit_log(audit);
        if let Some(sink) = sink {
            app = app.with_sink(sink);
        }
        let app = app.build().await.unwrap();
        let listener = app.bind().await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, stop) = oneshot::channel::<()>();
        tokio::spawn(async move {
            app.serve(listener, async {
                let _ = stop.await;
            })
            .await
            .unwrap();
        });
        self.servers.push(shutdown);
        addr
    }

    /// A client of the server at `addr` for `id`.
    pub async fn client_at(&self, addr: SocketAddr, id: &str) -> Client {
        Client::connect(self.client_config(addr, id)).await.unwrap()
    }

    /// How a client of the server at `addr` connects as `id` (with the
    /// default retry policy).
    pub fn client_config(&self, addr: SocketAddr, id: &str) -> ClientConfig {
        ClientConfig {
            server: format!("https://127.0.0.1:{}", addr.port()),
            server_roots: self.roots(),
            identity: Some(self.identity(id)),
            retry: RetryPolicy::default(),
        }
    }

    /// A config file for CLI commands that read the Redis at `url` with
    /// this environment's CA (e.g. `jitid audit verify --config`).
    pub fn redis_config_file(&self, url: &str) -> PathBuf {
        let config = self.dir.path().join("verify.toml");
        std::fs::write(
            &config,
            format!(
                "trust_domain = \"{TRUST_DOMAIN}\"\nstore = \"redis\"\n[ca]\ndir = \"ca\"\n[redis]\nurl = \"{url}\"\n"
            ),
        )
        .unwrap();
        config
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn roots(&self) -> Vec<CertificateDer<'static>> {
        ca::read_certs(&self.ca.root_cert).unwrap()
    }

    /// An attestation identity for `id`, signed by the test CA's
    /// attestation intermediate.
    pub fn identity(&self, id: &str) -> ClientIdentity {
        let now = SystemTime::now();
        self.identity_valid(id, now, now + Duration::from_secs(3600))
    }

    pub fn identity_valid(&self, id: &str, from: SystemTime, until: SystemTime) -> ClientIdentity {
        let spiffe_id = SpiffeId::new(id).unwrap();
        let issued = self
            .authority
            .issue_attestation_identity(
                LeafRequest {
                    spiffe_id: &spiffe_id,
                    expires_at: until,
                    dns_names: &[],
                    ip_addresses: &[],
                },
                from,
            )
            .unwrap();
        ClientIdentity::new(
            issued.chain,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_pkcs8)),
        )
    }

    /// Runs the `jitid` binary as `id` against the first server.
    pub fn cli(&self, id: &str, args: &[&str]) -> std::process::Output {
        self.cli_at(&self.url(), id, args)
    }

    /// Runs the `jitid` binary as `id` against the server at `url`.
    pub fn cli_at(&self, url: &str, id: &str, args: &[&str]) -> std::process::Output {
        let (cert, key) = self.identity_files(id);
        std::process::Command::new(jitid_bin())
            .env_clear()
            .env("JITID_SERVER", url)
            .env("JITID_CA", &self.ca.root_cert)
            .env("JITID_CERT", &cert)
            .env("JITID_KEY", &key)
            .args(args)
            .output()
            .unwrap()
    }

    /// Writes an identity for `id` as PEM files (key 0600), for the CLI.
    pub fn identity_files(&self, id: &str) -> (PathBuf, PathBuf) {
        self.identity_files_until(id, SystemTime::now() + Duration::from_secs(3600))
    }

    /// [`TestEnv::identity_files`] for an identity that expires `until`.
    pub fn identity_files_until(&self, id: &str, until: SystemTime) -> (PathBuf, PathBuf) {
        let spiffe_id = SpiffeId::new(id).unwrap();
        let now = SystemTime::now();
        let issued = self
            .authority
            .issue_attestation_identity(
                LeafRequest {
                    spiffe_id: &spiffe_id,
                    expires_at: until,
                    dns_names: &[],
                    ip_addresses: &[],
                },
                now,
            )
            .unwrap();
        // A directory per call: a process reading one pair never sees a key
        // from one call with the certificate of another.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self
            .dir
            .path()
            .join("identities")
            .join(format!("{}-{call}", spiffe_id.path().replace('/', "_")));
        jitid::keyfile::create_private_dir(&dir).unwrap();
        let cert = dir.join("identity.pem");
        let key = dir.join("identity.key");
        jitid::keyfile::write_replace(&key, issued.key_pem().as_bytes(), 0o600).unwrap();
        jitid::keyfile::write_replace(&cert, issued.chain_pem().as_bytes(), 0o644).unwrap();
        (cert, key)
    }

    pub async fn client_with(&self, identity: Option<ClientIdentity>) -> Client {
        Client::connect(ClientConfig {
            server: self.url(),
            server_roots: self.roots(),
            identity,
            retry: RetryPolicy::default(),
        })
        .await
        .unwrap()
    }

    pub async fn client_for(&self, id: &str) -> Client {
        self.client_with(Some(self.identity(id))).await
    }

    /// The attestation CA as an rcgen issuer, for hand-made client
    /// certificates.
    pub fn rcgen_issuer(&self) -> rcgen::Issuer<'static, rcgen::KeyPair> {
        let key =
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(&self.ca.attestation_key).unwrap())
                .unwrap();
        let cert = ca::read_certs(&self.ca.attestation_cert).unwrap().remove(0);
        rcgen::Issuer::from_ca_cert_der(&cert, key).unwrap()
    }

    /// A client certificate with the given URI SANs, signed by the test
    /// CA's attestation intermediate.
    pub fn identity_with_uris(&self, uris: &[&str]) -> ClientIdentity {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = uris
            .iter()
            .map(|uri| rcgen::SanType::URI((*uri).try_into().unwrap()))
            .collect();
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(60)).into();
        params.not_after = (now + Duration::from_secs(3600)).into();
        let cert = params.signed_by(&key, &self.rcgen_issuer()).unwrap();
        let attestation = ca::read_certs(&self.ca.attestation_cert).unwrap().remove(0);
        ClientIdentity::new(
            vec![cert.der().clone(), attestation],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    pub fn grants(&self) -> usize {
        self.store.grant_count()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for shutdown in self.servers.drain(..) {
            let _ = shutdown.send(());
        }
    }
}

/// A command's stdout and stderr, after checking its exit code.
pub fn exited(output: &std::process::Output, code: i32) -> String {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(code), "{all}");
    all
}

/// Waits until `check` says yes, polling every 50 ms; fails naming `what`
/// after 30 s. For outcomes that take their time (a renewal on a
/// schedule): wait for the event that shows it, never a bare sleep.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Path of the built `jitid` binary.
pub fn jitid_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_jitid"))
}

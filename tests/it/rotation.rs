//! Services with rotating identities: the `svid_server` and `svid_client`
//! examples, run as built, talk mTLS with nothing but 1-minute SVIDs from
//! the test server, keep calling across several rotations of both, and a
//! revoked client is refused at its next handshake; in process, the peer
//! verifier's allow-list and fail-closed revocation check, and new SVIDs
//! published to subscribers.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use jitid::client::{
    CurrentSvid, RevocationCache, RotatingIdentity, SpiffePeerVerifier, SvidRequest,
};
use jitid::proto::v1::revoke_request::Target;
use rustls::client::ResolvesClientCert;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{ADMIN, TestEnv};

const GREETER: &str = r#"
[[entitlement]]
name = "svc-greeter"
actions = ["greeter:call"]
requesters = ["spiffe://example.org/svc/*"]
max_ttl = "1m"
"#;
const SERVER_ID: &str = "spiffe://example.org/svc/greeter";
const CLIENT_ID: &str = "spiffe://example.org/svc/caller";
/// Of a 1-minute SVID: a renewal every 3.2 to 3.6 s.
const RENEW_FRACTION: &str = "0.06";
/// SVIDs each side must have used: the first and three rotations.
const SVIDS: usize = 4;

/// The example binaries, built once (`cargo test --test it` does not build
/// examples, and a stale binary would test old code).
struct Examples {
    server: PathBuf,
    client: PathBuf,
}

fn examples() -> &'static Examples {
    static EXAMPLES: OnceLock<Examples> = OnceLock::new();
    EXAMPLES.get_or_init(|| {
        // target/<profile>/deps/it-<hash> -> target/<profile>
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap();
        let target_dir = profile_dir.parent().unwrap();
        let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cargo
            .args(["build", "--locked", "--example", "svid_server"])
            .args(["--example", "svid_client", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        if profile_dir.ends_with("release") {
            cargo.arg("--release");
        }
        let output = cargo.output().unwrap();
        assert!(
            output.status.success(),
            "building the examples failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let examples = profile_dir.join("examples");
        Examples {
            server: examples.join("svid_server"),
            client: examples.join("svid_client"),
        }
    })
}

/// A running example: its stdout line by line, its stderr in a file.
struct Example {
    name: &'static str,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    transcript: Vec<String>,
    stderr: PathBuf,
}

impl Example {
    fn spawn(name: &'static str, bin: &Path, dir: &Path, args: &[String]) -> Self {
        let stderr = dir.join(format!("{name}.stderr"));
        let mut child = Command::new(bin)
            .args(args)
            .env("JITID_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", bin.display()));
        let (sender, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            name,
            child,
            lines,
            transcript: Vec::new(),
            stderr,
        }
    }

    /// The next stdout line, or a panic with everything seen if none comes
    /// before `deadline` (`waiting_for` says what the test expected).
    async fn next_line(&mut self, deadline: Instant, waiting_for: &str) -> String {
        match tokio::time::timeout_at(deadline, self.lines.recv()).await {
            Ok(Some(line)) => {
                self.transcript.push(line.clone());
                line
            }
            Ok(None) => self.fail(&format!("exited while the test waited for {waiting_for}")),
            Err(_) => self.fail(&format!("timed out waiting for {waiting_for}")),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{}: {what}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.name,
            self.transcript.join("\n"),
            self.log()
        )
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `key=` in a `key=value ...` line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split(' ')
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Identity and issuer flags of an example acting as `id`.
fn issuer_args(env: &TestEnv, id: &str) -> Vec<String> {
    let (cert, key) = env.identity_files(id);
    let mut args: Vec<String> = vec!["--issuer".into(), env.url(), "--ca".into()];
    args.push(env.ca.root_cert.display().to_string());
    args.extend(["--cert".into(), cert.display().to_string()]);
    args.extend(["--key".into(), key.display().to_string()]);
    args.extend(["--entitlement".into(), "svc-greeter".into(), "--ttl".into()]);
    args.extend([
        "1m".into(),
        "--renew-fraction".into(),
        RENEW_FRACTION.into(),
    ]);
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn services_keep_calling_across_rotations_and_a_revoked_client_is_refused() {
    let examples = tokio::task::spawn_blocking(examples).await.unwrap();
    let env = TestEnv::start_with_catalogue(GREETER).await;
    let dir = env.dir.path().to_owned();

    let mut args = issuer_args(&env, SERVER_ID);
    args.extend(["--listen".into(), "127.0.0.1:0".into()]);
    args.extend(["--allow".into(), CLIENT_ID.into()]);
    let mut server = Example::spawn("svid_server", &examples.server, &dir, &args);
    let deadline = Instant::now() + Duration::from_secs(20);
    let listening = loop {
        let line = server.next_line(deadline, "`listening on`").await;
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.to_owned();
        }
    };

    let mut args = issuer_args(&env, CLIENT_ID);
    args.extend(["--server".into(), format!("https://{listening}")]);
    args.extend(["--server-id".into(), SERVER_ID.into()]);
    args.extend(["--interval".into(), "200ms".into()]);
    let mut client = Example::spawn("svid_client", &examples.client, &dir, &args);

    // Several rotations on both sides: every call succeeds, each over a new
    // handshake, and the server sees each new client SVID.
    let mut client_svids = BTreeSet::new();
    let mut seen_by_server = BTreeSet::new();
    let mut server_serials = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen_by_server.len() < SVIDS || server_serials.len() < SVIDS {
        let line = client.next_line(deadline, "3 rotations of each side").await;
        if line.starts_with("svid ") {
            client_svids.insert(field(&line, "serial").to_owned());
        } else if line.starts_with("call ok ") {
            seen_by_server.insert(field(&line, "client_serial").to_owned());
            server_serials.insert(field(&line, "server_serial").to_owned());
        } else if line.starts_with("call failed ") {
            client.fail("a call failed across rotations");
        }
    }

    // Revoke the grant of the client's next SVID as soon as it arrives, so
    // that it stays in use for a few seconds: the server must refuse it.
    // Should the client rotate before a call fails, revoke that one too.
    let admin = env.client_for(ADMIN).await;
    let mut revoked = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = client
            .next_line(deadline, "a call refused after revocation")
            .await;
        if line.starts_with("svid ") {
            let grant = field(&line, "grant").to_owned();
            admin
                .revoke(Target::GrantId(grant), "test: caller revoked")
                .await
                .unwrap();
            revoked.insert(field(&line, "serial").to_owned());
        } else if line.starts_with("call failed ") {
            // The SVID may have rotated to a revoked one while it connected.
            if revoked.contains(field(&line, "local_serial"))
                || revoked.contains(field(&line, "after_serial"))
            {
                break;
            }
            client.fail("a call failed with an SVID that was not revoked");
        }
    }

    // The client's next SVID is under a new grant: calls succeed again,
    // and the server logged why it refused the revoked one.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let line = client.next_line(deadline, "a call with a fresh SVID").await;
        if line.starts_with("call ok ") && !revoked.contains(field(&line, "client_serial")) {
            break;
        }
    }
    // Every SVID the server saw was one the client held.
    for line in &client.transcript {
        if line.starts_with("svid ") {
            client_svids.insert(field(line, "serial").to_owned());
        }
    }
    assert!(
        seen_by_server.is_subset(&client_svids),
        "server saw {seen_by_server:?}, client held {client_svids:?}"
    );
    let log = server.log();
    assert!(log.contains("refused a revoked peer"), "server log:\n{log}");
}

/// A rotating identity for `id` over its own connection to the test server.
async fn identity_for(env: &TestEnv, id: &str, fraction: f64) -> RotatingIdentity {
    RotatingIdentity::builder_with_client(
        env.client_for(id).await,
        SvidRequest::entitlement("svc-greeter"),
    )
    .renew_fraction(fraction)
    .build()
    .await
    .unwrap()
}

/// Serves gRPC health over `identity` to the peers `peers` accepts.
async fn serve_health(identity: &RotatingIdentity, peers: SpiffePeerVerifier) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let incoming = identity.incoming(listener, peers).unwrap();
    let (_, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming),
    );
    url
}

/// One health check over a new connection; the error as text.
async fn check(
    identity: &RotatingIdentity,
    url: &str,
    peers: SpiffePeerVerifier,
) -> Result<(), String> {
    let channel = identity
        .connect(url, peers)
        .await
        .map_err(|e| format!("{e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(drop)
        .map_err(|status| format!("{status:?}"))
}

#[tokio::test]
async fn peers_are_authorized_by_spiffe_id_and_revocation_fails_closed() {
    let env = TestEnv::start_with_catalogue(GREETER).await;
    let server = identity_for(&env, SERVER_ID, 0.7).await;
    let caller = identity_for(&env, CLIENT_ID, 0.7).await;
    let other = identity_for(&env, "spiffe://example.org/svc/other", 0.7).await;
    assert_eq!(caller.svid().spiffe_id().as_str(), CLIENT_ID);
    assert_eq!(caller.bundle().trust_domain().as_str(), "example.org");
    assert_eq!(caller.bundle().x509_authorities(), env.roots().as_slice());
    assert_eq!(
        caller.bundle().refresh_hint(),
        Some(Duration::from_secs(300))
    );

    let allow_caller = server.peer_verifier().allow(CLIENT_ID).unwrap();
    let url = serve_health(&server, allow_caller).await;
    let to_server = || caller.peer_verifier().allow(SERVER_ID).unwrap();
    check(&caller, &url, to_server()).await.unwrap();
    // A peer of the trust domain that is not on the allow-list.
    let error = check(&other, &url, other.peer_verifier())
        .await
        .unwrap_err();
    assert!(!error.is_empty());
    // A server that is not the one the client wants.
    let wrong = caller
        .peer_verifier()
        .allow("spiffe://example.org/svc/billing")
        .unwrap();
    let error = check(&caller, &url, wrong).await.unwrap_err();
    assert!(error.contains("NotAllowed"), "{error}");
    // A prefix pattern.
    let prefix = caller
        .peer_verifier()
        .allow("spiffe://example.org/svc/*")
        .unwrap();
    check(&caller, &url, prefix).await.unwrap();
    assert!(
        caller
            .peer_verifier()
            .allow("https://example.org/x")
            .is_err()
    );

    // A revocation cache that has not caught up refuses everyone; once it
    // has, it refuses only revoked peers.
    let unsynced = server
        .peer_verifier()
        .check_revocation(RevocationCache::new(Duration::from_secs(3600)));
    let url = serve_health(&server, unsynced).await;
    check(&caller, &url, to_server()).await.unwrap_err();
    let (cache, _feed) = RevocationCache::follow(server.client(), Duration::from_secs(3600));
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.ready().is_err() {
        assert!(Instant::now() < deadline, "{:?}", cache.ready());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = serve_health(&server, server.peer_verifier().check_revocation(cache)).await;
    check(&caller, &url, to_server()).await.unwrap();
    check(&other, &url, other.peer_verifier()).await.unwrap();
    server
        .client()
        .revoke(Target::GrantId(other.svid().grant().grant_id.clone()), "")
        .await
        .unwrap_err(); // only its holder or an admin may revoke it
    other
        .client()
        .revoke(
            Target::GrantId(other.svid().grant().grant_id.clone()),
            "done",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while check(&other, &url, other.peer_verifier()).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "a revoked peer is still accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check(&caller, &url, to_server()).await.unwrap();

    // Secrets never show in Debug.
    let shown = format!("{caller:?} {:?}", caller.svid());
    assert!(
        shown.contains("<redacted>") && !shown.contains("PRIVATE"),
        "{shown}"
    );
}

/// The first SVID `identity` publishes after the one with `serial`.
async fn next_svid(identity: &RotatingIdentity, serial: &str) -> Arc<CurrentSvid> {
    let mut updates = identity.subscribe();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let svid = updates.borrow_and_update().clone();
        if svid.serial() != serial {
            return svid;
        }
        tokio::time::timeout_at(deadline, updates.changed())
            .await
            .expect("no new SVID in time")
            .unwrap();
    }
}

#[tokio::test]
async fn new_svids_are_published_and_used_by_new_handshakes() {
    let env = TestEnv::start_with_catalogue(GREETER).await;
    let server = identity_for(&env, SERVER_ID, 0.7).await;
    // 2% of a minute: a renewal every 1.1 to 1.2 s.
    let caller = identity_for(&env, CLIENT_ID, 0.02).await;
    let url = serve_health(&server, server.peer_verifier()).await;
    let first_server = server.svid();
    let first = caller.svid();
    let second = next_svid(&caller, first.serial()).await;
    assert_ne!(first.serial(), second.serial());
    assert_ne!(first.grant().grant_id, second.grant().grant_id);
    assert!(second.not_after() > first.not_after());
    let to_server = caller.peer_verifier().allow(SERVER_ID).unwrap();
    check(&caller, &url, to_server.clone()).await.unwrap();
    // On demand, long before the schedule of a 1-minute SVID at 70%; the
    // resolver presents each SVID's key as built once when it came.
    let resolver = server.cert_resolver();
    let presented = || ResolvesClientCert::resolve(&*resolver, &[], &[]).unwrap();
    assert!(Arc::ptr_eq(&presented(), first_server.certified_key()));
    server.renew_now();
    let renewed = next_svid(&server, first_server.serial()).await;
    assert!(Arc::ptr_eq(&presented(), renewed.certified_key()));
    check(&caller, &url, to_server).await.unwrap();
    // A bad renew fraction is refused up front.
    let error = RotatingIdentity::builder_with_client(
        env.client_for(CLIENT_ID).await,
        SvidRequest::entitlement("svc-greeter"),
    )
    .renew_fraction(1.5)
    .build()
    .await
    .unwrap_err();
    assert!(error.to_string().contains("renew fraction"), "{error}");
}

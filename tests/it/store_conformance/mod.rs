//! One conformance suite for every `GrantStore`: the in-memory store, a
//! real redis-server, and a real three-master Redis Cluster. This file
//! holds the shared helpers and the entry points that run each suite
//! (`grants.rs`, `approvals.rs`, `delegation.rs`, `identities.rs`,
//! `undo.rs`) against each
//! backend. Then the Redis-only behaviour: key expiry, outages, a dataset
//! lost on restart, and the keys a discarded grant leaves behind.

mod approvals;
mod delegation;
mod grants;
mod identities;
mod replay;
mod undo;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use jitid::grant::{Action, Credential, CredentialId, Grant, GrantId, GrantState, Shard, TaskId};
use jitid::spiffe_id::SpiffeId;
use jitid::store::{
    Ending, GrantStore, Liveness, LivenessQuery, MemoryStore, RedisStore, RedisStoreConfig,
    StoreError,
};

use self::approvals::approvals_conformance;
use self::delegation::delegation_and_parties_conformance;
use self::grants::conformance;
use self::identities::identities_conformance;
use self::replay::replay_conformance;
use self::undo::undo_conformance;
use crate::support::redis::{RedisCluster, RedisServer};

const ALICE: &str = "spiffe://example.org/ci/alice";
const BOB: &str = "spiffe://example.org/ci/bob";

fn redis_config(urls: Vec<String>, cluster: bool) -> RedisStoreConfig {
    RedisStoreConfig {
        urls,
        cluster,
        ..RedisStoreConfig::new("")
    }
}

/// A grant and its first credential, as the issuer would make them.
async fn issue(
    store: &dyn GrantStore,
    subject: &str,
    task: &str,
    ttl: Duration,
    parent: Option<GrantId>,
) -> (Grant, Credential) {
    let subject = SpiffeId::new(subject).unwrap();
    // Stores keep milliseconds.
    let now = SystemTime::UNIX_EPOCH + Duration::from_millis(millis_of(SystemTime::now()) as u64);
    let grant = Grant {
        id: GrantId::generate(Shard::of(&subject)),
        subject,
        entitlement: "ci-publish".to_owned(),
        actions: vec![
            Action::new("read:source").unwrap(),
            Action::new("publish:artifacts").unwrap(),
        ],
        task_id: TaskId::new(task).unwrap(),
        parent,
        justification: "release 1.2".to_owned(),
        ticket: "CHG-42".to_owned(),
        created_at: now,
        expires_at: now + ttl,
        state: GrantState::Active,
        end_reason: None,
        epoch: store.epoch().await.unwrap(),
        break_glass: false,
        per_task: false,
        ttl,
        approvals: Vec::new(),
        decision: r#"{"outcome":"allow ci-publish"}"#.to_owned(),
        delegation: None,
    };
    let credential = Credential {
        id: CredentialId::new_jwt(grant.id),
        grant_id: grant.id,
        expires_at: grant.expires_at,
        revoked: false,
    };
    store.record_issuance(&grant, &credential).await.unwrap();
    (grant, credential)
}

async fn liveness(store: &dyn GrantStore, grant: &Grant, credential: &Credential) -> Liveness {
    store
        .liveness(LivenessQuery {
            credential: &credential.id,
            epoch: &grant.epoch,
            task: &grant.task_id,
        })
        .await
        .unwrap()
}

fn ending(state: GrantState, reason: &str) -> Ending {
    Ending {
        state,
        reason: reason.to_owned(),
        at: SystemTime::now(),
    }
}

fn millis_of(time: SystemTime) -> u128 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[tokio::test]
async fn memory_store_conforms() {
    let store = MemoryStore::new(Arc::new(jitid::clock::SystemClock));
    conformance(&store).await;
    approvals_conformance(&store).await;
    delegation_and_parties_conformance(&store).await;
    replay_conformance(&store).await;
    identities_conformance(&store).await;
}

#[tokio::test]
async fn redis_store_conforms() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(redis_config(vec![redis.url()], false))
        .await
        .unwrap();
    conformance(&store).await;
    approvals_conformance(&store).await;
    delegation_and_parties_conformance(&store).await;
    replay_conformance(&store).await;
    identities_conformance(&store).await;
}

#[tokio::test]
async fn redis_cluster_store_conforms() {
    let cluster = RedisCluster::start();
    let store = RedisStore::connect(redis_config(cluster.urls(), true))
        .await
        .unwrap();
    conformance(&store).await;
    approvals_conformance(&store).await;
    delegation_and_parties_conformance(&store).await;
    replay_conformance(&store).await;
    identities_conformance(&store).await;
    // Grants of many subjects spread over the cluster's masters.
    for n in 0..20 {
        issue(
            &store,
            &format!("spiffe://example.org/svc/s{n}"),
            "t",
            Duration::from_secs(60),
            None,
        )
        .await;
    }
    let with_keys = cluster
        .ports()
        .iter()
        .filter(|port| crate::support::redis::tcp_command(**port, &["DBSIZE"]) != "0")
        .count();
    assert_eq!(with_keys, 3, "every master holds grants");
}

/// A subject holds at most the cap's unexpired grants: the next is refused
/// with nothing written, other subjects are not affected, and a grant
/// gone makes room again.
async fn cap_conformance(store: &dyn GrantStore) {
    let mut held = Vec::new();
    for n in 0..3 {
        held.push(
            issue(
                store,
                ALICE,
                &format!("t{n}"),
                Duration::from_secs(60),
                None,
            )
            .await,
        );
    }
    let (mut extra, credential) = held[0].clone();
    extra.id = GrantId::generate(Shard::of(&extra.subject));
    let error = store
        .record_issuance(&extra, &credential)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::SubjectFull { cap: 3, .. }),
        "{error:?}"
    );
    assert!(error.nothing_written());
    assert!(
        error.to_string().contains("max_grants_per_subject"),
        "{error}"
    );
    let error = store.record_grant(&extra).await.unwrap_err();
    assert!(matches!(error, StoreError::SubjectFull { .. }), "{error:?}");
    assert!(store.grant(extra.id).await.unwrap().is_none());
    let alice = SpiffeId::new(ALICE).unwrap();
    assert_eq!(store.grants_of(&alice).await.unwrap().len(), 3);
    issue(store, BOB, "t", Duration::from_secs(60), None).await;
    store.discard_grant(held[0].0.id).await.unwrap();
    issue(store, ALICE, "t3", Duration::from_secs(60), None).await;
}

#[tokio::test]
async fn stores_cap_the_grants_of_a_subject() {
    let memory = MemoryStore::new(Arc::new(jitid::clock::SystemClock)).with_grant_cap(3);
    cap_conformance(&memory).await;
    let redis = RedisServer::start();
    let store = RedisStore::connect(redis_config(vec![redis.url()], false))
        .await
        .unwrap()
        .with_grant_cap(3);
    cap_conformance(&store).await;
}

#[tokio::test]
async fn memory_store_undoes_writes() {
    let store = MemoryStore::new(Arc::new(jitid::clock::SystemClock));
    undo_conformance(&store).await;
}

#[tokio::test]
async fn redis_store_undoes_writes() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(redis_config(vec![redis.url()], false))
        .await
        .unwrap();
    undo_conformance(&store).await;
}

#[tokio::test]
async fn redis_cluster_store_undoes_writes() {
    let cluster = RedisCluster::start();
    let store = RedisStore::connect(redis_config(cluster.urls(), true))
        .await
        .unwrap();
    undo_conformance(&store).await;
}

/// A discarded grant leaves no key behind: not its record, not its entry
/// in its subject's index, not its entry in the index of pending grants
/// (which `pending_grants` would also tidy lazily, so the suite cannot
/// tell). What stays is the epoch and the shard's epoch marker.
#[tokio::test]
async fn redis_discard_leaves_no_key_behind() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(redis_config(vec![redis.url()], false))
        .await
        .unwrap();
    let (grant, _) = issue(&store, ALICE, "build-1", Duration::from_secs(60), None).await;
    let pending = Grant {
        id: GrantId::generate(Shard::of(&grant.subject)),
        state: GrantState::Pending,
        ..grant.clone()
    };
    store.record_grant(&pending).await.unwrap();
    let keys = || {
        let keys = redis.command(&[
            "EVAL",
            "return table.concat(redis.call('KEYS', '*'), ' ')",
            "0",
        ]);
        let mut keys: Vec<String> = keys.split(' ').map(str::to_owned).collect();
        keys.sort();
        keys
    };
    let shard = grant.id.shard();
    let mut before = vec![
        "jitid:epoch".to_owned(),
        "jitid:pending".to_owned(),
        format!("jitid:{{{shard}}}:ep"),
        format!("jitid:{{{shard}}}:g:{}", grant.id.simple()),
        format!("jitid:{{{shard}}}:g:{}", pending.id.simple()),
        format!("jitid:{{{shard}}}:s:{ALICE}"),
    ];
    before.sort();
    assert_eq!(keys(), before);
    store.discard_grant(grant.id).await.unwrap();
    store.discard_grant(pending.id).await.unwrap();
    let mut after = vec!["jitid:epoch".to_owned(), format!("jitid:{{{shard}}}:ep")];
    after.sort();
    assert_eq!(keys(), after);
}

/// A grant record written before approvals existed (11 fields) still
/// reads, as an active grant whose whole life is its TTL.
#[tokio::test]
async fn redis_reads_records_written_before_approvals() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(redis_config(vec![redis.url()], false))
        .await
        .unwrap();
    let (grant, credential) = issue(&store, ALICE, "old", Duration::from_secs(60), None).await;
    let key = format!("jitid:{{{}}}:g:{}", grant.id.shard(), grant.id.simple());
    let record = redis.command(&["GET", &key]);
    // Drop the three fields added since: flags, ttl, decision.
    let (core, sections) = record.split_once('\u{1e}').unwrap();
    let old_core: Vec<&str> = core.split('\u{1f}').take(11).collect();
    let old = format!("{}\u{1e}{sections}", old_core.join("\u{1f}"));
    redis.command(&["SET", &key, &old, "KEEPTTL"]);
    let read = store.grant(grant.id).await.unwrap().unwrap();
    assert_eq!(read.state, GrantState::Active);
    assert_eq!(read.ttl, Duration::from_secs(60));
    assert!(read.decision.is_empty() && !read.break_glass && !read.per_task);
    assert!(matches!(
        liveness(&store, &grant, &credential).await,
        Liveness::Live(_)
    ));
    assert_eq!(store.grants_of(&grant.subject).await.unwrap().len(), 1);
}

#[tokio::test]
async fn every_redis_key_expires_except_the_epoch() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(redis_config(vec![redis.url()], false))
        .await
        .unwrap();
    let (grant, _) = issue(&store, ALICE, "build-1", Duration::from_secs(60), None).await;
    store
        .revoke_task(
            &grant.task_id,
            &ending(GrantState::Revoked, "x"),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let keys = redis.command(&[
        "EVAL",
        "return table.concat(redis.call('KEYS', '*'), ' ')",
        "0",
    ]);
    let keys: Vec<&str> = keys.split(' ').collect();
    assert_eq!(keys.len(), 5, "{keys:?}");
    // (The revocation stream is trimmed by id instead; see publish.)
    for key in keys {
        let ttl: i64 = redis.command(&["PTTL", key]).parse().unwrap();
        if key == "jitid:epoch" || key.ends_with(":ep") {
            assert_eq!(ttl, -1, "{key} is kept");
        } else {
            assert!(ttl > 0 && ttl <= 60_000, "{key} expires: {ttl}");
        }
    }
}

#[tokio::test]
async fn redis_outage_fails_closed_and_recovers_with_a_new_epoch() {
    let mut redis = RedisServer::start();
    let store = RedisStore::connect(redis_config(vec![redis.url()], false))
        .await
        .unwrap();
    let (grant, credential) = issue(&store, ALICE, "build-1", Duration::from_secs(60), None).await;

    redis.stop();
    let error = store
        .liveness(LivenessQuery {
            credential: &credential.id,
            epoch: &grant.epoch,
            task: &grant.task_id,
        })
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
    let subject = SpiffeId::new(ALICE).unwrap();
    let attempt = Grant {
        id: GrantId::generate(Shard::of(&subject)),
        ..grant.clone()
    };
    let attempt_credential = Credential {
        id: CredentialId::new_jwt(attempt.id),
        grant_id: attempt.id,
        ..credential.clone()
    };
    let error = store
        .record_issuance(&attempt, &attempt_credential)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");

    // Back, but empty: what was minted before is not live again.
    redis.restart_empty();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match store
            .liveness(LivenessQuery {
                credential: &credential.id,
                epoch: &grant.epoch,
                task: &grant.task_id,
            })
            .await
        {
            Ok(liveness) => break liveness,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "store did not reconnect: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(after, Liveness::EpochReset);
    // A write under the old epoch is refused and names the new one.
    let error = store
        .record_issuance(&attempt, &attempt_credential)
        .await
        .unwrap_err();
    let StoreError::EpochChanged(new_epoch) = error else {
        panic!("expected EpochChanged, got {error}");
    };
    assert_ne!(new_epoch, grant.epoch);
    assert_eq!(store.epoch().await.unwrap(), new_epoch);
    let (fresh, fresh_credential) =
        issue(&store, ALICE, "build-2", Duration::from_secs(60), None).await;
    assert_eq!(fresh.epoch, new_epoch);
    assert!(matches!(
        liveness(&store, &fresh, &fresh_credential).await,
        Liveness::Live(_)
    ));
}

/// `rediss://` with a private CA and client certificates: the whole suite
/// over mutual TLS.
#[tokio::test]
async fn redis_over_mutual_tls_conforms() {
    use jitid::ca::{self, Authority, InitOptions, LeafRequest};
    use jitid::spiffe_id::TrustDomain;

    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let trust_domain = TrustDomain::new("example.org").unwrap();
    let paths = ca::init(
        &dir.path().join("ca"),
        &trust_domain,
        now,
        &InitOptions {
            root_ttl: Duration::from_secs(7200),
            signing_ttl: Duration::from_secs(3600),
        },
    )
    .unwrap();
    let authority = Authority::load(&paths, &trust_domain, now).unwrap();
    let write_identity = |name: &str, path: &str, ips: &[std::net::IpAddr]| {
        let id = SpiffeId::new(&format!("spiffe://example.org{path}")).unwrap();
        let issued = authority
            .issue_server_identity(
                LeafRequest {
                    spiffe_id: &id,
                    expires_at: now + Duration::from_secs(3600),
                    dns_names: &[],
                    ip_addresses: ips,
                },
                now,
            )
            .unwrap();
        let cert = dir.path().join(format!("{name}.pem"));
        let key = dir.path().join(format!("{name}.key"));
        jitid::keyfile::write_new(&cert, issued.chain_pem().as_bytes(), 0o644).unwrap();
        jitid::keyfile::write_new(&key, issued.key_pem().as_bytes(), 0o600).unwrap();
        (cert, key)
    };
    let (server_cert, server_key) =
        write_identity("redis", "/redis", &["127.0.0.1".parse().unwrap()]);
    let (client_cert, client_key) = write_identity("jitid", "/jitid", &[]);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = std::process::Command::new(
        std::env::var_os("JITID_TEST_REDIS_SERVER").unwrap_or_else(|| "redis-server".into()),
    )
    .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
    .arg("--tls-cert-file").arg(&server_cert)
    .arg("--tls-key-file").arg(&server_key)
    .arg("--tls-ca-cert-file").arg(&paths.root_cert)
    .args(["--tls-auth-clients", "yes", "--save", "", "--appendonly", "no"])
    .arg("--dir").arg(dir.path())
    .stdout(std::process::Stdio::null())
    .spawn()
    .expect("redis-server not found: install it with `apt-get install redis-server` (or run scripts/test)");

    let config = RedisStoreConfig {
        ca_file: Some(paths.root_cert.clone()),
        client_identity: Some((client_cert, client_key)),
        ..RedisStoreConfig::new(&format!("rediss://127.0.0.1:{port}"))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let store = loop {
        match RedisStore::connect(config.clone()).await {
            Ok(store) => break store,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "TLS redis never answered: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    conformance(&store).await;

    // Without a client certificate the server refuses us.
    let anonymous = RedisStoreConfig {
        client_identity: None,
        ..config
    };
    assert!(RedisStore::connect(anonymous).await.is_err());
    let _ = redis.kill();
    let _ = redis.wait();
}

//! Redis memory per live grant, and whether memory stays flat while a
//! million grants come and go. Drives `RedisStore` directly (no signing,
//! no gRPC) against a running Redis:
//!
//! ```sh
//! cargo bench --bench store_memory -- unix:///tmp/redis.sock [subjects] [churn]
//! ```
//!
//! It flushes the database first: never point it at a Redis that matters.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant, SystemTime};

use jitid::grant::{Action, Credential, CredentialId, Grant, GrantId, GrantState, Shard, TaskId};
use jitid::spiffe_id::SpiffeId;
use jitid::store::{GrantStore, RedisStore, RedisStoreConfig};

fn used_memory(url: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_connection().unwrap();
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut connection)
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn flush(url: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_connection().unwrap();
    let () = redis::cmd("FLUSHALL").query(&mut connection).unwrap();
}

async fn record(store: &RedisStore, subject: &SpiffeId, n: u64, ttl: Duration) {
    let now = SystemTime::now();
    let grant = Grant {
        id: GrantId::generate(Shard::of(subject)),
        subject: subject.clone(),
        entitlement: "ci-publish".to_owned(),
        actions: vec![
            Action::new("read:source").unwrap(),
            Action::new("publish:artifacts").unwrap(),
        ],
        task_id: TaskId::new(&format!("build-{n}")).unwrap(),
        parent: None,
        justification: String::new(),
        ticket: String::new(),
        created_at: now,
        expires_at: now + ttl,
        state: GrantState::Active,
        end_reason: None,
        epoch: store.epoch().await.unwrap(),
        break_glass: false,
        per_task: false,
        ttl,
        approvals: Vec::new(),
        decision: String::new(),
        delegation: None,
    };
    let credential = Credential {
        id: CredentialId::new_x509(grant.id).0,
        grant_id: grant.id,
        expires_at: grant.expires_at,
        revoked: false,
    };
    store.record_issuance(&grant, &credential).await.unwrap();
}

async fn connect(url: &str) -> RedisStore {
    RedisStore::connect(RedisStoreConfig {
        timeout: Duration::from_secs(2),
        ..RedisStoreConfig::new(url)
    })
    .await
    .unwrap()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let subjects: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let churn: u64 = args
        .get(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    flush(&url);
    let store = connect(&url).await;
    let ids: Vec<SpiffeId> = (0..subjects)
        .map(|n| SpiffeId::new(&format!("spiffe://example.org/ci/runner-{n}")).unwrap())
        .collect();

    // Bytes per live grant with one credential.
    let live = 20_000;
    record(&store, &ids[0], 0, Duration::from_secs(600)).await;
    let before = used_memory(&url);
    for n in 0..live {
        record(
            &store,
            &ids[(n % subjects) as usize],
            n,
            Duration::from_secs(600),
        )
        .await;
    }
    let after = used_memory(&url);
    println!(
        "{live} live grants over {subjects} subjects: {} bytes per grant (used_memory {before} -> {after})",
        (after - before) / live
    );

    // A million grants that live 2 s each: memory must stay flat.
    flush(&url);
    let store = connect(&url).await;
    let started = Instant::now();
    let concurrency = 32;
    let per_task = churn / concurrency;
    let mut tasks = Vec::new();
    let store = std::sync::Arc::new(store);
    for t in 0..concurrency {
        let store = store.clone();
        let ids = ids.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..per_task {
                let subject = &ids[((t * per_task + n) % subjects) as usize];
                record(&store, subject, n, Duration::from_secs(2)).await;
                if t == 0 && n % (per_task / 10).max(1) == 0 {
                    println!(
                        "after {:>8} grants: used_memory {} bytes",
                        n * concurrency,
                        used_memory(&url)
                    );
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "{} grants in {:.1} s ({:.0}/s); used_memory at the end {} bytes",
        per_task * concurrency,
        elapsed.as_secs_f64(),
        (per_task * concurrency) as f64 / elapsed.as_secs_f64(),
        used_memory(&url)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "3 s later (all expired): used_memory {} bytes",
        used_memory(&url)
    );
}

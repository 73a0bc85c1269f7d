//! The audit trail's upkeep and reading, through the real server and CLI:
//! `grant_expired` events, retention behind a signed checkpoint that
//! `audit verify` checks, `QueryAudit` for admins and auditors, and
//! `jitid audit tail|search|export|report|grant`. First, one conformance
//! suite for every `AuditLog` (memory, Redis, Redis Cluster).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use jitid::audit::event::{Decision, Granted, Target, TaskCompleted, TaskOutcome};
use jitid::audit::upkeep::{Retention, SignedCheckpoint};
use jitid::audit::{
    AppendOutcome, AuditEvent, AuditLog, Chained, Envelope, Event, EventKind, Head, MemoryAuditLog,
    Record, RedisAuditLog, verify_chain,
};
use jitid::client::AuditEventsExt as _;
use jitid::client::SvidRequest;
use jitid::grant::GrantState;
use jitid::proto::v1::{self as pb, complete_task_request::Target as Complete};
use jitid::store::{MemoryStore, RedisStore, RedisStoreConfig};

use crate::support::redis::{RedisCluster, RedisServer};
use crate::support::{ADMIN, AUDITOR, CI_RUNNER, SRE_A, TestEnv, exited, jitid_bin};

fn record(grant: &str, event: Event) -> Record {
    let envelope = Envelope {
        at: SystemTime::now(),
        actor: CI_RUNNER.to_owned(),
        subject: Some(CI_RUNNER.to_owned()),
        grant: Some(grant.to_owned()),
        task: Some("t".to_owned()),
    };
    Record::new(envelope, &event)
}

/// A decision leaving a grant of entitlement `e` in `state` until
/// `expires_at`.
fn decided(state: GrantState, expires_at: SystemTime) -> Event {
    Event::Decision(Decision::Granted(Granted {
        outcome: "allow e".to_owned(),
        entitlement: "e".to_owned(),
        state,
        ttl_seconds: 60,
        expires_at,
        explanation: serde_json::Value::Null,
    }))
}

/// Appends `records` after the log's head.
async fn append(log: &dyn AuditLog, records: Vec<Record>) -> Vec<AuditEvent> {
    let head = log.head().await.unwrap();
    let chained = Chained::seal(records, &head);
    assert_eq!(
        log.append(&head, &chained).await.unwrap(),
        AppendOutcome::Appended(chained.head().unwrap())
    );
    chained.events
}

/// `shared`: the log is shared by replicas (Redis), so its upkeep lease
/// has one holder at a time; the memory trail serves one process.
async fn audit_log_conformance(log: &dyn AuditLog, shared: bool) {
    let now = SystemTime::now();
    let past = now - Duration::from_secs(5);
    let later = now + Duration::from_secs(3600);
    let events = append(
        log,
        vec![
            record("g-lapsed", decided(GrantState::Pending, past)),
            record("g-expired", decided(GrantState::Active, past)),
            record("g-ended", decided(GrantState::Active, past)),
            record("g-live", decided(GrantState::Active, later)),
            record(
                "g-ended",
                Event::TaskCompleted(TaskCompleted {
                    target: Target::Grant,
                    value: "g-ended".to_owned(),
                    outcome: TaskOutcome::Completed,
                    grants_ended: vec!["g-ended".to_owned()],
                    lag_ms: 0,
                }),
            ),
            record("g-refused", decided(GrantState::Denied, later)),
        ],
    )
    .await;
    assert_eq!(log.read(0, 100).await.unwrap(), events);
    assert_eq!(log.read(4, 1).await.unwrap(), events[4..5]);

    // Due: the lapsed and expired grants, not the ended, live or refused.
    let mut due: Vec<String> = log
        .due(now, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|grant| grant.grant)
        .collect();
    due.sort();
    assert_eq!(due, ["g-expired", "g-lapsed"]);
    let lapsed = log
        .due(now, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|grant| grant.grant == "g-lapsed")
        .unwrap();
    assert_eq!(
        (lapsed.state.as_str(), lapsed.entitlement.as_deref()),
        ("pending", Some("e"))
    );
    // Recording the expiry forgets the grant, in the same append.
    append(log, vec![lapsed.expired(now)]).await;
    let due: Vec<String> = log
        .due(now, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|grant| grant.grant)
        .collect();
    assert_eq!(due, ["g-expired"]);
    assert_eq!(
        log.due(now + Duration::from_secs(7200), 1)
            .await
            .unwrap()
            .len(),
        1
    );

    // Trimming: through event 3, behind the checkpoint.
    assert_eq!(log.checkpoint().await.unwrap(), None);
    let checkpoint = SignedCheckpoint {
        seq: 3,
        token: "signed.checkpoint.three".to_owned(),
    };
    log.trim(&checkpoint).await.unwrap();
    assert_eq!(log.checkpoint().await.unwrap(), Some(checkpoint.clone()));
    let kept = log.read(0, 100).await.unwrap();
    assert_eq!(kept.first().map(|event| event.seq), Some(4));
    assert_eq!(
        verify_chain(&events[2].head(), &kept).unwrap(),
        log.head().await.unwrap()
    );
    // Never backwards.
    log.trim(&SignedCheckpoint {
        seq: 2,
        token: "older".to_owned(),
    })
    .await
    .unwrap();
    assert_eq!(log.checkpoint().await.unwrap(), Some(checkpoint));
    assert_eq!(log.read(0, 100).await.unwrap().len(), kept.len());

    // One lease holder at a time.
    assert!(log.lease("a", Duration::from_secs(5)).await.unwrap());
    assert!(log.lease("a", Duration::from_secs(5)).await.unwrap());
    assert_eq!(
        log.lease("b", Duration::from_secs(5)).await.unwrap(),
        !shared
    );
}

#[tokio::test]
async fn memory_audit_log_conforms() {
    audit_log_conformance(&MemoryAuditLog::new(), false).await;
}

fn redis_config(urls: Vec<String>, cluster: bool) -> RedisStoreConfig {
    RedisStoreConfig {
        urls,
        cluster,
        ..RedisStoreConfig::new("")
    }
}

#[tokio::test]
async fn redis_audit_log_conforms() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(redis_config(vec![redis.url()], false))
        .await
        .unwrap();
    audit_log_conformance(&RedisAuditLog::new(Arc::new(store)), true).await;
}

#[tokio::test]
async fn redis_cluster_audit_log_conforms() {
    let cluster = RedisCluster::start();
    let store = RedisStore::connect(redis_config(cluster.urls(), true))
        .await
        .unwrap();
    audit_log_conformance(&RedisAuditLog::new(Arc::new(store)), true).await;
}

/// Polls `check` every 50 ms until it holds, for at most 10 s.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn expired_grants(events: &[AuditEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|event| event.kind == EventKind::GrantExpired)
        .map(|event| {
            let Ok(Event::GrantExpired(expired)) = event.event() else {
                panic!("not a grant_expired event: {event:?}");
            };
            (event.grant.clone().unwrap_or_default(), expired.state)
        })
        .collect()
}

#[tokio::test]
async fn grants_that_expire_or_lapse_get_one_grant_expired_event() {
    let env = TestEnv::start().await;
    let runner = env.client_for(CI_RUNNER).await;
    let short = |task: &str| {
        SvidRequest::entitlement("ci-publish")
            .task(task)
            .ttl(Duration::from_secs(1))
    };
    let expiring = runner.fetch_x509_svid(&short("expires")).await.unwrap();
    let completed = runner.fetch_x509_svid(&short("completes")).await.unwrap();
    runner
        .complete_task(Complete::TaskId("completes".to_owned()))
        .await
        .unwrap();
    // A request nobody approves lapses after its 2 s pending TTL.
    let pending = runner
        .request_grant(&SvidRequest::entitlement("quick-approval"))
        .await
        .unwrap();
    let mut expected = vec![
        (expiring.grant.grant_id.clone(), "active".to_owned()),
        (pending.summary.unwrap().grant_id, "pending".to_owned()),
    ];
    expected.sort();
    let log = env.audit.clone();
    let events = eventually("two grant_expired events", async || {
        let events = log.read(0, 10_000).await.unwrap();
        (expired_grants(&events).len() >= 2).then_some(events)
    })
    .await;
    let mut found = expired_grants(&events);
    found.sort();
    assert_eq!(found, expected);
    assert!(
        !found
            .iter()
            .any(|(grant, _)| *grant == completed.grant.grant_id)
    );
    let event = events
        .iter()
        .find(|event| event.kind == EventKind::GrantExpired)
        .unwrap();
    assert_eq!(event.actor, "system");
    let Ok(Event::GrantExpired(expired)) = event.event() else {
        panic!("not a grant_expired event: {event:?}");
    };
    assert_eq!(expired.entitlement.as_deref(), Some("ci-publish"));
    // Recorded once: later upkeep rounds add nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = log.read(0, 10_000).await.unwrap();
    assert_eq!(expired_grants(&events).len(), 2);
    verify_chain(&Head::genesis(), &events).unwrap();
}

#[tokio::test]
async fn query_audit_serves_admins_and_auditors_and_follows_the_trail() {
    let env = TestEnv::start().await;
    let runner = env.client_for(CI_RUNNER).await;
    let auditor = env.client_for(AUDITOR).await;
    let first = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task("one"))
        .await
        .unwrap();
    runner
        .fetch_jwt_svid(
            &SvidRequest::entitlement("ci-publish").task("two"),
            &["a".to_owned()],
        )
        .await
        .unwrap();
    runner
        .complete_task(Complete::TaskId("one".to_owned()))
        .await
        .unwrap();

    // The whole trail, each event checked against its hash, one chain.
    let all = auditor
        .audit_events(pb::QueryAuditRequest::default())
        .await
        .unwrap();
    assert_eq!(all.checkpoint, None);
    assert_eq!(all.events.len(), 7);
    verify_chain(&Head::genesis(), &all.events).unwrap();
    let admin = env.client_for(ADMIN).await;
    assert_eq!(
        admin
            .audit_events(pb::QueryAuditRequest::default())
            .await
            .unwrap(),
        all
    );

    // Filters: kinds, grant (with the completion that ended it), limit.
    let issued = auditor
        .audit_events(pb::QueryAuditRequest {
            kinds: vec!["credential_issued".to_owned()],
            ..pb::QueryAuditRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(issued.events.len(), 2);
    let of_grant = auditor
        .audit_events(pb::QueryAuditRequest {
            grant_id: first.grant.grant_id.clone(),
            ..pb::QueryAuditRequest::default()
        })
        .await
        .unwrap();
    let kinds: Vec<EventKind> = of_grant.events.iter().map(|event| event.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::RequestReceived,
            EventKind::Decision,
            EventKind::CredentialIssued,
            EventKind::TaskCompleted
        ]
    );
    let limited = auditor
        .audit_events(pb::QueryAuditRequest {
            limit: 2,
            ..pb::QueryAuditRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.events, all.events[..2]);
    let last = auditor
        .audit_events(pb::QueryAuditRequest {
            last: 3,
            ..pb::QueryAuditRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(last.events, all.events[4..]);

    // Refusals say what was wrong.
    let refused = |request: pb::QueryAuditRequest| {
        let auditor = &auditor;
        async move { auditor.audit_events(request).await.unwrap_err() }
    };
    let error = runner
        .audit_events(pb::QueryAuditRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::PermissionDenied), "{error}");
    assert!(
        error.to_string().contains("only admins and auditors"),
        "{error}"
    );
    let sre = env.client_for(SRE_A).await;
    let error = sre
        .audit_events(pb::QueryAuditRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::PermissionDenied), "{error}");
    for (request, message) in [
        (
            pb::QueryAuditRequest {
                kinds: vec!["nope".to_owned()],
                ..Default::default()
            },
            "kinds: \"nope\" is not an event kind",
        ),
        (
            pb::QueryAuditRequest {
                grant_id: "g1".to_owned(),
                ..Default::default()
            },
            "grant_id: is not a grant id",
        ),
        (
            pb::QueryAuditRequest {
                subject: "not a spiffe id".to_owned(),
                ..Default::default()
            },
            "subject:",
        ),
        (
            pb::QueryAuditRequest {
                follow: true,
                limit: 1,
                ..Default::default()
            },
            "limit: cannot be combined with follow",
        ),
        (
            pb::QueryAuditRequest {
                last: 1,
                after_seq: 1,
                ..Default::default()
            },
            "last: cannot be combined with after_seq",
        ),
    ] {
        let error = refused(request).await;
        assert_eq!(error.code(), Some(tonic::Code::InvalidArgument), "{error}");
        assert!(error.to_string().contains(message), "{message}: {error}");
    }

    // Following: new events arrive as they are appended.
    let mut stream = auditor
        .query_audit(pb::QueryAuditRequest {
            follow: true,
            kinds: vec!["credential_issued".to_owned()],
            after_seq: all.events.last().unwrap().seq,
            ..Default::default()
        })
        .await
        .unwrap();
    let first_response = stream.message().await.unwrap().unwrap();
    assert!(first_response.events.is_empty());
    let third = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task("three"))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a followed event within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(next.events.len(), 1);
    let event = AuditEvent::from_line(&next.events[0]).unwrap();
    assert_eq!(event.details["id"], third.serial.as_str());
}

// The server runs in this process while the test blocks on the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_a_grants_life_and_reports_per_entitlement() {
    let env = TestEnv::start().await;
    let runner = env.client_for(CI_RUNNER).await;
    let jwt = runner
        .fetch_jwt_svid(
            &SvidRequest::entitlement("ci-publish").task("job-7"),
            &["deploy".to_owned()],
        )
        .await
        .unwrap();
    let valid = runner.verify_jwt(&jwt.token, "deploy").await.unwrap();
    assert_eq!(valid.status(), pb::VerifyStatus::Valid);
    runner
        .complete_task(Complete::TaskId("job-7".to_owned()))
        .await
        .unwrap();
    let revoked = runner.verify_jwt(&jwt.token, "deploy").await.unwrap();
    assert_eq!(revoked.status(), pb::VerifyStatus::Revoked);
    let grant = jwt.grant.grant_id.clone();

    // The grant's whole life, and the proof that nothing accepted it after.
    let life = exited(&env.cli(AUDITOR, &["audit", "grant", &grant]), 0);
    for text in [
        "request_received",
        "decision",
        "inputs and rules:",
        "credential_issued",
        &format!("jwt {}", jwt.jti),
        "→ VALID",
        "ended: task_completed",
        "Verify after the end: 1 liveness check(s) recorded, 0 answered VALID",
    ] {
        assert!(life.contains(text), "expected {text:?} in {life}");
    }
    let refused = exited(&env.cli(CI_RUNNER, &["audit", "grant", &grant]), 3);
    assert!(refused.contains("only admins and auditors"), "{refused}");
    let unknown = exited(
        &env.cli(
            AUDITOR,
            &["audit", "grant", "0b7a4a3e-6c8b-4d0e-9d55-2f0c7b4c1e11"],
        ),
        7,
    );
    assert!(unknown.contains("holds no events about grant"), "{unknown}");

    // Search and tail.
    let found = exited(
        &env.cli(
            AUDITOR,
            &[
                "audit",
                "search",
                "--grant",
                &grant,
                "--type",
                "liveness_checked",
                "--format",
                "jsonl",
            ],
        ),
        0,
    );
    assert_eq!(found.lines().count(), 2, "{found}");
    assert!(
        found
            .lines()
            .all(|line| AuditEvent::from_line(line).is_ok())
    );
    let tail = exited(&env.cli(AUDITOR, &["audit", "tail", "-n", "2"]), 0);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(tail.contains("liveness_checked"), "{tail}");
    let bad = exited(
        &env.cli(AUDITOR, &["audit", "search", "--since", "last week"]),
        1,
    );
    assert!(
        bad.contains("not a duration (24h) or an RFC 3339 time"),
        "{bad}"
    );

    // The report: one ci-publish grant, completed, nothing live, nothing
    // VALID after its end.
    let report = exited(&env.cli(AUDITOR, &["audit", "report", "--since", "1h"]), 0);
    let row: Vec<&str> = report
        .lines()
        .find(|line| line.starts_with("ci-publish"))
        .unwrap_or_else(|| panic!("no ci-publish row in {report}"))
        .split_whitespace()
        .collect();
    // entitlement requests granted refused approvals break-glass
    // unreviewed credentials live revoked completed expired lag valid-after
    assert_eq!(
        row[1..12],
        ["1", "1", "0", "0", "0", "0", "1", "0", "0", "1", "0"],
        "{report}"
    );
    assert_eq!(row[13], "0", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_keeps_the_trail_verifiable_from_a_signed_checkpoint() {
    let redis = RedisServer::start();
    let mut env = TestEnv::start().await;
    let store = Arc::new(
        RedisStore::connect(RedisStoreConfig::new(&redis.url()))
            .await
            .unwrap(),
    );
    let log = Arc::new(RedisAuditLog::new(store.clone()));
    let addr = env
        .spawn_retaining(
            store.clone(),
            log.clone(),
            None,
            Retention {
                max_events: Some(4),
                max_age: None,
            },
        )
        .await;
    env.addr = addr;
    let runner = env.client_at(addr, CI_RUNNER).await;
    for task in ["a", "b", "c"] {
        runner
            .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task(task))
            .await
            .unwrap();
    }
    // 9 events; retention keeps the newest 4 behind a checkpoint at 5.
    let checkpoint = eventually("a checkpoint at event 5", async || {
        log.checkpoint()
            .await
            .unwrap()
            .filter(|checkpoint| checkpoint.seq == 5)
    })
    .await;
    let kept = log.read(0, 100).await.unwrap();
    assert_eq!(
        kept.iter().map(|event| event.seq).collect::<Vec<_>>(),
        [6, 7, 8, 9]
    );

    let config = env.redis_config_file(&redis.url());
    let verify = |args: &[&str]| {
        Command::new(jitid_bin())
            .args(["audit", "verify"])
            .args(args)
            .env_remove("JITID_CONFIG")
            .output()
            .unwrap()
    };
    let config_arg = config.to_str().unwrap();
    let ok = exited(&verify(&["--config", config_arg]), 0);
    assert!(
        ok.contains("events 6 to 9 after a checkpoint signed by spiffe://example.org"),
        "{ok}"
    );

    // An export starts with the checkpoint and verifies against the audit
    // key (`jitid ca audit-key`), not against the SPIFFE bundle.
    let export = env.dir.path().join("export.jsonl");
    exited(
        &env.cli(
            AUDITOR,
            &["audit", "export", "--out", export.to_str().unwrap()],
        ),
        0,
    );
    let exported = std::fs::read_to_string(&export).unwrap();
    assert!(exported.starts_with("{\"checkpoint\":"), "{exported}");
    assert_eq!(exported.lines().count(), 5);
    let bundle = env.dir.path().join("bundle.json");
    std::fs::write(&bundle, env.authority.document_jwks_json()).unwrap();
    let export_arg = export.to_str().unwrap();
    let bundle_arg = bundle.to_str().unwrap();
    let ok = exited(&verify(&["--file", export_arg, "--bundle", bundle_arg]), 0);
    let spiffe = env.dir.path().join("spiffe.json");
    std::fs::write(&spiffe, env.authority.bundle().to_spiffe_json()).unwrap();
    let not_the_key = exited(
        &verify(&["--file", export_arg, "--bundle", spiffe.to_str().unwrap()]),
        6,
    );
    assert!(
        not_the_key.contains("a key not in the bundle"),
        "the JWT-SVID key does not sign checkpoints: {not_the_key}"
    );
    assert!(ok.contains("events 6 to 9 after a checkpoint"), "{ok}");
    let unchecked = exited(&verify(&["--file", export_arg]), 1);
    assert!(unchecked.contains("pass --bundle"), "{unchecked}");

    // A checkpoint signed by another trust domain's key is refused.
    let other = TestEnv::start().await;
    let other_bundle = env.dir.path().join("other.json");
    std::fs::write(&other_bundle, other.authority.document_jwks_json()).unwrap();
    let foreign = exited(
        &verify(&[
            "--file",
            export_arg,
            "--bundle",
            other_bundle.to_str().unwrap(),
        ]),
        6,
    );
    assert!(foreign.contains("a key not in the bundle"), "{foreign}");

    // A forged checkpoint (claims changed, signature kept) is refused.
    let parts: Vec<&str> = checkpoint.token.split('.').collect();
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value =
        serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
    claims["seq"] = serde_json::json!(4);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        engine.encode(claims.to_string()),
        parts[2]
    );
    let forged_key = format!("5 {forged}");
    redis.command(&["SET", "jitid:{audit}:checkpoint", &forged_key]);
    let refused = exited(&verify(&["--config", config_arg]), 6);
    assert!(refused.contains("checkpoint does not verify"), "{refused}");
    redis.command(&["SET", "jitid:{audit}:checkpoint", &checkpoint.encode()]);
    exited(&verify(&["--config", config_arg]), 0);

    // Deleting the first event kept breaks the link to the checkpoint.
    redis.command(&["XDEL", "jitid:{audit}:log", "6-0"]);
    let broken = exited(&verify(&["--config", config_arg]), 6);
    assert!(
        broken.contains("event 7: does not follow event 5"),
        "{broken}"
    );
}

#[tokio::test]
async fn the_memory_trail_trims_behind_a_checkpoint_too() {
    let mut env = TestEnv::start().await;
    let log = Arc::new(MemoryAuditLog::new());
    let addr = env
        .spawn_retaining(
            Arc::new(MemoryStore::default()),
            log.clone(),
            None,
            Retention {
                max_events: Some(2),
                max_age: None,
            },
        )
        .await;
    let runner = env.client_at(addr, CI_RUNNER).await;
    runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    let auditor = env.client_at(addr, AUDITOR).await;
    let found = eventually("a trimmed trail", async || {
        let found = auditor
            .audit_events(pb::QueryAuditRequest::default())
            .await
            .unwrap();
        found.checkpoint.is_some().then_some(found)
    })
    .await;
    let checkpoint = jitid::audit::checkpoint::verify_checkpoint(
        found.checkpoint.as_deref().unwrap(),
        &env.authority.document_authorities(),
    )
    .unwrap();
    assert_eq!(checkpoint.seq, 1);
    assert_eq!(found.events.len(), 2);
    verify_chain(&checkpoint.head(), &found.events).unwrap();
}

// The server runs in this process while the test blocks on the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_refused_requests_for_the_entitlement_they_were_for() {
    let env = TestEnv::start().await;
    let runner = env.client_for(CI_RUNNER).await;
    // prod-deploy needs a justification and a ticket: refused, once asked
    // for by its actions alone and once by name.
    for request in [
        SvidRequest::actions(&["deploy:prod/payments"]),
        SvidRequest::entitlement("prod-deploy"),
    ] {
        runner.fetch_x509_svid(&request).await.unwrap_err();
    }
    let report = exited(&env.cli(AUDITOR, &["audit", "report", "--since", "1h"]), 0);
    let rows: Vec<Vec<&str>> = report
        .lines()
        .skip_while(|line| !line.starts_with("entitlement "))
        .skip(1)
        .map(|line| line.split_whitespace().collect())
        .collect();
    // entitlement requests granted refused ...
    assert_eq!(rows.len(), 1, "{report}");
    assert_eq!(rows[0][..4], ["prod-deploy", "2", "0", "2"], "{report}");
}

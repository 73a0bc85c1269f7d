//! The audit trail through the real server: the events each RPC path
//! emits, tampering detected by `jitid audit verify` in Redis and in the
//! JSON-lines sink, one chain across two servers, and failing closed.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use jitid::audit::file::Seal;
use jitid::audit::{
    AuditEvent, AuditLog, EventKind, Head, JsonLinesSink, MemoryAuditLog, RedisAuditLog,
    verify_chain,
};
use jitid::client::SvidRequest;
use jitid::proto::v1::{
    complete_task_request::Target as Complete, revoke_request::Target as Revoke,
};
use jitid::store::{MemoryStore, RedisStore, RedisStoreConfig};

use crate::support::redis::RedisServer;
use crate::support::{
    CI_RUNNER, SECURITY_A, SECURITY_B, SRE_A, SRE_B, SRE_C, TestEnv, UPKEEP, exited, jitid_bin,
};

/// The events appended since the trail had `from` of them.
async fn since(log: &dyn AuditLog, from: usize) -> Vec<AuditEvent> {
    log.read(from as u64, 10_000).await.unwrap()
}

fn kinds(events: &[AuditEvent]) -> Vec<EventKind> {
    events.iter().map(|event| event.kind).collect()
}

#[tokio::test]
async fn every_rpc_path_emits_its_events() {
    use EventKind::*;
    let env = TestEnv::start().await;
    let log = env.audit.clone();
    let runner = env.client_for(CI_RUNNER).await;
    let mut seen = 0;
    let mut next = async |expected: &[EventKind]| {
        let events = since(&*log, seen).await;
        assert_eq!(kinds(&events), expected, "{events:#?}");
        seen += events.len();
        events
    };

    // An issuance: request, decision, credential (by serial).
    let svid = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task("build-1"))
        .await
        .unwrap();
    let events = next(&[RequestReceived, Decision, CredentialIssued]).await;
    assert!(events.iter().all(|e| e.actor == CI_RUNNER));
    assert_eq!(events[0].details["rpc"], "IssueX509Svid");
    assert_eq!(
        events[1].grant.as_deref(),
        Some(svid.grant.grant_id.as_str())
    );
    assert_eq!(
        events[1].details["explanation"]["entitlement"],
        "ci-publish"
    );
    assert_eq!(events[2].details["id"], svid.serial.as_str());
    assert_eq!(events[2].task.as_deref(), Some("build-1"));

    // A refusal: request and decision with the reason.
    runner
        .fetch_x509_svid(&SvidRequest::entitlement("nope"))
        .await
        .unwrap_err();
    let events = next(&[RequestReceived, Decision]).await;
    assert_eq!(
        events[1].details["outcome"],
        "refused: unknown entitlement \"nope\"; you may request: ci-publish, prod-deploy, db-migrate, quick-approval"
    );

    // A JWT is named by its jti, never included.
    let jwt = runner
        .fetch_jwt_svid(&SvidRequest::entitlement("ci-publish"), &["a".to_owned()])
        .await
        .unwrap();
    let events = next(&[RequestReceived, Decision, CredentialIssued]).await;
    assert_eq!(events[2].details["id"], jwt.jti.as_str());

    // Approval: request, decision (pending), two approvals, then a mint.
    let sre = env.client_for(SRE_A).await;
    let pending = sre
        .request_grant(&SvidRequest::entitlement("db-migrate").task("m-1"))
        .await
        .unwrap();
    let grant_id = pending.summary.unwrap().grant_id;
    let events = next(&[RequestReceived, Decision]).await;
    assert_eq!(events[1].details["state"], "pending");
    env.client_for(SRE_B)
        .await
        .approve(&grant_id, "ok")
        .await
        .unwrap();
    let events = next(&[Approval]).await;
    assert_eq!(events[0].actor, SRE_B);
    assert_eq!(events[0].details["comment"], "ok");
    env.client_for(SRE_C)
        .await
        .approve(&grant_id, "")
        .await
        .unwrap();
    let events = next(&[Approval]).await;
    assert_eq!(events[0].details["state"], "active");
    sre.fetch_x509_svid(&SvidRequest::under_grant(&grant_id))
        .await
        .unwrap();
    next(&[RequestReceived, CredentialIssued]).await;

    // Break-glass and its review.
    let carol = env.client_for(SECURITY_A).await;
    let emergency = carol
        .fetch_x509_svid(
            &SvidRequest::entitlement("db-migrate")
                .break_glass()
                .justification("INC-1: the primary is down"),
        )
        .await
        .unwrap();
    let events = next(&[RequestReceived, Decision, BreakGlass, CredentialIssued]).await;
    assert_eq!(
        events[2].details["justification"],
        "INC-1: the primary is down"
    );
    env.client_for(SECURITY_B)
        .await
        .ack_review(&emergency.grant.grant_id, "fine")
        .await
        .unwrap();
    next(&[ReviewAcknowledged]).await;

    // Revocation and completion, with who and why.
    runner
        .revoke(Revoke::GrantId(svid.grant.grant_id.clone()), "leaked")
        .await
        .unwrap();
    let events = next(&[Revocation]).await;
    assert_eq!(events[0].details["reason"], "leaked");
    assert_eq!(
        events[0].details["grants_ended"][0],
        svid.grant.grant_id.as_str()
    );
    // A liveness check after the revocation: recorded, and not VALID.
    let verdict = runner.verify_x509(&svid.chain).await.unwrap();
    let events = next(&[LivenessChecked]).await;
    assert_eq!(events[0].details["status"], "revoked");
    assert_eq!(
        events[0].details["credential"],
        verdict.credential_id.as_str()
    );
    assert_eq!(
        events[0].grant.as_deref(),
        Some(svid.grant.grant_id.as_str())
    );
    runner
        .complete_task(Complete::TaskId("build-1".to_owned()))
        .await
        .unwrap();
    next(&[TaskCompleted]).await;

    // A caller that fails attestation is recorded, with why.
    let anonymous = env.client_with(None).await;
    anonymous.list_grants(Default::default()).await.unwrap_err();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let events = loop {
        let events = since(&*log, seen).await;
        if !events.is_empty() || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(kinds(&events), [AuthenticationFailure]);
    assert_eq!(events[0].actor, "unauthenticated");
    assert!(
        events[0].details["reason"]
            .as_str()
            .unwrap()
            .starts_with("no client certificate")
    );
    seen += 1;

    // One chain, and no secret material anywhere in it; every event reads
    // as its typed kind.
    let all = since(&*log, 0).await;
    assert_eq!(all.len(), seen);
    verify_chain(&Head::genesis(), &all).unwrap();
    for event in &all {
        assert_eq!(event.event().unwrap().kind(), event.kind);
        let line = event.to_line();
        assert!(!line.contains("PRIVATE KEY"), "{line}");
        assert!(!line.contains(&jwt.token), "a whole JWT in {line}");
        assert!(!line.contains("eyJ"), "a JWS segment in {line}");
    }
}

fn redis_store_config(url: &str) -> RedisStoreConfig {
    RedisStoreConfig::new(url)
}

fn verify(args: &[&str], target: &std::path::Path) -> std::process::Output {
    Command::new(jitid_bin())
        .args(["audit", "verify"])
        .args(args)
        .arg(target)
        .env_remove("JITID_CONFIG")
        .output()
        .unwrap()
}

fn says(output: &std::process::Output, code: i32, text: &str) {
    let all = exited(output, code);
    assert!(all.contains(text), "expected {text:?} in {all}");
}

#[tokio::test]
async fn a_json_lines_file_cut_at_its_end_fails_verify() {
    let mut env = TestEnv::start().await;
    let jsonl = env.dir.path().join("audit.jsonl");
    let addr = env
        .spawn_audited(
            Arc::new(MemoryStore::new(Arc::new(jitid::clock::SystemClock))),
            Arc::new(MemoryAuditLog::new()),
            Some(JsonLinesSink::file(&jsonl).unwrap()),
        )
        .await;
    let runner = env.client_at(addr, CI_RUNNER).await;
    for task in ["t1", "t2"] {
        runner
            .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task(task))
            .await
            .unwrap();
    }
    // The writer seals the file at its next upkeep.
    let sealed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(token) = jitid::audit::file::read_head(&jsonl).unwrap()
                && jitid::audit::checkpoint::read_checkpoint_unverified(&token)
                    .unwrap()
                    .seq
                    == 6
            {
                return;
            }
            tokio::time::sleep(UPKEEP).await;
        }
    })
    .await;
    assert!(sealed.is_ok(), "the file was never sealed");
    let bundle = env.dir.path().join("bundle.json");
    std::fs::write(&bundle, env.authority.document_jwks_json()).unwrap();
    let with_bundle = ["--bundle", bundle.to_str().unwrap(), "--file"];
    says(
        &verify(&["--file"], &jsonl),
        0,
        "reaches its head file (event 6)",
    );
    says(
        &verify(&with_bundle, &jsonl),
        0,
        "reaches its head file (event 6)",
    );

    // Cut the last two events (and whatever head line came after them).
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let fifth = text.find("{\"seq\":5,").unwrap();
    std::fs::write(&jsonl, &text[..fifth]).unwrap();
    let cut = "ends at event 4 but its head file says it reached event 6";
    says(&verify(&["--file"], &jsonl), 6, cut);
    says(&verify(&with_bundle, &jsonl), 6, cut);

    // A head file that is not signed by the trust domain is refused when
    // the keys are given.
    std::fs::write(&jsonl, &text).unwrap();
    let forged = jitid::audit::file::head_path(&jsonl);
    let token = std::fs::read_to_string(&forged).unwrap();
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[2] = "AAAA";
    std::fs::write(&forged, parts.join(".")).unwrap();
    says(&verify(&with_bundle, &jsonl), 6, "does not verify");
}

#[tokio::test]
async fn tampering_is_detected_in_redis_and_in_the_json_lines_file() {
    let redis = RedisServer::start();
    let mut env = TestEnv::start().await;
    let store = Arc::new(
        RedisStore::connect(redis_store_config(&redis.url()))
            .await
            .unwrap(),
    );
    let jsonl = env.dir.path().join("audit.jsonl");
    let addr = env
        .spawn_audited(
            store.clone(),
            Arc::new(RedisAuditLog::new(store.clone())),
            Some(JsonLinesSink::file(&jsonl).unwrap()),
        )
        .await;
    let runner = env.client_at(addr, CI_RUNNER).await;
    for task in ["t1", "t2"] {
        runner
            .fetch_x509_svid(&SvidRequest::entitlement("ci-publish").task(task))
            .await
            .unwrap();
    }
    let config = env.redis_config_file(&redis.url());
    says(
        &verify(&["--config"], &config),
        0,
        "audit trail ok (Redis): 6 events",
    );
    says(&verify(&["--file"], &jsonl), 0, "audit trail ok");

    // The JSON-lines file: an edit, a deletion, a swap.
    let original = std::fs::read_to_string(&jsonl).unwrap();
    // The events, without the head lines the writer seals the file with.
    let lines: Vec<&str> = original
        .lines()
        .filter(|line| Seal::parse(line).is_none())
        .collect();
    assert_eq!(lines.len(), 6);
    let rewrite = |lines: &[String]| std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let mut edited: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    edited[1] = edited[1].replace("\"ci-publish\"", "\"prod-deploy\"");
    assert_ne!(edited[1], lines[1]);
    rewrite(&edited);
    says(
        &verify(&["--file"], &jsonl),
        6,
        "event 2: content does not match its hash (edited)",
    );
    let mut deleted: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    deleted.remove(1);
    rewrite(&deleted);
    says(
        &verify(&["--file"], &jsonl),
        6,
        "event 3: does not follow event 1",
    );
    let mut swapped: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    swapped.swap(3, 4);
    rewrite(&swapped);
    says(
        &verify(&["--file"], &jsonl),
        6,
        "event 5: does not follow event 3",
    );

    // Redis: an entry edited in place (the stream rebuilt around it), then
    // one deleted, then the last ones cut off.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let key = "jitid:{audit}:log";
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(&mut connection)
        .unwrap();
    let rebuild = |connection: &mut redis::Connection, edit: &dyn Fn(usize, &str) -> String| {
        let () = redis::cmd("DEL").arg(key).query(connection).unwrap();
        for (index, (id, fields)) in entries.iter().enumerate() {
            let () = redis::cmd("XADD")
                .arg(key)
                .arg(id)
                .arg("e")
                .arg(edit(index, &fields[0].1))
                .query(connection)
                .map(|_: String| ())
                .unwrap();
        }
    };
    rebuild(&mut connection, &|index, line| {
        if index == 3 {
            assert!(line.contains("\"IssueX509Svid\""), "{line}");
            line.replace("\"IssueX509Svid\"", "\"IssueJwtSvid\"")
        } else {
            line.to_owned()
        }
    });
    says(
        &verify(&["--config"], &config),
        6,
        "event 4: content does not match its hash (edited)",
    );
    rebuild(&mut connection, &|_, line| line.to_owned());
    says(&verify(&["--config"], &config), 0, "6 events");
    let () = redis::cmd("XDEL")
        .arg(key)
        .arg("4-0")
        .query(&mut connection)
        .map(|_: u64| ())
        .unwrap();
    says(
        &verify(&["--config"], &config),
        6,
        "event 5: does not follow event 3",
    );
    rebuild(&mut connection, &|_, line| line.to_owned());
    let () = redis::cmd("XTRIM")
        .arg(key)
        .arg("MAXLEN")
        .arg(10)
        .query(&mut connection)
        .map(|_: u64| ())
        .unwrap();
    let () = redis::cmd("XDEL")
        .arg(key)
        .arg("6-0")
        .query(&mut connection)
        .map(|_: u64| ())
        .unwrap();
    says(
        &verify(&["--config"], &config),
        6,
        "the chain ends at event 5 but the trail's head is event 6",
    );
}

#[tokio::test]
async fn two_servers_sharing_redis_keep_one_chain() {
    let redis = RedisServer::start();
    let mut env = TestEnv::start().await;
    let mut addrs = Vec::new();
    for _ in 0..2 {
        // Each server has its own connection, writer and cached head.
        let store = Arc::new(
            RedisStore::connect(redis_store_config(&redis.url()))
                .await
                .unwrap(),
        );
        let log = Arc::new(RedisAuditLog::new(store.clone()));
        addrs.push(env.spawn_audited(store, log, None).await);
    }
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let client = env.client_at(addrs[worker % 2], CI_RUNNER).await;
        tasks.push(tokio::spawn(async move {
            for n in 0..5 {
                client
                    .fetch_jwt_svid(
                        &SvidRequest::entitlement("ci-publish").task(&format!("w{worker}-{n}")),
                        &["a".to_owned()],
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let store = Arc::new(
        RedisStore::connect(redis_store_config(&redis.url()))
            .await
            .unwrap(),
    );
    let log = RedisAuditLog::new(store);
    let events = log.read(0, 10_000).await.unwrap();
    assert_eq!(events.len(), 8 * 5 * 3);
    let head = verify_chain(&Head::genesis(), &events).unwrap();
    assert_eq!(head, log.head().await.unwrap());
}

/// A writer that always fails, like a full disk.
struct Broken;

impl std::io::Write for Broken {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("disk full"))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_audit_sink_fails_the_request_closed() {
    let mut env = TestEnv::start().await;
    let addr = env
        .spawn_audited(
            Arc::new(MemoryStore::default()),
            Arc::new(MemoryAuditLog::new()),
            Some(JsonLinesSink::writer(Box::new(Broken), "broken")),
        )
        .await;
    let runner = env.client_at(addr, CI_RUNNER).await;
    let error = runner
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::Unavailable), "{error}");
    assert!(
        error.to_string().contains("audit trail unavailable"),
        "{error}"
    );
    // Revocations fail closed too, so nobody is told "done" unrecorded.
    let error = runner
        .revoke(Revoke::Subject(CI_RUNNER.to_owned()), "test")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::Unavailable), "{error}");
}

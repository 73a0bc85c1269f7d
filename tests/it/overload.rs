//! Overload: past `limits.max_in_flight` requests, or a caller's rate, the
//! server refuses at once with RESOURCE_EXHAUSTED and a retry pushback,
//! having done nothing for the refused requests; the client library
//! retries them with jitter.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use jitid::audit::log::AuditLogError;
use jitid::audit::upkeep::{Expiring, SignedCheckpoint};
use jitid::audit::{AppendOutcome, AuditEvent, AuditLog, EventKind, MemoryAuditLog};
use jitid::audit::{Chained, Head};
use jitid::client::{Client, ClientConfig, ClientError, JwtSvid, RetryPolicy, SvidRequest};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::support::{AGENT, CI_RUNNER, TestEnv};

/// Requests in a burst, over [`CONNECTIONS`] connections: 25 times what
/// the server takes on at once.
const BURST: usize = 200;
const CONNECTIONS: usize = 4;
const MAX_IN_FLIGHT: usize = 8;

/// An audit trail whose appends wait while it is shut. The issuer appends
/// an issuance's events before it answers, so the requests admitted while
/// it is shut stay in flight until the test opens it: then every other
/// request meets a full server, whatever the scheduling.
#[derive(Debug)]
struct GatedAuditLog {
    inner: MemoryAuditLog,
    open: watch::Sender<bool>,
}

impl GatedAuditLog {
    fn shut() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryAuditLog::new(),
            open: watch::Sender::new(false),
        })
    }

    fn open(&self) {
        self.open.send_replace(true);
    }

    async fn events(&self) -> Vec<AuditEvent> {
        self.inner.read(0, 100_000).await.unwrap()
    }
}

#[async_trait]
impl AuditLog for GatedAuditLog {
    async fn head(&self) -> Result<Head, AuditLogError> {
        self.inner.head().await
    }

    async fn append(
        &self,
        expected: &Head,
        chained: &Chained,
    ) -> Result<AppendOutcome, AuditLogError> {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|open| *open).await;
        self.inner.append(expected, chained).await
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, AuditLogError> {
        self.inner.read(after, limit).await
    }

    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<Expiring>, AuditLogError> {
        self.inner.due(now, limit).await
    }

    async fn checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditLogError> {
        self.inner.checkpoint().await
    }

    async fn trim(&self, checkpoint: &SignedCheckpoint) -> Result<(), AuditLogError> {
        self.inner.trim(checkpoint).await
    }

    async fn lease(&self, holder: &str, ttl: Duration) -> Result<bool, AuditLogError> {
        self.inner.lease(holder, ttl).await
    }
}

/// `CONNECTIONS` clients of the server at `addr`, as `id`, retrying as
/// `retry` says.
async fn clients(env: &TestEnv, addr: SocketAddr, id: &str, retry: RetryPolicy) -> Vec<Client> {
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let config = ClientConfig {
            retry,
            ..env.client_config(addr, id)
        };
        clients.push(Client::connect(config).await.unwrap());
    }
    clients
}

/// Starts `BURST` concurrent JWT-SVID requests over `clients`.
fn burst(clients: &[Client]) -> JoinSet<Result<JwtSvid, ClientError>> {
    let mut requests = JoinSet::new();
    for n in 0..BURST {
        let client = clients[n % clients.len()].clone();
        requests.spawn(async move {
            client
                .fetch_jwt_svid(
                    &SvidRequest::entitlement("ci-publish"),
                    &["artifacts.example.org".to_owned()],
                )
                .await
        });
    }
    requests
}

/// The pushback of a shed request, after checking that it is one: its
/// code, the retry hint, and a message naming the limit.
fn shed(error: &ClientError, limit: &str) -> Duration {
    assert_eq!(
        error.code(),
        Some(tonic::Code::ResourceExhausted),
        "{error}"
    );
    assert!(error.to_string().contains(limit), "{error}");
    let pushback = error.retry_after().expect("a pushback");
    assert!(
        error
            .to_string()
            .ends_with(&format!("; retry after {} ms", pushback.as_millis())),
        "{error}"
    );
    assert!(error.is_retryable());
    pushback
}

fn count(events: &[AuditEvent], kind: EventKind) -> usize {
    events.iter().filter(|event| event.kind == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_in_flight_limit_is_shed_at_once_and_leaves_nothing_behind() {
    let mut env = TestEnv::start_with_limits(&format!("max_in_flight = {MAX_IN_FLIGHT}")).await;
    let trail = GatedAuditLog::shut();
    let addr = env
        .spawn_audited(env.store.clone(), trail.clone(), None)
        .await;
    let clients = clients(&env, addr, CI_RUNNER, RetryPolicy::none()).await;

    // While the trail is shut, the admitted requests stay in flight, so
    // every other one must come back refused without waiting for them.
    // (The deadline only keeps a server that queues them from hanging the
    // test.)
    let mut requests = burst(&clients);
    let mut refused = Vec::new();
    let all_but_admitted = async {
        while refused.len() < BURST - MAX_IN_FLIGHT {
            let result = requests.join_next().await.unwrap().unwrap();
            refused.push(result.expect_err("nothing completes while the trail is shut"));
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all_but_admitted)
        .await
        .expect("requests past the limit were queued, not shed");
    for error in &refused {
        let pushback = shed(
            error,
            &format!("server busy: {MAX_IN_FLIGHT} requests in flight"),
        );
        assert_eq!(pushback, Duration::from_millis(50));
    }
    assert!(
        env.grants() <= MAX_IN_FLIGHT,
        "only the admitted requests get that far"
    );
    assert!(trail.events().await.is_empty());

    // Open: those in flight complete.
    trail.open();
    let mut issued = 0;
    while let Some(result) = requests.join_next().await {
        let svid = result.unwrap().unwrap();
        assert_eq!(svid.grant.entitlement, "ci-publish");
        issued += 1;
    }
    assert_eq!(issued, MAX_IN_FLIGHT);

    // Nothing half-written for the shed ones: one grant and one audited
    // issuance per success, and no trace of the refusals in the trail.
    assert_eq!(env.grants(), issued);
    let events = trail.events().await;
    assert_eq!(count(&events, EventKind::RequestReceived), issued);
    assert_eq!(count(&events, EventKind::CredentialIssued), issued);

    // Once the burst is over, the server takes requests again.
    clients[0]
        .fetch_jwt_svid(
            &SvidRequest::entitlement("ci-publish"),
            &["artifacts.example.org".to_owned()],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_default_retry_policy_the_same_burst_all_succeeds() {
    let env = TestEnv::start_with_limits(&format!("max_in_flight = {MAX_IN_FLIGHT}")).await;
    let clients = clients(&env, env.addr, CI_RUNNER, RetryPolicy::default()).await;
    let mut requests = burst(&clients);
    let mut issued = 0;
    while let Some(result) = requests.join_next().await {
        result.unwrap().unwrap();
        issued += 1;
    }
    assert_eq!(issued, BURST);
    assert_eq!(env.grants(), BURST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_rate_is_shed_and_others_are_not() {
    // One request per 100 s in bursts of 5: a run of 20 quick calls has
    // its first 5 admitted and the rest refused.
    let env = TestEnv::start_with_limits("caller_rate = 0.01\ncaller_burst = 5").await;
    let runner = Client::connect(ClientConfig {
        retry: RetryPolicy::none(),
        ..env.client_config(env.addr, CI_RUNNER)
    })
    .await
    .unwrap();
    let request = SvidRequest::entitlement("ci-publish");
    let audiences = ["artifacts.example.org".to_owned()];
    let mut issued = 0;
    let mut refused = 0;
    for _ in 0..20 {
        match runner.fetch_jwt_svid(&request, &audiences).await {
            Ok(_) => issued += 1,
            Err(error) => {
                let pushback = shed(
                    &error,
                    &format!("rate limit for {CI_RUNNER}: 0.01 requests/s in bursts of 5"),
                );
                assert!(pushback > Duration::ZERO && pushback <= Duration::from_secs(100));
                refused += 1;
            }
        }
    }
    assert_eq!((issued, refused), (5, 15));
    assert_eq!(env.grants(), issued, "nothing recorded for a refusal");

    // Another caller has its own bucket, on every RPC that is limited.
    let agent = Client::connect(ClientConfig {
        retry: RetryPolicy::none(),
        ..env.client_config(env.addr, AGENT)
    })
    .await
    .unwrap();
    let svid = agent
        .fetch_jwt_svid(&SvidRequest::entitlement("agent-research"), &audiences)
        .await
        .unwrap();
    let verdict = agent.verify_jwt(&svid.token, &audiences[0]).await.unwrap();
    assert_eq!(verdict.status(), jitid::proto::v1::VerifyStatus::Valid);

    // The runner is over its rate for Verify too; a revocation is never
    // shed.
    let error = runner
        .verify_jwt(&svid.token, &audiences[0])
        .await
        .unwrap_err();
    shed(&error, "rate limit for");
    runner
        .revoke(
            jitid::proto::v1::revoke_request::Target::Subject(CI_RUNNER.to_owned()),
            "overload test",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_subject_holds_a_bounded_number_of_grants_listed_in_pages() {
    use jitid::proto::v1 as pb;
    // `limits.max_grants_per_subject` sets this cap on the store the
    // server builds; the test gives it a store with the cap set.
    let store =
        jitid::store::MemoryStore::new(Arc::new(jitid::clock::SystemClock)).with_grant_cap(3);
    let env = TestEnv::start_with(Arc::new(store)).await;
    let runner = env.client_for(CI_RUNNER).await;
    // Requests as large as a request may be: 16 labels of 256 bytes.
    let mut request = SvidRequest::entitlement("ci-publish");
    for n in 0..16 {
        request = request.label(&format!("label_{n}"), &"x".repeat(256));
    }
    let mut ids = Vec::new();
    for n in 0..3 {
        let grant = runner
            .request_grant(&request.clone().task(&format!("t{n}")))
            .await
            .unwrap();
        let summary = grant.summary.unwrap();
        // The grant keeps a bounded decision; the trail keeps the inputs.
        assert!(grant.decision.len() <= 2048, "{}", grant.decision.len());
        assert!(grant.decision.contains("audit trail"), "{}", grant.decision);
        ids.push(summary.grant_id);
    }
    let error = runner
        .request_grant(&request.clone().task("t3"))
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(tonic::Code::ResourceExhausted),
        "{error}"
    );
    assert!(
        error.to_string().contains("max_grants_per_subject"),
        "{error}"
    );
    assert_eq!(
        error.retry_after(),
        None,
        "no pushback: not retried at once"
    );

    // Pages of two: the client follows them to the end, in order.
    let page = |token: &str| pb::ListGrantsRequest {
        page_size: 2,
        page_token: token.to_owned(),
        ..Default::default()
    };
    let listed = runner.list_grants(page("")).await.unwrap();
    let listed: Vec<String> = listed
        .iter()
        .map(|grant| grant.summary.as_ref().unwrap().grant_id.clone())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    let mut got = listed.clone();
    got.sort();
    assert_eq!(got, sorted, "nothing written for the refused one");
    // A made-up token, or a page too large, is refused.
    for bad in [
        page("not-a-token"),
        pb::ListGrantsRequest {
            page_size: 5000,
            ..Default::default()
        },
    ] {
        let error = runner.list_grants(bad).await.unwrap_err();
        assert_eq!(error.code(), Some(tonic::Code::InvalidArgument), "{error}");
    }
}

//! The trail's readers over a small story and over a trail written
//! before events were typed.

use std::time::Duration;

use super::*;
use crate::audit::event::{
    BreakGlass, CredentialIssued, CredentialKind, Decision, Envelope, Event, GrantExpired,
    GrantRequested, Granted, LivenessChecked, LivenessStatus, Refused, RequestReceived, Revocation,
    Rpc, Target, TaskCompleted, TaskOutcome,
};
use crate::audit::{Head, Record};
use crate::grant::GrantState;

fn chain(records: Vec<(Option<&str>, Event)>) -> Vec<AuditEvent> {
    let mut head = Head::genesis();
    records
        .into_iter()
        .enumerate()
        .map(|(n, (grant, event))| {
            let envelope = Envelope {
                at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_392_000 + n as u64),
                actor: "spiffe://example.org/ci".to_owned(),
                subject: Some("spiffe://example.org/ci".to_owned()),
                grant: grant.map(str::to_owned),
                task: grant.map(|_| "job-1".to_owned()),
            };
            let event = AuditEvent::seal(Record::new(envelope, &event), &head);
            head = event.head();
            event
        })
        .collect()
}

fn at(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap()
}

fn granted(entitlement: &str) -> Event {
    Event::Decision(Decision::Granted(Granted {
        outcome: format!("allow {entitlement} for 1h"),
        entitlement: entitlement.to_owned(),
        state: GrantState::Active,
        ttl_seconds: 3600,
        expires_at: at("2026-11-23T01:00:00Z"),
        explanation: serde_json::json!({"entitlement": entitlement}),
    }))
}

fn issued(credential: CredentialKind, id: &str, entitlement: &str) -> Event {
    Event::CredentialIssued(CredentialIssued {
        credential,
        id: id.to_owned(),
        spiffe_id: "spiffe://example.org/ci".to_owned(),
        expires_at: at("2026-11-23T01:00:00Z"),
        entitlement: entitlement.to_owned(),
        actions: Vec::new(),
        break_glass: false,
    })
}

fn checked(status: LivenessStatus) -> Event {
    Event::LivenessChecked(LivenessChecked {
        status,
        reason: String::new(),
        credential: Some("01".to_owned()),
    })
}

fn story() -> Vec<AuditEvent> {
    chain(vec![
        (
            Some("g1"),
            Event::RequestReceived(RequestReceived::Grant(GrantRequested {
                rpc: Rpc::IssueX509Svid,
                entitlement: Some("deploy".to_owned()),
                actions: Vec::new(),
                ttl_seconds: None,
                justification: String::new(),
                ticket: String::new(),
                break_glass: false,
                labels: Default::default(),
                source: None,
                attestation: None,
            })),
        ),
        (Some("g1"), granted("deploy")),
        (Some("g1"), issued(CredentialKind::X509, "01", "deploy")),
        (Some("g1"), checked(LivenessStatus::Valid)),
        (Some("g2"), granted("deploy")),
        (
            Some("g2"),
            Event::BreakGlass(BreakGlass {
                entitlement: "deploy".to_owned(),
                justification: "INC-1".to_owned(),
                ticket: String::new(),
                unreviewed_before: None,
            }),
        ),
        (Some("g2"), issued(CredentialKind::Jwt, "g2.aa", "deploy")),
        (
            None,
            Event::TaskCompleted(TaskCompleted {
                target: Target::Grant,
                value: "g1".to_owned(),
                outcome: TaskOutcome::Completed,
                grants_ended: vec!["g1".to_owned()],
                lag_ms: 3,
            }),
        ),
        (Some("g1"), checked(LivenessStatus::Revoked)),
        (
            None,
            Event::Decision(Decision::Refused(Refused {
                outcome: "refused: no".to_owned(),
                explanation: Some(serde_json::json!({"entitlement": "deploy"})),
            })),
        ),
        (
            None,
            Event::Revocation(Revocation {
                target: Target::Task,
                value: "job-1".to_owned(),
                reason: String::new(),
                grants_ended: Vec::new(),
                credential_revoked: false,
                task_revoked: true,
                lag_ms: 1,
            }),
        ),
        (Some("g2"), checked(LivenessStatus::Valid)),
        (
            Some("g2"),
            Event::GrantExpired(GrantExpired {
                expires_at: "2026-11-23T01:00:00Z".to_owned(),
                entitlement: Some("deploy".to_owned()),
                state: "active".to_owned(),
            }),
        ),
    ])
}

#[test]
fn a_grant_filter_follows_its_grant_and_the_revocations_of_its_task() {
    let events = story();
    let mut selector = Selector::new(Filter {
        grant: Some("g2".to_owned()),
        ..Filter::default()
    })
    .unwrap();
    let selected: Vec<u64> = events
        .iter()
        .filter(|event| selector.select(event))
        .map(|event| event.seq)
        .collect();
    assert_eq!(selected, [5, 6, 7, 11, 12, 13]);
    let mut kinds = Selector::new(Filter {
        kinds: vec![EventKind::LivenessChecked],
        since: Some("2026-11-23T00:00:05Z".to_owned()),
        ..Filter::default()
    })
    .unwrap();
    let selected: Vec<u64> = events
        .iter()
        .filter(|event| kinds.select(event))
        .map(|event| event.seq)
        .collect();
    assert_eq!(selected, [9, 12]);
    assert!(
        Selector::new(Filter {
            since: Some("yesterday".to_owned()),
            ..Filter::default()
        })
        .is_err()
    );
    assert_eq!(
        EventKind::parse("grant_expired"),
        Some(EventKind::GrantExpired)
    );
    assert_eq!(
        EventKind::parse(EventKind::Decision.as_str()),
        Some(EventKind::Decision)
    );
    assert_eq!(EventKind::parse("nope"), None);
}

#[test]
fn a_grant_life_flags_a_valid_answer_after_its_end() {
    let events = story();
    let mut selector = Selector::new(Filter {
        grant: Some("g2".to_owned()),
        ..Filter::default()
    })
    .unwrap();
    let life = GrantLife::of(
        "g2",
        events
            .iter()
            .filter(|e| selector.select(e))
            .cloned()
            .collect(),
    );
    assert!(matches!(
        life.ending,
        Ending::Ended {
            seq: 11,
            kind: EventKind::Revocation,
            ..
        }
    ));
    assert_eq!(life.credentials, ["jwt g2.aa"]);
    assert_eq!(life.valid_after_end, [12]);
    let g1: Vec<AuditEvent> = events
        .iter()
        .filter(|e| e.grant.as_deref() == Some("g1") || e.seq == 8)
        .cloned()
        .collect();
    let life = GrantLife::of("g1", g1);
    assert!(matches!(life.ending, Ending::Ended { seq: 8, .. }));
    assert_eq!((life.checks_after_end, life.valid_after_end.len()), (1, 0));
}

/// A trail written before events were typed, by the real server: every
/// RPC path, refusals by name, by actions alone and before policy.
const BEFORE_TYPED_EVENTS: &str =
    include_str!("../../../tests/fixtures/audit-trail-before-typed-events.jsonl");

fn before_typed_events() -> Vec<AuditEvent> {
    BEFORE_TYPED_EVENTS
        .lines()
        .map(|line| AuditEvent::from_line(line).unwrap())
        .collect()
}

#[test]
fn the_report_names_each_request_by_the_entitlement_it_was_for() {
    let events = before_typed_events();
    let report = Report::of(&events, SystemTime::UNIX_EPOCH);
    let rows: Vec<(&str, u64, u64, u64)> = report
        .entitlements
        .iter()
        .map(|(name, row)| (name.as_str(), row.requests, row.granted, row.refused))
        .collect();
    // Refused by actions alone (seq 24) and by name (26): both for
    // prod-deploy, as the decision's explanation says; a refusal before
    // policy (29) belongs to the entitlement named; a mint under an
    // approved grant (13) to the grant's entitlement. No `""` or `?` row.
    assert_eq!(
        rows,
        [
            ("ci-publish", 6, 5, 1),
            ("db-migrate", 4, 3, 0),
            ("nope", 1, 0, 1),
            ("prod-deploy", 2, 0, 2),
        ]
    );
}

#[test]
fn the_report_counts_per_entitlement() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_392_100);
    let report = Report::of(&story(), now);
    let deploy = &report.entitlements["deploy"];
    assert_eq!(
        (
            deploy.requests,
            deploy.granted,
            deploy.refused,
            deploy.break_glass,
            deploy.unreviewed
        ),
        (1, 2, 1, 1, 1)
    );
    // g1 was completed; g2 ended when its task was revoked, and was
    // then answered VALID.
    assert_eq!(
        (
            deploy.credentials,
            deploy.live,
            deploy.completed,
            deploy.revoked
        ),
        (2, 0, 1, 1)
    );
    assert_eq!(deploy.end_lags_ms, [3, 1]);
    assert_eq!(deploy.valid_after_end, 1);
    assert_eq!(
        deploy.expired, 0,
        "g2 ended by revocation before it expired"
    );
    assert_eq!(report.events, 13);
}

#[test]
fn summaries_and_renderings_read_the_types() {
    let events = before_typed_events();
    let lines: Vec<String> = events.iter().map(line).collect();
    assert!(lines.iter().all(|line| !line.contains("do not fit")));
    // A refusal says why (the `refused` key it was looked up by was never
    // written).
    assert!(
        lines[24].ends_with("refused: entitlement \"prod-deploy\" requires a justification"),
        "{}",
        lines[24]
    );
    assert!(lines[2].contains("credential_issued") && lines[2].contains("x509 "));
    let grant = events[1].grant.clone().unwrap();
    let mut selector = Selector::new(Filter {
        grant: Some(grant.clone()),
        ..Filter::default()
    })
    .unwrap();
    let life = GrantLife::of(
        &grant,
        events
            .iter()
            .filter(|event| selector.select(event))
            .cloned()
            .collect(),
    );
    let text = life.render();
    for expected in [
        "inputs and rules: {",
        "credentials: 1",
        "ended: revocation at",
        "Verify after the end: 1 liveness check(s) recorded, 0 answered VALID",
    ] {
        assert!(text.contains(expected), "expected {expected:?} in {text}");
    }
    let report = Report::of(&events, SystemTime::UNIX_EPOCH).render(SystemTime::UNIX_EPOCH);
    let mut rows = report.lines();
    assert_eq!(
        rows.next(),
        Some("audit report since 1970-01-01T00:00:00Z: 46 events")
    );
    assert!(rows.next().unwrap().starts_with("entitlement "));
    let prod: Vec<&str> = report
        .lines()
        .find(|row| row.starts_with("prod-deploy "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(prod[1..4], ["2", "0", "2"]);
}

#[test]
fn unreadable_events_are_counted_apart() {
    let mut events = story();
    events[1].details = serde_json::json!({"state": "active"});
    let report = Report::of(&events, SystemTime::UNIX_EPOCH);
    assert_eq!((report.events, report.unreadable), (13, 1));
    assert!(summary(&events[1]).starts_with("(audit event 2 (decision): details do not fit"));
    assert!(
        report
            .render(SystemTime::UNIX_EPOCH)
            .contains("1 event(s) not counted")
    );
}

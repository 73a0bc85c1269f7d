//! Typed events write exactly the details the `json!` writers wrote (each
//! writer's literal is copied here as it stood), and read every event of
//! a trail the server wrote before they existed back to the same hash.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::audit::{AuditEvent, Head, Record, SYSTEM};

const BEFORE_TYPED_EVENTS: &str =
    include_str!("../../../tests/fixtures/audit-trail-before-typed-events.jsonl");

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_392_000 + seconds)
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn envelope() -> Envelope {
    Envelope {
        at: at(0),
        actor: "spiffe://example.org/ci/runner".to_owned(),
        subject: Some("spiffe://example.org/ci/runner".to_owned()),
        grant: Some("ee9f04ae-5957-4efc-911f-eaa123549ae9".to_owned()),
        task: Some("build-1".to_owned()),
    }
}

/// Checks that `event` writes the same canonical line as the `json!`
/// details `before` did, and reads back as itself.
fn check(event: Event, before: serde_json::Value) {
    let typed = Record::new(envelope(), &event);
    let old = Record {
        kind: typed.kind,
        details: before,
        ..typed.clone()
    };
    let (_, typed_line) = AuditEvent::seal_with_line(typed.clone(), &Head::genesis());
    let (sealed, old_line) = AuditEvent::seal_with_line(old, &Head::genesis());
    assert_eq!(typed_line, old_line, "{event:?}");
    assert_eq!(sealed.event().unwrap(), event);
    assert_eq!(typed.event().unwrap(), event);
}

fn explanation() -> serde_json::Value {
    json!({"caller": "spiffe://example.org/ci/runner", "entitlement": "ci-publish", "outcome": "allow ci-publish for 5m", "matched": ["requesters: spiffe://example.org/ci/*"]})
}

#[test]
fn requests_write_what_received_and_delegate_wrote() {
    let labels = BTreeMap::from([("team".to_owned(), "pay".to_owned())]);
    let ttl: Option<Duration> = Some(Duration::from_secs(60));
    check(
        Event::RequestReceived(RequestReceived::Grant(GrantRequested {
            rpc: Rpc::IssueX509Svid,
            entitlement: None,
            actions: vec!["deploy:prod/payments".to_owned()],
            ttl_seconds: ttl.map(|ttl| ttl.as_secs()),
            justification: "release".to_owned(),
            ticket: String::new(),
            break_glass: false,
            labels: labels.clone(),
            source: Some("127.0.0.1".to_owned()),
            attestation: None,
        })),
        json!({
            "rpc": "IssueX509Svid",
            "entitlement": "",
            "actions": ["deploy:prod/payments"],
            "ttl_seconds": ttl.map(|ttl| ttl.as_secs()),
            "justification": "release",
            "ticket": "",
            "break_glass": false,
            "labels": labels,
            "source": Some("127.0.0.1"),
        }),
    );
    let none: Option<String> = None;
    check(
        Event::RequestReceived(RequestReceived::Grant(GrantRequested {
            rpc: Rpc::RequestGrant,
            entitlement: Some("db-migrate".to_owned()),
            actions: Vec::new(),
            ttl_seconds: None,
            justification: String::new(),
            ticket: "CHG-1".to_owned(),
            break_glass: true,
            labels: BTreeMap::new(),
            source: None,
            attestation: None,
        })),
        json!({
            "rpc": "RequestGrant",
            "entitlement": "db-migrate",
            "actions": Vec::<String>::new(),
            "ttl_seconds": None::<u64>,
            "justification": "",
            "ticket": "CHG-1",
            "break_glass": true,
            "labels": BTreeMap::<String, String>::new(),
            "source": none,
        }),
    );
    check(
        Event::RequestReceived(RequestReceived::Delegation(DelegationRequested {
            entitlement: "agent-research".to_owned(),
            name: "search".to_owned(),
            actions: vec!["tool:search".to_owned()],
            ttl_seconds: None,
            justification: String::new(),
        })),
        json!({
            "rpc": "Delegate",
            "entitlement": "agent-research",
            "name": "search",
            "actions": ["tool:search"],
            "ttl_seconds": None::<u64>,
            "justification": "",
        }),
    );
}

#[test]
fn decisions_write_what_records_refusals_and_delegate_wrote() {
    let decision = explanation();
    check(
        Event::Decision(Decision::Granted(Granted {
            outcome: "allow ci-publish for 5m".to_owned(),
            entitlement: "ci-publish".to_owned(),
            state: GrantState::Active,
            ttl_seconds: 300,
            expires_at: at(300),
            explanation: decision.clone(),
        })),
        json!({
            "outcome": decision.get("outcome").cloned().unwrap_or_default(),
            "entitlement": "ci-publish",
            "state": GrantState::Active.as_str(),
            "ttl_seconds": Duration::from_secs(300).as_secs(),
            "expires_at": rfc3339(at(300)),
            "explanation": decision,
        }),
    );
    let error = "unknown entitlement \"nope\"";
    for explained in [Some(decision), None] {
        check(
            Event::Decision(Decision::Refused(Refused {
                outcome: format!("refused: {error}"),
                explanation: explained.clone(),
            })),
            json!({
                "outcome": format!("refused: {error}"),
                "explanation": explained,
            }),
        );
    }
    let parent_actions = ["kb:read", "tool:search"];
    let asked = vec!["tool:search".to_owned()];
    let delegation_explanation = json!({
        "outcome": "delegated",
        "parent": "ee9f04ae-5957-4efc-911f-eaa123549ae9",
        "parent_actions": parent_actions.to_vec(),
        "parent_expires_at": rfc3339(at(900)),
        "depth": 1usize,
        "delegation_depth": 2u8,
        "actions_asked": asked,
        "ttl_asked_seconds": Some(Duration::from_secs(60)).map(|ttl| ttl.as_secs()),
    });
    let typed_explanation = DelegationExplanation {
        parent: "ee9f04ae-5957-4efc-911f-eaa123549ae9".to_owned(),
        parent_actions: parent_actions.map(str::to_owned).to_vec(),
        parent_expires_at: at(900),
        depth: 1,
        delegation_depth: 2,
        actions_asked: asked.clone(),
        ttl_asked_seconds: Some(60),
    };
    // The grant keeps the same decision text.
    assert_eq!(
        typed_explanation.to_text(),
        delegation_explanation.to_string()
    );
    let delegation: Option<String> =
        Some("spiffe://example.org/agents/planner/sub/search".to_owned());
    check(
        Event::Decision(Decision::Delegated(Delegated {
            entitlement: "agent-research".to_owned(),
            actions: asked,
            spiffe_id: delegation.clone(),
            parent: "ee9f04ae-5957-4efc-911f-eaa123549ae9".to_owned(),
            depth: 1,
            expires_at: at(60),
            ttl_seconds: 60,
            explanation: typed_explanation,
        })),
        json!({
            "outcome": "delegated",
            "state": "active",
            "entitlement": "agent-research",
            "actions": ["tool:search"],
            "spiffe_id": delegation,
            "parent": "ee9f04ae-5957-4efc-911f-eaa123549ae9",
            "depth": 1usize,
            "expires_at": rfc3339(at(60)),
            "ttl_seconds": 60u64,
            "explanation": delegation_explanation,
        }),
    );
}

#[test]
fn approvals_reviews_and_break_glass_write_what_they_wrote() {
    let approvals: Vec<u8> = vec![1, 2];
    let needed: u32 = 2;
    check(
        Event::Approval(Approval {
            comment: "ok".to_owned(),
            entitlement: "db-migrate".to_owned(),
            approvals: 2,
            needed: 2,
            state: GrantState::Active,
            expires_at: at(120),
        }),
        json!({
            "comment": "ok",
            "entitlement": "db-migrate",
            "approvals": approvals.len(),
            "needed": needed,
            "state": GrantState::Active.as_str(),
            "expires_at": rfc3339(at(120)),
        }),
    );
    check(
        Event::ApprovalDenied(ApprovalDenied {
            reason: "not now".to_owned(),
        }),
        json!({ "reason": "not now" }),
    );
    check(
        Event::BreakGlass(BreakGlass {
            entitlement: "db-migrate".to_owned(),
            justification: "INC-1".to_owned(),
            ticket: String::new(),
            unreviewed_before: None,
        }),
        json!({
            "entitlement": "db-migrate",
            "justification": "INC-1",
            "ticket": "",
            "review": "open",
        }),
    );
    check(
        Event::ReviewAcknowledged(ReviewAcknowledged {
            entitlement: "db-migrate".to_owned(),
            comment: "fine".to_owned(),
        }),
        json!({
            "entitlement": "db-migrate",
            "comment": "fine",
        }),
    );
}

#[test]
fn issuance_liveness_and_expiry_write_what_they_wrote() {
    let id = CredentialId::JwtId("ee9f04ae59574efc911feaa123549ae9.0a1b2c3d".to_owned());
    assert_eq!(CredentialKind::from(&id), CredentialKind::Jwt);
    check(
        Event::CredentialIssued(CredentialIssued {
            credential: CredentialKind::from(&id),
            id: id.value().to_owned(),
            spiffe_id: "spiffe://example.org/ci/runner".to_owned(),
            expires_at: at(300),
            entitlement: "ci-publish".to_owned(),
            actions: vec!["read:source".to_owned()],
            break_glass: false,
        }),
        json!({
            "credential": "jwt",
            "id": id.value(),
            "spiffe_id": "spiffe://example.org/ci/runner",
            "expires_at": humantime::format_rfc3339_seconds(at(300)).to_string(),
            "entitlement": "ci-publish",
            "actions": ["read:source"],
            "break_glass": false,
        }),
    );
    let claimed: Option<String> = None;
    check(
        Event::LivenessChecked(LivenessChecked {
            status: LivenessStatus::Invalid,
            reason: "not a jitid credential".to_owned(),
            credential: None,
        }),
        json!({
            "status": "invalid",
            "reason": "not a jitid credential",
            "credential": claimed,
        }),
    );
    let entitlement: Option<String> = None;
    check(
        Event::GrantExpired(GrantExpired {
            expires_at: String::new(),
            entitlement: None,
            state: "unknown".to_owned(),
        }),
        json!({
            "expires_at": "",
            "entitlement": entitlement,
            "state": "unknown",
        }),
    );
}

#[test]
fn revocations_and_completions_write_what_they_wrote() {
    let grants = ["ee9f04ae-5957-4efc-911f-eaa123549ae9".to_owned()];
    check(
        Event::Revocation(Revocation {
            target: Target::Subject,
            value: "spiffe://example.org/ci/runner".to_owned(),
            reason: "offboarded".to_owned(),
            grants_ended: grants.to_vec(),
            credential_revoked: false,
            task_revoked: false,
            lag_ms: 3,
        }),
        json!({
            "target": "subject",
            "value": "spiffe://example.org/ci/runner",
            "reason": "offboarded",
            "grants_ended": grants.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "credential_revoked": false,
            "task_revoked": false,
            "lag_ms": 3u64,
        }),
    );
    check(
        Event::TaskCompleted(TaskCompleted {
            target: Target::Task,
            value: "build-1".to_owned(),
            outcome: TaskOutcome::Failed,
            grants_ended: Vec::new(),
            lag_ms: 0,
        }),
        json!({
            "target": "task",
            "value": "build-1",
            "outcome": "failed",
            "grants_ended": Vec::<String>::new(),
            "lag_ms": 0u64,
        }),
    );
    let credential: Option<String> = Some("3fee9f18".to_owned());
    let parties: Vec<serde_json::Value> = [("ledger-a", 12u64)]
        .iter()
        .map(|(name, ms)| {
            json!({
                "name": name,
                "ms": ms,
            })
        })
        .collect();
    check(
        Event::RevocationApplied(RevocationApplied {
            cursor: "1795392000000-0".to_owned(),
            revoked_at: at(1),
            grants: grants.to_vec(),
            credential: credential.clone(),
            relying_parties: vec![PartyApplied {
                name: "ledger-a".to_owned(),
                ms: 12,
            }],
            slowest_ms: 12,
        }),
        json!({
            "cursor": "1795392000000-0",
            "revoked_at": rfc3339(at(1)),
            "grants": grants.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "credential": credential,
            "relying_parties": parties,
            "slowest_ms": 12u64,
        }),
    );
}

#[test]
fn reloads_and_authentication_failures_write_what_they_wrote() {
    let config_path = std::path::PathBuf::from("/etc/jitid/jitid.toml");
    let count: usize = 6;
    check(
        Event::CatalogueReloaded(CatalogueReloaded::Reloaded(Reloaded {
            file: config_path.display().to_string(),
            entitlements: 6,
        })),
        json!({ "file": config_path, "reloaded": true, "entitlements": count }),
    );
    let error = "invalid config".to_owned();
    check(
        Event::CatalogueReloaded(CatalogueReloaded::Refused(ReloadRefused {
            file: config_path.display().to_string(),
            error: error.clone(),
        })),
        json!({ "file": config_path, "reloaded": false, "error": error }),
    );
    check(
        Event::AuthenticationFailure(AuthenticationFailure {
            remote: "127.0.0.1".to_owned(),
            reason: "no client certificate".to_owned(),
            repeated: None,
            window_seconds: None,
        }),
        json!({
            "remote": "127.0.0.1",
            "reason": "no client certificate",
        }),
    );
    check(
        Event::AuthenticationFailure(AuthenticationFailure {
            remote: "127.0.0.1".to_owned(),
            reason: "no client certificate".to_owned(),
            repeated: Some(299),
            window_seconds: Some(60),
        }),
        json!({
            "remote": "127.0.0.1",
            "reason": "no client certificate",
            "repeated": 299,
            "window_seconds": 60,
        }),
    );
    let record = Record::new(
        Envelope {
            actor: SYSTEM.to_owned(),
            subject: None,
            grant: None,
            task: None,
            ..envelope()
        },
        &Event::ApprovalDenied(ApprovalDenied {
            reason: String::new(),
        }),
    );
    assert_eq!(record.kind, EventKind::ApprovalDenied);
    assert_eq!(record.actor, SYSTEM);
}

#[test]
fn a_trail_written_before_typed_events_reads_typed_and_writes_back_the_same() {
    let events: Vec<AuditEvent> = BEFORE_TYPED_EVENTS
        .lines()
        .map(|line| AuditEvent::from_line(line).unwrap())
        .collect();
    assert!(events.len() > 40);
    crate::audit::verify_chain(&Head::genesis(), &events).unwrap();
    let mut kinds = std::collections::HashSet::new();
    let mut head = Head::genesis();
    for (event, line) in events.iter().zip(BEFORE_TYPED_EVENTS.lines()) {
        let typed = event
            .event()
            .unwrap_or_else(|error| panic!("{error}: {line}"));
        assert_eq!(typed.kind(), event.kind);
        kinds.insert(event.kind);
        // Written again from its type, the event is the same line.
        let record = Record::new(
            Envelope {
                at: humantime::parse_rfc3339(&event.time).unwrap(),
                actor: event.actor.clone(),
                subject: event.subject.clone(),
                grant: event.grant.clone(),
                task: event.task.clone(),
            },
            &typed,
        );
        let (rewritten, rewritten_line) = AuditEvent::seal_with_line(record, &head);
        assert_eq!(rewritten_line, line);
        head = rewritten.head();
    }
    assert_eq!(kinds.len(), 11, "{kinds:?}");
    // Refusals: by actions alone and before policy.
    let refusals: Vec<Option<String>> = events
        .iter()
        .filter_map(|event| match event.event() {
            Ok(Event::Decision(Decision::Refused(refused))) => {
                Some(refused.entitlement().map(str::to_owned))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        refusals,
        [
            None,
            Some("prod-deploy".to_owned()),
            Some("prod-deploy".to_owned()),
            None
        ]
    );
}

#[test]
fn details_that_do_not_fit_are_an_error_and_extra_keys_are_ignored() {
    let sealed = |kind: EventKind, details: serde_json::Value| {
        AuditEvent::seal(
            Record {
                kind,
                details,
                ..Record::new(
                    envelope(),
                    &Event::ApprovalDenied(ApprovalDenied {
                        reason: String::new(),
                    }),
                )
            },
            &Head::genesis(),
        )
    };
    // A key missing, of the wrong type, an unknown name, or no object.
    for (kind, details, says) in [
        (
            EventKind::Revocation,
            json!({"target": "grant", "value": "g"}),
            "missing field",
        ),
        (
            EventKind::LivenessChecked,
            json!({"status": "valid", "reason": 7, "credential": null}),
            "invalid type",
        ),
        (
            EventKind::LivenessChecked,
            json!({"status": "alive", "reason": "", "credential": null}),
            "unknown variant `alive`",
        ),
        (
            EventKind::CredentialIssued,
            json!({"credential": "x509", "id": "01", "spiffe_id": "s", "expires_at": "tomorrow", "entitlement": "e", "actions": [], "break_glass": false}),
            "\"tomorrow\" is not an RFC 3339 time",
        ),
        (EventKind::Approval, json!("approved"), "invalid type"),
    ] {
        let error = sealed(kind, details).event().unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "audit event 1 ({kind}): details do not fit the kind: "
            )),
            "{message}"
        );
        assert!(message.contains(says), "{message}");
    }
    // A newer writer's extra key does not stop a reader.
    let denied = sealed(
        EventKind::ApprovalDenied,
        json!({"reason": "no", "approver_note": {"x": 1}}),
    );
    assert_eq!(
        denied.event().unwrap(),
        Event::ApprovalDenied(ApprovalDenied {
            reason: "no".to_owned()
        })
    );
}

#[test]
fn identity_events_write_their_fields_and_never_a_token() {
    check(
        Event::IdentityIssued(IdentityIssued {
            via: IssuedVia::Renewed,
            serial: "7f01".to_owned(),
            spiffe_id: "spiffe://example.org/ci/runner".to_owned(),
            not_after: at(86_400),
            renewed_from: Some("7f00".to_owned()),
            join_token: None,
        }),
        json!({
            "via": "renewed",
            "serial": "7f01",
            "spiffe_id": "spiffe://example.org/ci/runner",
            "not_after": rfc3339(at(86_400)),
            "renewed_from": "7f00",
        }),
    );
    check(
        Event::IdentityIssued(IdentityIssued {
            via: IssuedVia::Bootstrapped,
            serial: "7f02".to_owned(),
            spiffe_id: "spiffe://example.org/ci/runner".to_owned(),
            not_after: at(86_400),
            renewed_from: None,
            join_token: Some("0123456789ab".to_owned()),
        }),
        json!({
            "via": "bootstrapped",
            "serial": "7f02",
            "spiffe_id": "spiffe://example.org/ci/runner",
            "not_after": rfc3339(at(86_400)),
            "join_token": "0123456789ab",
        }),
    );
    check(
        Event::IdentityRevoked(IdentityRevoked {
            target: IdentityTargetKind::Serial,
            value: "7f01".to_owned(),
            spiffe_id: None,
            reason: "lost laptop".to_owned(),
            grants_ended: Vec::new(),
        }),
        json!({
            "target": "serial",
            "value": "7f01",
            "spiffe_id": null,
            "reason": "lost laptop",
            "grants_ended": [],
        }),
    );
    check(
        Event::JoinTokenCreated(JoinTokenCreated {
            token: "0123456789ab".to_owned(),
            spiffe_id: "spiffe://example.org/hosts/build-7".to_owned(),
            expires_at: at(600),
        }),
        json!({
            "token": "0123456789ab",
            "spiffe_id": "spiffe://example.org/hosts/build-7",
            "expires_at": rfc3339(at(600)),
        }),
    );
    check(
        Event::JoinTokenUsed(JoinTokenUsed {
            token: "0123456789ab".to_owned(),
            created_by: "spiffe://example.org/ops/admin".to_owned(),
            serial: "7f02".to_owned(),
            source: Some("127.0.0.1".to_owned()),
        }),
        json!({
            "token": "0123456789ab",
            "created_by": "spiffe://example.org/ops/admin",
            "serial": "7f02",
            "source": "127.0.0.1",
        }),
    );
}

#[test]
fn names_are_spelt_once() {
    for kind in EventKind::ALL {
        assert_eq!(EventKind::parse(kind.as_str()), Some(*kind));
        assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
    }
    assert_eq!(EventKind::ALL.len(), 18);
    assert_eq!(EventKind::parse("nope"), None);
    for status in LivenessStatus::ALL {
        let read: LivenessStatus = serde_json::from_value(json!(status.as_str())).unwrap();
        assert_eq!(read, *status);
    }
    assert_eq!(Target::Credential.to_string(), "credential");
    assert_eq!(Rpc::IssueJwtSvid.as_str(), "IssueJwtSvid");
}

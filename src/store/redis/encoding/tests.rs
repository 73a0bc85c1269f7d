//! Unit tests of the stored formats: every record reads back as written,
//! grant records are canonical, records of older versions still read, and
//! damaged ones are reported rather than guessed at.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::*;
use crate::grant::{Ancestor, ApprovalRecord, Delegation, Shard};

fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

fn id(text: &str) -> SpiffeId {
    SpiffeId::new(text).unwrap()
}

/// A pending grant with every optional part empty.
fn grant() -> Grant {
    let subject = id("spiffe://example.org/ci/runner");
    Grant {
        id: GrantId::generate(Shard::of(&subject)),
        subject,
        entitlement: "prod-deploy".to_owned(),
        actions: vec![Action::new("deploy:prod").unwrap()],
        task_id: TaskId::new("task-1").unwrap(),
        parent: None,
        justification: String::new(),
        ticket: String::new(),
        created_at: at(1_000),
        expires_at: at(4_000_000_000_000),
        state: GrantState::Pending,
        end_reason: None,
        epoch: Epoch::from_string("0123456789abcdef".to_owned()),
        break_glass: false,
        per_task: false,
        ttl: Duration::from_secs(300),
        approvals: Vec::new(),
        decision: String::new(),
        delegation: None,
    }
}

/// A grant with every part filled in, and two credentials.
fn full() -> (Grant, Vec<Credential>) {
    let mut grant = grant();
    let parent = GrantId::generate(grant.id.shard());
    grant.state = GrantState::Revoked;
    grant.actions.push(Action::new("read").unwrap());
    grant.parent = Some(parent);
    grant.justification = "release 1.2".to_owned();
    grant.ticket = "CHG-42".to_owned();
    grant.end_reason = Some("revoked by spiffe://example.org/admin: oops".to_owned());
    grant.break_glass = true;
    grant.per_task = true;
    grant.decision = r#"{"outcome":"allowed"}"#.to_owned();
    grant.approvals = vec![ApprovalRecord {
        approver: id("spiffe://example.org/alice"),
        at: at(2_000),
        comment: "looks good".to_owned(),
    }];
    grant.delegation = Some(Delegation {
        spiffe_id: id("spiffe://example.org/ci/runner/task-1"),
        chain: vec![Ancestor {
            grant_id: parent,
            spiffe_id: id("spiffe://example.org/ci/runner"),
        }],
    });
    let (x509, _) = CredentialId::new_x509(grant.id);
    let credentials = vec![
        Credential {
            id: x509,
            grant_id: grant.id,
            expires_at: at(3_000_000),
            revoked: false,
        },
        Credential {
            id: CredentialId::new_jwt(grant.id),
            grant_id: grant.id,
            expires_at: at(3_000_001),
            revoked: true,
        },
    ];
    (grant, credentials)
}

/// Encodes, decodes, and checks both the values and the canonical form.
fn check_round_trip(grant: &Grant, credentials: &[Credential]) {
    let text = encode_grant(grant, credentials);
    let (decoded, decoded_credentials) = decode_grant(grant.id, "key", &text, at(0))
        .unwrap()
        .unwrap();
    assert_eq!(&decoded, grant);
    assert_eq!(decoded_credentials, credentials);
    assert_eq!(encode_grant(&decoded, &decoded_credentials), text);
}

#[test]
fn grants_read_back_as_written() {
    check_round_trip(&grant(), &[]);
    let (full, credentials) = full();
    check_round_trip(&full, &credentials);
    for state in [
        GrantState::Pending,
        GrantState::Denied,
        GrantState::Active,
        GrantState::Completed,
        GrantState::Revoked,
    ] {
        let grant = Grant { state, ..grant() };
        check_round_trip(&grant, &[]);
        assert!(encode_grant(&grant, &[]).starts_with(state_code(state)));
    }
}

#[test]
fn the_grant_layout_is_stable() {
    let grant = grant();
    let text = encode_grant(&grant, &[]);
    let expected = [
        "p",
        "task-1",
        "spiffe://example.org/ci/runner",
        "prod-deploy",
        "deploy:prod",
        "",
        "1000",
        "4000000000000",
        "0123456789abcdef",
        "",
        "",
        "",
        "300000",
        "",
    ]
    .join("\u{1f}");
    assert_eq!(text, expected);
}

#[test]
fn free_text_cannot_forge_fields_or_sections() {
    let mut grant = grant();
    grant.justification = "a\u{1f}b\u{1e}ec".to_owned();
    let text = encode_grant(&grant, &[]);
    let (decoded, _) = decode_grant(grant.id, "key", &text, at(0))
        .unwrap()
        .unwrap();
    assert_eq!(decoded.justification, "a b ec");
    assert_eq!(decoded.end_reason, None);
}

#[test]
fn records_from_before_approvals_read_as_active_grants() {
    let grant = grant();
    // 11 fields: no flags, TTL or decision.
    let legacy = format!(
        "a\u{1f}task-1\u{1f}{}\u{1f}prod-deploy\u{1f}deploy:prod\u{1f}\u{1f}1000\u{1f}61000\u{1f}ep\u{1f}\u{1f}",
        grant.subject
    );
    let (decoded, credentials) = decode_grant(grant.id, "key", &legacy, at(0))
        .unwrap()
        .unwrap();
    assert_eq!(decoded.state, GrantState::Active);
    assert_eq!(decoded.ttl, Duration::from_secs(60));
    assert!(!decoded.break_glass && decoded.decision.is_empty());
    assert!(credentials.is_empty());
}

#[test]
fn expired_grants_read_as_absent() {
    let grant = grant();
    let text = encode_grant(&grant, &[]);
    assert_eq!(
        decode_grant(grant.id, "key", &text, grant.expires_at).unwrap(),
        None
    );
}

#[test]
fn damaged_grants_are_corrupt() {
    let grant = grant();
    let good = encode_grant(&grant, &[]);
    for (bad, why) in [
        ("p\u{1f}too\u{1f}few".to_owned(), "wrong number of fields"),
        (good.replacen('p', "z", 1), "bad state"),
        (good.replace("1000", "soon"), "time is not a number"),
        (format!("{good}\u{1e}"), "empty section"),
        (format!("{good}\u{1e}x12:1"), "bad credential"),
        (format!("{good}\u{1e}gnot-an-id"), "bad delegation"),
        (
            format!("{good}\u{1e}pspiffe://example.org/a 1"),
            "bad approval",
        ),
    ] {
        match decode_grant(grant.id, "the-key", &bad, at(0)) {
            Err(StoreError::Corrupt { key, message }) => {
                assert_eq!(key, "the-key");
                assert!(message.contains(why), "{bad:?}: {message}");
            }
            other => panic!("{bad:?} decoded as {other:?}"),
        }
    }
}

#[test]
fn credential_sections_keep_only_what_the_grant_id_does_not_say() {
    let (grant, credentials) = full();
    let x509 = credential_section(&credentials[0].id);
    assert!(x509.starts_with("\u{1e}x") && x509.ends_with(':'));
    assert_eq!(x509.len(), 1 + 1 + 8 + 1);
    let jwt = credential_section(&credentials[1].id);
    assert!(jwt.starts_with("\u{1e}j") && jwt.ends_with(':'));
    assert!(!jwt.contains(&grant.id.simple()));
}

#[test]
fn revocation_events_read_back_as_written() {
    let (grant, credentials) = full();
    let events = [
        RevocationEvent {
            epoch: grant.epoch.clone(),
            at: at(5_000),
            grants: vec![grant.id, grant.parent.unwrap()],
            credential: Some(credentials[0].id.clone()),
            task: Some(grant.task_id.clone()),
            reason: "compromised".to_owned(),
        },
        RevocationEvent {
            epoch: grant.epoch,
            at: at(6_000),
            grants: Vec::new(),
            credential: None,
            task: None,
            reason: String::new(),
        },
    ];
    for event in events {
        let fields: HashMap<String, String> = encode_event(&event)
            .into_iter()
            .map(|(field, value)| (field.to_owned(), value))
            .collect();
        assert_eq!(decode_event(&fields), Some(event));
    }
    assert_eq!(decode_event(&HashMap::new()), None);
}

#[test]
fn reviews_read_back_as_written() {
    let grant = grant();
    let mut review = Review {
        grant_id: grant.id,
        subject: grant.subject.clone(),
        entitlement: grant.entitlement.clone(),
        actions: grant.actions.clone(),
        task_id: grant.task_id,
        justification: "outage".to_owned(),
        ticket: "INC-7".to_owned(),
        opened_at: at(1_000),
        expires_at: at(2_000),
        ack: None,
    };
    assert_eq!(decode_review(&encode_review(&review)), Some(review.clone()));
    review.ack = Some(ReviewAck {
        by: id("spiffe://example.org/auditor"),
        at: at(3_000),
        comment: "fine".to_owned(),
    });
    assert_eq!(decode_review(&encode_review(&review)), Some(review));
    assert_eq!(decode_review("{}"), None);
    assert_eq!(decode_review("not json"), None);
}

#[test]
fn relying_parties_read_back_as_written() {
    let party = RelyingParty {
        name: "payments".to_owned(),
        spiffe_id: id("spiffe://example.org/payments"),
        registered_at: at(1_000),
        last_seen: at(2_000),
        cursor: "1700000000000-0".to_owned(),
    };
    let text = encode_party(&party, Duration::from_secs(60));
    assert_eq!(
        text,
        "spiffe://example.org/payments 1000 2000 62000 1700000000000-0"
    );
    assert_eq!(decode_party("payments", &text), Some((party, 62_000)));
    assert_eq!(decode_party("payments", "not-an-id 1 2 3 c"), None);
}

#[test]
fn times_are_unix_milliseconds() {
    assert_eq!(millis(at(1_234)), 1_234);
    assert_eq!(millis(SystemTime::UNIX_EPOCH - Duration::from_secs(1)), 0);
    assert_eq!(millis_of(Duration::ZERO), 1);
    assert_eq!(millis_of(Duration::from_secs(2)), 2_000);
}

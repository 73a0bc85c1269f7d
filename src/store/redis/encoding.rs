//! The formats of what the Redis store keeps: a grant and its credentials
//! as one string, revocation events as stream fields, reviews as JSON and
//! relying parties as one line each. Existing data must keep reading: a
//! change here is a change of the stored format.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::grant::{
    Action, Ancestor, ApprovalRecord, Credential, CredentialId, Delegation, Epoch, Grant, GrantId,
    GrantState, TaskId,
};
use crate::spiffe_id::SpiffeId;
use crate::store::{RelyingParty, Review, ReviewAck, RevocationEvent, StoreError};

/// Separates a grant record's fields.
const FIELD: char = '\u{1f}';
/// Opens a section (a credential, or why the grant ended).
const SECTION: char = '\u{1e}';

/// A grant and its credentials as one compact string (one key, a few
/// hundred bytes; see docs/benchmarks.md):
/// `<state> FIELD task FIELD subject FIELD entitlement FIELD actions FIELD
/// parent FIELD created-ms FIELD expires-ms FIELD epoch FIELD ticket FIELD
/// justification FIELD flags FIELD ttl-ms FIELD decision`
/// then `SECTION p <approver> <ms>` per approval, `SECTION <credential>`
/// per credential and, once ended, `SECTION e <reason>`. Free text has the
/// two separators replaced. The encoding is canonical: decoding and
/// encoding again gives the same string, which `update_pending` relies on.
pub(super) fn encode_grant(grant: &Grant, credentials: &[Credential]) -> String {
    let actions: Vec<&str> = grant.actions.iter().map(Action::as_str).collect();
    let fields = [
        grant.task_id.to_string(),
        grant.subject.to_string(),
        grant.entitlement.clone(),
        actions.join(" "),
        grant.parent.map(|p| p.simple()).unwrap_or_default(),
        millis(grant.created_at).to_string(),
        millis(grant.expires_at).to_string(),
        grant.epoch.to_string(),
        free_text(&grant.ticket),
        free_text(&grant.justification),
        format!(
            "{}{}",
            if grant.break_glass { "b" } else { "" },
            if grant.per_task { "t" } else { "" }
        ),
        u64::try_from(grant.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .to_string(),
        free_text(&grant.decision),
    ];
    let mut record = format!(
        "{}{FIELD}{}",
        state_code(grant.state),
        fields.join(&FIELD.to_string())
    );
    for approval in &grant.approvals {
        record.push_str(&format!(
            "{SECTION}p{} {} {}",
            approval.approver,
            millis(approval.at),
            free_text(&approval.comment)
        ));
    }
    for credential in credentials {
        record.push_str(&credential_section(&credential.id));
        record.push_str(&millis(credential.expires_at).to_string());
        if credential.revoked {
            record.push_str(":r");
        }
    }
    if let Some(delegation) = &grant.delegation {
        record.push_str(&format!("{SECTION}g{}", delegation.spiffe_id));
        for ancestor in &delegation.chain {
            record.push_str(&format!(
                " {}={}",
                ancestor.grant_id.simple(),
                ancestor.spiffe_id
            ));
        }
    }
    if let Some(reason) = &grant.end_reason {
        record.push_str(&format!("{SECTION}e{}", free_text(reason)));
    }
    record
}

/// The `g` section: `<spiffe id>( <ancestor grant>=<its spiffe id>)*`.
fn decode_delegation(text: &str) -> Option<Delegation> {
    let mut parts = text.split(' ');
    let spiffe_id = SpiffeId::new(parts.next()?).ok()?;
    let chain = parts
        .map(|part| {
            let (grant, id) = part.split_once('=')?;
            Some(Ancestor {
                grant_id: GrantId::parse(grant)?,
                spiffe_id: SpiffeId::new(id).ok()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Delegation { spiffe_id, chain })
}

pub(super) fn free_text(text: &str) -> String {
    text.replace([FIELD, SECTION], " ")
}

pub(super) fn decode_grant(
    id: GrantId,
    key: &str,
    record: &str,
    now: SystemTime,
) -> Result<Option<(Grant, Vec<Credential>)>, StoreError> {
    let corrupt = |message: &str| StoreError::Corrupt {
        key: key.to_owned(),
        message: message.to_owned(),
    };
    let mut sections = record.split(SECTION);
    let core = sections.next().unwrap_or_default();
    let mut parts: Vec<&str> = core.splitn(15, FIELD).collect();
    // Records written before approvals (11 fields) read as active grants
    // with no flags, no decision, and their whole life as their TTL.
    let legacy_ttl;
    if parts.len() == 11 {
        let created: u64 = parts[6]
            .parse()
            .map_err(|_| corrupt("time is not a number"))?;
        let expires: u64 = parts[7]
            .parse()
            .map_err(|_| corrupt("time is not a number"))?;
        legacy_ttl = expires.saturating_sub(created).to_string();
        parts.extend(["", legacy_ttl.as_str(), ""]);
    }
    let [
        state,
        task,
        subject,
        entitlement,
        actions,
        parent,
        created,
        expires,
        epoch,
        ticket,
        justification,
        flags,
        ttl,
        decision,
    ] = parts.as_slice()
    else {
        return Err(corrupt("record has the wrong number of fields"));
    };
    let time = |text: &str| -> Result<SystemTime, StoreError> {
        let value: u64 = text.parse().map_err(|_| corrupt("time is not a number"))?;
        Ok(SystemTime::UNIX_EPOCH + Duration::from_millis(value))
    };
    let expires_at = time(expires)?;
    if expires_at <= now {
        return Ok(None);
    }
    let state = match *state {
        "p" => GrantState::Pending,
        "d" => GrantState::Denied,
        "a" => GrantState::Active,
        "c" => GrantState::Completed,
        "r" => GrantState::Revoked,
        _ => return Err(corrupt("bad state")),
    };
    let parent = match *parent {
        "" => None,
        text => Some(GrantId::parse(text).ok_or_else(|| corrupt("bad parent"))?),
    };
    let mut end_reason = None;
    let mut credentials = Vec::new();
    let mut approvals = Vec::new();
    let mut delegation = None;
    for section in sections {
        match section.split_at_checked(1) {
            Some(("e", reason)) => end_reason = Some(reason.to_owned()),
            Some(("g", text)) => {
                delegation =
                    Some(decode_delegation(text).ok_or_else(|| corrupt("bad delegation"))?);
            }
            Some(("p", approval)) => {
                let mut parts = approval.splitn(3, ' ');
                let (Some(approver), Some(at), Some(comment)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(corrupt("bad approval"));
                };
                approvals.push(ApprovalRecord {
                    approver: SpiffeId::new(approver).map_err(|_| corrupt("bad approver"))?,
                    at: time(at)?,
                    comment: comment.to_owned(),
                });
            }
            Some((kind, rest)) => credentials
                .push(decode_credential(id, kind, rest).ok_or_else(|| corrupt("bad credential"))?),
            None => return Err(corrupt("empty section")),
        }
    }
    let grant = Grant {
        id,
        subject: SpiffeId::new(subject).map_err(|_| corrupt("bad subject"))?,
        entitlement: (*entitlement).to_owned(),
        actions: actions
            .split(' ')
            .map(Action::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| corrupt("bad action"))?,
        task_id: TaskId::new(task).map_err(|_| corrupt("bad task"))?,
        parent,
        justification: (*justification).to_owned(),
        ticket: (*ticket).to_owned(),
        created_at: time(created)?,
        expires_at,
        state,
        end_reason,
        epoch: Epoch::from_string((*epoch).to_owned()),
        break_glass: flags.contains('b'),
        per_task: flags.contains('t'),
        ttl: Duration::from_millis(ttl.parse().map_err(|_| corrupt("bad ttl"))?),
        approvals,
        decision: (*decision).to_owned(),
        delegation,
    };
    Ok(Some((grant, credentials)))
}

pub(super) fn encode_event(event: &RevocationEvent) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("ep", event.epoch.to_string()),
        ("at", millis(event.at).to_string()),
        ("r", event.reason.clone()),
    ];
    if !event.grants.is_empty() {
        let grants: Vec<String> = event.grants.iter().map(ToString::to_string).collect();
        fields.push(("g", grants.join(" ")));
    }
    if let Some(credential) = &event.credential {
        fields.push(("c", credential.to_string()));
    }
    if let Some(task) = &event.task {
        fields.push(("t", task.to_string()));
    }
    fields
}

pub(super) fn decode_event(fields: &HashMap<String, String>) -> Option<RevocationEvent> {
    let at: u64 = fields.get("at")?.parse().ok()?;
    Some(RevocationEvent {
        epoch: Epoch::from_string(fields.get("ep")?.clone()),
        at: SystemTime::UNIX_EPOCH + Duration::from_millis(at),
        grants: fields
            .get("g")
            .map(|ids| ids.split(' ').filter_map(GrantId::parse).collect())
            .unwrap_or_default(),
        credential: fields.get("c").and_then(|id| CredentialId::parse(id)),
        task: fields.get("t").and_then(|task| TaskId::new(task).ok()),
        reason: fields.get("r").cloned().unwrap_or_default(),
    })
}

/// The section of a credential up to its expiry: `SECTION`, `x` or `j`,
/// the random part of its id (the grant id it embeds is the record's own),
/// `:`.
pub(super) fn credential_section(id: &CredentialId) -> String {
    match id {
        CredentialId::X509Serial(serial) => format!(
            "{SECTION}x{}{}:",
            serial.get(..2).unwrap_or_default(),
            serial.get(34..).unwrap_or_default()
        ),
        CredentialId::JwtId(jti) => format!("{SECTION}j{}:", jti.get(33..).unwrap_or_default()),
    }
}

fn decode_credential(grant_id: GrantId, kind: &str, rest: &str) -> Option<Credential> {
    let grant = grant_id.simple();
    let (random, value) = rest.split_once(':')?;
    let id = match kind {
        "x" if random.len() == 8 => {
            CredentialId::X509Serial(format!("{}{grant}{}", &random[..2], &random[2..]))
        }
        "j" => CredentialId::JwtId(format!("{grant}.{random}")),
        _ => return None,
    };
    let (expiry, revoked) = match value.strip_suffix(":r") {
        Some(expiry) => (expiry, true),
        None => (value, false),
    };
    let expiry: u64 = expiry.parse().ok()?;
    Some(Credential {
        id,
        grant_id,
        expires_at: SystemTime::UNIX_EPOCH + Duration::from_millis(expiry),
        revoked,
    })
}

pub(super) fn state_code(state: GrantState) -> &'static str {
    match state {
        GrantState::Pending => "p",
        GrantState::Denied => "d",
        GrantState::Active => "a",
        GrantState::Completed => "c",
        GrantState::Revoked => "r",
    }
}

pub(super) fn encode_review(review: &Review) -> String {
    let mut value = serde_json::json!({
        "grant": review.grant_id.simple(),
        "subject": review.subject.as_str(),
        "entitlement": review.entitlement,
        "actions": review.actions.iter().map(Action::as_str).collect::<Vec<_>>(),
        "task": review.task_id.as_str(),
        "justification": review.justification,
        "ticket": review.ticket,
        "opened": millis(review.opened_at),
        "expires": millis(review.expires_at),
    });
    if let Some(ack) = &review.ack {
        value["ack"] = serde_json::json!({
            "by": ack.by.as_str(),
            "at": millis(ack.at),
            "comment": ack.comment,
        });
    }
    value.to_string()
}

pub(super) fn decode_review(text: &str) -> Option<Review> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let string = |value: &serde_json::Value, key: &str| value.get(key)?.as_str().map(str::to_owned);
    let time = |value: &serde_json::Value, key: &str| {
        Some(SystemTime::UNIX_EPOCH + Duration::from_millis(value.get(key)?.as_u64()?))
    };
    let ack = match value.get("ack") {
        Some(ack) => Some(ReviewAck {
            by: SpiffeId::new(&string(ack, "by")?).ok()?,
            at: time(ack, "at")?,
            comment: string(ack, "comment")?,
        }),
        None => None,
    };
    Some(Review {
        grant_id: GrantId::parse(&string(&value, "grant")?)?,
        subject: SpiffeId::new(&string(&value, "subject")?).ok()?,
        entitlement: string(&value, "entitlement")?,
        actions: value
            .get("actions")?
            .as_array()?
            .iter()
            .map(|action| Action::new(action.as_str()?).ok())
            .collect::<Option<Vec<_>>>()?,
        task_id: TaskId::new(&string(&value, "task")?).ok()?,
        justification: string(&value, "justification")?,
        ticket: string(&value, "ticket")?,
        opened_at: time(&value, "opened")?,
        expires_at: time(&value, "expires")?,
        ack,
    })
}

pub(super) fn millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(super) fn millis_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A relying party record, kept until `keep_for` after it was last seen:
/// `<spiffe id> <registered ms> <last seen ms> <until ms> <cursor>`.
pub(super) fn encode_party(party: &RelyingParty, keep_for: Duration) -> String {
    format!(
        "{} {} {} {} {}",
        party.spiffe_id,
        millis(party.registered_at),
        millis(party.last_seen),
        millis(party.last_seen + keep_for),
        party.cursor
    )
}

/// A relying party record: `<spiffe id> <registered ms> <last seen ms>
/// <until ms> <cursor>`; returns it with its until.
pub(super) fn decode_party(name: &str, value: &str) -> Option<(RelyingParty, u64)> {
    let mut parts = value.splitn(5, ' ');
    let spiffe_id = SpiffeId::new(parts.next()?).ok()?;
    let mut time = || -> Option<u64> { parts.next()?.parse().ok() };
    let (registered, seen, until) = (time()?, time()?, time()?);
    let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    Some((
        RelyingParty {
            name: name.to_owned(),
            spiffe_id,
            registered_at: at(registered),
            last_seen: at(seen),
            cursor: parts.next().unwrap_or_default().to_owned(),
        },
        until,
    ))
}

#[cfg(test)]
mod tests;

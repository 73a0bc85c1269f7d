//! Unit tests of the catalogue and of `evaluate`, through one data-driven
//! `check` per concern.

use std::collections::HashMap;

use super::*;

fn catalogue() -> Catalogue {
    let raw: Vec<RawEntitlement> = toml::from_str::<toml::Table>(
        r#"
[[e]]
name = "ci-publish"
actions = ["publish:artifacts", "read:source"]
requesters = ["spiffe://example.org/ci/*"]
max_ttl = "10m"
[[e]]
name = "deploy"
actions = ["deploy:prod/payments", "read:source"]
requesters = ["spiffe://example.org/svc/deployer"]
default_ttl = "2m"
max_ttl = "5m"
"#,
    )
    .unwrap()["e"]
        .clone()
        .try_into()
        .unwrap();
    load(raw).unwrap()
}

fn load(raw: Vec<RawEntitlement>) -> Result<Catalogue, CatalogueError> {
    let td = TrustDomain::new("example.org").unwrap();
    let groups = HashMap::from([(
        "release".to_owned(),
        vec![
            "spiffe://example.org/ci/*".to_owned(),
            "spiffe://example.org/svc/deployer".to_owned(),
        ],
    )]);
    Catalogue::from_raw(raw, &groups, BTreeMap::new(), &td, &TtlLimits::default())
}

fn entry(text: &str) -> RawEntitlement {
    toml::from_str(&format!(
        "name = \"e1\"\nactions = [\"a\"]\nrequesters = [\"spiffe://example.org/x\"]\n{text}"
    ))
    .unwrap()
}

fn actions(list: &[&str]) -> Vec<Action> {
    list.iter().map(|a| Action::new(a).unwrap()).collect()
}

/// Runs one request and renders the outcome as text, so the table of
/// cases below survives changes to the types.
fn check(caller: &str, entitlement: Option<&str>, acts: &[&str], ttl: Option<u64>, expected: &str) {
    let caller = SpiffeId::new(caller).unwrap();
    let acts = actions(acts);
    let request = AccessRequest {
        entitlement,
        actions: &acts,
        ttl: ttl.map(Duration::from_secs),
        justification: "",
        ticket: "",
        audiences: None,
        break_glass: false,
        live_grants: &[],
    };
    let got = match evaluate(
        &catalogue(),
        &caller,
        &request,
        &RequestContext::default(),
        SystemTime::UNIX_EPOCH,
    )
    .result
    {
        Ok(decision) => format!(
            "allow {} [{}] {}s",
            decision.entitlement,
            decision
                .actions
                .iter()
                .map(Action::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            decision.ttl.as_secs()
        ),
        Err(denial) => format!("deny {denial}"),
    };
    assert_eq!(got, expected);
}

const CI: &str = "spiffe://example.org/ci/runner-7";
const DEPLOYER: &str = "spiffe://example.org/svc/deployer";

#[test]
fn decisions() {
    check(
        CI,
        Some("ci-publish"),
        &[],
        None,
        "allow ci-publish [publish:artifacts read:source] 300s",
    );
    check(
        CI,
        Some("ci-publish"),
        &["read:source", "read:source"],
        Some(60),
        "allow ci-publish [read:source] 60s",
    );
    check(
        CI,
        None,
        &["read:source"],
        None,
        "allow ci-publish [read:source] 300s",
    );
    check(
        DEPLOYER,
        None,
        &["read:source"],
        None,
        "allow deploy [read:source] 120s",
    );
    check(
        CI,
        Some("ci-publish"),
        &[],
        Some(600),
        "allow ci-publish [publish:artifacts read:source] 600s",
    );
    check(
        CI,
        Some("ci-publish"),
        &[],
        Some(0),
        "allow ci-publish [publish:artifacts read:source] 300s",
    );
}

#[test]
fn denials() {
    check(
        CI,
        None,
        &[],
        None,
        "deny request names neither an entitlement nor actions",
    );
    check(
        CI,
        Some("nope"),
        &[],
        None,
        "deny unknown entitlement \"nope\"; you may request: ci-publish",
    );
    check(
        CI,
        Some("deploy"),
        &[],
        None,
        "deny spiffe://example.org/ci/runner-7 may not request entitlement \"deploy\"",
    );
    check(
        CI,
        Some("ci-publish"),
        &["read:source", "deploy:prod/payments"],
        None,
        "deny actions [\"deploy:prod/payments\"] are not in entitlement \"ci-publish\"",
    );
    check(
        CI,
        None,
        &["deploy:prod/payments"],
        None,
        "deny no entitlement that spiffe://example.org/ci/runner-7 may request covers actions [\"deploy:prod/payments\"]",
    );
    check(
        CI,
        Some("ci-publish"),
        &[],
        Some(601),
        "deny ttl 10m 1s exceeds the maximum of 10m for entitlement \"ci-publish\"",
    );
    // A prefix pattern does not match the prefix itself.
    check(
        "spiffe://example.org/ci",
        Some("ci-publish"),
        &[],
        None,
        "deny spiffe://example.org/ci may not request entitlement \"ci-publish\"",
    );
    check(
        "spiffe://other.org/ci/x",
        Some("ci-publish"),
        &[],
        None,
        "deny spiffe://other.org/ci/x may not request entitlement \"ci-publish\"",
    );
}

#[test]
fn catalogue_errors_name_entry_and_field() {
    let error = |extra: &str| load(vec![entry(extra)]).unwrap_err().to_string();
    assert_eq!(
        error("max_ttl = \"2h\""),
        "entitlement \"e1\": `max_ttl`: 2h is above the ceiling of 30m (limits.max_ttl_by_risk, medium risk)"
    );
    assert_eq!(
        error("risk = \"critical\"\nmax_ttl = \"10m\""),
        "entitlement \"e1\": `max_ttl`: 10m is above the ceiling of 5m (limits.max_ttl_by_risk, critical risk)"
    );
    assert_eq!(
        error("default_ttl = \"20m\""),
        "entitlement \"e1\": `default_ttl`: must be between 1s and max_ttl (15m)"
    );
    assert_eq!(
        error("max_active = 0"),
        "entitlement \"e1\": `max_active`: must be at least 1"
    );
    assert_eq!(
        error("audiences = []"),
        "entitlement \"e1\": `audiences`: needs at least one non-empty audience"
    );
    assert_eq!(
        error("risk = \"critical\""),
        "entitlement \"e1\": `approvers`: approval needs approvers (a critical risk entitlement needs approval unless it says approval = \"auto\")"
    );
    assert_eq!(
        error("approvers = [\"group:release\"]\nmin_approvals = 0"),
        "entitlement \"e1\": `min_approvals`: must be between 1 and 10"
    );
    assert_eq!(
        error("approval = \"auto\"\napprovers = [\"group:release\"]"),
        "entitlement \"e1\": `approvers`: is set, but approval = \"auto\" needs no approvers"
    );
    assert_eq!(
        error("break_glass = { max_ttl = \"1m\" }"),
        "entitlement \"e1\": `break_glass.reviewers`: needs at least one reviewer: someone must review every use"
    );
    assert_eq!(
        error("break_glass = { max_ttl = \"1h\", reviewers = [\"group:release\"] }"),
        "entitlement \"e1\": `break_glass.max_ttl`: must be between 1s and max_ttl (15m)"
    );
    assert!(
        error("conditions = \"permit (principal, action, resource) when { context.x \"")
            .starts_with("entitlement \"e1\": `conditions`: not valid Cedar: "),
    );
    assert!(
        error("conditions = \"forbid (principal, action, resource) when { context.risk == \\\"low\\\" };\"")
            .starts_with("entitlement \"e1\": `conditions`: has no permit policy"),
    );
    assert_eq!(
        error(
            "conditions = \"permit (principal, action, resource) when { context.windows.nightly };\""
        ),
        "entitlement \"e1\": `conditions`: names window \"nightly\", which is not in [windows]"
    );
    assert_eq!(
        error("min_approvals = 2"),
        "entitlement \"e1\": `min_approvals`: is set, but grants of this entitlement need no approval (name approvers)"
    );
    let raw: RawEntitlement = toml::from_str(
        "name = \"e1\"\nactions = [\"a b\"]\nrequesters = [\"spiffe://other.org/x\"]",
    )
    .unwrap();
    assert_eq!(
        load(vec![raw]).unwrap_err().to_string(),
        "entitlement \"e1\": `actions`: \"a b\" contains ' ', which is not allowed"
    );
    let raw: RawEntitlement =
        toml::from_str("name = \"e1\"\nactions = [\"a\"]\nrequesters = [\"group:nobody\"]")
            .unwrap();
    assert_eq!(
        load(vec![raw]).unwrap_err().to_string(),
        "entitlement \"e1\": `requesters`: \"group:nobody\" names no group in [groups]"
    );
}

#[test]
fn risk_sets_the_default_ttls() {
    for (risk, default_ttl, max_ttl) in [
        ("low", 600, 1800),
        ("medium", 300, 900),
        ("high", 300, 600),
        ("critical", 120, 300),
    ] {
        let catalogue = load(vec![entry(&format!(
            "risk = \"{risk}\"\napproval = \"auto\""
        ))])
        .unwrap();
        let entitlement = catalogue.entitlement("e1").unwrap();
        assert_eq!(entitlement.default_ttl.as_secs(), default_ttl, "{risk}");
        assert_eq!(entitlement.max_ttl.as_secs(), max_ttl, "{risk}");
    }
}

/// A request for `e1` (configured by `extra`) by `spiffe://example.org/x`.
fn decide<'a>(
    extra: &str,
    request: impl FnOnce(&mut AccessRequest<'a>),
) -> Result<Decision, Denial> {
    let catalogue = load(vec![entry(extra)]).unwrap();
    let caller = SpiffeId::new("spiffe://example.org/x").unwrap();
    let mut access = AccessRequest {
        entitlement: Some("e1"),
        actions: &[],
        ttl: None,
        justification: "",
        ticket: "",
        audiences: None,
        break_glass: false,
        live_grants: &[],
    };
    request(&mut access);
    evaluate(
        &catalogue,
        &caller,
        &access,
        &RequestContext::default(),
        SystemTime::UNIX_EPOCH,
    )
    .result
}

#[test]
fn requirements_audiences_identity() {
    let require = "require = [\"justification\", \"ticket\"]";
    assert_eq!(
        decide(require, |_| {}).unwrap_err().to_string(),
        "entitlement \"e1\" requires a justification"
    );
    assert_eq!(
        decide(require, |r| r.justification = "hotfix")
            .unwrap_err()
            .to_string(),
        "entitlement \"e1\" requires a ticket"
    );
    assert!(
        decide(require, |r| {
            r.justification = "hotfix";
            r.ticket = "CHG-1";
        })
        .is_ok()
    );

    let audiences = ["kb.example.org".to_owned(), "x".to_owned()];
    let allowed = "audiences = [\"kb.example.org\"]";
    assert_eq!(
        decide(allowed, |r| r.audiences = Some(&audiences))
            .unwrap_err()
            .to_string(),
        "audience \"x\" is not allowed for entitlement \"e1\""
    );
    assert!(decide(allowed, |r| r.audiences = Some(&audiences[..1])).is_ok());
    assert!(
        decide(allowed, |_| {}).is_ok(),
        "X.509 requests name no audience"
    );

    assert_eq!(decide("", |_| {}).unwrap().identity, IdentityMode::Workload);
    assert_eq!(
        decide("identity = \"per-task\"", |_| {}).unwrap().identity,
        IdentityMode::PerTask
    );
}

#[test]
fn max_active_counts_the_callers_active_grants_of_the_entitlement() {
    let caller = SpiffeId::new("spiffe://example.org/x").unwrap();
    let grant = |entitlement: &str, state| Grant {
        id: crate::grant::GrantId::generate(crate::grant::Shard::of(&caller)),
        subject: caller.clone(),
        entitlement: entitlement.to_owned(),
        actions: vec![Action::new("a").unwrap()],
        task_id: crate::grant::TaskId::new("t").unwrap(),
        parent: None,
        justification: String::new(),
        ticket: String::new(),
        created_at: std::time::SystemTime::UNIX_EPOCH,
        expires_at: std::time::SystemTime::UNIX_EPOCH,
        state,
        end_reason: None,
        epoch: crate::grant::Epoch::from_string(String::new()),
        break_glass: false,
        per_task: false,
        ttl: Duration::from_secs(60),
        approvals: Vec::new(),
        decision: String::new(),
        delegation: None,
    };
    let live = [
        grant("e1", GrantState::Active),
        grant("e1", GrantState::Completed),
        grant("other", GrantState::Active),
    ];
    assert_eq!(
        decide("max_active = 2", |r| r.live_grants = &live)
            .unwrap()
            .max_active,
        Some(2)
    );
    assert_eq!(
        decide("max_active = 1", |r| r.live_grants = &live)
            .unwrap_err()
            .to_string(),
        "spiffe://example.org/x already holds 1 active grants of entitlement \"e1\" (max_active)"
    );
}

#[test]
fn groups_name_requesters() {
    let raw: RawEntitlement =
        toml::from_str("name = \"e1\"\nactions = [\"a\"]\nrequesters = [\"group:release\"]")
            .unwrap();
    let catalogue = load(vec![raw]).unwrap();
    let entitlement = catalogue.entitlement("e1").unwrap();
    assert!(entitlement.admits(&SpiffeId::new("spiffe://example.org/ci/a").unwrap()));
    assert!(entitlement.admits(&SpiffeId::new("spiffe://example.org/svc/deployer").unwrap()));
    assert!(!entitlement.admits(&SpiffeId::new("spiffe://example.org/svc/other").unwrap()));
}

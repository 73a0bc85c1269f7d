//! Property tests of [`evaluate`]: over generated catalogues and requests,
//! it never grants an action outside the entitlement (or the request),
//! never a TTL above the ceilings, never an action a `forbid` names, and
//! answers the same inputs the same way.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;

const ALPHABET: [&str; 6] = ["a:1", "a:2", "b:1", "b:2", "c:1", "z:9"];
const RISKS: [&str; 4] = ["low", "medium", "high", "critical"];

#[derive(Debug, Clone)]
struct GenEntitlement {
    actions: Vec<usize>,
    risk: usize,
    max_minutes: u64,
    default_minutes: u64,
    approval: bool,
    break_glass: Option<u64>,
    forbid_c1: bool,
}

fn entitlement() -> impl Strategy<Value = GenEntitlement> {
    (
        proptest::sample::subsequence(vec![0, 1, 2, 3, 4], 1..=5),
        0..4usize,
        1..=60u64,
        1..=60u64,
        any::<bool>(),
        proptest::option::of(1..=60u64),
        any::<bool>(),
    )
        .prop_map(
            |(actions, risk, max_minutes, default_minutes, approval, break_glass, forbid_c1)| {
                GenEntitlement {
                    actions,
                    risk,
                    max_minutes,
                    default_minutes,
                    approval,
                    break_glass,
                    forbid_c1,
                }
            },
        )
}

/// The generated entitlements that validate, as a catalogue.
fn catalogue(generated: &[GenEntitlement]) -> Catalogue {
    let limits = TtlLimits::default();
    let mut raw = Vec::new();
    for (index, spec) in generated.iter().enumerate() {
        let risk = RISKS[spec.risk];
        let ceiling = limits.by_risk[spec.risk].min(limits.ceiling).as_secs() / 60;
        let max = spec.max_minutes.min(ceiling).max(1);
        let default = spec.default_minutes.min(max);
        let actions: Vec<String> = spec
            .actions
            .iter()
            .map(|&a| format!("{:?}", ALPHABET[a]))
            .collect();
        let mut text = format!(
            "name = \"e{index}\"\nactions = [{}]\nrequesters = [\"spiffe://example.org/ci/*\"]\nrisk = \"{risk}\"\nmax_ttl = \"{max}m\"\ndefault_ttl = \"{default}m\"\n",
            actions.join(", ")
        );
        if spec.approval {
            text.push_str("approvers = [\"group:sre\"]\nmin_approvals = 2\n");
        } else {
            text.push_str("approval = \"auto\"\n");
        }
        if let Some(minutes) = spec.break_glass {
            text.push_str(&format!(
                "break_glass = {{ max_ttl = \"{}m\", reviewers = [\"group:sre\"] }}\n",
                minutes.min(max)
            ));
        }
        if spec.forbid_c1 {
            text.push_str(
                "conditions = '''\npermit (principal, action, resource);\n@id(\"no-c1\")\nforbid (principal, action == Action::\"c:1\", resource);\n'''\n",
            );
        }
        if let Ok(entry) = toml::from_str::<RawEntitlement>(&text) {
            raw.push(entry);
        }
    }
    let groups = HashMap::from([(
        "sre".to_owned(),
        vec!["spiffe://example.org/sre/*".to_owned()],
    )]);
    Catalogue::from_raw(
        raw,
        &groups,
        BTreeMap::new(),
        &TrustDomain::new("example.org").unwrap(),
        &limits,
    )
    .unwrap_or_default()
}

#[derive(Debug, Clone)]
struct GenRequest {
    entitlement: Option<usize>,
    actions: Vec<usize>,
    ttl: Option<u64>,
    justification: bool,
    ticket: bool,
    break_glass: bool,
    caller: usize,
    at: u64,
}

fn request() -> impl Strategy<Value = GenRequest> {
    (
        proptest::option::of(0..4usize),
        proptest::sample::subsequence(vec![0, 1, 2, 3, 4, 5], 0..=3),
        proptest::option::of(0..4000u64),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0..3usize,
        0..(7 * 86_400u64),
    )
        .prop_map(
            |(entitlement, actions, ttl, justification, ticket, break_glass, caller, at)| {
                GenRequest {
                    entitlement,
                    actions,
                    ttl,
                    justification,
                    ticket,
                    break_glass,
                    caller,
                    at,
                }
            },
        )
}

const CALLERS: [&str; 3] = [
    "spiffe://example.org/ci/runner",
    "spiffe://example.org/sre/alice",
    "spiffe://other.org/ci/runner",
];

fn run(catalogue: &Catalogue, generated: &GenRequest) -> (Evaluation, Vec<Action>) {
    let actions: Vec<Action> = generated
        .actions
        .iter()
        .filter_map(|&a| Action::new(ALPHABET[a]).ok())
        .collect();
    let name = generated.entitlement.map(|index| format!("e{index}"));
    let caller = SpiffeId::new(CALLERS[generated.caller]).unwrap();
    let request = AccessRequest {
        entitlement: name.as_deref(),
        actions: &actions,
        ttl: generated.ttl.map(Duration::from_secs),
        justification: if generated.justification {
            "the primary database is down"
        } else {
            ""
        },
        ticket: if generated.ticket { "CHG-1" } else { "" },
        audiences: None,
        break_glass: generated.break_glass,
        live_grants: &[],
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_392_000 + generated.at);
    let context = RequestContext::default();
    (
        evaluate(catalogue, &caller, &request, &context, now),
        actions,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn decisions_stay_inside_the_entitlement(
        generated in proptest::collection::vec(entitlement(), 1..4),
        asked in request(),
    ) {
        let catalogue = catalogue(&generated);
        let (evaluation, requested) = run(&catalogue, &asked);
        let limits = TtlLimits::default();
        if let Ok(decision) = &evaluation.result {
            let entitlement = catalogue.entitlement(&decision.entitlement);
            prop_assert!(entitlement.is_some());
            let entitlement = entitlement.unwrap_or_else(|| &catalogue.entitlements()[0]);
            // Never an action outside the entitlement, nor outside the request.
            for action in &decision.actions {
                prop_assert!(entitlement.actions.contains(action), "{action:?}");
                prop_assert!(requested.is_empty() || requested.contains(action));
            }
            prop_assert!(!decision.actions.is_empty());
            // Never a TTL above the entitlement's maximum or the ceilings.
            prop_assert!(decision.ttl <= entitlement.max_ttl);
            prop_assert!(decision.ttl <= limits.ceiling);
            prop_assert!(decision.ttl <= limits.by_risk[entitlement.risk as usize]);
            prop_assert!(decision.ttl >= MIN_TTL);
            match decision.approval {
                Approval::BreakGlass => {
                    let rule = entitlement.break_glass.as_ref();
                    prop_assert!(rule.is_some_and(|rule| decision.ttl <= rule.max_ttl));
                    prop_assert!(asked.break_glass && asked.justification);
                }
                Approval::Required { min_approvals, .. } => {
                    prop_assert!(!asked.break_glass);
                    prop_assert_eq!(min_approvals, 2);
                }
                Approval::Auto => {
                    prop_assert!(!asked.break_glass);
                    prop_assert!(matches!(entitlement.approval, ApprovalRule::Auto));
                }
            }
            // A forbid is never overridden, break-glass included.
            if entitlement.conditions.is_some() {
                prop_assert!(!decision.actions.iter().any(|a| a.as_str() == "c:1"));
            }
            // Callers outside the trust domain never get anything.
            prop_assert!(asked.caller != 2);
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_answer(
        generated in proptest::collection::vec(entitlement(), 1..4),
        asked in request(),
    ) {
        let catalogue = catalogue(&generated);
        let (first, _) = run(&catalogue, &asked);
        let (second, _) = run(&catalogue, &asked);
        prop_assert_eq!(first, second);
    }
}

/// The generators make catalogues that validate and requests that pass, so
/// the properties above are not vacuous.
#[test]
fn generated_catalogues_validate_and_grant() {
    let generated: Vec<GenEntitlement> = (0..4)
        .map(|risk| GenEntitlement {
            actions: vec![0, 4],
            risk,
            max_minutes: 60,
            default_minutes: 10,
            approval: risk % 2 == 0,
            break_glass: Some(3),
            forbid_c1: risk == 1,
        })
        .collect();
    let catalogue = catalogue(&generated);
    assert_eq!(catalogue.entitlements().len(), 4);
    let asked = GenRequest {
        entitlement: Some(1),
        actions: vec![],
        ttl: None,
        justification: false,
        ticket: false,
        break_glass: false,
        caller: 0,
        at: 0,
    };
    let (evaluation, _) = run(&catalogue, &asked);
    assert_eq!(
        evaluation.result.map(|d| d.actions),
        Err(Denial::Forbidden {
            entitlement: "e1".to_owned(),
            reasons: vec!["no-c1".to_owned()],
        })
    );
    let (evaluation, _) = run(
        &catalogue,
        &GenRequest {
            actions: vec![0],
            ..asked
        },
    );
    assert_eq!(evaluation.explanation.matched[1], "conditions: e1.1");
    assert!(evaluation.result.is_ok());
    let (evaluation, _) = run(
        &catalogue,
        &GenRequest {
            entitlement: Some(0),
            break_glass: true,
            justification: true,
            ..asked
        },
    );
    assert_eq!(
        evaluation.result.map(|d| d.approval),
        Ok(Approval::BreakGlass)
    );
}

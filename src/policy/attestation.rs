//! How the caller proved its SPIFFE ID, as policy sees it: the method an
//! entitlement may require (`attestation = ["oidc"]`), and the facts (an
//! OIDC token's claims) conditions read as `context.attestation`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The attestation method, as policy and the audit trail name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttestationMethod {
    /// An attestation identity over mTLS (`x509`).
    X509,
    /// An OIDC token (`oidc`).
    Oidc,
}

/// What a decision knows of the caller's attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttestationFacts {
    /// How it was attested.
    pub method: AttestationMethod,
    /// An OIDC token's claims (none for an identity).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, serde_json::Value>,
}

// === impl AttestationMethod ===

impl AttestationMethod {
    /// Every method, in the order the docs list them.
    pub const ALL: [Self; 2] = [Self::X509, Self::Oidc];

    /// The name policy and the trail use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X509 => "x509",
            Self::Oidc => "oidc",
        }
    }

    /// Parses a name written in the catalogue.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "x509" => Some(Self::X509),
            "oidc" => Some(Self::Oidc),
            _ => None,
        }
    }
}

impl std::fmt::Display for AttestationMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::SystemTime;

    use serde_json::json;

    use super::*;
    use crate::policy::{
        AccessRequest, Catalogue, RawEntitlement, RequestContext, TtlLimits, evaluate,
    };
    use crate::spiffe_id::{SpiffeId, TrustDomain};

    const CATALOGUE: &str = r#"
[[e]]
name = "ci-oidc"
actions = ["publish:artifacts"]
requesters = ["spiffe://example.org/ci/*"]
attestation = ["oidc"]
conditions = """
@id("main-only")
@reason("only the main branch publishes")
permit (principal, action, resource)
when { context.attestation.method == "oidc" && context.attestation.claims.ref == "refs/heads/main" };
"""
[[e]]
name = "ci-any"
actions = ["read:source"]
requesters = ["spiffe://example.org/ci/*"]
[[e]]
name = "ci-x509"
actions = ["read:source", "cache:write"]
requesters = ["spiffe://example.org/ci/*"]
attestation = ["x509"]
[[e]]
name = "k8s"
actions = ["db:read"]
requesters = ["spiffe://example.org/k8s/*"]
attestation = ["oidc", "x509"]
conditions = """
permit (principal, action, resource)
when { context.attestation.claims["kubernetes.io"].namespace == "payments"
       && context.attestation.claims.groups.contains("release")
       && context.attestation.claims.run_attempt == 2 };
"""
"#;

    fn catalogue() -> Catalogue {
        let raw: Vec<RawEntitlement> = toml::from_str::<toml::Table>(CATALOGUE).unwrap()["e"]
            .clone()
            .try_into()
            .unwrap();
        Catalogue::from_raw(
            raw,
            &HashMap::new(),
            BTreeMap::new(),
            &TrustDomain::new("example.org").unwrap(),
            &TtlLimits::default(),
        )
        .unwrap()
    }

    /// One request: who, how attested (with which claims), for what; the
    /// outcome as text.
    fn check(
        caller: &str,
        facts: Option<(AttestationMethod, serde_json::Value)>,
        entitlement: Option<&str>,
        action: &str,
        expected: &str,
    ) {
        let actions = vec![crate::grant::Action::new(action).unwrap()];
        let request = AccessRequest {
            entitlement,
            actions: &actions,
            ttl: None,
            justification: "",
            ticket: "",
            audiences: None,
            break_glass: false,
            live_grants: &[],
        };
        let context = RequestContext {
            attestation: facts.map(|(method, claims)| AttestationFacts {
                method,
                claims: serde_json::from_value(claims).unwrap(),
            }),
            ..RequestContext::default()
        };
        let evaluation = evaluate(
            &catalogue(),
            &SpiffeId::new(caller).unwrap(),
            &request,
            &context,
            SystemTime::UNIX_EPOCH,
        );
        let got = match &evaluation.result {
            Ok(decision) => format!("allow {}", decision.entitlement),
            Err(denial) => format!("deny {denial}"),
        };
        assert_eq!(got, expected, "{:?}", evaluation.explanation.matched);
    }

    const CI: &str = "spiffe://example.org/ci/github/acme/app";
    const POD: &str = "spiffe://example.org/k8s/payments/deployer";

    fn oidc(claims: serde_json::Value) -> Option<(AttestationMethod, serde_json::Value)> {
        Some((AttestationMethod::Oidc, claims))
    }

    fn x509() -> Option<(AttestationMethod, serde_json::Value)> {
        Some((AttestationMethod::X509, json!({})))
    }

    #[test]
    fn an_entitlement_may_require_a_method_and_says_when_it_did_not_match() {
        let main = json!({"ref": "refs/heads/main"});
        check(
            CI,
            oidc(main.clone()),
            Some("ci-oidc"),
            "publish:artifacts",
            "allow ci-oidc",
        );
        check(
            CI,
            x509(),
            Some("ci-oidc"),
            "publish:artifacts",
            "deny entitlement \"ci-oidc\" requires attestation by oidc; the caller was attested by x509",
        );
        check(
            CI,
            None,
            Some("ci-oidc"),
            "publish:artifacts",
            "deny entitlement \"ci-oidc\" requires attestation by oidc; the caller was attested by an unknown method",
        );
        // No requirement: any method.
        check(CI, x509(), Some("ci-any"), "read:source", "allow ci-any");
        check(
            CI,
            oidc(main.clone()),
            Some("ci-any"),
            "read:source",
            "allow ci-any",
        );
        check(
            POD,
            x509(),
            Some("k8s"),
            "db:read",
            "deny conditions of entitlement \"k8s\" could not be evaluated: error while evaluating policy `k8s.1`: record does not have the attribute `kubernetes.io`",
        );
        // Found by actions: the first entitlement the method may use.
        check(CI, x509(), None, "cache:write", "allow ci-x509");
        check(
            CI,
            oidc(main),
            None,
            "cache:write",
            "deny entitlement \"ci-x509\" requires attestation by x509; the caller was attested by oidc",
        );
    }

    #[test]
    fn conditions_read_the_method_and_the_claims() {
        check(
            CI,
            oidc(json!({"ref": "refs/heads/feature"})),
            Some("ci-oidc"),
            "publish:artifacts",
            "deny conditions of entitlement \"ci-oidc\" do not permit \"publish:artifacts\" now: needs main-only: only the main branch publishes",
        );
        let pod = json!({
            "kubernetes.io": {"namespace": "payments", "pod": {"name": "p-1"}},
            "groups": ["dev", "release"],
            "run_attempt": 2,
            "nothing": null,
            "ratio": 0.5,
        });
        check(POD, oidc(pod.clone()), Some("k8s"), "db:read", "allow k8s");
        let mut other = pod;
        other["kubernetes.io"]["namespace"] = json!("kube-system");
        check(
            POD,
            oidc(other),
            Some("k8s"),
            "db:read",
            "deny conditions of entitlement \"k8s\" do not permit \"db:read\" now: needs k8s.1",
        );
    }

    #[test]
    fn a_method_outside_the_list_is_a_catalogue_error() {
        let raw: Vec<RawEntitlement> = toml::from_str::<toml::Table>(
            "[[e]]\nname = \"x\"\nactions = [\"a\"]\nrequesters = [\"spiffe://example.org/x\"]\nattestation = [\"saml\"]\n",
        )
        .unwrap()["e"]
            .clone()
            .try_into()
            .unwrap();
        let error = Catalogue::from_raw(
            raw,
            &HashMap::new(),
            BTreeMap::new(),
            &TrustDomain::new("example.org").unwrap(),
            &TtlLimits::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "entitlement \"x\": `attestation`: \"saml\" is not an attestation method (x509 or oidc)"
        );
    }
}

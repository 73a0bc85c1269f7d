//! Unit tests of parsing and checking the configuration file.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("jitid.toml"), Path::new("/etc/jitid"))
}

const MINIMAL: &str = r#"
trust_domain = "example.org"
[ca]
dir = "ca"
[[entitlement]]
name = "ci-publish"
actions = ["publish:artifacts"]
requesters = ["spiffe://example.org/ci/*"]
"#;

#[test]
fn minimal_config_gets_safe_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(
        config.ca.signing_key,
        Path::new("/etc/jitid/ca/signing.key")
    );
    // Attestation trusts the attestation CA alone: no SVID chains there.
    assert_eq!(
        config.attestation_trust_anchors,
        vec![config.ca.attestation_cert.clone()]
    );
    assert_eq!(config.identity, IdentityConfig::default());
    assert_eq!(config.identity.max_ttl, Duration::from_secs(24 * 3600));
    assert_eq!(
        config.server.spiffe_id.as_str(),
        "spiffe://example.org/jitid"
    );
    assert_eq!(config.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
    let entitlement = config.catalogue.entitlement("ci-publish").unwrap();
    assert_eq!(entitlement.default_ttl, Duration::from_secs(300));
}

#[test]
fn store_and_admins() {
    let config = parse(&format!(
        "admins = [\"spiffe://example.org/ops/*\"]\nstore = \"redis\"\n{}\n[redis]\nurl = \"unix:///run/redis.sock\"\nwait_replicas = 1\n",
        MINIMAL.trim_start()
    ))
    .unwrap();
    assert_eq!(config.admins.len(), 1);
    let StoreConfig::Redis(redis) = config.store else {
        panic!("expected redis");
    };
    assert_eq!(redis.urls, ["unix:///run/redis.sock"]);
    assert_eq!(redis.wait_replicas, 1);
    let error = parse(&format!("store = \"redis\"\n{}", MINIMAL.trim_start()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("`redis`"), "{error}");
    let error = parse(&format!("store = \"etcd\"\n{}", MINIMAL.trim_start()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("`store`"), "{error}");
}

#[test]
fn audit_retention_and_auditors() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(
        config.audit.retention(&config.store),
        crate::audit::upkeep::Retention {
            max_age: Some(DEFAULT_MAX_AGE),
            max_events: Some(DEFAULT_MAX_EVENTS.0),
        }
    );
    let redis = StoreConfig::Redis(RedisStoreConfig::new("redis://r"));
    assert_eq!(
        config.audit.retention(&redis).max_events,
        Some(DEFAULT_MAX_EVENTS.1)
    );
    assert!(config.audit.enabled && config.audit.auditors.is_empty());
    let config = parse(&MINIMAL.replace(
        "[ca]",
        "[audit]\nauditors = [\"spiffe://example.org/sec/*\"]\nmax_age = \"7d\"\nmax_events = 50\nupkeep_interval = \"1s\"\n[ca]",
    ))
    .unwrap();
    assert_eq!(config.audit.auditors.len(), 1);
    assert_eq!(config.audit.max_age, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(config.audit.max_events, Some(50));
    assert_eq!(config.audit.upkeep_interval, Duration::from_secs(1));
    for (bad, key) in [
        ("max_events = 0", "audit.max_events"),
        ("max_age = \"forever\"", "audit.max_age"),
        ("upkeep_interval = \"1ms\"", "audit.upkeep_interval"),
        ("auditors = [\"not an id\"]", "audit.auditors"),
    ] {
        let error = parse(&MINIMAL.replace("[ca]", &format!("[audit]\n{bad}\n[ca]")))
            .unwrap_err()
            .to_string();
        assert!(error.contains(key), "{bad}: {error}");
    }
}

#[test]
fn admission_limits() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.admission, AdmissionConfig::default());
    assert_eq!(config.admission.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
    assert_eq!(config.admission.caller_rate, None);
    let limits = |lines: &str| parse(&MINIMAL.replace("[ca]", &format!("[limits]\n{lines}\n[ca]")));
    let config = limits("max_in_flight = 8\ncaller_rate = 10\ncaller_burst = 20").unwrap();
    assert_eq!(
        config.admission,
        AdmissionConfig {
            max_in_flight: 8,
            caller_rate: Some(CallerRate {
                per_second: 10.0,
                burst: 20
            }),
        }
    );
    // The burst is one second's worth unless said, and at least one.
    for (rate, burst) in [("2.5", 3), ("0.5", 1), ("10", 10)] {
        let config = limits(&format!("caller_rate = {rate}")).unwrap();
        assert_eq!(config.admission.caller_rate.unwrap().burst, burst, "{rate}");
    }
    assert_eq!(
        limits("caller_rate = 0").unwrap().admission.caller_rate,
        None
    );
    for (bad, key) in [
        ("max_in_flight = 0", "limits.max_in_flight"),
        ("max_in_flight = 100000", "limits.max_in_flight"),
        ("max_in_flight = -1", "max_in_flight"),
        ("caller_rate = -1", "limits.caller_rate"),
        ("caller_rate = 0.0001", "limits.caller_rate"),
        ("caller_rate = nan", "limits.caller_rate"),
        ("caller_rate = inf", "limits.caller_rate"),
        ("caller_rate = \"10/s\"", "caller_rate"),
        ("caller_burst = 5", "limits.caller_burst"),
        ("caller_rate = 5\ncaller_burst = 0", "limits.caller_burst"),
    ] {
        let error = limits(bad).unwrap_err().to_string();
        assert!(error.contains(key), "{bad}: {error}");
    }
}

#[test]
fn the_deployment_example_loads() {
    let text = include_str!("../../deploy/jitid.example.toml");
    let config = parse(text).unwrap();
    assert!(matches!(config.store, StoreConfig::Redis(_)));
    assert_eq!(config.audit.max_events, Some(1_000_000));
    assert_eq!(config.admission.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
    assert_eq!(
        config.admission.caller_rate,
        Some(CallerRate {
            per_second: 100.0,
            burst: 200
        })
    );
    let agent = config.catalogue.entitlement("agent-research").unwrap();
    assert!(agent.bind_jwt && agent.delegation_depth == 2);
}

#[test]
fn revocation_bounds_and_delegation_depth() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.revocation.ack_bound, crate::store::DEFAULT_ACK_BOUND);
    let entitlement = config.catalogue.entitlement("ci-publish").unwrap();
    assert_eq!(entitlement.delegation_depth, 0, "not delegable unless said");
    assert!(!entitlement.bind_jwt);
    let config = parse(&MINIMAL.replace(
        "[ca]",
        "[revocation]\nack_bound = \"2s\"\nrelying_party_ttl = \"5m\"\n[ca]",
    ))
    .unwrap();
    assert_eq!(config.revocation.ack_bound, Duration::from_secs(2));
    assert_eq!(
        config.revocation.relying_party_ttl,
        Duration::from_secs(300)
    );
    let error = parse(&MINIMAL.replace("[ca]", "[revocation]\nack_bound = \"1ms\"\n[ca]"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("revocation.ack_bound"), "{error}");
    let error = parse(&format!("{MINIMAL}delegation_depth = 9\n"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("delegation_depth") && error.contains("at most 8"),
        "{error}"
    );
}

#[test]
fn errors_name_the_key() {
    let error = parse(&MINIMAL.replace("example.org\"\n[ca]", "Example.org\"\n[ca]"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("`trust_domain`"), "{error}");

    let error = parse(&format!("{MINIMAL}\n[server]\ncert_ttl = \"soon\"\n"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("`server.cert_ttl`"), "{error}");

    let error = parse(&format!("{MINIMAL}\nbogus = 1\n"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("bogus"), "{error}");
}

#[test]
fn attestation_identity_lifetimes() {
    let with =
        |table: &str| parse(&MINIMAL.replace("[ca]", &format!("[attestation]\n{table}\n[ca]")));
    let config = with("identity_ttl = \"1h\"\nidentity_max_ttl = \"48h\"").unwrap();
    assert_eq!(
        config.identity,
        IdentityConfig {
            ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(48 * 3600),
        }
    );
    // An explicit trust anchor still overrides the attestation CA.
    let config = with("trust_anchors = [\"ca/root.pem\"]").unwrap();
    assert_eq!(
        config.attestation_trust_anchors,
        vec![Path::new("/etc/jitid/ca/root.pem").to_owned()]
    );
    for (bad, key) in [
        ("identity_ttl = \"48h\"", "attestation.identity_ttl"),
        ("identity_max_ttl = \"0s\"", "attestation.identity_max_ttl"),
        ("identity_ttl = \"soon\"", "attestation.identity_ttl"),
    ] {
        let error = with(bad).unwrap_err().to_string();
        assert!(error.contains(key), "{bad}: {error}");
    }
}

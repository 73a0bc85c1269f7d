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
    assert_eq!(config.admission.caller_rate, Some(DEFAULT_CALLER_RATE));
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
        None,
        "0 turns the limit off"
    );
    // A burst alone goes with the default rate.
    assert_eq!(
        limits("caller_burst = 5").unwrap().admission.caller_rate,
        Some(CallerRate {
            per_second: DEFAULT_CALLER_RATE.per_second,
            burst: 5
        })
    );
    assert_eq!(
        parse(MINIMAL).unwrap().max_grants_per_subject,
        crate::store::DEFAULT_MAX_GRANTS_PER_SUBJECT
    );
    assert_eq!(
        limits("max_grants_per_subject = 7")
            .unwrap()
            .max_grants_per_subject,
        7
    );
    assert!(
        limits("max_grants_per_subject = 0")
            .unwrap_err()
            .to_string()
            .contains("limits.max_grants_per_subject")
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
        ("caller_rate = 0\ncaller_burst = 5", "limits.caller_burst"),
        ("caller_rate = 5\ncaller_burst = 0", "limits.caller_burst"),
    ] {
        let error = limits(bad).unwrap_err().to_string();
        assert!(error.contains(key), "{bad}: {error}");
    }
}

#[test]
fn connection_limits() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.connections, ConnectionLimits::default());
    let limits = |lines: &str| parse(&MINIMAL.replace("[ca]", &format!("[limits]\n{lines}\n[ca]")));
    let config = limits(
        "max_connections = 100\nmax_connections_per_source = 10\npreface_timeout = \"2s\"\nidle_timeout = \"1m\"",
    )
    .unwrap();
    assert_eq!(
        config.connections,
        ConnectionLimits {
            max_connections: 100,
            max_per_source: 10,
            preface_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
        }
    );
    // A small total caps the per-source default too.
    assert_eq!(
        limits("max_connections = 8")
            .unwrap()
            .connections
            .max_per_source,
        8
    );
    for (bad, key) in [
        ("max_connections = 0", "limits.max_connections"),
        (
            "max_connections = 10\nmax_connections_per_source = 11",
            "limits.max_connections_per_source",
        ),
        (
            "max_connections_per_source = 0",
            "limits.max_connections_per_source",
        ),
        ("preface_timeout = \"10ms\"", "limits.preface_timeout"),
        ("preface_timeout = \"1h\"", "limits.preface_timeout"),
        ("idle_timeout = \"soon\"", "limits.idle_timeout"),
        ("idle_timeout = \"100ms\"", "limits.idle_timeout"),
    ] {
        let error = limits(bad).unwrap_err().to_string();
        assert!(error.contains(key), "{bad}: {error}");
    }
}

#[test]
fn stream_limits_and_relying_party_names() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.streams, StreamLimits::default());
    assert!(config.revocation.relying_parties.is_empty());
    let with = |table: &str, lines: &str| {
        parse(&MINIMAL.replace("[ca]", &format!("[{table}]\n{lines}\n[ca]")))
    };
    let config = with(
        "limits",
        "max_revocation_streams = 10\nmax_grant_streams = 20\nmax_streams_per_caller = 2",
    )
    .unwrap();
    assert_eq!(
        config.streams,
        StreamLimits {
            max_revocation_streams: 10,
            max_grant_streams: 20,
            max_streams_per_caller: 2,
        }
    );
    let config = with(
        "revocation.relying_parties",
        "ledger-eu-1 = \"spiffe://example.org/svc/ledger\"\ngateway = \"spiffe://example.org/edge/*\"",
    )
    .unwrap();
    let ledger = &config.revocation.relying_parties["ledger-eu-1"];
    assert!(ledger.matches(&SpiffeId::new("spiffe://example.org/svc/ledger").unwrap()));
    assert!(!ledger.matches(&SpiffeId::new("spiffe://example.org/svc/other").unwrap()));
    for (table, bad, key) in [
        (
            "limits",
            "max_streams_per_caller = 0",
            "limits.max_streams_per_caller",
        ),
        (
            "limits",
            "max_revocation_streams = 70000",
            "limits.max_revocation_streams",
        ),
        (
            "revocation.relying_parties",
            "\"bad name\" = \"spiffe://example.org/x\"",
            "revocation.relying_parties.bad name",
        ),
        (
            "revocation.relying_parties",
            "ledger = \"not an id\"",
            "revocation.relying_parties.ledger",
        ),
    ] {
        let error = with(table, bad).unwrap_err().to_string();
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

const GITHUB: &str = r#"
[[attestation.oidc]]
name = "github"
issuer = "https://token.actions.githubusercontent.com"
audiences = ["jitid"]
jwks_file = "github-jwks.json"
spiffe_id = "ci/github/{repository}"
task = "{run_id}-{run_attempt}"
[attestation.oidc.bound_claims]
repository_owner = "acme"
ref = ["refs/heads/main", "refs/tags/v*"]
"#;

#[test]
fn oidc_providers_load_with_their_defaults() {
    let config = parse(&format!("{}{GITHUB}", MINIMAL.trim_start())).unwrap();
    let [github] = config.attestation_oidc.as_slice() else {
        panic!("one provider: {:?}", config.attestation_oidc);
    };
    assert_eq!(github.name, "github");
    assert_eq!(
        github.jwks,
        JwksSource::File(PathBuf::from("/etc/jitid/github-jwks.json"))
    );
    assert_eq!(github.spiffe_id.as_str(), "ci/github/{repository}");
    assert_eq!(
        github.task.as_ref().map(Template::as_str),
        Some("{run_id}-{run_attempt}")
    );
    assert_eq!(github.clock_skew, Duration::from_secs(60));
    assert_eq!(github.bound_claims.bindings().len(), 2);
    let url = GITHUB.replace(
        "jwks_file = \"github-jwks.json\"",
        "jwks_url = \"https://token.actions.githubusercontent.com/.well-known/jwks\"\njwks_ca_file = \"ca.pem\"\nclock_skew = \"30s\"",
    );
    let config = parse(&format!("{}{url}", MINIMAL.trim_start())).unwrap();
    assert_eq!(
        config.attestation_oidc[0].jwks,
        JwksSource::Url {
            url: "https://token.actions.githubusercontent.com/.well-known/jwks".to_owned(),
            ca_file: Some(PathBuf::from("/etc/jitid/ca.pem")),
        }
    );
    assert_eq!(
        config.attestation_oidc[0].clock_skew,
        Duration::from_secs(30)
    );
}

#[test]
fn a_bad_oidc_provider_is_refused_at_load_naming_the_field() {
    let check = |from: &str, to: &str, key: &str, says: &str| {
        let text = format!("{}{}", MINIMAL.trim_start(), GITHUB.replace(from, to));
        assert_ne!(
            text,
            format!("{}{GITHUB}", MINIMAL.trim_start()),
            "{from:?} not found"
        );
        let error = parse(&text).unwrap_err().to_string();
        assert!(error.contains(&format!("`{key}`")), "{key}: {error}");
        assert!(error.contains(says), "{says:?} not in {error}");
    };
    check(
        "name = \"github\"",
        "name = \"git hub\"",
        "attestation.oidc.name",
        "letters",
    );
    check(
        "issuer = \"https://token.actions.githubusercontent.com\"",
        "issuer = \"\"",
        "attestation.oidc.issuer",
        "iss",
    );
    check(
        "audiences = [\"jitid\"]",
        "audiences = []",
        "attestation.oidc.audiences",
        "at least one",
    );
    check(
        "jwks_file = \"github-jwks.json\"",
        "jwks_url = \"http://example.org/jwks\"",
        "attestation.oidc.jwks_url",
        "https:// only",
    );
    check(
        "jwks_file = \"github-jwks.json\"",
        "jwks_file = \"a.json\"\njwks_url = \"https://example.org/jwks\"",
        "attestation.oidc.jwks_file",
        "exactly one",
    );
    check(
        "jwks_file = \"github-jwks.json\"",
        "",
        "attestation.oidc.jwks_file",
        "exactly one",
    );
    check(
        "jwks_file = \"github-jwks.json\"",
        "jwks_file = \"a.json\"\njwks_ca_file = \"ca.pem\"",
        "attestation.oidc.jwks_ca_file",
        "goes with jwks_url",
    );
    check(
        "spiffe_id = \"ci/github/{repository}\"",
        "spiffe_id = \"ci/../{repository}\"",
        "attestation.oidc.spiffe_id",
        "'.' or '..' segment",
    );
    check(
        "spiffe_id = \"ci/github/{repository}\"",
        "spiffe_id = \"ci/github/{repository\"",
        "attestation.oidc.spiffe_id",
        "not closed",
    );
    check(
        "task = \"{run_id}-{run_attempt}\"",
        "task = \"{run_id}/{run_attempt}\"",
        "attestation.oidc.task",
        "task id",
    );
    check(
        "task = \"{run_id}-{run_attempt}\"",
        "clock_skew = \"1h\"",
        "attestation.oidc.clock_skew",
        "at most 10m",
    );
    check(
        "[attestation.oidc.bound_claims]\nrepository_owner = \"acme\"\nref = [\"refs/heads/main\", \"refs/tags/v*\"]\n",
        "",
        "attestation.oidc.bound_claims",
        "at least one binding",
    );
    check(
        "ref = [\"refs/heads/main\", \"refs/tags/v*\"]",
        "ref = []",
        "attestation.oidc.bound_claims",
        "at least one value",
    );
    let twice = format!(
        "{}{GITHUB}{}",
        MINIMAL.trim_start(),
        GITHUB.replace(
            "issuer = \"https://token.actions.githubusercontent.com\"",
            "issuer = \"https://gitlab.com\""
        )
    );
    let error = parse(&twice).unwrap_err().to_string();
    assert!(
        error.contains("`attestation.oidc.name`") && error.contains("two providers"),
        "{error}"
    );
    let same_issuer = format!(
        "{}{GITHUB}{}",
        MINIMAL.trim_start(),
        GITHUB.replace("name = \"github\"", "name = \"github2\"")
    );
    let error = parse(&same_issuer).unwrap_err().to_string();
    assert!(error.contains("`attestation.oidc.issuer`"), "{error}");
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

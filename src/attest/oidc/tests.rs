//! Unit tests of OIDC token checks, claim bindings and templates, and the
//! key cache's refresh rules, all on a fixed `now`: no clock is read.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::jwks::{Fetch, KeyError, KeySet};
use super::*;

const ISSUER: &str = "https://token.actions.githubusercontent.com";

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn at(offset: i64) -> u64 {
    1_800_000_000u64.saturating_add_signed(offset)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key of a test issuer.
enum Signer {
    Rsa(String, RsaKeyPair),
    Ec(String, EcdsaKeyPair),
}

impl Signer {
    fn rsa(kid: &str) -> Self {
        Self::Rsa(
            kid.to_owned(),
            RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
        )
    }

    fn ec(kid: &str) -> Self {
        Self::Ec(
            kid.to_owned(),
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        )
    }

    fn kid(&self) -> &str {
        match self {
            Self::Rsa(kid, _) | Self::Ec(kid, _) => kid,
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            Self::Rsa(..) => "RS256",
            Self::Ec(..) => "ES256",
        }
    }

    fn jwk(&self) -> Value {
        match self {
            Self::Rsa(kid, key) => {
                let components = PublicKeyComponents::<Vec<u8>>::from(key.public_key());
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                       "n": b64(&components.n), "e": b64(&components.e)})
            }
            Self::Ec(kid, key) => {
                let point = key.public_key().as_ref();
                json!({"kty": "EC", "kid": kid, "crv": "P-256",
                       "x": b64(&point[1..33]), "y": b64(&point[33..65])})
            }
        }
    }

    /// A token with `header` fields over the default ones (`alg`, `kid`).
    fn sign_with(&self, header: Value, claims: &Value) -> String {
        let mut full = json!({"alg": self.alg(), "kid": self.kid(), "typ": "JWT"});
        for (key, value) in header.as_object().unwrap() {
            if value.is_null() {
                full.as_object_mut().unwrap().remove(key);
            } else {
                full[key] = value.clone();
            }
        }
        let input = format!(
            "{}.{}",
            b64(full.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = match self {
            Self::Rsa(_, key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    input.as_bytes(),
                    &mut signature,
                )
                .unwrap();
                signature
            }
            Self::Ec(_, key) => key
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", b64(&signature))
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with(json!({}), claims)
    }
}

/// The claims of a good GitHub Actions token, at `now`.
fn github_claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": "jitid",
        "sub": "repo:acme/app:ref:refs/heads/main",
        "repository": "acme/app",
        "repository_owner": "acme",
        "ref": "refs/heads/main",
        "run_id": "4711",
        "run_attempt": "2",
        "jti": "token-1",
        "iat": at(-10),
        "nbf": at(-10),
        "exp": at(300),
    })
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

fn provider(jwks: &std::path::Path) -> ProviderConfig {
    ProviderConfig {
        name: "github".to_owned(),
        issuer: ISSUER.to_owned(),
        audiences: vec!["jitid".to_owned()],
        jwks: JwksSource::File(jwks.to_owned()),
        spiffe_id: Template::parse("ci/github/{repository}").unwrap(),
        task: Some(Template::parse("{run_id}-{run_attempt}").unwrap()),
        clock_skew: DEFAULT_CLOCK_SKEW,
        bound_claims: BoundClaims::new(vec![
            Binding::parse("repository_owner", &["acme".to_owned()]).unwrap(),
        ]),
    }
}

/// An attestor trusting `signers`' keys (a JWKS file), and the dir it is in.
async fn attestor(signers: &[&Signer]) -> (tempfile::TempDir, OidcAttestor) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let keys: Vec<Value> = signers.iter().map(|s| s.jwk()).collect();
    std::fs::write(&path, json!({ "keys": keys }).to_string()).unwrap();
    let attestor = OidcAttestor::new(
        vec![provider(&path)],
        TrustDomain::new("example.org").unwrap(),
        now(),
    )
    .await
    .unwrap();
    (dir, attestor)
}

#[tokio::test]
async fn good_rs256_and_es256_tokens_attest_the_templated_id_and_task() {
    let rsa = Signer::rsa("rsa-1");
    let ec = Signer::ec("ec-1");
    let (_dir, attestor) = attestor(&[&rsa, &ec]).await;
    for signer in [&rsa, &ec] {
        let caller = attestor
            .attest(&signer.sign(&github_claims()), now())
            .await
            .unwrap();
        assert_eq!(
            caller.spiffe_id.as_str(),
            "spiffe://example.org/ci/github/acme/app"
        );
        assert_eq!(caller.certificate_thumbprint, None);
        let Attestation::Oidc(evidence) = &caller.attestation else {
            panic!("not attested by a token: {caller:?}");
        };
        assert_eq!(evidence.provider, "github");
        assert_eq!(evidence.token_id, "token-1");
        assert_eq!(evidence.task.as_deref(), Some("4711-2"));
        assert_eq!(evidence.expires_at, now() + Duration::from_secs(300));
        assert_eq!(evidence.claims["ref"], "refs/heads/main");
        assert_eq!(caller.attested_until(), Some(evidence.expires_at));
    }
}

#[tokio::test]
async fn a_token_without_jti_is_named_by_its_hash() {
    let ec = Signer::ec("ec-1");
    let (_dir, attestor) = attestor(&[&ec]).await;
    let token = ec.sign(&with(github_claims(), json!({"jti": null})));
    let caller = attestor.attest(&token, now()).await.unwrap();
    let Attestation::Oidc(evidence) = caller.attestation else {
        panic!("not a token");
    };
    assert_eq!(evidence.token_id.len(), 64);
    assert!(evidence.token_id.bytes().all(|b| b.is_ascii_hexdigit()));
    let again = attestor.attest(&token, now()).await.unwrap();
    assert_eq!(again.attestation, Attestation::Oidc(evidence));
}

/// One refused token: what it is, and a piece of the message it must get.
async fn refused(attestor: &OidcAttestor, token: &str, expected: &str) -> OidcError {
    let error = attestor.attest(token, now()).await.unwrap_err();
    assert!(
        error.to_string().contains(expected),
        "expected {expected:?} in {error}"
    );
    assert!(
        !error.to_string().contains(token),
        "the message shows the token: {error}"
    );
    error
}

#[tokio::test]
async fn each_bad_token_is_refused_with_its_own_message() {
    let ec = Signer::ec("ec-1");
    let rsa = Signer::rsa("rsa-1");
    let stranger = Signer::ec("ec-1");
    let (_dir, attestor) = attestor(&[&ec, &rsa]).await;
    let good = github_claims();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong aud",
            ec.sign(&with(good.clone(), json!({"aud": ["other", "more"]}))),
            "audience \"other\" not accepted",
        ),
        (
            "no aud",
            ec.sign(&with(good.clone(), json!({"aud": null}))),
            "no aud",
        ),
        (
            "wrong iss",
            ec.sign(&with(good.clone(), json!({"iss": "https://evil.example"}))),
            "issuer \"https://evil.example\" is not configured",
        ),
        (
            "expired",
            ec.sign(&with(good.clone(), json!({"exp": at(0)}))),
            "has expired",
        ),
        (
            "no exp",
            ec.sign(&with(good.clone(), json!({"exp": null}))),
            "no exp",
        ),
        (
            "not yet valid",
            ec.sign(&with(good.clone(), json!({"nbf": at(61)}))),
            "not valid yet",
        ),
        (
            "issued in the future",
            ec.sign(&with(good.clone(), json!({"iat": at(61)}))),
            "issued in the future",
        ),
        (
            "signed by another key with the same kid",
            stranger.sign(&good),
            "signature does not verify",
        ),
        (
            "unknown kid",
            ec.sign_with(json!({"kid": "ec-9"}), &good),
            "unknown kid \"ec-9\"",
        ),
        (
            "no kid",
            ec.sign_with(json!({"kid": null}), &good),
            "no kid",
        ),
        (
            "ES256 naming an RSA key",
            ec.sign_with(json!({"kid": "rsa-1"}), &good),
            "key \"rsa-1\" is not a ES256 signing key",
        ),
        (
            "crit",
            ec.sign_with(json!({"crit": ["exp"]}), &good),
            "crit",
        ),
        ("garbage", "not.a.token".to_owned(), "malformed"),
        ("two parts", "abc.def".to_owned(), "malformed"),
    ];
    for (what, token, expected) in cases {
        let error = refused(&attestor, &token, expected).await;
        assert!(
            !error.is_permission_denied() && !error.is_unavailable(),
            "{what}: {error}"
        );
    }
    // Tampered claims under a genuine signature.
    let token = ec.sign(&good);
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = b64(with(good, json!({"repository": "acme/other"}))
        .to_string()
        .as_bytes());
    parts[1] = &forged;
    refused(&attestor, &parts.join("."), "signature does not verify").await;
}

#[tokio::test]
async fn unsigned_and_hmac_tokens_are_refused_by_name() {
    let rsa = Signer::rsa("rsa-1");
    let (_dir, attestor) = attestor(&[&rsa]).await;
    let claims = b64(github_claims().to_string().as_bytes());
    for alg in ["none", "None", "NONE"] {
        let header = b64(json!({"alg": alg, "kid": "rsa-1"}).to_string().as_bytes());
        let error = refused(&attestor, &format!("{header}.{claims}."), "alg none").await;
        assert_eq!(error, OidcError::AlgNone);
    }
    // HS256 keyed with the issuer's public key: the classic confusion.
    let header = b64(json!({"alg": "HS256", "kid": "rsa-1"})
        .to_string()
        .as_bytes());
    let input = format!("{header}.{claims}");
    let public = rsa.jwk().to_string();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, public.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    let token = format!("{input}.{}", b64(tag.as_ref()));
    refused(&attestor, &token, "alg \"HS256\" is not allowed").await;
    for alg in ["HS384", "PS256", "RS512", "EdDSA"] {
        let header = b64(json!({"alg": alg, "kid": "rsa-1"}).to_string().as_bytes());
        refused(
            &attestor,
            &format!("{header}.{claims}.c2ln"),
            "is not allowed",
        )
        .await;
    }
}

#[tokio::test]
async fn clock_skew_allows_a_little_of_nbf_and_iat_in_the_future_but_none_of_exp() {
    let ec = Signer::ec("ec-1");
    let (_dir, attestor) = attestor(&[&ec]).await;
    let early = with(github_claims(), json!({"nbf": at(60), "iat": at(60)}));
    attestor.attest(&ec.sign(&early), now()).await.unwrap();
    let just_expired = with(github_claims(), json!({"exp": at(0)}));
    refused(&attestor, &ec.sign(&just_expired), "has expired").await;
    let fine = with(github_claims(), json!({"exp": at(1)}));
    attestor.attest(&ec.sign(&fine), now()).await.unwrap();
}

#[tokio::test]
async fn a_failed_binding_or_a_bad_claim_value_is_permission_denied_and_names_the_claim() {
    let ec = Signer::ec("ec-1");
    let (_dir, attestor) = attestor(&[&ec]).await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"repository_owner": "evil"}),
            "claim \"repository_owner\" does not match its binding: it must be \"acme\"",
        ),
        (
            json!({"repository_owner": null}),
            "claim \"repository_owner\" is missing",
        ),
        (
            json!({"repository": "acme/.."}),
            "claim \"repository\" would put a '.' or '..' segment into the SPIFFE ID",
        ),
        (json!({"repository": "../acme"}), "a '.' or '..' segment"),
        (
            json!({"repository": "acme//app"}),
            "claim \"repository\" would put an empty segment into the SPIFFE ID",
        ),
        (json!({"repository": "acme/"}), "an empty segment"),
        (json!({"repository": ""}), "an empty segment"),
        (
            json!({"repository": "acme/app?x=1"}),
            "the character '?', which is not one of",
        ),
        (json!({"repository": "acme/ä"}), "the character 'ä'"),
        (
            json!({"repository": ["acme", "app"]}),
            "claim \"repository\" is not a string",
        ),
        (
            json!({"repository": null}),
            "claim \"repository\" is missing",
        ),
        (
            json!({"run_id": "47/11"}),
            "the task template \"{run_id}-{run_attempt}\" makes a task id that contains '/'",
        ),
    ];
    for (changes, expected) in cases {
        let token = ec.sign(&with(github_claims(), changes.clone()));
        let error = refused(&attestor, &token, expected).await;
        assert!(error.is_permission_denied(), "{changes}: {error}");
        if changes.get("repository_owner").is_some() {
            assert!(!error.to_string().contains("evil"), "{error}");
        }
    }
}

fn claims(value: Value) -> BTreeMap<String, Value> {
    serde_json::from_value(value).unwrap()
}

#[test]
fn globs_match_like_shell_wildcards_on_whole_values() {
    let check = |pattern: &str, value: &str, expected: bool| {
        let glob = Glob::parse(pattern).unwrap();
        assert_eq!(glob.matches(value), expected, "{pattern} ~ {value}");
    };
    check("acme", "acme", true);
    check("acme", "acme2", false);
    check("acme", "acm", false);
    check("*", "", true);
    check("*", "anything/at all", true);
    check("refs/heads/*", "refs/heads/main", true);
    check("refs/heads/*", "refs/heads/feature/x", true);
    check("refs/heads/*", "refs/tags/v1", false);
    check(
        "repo:acme/*:ref:refs/heads/main",
        "repo:acme/app:ref:refs/heads/main",
        true,
    );
    check(
        "repo:acme/*:ref:refs/heads/main",
        "repo:acme/app:ref:refs/heads/dev",
        false,
    );
    check("*-prod", "eu-prod", true);
    check("*-prod", "eu-prod-2", false);
    check("a*b*c", "aXXbYYc", true);
    check("a*b*c", "aXXcYYb", false);
    check("**", "x", true);
    check("a*", "b", false);
    assert!(Glob::parse("").is_err());
}

#[test]
fn bindings_need_every_claim_to_match_one_value_or_list_element() {
    let bound = |pairs: &[(&str, &[&str])]| {
        BoundClaims::new(
            pairs
                .iter()
                .map(|(claim, values)| {
                    let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
                    Binding::parse(claim, &values).unwrap()
                })
                .collect(),
        )
    };
    let token = claims(json!({
        "repository_owner": "acme",
        "ref": "refs/heads/main",
        "groups": ["dev", "release"],
        "run_attempt": 2,
        "fork": false,
        "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "deployer"}},
    }));
    let ok = |b: BoundClaims| b.check(&token).unwrap();
    let fails = |b: BoundClaims, claim: &str| {
        let mismatch = b.check(&token).unwrap_err();
        assert_eq!(mismatch.claim, claim);
    };
    ok(bound(&[("repository_owner", &["acme"])]));
    ok(bound(&[("repository_owner", &["other", "acme"])]));
    ok(bound(&[
        ("repository_owner", &["acme"]),
        ("ref", &["refs/heads/*"]),
    ]));
    fails(
        bound(&[("repository_owner", &["acme"]), ("ref", &["refs/tags/*"])]),
        "ref",
    );
    ok(bound(&[("groups", &["release"])]));
    fails(bound(&[("groups", &["admin"])]), "groups");
    ok(bound(&[("run_attempt", &["2"])]));
    ok(bound(&[("fork", &["false"])]));
    ok(bound(&[("/kubernetes.io/namespace", &["payments"])]));
    ok(bound(&[(
        "/kubernetes.io/serviceaccount/name",
        &["deploy*"],
    )]));
    fails(
        bound(&[("/kubernetes.io/namespace", &["kube-system"])]),
        "/kubernetes.io/namespace",
    );
    fails(bound(&[("kubernetes.io", &["*"])]), "kubernetes.io");
    fails(bound(&[("environment", &["*"])]), "environment");
    assert!(
        bound(&[("environment", &["prod"])])
            .check(&token)
            .unwrap_err()
            .missing
    );
    assert!(Binding::parse("ref", &[]).is_err());
    assert!(Binding::parse("", &["x".to_owned()]).is_err());
    assert!(Binding::parse("/a//b", &["x".to_owned()]).is_err());
}

#[test]
fn templates_parse_placeholders_and_are_checked_at_load() {
    let ok = |text: &str| Template::parse(text).unwrap();
    assert_eq!(
        ok("ci/github/{repository}")
            .claims()
            .map(|c| c.as_str())
            .collect::<Vec<_>>(),
        ["repository"]
    );
    assert_eq!(ok("{run_id}-{run_attempt}").claims().count(), 2);
    for bad in ["", "ci/{", "ci/}", "ci/{}", "ci/{a{b}}", "ci/{a}}"] {
        assert!(Template::parse(bad).is_err(), "{bad:?} parsed");
    }
    ok("ci/github/{repository}").check_path().unwrap();
    ok("k8s/{/kubernetes.io/namespace}/{/kubernetes.io/serviceaccount/name}")
        .check_path()
        .unwrap();
    for bad in ["ci//{a}", "ci/{a}/", "ci/../{a}", "ci/a b/{a}", "./{a}"] {
        assert!(ok(bad).check_path().is_err(), "{bad:?} passed");
    }
    ok("{run_id}-{run_attempt}").check_task().unwrap();
    assert!(ok("{run_id}/{run_attempt}").check_task().is_err());
}

#[test]
fn templates_render_claims_with_slashes_but_only_valid_segments() {
    let template = Template::parse("ci/github/{repository}").unwrap();
    let render = |value: Value| template.render_path(&claims(json!({ "repository": value })));
    assert_eq!(render(json!("acme/app")).unwrap(), "ci/github/acme/app");
    assert_eq!(
        render(json!("acme/my_app-2.0")).unwrap(),
        "ci/github/acme/my_app-2.0"
    );
    assert_eq!(render(json!(42)).unwrap(), "ci/github/42");
    for (value, problem) in [
        (json!(".."), "a '.' or '..' segment"),
        (json!("acme/."), "a '.' or '..' segment"),
        (json!("acme//app"), "an empty segment"),
        (json!("/acme"), "an empty segment"),
        (json!(""), "an empty segment"),
        (json!("acme app"), "the character ' '"),
        (json!("acme/app%2F.."), "the character '%'"),
        (json!(1.5), "is not a string"),
        (json!(true), "is not a string"),
        (json!(null), "is not a string"),
    ] {
        let error = render(value.clone()).unwrap_err();
        assert_eq!(error.subject, "claim \"repository\"", "{value}");
        assert!(error.problem.contains(problem), "{value}: {error}");
    }
    // A literal next to a claim: "." next to "x" is a fine segment, but a
    // claim of "." is refused on its own.
    let dotted = Template::parse("ci/v{version}").unwrap();
    assert_eq!(
        dotted
            .render_path(&claims(json!({"version": "1.2"})))
            .unwrap(),
        "ci/v1.2"
    );
    assert!(
        dotted
            .render_path(&claims(json!({"version": "."})))
            .is_err()
    );
    let task = Template::parse("{run_id}-{run_attempt}").unwrap();
    assert_eq!(
        task.render_task(&claims(json!({"run_id": "4711", "run_attempt": 3})))
            .unwrap()
            .to_string(),
        "4711-3"
    );
    assert!(
        task.render_task(&claims(json!({"run_id": "4711"})))
            .is_err()
    );
}

/// A JWKS source that counts reads and can be told what to serve.
#[derive(Debug)]
struct Counting {
    reads: AtomicUsize,
    serving: Mutex<Result<Vec<u8>, String>>,
}

impl Default for Counting {
    fn default() -> Self {
        Self {
            reads: AtomicUsize::new(0),
            serving: Mutex::new(Err("nothing served yet".to_owned())),
        }
    }
}

impl Counting {
    fn serve(&self, signers: &[&Signer]) {
        let keys: Vec<Value> = signers.iter().map(|s| s.jwk()).collect();
        *self.serving.lock().unwrap() = Ok(json!({ "keys": keys }).to_string().into_bytes());
    }

    fn fail(&self) {
        *self.serving.lock().unwrap() = Err("connection refused".to_owned());
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Fetch for Counting {
    async fn fetch(&self) -> Result<Vec<u8>, String> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.serving.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn keys_are_read_on_first_use_and_again_on_an_unknown_kid_at_most_every_ten_seconds() {
    let old = Signer::ec("old");
    let new = Signer::ec("new");
    let source = Arc::new(Counting::default());
    source.serve(&[&old]);
    let keys = KeySet::new(source.clone());
    let t0 = now();
    keys.key("old", t0).await.unwrap();
    keys.key("old", t0 + Duration::from_secs(1)).await.unwrap();
    assert_eq!(source.reads(), 1, "cached");

    // The issuer rotates: the new kid is unknown until read again.
    source.serve(&[&old, &new]);
    let soon = t0 + Duration::from_secs(5);
    assert_eq!(
        keys.key("new", soon).await.unwrap_err(),
        KeyError::UnknownKid
    );
    assert_eq!(source.reads(), 1, "rate-limited: read 5s ago");
    let later = t0 + MIN_REFRESH;
    keys.key("new", later).await.unwrap();
    assert_eq!(source.reads(), 2);

    // A kid nobody has: one read per ten seconds however often it comes.
    for second in 0..30 {
        let at = later + Duration::from_secs(second);
        assert_eq!(
            keys.key("bogus", at).await.unwrap_err(),
            KeyError::UnknownKid
        );
    }
    assert_eq!(
        source.reads(),
        2 + 2,
        "at +10s and +20s after the last read"
    );
}

#[tokio::test]
async fn old_keys_are_read_again_and_a_failed_read_keeps_them() {
    let key = Signer::ec("k");
    let source = Arc::new(Counting::default());
    source.serve(&[&key]);
    let keys = KeySet::new(source.clone());
    let t0 = now();
    keys.key("k", t0).await.unwrap();
    keys.key("k", t0 + MAX_AGE - Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(source.reads(), 1);
    source.fail();
    keys.key("k", t0 + MAX_AGE).await.unwrap();
    assert_eq!(
        source.reads(),
        2,
        "read again when old; the failure keeps them"
    );
    keys.key("k", t0 + MAX_AGE + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(source.reads(), 2, "and not again for ten seconds");
}

#[tokio::test]
async fn with_no_keys_at_all_tokens_are_refused_as_unavailable() {
    let source = Arc::new(Counting::default());
    source.fail();
    let keys = KeySet::new(source.clone());
    match keys.key("k", now()).await.unwrap_err() {
        KeyError::Unavailable(reason) => assert!(reason.contains("connection refused"), "{reason}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    // Through the attestor: UNAVAILABLE, naming the provider.
    let error = OidcError::KeysUnavailable {
        provider: "github".to_owned(),
        reason: "connection refused".to_owned(),
    };
    assert!(error.is_unavailable());
    source.serve(&[&Signer::ec("k")]);
    keys.key("k", now() + MIN_REFRESH).await.unwrap();
}

#[tokio::test]
async fn a_jwks_file_that_cannot_be_read_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let error = OidcAttestor::new(
        vec![provider(&missing)],
        TrustDomain::new("example.org").unwrap(),
        now(),
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("jwks_file: cannot read"),
        "{error}"
    );
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "[1, 2]").unwrap();
    let error = OidcAttestor::new(
        vec![provider(&garbage)],
        TrustDomain::new("example.org").unwrap(),
        now(),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("not a JWKS document"), "{error}");
}

#[test]
fn a_jwks_url_must_be_https() {
    let error = jwks::UrlSource::new("http://issuer.example/jwks", None).unwrap_err();
    assert!(error.contains("only https://"), "{error}");
}

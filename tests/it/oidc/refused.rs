//! One test per refused token: each gets its own status and message, and
//! leaves no grant (an admin's ListGrants shows none for its SPIFFE ID).

use jitid::client::SvidRequest;
use jitid::proto::v1 as pb;
use serde_json::{Value, json};

use super::with;
use crate::support::ADMIN;
use crate::support::oidc::{
    GITHUB_APP, GITLAB_APP, OidcEnv, b64, github_claims, gitlab_claims, unix_now,
};

/// Sends `token` for a new X.509-SVID and a new JWT-SVID; both must be
/// refused with `code` and a message containing `says`, and no grant is
/// recorded for `subject`.
async fn refused(oidc: &OidcEnv, token: &str, code: tonic::Code, says: &str, subject: &str) {
    let client = oidc.client(token).await;
    let x509 = client
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap_err();
    let jwt = client
        .fetch_jwt_svid(&SvidRequest::entitlement("ci-publish"), &["aud".to_owned()])
        .await
        .unwrap_err();
    for error in [x509, jwt] {
        assert_eq!(error.code(), Some(code), "{error}");
        assert!(error.to_string().contains(says), "{says:?} not in {error}");
        assert!(!error.to_string().contains(token), "the token in {error}");
    }
    let grants = oidc
        .env
        .client_for(ADMIN)
        .await
        .list_grants(pb::ListGrantsRequest {
            subject: subject.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(grants.is_empty(), "{grants:?}");
}

macro_rules! refused {
    ($($name:ident: |$oidc:ident| $token:expr, $code:ident, $says:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            let $oidc = OidcEnv::start().await;
            let token: String = $token;
            refused(&$oidc, &token, tonic::Code::$code, $says, GITHUB_APP).await;
            assert_eq!($oidc.env.grants(), 0, "nothing recorded");
        }
    )*};
}

fn github(changes: Value) -> Value {
    with(github_claims(), changes)
}

/// A token with `header` and `claims`, and no signature or a made-up one.
fn unsigned(header: Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

refused! {
    wrong_audience: |oidc| oidc.github_ec.sign(&github(json!({"aud": ["other", "more"]}))),
        Unauthenticated, "OIDC token: audience \"other\" not accepted";
    wrong_issuer: |oidc| oidc.github_ec.sign(&github(json!({"iss": "https://evil.example"}))),
        Unauthenticated, "OIDC token: issuer \"https://evil.example\" is not configured";
    expired: |oidc| oidc.github_rsa.sign(&github(json!({"exp": unix_now() - 1, "iat": unix_now() - 600, "nbf": unix_now() - 600}))),
        Unauthenticated, "OIDC token: it has expired";
    not_yet_valid: |oidc| oidc.github_ec.sign(&github(json!({"nbf": unix_now() + 240}))),
        Unauthenticated, "OIDC token: it is not valid yet (nbf)";
    issued_in_the_future: |oidc| oidc.github_ec.sign(&github(json!({"iat": unix_now() + 240}))),
        Unauthenticated, "OIDC token: it is issued in the future (iat)";
    bad_signature: |oidc| {
        // Signed by another key under the issuer's kid.
        let impostor = crate::support::oidc::Signer::ec("gh-ec-1");
        let _ = &oidc;
        impostor.sign(&github_claims())
    }, Unauthenticated, "OIDC token: the signature does not verify";
    tampered_claims: |oidc| {
        let token = oidc.github_ec.sign(&github_claims());
        let parts: Vec<&str> = token.split('.').collect();
        let forged = b64(github(json!({"repository": "acme/payments"})).to_string().as_bytes());
        format!("{}.{forged}.{}", parts[0], parts[2])
    }, Unauthenticated, "OIDC token: the signature does not verify";
    alg_none: |oidc| {
        let _ = &oidc;
        unsigned(json!({"alg": "none", "kid": "gh-rsa-1"}), &github_claims(), b"")
    }, Unauthenticated, "OIDC token: alg none is not allowed";
    hs256_keyed_with_the_public_key: |oidc| {
        // The classic: an HMAC over the issuer's own public key, which a
        // verifier that trusts the header's alg would accept.
        let header = json!({"alg": "HS256", "kid": "gh-rsa-1", "typ": "JWT"});
        let claims = github_claims();
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let public = oidc.github_rsa.jwk().to_string();
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, public.as_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", b64(tag.as_ref()))
    }, Unauthenticated, "OIDC token: alg \"HS256\" is not allowed (RS256 or ES256 only)";
    unknown_kid: |oidc| oidc.github_ec.sign_with(&json!({"kid": "gh-ec-9"}), &github_claims()),
        Unauthenticated, "OIDC token: unknown kid \"gh-ec-9\" for issuer \"github\"";
    a_claim_that_fails_a_binding: |oidc| oidc.github_ec.sign(&github(json!({"repository_owner": "evil"}))),
        PermissionDenied, "OIDC token: claim \"repository_owner\" does not match its binding: it must be \"acme\"";
    a_claim_that_would_put_dotdot_into_the_id: |oidc| oidc.github_ec.sign(&github(json!({"repository": "acme/.."}))),
        PermissionDenied, "claim \"repository\" would put a '.' or '..' segment into the SPIFFE ID";
    a_claim_that_would_put_an_empty_segment_into_the_id: |oidc| oidc.github_ec.sign(&github(json!({"repository": "acme//app"}))),
        PermissionDenied, "claim \"repository\" would put an empty segment into the SPIFFE ID";
    a_claim_that_would_put_a_foreign_character_into_the_id: |oidc| oidc.github_ec.sign(&github(json!({"repository": "acme/app%2F.."}))),
        PermissionDenied, "claim \"repository\" would put the character '%', which is not one of A-Z a-z 0-9 . - _";
}

#[tokio::test]
async fn a_replayed_token_is_refused_and_makes_no_second_grant() {
    let oidc = OidcEnv::start().await;
    let token = oidc.github_ec.sign(&github_claims());
    oidc.client(&token)
        .await
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    let client = oidc.client(&token).await;
    for _ in 0..2 {
        let error = client
            .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(tonic::Code::Unauthenticated), "{error}");
        assert!(
            error.to_string().contains("OIDC token already used"),
            "{error}"
        );
    }
    assert_eq!(oidc.env.grants(), 1, "only the first use made a grant");
}

#[tokio::test]
async fn an_unknown_kid_at_the_https_issuer_is_looked_up_once_then_refused() {
    let oidc = OidcEnv::start().await;
    let token = oidc
        .gitlab
        .sign_with(&json!({"kid": "gl-ec-9"}), &gitlab_claims());
    refused(
        &oidc,
        &token,
        tonic::Code::Unauthenticated,
        "OIDC token: unknown kid \"gl-ec-9\" for issuer \"gitlab\"",
        GITLAB_APP,
    )
    .await;
    // Read on first use, and at most once more for the unknown kid (once
    // per ten seconds: the rate itself is a unit test on a manual clock,
    // `keys_are_read_on_first_use_and_again_on_an_unknown_kid_...`).
    assert!(
        (1..=2).contains(&oidc.jwks.fetches()),
        "{}",
        oidc.jwks.fetches()
    );
    // The issuer's own keys still serve.
    oidc.client(&oidc.gitlab.sign(&gitlab_claims()))
        .await
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_issuer_whose_keys_cannot_be_read_is_unavailable() {
    let oidc = OidcEnv::start().await;
    oidc.jwks.serve("not json".to_owned());
    refused(
        &oidc,
        &oidc.gitlab.sign(&gitlab_claims()),
        tonic::Code::Unavailable,
        "OIDC token: no keys of issuer \"gitlab\" are available",
        GITLAB_APP,
    )
    .await;
}

//! JWT-SVIDs over the real server, validated by the `spiffe` crate.

use jitid::client::SvidRequest;

use crate::support::svid::check_jwt_svid;
use crate::support::{AGENT, TestEnv};

#[tokio::test]
async fn issues_a_jwt_that_verifies_against_the_bundle() {
    let env = TestEnv::start().await;
    let client = env.client_for(AGENT).await;
    let audiences = vec!["kb.example.org".to_owned(), "search.example.org".to_owned()];
    let svid = client
        .fetch_jwt_svid(
            &SvidRequest::entitlement("agent-research").task("research-7"),
            &audiences,
        )
        .await
        .unwrap();
    let bundle = client.fetch_bundle().await.unwrap();
    for audience in &audiences {
        check_jwt_svid(&svid.token, &bundle.spiffe_json, audience, AGENT);
    }
    let (header, claims) =
        check_jwt_svid(&svid.token, &bundle.spiffe_json, "kb.example.org", AGENT);
    assert_eq!(claims["sub"], AGENT);
    assert_eq!(claims["aud"], serde_json::json!(audiences));
    assert_eq!(claims["scope"], "kb:read tool:search");
    assert_eq!(claims["jti"], svid.jti.as_str());
    assert_eq!(claims["jitid_grant"], svid.grant.grant_id.as_str());
    assert_eq!(claims["jitid_task"], "research-7");
    assert_eq!(claims["jitid_entitlement"], "agent-research");
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert!(
        (300..=310).contains(&lifetime),
        "default 5m TTL, iat back-dated: {lifetime}"
    );

    let bundle_json: serde_json::Value = serde_json::from_slice(&bundle.spiffe_json).unwrap();
    let jwt_key = bundle_json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["use"] == "jwt-svid")
        .unwrap();
    assert_eq!(jwt_key["kid"], header["kid"]);
    assert_eq!(env.grants(), 1);
}

#[tokio::test]
async fn bundle_is_spiffe_conformant_and_public() {
    let env = TestEnv::start().await;
    // No client certificate: the bundle is public.
    let client = env.client_with(None).await;
    let bundle = client.fetch_bundle().await.unwrap();
    assert_eq!(bundle.trust_domain, "example.org");
    assert_eq!(bundle.x509_authorities, env.roots());
    let json: serde_json::Value = serde_json::from_slice(&bundle.spiffe_json).unwrap();
    assert!(json["spiffe_sequence"].as_u64().unwrap() > 0);
    assert_eq!(json["spiffe_refresh_hint"], 300);
    for key in json["keys"].as_array().unwrap() {
        match key["use"].as_str().unwrap() {
            "x509-svid" => {
                assert!(key.get("kid").is_none(), "x509-svid keys carry no kid");
                assert_eq!(key["x5c"].as_array().unwrap().len(), 1);
            }
            "jwt-svid" => assert!(key["kid"].is_string()),
            other => panic!("unexpected use {other}"),
        }
    }
    // The `spiffe` crate reads the X.509 authorities.
    let der: Vec<u8> = bundle
        .x509_authorities
        .iter()
        .flat_map(|c| c.to_vec())
        .collect();
    spiffe::X509Bundle::parse_from_der(spiffe::TrustDomain::new("example.org").unwrap(), &der)
        .unwrap();
}

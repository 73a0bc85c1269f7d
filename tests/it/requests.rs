//! Malformed and unauthorised requests: each gets a specific status that
//! names the problem, and nothing is recorded.

use std::time::Duration;

use jitid::client::{Client, ClientError, SvidRequest};
use jitid::proto::v1 as pb;

use crate::support::{AGENT, CI_RUNNER, TestEnv};

fn assert_status(error: &ClientError, code: tonic::Code, message: &str) {
    match error {
        ClientError::Status {
            code: got,
            message: text,
            ..
        } => {
            assert_eq!(*got, code, "{error}");
            assert!(text.contains(message), "expected {message:?} in {text:?}");
        }
        other => panic!("expected {code:?}, got {other}"),
    }
}

async fn x509_error(client: &Client, request: SvidRequest) -> ClientError {
    client.fetch_x509_svid(&request).await.unwrap_err()
}

fn csr() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec()
}

#[tokio::test]
async fn malformed_csr() {
    let env = TestEnv::start().await;
    let client = env.client_for(CI_RUNNER).await;
    let request = SvidRequest::entitlement("ci-publish");
    let error = client
        .issue_x509_from_csr(&request, b"not a csr".to_vec())
        .await
        .unwrap_err();
    assert_status(
        &error,
        tonic::Code::InvalidArgument,
        "csr is not a DER PKCS#10 certification request",
    );
    let error = client
        .issue_x509_from_csr(&request, Vec::new())
        .await
        .unwrap_err();
    assert_status(&error, tonic::Code::InvalidArgument, "csr is empty");
    let error = client
        .issue_x509_from_csr(&request, vec![0x30; 9000])
        .await
        .unwrap_err();
    assert_status(
        &error,
        tonic::Code::InvalidArgument,
        "csr is larger than 8192 bytes",
    );
    assert_eq!(env.grants(), 0);
}

#[tokio::test]
async fn csr_with_a_bad_signature() {
    let env = TestEnv::start().await;
    let client = env.client_for(CI_RUNNER).await;
    let mut der = csr();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let error = client
        .issue_x509_from_csr(&SvidRequest::entitlement("ci-publish"), der)
        .await
        .unwrap_err();
    assert_status(
        &error,
        tonic::Code::InvalidArgument,
        "csr signature does not verify",
    );
    assert_eq!(env.grants(), 0);
}

#[tokio::test]
async fn ttl_above_the_maximum_is_refused_not_clamped() {
    let env = TestEnv::start().await;
    let client = env.client_for(CI_RUNNER).await;
    let error = x509_error(
        &client,
        SvidRequest::entitlement("ci-publish").ttl(Duration::from_secs(601)),
    )
    .await;
    assert_status(
        &error,
        tonic::Code::InvalidArgument,
        "ttl 10m 1s exceeds the maximum of 10m for entitlement \"ci-publish\"",
    );
    let error = client
        .fetch_jwt_svid(
            &SvidRequest::entitlement("ci-publish").ttl(Duration::from_secs(3600)),
            &["aud".to_owned()],
        )
        .await
        .unwrap_err();
    assert_status(
        &error,
        tonic::Code::InvalidArgument,
        "exceeds the maximum of 10m",
    );
    assert_eq!(env.grants(), 0);
}

#[tokio::test]
async fn unknown_entitlement_and_unentitled_actions() {
    let env = TestEnv::start().await;
    let client = env.client_for(CI_RUNNER).await;
    let error = x509_error(&client, SvidRequest::entitlement("deploy-prod")).await;
    assert_status(
        &error,
        tonic::Code::PermissionDenied,
        "unknown entitlement \"deploy-prod\"",
    );
    let error = x509_error(&client, SvidRequest::entitlement("agent-research")).await;
    assert_status(
        &error,
        tonic::Code::PermissionDenied,
        "spiffe://example.org/ci/runner-1 may not request entitlement \"agent-research\"",
    );
    let error = x509_error(
        &client,
        SvidRequest::entitlement("ci-publish").with_actions(&["publish:artifacts", "deploy:prod"]),
    )
    .await;
    assert_status(
        &error,
        tonic::Code::PermissionDenied,
        "actions [\"deploy:prod\"] are not in entitlement \"ci-publish\"",
    );
    let error = x509_error(&client, SvidRequest::actions(&["kb:read"])).await;
    assert_status(&error, tonic::Code::PermissionDenied, "no entitlement that");
    assert_eq!(env.grants(), 0);
}

#[tokio::test]
async fn malformed_fields_name_the_field() {
    let env = TestEnv::start().await;
    let client = env.client_for(CI_RUNNER).await;
    let error = x509_error(&client, SvidRequest::default()).await;
    assert_status(
        &error,
        tonic::Code::InvalidArgument,
        "names neither an entitlement nor actions",
    );
    let error = x509_error(&client, SvidRequest::entitlement("ci-publish").task("a/b")).await;
    assert_status(
        &error,
        tonic::Code::InvalidArgument,
        "task_id: \"a/b\" contains '/'",
    );
    let error = x509_error(&client, SvidRequest::actions(&["read source"])).await;
    assert_status(
        &error,
        tonic::Code::InvalidArgument,
        "actions: \"read source\" contains ' '",
    );
    let error = x509_error(
        &client,
        SvidRequest::entitlement("ci-publish").justification(&"x".repeat(1025)),
    )
    .await;
    assert_status(
        &error,
        tonic::Code::InvalidArgument,
        "justification: must be at most 1024 bytes of printable text",
    );
    let mut grpc = client.grpc();
    // Negative, or nanoseconds outside the protobuf range.
    for (seconds, nanos) in [(-5, 0), (60, 1_000_000_000)] {
        let error: ClientError = grpc
            .issue_x509_svid(pb::IssueX509SvidRequest {
                grant: Some(pb::GrantSpec {
                    entitlement: "ci-publish".to_owned(),
                    ttl: Some(prost_types::Duration { seconds, nanos }),
                    ..Default::default()
                }),
                csr: csr(),
            })
            .await
            .unwrap_err()
            .into();
        assert_status(
            &error,
            tonic::Code::InvalidArgument,
            "ttl: must not be negative, and its nanos must be below 10^9",
        );
    }
    assert_eq!(env.grants(), 0);
}

#[tokio::test]
async fn empty_audience() {
    let env = TestEnv::start().await;
    let client = env.client_for(AGENT).await;
    let request = SvidRequest::entitlement("agent-research");
    let error = client.fetch_jwt_svid(&request, &[]).await.unwrap_err();
    assert_status(
        &error,
        tonic::Code::InvalidArgument,
        "audiences: at least one audience is required",
    );
    let error = client
        .fetch_jwt_svid(&request, &[String::new()])
        .await
        .unwrap_err();
    assert_status(
        &error,
        tonic::Code::InvalidArgument,
        "audiences: an audience is empty",
    );
    let many: Vec<String> = (0..9).map(|i| format!("aud-{i}")).collect();
    let error = client.fetch_jwt_svid(&request, &many).await.unwrap_err();
    assert_status(
        &error,
        tonic::Code::InvalidArgument,
        "audiences: more than 8 audiences",
    );
    assert_eq!(env.grants(), 0);
}

#[tokio::test]
async fn oversized_request() {
    let env = TestEnv::start().await;
    let client = env.client_for(CI_RUNNER).await;
    let error = client
        .issue_x509_from_csr(
            &SvidRequest::entitlement("ci-publish"),
            vec![0x30; 100 * 1024],
        )
        .await
        .unwrap_err();
    assert_status(
        &error,
        tonic::Code::OutOfRange,
        "decoded message length too large: found 102",
    );
    assert_eq!(env.grants(), 0);
    // The connection stays usable for a well-formed request.
    client
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    assert_eq!(env.grants(), 1);
}

//! X.509-SVIDs over the real server: shape, grant, and the CSR rules.

use std::time::{Duration, SystemTime};

use jitid::client::SvidRequest;

use crate::support::svid::check_x509_svid;
use crate::support::{CI_RUNNER, TestEnv};

#[tokio::test]
async fn issues_a_conformant_svid_under_a_new_grant() {
    let env = TestEnv::start().await;
    let client = env.client_for(CI_RUNNER).await;
    let before = SystemTime::now();
    let svid = client
        .fetch_x509_svid(
            &SvidRequest::entitlement("ci-publish")
                .with_actions(&["publish:artifacts"])
                .task("build-42")
                .ttl(Duration::from_secs(120))
                .justification("release 1.2.3"),
        )
        .await
        .unwrap();

    let extension = check_x509_svid(&svid.chain, Some(&svid.key_pkcs8), &svid.bundle, CI_RUNNER);
    assert_eq!(extension.grant_id, svid.grant.grant_id);
    assert_eq!(extension.task_id, "build-42");
    assert_eq!(extension.entitlement, "ci-publish");
    assert_eq!(extension.actions, ["publish:artifacts"]);

    assert_eq!(svid.grant.spiffe_id, CI_RUNNER);
    assert_eq!(svid.grant.actions, ["publish:artifacts"]);
    let ttl = svid.grant.expires_at.duration_since(before).unwrap();
    assert!(
        ttl <= Duration::from_secs(121) && ttl >= Duration::from_secs(115),
        "{ttl:?}"
    );
    assert_eq!(svid.bundle, env.roots());

    // The grant and its credential are recorded.
    assert_eq!(env.grants(), 1);
    let grant_id = jitid::grant::GrantId::parse(&svid.grant.grant_id).unwrap();
    use jitid::store::GrantStore;
    let grant = env.store.grant(grant_id).await.unwrap().unwrap();
    assert_eq!(grant.justification, "release 1.2.3");
    let credentials = env.store.credentials(grant_id).await.unwrap();
    assert_eq!(
        credentials[0].id,
        jitid::grant::CredentialId::X509Serial(svid.serial.clone())
    );
}

#[tokio::test]
async fn defaults_to_the_whole_entitlement_and_its_default_ttl() {
    let env = TestEnv::start().await;
    let client = env.client_for(CI_RUNNER).await;
    let svid = client
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    assert_eq!(svid.grant.actions, ["read:source", "publish:artifacts"]);
    assert!(
        svid.grant.task_id.starts_with("task-"),
        "server generated a task id"
    );
    let ttl = svid
        .grant
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(
        ttl > Duration::from_secs(280) && ttl <= Duration::from_secs(300),
        "{ttl:?}"
    );

    // Naming only actions picks the entitlement that covers them.
    let svid = client
        .fetch_x509_svid(&SvidRequest::actions(&["read:source"]))
        .await
        .unwrap();
    assert_eq!(svid.grant.entitlement, "ci-publish");
}

#[tokio::test]
async fn csr_subject_sans_and_ca_request_are_ignored() {
    let env = TestEnv::start().await;
    let client = env.client_for(CI_RUNNER).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://example.org/admin".try_into().unwrap(),
    ));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let csr = params.serialize_request(&key).unwrap();

    let svid = client
        .issue_x509_from_csr(&SvidRequest::entitlement("ci-publish"), csr.der().to_vec())
        .await
        .unwrap();
    // Still the attested ID, still not a CA: check_x509_svid asserts both.
    check_x509_svid(&svid.chain, None, &svid.bundle, CI_RUNNER);
    let (_, leaf) = x509_parser::parse_x509_certificate(svid.chain[0].as_ref()).unwrap();
    let names = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .len();
    assert_eq!(names, 1, "no DNS SAN from the CSR");
    assert_eq!(
        leaf.public_key().raw,
        x509_parser::parse_x509_certificate(
            rcgen::CertificateParams::default()
                .self_signed(&key)
                .unwrap()
                .der()
        )
        .unwrap()
        .1
        .public_key()
        .raw,
        "the certificate is for the CSR's key"
    );
}

#[tokio::test]
async fn health_reports_serving() {
    let env = TestEnv::start().await;
    let client = env.client_with(None).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(client.channel());
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "jitid.v1.Issuer".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let env = TestEnv::start().await;
    let client = env.client_with(None).await;
    let mut reflection = ServerReflectionClient::new(client.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"jitid.v1.Issuer".to_owned()), "{names:?}");
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
}

#[tokio::test]
async fn the_server_presents_an_svid_of_the_trust_domain() {
    let env = TestEnv::start().await;
    let mut roots = rustls::RootCertStore::empty();
    for root in env.roots() {
        roots.add(root).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(jitid::crypto::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let chain: Vec<_> = tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap()
        .iter()
        .map(|c| c.clone().into_owned())
        .collect();
    let (_, leaf) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
    let names: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        names,
        [
            "URI(spiffe://example.org/jitid)",
            "DNSName(localhost)",
            "IPAddress(7f:00:00:01)"
        ]
    );
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    let lifetime = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert!(lifetime <= 3600 + 10, "short-lived: {lifetime}");
}

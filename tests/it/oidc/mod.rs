//! Attestation by OIDC token over the real server and TLS: tokens minted
//! here from the tests' own keys (RS256 and ES256), JWKS from a file and
//! from a local HTTPS endpoint, through the real client and the built
//! `jitid` binary. `refused.rs` has one test per refused token,
//! `replicas.rs` the replay through a second replica on a shared Redis.

mod refused;
mod replicas;

use std::time::{Duration, SystemTime};

use jitid::client::{ClientError, SvidRequest};
use jitid::proto::v1 as pb;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

use crate::support::oidc::{
    GITHUB_APP, GITLAB_APP, OidcEnv, TokenEndpoint, eventually, github_claims, gitlab_claims,
    merge, unix_now,
};
use crate::support::svid::{check_jwt_svid, check_x509_svid};
use crate::support::{ADMIN, CI_RUNNER, exited};

fn with(mut claims: Value, changes: Value) -> Value {
    merge(&mut claims, &changes);
    claims
}

fn stdout_json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{error}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn chain(path: &std::path::Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

// It runs the CLI, which blocks: the server needs threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_token_gets_an_x509_and_a_jwt_svid_named_by_its_claims_through_the_cli() {
    let oidc = OidcEnv::start().await;
    // RS256, its key from the JWKS file.
    let token = oidc.github_rsa.sign(&github_claims());
    let file = oidc.token_file(&token);
    let file = file.to_str().unwrap();
    let out = oidc.dir.path().join("svid");
    let fetched = oidc.cli(
        &[("JITID_OIDC_TOKEN_FILE", file)],
        &[
            "fetch",
            "x509",
            "--entitlement",
            "ci-publish",
            "--out",
            out.to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    exited(&fetched, 0);
    let grant = stdout_json(&fetched);
    assert_eq!(grant["spiffe_id"], GITHUB_APP);
    assert_eq!(grant["task_id"], "4711-1", "the provider's task template");
    let key = std::fs::read(out.join("svid.key")).unwrap();
    let key = PrivateKeyDer::from_pem_slice(&key).unwrap();
    check_x509_svid(
        &chain(&out.join("svid.pem")),
        Some(key.secret_der()),
        &oidc.env.roots(),
        GITHUB_APP,
    );

    // The same token mints a JWT-SVID under the grant it made.
    let grant_id = grant["grant_id"].as_str().unwrap();
    let fetched = oidc.cli(
        &[],
        &[
            "fetch",
            "jwt",
            "--oidc-token-file",
            file,
            "--grant",
            grant_id,
            "--audience",
            "artifacts.example.org",
        ],
    );
    let jwt = exited(&fetched, 0);
    let bundle = oidc
        .env
        .client_with(None)
        .await
        .fetch_bundle()
        .await
        .unwrap();
    let (_, claims) = check_jwt_svid(
        jwt.trim(),
        &bundle.spiffe_json,
        "artifacts.example.org",
        GITHUB_APP,
    );
    assert_eq!(claims["jitid_grant"], grant_id);
    assert_eq!(oidc.env.grants(), 1, "one token, one grant");
}

#[tokio::test]
async fn es256_and_rs256_tokens_attest_with_keys_from_a_file_and_from_https() {
    let oidc = OidcEnv::start().await;
    // ES256, its key fetched over HTTPS from the issuer's JWKS URL.
    let client = oidc.client(&oidc.gitlab.sign(&gitlab_claims())).await;
    let svid = client
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    assert_eq!(svid.grant.spiffe_id, GITLAB_APP);
    check_x509_svid(
        &svid.chain,
        Some(&svid.key_pkcs8),
        &oidc.env.roots(),
        GITLAB_APP,
    );
    assert_eq!(oidc.jwks.fetches(), 1);
    // A second token of that issuer: its keys are cached.
    let client = oidc.client(&oidc.gitlab.sign(&gitlab_claims())).await;
    let jwt = client
        .fetch_jwt_svid(&SvidRequest::entitlement("ci-publish"), &["aud".to_owned()])
        .await
        .unwrap();
    assert_eq!(jwt.grant.spiffe_id, GITLAB_APP);
    assert_eq!(oidc.jwks.fetches(), 1);

    // ES256 and RS256 from the file.
    for signer in [&oidc.github_ec, &oidc.github_rsa] {
        let client = oidc.client(&signer.sign(&github_claims())).await;
        let jwt = client
            .fetch_jwt_svid(&SvidRequest::entitlement("ci-publish"), &["aud".to_owned()])
            .await
            .unwrap();
        assert_eq!(jwt.grant.spiffe_id, GITHUB_APP);
    }
    assert_eq!(oidc.env.grants(), 4);
}

#[tokio::test]
async fn a_grant_attested_by_a_token_expires_no_later_than_the_token() {
    let oidc = OidcEnv::start().await;
    // ci-publish grants 5 minutes; this token has 90 seconds left.
    let exp = unix_now() + 90;
    let token = oidc
        .github_ec
        .sign(&with(github_claims(), json!({ "exp": exp })));
    let token_expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(exp);
    let client = oidc.client(&token).await;
    let svid = client
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    assert_eq!(svid.grant.expires_at, token_expiry);
    let extension = check_x509_svid(&svid.chain, None, &oidc.env.roots(), GITHUB_APP);
    let (_, leaf) = x509_parser::parse_x509_certificate(svid.chain[0].as_ref()).unwrap();
    assert!(leaf.validity().not_after.timestamp() <= exp as i64);
    let jwt = client
        .fetch_jwt_svid(
            &SvidRequest::under_grant(&extension.grant_id),
            &["aud".to_owned()],
        )
        .await
        .unwrap();
    assert!(jwt.grant.expires_at <= token_expiry);
    let record = oidc
        .env
        .client_for(ADMIN)
        .await
        .get_grant(&extension.grant_id)
        .await
        .unwrap();
    let expires_at = jitid::convert::system_time(&record.summary.unwrap().expires_at.unwrap());
    assert_eq!(expires_at, Some(token_expiry));
}

#[tokio::test]
async fn a_cedar_condition_on_a_claim_decides_the_request() {
    let oidc = OidcEnv::start().await;
    let release = SvidRequest::entitlement("ci-release");
    let main = oidc.client(&oidc.github_ec.sign(&github_claims())).await;
    let svid = main.fetch_x509_svid(&release).await.unwrap();
    assert_eq!(svid.grant.entitlement, "ci-release");

    let dev = oidc
        .client(&oidc.github_ec.sign(&with(
            github_claims(),
            json!({"ref": "refs/heads/dev", "run_id": "4712"}),
        )))
        .await;
    let error = dev.fetch_x509_svid(&release).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::PermissionDenied), "{error}");
    assert!(
        error
            .to_string()
            .contains("needs main-only: only the main branch releases"),
        "{error}"
    );
    // The same entitlement for a stored identity: the method is refused.
    let runner = oidc.env.client_for(CI_RUNNER).await;
    let error = runner.fetch_x509_svid(&release).await.unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::PermissionDenied), "{error}");
    assert!(
        error
            .to_string()
            .contains("requires attestation by oidc; the caller was attested by x509"),
        "{error}"
    );
    assert_eq!(oidc.env.grants(), 1);
}

// It runs the CLI, which blocks: the server needs threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_names_the_method_and_the_claims_of_each_request() {
    let oidc = OidcEnv::start().await;
    let token = oidc.github_rsa.sign(&github_claims());
    let svid = oidc
        .client(&token)
        .await
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();
    // A replay, refused, is in the trail too; the token never is.
    oidc.client(&token)
        .await
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap_err();
    // A failed attestation.
    let wrong = oidc
        .github_rsa
        .sign(&with(github_claims(), json!({"aud": "other"})));
    oidc.client(&wrong)
        .await
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap_err();
    // An identity's request, for contrast.
    oidc.env
        .client_for(CI_RUNNER)
        .await
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap();

    let search = |args: &[&str]| {
        let mut all = vec!["audit", "search", "--output", "json"];
        all.extend_from_slice(args);
        let output = oidc.env.cli(ADMIN, &all);
        let text = exited(&output, 0);
        assert!(
            !text.contains(&token) && !text.contains(&wrong),
            "a token in the trail"
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .collect::<Vec<_>>()
    };
    let received = search(&[
        "--grant",
        &svid.grant.grant_id,
        "--type",
        "request_received",
    ]);
    assert_eq!(received.len(), 1, "{received:#?}");
    let attestation = &received[0]["details"]["attestation"];
    assert_eq!(attestation["method"], "oidc", "{received:#?}");
    assert_eq!(attestation["provider"], "github");
    assert_eq!(attestation["facts"]["repository"], "acme/app");
    assert_eq!(attestation["facts"]["ref"], "refs/heads/main");
    assert_eq!(received[0]["actor"], GITHUB_APP);

    let all = search(&["--type", "request_received"]);
    let methods: Vec<&str> = all
        .iter()
        .map(|event| event["details"]["attestation"]["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["oidc", "oidc", "x509"], "{all:#?}");
    let refused = search(&["--subject", GITHUB_APP, "--type", "decision"]);
    assert!(
        refused
            .iter()
            .any(|event| event.to_string().contains("OIDC token already used")),
        "{refused:#?}"
    );
    // Recorded after the refusal is sent: wait for it.
    let failures = eventually("the authentication failure", async || {
        let failures = search(&["--type", "authentication_failure"]);
        (!failures.is_empty()).then_some(failures)
    })
    .await;
    assert!(
        failures[0]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("OIDC token: audience \"other\" not accepted"),
        "{failures:#?}"
    );
}

// It runs the CLI, which blocks: the server needs threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_actions_requests_its_token_from_the_runner() {
    let oidc = OidcEnv::start().await;
    let signer = oidc.github_ec.clone();
    let endpoint = TokenEndpoint::start(move |audience| {
        signer.sign(&with(github_claims(), json!({ "aud": audience })))
    })
    .await;
    let runner = [
        ("ACTIONS_ID_TOKEN_REQUEST_URL", endpoint.url()),
        (
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
            endpoint.request_token.clone(),
        ),
    ];
    let vars: Vec<(&str, &str)> = runner.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = oidc.dir.path().join("gh");
    let fetched = oidc.cli(
        &vars,
        &[
            "fetch",
            "x509",
            "--github-actions",
            "--entitlement",
            "ci-publish",
            "--out",
            out.to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    exited(&fetched, 0);
    assert_eq!(stdout_json(&fetched)["spiffe_id"], GITHUB_APP);
    assert_eq!(endpoint.audiences_asked(), ["jitid"]);

    // Another audience is asked for as given, and this server's GitHub
    // provider does not accept it.
    let refused = oidc.cli(
        &vars,
        &[
            "fetch",
            "jwt",
            "--github-actions",
            "--oidc-audience",
            "elsewhere",
            "--entitlement",
            "ci-publish",
            "--audience",
            "aud",
        ],
    );
    let text = exited(&refused, 3);
    assert!(
        text.contains("audience \"elsewhere\" not accepted"),
        "{text}"
    );
    assert_eq!(endpoint.audiences_asked(), ["jitid", "elsewhere"]);

    // Outside a job with id-token permission: a usage error that says so.
    let outside = oidc.cli(
        &[],
        &[
            "fetch",
            "jwt",
            "--github-actions",
            "--entitlement",
            "ci-publish",
            "--audience",
            "a",
        ],
    );
    let text = exited(&outside, 2);
    assert!(
        text.contains("ACTIONS_ID_TOKEN_REQUEST_URL is not set")
            && text.contains("id-token: write"),
        "{text}"
    );
    // A request token the endpoint does not know.
    let url = endpoint.url();
    let wrong = [
        ("ACTIONS_ID_TOKEN_REQUEST_URL", url.as_str()),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "wrong"),
    ];
    let text = exited(
        &oidc.cli(
            &wrong,
            &[
                "fetch",
                "jwt",
                "--github-actions",
                "--entitlement",
                "ci-publish",
                "--audience",
                "a",
            ],
        ),
        5,
    );
    assert!(text.contains("HTTP 403"), "{text}");
    assert!(!text.contains(&endpoint.request_token), "{text}");
}

/// The script `exec` runs: writes its environment where the test reads it.
const REPORT_ENV: &str = "env > \"$WORK/env\"";

// It runs the CLI, which blocks: the server needs threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_a_token_runs_under_its_one_grant_and_hands_down_no_attestation() {
    let oidc = OidcEnv::start().await;
    let signer = oidc.github_ec.clone();
    let endpoint = TokenEndpoint::start(move |audience| {
        signer.sign(&with(github_claims(), json!({ "aud": audience })))
    })
    .await;
    let work = oidc.dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let work = work.to_str().unwrap().to_owned();
    let url = endpoint.url();
    let file_token = oidc.github_rsa.sign(&with(
        github_claims(),
        json!({"run_id": "5000", "run_attempt": "3"}),
    ));
    let file = oidc.token_file(&file_token);
    for (how, vars) in [
        (
            "--github-actions",
            vec![
                ("WORK", work.as_str()),
                ("ACTIONS_ID_TOKEN_REQUEST_URL", url.as_str()),
                (
                    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                    endpoint.request_token.as_str(),
                ),
            ],
        ),
        (
            "",
            vec![
                ("WORK", work.as_str()),
                ("JITID_OIDC_TOKEN_FILE", file.to_str().unwrap()),
            ],
        ),
    ] {
        let mut args = vec![
            "exec",
            "--entitlement",
            "ci-publish",
            "--jwt-audience",
            "aud",
        ];
        if !how.is_empty() {
            args.push(how);
        }
        args.extend(["--", "/bin/sh", "-c", REPORT_ENV]);
        let run = oidc.cli(&vars, &args);
        let stderr = exited(&run, 0);
        let reported = std::fs::read_to_string(oidc.dir.path().join("work/env")).unwrap();
        let names: Vec<&str> = reported
            .lines()
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .collect();
        for name in [
            "JITID_CERT",
            "JITID_KEY",
            "JITID_OIDC_TOKEN_FILE",
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        ] {
            assert!(
                !names.contains(&name),
                "{how}: {name} handed down: {names:?}"
            );
        }
        assert!(
            names.contains(&"JITID_SVID") && names.contains(&"JITID_JWT"),
            "{names:?}"
        );
        assert!(
            !reported.contains(&file_token),
            "{how}: the token handed down"
        );
        // One grant, of the provider's task, ended with the command.
        let task = reported
            .lines()
            .find_map(|line| line.strip_prefix("JITID_TASK="))
            .unwrap()
            .to_owned();
        assert_eq!(task, if how.is_empty() { "5000-3" } else { "4711-1" });
        assert!(
            stderr.contains(&format!("task {task} ended (completed): 1 grant(s)")),
            "{stderr}"
        );
        let grants = oidc
            .env
            .client_for(ADMIN)
            .await
            .list_grants(pb::ListGrantsRequest {
                task_id: task.clone(),
                subject: GITHUB_APP.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(grants.len(), 1, "{how}: {grants:?}");
        assert_eq!(grants[0].state(), pb::GrantState::Completed);
    }
}

// It runs the CLI, which blocks: the server needs threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_and_a_token_together_are_refused() {
    let oidc = OidcEnv::start().await;
    let token = oidc.github_ec.sign(&github_claims());
    let client = jitid::client::Client::connect(oidc.env.client_config(oidc.env.addr, CI_RUNNER))
        .await
        .unwrap()
        .with_oidc_token(jitid::client::OidcToken::new(&token).unwrap());
    let error = client
        .fetch_x509_svid(&SvidRequest::entitlement("ci-publish"))
        .await
        .unwrap_err();
    match &error {
        ClientError::Status { code, message, .. } => {
            assert_eq!(*code, tonic::Code::InvalidArgument);
            assert!(message.contains("present one attestation"), "{message}");
        }
        other => panic!("expected a status, got {other}"),
    }
    // The CLI says so before it calls.
    let (cert, key) = oidc.env.identity_files(CI_RUNNER);
    let file = oidc.token_file(&token);
    let text = exited(
        &oidc.cli(
            &[
                ("JITID_CERT", cert.to_str().unwrap()),
                ("JITID_KEY", key.to_str().unwrap()),
                ("JITID_OIDC_TOKEN_FILE", file.to_str().unwrap()),
            ],
            &[
                "fetch",
                "jwt",
                "--entitlement",
                "ci-publish",
                "--audience",
                "a",
            ],
        ),
        2,
    );
    assert!(text.contains("not both"), "{text}");
    assert_eq!(oidc.env.grants(), 0);
}

//! OIDC issuers for the tests: signing keys the tests hold (RS256 and
//! ES256), tokens minted from them, their JWKS as a file and from a local
//! HTTPS endpoint with its own test CA, a stand-in for the GitHub Actions
//! token endpoint (plain HTTP on 127.0.0.1), and a server configured with
//! them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jitid::client::{Client, ClientConfig, OidcToken, RetryPolicy};
use jitid::store::GrantStore;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{TestEnv, jitid_bin};

pub const GITHUB: &str = "https://token.actions.githubusercontent.com";
pub const GITLAB: &str = "https://gitlab.example.org";
/// The SPIFFE ID the GitHub provider's template makes for acme/app.
pub const GITHUB_APP: &str = "spiffe://example.org/ci/github/acme/app";
/// The SPIFFE ID the GitLab provider's template makes for acme/app.
pub const GITLAB_APP: &str = "spiffe://example.org/ci/gitlab/acme/app";

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A signing key an issuer publishes.
pub enum Signer {
    Rsa(String, RsaKeyPair),
    Ec(String, EcdsaKeyPair),
}

impl Signer {
    pub fn rsa(kid: &str) -> Self {
        Self::Rsa(
            kid.to_owned(),
            RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
        )
    }

    pub fn ec(kid: &str) -> Self {
        Self::Ec(
            kid.to_owned(),
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        )
    }

    pub fn kid(&self) -> &str {
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

    pub fn jwk(&self) -> Value {
        match self {
            Self::Rsa(kid, key) => {
                let components = PublicKeyComponents::<Vec<u8>>::from(key.public_key());
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                       "n": b64(&components.n), "e": b64(&components.e)})
            }
            Self::Ec(kid, key) => {
                let point = key.public_key().as_ref();
                json!({"kty": "EC", "kid": kid, "crv": "P-256", "use": "sig",
                       "x": b64(&point[1..33]), "y": b64(&point[33..65])})
            }
        }
    }

    /// A token: `header` fields (null removes one) over `alg`, `kid`, `typ`.
    pub fn sign_with(&self, header: &Value, claims: &Value) -> String {
        let mut full = json!({"alg": self.alg(), "kid": self.kid(), "typ": "JWT"});
        merge(&mut full, header);
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

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(&json!({}), claims)
    }
}

/// Sets the fields of `changes` in `value`; a null removes one.
pub fn merge(value: &mut Value, changes: &Value) {
    for (key, change) in changes.as_object().unwrap() {
        if change.is_null() {
            value.as_object_mut().unwrap().remove(key);
        } else {
            value[key] = change.clone();
        }
    }
}

pub fn jwks(signers: &[&Signer]) -> String {
    let keys: Vec<Value> = signers.iter().map(|signer| signer.jwk()).collect();
    json!({ "keys": keys }).to_string()
}

/// The claims of a fresh GitHub Actions token of acme/app on main, with
/// a unique `jti`, good for five minutes.
pub fn github_claims() -> Value {
    let now = unix_now();
    json!({
        "iss": GITHUB,
        "aud": "jitid",
        "sub": "repo:acme/app:ref:refs/heads/main",
        "repository": "acme/app",
        "repository_owner": "acme",
        "ref": "refs/heads/main",
        "workflow": "release",
        "run_id": "4711",
        "run_attempt": "1",
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now - 5,
        "nbf": now - 5,
        "exp": now + 300,
    })
}

/// The claims of a fresh GitLab CI token of acme/app.
pub fn gitlab_claims() -> Value {
    let now = unix_now();
    json!({
        "iss": GITLAB,
        "aud": "jitid",
        "sub": "project_path:acme/app:ref_type:branch:ref:main",
        "project_path": "acme/app",
        "namespace_path": "acme",
        "ref": "main",
        "job_id": "815",
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now - 5,
        "nbf": now - 5,
        "exp": now + 300,
    })
}

/// A JWKS served over HTTPS on 127.0.0.1, under its own test CA; it counts
/// the fetches and serves whatever it is given.
pub struct JwksServer {
    pub addr: SocketAddr,
    /// The test CA's certificate (PEM), for `jwks_ca_file`.
    pub ca_file: PathBuf,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(dir: &Path, document: String) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf.subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let ca_file = dir.join("jwks-ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();

        let config = rustls::ServerConfig::builder_with_provider(jitid::crypto::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (document.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let served = served.clone();
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let Some(request) = read_head(&mut tls).await else {
                        return;
                    };
                    let body = if request.starts_with("GET /jwks ") {
                        counted.fetch_add(1, Ordering::SeqCst);
                        Some(served.lock().unwrap().clone())
                    } else {
                        None
                    };
                    respond(&mut tls, body).await;
                });
            }
        });
        Self {
            addr,
            ca_file,
            document,
            fetches,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/jwks", self.addr.port())
    }

    pub fn serve(&self, document: String) {
        *self.document.lock().unwrap() = document;
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A stand-in for the GitHub Actions ID token endpoint, on plain HTTP on
/// 127.0.0.1: answers `{"value": <token>}` to a GET that carries the
/// request token, with the audience asked for recorded.
pub struct TokenEndpoint {
    pub addr: SocketAddr,
    pub request_token: String,
    asked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenEndpoint {
    /// Serves a fresh token for each request, made by `mint` from the
    /// audience asked for.
    pub async fn start(mint: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let request_token = uuid::Uuid::new_v4().simple().to_string();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (expected, recorded) = (request_token.clone(), asked.clone());
        let mint = Arc::new(mint);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let Some(request) = read_head(&mut stream).await else {
                    continue;
                };
                let authorized = request.lines().any(|line| {
                    line.eq_ignore_ascii_case(&format!("authorization: bearer {expected}"))
                });
                let audience = request
                    .split_whitespace()
                    .nth(1)
                    .and_then(|target| target.split_once("audience="))
                    .map(|(_, rest)| rest.split('&').next().unwrap_or_default().to_owned());
                let body = match (authorized, audience) {
                    (true, Some(audience)) => {
                        recorded.lock().unwrap().push(audience.clone());
                        Some(json!({ "value": mint(&audience) }).to_string())
                    }
                    _ => None,
                };
                respond(&mut stream, body).await;
            }
        });
        Self {
            addr,
            request_token,
            asked,
            task,
        }
    }

    /// `ACTIONS_ID_TOKEN_REQUEST_URL`, with a query as GitHub's has.
    pub fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/token?api-version=2.0",
            self.addr.port()
        )
    }

    pub fn audiences_asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads an HTTP/1.1 request head.
async fn read_head(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

/// Answers 200 with a JSON `body`, or 403 without one.
async fn respond(stream: &mut (impl AsyncWriteExt + Unpin), body: Option<String>) {
    let (status, body) = match body {
        Some(body) => ("200 OK", body),
        None => ("403 Forbidden", String::new()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A server with two OIDC providers: `github` (JWKS file, RSA and EC
/// keys) and `gitlab` (JWKS from an HTTPS URL), and entitlements that
/// need a token.
pub struct OidcEnv {
    pub env: TestEnv,
    pub github_rsa: Arc<Signer>,
    pub github_ec: Arc<Signer>,
    pub gitlab: Arc<Signer>,
    pub jwks: JwksServer,
    pub dir: tempfile::TempDir,
}

/// The entitlements the OIDC tests add.
const ENTITLEMENTS: &str = r#"
[[entitlement]]
name = "ci-release"
actions = ["publish:release"]
requesters = ["spiffe://example.org/ci/*"]
attestation = ["oidc"]
conditions = """
@id("main-only")
@reason("only the main branch releases")
permit (principal, action, resource)
when { context.attestation.method == "oidc" && context.attestation.claims.ref == "refs/heads/main" };
"""
"#;

impl OidcEnv {
    /// On the memory store.
    pub async fn start() -> Self {
        Self::start_inner(None).await
    }

    /// On `store` (a Redis store, for replicas).
    pub async fn start_on(store: Arc<dyn GrantStore>) -> Self {
        Self::start_inner(Some(store)).await
    }

    async fn start_inner(store: Option<Arc<dyn GrantStore>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let github_rsa = Arc::new(Signer::rsa("gh-rsa-1"));
        let github_ec = Arc::new(Signer::ec("gh-ec-1"));
        let gitlab = Arc::new(Signer::ec("gl-ec-1"));
        let jwks_file = dir.path().join("github-jwks.json");
        std::fs::write(&jwks_file, jwks(&[&github_rsa, &github_ec])).unwrap();
        let server = JwksServer::start(dir.path(), jwks(&[&gitlab])).await;
        let providers = format!(
            r#"
[[attestation.oidc]]
name = "github"
issuer = "{GITHUB}"
audiences = ["jitid"]
jwks_file = "{jwks_file}"
spiffe_id = "ci/github/{{repository}}"
task = "{{run_id}}-{{run_attempt}}"
[attestation.oidc.bound_claims]
repository_owner = "acme"

[[attestation.oidc]]
name = "gitlab"
issuer = "{GITLAB}"
audiences = ["jitid", "other-jitid"]
jwks_url = "{url}"
jwks_ca_file = "{ca}"
spiffe_id = "ci/gitlab/{{project_path}}"
[attestation.oidc.bound_claims]
namespace_path = ["acme", "acme-*"]
"#,
            jwks_file = jwks_file.display(),
            url = server.url(),
            ca = server.ca_file.display(),
        );
        let extra = format!("{ENTITLEMENTS}\n{providers}");
        let env = TestEnv::start_on_with_catalogue(store, &extra).await;
        Self {
            env,
            github_rsa,
            github_ec,
            gitlab,
            jwks: server,
            dir,
        }
    }

    /// A client attesting with `token` (and no client certificate).
    pub async fn client(&self, token: &str) -> Client {
        self.client_at(self.env.addr, token).await
    }

    pub async fn client_at(&self, addr: SocketAddr, token: &str) -> Client {
        Client::connect(ClientConfig {
            server: format!("https://127.0.0.1:{}", addr.port()),
            server_roots: self.env.roots(),
            identity: None,
            retry: RetryPolicy::default(),
        })
        .await
        .unwrap()
        .with_oidc_token(OidcToken::new(token).unwrap())
    }

    /// Writes `token` to a file, for the CLI.
    pub fn token_file(&self, token: &str) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("token-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, token).unwrap();
        path
    }

    /// Runs the `jitid` binary with `vars` and no client certificate.
    pub fn cli(&self, vars: &[(&str, &str)], args: &[&str]) -> std::process::Output {
        std::process::Command::new(jitid_bin())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TMPDIR", self.dir.path())
            .env("JITID_SERVER", self.env.url())
            .env("JITID_CA", &self.env.ca.root_cert)
            .envs(vars.iter().copied())
            .args(args)
            .output()
            .unwrap()
    }
}

/// Waits up to a few seconds for `check`, polling; for what another task
/// does (an audit record written after the reply).
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

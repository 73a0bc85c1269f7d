//! Attesting the CLI with an OIDC token instead of `--cert`/`--key`: read
//! from `--oidc-token-file` (`JITID_OIDC_TOKEN_FILE`), or with
//! `--github-actions` requested from the runner's token endpoint
//! (`ACTIONS_ID_TOKEN_REQUEST_URL`, with `ACTIONS_ID_TOKEN_REQUEST_TOKEN`)
//! for `--oidc-audience`.
//!
//! Neither the token nor the request token is ever printed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use jitid::client::OidcToken;

use super::args::check_file;
use super::exit::{Unavailable, Usage};

/// How long the token endpoint may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read from the token endpoint, in bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Attest with an OIDC token instead of a client certificate.
#[derive(Args)]
pub(crate) struct TokenArgs {
    /// Attest with the OIDC token in FILE (a CI job's ID token, a
    /// Kubernetes service-account token) instead of --cert/--key.
    #[arg(
        long,
        env = "JITID_OIDC_TOKEN_FILE",
        value_name = "FILE",
        help_heading = "Attestation by OIDC token"
    )]
    pub(crate) oidc_token_file: Option<PathBuf>,
    /// Attest with a GitHub Actions ID token, requested from the runner
    /// (the job needs `permissions: id-token: write`).
    #[arg(
        long,
        conflicts_with = "oidc_token_file",
        help_heading = "Attestation by OIDC token"
    )]
    pub(crate) github_actions: bool,
    /// The audience the --github-actions token is requested for: one the
    /// server's [[attestation.oidc]] accepts.
    #[arg(
        long,
        default_value = "jitid",
        value_name = "AUDIENCE",
        help_heading = "Attestation by OIDC token"
    )]
    pub(crate) oidc_audience: String,
}

// === impl TokenArgs ===

impl TokenArgs {
    /// The token these flags name, if any.
    pub(crate) async fn token(&self) -> anyhow::Result<Option<OidcToken>> {
        if let Some(path) = &self.oidc_token_file {
            check_file(path, "--oidc-token-file or JITID_OIDC_TOKEN_FILE")?;
            return Ok(Some(OidcToken::from_file(path)?));
        }
        if self.github_actions {
            return Ok(Some(github_actions_token(&self.oidc_audience).await?));
        }
        Ok(None)
    }
}

/// Requests an ID token from the GitHub Actions runner: GET
/// `$ACTIONS_ID_TOKEN_REQUEST_URL&audience=AUD` with `Authorization: bearer
/// $ACTIONS_ID_TOKEN_REQUEST_TOKEN`; the answer is `{"value": "<jwt>"}`.
async fn github_actions_token(audience: &str) -> anyhow::Result<OidcToken> {
    let variable = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.is_empty())
            .ok_or_else(|| {
                Usage(format!(
                    "--github-actions: {name} is not set; run in a GitHub Actions job with \
                 `permissions: id-token: write`"
                ))
            })
    };
    let endpoint = variable("ACTIONS_ID_TOKEN_REQUEST_URL")?;
    let bearer = variable("ACTIONS_ID_TOKEN_REQUEST_TOKEN")?;
    let mut url = reqwest::Url::parse(&endpoint).map_err(|error| {
        Usage(format!(
            "--github-actions: ACTIONS_ID_TOKEN_REQUEST_URL is not a URL: {error}"
        ))
    })?;
    // The request token is a secret: plain HTTP only to this machine.
    let loopback = match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(Usage(
            "--github-actions: ACTIONS_ID_TOKEN_REQUEST_URL must be https://".to_owned(),
        )
        .into());
    }
    url.query_pairs_mut().append_pair("audience", audience);
    let failed =
        |message: String| Unavailable(format!("requesting the GitHub Actions ID token: {message}"));
    let mut response = http_client()?
        .get(url)
        .header("authorization", format!("bearer {bearer}"))
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|error| failed(error_chain(&error)))?;
    if !response.status().is_success() {
        return Err(failed(format!(
            "HTTP {} (does the job have `permissions: id-token: write`?)",
            response.status()
        ))
        .into());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| failed(error_chain(&error)))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(failed(format!("an answer larger than {MAX_ANSWER_BYTES} bytes")).into());
        }
        body.extend_from_slice(&chunk);
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        value: String,
    }
    let answer: Answer = serde_json::from_slice(&body).map_err(|_| {
        anyhow!(
            "requesting the GitHub Actions ID token: the answer is not {{\"value\": \"<token>\"}}"
        )
    })?;
    Ok(OidcToken::new(&answer.value)?)
}

/// A client with jitid's TLS provider and the system's roots.
fn http_client() -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let tls = rustls::ClientConfig::builder_with_provider(jitid::crypto::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

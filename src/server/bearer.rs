//! Attestation by bearer token: a layer in front of the gRPC services that
//! takes an `authorization: Bearer <JWT>` header off each request, has the
//! [`OidcAttestor`] check it (which may read the issuer's keys, so it is
//! asynchronous, unlike a handshake's certificate), and leaves the outcome
//! in the request's extensions, where `grpc.rs` authenticates the caller.
//!
//! The header is removed before any handler runs, so no handler, span or
//! log line can show the token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http::{self, HeaderValue, header::AUTHORIZATION};

use crate::attest::{OidcAttestor, OidcError};
use crate::clock::Clock;
use crate::issuer::Caller;

/// What the bearer token of a request attested, or why not.
#[derive(Debug, Clone)]
pub(crate) struct TokenAttestation(pub(crate) Result<Caller, OidcError>);

/// Attests bearer tokens with `attestor`.
#[derive(Clone)]
pub(crate) struct BearerLayer {
    attestor: Arc<OidcAttestor>,
    clock: Arc<dyn Clock>,
}

/// The service [`BearerLayer`] wraps around another.
#[derive(Clone)]
pub(crate) struct Bearer<S> {
    inner: S,
    attestor: Arc<OidcAttestor>,
    clock: Arc<dyn Clock>,
}

// === impl BearerLayer ===

impl BearerLayer {
    pub(crate) fn new(attestor: Arc<OidcAttestor>, clock: Arc<dyn Clock>) -> Self {
        Self { attestor, clock }
    }
}

impl<S> tower::Layer<S> for BearerLayer {
    type Service = Bearer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bearer {
            inner,
            attestor: self.attestor.clone(),
            clock: self.clock.clone(),
        }
    }
}

// === impl Bearer ===

impl<S, B> tower::Service<http::Request<B>> for Bearer<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone takes the place of the service that was made ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let header = request.headers_mut().remove(AUTHORIZATION);
        let attestor = self.attestor.clone();
        let now = self.clock.now();
        Box::pin(async move {
            if let Some(header) = header {
                let attested = match bearer(&header) {
                    Ok(_) if attestor.is_empty() => Err(OidcError::UnknownIssuer(
                        "of any kind: this server accepts no OIDC tokens".to_owned(),
                    )),
                    Ok(token) => attestor.attest(token, now).await,
                    Err(error) => Err(error),
                };
                request.extensions_mut().insert(TokenAttestation(attested));
            }
            inner.call(request).await
        })
    }
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer(header: &HeaderValue) -> Result<&str, OidcError> {
    let malformed =
        || OidcError::Malformed("the authorization header is not \"Bearer <token>\"".to_owned());
    let value = header.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(malformed());
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_header_yields_a_token() {
        let token = |text: &str| {
            bearer(&HeaderValue::from_str(text).unwrap())
                .ok()
                .map(str::to_owned)
        };
        assert_eq!(token("Bearer a.b.c").as_deref(), Some("a.b.c"));
        assert_eq!(token("bearer  a.b.c ").as_deref(), Some("a.b.c"));
        assert_eq!(token("Basic dXNlcg=="), None);
        assert_eq!(token("Bearer"), None);
        assert_eq!(token("Bearer  "), None);
        assert_eq!(token("a.b.c"), None);
    }
}

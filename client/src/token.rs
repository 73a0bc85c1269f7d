//! An OIDC token to attest with instead of a client certificate: a CI
//! job's ID token (GitHub Actions, GitLab `id_tokens`) or a Kubernetes
//! projected service-account token, sent with every call as
//! `authorization: Bearer <token>`. The server still proves itself with
//! its certificate, checked against the configured roots.
//!
//! The token is a bearer secret: `Debug` never shows it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use tonic::metadata::{Ascii, MetadataValue};

use crate::ClientError;

/// Largest token file read, in bytes.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// An OIDC token (a compact JWT).
#[derive(Clone)]
pub struct OidcToken(Arc<MetadataValue<Ascii>>);

// === impl OidcToken ===

impl OidcToken {
    /// A token as text (surrounding whitespace is ignored). It must be a
    /// compact JWT: three base64url parts separated by dots.
    pub fn new(token: &str) -> Result<Self, ClientError> {
        let token = token.trim();
        let parts = token.split('.').count();
        let alphabet = token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='));
        if token.is_empty() || parts != 3 || !alphabet {
            return Err(ClientError::Config(
                "the OIDC token is not a JWT (three base64url parts separated by '.')".to_owned(),
            ));
        }
        let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            ClientError::Config("the OIDC token cannot be sent as a header".to_owned())
        })?;
        Ok(Self(Arc::new(value)))
    }

    /// Reads a token from a file (as a CI platform or Kubernetes writes
    /// it).
    pub fn from_file(path: &Path) -> Result<Self, ClientError> {
        let failed =
            |message: String| ClientError::Config(format!("{}: {message}", path.display()));
        let metadata = std::fs::metadata(path).map_err(|error| failed(error.to_string()))?;
        if metadata.len() > MAX_TOKEN_BYTES {
            return Err(failed(format!("larger than {MAX_TOKEN_BYTES} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|error| failed(error.to_string()))?;
        Self::new(&text).map_err(|error| match error {
            ClientError::Config(message) => failed(message),
            other => other,
        })
    }

    /// The `authorization` header value.
    pub(crate) fn header(&self) -> MetadataValue<Ascii> {
        (*self.0).clone()
    }
}

impl fmt::Debug for OidcToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OidcToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_compact_jwt_is_taken_and_never_shown() {
        let token = OidcToken::new(" eyJh.eyJp.c2ln\n").unwrap();
        assert_eq!(token.header().to_str().unwrap(), "Bearer eyJh.eyJp.c2ln");
        assert_eq!(format!("{token:?}"), "OidcToken(<redacted>)");
        for bad in ["", "a.b", "a.b.c.d", "a b.c.d", "ey.Jh\u{e9}.x"] {
            assert!(OidcToken::new(bad).is_err(), "{bad:?}");
        }
    }
}

//! Errors of the client library: [`ClientError`], and how a gRPC status
//! becomes one (the client's mirror of the server's one status mapping).

use std::time::Duration;

use crate::keyfile::KeyFileError;
use crate::proto::RETRY_PUSHBACK_TRAILER;

/// Errors of the client library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration is unusable (bad URL, bad PEM).
    #[error("{0}")]
    Config(String),
    /// A key or certificate file could not be read.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// The server could not be reached or the TLS handshake failed.
    #[error("cannot connect to {server}: {source}")]
    Connect {
        /// The server URL.
        server: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The server answered with an error status.
    #[error("{}: {message}", code_name(*.code))]
    Status {
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
        /// How long the server asked us to wait before retrying, when it
        /// shed the request under load (see [`ClientError::retry_after`]).
        retry_after: Option<Duration>,
    },
    /// A local key could not be generated.
    #[error("key generation failed: {0}")]
    KeyGeneration(#[from] rcgen::Error),
    /// The server's answer is malformed.
    #[error("invalid response from server: {0}")]
    InvalidResponse(String),
}

// === impl ClientError ===

impl ClientError {
    /// The gRPC code, when the server answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// How long the server asked us to wait before retrying: set only when
    /// it shed the request under load (RESOURCE_EXHAUSTED with a
    /// `grpc-retry-pushback-ms` trailer), which it does before any work,
    /// so nothing was issued or recorded. A [`Client`](crate::Client) has
    /// retried such a request as its [`RetryPolicy`](crate::RetryPolicy)
    /// allows before returning it.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Status { code, .. } => matches!(
                code,
                tonic::Code::Unavailable | tonic::Code::ResourceExhausted | tonic::Code::Aborted
            ),
            _ => false,
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        // A pushback that is not a count of milliseconds means "do not
        // retry" (gRPC A6).
        let retry_after = (status.code() == tonic::Code::ResourceExhausted)
            .then(|| status.metadata().get(RETRY_PUSHBACK_TRAILER))
            .flatten()
            .and_then(|value| value.to_str().ok()?.parse().ok())
            .map(Duration::from_millis);
        Self::Status {
            code: status.code(),
            message: status.message().to_owned(),
            retry_after,
        }
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::ResourceExhausted => "resource exhausted",
        tonic::Code::OutOfRange => "out of range",
        tonic::Code::DeadlineExceeded => "deadline exceeded",
        tonic::Code::Internal => "internal error",
        tonic::Code::NotFound => "not found",
        tonic::Code::FailedPrecondition => "failed precondition",
        tonic::Code::Aborted => "aborted",
        _ => "error",
    }
}

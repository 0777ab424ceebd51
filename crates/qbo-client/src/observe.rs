//! Request-level observation: every HTTP request the client makes, reported as it finishes.

use std::time::Duration;

/// Which endpoint a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Query,
    Batch,
    Read,
    Token,
    Cdc,
}

impl Endpoint {
    pub fn as_str(&self) -> &'static str {
        match self {
            Endpoint::Query => "query",
            Endpoint::Batch => "batch",
            Endpoint::Read => "read",
            Endpoint::Token => "token",
            Endpoint::Cdc => "cdc",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// A usable answer.
    Ok,
    /// An HTTP status other than success (429, 5xx, 4xx), with QBO's fault code when sent.
    Status { status: u16, code: Option<String> },
    /// A 200 carrying a QBO fault.
    Fault { code: Option<String> },
    /// No (complete) answer: connect failure, timeout, dropped connection, truncated or
    /// oversized body.
    Transport,
}

impl Outcome {
    pub(crate) fn of(err: &crate::error::QboError) -> Outcome {
        use crate::error::QboError;
        match err {
            QboError::Fault {
                status: 200, code, ..
            } => Outcome::Fault { code: code.clone() },
            QboError::Fault { status, code, .. } => Outcome::Status {
                status: *status,
                code: code.clone(),
            },
            QboError::Auth(crate::auth::AuthError::Endpoint { status, .. }) => Outcome::Status {
                status: *status,
                code: None,
            },
            _ => Outcome::Transport,
        }
    }

    /// An HTTP 429 (or QBO's older 403 with code 3001): the request was throttled.
    pub fn is_throttled(&self) -> bool {
        match self {
            Outcome::Status { status: 429, .. } => true,
            Outcome::Status { status: 403, code } => {
                matches!(code.as_deref(), Some("3001") | Some("003001"))
            }
            _ => false,
        }
    }
}

/// One finished HTTP request. Holds no token, header or body.
#[derive(Debug, Clone)]
pub struct RequestRecord<'a> {
    pub realm: &'a str,
    pub endpoint: Endpoint,
    pub outcome: Outcome,
    /// The attempt number of the logical request (1 for the first).
    pub attempt: u32,
    /// Whether the client sends it again (after a refresh, a throttle wait or a back-off).
    pub retried: bool,
    /// The wait before the retry of a throttled request (`Retry-After`, else the configured
    /// throttle wait).
    pub retry_after: Option<Duration>,
    /// From the start of the attempt (limiter waits included) to its outcome.
    pub duration: Duration,
}

/// Told of every HTTP request a client makes; must be quick and must not block.
pub trait RequestObserver: Send + Sync {
    fn request_finished(&self, record: &RequestRecord<'_>);
}

/// Asked before every API request is sent (token refreshes aside): a refusal ends the request
/// with [`crate::QboError::Refused`], unsent and not retried. The pipeline's monthly call
/// budget is one.
pub trait RequestGate: Send + Sync {
    /// `Err(why)` to refuse sending a request of `endpoint` for `realm`.
    fn admit(&self, realm: &str, endpoint: Endpoint) -> Result<(), String>;
}

//! Typed errors: what failed in a request, and where (entity and page) it happened.

use crate::auth::AuthError;
use std::time::Duration;

/// A failed QBO request.
#[derive(Debug, thiserror::Error)]
pub enum QboError {
    #[error(
        "QBO answered HTTP {status}{}: {message}{}{}",
        fmt_code(code),
        fmt_detail(detail),
        fmt_tid(intuit_tid)
    )]
    Fault {
        status: u16,
        code: Option<String>,
        message: String,
        detail: Option<String>,
        intuit_tid: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("network error talking to QBO: {0}")]
    Network(#[source] reqwest::Error),
    #[error("authorisation failed: {0}")]
    Auth(#[from] AuthError),
    #[error(
        "QBO sent a response that cannot be read{}: {reason}",
        fmt_tid(intuit_tid)
    )]
    Decode {
        reason: String,
        intuit_tid: Option<String>,
    },
    #[error(
        "QBO sent a response larger than {limit} bytes{}; refusing to read it (not a QBO page)",
        fmt_tid(intuit_tid)
    )]
    TooLarge {
        limit: usize,
        intuit_tid: Option<String>,
    },
    #[error("gave up after {attempts} attempts; last error: {last}")]
    Exhausted { attempts: u32, last: Box<QboError> },
    #[error("stopped by a stop request")]
    Stopped,
    /// Not sent: the client's [`crate::RequestGate`] refused it (a call budget, say).
    #[error("not sent: {0}")]
    Refused(String),
}

pub(crate) fn fmt_code(code: &Option<String>) -> String {
    code.as_ref()
        .map(|c| format!(" (code {c})"))
        .unwrap_or_default()
}
pub(crate) fn fmt_detail(detail: &Option<String>) -> String {
    detail
        .as_ref()
        .filter(|d| !d.is_empty())
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}
pub(crate) fn fmt_tid(tid: &Option<String>) -> String {
    tid.as_ref()
        .map(|t| format!(" [intuit_tid {t}]"))
        .unwrap_or_default()
}

/// What a body parser says of a body it cannot use.
pub enum Parsed<E> {
    /// Cut short or garbled in transit (not valid JSON): fetch it again.
    Truncated(String),
    /// Well-formed but wrong: fetching it again will not help.
    Invalid(E),
}

/// A query that failed, or whose body could not be used.
#[derive(Debug)]
pub enum QueryError<E> {
    Qbo(QboError),
    Parse(E),
}

/// Where in a run a request was made: the entity and, for a page, its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The entity's QBO name (`Invoice`).
    pub entity: String,
    /// The page number within its chunk, when it was a page.
    pub page: Option<u32>,
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.page {
            Some(page) => write!(f, "{}, page {page}", self.entity),
            None => f.write_str(&self.entity),
        }
    }
}

/// An error with the entity and page it happened at, so a message says which failed.
#[derive(Debug, thiserror::Error)]
#[error("{site}: {source}")]
pub struct LocatedError<E: std::error::Error + 'static = QboError> {
    pub site: Site,
    #[source]
    pub source: E,
}

impl QboError {
    /// This error, said of `site`.
    pub fn at(self, site: Site) -> LocatedError {
        LocatedError { site, source: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_located_error_names_entity_and_page() {
        let e = QboError::Stopped.at(Site {
            entity: "Invoice".into(),
            page: Some(3),
        });
        assert_eq!(e.to_string(), "Invoice, page 3: stopped by a stop request");
        let e = QboError::Stopped.at(Site {
            entity: "Customer".into(),
            page: None,
        });
        assert_eq!(e.to_string(), "Customer: stopped by a stop request");
    }
}

//! Reading what a server sends: bounded bodies, faults (also inside a 200), `Retry-After`.

use std::time::Duration;

/// Largest API response body accepted, after decompression. A page of 1000 QBO records is a
/// few MB; anything near this is not a QBO page.
pub const MAX_API_BODY: usize = 64 * 1024 * 1024;
/// Longest `Retry-After` honoured; a longer one is waited for this long, then retried.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Parses a QBO error body (`Fault`/`Error` or the lowercase 401 `fault`/`error` form) into
/// (code, message, detail). Typed, so the rest of a large body is skipped, not built.
pub fn parse_fault(body: &[u8]) -> Option<(Option<String>, String, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(rename = "Fault", alias = "fault")]
        fault: Option<Fault>,
    }
    #[derive(serde::Deserialize)]
    struct Fault {
        #[serde(rename = "Error", alias = "error", default)]
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(rename = "Message", alias = "message", default)]
        message: Option<String>,
        #[serde(rename = "Detail", alias = "detail", default)]
        detail: Option<String>,
        #[serde(default)]
        code: Option<Code>,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Code {
        Text(String),
        Number(serde_json::Number),
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    let first = body.fault?.errors.into_iter().next()?;
    let code = first.code.map(|c| match c {
        Code::Text(s) => s,
        Code::Number(n) => n.to_string(),
    });
    Some((
        code.map(|c| printable(&c, 32)),
        first
            .message
            .map(|m| printable(&m, 500))
            .unwrap_or_else(|| "unknown fault".into()),
        first.detail.map(|d| printable(&d, 1000)),
    ))
}

/// Server text for our messages and logs: control characters (terminal escapes, newlines
/// that would forge log lines) removed, at most `max` characters.
pub fn printable(text: &str, max: usize) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(max).collect();
    if text.chars().filter(|c| !c.is_control()).nth(max).is_some() {
        out.push('…');
    }
    out
}

/// `Retry-After` in seconds, capped at [`MAX_RETRY_AFTER`] (a server asking for years would
/// otherwise hold the run, its locks and its trigger for that long).
pub(crate) fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs = v.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// More than the limit (decompressed).
    TooLarge,
    Network(reqwest::Error),
}

/// Reads a response body of at most `limit` bytes (after decompression), chunk by chunk, so
/// a huge or endlessly inflating body costs at most `limit` bytes of memory.
pub async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<bytes::Bytes, BodyError> {
    let announced = response.content_length().unwrap_or(0);
    if announced > limit as u64 {
        return Err(BodyError::TooLarge);
    }
    let mut buf = bytes::BytesMut::with_capacity((announced as usize).min(limit));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Network)? {
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Whether a 200 body is a `Fault` rather than data. QBO puts `QueryResponse` (or the
/// `CDCResponse`/`IntuitResponse` of other endpoints) first; only bodies that do not start
/// so are parsed in full to look for a top-level `Fault`, wherever it stands.
pub(crate) fn fault_in_ok_body(body: &[u8]) -> Option<(Option<String>, String, Option<String>)> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = &body[start..];
    if head.starts_with(b"{\"QueryResponse\"")
        || head.starts_with(b"{\"CDCResponse\"")
        || head.starts_with(b"{\"BatchItemResponse\"")
    {
        return None;
    }
    parse_fault(body)
}

/// The items of a batch answer, in request order, each as a `/query` answer
/// (`{"QueryResponse": ..., "time": ...}`), or `None` for an item that holds a fault or is
/// missing (sent again on its own). An answer that is not a batch answer at all is an error.
pub(crate) fn split_batch(
    body: &bytes::Bytes,
    n: usize,
) -> Result<Vec<Option<bytes::Bytes>>, String> {
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(rename = "BatchItemResponse", borrow)]
        items: Vec<Item<'a>>,
        #[serde(default, borrow)]
        time: Option<&'a serde_json::value::RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Item<'a> {
        #[serde(rename = "bId")]
        bid: String,
        #[serde(rename = "QueryResponse", default, borrow)]
        query: Option<&'a serde_json::value::RawValue>,
    }
    let answer: Answer<'_> =
        serde_json::from_slice(body).map_err(|e| format!("not a batch answer: {e}"))?;
    let mut out = vec![None; n];
    for item in answer.items {
        let Ok(i) = item.bid.parse::<usize>() else {
            continue;
        };
        if let (Some(slot), Some(q)) = (out.get_mut(i), item.query) {
            let time = answer.time.map(|t| t.get()).unwrap_or("null");
            *slot = Some(bytes::Bytes::from(format!(
                "{{\"QueryResponse\":{},\"time\":{time}}}",
                q.get()
            )));
        }
    }
    Ok(out)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::QboError;
    use crate::retry::{RetryClass, classify};

    fn fault(status: u16, code: Option<&str>) -> QboError {
        QboError::Fault {
            status,
            code: code.map(str::to_string),
            message: "m".into(),
            detail: None,
            intuit_tid: Some("1-abc".into()),
            retry_after: None,
        }
    }

    #[test]
    fn classification_table() {
        assert_eq!(
            classify(&fault(429, Some("3001"))),
            RetryClass::Throttled(None)
        );
        assert_eq!(
            classify(&fault(403, Some("3001"))),
            RetryClass::Throttled(None)
        );
        assert_eq!(classify(&fault(403, Some("3100"))), RetryClass::Fatal);
        assert_eq!(
            classify(&fault(401, Some("3200"))),
            RetryClass::Unauthorized
        );
        assert_eq!(classify(&fault(500, None)), RetryClass::Transient);
        assert_eq!(classify(&fault(503, None)), RetryClass::Transient);
        assert_eq!(classify(&fault(200, Some("10000"))), RetryClass::Transient);
        assert_eq!(classify(&fault(400, Some("4001"))), RetryClass::Fatal);
        let with_after = QboError::Fault {
            status: 429,
            code: None,
            message: "m".into(),
            detail: None,
            intuit_tid: None,
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(
            classify(&with_after),
            RetryClass::Throttled(Some(Duration::from_secs(7)))
        );
        let decode = QboError::Decode {
            reason: "eof".into(),
            intuit_tid: None,
        };
        assert_eq!(classify(&decode), RetryClass::Transient);
    }

    #[test]
    fn parses_both_fault_forms() {
        let upper = br#"{"Fault":{"Error":[{"Message":"Invalid query","Detail":"QueryValidationError: invalid context declaration: Custmoer","code":"4001"}],"type":"ValidationFault"},"time":"x"}"#;
        let (code, msg, detail) = parse_fault(upper).unwrap();
        assert_eq!(code.as_deref(), Some("4001"));
        assert_eq!(msg, "Invalid query");
        assert!(detail.unwrap().contains("Custmoer"));
        let lower = br#"{"warnings":null,"fault":{"error":[{"message":"message=AuthenticationFailed; errorCode=003200; statusCode=401","detail":"Token expired: x","code":"3200","element":null}],"type":"AUTHENTICATION"},"time":1601391072830}"#;
        let (code, msg, _) = parse_fault(lower).unwrap();
        assert_eq!(code.as_deref(), Some("3200"));
        assert!(msg.contains("AuthenticationFailed"));
        assert!(parse_fault(b"<html>").is_none());
    }

    #[test]
    fn server_text_is_cleaned_and_capped() {
        assert_eq!(printable("a\u{1b}[31mb\nc", 10), "a[31mbc");
        assert_eq!(printable("abcdef", 3), "abc…");
        let body = format!(
            r#"{{"Fault":{{"Error":[{{"Message":"x\u001b[2J{}","code":"4000"}}]}}}}"#,
            "y".repeat(2000)
        );
        let (_, msg, _) = parse_fault(body.as_bytes()).unwrap();
        assert!(
            !msg.contains('\u{1b}') && msg.chars().count() <= 501,
            "{msg}"
        );
        // A Fault after other keys, or after white space, is still a Fault.
        let late = br#"  {"time":"t","Fault":{"Error":[{"Message":"m","code":"4000"}]}}"#;
        assert!(fault_in_ok_body(late).is_some());
        assert!(fault_in_ok_body(br#"{"QueryResponse":{}}"#).is_none());
    }

    #[test]
    fn retry_after_is_capped() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "999999999".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
    }

    #[test]
    fn fault_display_keeps_code_detail_and_tid() {
        let e = QboError::Fault {
            status: 400,
            code: Some("4001".into()),
            message: "Invalid query".into(),
            detail: Some("QueryValidationError: x".into()),
            intuit_tid: Some("1-5f73".into()),
            retry_after: None,
        };
        assert_eq!(
            e.to_string(),
            "QBO answered HTTP 400 (code 4001): Invalid query (QueryValidationError: x) [intuit_tid 1-5f73]"
        );
    }
}

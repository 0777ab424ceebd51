//! QBO's response envelopes and faults, byte for byte in QBO's key order.
//!
//! Success: `application/json;charset=utf-8`; faults: `application/json`. The standard fault is
//! `{"Fault":{"Error":[{"Message","Detail","code"[,"element"]}],"type":..},"time":..}`; 401 and
//! 403 use the lower-case serializer with epoch-millisecond `time` (see
//! errors/401_authentication_failed_token_expired.json). The `intuit_tid` header is added by
//! the middleware in [`crate::faults`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use crate::clock::{pacific_millis, push_json_str};

pub const JSON_OK: &str = "application/json;charset=utf-8";
pub const JSON_FAULT: &str = "application/json";

/// A response with a JSON text body.
pub fn json(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// One `Error` entry of a standard fault.
#[derive(Debug, Clone)]
pub struct FaultError<'a> {
    pub message: &'a str,
    pub detail: &'a str,
    pub code: &'a str,
    /// `"element"`: absent when `None`.
    pub element: Option<&'a str>,
}

/// `{"Fault":{"Error":[...],"type":..}[,"time":..]}`.
pub fn fault_body(errors: &[FaultError<'_>], kind: &str, time: Option<DateTime<Utc>>) -> String {
    let mut out = String::with_capacity(256);
    out.push('{');
    push_fault_member(&mut out, errors, kind);
    if let Some(time) = time {
        out.push_str(",\"time\":");
        push_json_str(&mut out, &pacific_millis(time));
    }
    out.push('}');
    out
}

/// Appends the member `"Fault":{"Error":[...],"type":..}` (a body's, or a batch item's).
pub fn push_fault_member(out: &mut String, errors: &[FaultError<'_>], kind: &str) {
    out.push_str("\"Fault\":{\"Error\":[");
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"Message\":");
        push_json_str(out, e.message);
        out.push_str(",\"Detail\":");
        push_json_str(out, e.detail);
        out.push_str(",\"code\":");
        push_json_str(out, e.code);
        if let Some(element) = e.element {
            out.push_str(",\"element\":");
            push_json_str(out, element);
        }
        out.push('}');
    }
    out.push_str("],\"type\":");
    push_json_str(out, kind);
    out.push('}');
}

/// A standard one-error fault response.
pub fn fault(
    status: StatusCode,
    message: &str,
    detail: &str,
    code: &str,
    kind: &str,
    time: Option<DateTime<Utc>>,
) -> Response {
    let body = fault_body(
        &[FaultError {
            message,
            detail,
            code,
            element: None,
        }],
        kind,
        time,
    );
    json(status, JSON_FAULT, body)
}

/// 400 / 4000: the query does not parse.
pub fn parse_error(detail: &str, time: DateTime<Utc>) -> Response {
    fault(
        StatusCode::BAD_REQUEST,
        "Error parsing query",
        detail,
        "4000",
        "ValidationFault",
        Some(time),
    )
}

/// 400 / 4001: the query parses but is invalid.
pub fn validation_error(detail: &str, time: DateTime<Utc>) -> Response {
    fault(
        StatusCode::BAD_REQUEST,
        "Invalid query",
        &format!("QueryValidationError: {detail}"),
        "4001",
        "ValidationFault",
        Some(time),
    )
}

/// The one error of QBO's 5020 Permission Denied (`docs/qbo-behaviour.md` §11).
const PERMISSION_DENIED: FaultError<'static> = FaultError {
    message: "Permission Denied Error",
    detail: "Permission Denied Error : You do not have the access rights to use this feature.",
    code: "5020",
    element: Some(""),
};

/// Appends the member `"Fault":{...}` of QBO's 5020 Permission Denied (a batch item's answer
/// for an entity the company's edition lacks).
pub fn push_permission_denied_member(out: &mut String) {
    push_fault_member(out, &[PERMISSION_DENIED], "ValidationFault");
}

/// 400 / 5020 Permission Denied: the company's edition or region does not offer the entity
/// (`docs/qbo-behaviour.md` §11: QBO's answer for a feature the subscription lacks).
pub fn permission_denied(time: DateTime<Utc>) -> Response {
    let body = fault_body(&[PERMISSION_DENIED], "ValidationFault", Some(time));
    json(StatusCode::BAD_REQUEST, JSON_FAULT, body)
}

/// The lower-case fault form (401, 403); `detail: None` writes `null`.
pub fn lowercase_fault_body(
    message: &str,
    detail: Option<&str>,
    code: &str,
    kind: &str,
    time: DateTime<Utc>,
) -> String {
    let mut out = String::with_capacity(400);
    out.push_str("{\"warnings\":null,\"intuitObject\":null,\"fault\":{\"error\":[{\"message\":");
    push_json_str(&mut out, message);
    out.push_str(",\"detail\":");
    match detail {
        Some(detail) => push_json_str(&mut out, detail),
        None => out.push_str("null"),
    }
    out.push_str(",\"code\":");
    push_json_str(&mut out, code);
    out.push_str(",\"element\":null}],\"type\":");
    push_json_str(&mut out, kind);
    out.push_str("},\"report\":null,\"queryResponse\":null,\"batchItemResponse\":[],\"attachableResponse\":[],\"syncErrorResponse\":null,\"requestId\":null,\"time\":");
    out.push_str(&time.timestamp_millis().to_string());
    out.push_str(",\"status\":null,\"cdcresponse\":[]}");
    out
}

/// 401 / 3200 AuthenticationFailed with `WWW-Authenticate`.
pub fn unauthorized(detail: &str, time: DateTime<Utc>) -> Response {
    let body = lowercase_fault_body(
        "message=AuthenticationFailed; errorCode=003200; statusCode=401",
        Some(detail),
        "3200",
        "AUTHENTICATION",
        time,
    );
    let mut response = json(StatusCode::UNAUTHORIZED, JSON_FAULT, body);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"Intuit\", error=\"invalid_token\""),
    );
    response
}

/// 403 / 3100 ApplicationAuthorizationFailed: a realm the token is not authorised for (an
/// unknown one, or another company's), with `detail: null` as in the public reports
/// (`docs/qbo-behaviour.md` §7).
pub fn forbidden(time: DateTime<Utc>) -> Response {
    let body = lowercase_fault_body(
        "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
        None,
        "3100",
        "SERVICE",
        time,
    );
    json(StatusCode::FORBIDDEN, JSON_FAULT, body)
}

/// 429 / 3001 ThrottleExceeded, with `Retry-After` when configured.
pub fn throttled(retry_after: Option<u64>, time: DateTime<Utc>) -> Response {
    let mut response = fault(
        StatusCode::TOO_MANY_REQUESTS,
        "message=ThrottleExceeded; errorCode=003001; statusCode=429",
        "The request limit was reached.  Try again later",
        "3001",
        "SERVICE",
        Some(time),
    );
    if let Some(secs) = retry_after
        && let Ok(value) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// 500 / 503 SystemFault 10000.
pub fn system_fault(status: StatusCode, time: DateTime<Utc>) -> Response {
    fault(
        status,
        "An application error has occurred while processing your request",
        "System Failure Error: An unexpected error occurred while accessing or saving your data. Please wait a few minutes and try again. If the problem persists, contact customer support.",
        "10000",
        "SystemFault",
        Some(time),
    )
}

/// The answer QBO gives with `status` (for scripted faults).
pub fn for_status(status: u16, retry_after: Option<u64>, time: DateTime<Utc>) -> Response {
    match status {
        401 => unauthorized("Token expired: {redacted}", time),
        403 => forbidden(time),
        429 => throttled(retry_after, time),
        other => system_fault(
            StatusCode::from_u16(other).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            time,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn standard_fault_key_order() {
        let t = Utc.timestamp_millis_opt(1_601_387_576_527).unwrap();
        let body = fault_body(
            &[FaultError {
                message: "Invalid query",
                detail: "QueryValidationError: invalid context declaration: Custmoer",
                code: "4001",
                element: None,
            }],
            "ValidationFault",
            Some(t),
        );
        assert_eq!(
            body,
            r#"{"Fault":{"Error":[{"Message":"Invalid query","Detail":"QueryValidationError: invalid context declaration: Custmoer","code":"4001"}],"type":"ValidationFault"},"time":"2020-09-29T06:52:56.527-07:00"}"#
        );
    }

    #[test]
    fn lowercase_fault_matches_the_recording() {
        let t = Utc.timestamp_millis_opt(1_601_391_072_830).unwrap();
        let body = lowercase_fault_body(
            "message=AuthenticationFailed; errorCode=003200; statusCode=401",
            Some("Token expired: {redacted}"),
            "3200",
            "AUTHENTICATION",
            t,
        );
        assert_eq!(
            body,
            r#"{"warnings":null,"intuitObject":null,"fault":{"error":[{"message":"message=AuthenticationFailed; errorCode=003200; statusCode=401","detail":"Token expired: {redacted}","code":"3200","element":null}],"type":"AUTHENTICATION"},"report":null,"queryResponse":null,"batchItemResponse":[],"attachableResponse":[],"syncErrorResponse":null,"requestId":null,"time":1601391072830,"status":null,"cdcresponse":[]}"#
        );
    }

    #[test]
    fn throttle_sets_retry_after_only_when_asked() {
        let t = Utc::now();
        assert!(
            throttled(None, t)
                .headers()
                .get(header::RETRY_AFTER)
                .is_none()
        );
        assert_eq!(throttled(Some(60), t).headers()[header::RETRY_AFTER], "60");
        assert_eq!(throttled(None, t).status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            for_status(503, None, t).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}

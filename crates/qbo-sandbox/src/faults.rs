//! The request pipeline in front of the handlers: `intuit_tid`, stats and the request log for
//! every request (kept by the company the request names, else by realm 1); for the `/v3` API
//! (query, read, write, CDC, batch) also scripted faults, dropped connections, the bearer
//! check (401) and realm check (403: an unknown realm, or a token issued for another
//! company), the company's requests-per-minute, per-second and batch windows and in-flight
//! limit (429), added latency, and random 500/503/429 answers — in that order, each with the
//! faults of the company named. Token-endpoint requests get that company's scripted faults
//! (the company of the refresh token in the form).
//!
//! Dropping a connection needs the socket: [`KillableListener`] wraps every accepted
//! `TcpStream` in a [`KillableIo`] whose kill switch reaches handlers as
//! `ConnectInfo<ConnHandle>`; once killed, every read and write fails, so hyper abandons the
//! connection without writing a response and the client sees a connection error. (Served
//! through [`crate::app`] without [`crate::spawn`], drops fall back to a 503.)

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::clock::new_tid;
use crate::config::{Endpoint, FaultAction, Faults};
use crate::oauth::{BearerError, token_request_realm, url_form};
use crate::realm::{Realm, lock};
use crate::respond;
use crate::state::{AccessError, LogEntry, SandboxState};

/// The QBO query text of a `/query` request, attached to the response for the log.
#[derive(Debug, Clone)]
pub struct LoggedQuery(pub String);

/// A connection's kill switch, as handlers see it.
#[derive(Debug, Clone)]
pub struct ConnHandle(Arc<AtomicBool>);

impl ConnHandle {
    /// Close the connection without answering.
    pub fn kill(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A TCP listener whose connections can be killed from a handler.
#[derive(Debug)]
pub struct KillableListener(pub TcpListener);

/// A TCP stream that fails every operation once killed.
#[derive(Debug)]
pub struct KillableIo {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
}

impl KillableIo {
    fn dead(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection dropped by fault injection",
    )
}

impl AsyncRead for KillableIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.dead() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.dead() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.dead() {
            return Poll::Ready(Err(aborted()));
        }
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Listener for KillableListener {
    type Io = KillableIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        let _ = stream.set_nodelay(true);
        (
            KillableIo {
                inner: stream,
                killed: Arc::new(AtomicBool::new(false)),
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Self {
        ConnHandle(stream.io().killed.clone())
    }
}

/// Which endpoint a path is, and the realm for `/v3/company/{realm}/...`.
pub fn classify(path: &str) -> (Endpoint, Option<&str>) {
    if path.starts_with("/oauth2/") {
        return (Endpoint::Token, None);
    }
    if path.starts_with("/admin") {
        return (Endpoint::Admin, None);
    }
    let Some(rest) = path.strip_prefix("/v3/company/") else {
        return (Endpoint::Other, None);
    };
    let mut parts = rest.split('/');
    let realm = parts.next().filter(|r| !r.is_empty());
    let endpoint = match (parts.next(), parts.next()) {
        (Some(q), None) if q.eq_ignore_ascii_case("query") => Endpoint::Query,
        (Some(c), None) if c.eq_ignore_ascii_case("cdc") => Endpoint::Cdc,
        (Some(b), None) if b.eq_ignore_ascii_case("batch") => Endpoint::Batch,
        (Some(_), None) => Endpoint::Write,
        _ => Endpoint::Read,
    };
    (endpoint, realm)
}

/// Releases an in-flight slot when the request ends (also when it is cancelled).
pub(crate) struct InFlight {
    realm: Arc<Realm>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut limits = lock(&self.realm.limits);
        limits.in_flight = limits.in_flight.saturating_sub(1);
    }
}

/// Drops instants older than `span` and tells whether another fits under `limit`.
fn window_has_room(
    window: &mut VecDeque<Instant>,
    now: Instant,
    span: Duration,
    limit: Option<u32>,
) -> bool {
    let Some(limit) = limit else {
        return true;
    };
    while window
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= span)
    {
        window.pop_front();
    }
    window.len() < limit as usize
}

/// Admission of one request to `realm` under its per-minute and per-second windows, its
/// in-flight limit and, for a batch, its batch window; `None` = throttle. Only admitted
/// requests count towards the windows; a batch counts once in each.
pub(crate) fn admit(realm: &Arc<Realm>, faults: &Faults, batch: bool) -> Option<InFlight> {
    const MINUTE: Duration = Duration::from_secs(60);
    let now = Instant::now();
    let mut guard = lock(&realm.limits);
    let limits = &mut *guard;
    if !window_has_room(&mut limits.minute, now, MINUTE, faults.rpm_limit)
        || !window_has_room(
            &mut limits.second,
            now,
            Duration::from_secs(1),
            faults.rps_limit,
        )
        || (batch
            && !window_has_room(
                &mut limits.batch_minute,
                now,
                MINUTE,
                faults.batch_rpm_limit,
            ))
    {
        return None;
    }
    if let Some(max) = faults.max_in_flight
        && limits.in_flight >= max
    {
        return None;
    }
    if faults.rpm_limit.is_some() {
        limits.minute.push_back(now);
    }
    if faults.rps_limit.is_some() {
        limits.second.push_back(now);
    }
    if batch && faults.batch_rpm_limit.is_some() {
        limits.batch_minute.push_back(now);
    }
    limits.in_flight += 1;
    let current = limits.in_flight;
    drop(guard);
    realm.note_in_flight(current);
    Some(InFlight {
        realm: realm.clone(),
    })
}

enum Outcome {
    Answer(Response),
    Drop,
}

/// The largest token-endpoint form read (axum's default body limit elsewhere).
const TOKEN_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The company a request is about, if it names a known one: the path's realm for the `/v3`
/// API, the refresh token's for the token endpoint (whose body is read here, then handed on),
/// `?realm=` for the admin API. Also returns the request, rebuilt when its body was read.
async fn resolve_realm(
    state: &SandboxState,
    endpoint: Endpoint,
    path_realm: Option<&str>,
    request: Request,
) -> Result<(Option<Arc<Realm>>, Request), Response> {
    match endpoint {
        Endpoint::Token => {
            let (parts, body) = request.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, TOKEN_BODY_LIMIT).await else {
                return Err(
                    (StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded").into_response()
                );
            };
            let form = url_form(&String::from_utf8_lossy(&bytes));
            let realm = token_request_realm(state, &form).clone();
            Ok((
                Some(realm),
                Request::from_parts(parts, axum::body::Body::from(bytes)),
            ))
        }
        Endpoint::Admin => {
            let realm = request
                .uri()
                .query()
                .map(url_form)
                .and_then(|q| q.get("realm").and_then(|id| state.realm(id)).cloned());
            Ok((realm, request))
        }
        Endpoint::Other => Ok((None, request)),
        _ => Ok((path_realm.and_then(|id| state.realm(id)).cloned(), request)),
    }
}

/// The middleware (see the module doc). Every request is counted and logged in the company it
/// names, else in realm 1.
pub async fn pipeline(
    State(state): State<Arc<SandboxState>>,
    request: Request,
    next: Next,
) -> Response {
    let tid = new_tid();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let (endpoint, path_realm) = classify(&path);
    let path_realm = path_realm.map(str::to_owned);
    let conn = request
        .extensions()
        .get::<ConnectInfo<ConnHandle>>()
        .map(|c| c.0.clone());
    let (realm, outcome) = match resolve_realm(&state, endpoint, path_realm.as_deref(), request)
        .await
    {
        Ok((realm, request)) => {
            let account = realm
                .clone()
                .unwrap_or_else(|| state.default_realm().clone());
            account.note_request(endpoint);
            let outcome = guarded(&state, endpoint, realm.as_ref(), &account, request, next).await;
            (account, outcome)
        }
        Err(refused) => {
            let account = state.default_realm().clone();
            account.note_request(endpoint);
            (account, Outcome::Answer(refused))
        }
    };
    let mut response = match outcome {
        Outcome::Answer(response) => response,
        Outcome::Drop => match conn {
            Some(conn) => {
                conn.kill();
                realm.note_dropped();
                realm.log_request(LogEntry {
                    method,
                    path,
                    query: None,
                    status: 0,
                    intuit_tid: tid,
                    endpoint,
                });
                return respond::system_fault(StatusCode::SERVICE_UNAVAILABLE, realm.now());
            }
            None => respond::system_fault(StatusCode::SERVICE_UNAVAILABLE, realm.now()),
        },
    };
    let status = response.status().as_u16();
    realm.note_status(status);
    let query = response
        .extensions()
        .get::<LoggedQuery>()
        .map(|q| q.0.clone());
    if let Ok(value) = HeaderValue::from_str(&tid) {
        response.headers_mut().insert("intuit_tid", value);
    }
    tracing::debug!(method, path, status, intuit_tid = tid, "request");
    realm.log_request(LogEntry {
        method,
        path,
        query,
        status,
        intuit_tid: tid,
        endpoint,
    });
    response
}

/// Faults, authentication, authorisation and limits for one request. `realm` is the company
/// the request names (`None`: an unknown one), `account` the one whose faults apply.
async fn guarded(
    state: &Arc<SandboxState>,
    endpoint: Endpoint,
    realm: Option<&Arc<Realm>>,
    account: &Arc<Realm>,
    request: Request,
    next: Next,
) -> Outcome {
    if !matches!(
        endpoint,
        Endpoint::Query
            | Endpoint::Read
            | Endpoint::Write
            | Endpoint::Cdc
            | Endpoint::Batch
            | Endpoint::Token
    ) {
        return Outcome::Answer(next.run(request).await);
    }
    let faults = account.faults();
    match account.take_scripted(endpoint) {
        Some(FaultAction::Drop) => return Outcome::Drop,
        Some(FaultAction::Status(status)) => {
            return Outcome::Answer(respond::for_status(
                status,
                faults.retry_after_secs,
                account.now(),
            ));
        }
        Some(FaultAction::DelayMs(ms)) => tokio::time::sleep(Duration::from_millis(ms)).await,
        None => {}
    }
    if endpoint == Endpoint::Token {
        return Outcome::Answer(next.run(request).await);
    }
    if faults.drop_rate > 0.0 && rand::rng().random_bool(faults.drop_rate) {
        return Outcome::Drop;
    }
    let now = account.now();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.check_access(authorization, realm, Instant::now()) {
        Ok(()) => {}
        Err(AccessError::Bearer(error)) => {
            let detail = match error {
                BearerError::Expired => "Token expired: {redacted}",
                BearerError::Unknown => "Token invalid: {redacted}",
                BearerError::Missing => "Authorization header missing or not a Bearer token",
            };
            return Outcome::Answer(respond::unauthorized(detail, now));
        }
        Err(AccessError::OtherRealm) => return Outcome::Answer(respond::forbidden(now)),
    }
    let Some(realm) = realm else {
        return Outcome::Answer(respond::forbidden(now));
    };
    let Some(slot) = admit(realm, &faults, endpoint == Endpoint::Batch) else {
        return Outcome::Answer(respond::throttled(faults.retry_after_secs, now));
    };
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    let (error, throttle) = {
        let mut rng = rand::rng();
        (
            faults.error_rate > 0.0 && rng.random_bool(faults.error_rate),
            faults.throttle_rate > 0.0 && rng.random_bool(faults.throttle_rate),
        )
    };
    if error {
        let status = if rand::rng().random_bool(0.5) {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return Outcome::Answer(respond::system_fault(status, now));
    }
    if throttle {
        return Outcome::Answer(respond::throttled(faults.retry_after_secs, now));
    }
    let response = next.run(request).await;
    drop(slot);
    Outcome::Answer(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_paths() {
        assert_eq!(
            classify("/v3/company/123/query"),
            (Endpoint::Query, Some("123"))
        );
        assert_eq!(
            classify("/v3/company/123/cdc"),
            (Endpoint::Cdc, Some("123"))
        );
        assert_eq!(
            classify("/v3/company/123/customer/5"),
            (Endpoint::Read, Some("123"))
        );
        assert_eq!(
            classify("/v3/company/123/batch"),
            (Endpoint::Batch, Some("123"))
        );
        assert_eq!(
            classify("/v3/company/123/invoice"),
            (Endpoint::Write, Some("123"))
        );
        assert_eq!(
            classify("/oauth2/v1/tokens/bearer"),
            (Endpoint::Token, None)
        );
        assert_eq!(classify("/admin/stats"), (Endpoint::Admin, None));
        assert_eq!(classify("/favicon.ico"), (Endpoint::Other, None));
    }

    fn two_realms() -> Arc<SandboxState> {
        Arc::new(
            SandboxState::new(crate::SandboxConfig {
                customers: 1,
                items: 1,
                invoices: 1,
                realms: 2,
                ..Default::default()
            })
            .unwrap(),
        )
    }

    #[test]
    fn rpm_window_and_in_flight_limit_are_per_realm() {
        let state = two_realms();
        let (r, other) = (&state.realms()[0], &state.realms()[1]);
        let rpm = Faults {
            rpm_limit: Some(2),
            ..Faults::default()
        };
        let a = admit(r, &rpm, false);
        let b = admit(r, &rpm, false);
        assert!(a.is_some() && b.is_some());
        assert!(admit(r, &rpm, false).is_none());
        assert!(admit(other, &rpm, false).is_some());
        drop((a, b));
        assert!(admit(r, &rpm, false).is_none(), "the window remembers");
        let state = two_realms();
        let (s, other) = (&state.realms()[0], &state.realms()[1]);
        let rps = Faults {
            rps_limit: Some(1),
            ..Faults::default()
        };
        assert!(admit(s, &rps, false).is_some());
        assert!(admit(s, &rps, false).is_none());
        let one = Faults {
            max_in_flight: Some(1),
            ..Faults::default()
        };
        let first = admit(other, &one, false);
        assert!(first.is_some());
        assert!(admit(other, &one, false).is_none());
        assert_eq!(other.stats().in_flight_now, 1);
        drop(first);
        assert_eq!(other.stats().in_flight_now, 0);
        let again = admit(other, &one, false);
        assert!(again.is_some());
        let also = admit(other, &Faults::default(), false);
        assert_eq!(other.stats().in_flight_max, 2);
        drop((again, also));
        assert_eq!(s.stats().in_flight_max, 1);
    }

    #[test]
    fn batch_window_counts_only_batches_and_each_batch_once() {
        let state = two_realms();
        let (r, other) = (&state.realms()[0], &state.realms()[1]);
        let faults = Faults {
            batch_rpm_limit: Some(2),
            rpm_limit: Some(4),
            ..Faults::default()
        };
        assert!(admit(r, &faults, true).is_some());
        assert!(admit(r, &faults, true).is_some());
        assert!(admit(r, &faults, true).is_none(), "third batch in a minute");
        assert!(admit(other, &faults, true).is_some(), "another company");
        assert!(admit(r, &faults, false).is_some(), "ordinary requests pass");
        assert!(admit(r, &faults, false).is_some());
        assert!(
            admit(r, &faults, false).is_none(),
            "2 batches + 2 requests = 4"
        );
    }
}

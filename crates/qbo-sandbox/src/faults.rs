//! The request pipeline in front of the handlers: `intuit_tid`, stats and the request log for
//! every request; for the `/v3` API also scripted faults, dropped connections, the bearer
//! check (401) and realm check (403), the per-realm requests-per-minute window and in-flight
//! limit (429), added latency, and random 500/503/429 answers — in that order.
//!
//! Dropping a connection needs the socket: [`KillableListener`] wraps every accepted
//! `TcpStream` in a [`KillableIo`] whose kill switch reaches handlers as
//! `ConnectInfo<ConnHandle>`; once killed, every read and write fails, so hyper abandons the
//! connection without writing a response and the client sees a connection error. (Served
//! through [`crate::app`] without [`crate::spawn`], drops fall back to a 503.)

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
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::clock::new_tid;
use crate::config::{Endpoint, FaultAction};
use crate::oauth::BearerError;
use crate::respond;
use crate::state::{LogEntry, SandboxState};

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
        (Some(_), None) => Endpoint::Write,
        _ => Endpoint::Read,
    };
    (endpoint, realm)
}

/// Releases an in-flight slot when the request ends (also when it is cancelled).
struct InFlight {
    state: Arc<SandboxState>,
    realm: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut limits = self.state.limits.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = limits.in_flight.get_mut(&self.realm) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Drops instants older than `span` and tells whether another fits under `limit`.
fn window_has_room(
    windows: &mut std::collections::HashMap<String, std::collections::VecDeque<Instant>>,
    realm: &str,
    now: Instant,
    span: Duration,
    limit: Option<u32>,
) -> bool {
    let Some(limit) = limit else {
        return true;
    };
    let window = windows.entry(realm.to_owned()).or_default();
    while window
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= span)
    {
        window.pop_front();
    }
    window.len() < limit as usize
}

/// Admission under the per-minute and per-second windows and the in-flight limit;
/// `None` = throttle. Only admitted requests count towards the windows.
fn admit(
    state: &Arc<SandboxState>,
    realm: &str,
    faults: &crate::config::Faults,
) -> Option<InFlight> {
    let now = Instant::now();
    let mut guard = state.limits.lock().unwrap_or_else(|p| p.into_inner());
    let limits = &mut *guard;
    if !window_has_room(
        &mut limits.window,
        realm,
        now,
        Duration::from_secs(60),
        faults.rpm_limit,
    ) || !window_has_room(
        &mut limits.second,
        realm,
        now,
        Duration::from_secs(1),
        faults.rps_limit,
    ) {
        return None;
    }
    let current = limits.in_flight.get(realm).copied().unwrap_or(0);
    if let Some(max) = faults.max_in_flight
        && current >= max
    {
        return None;
    }
    if faults.rpm_limit.is_some() {
        limits
            .window
            .entry(realm.to_owned())
            .or_default()
            .push_back(now);
    }
    if faults.rps_limit.is_some() {
        limits
            .second
            .entry(realm.to_owned())
            .or_default()
            .push_back(now);
    }
    limits.in_flight.insert(realm.to_owned(), current + 1);
    drop(guard);
    state.note_in_flight(current + 1);
    Some(InFlight {
        state: state.clone(),
        realm: realm.to_owned(),
    })
}

enum Outcome {
    Answer(Response),
    Drop,
}

/// The middleware (see the module doc).
pub async fn pipeline(
    State(state): State<Arc<SandboxState>>,
    request: Request,
    next: Next,
) -> Response {
    let tid = new_tid();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let (endpoint, realm) = classify(&path);
    let realm = realm.map(str::to_owned);
    let conn = request
        .extensions()
        .get::<ConnectInfo<ConnHandle>>()
        .map(|c| c.0.clone());
    state.note_request(endpoint);
    let outcome = guarded(&state, endpoint, realm.as_deref(), request, next).await;
    let mut response = match outcome {
        Outcome::Answer(response) => response,
        Outcome::Drop => match conn {
            Some(conn) => {
                conn.kill();
                state.note_dropped();
                state.log_request(LogEntry {
                    method,
                    path,
                    query: None,
                    status: 0,
                    intuit_tid: tid,
                    endpoint,
                });
                return respond::system_fault(StatusCode::SERVICE_UNAVAILABLE, state.now());
            }
            None => respond::system_fault(StatusCode::SERVICE_UNAVAILABLE, state.now()),
        },
    };
    let status = response.status().as_u16();
    state.note_status(status);
    let query = response
        .extensions()
        .get::<LoggedQuery>()
        .map(|q| q.0.clone());
    if let Ok(value) = HeaderValue::from_str(&tid) {
        response.headers_mut().insert("intuit_tid", value);
    }
    tracing::debug!(method, path, status, intuit_tid = tid, "request");
    state.log_request(LogEntry {
        method,
        path,
        query,
        status,
        intuit_tid: tid,
        endpoint,
    });
    response
}

async fn guarded(
    state: &Arc<SandboxState>,
    endpoint: Endpoint,
    realm: Option<&str>,
    request: Request,
    next: Next,
) -> Outcome {
    if !matches!(
        endpoint,
        Endpoint::Query | Endpoint::Read | Endpoint::Cdc | Endpoint::Token
    ) {
        return Outcome::Answer(next.run(request).await);
    }
    let faults = state.faults();
    match state.take_scripted(endpoint) {
        Some(FaultAction::Drop) => return Outcome::Drop,
        Some(FaultAction::Status(status)) => {
            return Outcome::Answer(respond::for_status(
                status,
                faults.retry_after_secs,
                state.now(),
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
    let now = state.now();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(error) = state.with_auth(|auth| auth.check_bearer(authorization, Instant::now())) {
        let detail = match error {
            BearerError::Expired => "Token expired: {redacted}",
            BearerError::Unknown => "Token invalid: {redacted}",
            BearerError::Missing => "Authorization header missing or not a Bearer token",
        };
        return Outcome::Answer(respond::unauthorized(detail, now));
    }
    let realm = realm.unwrap_or_default();
    if realm != state.realm_id() {
        return Outcome::Answer(respond::forbidden(now));
    }
    let Some(slot) = admit(state, realm, &faults) else {
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
            classify("/oauth2/v1/tokens/bearer"),
            (Endpoint::Token, None)
        );
        assert_eq!(classify("/admin/stats"), (Endpoint::Admin, None));
        assert_eq!(classify("/favicon.ico"), (Endpoint::Other, None));
    }

    use crate::config::Faults;

    #[test]
    fn rpm_window_and_in_flight_limit() {
        let state = Arc::new(
            SandboxState::new(crate::SandboxConfig {
                customers: 1,
                items: 1,
                invoices: 1,
                ..Default::default()
            })
            .unwrap(),
        );
        let rpm = Faults {
            rpm_limit: Some(2),
            ..Faults::default()
        };
        let a = admit(&state, "r", &rpm);
        let b = admit(&state, "r", &rpm);
        assert!(a.is_some() && b.is_some());
        assert!(admit(&state, "r", &rpm).is_none());
        assert!(admit(&state, "other", &rpm).is_some());
        drop((a, b));
        let rps = Faults {
            rps_limit: Some(1),
            ..Faults::default()
        };
        assert!(admit(&state, "s", &rps).is_some());
        assert!(admit(&state, "s", &rps).is_none());
        let one = Faults {
            max_in_flight: Some(1),
            ..Faults::default()
        };
        let first = admit(&state, "x", &one);
        assert!(first.is_some());
        assert!(admit(&state, "x", &one).is_none());
        drop(first);
        assert!(admit(&state, "x", &one).is_some());
        assert_eq!(state.stats().in_flight_max, 2);
    }
}

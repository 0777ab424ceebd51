//! The only code that speaks HTTP to the QBO API.
//!
//! - Per-realm limits shared by everything the process runs ([`RealmLimits`]): a GCRA rate
//!   limiter (no bursts, so no 60-second window ever holds more than the budget) and a
//!   semaphore for requests in flight. In steady state QBO never has to answer 429.
//! - Every request sends `Accept: application/json` and `minorversion=75`; QBO's `intuit_tid`
//!   is kept in errors and logs.
//! - Whether a failure is retried is decided in one place, [`classify`]: 429 waits
//!   (`Retry-After` when sent, else the configured throttle wait); 5xx, timeouts and dropped
//!   connections back off exponentially with jitter; a 401 refreshes the token and retries
//!   once; any other 4xx fails with QBO's fault code and message.
//! - Nothing a server sends can exhaust memory or time: bodies are read up to
//!   [`MAX_API_BODY`] (counted after decompression, which also bounds the compressed bytes),
//!   `Retry-After` is capped at [`MAX_RETRY_AFTER`], redirects are followed only within the
//!   API's own scheme, host and port, and every wait ends when a stop is requested.

use crate::auth::{AuthError, Authorizer};
use crate::config::{HttpSettings, RealmId};
use crate::shutdown::StopSignal;
use backon::BackoffBuilder;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use url::Url;

/// The QBO minor version sent with every request (Intuit made 75 the minimum minor version in 2025).
pub const MINOR_VERSION: &str = "75";

/// Largest API response body accepted, after decompression. A page of 1000 QBO records is a
/// few MB; anything near this is not a QBO page.
pub const MAX_API_BODY: usize = 64 * 1024 * 1024;
/// Longest `Retry-After` honoured; a longer one is waited for this long, then retried.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// Redirects followed on the API (same scheme, host and port only).
const MAX_API_REDIRECTS: usize = 5;

/// Rate limiter and in-flight cap for one realm, shared process-wide.
pub struct RealmLimits {
    limiter: DefaultDirectRateLimiter,
    /// QBO's own per-minute limit on batch requests (they also count against `limiter`);
    /// checked, never waited for: without budget the queries go on their own.
    batch_limiter: DefaultDirectRateLimiter,
    in_flight: Semaphore,
}

impl RealmLimits {
    fn new(settings: &HttpSettings) -> Self {
        let rpm = settings.requests_per_minute.max(1);
        let period = Duration::from_micros(60_000_000 / u64::from(rpm));
        let quota = Quota::with_period(period)
            .expect("period is positive")
            .allow_burst(NonZeroU32::MIN);
        // Batches come in bursts (the counts of every entity at the start of a run): a burst
        // of a quarter of the budget, refilled at the rest, so no 60 seconds ever hold more
        // than `batch_per_minute` batches.
        let batch_rpm = settings.batch_per_minute.max(2);
        let burst = (batch_rpm / 4).max(1);
        let batch_quota = Quota::with_period(Duration::from_micros(
            60_000_000 / u64::from(batch_rpm - burst),
        ))
        .expect("period is positive")
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        RealmLimits {
            limiter: RateLimiter::direct(quota),
            batch_limiter: RateLimiter::direct(batch_quota),
            in_flight: Semaphore::new(settings.max_in_flight.max(1) as usize),
        }
    }

    /// The limits of `realm` in this process, created on first use with `settings`.
    pub fn for_realm(realm: &RealmId, settings: &HttpSettings) -> Arc<RealmLimits> {
        type Registry = Mutex<HashMap<(String, u32, u32, u32), Arc<RealmLimits>>>;
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        let key = (
            realm.as_str().to_string(),
            settings.requests_per_minute,
            settings.max_in_flight,
            settings.batch_per_minute,
        );
        let mut map = REGISTRY
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| Arc::new(RealmLimits::new(settings)))
            .clone()
    }
}

/// Request counters, one set per entity of a run.
#[derive(Debug, Default)]
pub struct RequestStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub throttled: AtomicU64,
    pub server_errors: AtomicU64,
    pub network_errors: AtomicU64,
    pub unauthorized: AtomicU64,
    /// Of `requests`, the batch requests (each carrying up to 30 queries).
    pub batches: AtomicU64,
}

impl RequestStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

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
}

fn fmt_code(code: &Option<String>) -> String {
    code.as_ref()
        .map(|c| format!(" (code {c})"))
        .unwrap_or_default()
}
fn fmt_detail(detail: &Option<String>) -> String {
    detail
        .as_ref()
        .filter(|d| !d.is_empty())
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}
fn fmt_tid(tid: &Option<String>) -> String {
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

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// 429: wait (the given `Retry-After`, else the configured throttle wait), then retry.
    Throttled(Option<Duration>),
    /// 5xx, timeouts, dropped connections: back off exponentially, then retry.
    Transient,
    /// 401: refresh the access token and retry once.
    Unauthorized,
    /// Anything else: fail now.
    Fatal,
}

/// The one place that decides whether a failure is retried.
pub fn classify(err: &QboError) -> RetryClass {
    match err {
        QboError::Fault {
            status,
            retry_after,
            code,
            ..
        } => match *status {
            429 => RetryClass::Throttled(*retry_after),
            // 2016-era throttling came back as 403 with code 3001.
            403 if code.as_deref() == Some("3001") || code.as_deref() == Some("003001") => {
                RetryClass::Throttled(*retry_after)
            }
            401 => RetryClass::Unauthorized,
            500..=599 => RetryClass::Transient,
            // A SystemFault (code 10000) inside an HTTP 200 is a server-side failure.
            200 if code.as_deref() == Some("10000") => RetryClass::Transient,
            _ => RetryClass::Fatal,
        },
        QboError::Network(_) => RetryClass::Transient,
        // A truncated body is a dropped connection in disguise.
        QboError::Decode { .. } => RetryClass::Transient,
        QboError::Auth(e) if e.is_transient() => RetryClass::Transient,
        QboError::Auth(_)
        | QboError::Exhausted { .. }
        | QboError::TooLarge { .. }
        | QboError::Stopped => RetryClass::Fatal,
    }
}

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
fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
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
fn fault_in_ok_body(body: &[u8]) -> Option<(Option<String>, String, Option<String>)> {
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

/// An authorised, rate-limited QBO client for one realm.
pub struct QboClient {
    http: reqwest::Client,
    query_url: Url,
    batch_url: Url,
    auth: Arc<Authorizer>,
    limits: Arc<RealmLimits>,
    settings: HttpSettings,
    /// Small queries waiting to share a batch request ([`QboClient::query_small`]).
    pending: Mutex<Pending>,
}

/// Queries waiting for the next batch; `leader` is true while a caller is collecting one.
#[derive(Default)]
struct Pending {
    queue: Vec<(String, tokio::sync::oneshot::Sender<Option<bytes::Bytes>>)>,
    leader: bool,
}

/// Ends a caller's leadership of the batch queue, whatever way its future ends: the queue is
/// emptied (its waiters then send their queries on their own) and a later caller leads.
struct LeaderGuard<'a>(&'a Mutex<Pending>);

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        p.leader = false;
        p.queue.clear();
    }
}

/// Most queries in one batch request (QBO: 30).
pub const MAX_BATCH_ITEMS: usize = 30;
/// How long the first small query waits for others to share its batch request.
const BATCH_GATHER: Duration = Duration::from_millis(15);

/// One HTTP request to QBO: a query (GET `/query`) or a batch of queries (POST `/batch`).
#[derive(Clone, Copy)]
enum Request<'a> {
    Query(&'a str),
    Batch(&'a [String]),
}

impl Request<'_> {
    fn log_text(&self) -> String {
        match self {
            Request::Query(q) => (*q).to_string(),
            Request::Batch(qs) => format!("batch of {} queries", qs.len()),
        }
    }
}

/// Builds the API's reqwest client (rustls, connection reuse, timeouts). Redirects are
/// followed only to the same scheme, host and port: a redirect elsewhere would carry the
/// bearer token to another server.
pub fn http_client(settings: &HttpSettings) -> reqwest::Result<reqwest::Client> {
    crate::install_crypto_provider();
    let same_origin = reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().cloned();
        let same = first.is_some_and(|f| {
            f.scheme() == attempt.url().scheme()
                && f.host_str() == attempt.url().host_str()
                && f.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if !same || attempt.previous().len() > MAX_API_REDIRECTS {
            attempt.stop()
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .user_agent(concat!("qbo-pipeline/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(same_origin)
        .build()
}

/// Builds the token endpoint's client: never follows a redirect (a 307 would re-send the
/// refresh token and the client secret to wherever it points).
pub fn token_http_client(settings: &HttpSettings) -> reqwest::Result<reqwest::Client> {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(concat!("qbo-pipeline/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout.min(Duration::from_secs(60)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

impl QboClient {
    pub fn new(
        http: reqwest::Client,
        api_base: &Url,
        realm: &RealmId,
        auth: Arc<Authorizer>,
        settings: HttpSettings,
    ) -> Result<Self, url::ParseError> {
        let base = api_base.as_str().trim_end_matches('/');
        let query_url = Url::parse(&format!("{base}/v3/company/{realm}/query"))?;
        let batch_url = Url::parse(&format!("{base}/v3/company/{realm}/batch"))?;
        Ok(QboClient {
            http,
            query_url,
            batch_url,
            pending: Mutex::new(Pending::default()),
            limits: RealmLimits::for_realm(realm, &settings),
            auth,
            settings,
        })
    }

    pub fn authorizer(&self) -> &Arc<Authorizer> {
        &self.auth
    }

    /// Runs one query with limits and retries; returns the response body of a 200. Every wait
    /// (limits, back-off, throttling, token refresh) ends early with [`QboError::Stopped`]
    /// when `stop` is requested.
    pub async fn query(
        &self,
        query: &str,
        stats: &RequestStats,
        stop: &StopSignal,
    ) -> Result<bytes::Bytes, QboError> {
        self.query_parsed(query, stats, stop, |body| {
            Ok::<_, Parsed<std::convert::Infallible>>(body.clone())
        })
        .await
        .map_err(|e| match e {
            QueryError::Qbo(e) => e,
            QueryError::Parse(never) => match never {},
        })
    }

    /// [`QboClient::query`], then `parse` on the body, in the same retry loop: a body that
    /// `parse` calls [`Parsed::Truncated`] (cut short by a dropped connection, say) is a
    /// transient failure like any other, retried with back-off within `--max-retries`; a
    /// [`Parsed::Invalid`] body is returned as [`QueryError::Parse`].
    pub async fn query_parsed<T, E>(
        &self,
        query: &str,
        stats: &RequestStats,
        stop: &StopSignal,
        parse: impl Fn(&bytes::Bytes) -> Result<T, Parsed<E>>,
    ) -> Result<T, QueryError<E>> {
        self.send_parsed(Request::Query(query), stats, stop, parse)
            .await
    }

    /// A small query (a count, a page of a small entity): sent in a batch request shared
    /// with the other small queries made within a few milliseconds (up to
    /// [`MAX_BATCH_ITEMS`]), so a company of 40 entities is counted in two requests instead
    /// of 40. The answer has `/query`'s shape. Anything the batch cannot answer (the batch
    /// request failed, or QBO put a fault in this query's item) is sent again on its own
    /// through [`QboClient::query`], so errors, retries and their classification are
    /// exactly those of a direct query. With batching off (`batch_per_minute` 0) it is
    /// [`QboClient::query`].
    pub async fn query_small(
        &self,
        query: &str,
        stats: &RequestStats,
        stop: &StopSignal,
    ) -> Result<bytes::Bytes, QboError> {
        if self.settings.batch_per_minute == 0 {
            return self.query(query, stats, stop).await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lead = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.queue.push((query.to_string(), tx));
            !std::mem::replace(&mut p.leader, true)
        };
        if lead {
            // Should this future stop or be dropped while leading, the guard hands every
            // waiting query back (its sender dropped), so each is sent on its own.
            let _guard = LeaderGuard(&self.pending);
            // Gather the others, then send batches until the queue is empty.
            if !stop.sleep(BATCH_GATHER).await {
                return Err(QboError::Stopped);
            }
            loop {
                let items: Vec<_> = {
                    let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                    if p.queue.is_empty() {
                        break;
                    }
                    let n = p.queue.len().min(MAX_BATCH_ITEMS);
                    p.queue.drain(..n).collect()
                };
                let queries: Vec<String> = items.iter().map(|(q, _)| q.clone()).collect();
                let answers = if queries.len() == 1 {
                    // A batch of one costs the same request: send it plainly.
                    vec![None]
                } else if self.limits.batch_limiter.check().is_err() {
                    // QBO's batch budget is spent for now: rather than wait for it, send
                    // the queries on their own within the (much larger) request budget.
                    vec![None; queries.len()]
                } else {
                    match self
                        .send_parsed(Request::Batch(&queries), stats, stop, |body| {
                            split_batch(body, queries.len()).map_err(Parsed::Invalid)
                        })
                        .await
                    {
                        Ok(answers) => answers,
                        Err(e) => {
                            tracing::debug!(error = %DisplayQueryError(&e), "batch request failed; sending its queries one by one");
                            vec![None; queries.len()]
                        }
                    }
                };
                for ((_, tx), answer) in items.into_iter().zip(answers) {
                    let _ = tx.send(answer);
                }
            }
        }
        match rx.await {
            Ok(Some(body)) => Ok(body),
            // Unanswered by the batch (or the leader went away): on its own.
            _ => self.query(query, stats, stop).await,
        }
    }

    /// The one retry loop, for any request.
    async fn send_parsed<T, E>(
        &self,
        request: Request<'_>,
        stats: &RequestStats,
        stop: &StopSignal,
        parse: impl Fn(&bytes::Bytes) -> Result<T, Parsed<E>>,
    ) -> Result<T, QueryError<E>> {
        let mut backoff = backon::ExponentialBuilder::new()
            .with_min_delay(self.settings.min_backoff)
            .with_max_delay(self.settings.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(usize::MAX)
            .build();
        let mut attempts: u32 = 0;
        let mut refreshed = false;
        loop {
            attempts += 1;
            if stop.is_stopped() {
                return Err(QueryError::Qbo(QboError::Stopped));
            }
            let outcome = self.attempt(request, stats, stop).await;
            let (err, generation) = match outcome {
                Ok(body) => match parse(&body) {
                    Ok(value) => return Ok(value),
                    Err(Parsed::Invalid(e)) => return Err(QueryError::Parse(e)),
                    Err(Parsed::Truncated(reason)) => (
                        QboError::Decode {
                            reason,
                            intuit_tid: None,
                        },
                        None,
                    ),
                },
                Err(pair) => pair,
            };
            let class = classify(&err);
            let retries_left = attempts <= self.settings.max_retries;
            let wait = match class {
                RetryClass::Unauthorized if !refreshed => {
                    RequestStats::bump(&stats.unauthorized);
                    refreshed = true;
                    if let Some(g) = generation {
                        self.auth.rejected(g).await;
                    }
                    tracing::info!(error = %err, "QBO refused the access token; refreshing it and retrying");
                    Duration::ZERO
                }
                RetryClass::Throttled(after) if retries_left => {
                    RequestStats::bump(&stats.throttled);
                    let wait = after.unwrap_or(self.settings.throttle_wait);
                    tracing::warn!(wait_ms = wait.as_millis() as u64, error = %err, "QBO throttled the request (429); waiting");
                    wait
                }
                RetryClass::Transient if retries_left => {
                    match &err {
                        QboError::Network(_) => RequestStats::bump(&stats.network_errors),
                        _ => RequestStats::bump(&stats.server_errors),
                    }
                    let wait = backoff.next().unwrap_or(self.settings.max_backoff);
                    tracing::warn!(attempt = attempts, wait_ms = wait.as_millis() as u64, error = %err, "transient QBO failure; backing off");
                    wait
                }
                RetryClass::Fatal | RetryClass::Unauthorized => return Err(QueryError::Qbo(err)),
                RetryClass::Throttled(_) | RetryClass::Transient => {
                    return Err(QueryError::Qbo(QboError::Exhausted {
                        attempts,
                        last: Box::new(err),
                    }));
                }
            };
            RequestStats::bump(&stats.retries);
            if !wait.is_zero() && !stop.sleep(wait).await {
                return Err(QueryError::Qbo(QboError::Stopped));
            }
        }
    }

    /// One attempt: wait for the limits, send, read. Returns the token generation used so a
    /// 401 can invalidate exactly that token.
    async fn attempt(
        &self,
        request: Request<'_>,
        stats: &RequestStats,
        stop: &StopSignal,
    ) -> Result<bytes::Bytes, (QboError, Option<u64>)> {
        let bearer = self.auth.bearer(stop).await.map_err(|e| match e {
            AuthError::Stopped => (QboError::Stopped, None),
            e => (e.into(), None),
        })?;
        let stopped = || (QboError::Stopped, None);
        tokio::select! {
            _ = self.limits.limiter.until_ready() => {}
            _ = stop.stopped() => return Err(stopped()),
        }
        let _permit = tokio::select! {
            permit = self.limits.in_flight.acquire() => permit.map_err(|_| stopped())?,
            _ = stop.stopped() => return Err(stopped()),
        };
        RequestStats::bump(&stats.requests);
        let generation = Some(bearer.generation);
        let builder = match request {
            Request::Query(query) => self
                .http
                .get(self.query_url.clone())
                .query(&[("query", query), ("minorversion", MINOR_VERSION)]),
            Request::Batch(queries) => {
                RequestStats::bump(&stats.batches);
                let items: Vec<serde_json::Value> = queries
                    .iter()
                    .enumerate()
                    .map(|(i, q)| serde_json::json!({ "bId": i.to_string(), "Query": q }))
                    .collect();
                self.http
                    .post(self.batch_url.clone())
                    .query(&[("minorversion", MINOR_VERSION)])
                    .json(&serde_json::json!({ "BatchItemRequest": items }))
            }
        };
        tracing::trace!(request = %request.log_text(), "sending");
        let response = builder
            .bearer_auth(bearer.token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| (QboError::Network(e.without_url()), generation))?;
        let status = response.status().as_u16();
        let intuit_tid = response
            .headers()
            .get("intuit_tid")
            .and_then(|v| v.to_str().ok())
            .map(|t| printable(t, 128));
        let retry_after = parse_retry_after(response.headers());
        let body = read_body(response, MAX_API_BODY)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => QboError::TooLarge {
                    limit: MAX_API_BODY,
                    intuit_tid: intuit_tid.clone(),
                },
                BodyError::Network(e) => QboError::Network(e.without_url()),
            })
            .map_err(|e| (e, generation))?;
        if status == 200 {
            // A 200 may still carry a Fault (QBO does this for some server errors).
            if let Some((code, message, detail)) = fault_in_ok_body(&body) {
                return Err((
                    QboError::Fault {
                        status,
                        code,
                        message,
                        detail,
                        intuit_tid,
                        retry_after,
                    },
                    generation,
                ));
            }
            tracing::trace!(
                intuit_tid = intuit_tid.as_deref().unwrap_or("-"),
                bytes = body.len(),
                "query answered"
            );
            return Ok(body);
        }
        let (code, message, detail) = parse_fault(&body).unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&body);
            let snippet = printable(&text, 200);
            (
                None,
                format!("HTTP {status}"),
                Some(snippet).filter(|s| !s.is_empty()),
            )
        });
        Err((
            QboError::Fault {
                status,
                code,
                message,
                detail,
                intuit_tid,
                retry_after,
            },
            generation,
        ))
    }
}

/// The items of a batch answer, in request order, each as a `/query` answer
/// (`{"QueryResponse": ..., "time": ...}`), or `None` for an item that holds a fault or is
/// missing (sent again on its own). An answer that is not a batch answer at all is an error.
fn split_batch(body: &bytes::Bytes, n: usize) -> Result<Vec<Option<bytes::Bytes>>, String> {
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

struct DisplayQueryError<'a, E>(&'a QueryError<E>);

impl<E> std::fmt::Display for DisplayQueryError<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            QueryError::Qbo(e) => write!(f, "{e}"),
            QueryError::Parse(_) => f.write_str("unreadable batch answer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

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
use crate::error::{Parsed, QboError, QueryError};
use crate::limits::RealmLimits;
use crate::observe::{Endpoint, Outcome, RequestObserver, RequestRecord};
use crate::response::{
    BodyError, MAX_API_BODY, fault_in_ok_body, parse_fault, parse_retry_after, printable,
    read_body, split_batch,
};
use crate::retry::{Retry, Step};
use crate::settings::HttpSettings;
use crate::stop::StopSignal;
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use url::Url;

/// The QBO minor version sent with every request (Intuit made 75 the minimum minor version in 2025).
pub const MINOR_VERSION: &str = "75";

/// Redirects followed on the API (same scheme, host and port only).
const MAX_API_REDIRECTS: usize = 5;

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
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// An authorised, rate-limited QBO client for one realm.
pub struct QboClient {
    http: reqwest::Client,
    query_url: Url,
    batch_url: Url,
    cdc_url: Url,
    auth: Arc<Authorizer>,
    limits: Arc<RealmLimits>,
    settings: HttpSettings,
    realm: Arc<str>,
    /// Told of every HTTP request made ([`QboClient::with_observer`]).
    observer: Option<Arc<dyn RequestObserver>>,
    /// Asked before every API request ([`QboClient::with_gate`]).
    gate: Option<Arc<dyn crate::observe::RequestGate>>,
    /// Small queries waiting to share a batch request ([`QboClient::query_small`]).
    pending: Mutex<Pending>,
}

/// Queries waiting for the next batch; `leader` is true while a caller is collecting one.
#[derive(Default)]
struct Pending {
    /// Each waiting query, the records its answer may hold, and where its answer goes.
    queue: Vec<(
        String,
        u32,
        tokio::sync::oneshot::Sender<Option<bytes::Bytes>>,
    )>,
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

/// Most records one batch request may carry in all (the sum of its queries' `MAXRESULTS`):
/// six pages of 1000, so an answer stays a few megabytes however its items are sized.
pub const MAX_BATCH_RECORDS: u32 = 6000;

/// How many of the waiting queries the next batch takes: in order, at most
/// [`MAX_BATCH_ITEMS`] and [`MAX_BATCH_RECORDS`] records in all, and always at least one.
fn batch_len<T>(queue: &[(String, u32, T)]) -> usize {
    let mut records = 0u32;
    let n = queue
        .iter()
        .take(MAX_BATCH_ITEMS)
        .take_while(|(_, r, _)| {
            records = records.saturating_add(*r);
            records <= MAX_BATCH_RECORDS
        })
        .count();
    n.max(1).min(queue.len())
}
/// How long the first small query waits for others to share its batch request.
const BATCH_GATHER: Duration = Duration::from_millis(15);

/// One HTTP request to QBO: a query (GET `/query`), a batch of queries (POST `/batch`) or a
/// change data capture (GET `/cdc`).
#[derive(Clone, Copy)]
enum Request<'a> {
    Query(&'a str),
    Batch(&'a [String]),
    Cdc {
        entities: &'a str,
        changed_since: &'a str,
    },
}

impl Request<'_> {
    fn endpoint(&self) -> Endpoint {
        match self {
            Request::Query(_) => Endpoint::Query,
            Request::Batch(_) => Endpoint::Batch,
            Request::Cdc { .. } => Endpoint::Cdc,
        }
    }

    fn log_text(&self) -> String {
        match self {
            Request::Query(q) => (*q).to_string(),
            Request::Batch(qs) => format!("batch of {} queries", qs.len()),
            Request::Cdc {
                entities,
                changed_since,
            } => format!("cdc of {entities} changed since {changed_since}"),
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
        realm: &str,
        auth: Arc<Authorizer>,
        settings: HttpSettings,
    ) -> Result<Self, url::ParseError> {
        let base = api_base.as_str().trim_end_matches('/');
        let query_url = Url::parse(&format!("{base}/v3/company/{realm}/query"))?;
        let batch_url = Url::parse(&format!("{base}/v3/company/{realm}/batch"))?;
        let cdc_url = Url::parse(&format!("{base}/v3/company/{realm}/cdc"))?;
        Ok(QboClient {
            http,
            query_url,
            batch_url,
            cdc_url,
            pending: Mutex::new(Pending::default()),
            limits: RealmLimits::for_realm(realm, &settings),
            auth,
            settings,
            realm: realm.into(),
            observer: None,
            gate: None,
        })
    }

    /// Reports every HTTP request this client (and its token refresher) makes to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn RequestObserver>) -> Self {
        self.auth.set_observer(observer.clone());
        self.observer = Some(observer);
        self
    }

    /// Asks `gate` before every API request; a refusal fails the request unsent.
    pub fn with_gate(mut self, gate: Arc<dyn crate::observe::RequestGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The realm this client works for.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn authorizer(&self) -> &Arc<Authorizer> {
        &self.auth
    }

    /// Requests of this realm in flight now (in this process), and the cap.
    pub fn in_flight(&self) -> (usize, usize) {
        let cap = self.settings.max_in_flight.max(1) as usize;
        (
            cap.saturating_sub(self.limits.in_flight.available_permits()),
            cap,
        )
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

    /// QBO's change data capture: every object of `entities` (QBO names, comma-separated)
    /// changed at or after `changed_since` (a QBO date-time literal), deletions included,
    /// with the same limits, retries and bounded read as a query; `parse` runs inside the
    /// retry loop as for [`QboClient::query_parsed`]. QBO answers at most 1000 objects in
    /// all and refuses a `changed_since` older than 30 days (a 400 fault): both are the
    /// caller's to handle.
    pub async fn cdc_parsed<T, E>(
        &self,
        entities: &str,
        changed_since: &str,
        stats: &RequestStats,
        stop: &StopSignal,
        parse: impl Fn(&bytes::Bytes) -> Result<T, Parsed<E>>,
    ) -> Result<T, QueryError<E>> {
        self.send_parsed(
            Request::Cdc {
                entities,
                changed_since,
            },
            stats,
            stop,
            parse,
        )
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
        self.query_small_sized(query, 1, stats, stop).await
    }

    /// [`QboClient::query_small`] for a query whose answer may hold up to `records` records
    /// (a page): a batch carries at most [`MAX_BATCH_RECORDS`] in all.
    pub async fn query_small_sized(
        &self,
        query: &str,
        records: u32,
        stats: &RequestStats,
        stop: &StopSignal,
    ) -> Result<bytes::Bytes, QboError> {
        if self.settings.batch_per_minute == 0 {
            return self.query(query, stats, stop).await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lead = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.queue.push((query.to_string(), records.max(1), tx));
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
                    let n = batch_len(&p.queue);
                    p.queue.drain(..n).collect()
                };
                let queries: Vec<String> = items.iter().map(|(q, ..)| q.clone()).collect();
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
                for ((.., tx), answer) in items.into_iter().zip(answers) {
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
        let mut retry = Retry::new(&self.settings);
        loop {
            let attempt = retry.begin();
            if stop.is_stopped() {
                return Err(QueryError::Qbo(QboError::Stopped));
            }
            let started = Instant::now();
            let outcome = self.attempt(request, stats, stop).await;
            let (err, generation, sent) = match outcome {
                Ok(body) => match parse(&body) {
                    Ok(value) => {
                        self.observe(request, attempt, started, Outcome::Ok, None);
                        return Ok(value);
                    }
                    Err(Parsed::Invalid(e)) => {
                        self.observe(request, attempt, started, Outcome::Ok, None);
                        return Err(QueryError::Parse(e));
                    }
                    Err(Parsed::Truncated(reason)) => (
                        QboError::Decode {
                            reason,
                            intuit_tid: None,
                        },
                        None,
                        true,
                    ),
                },
                Err(Failure {
                    error,
                    generation,
                    sent,
                }) => (error, generation, sent),
            };
            let step = retry.next(&err);
            if sent {
                self.observe(request, attempt, started, Outcome::of(&err), Some(step));
            }
            match step {
                Step::Refresh => {
                    RequestStats::bump(&stats.unauthorized);
                    if let Some(g) = generation {
                        self.auth.rejected(g).await;
                    }
                    tracing::info!(error = %err, "QBO refused the access token; refreshing it and retrying");
                }
                Step::Throttle(wait) => {
                    RequestStats::bump(&stats.throttled);
                    tracing::warn!(wait_ms = wait.as_millis() as u64, error = %err, "QBO throttled the request (429); waiting");
                }
                Step::Backoff(wait) => {
                    match &err {
                        QboError::Network(_) => RequestStats::bump(&stats.network_errors),
                        _ => RequestStats::bump(&stats.server_errors),
                    }
                    tracing::warn!(attempt, wait_ms = wait.as_millis() as u64, error = %err, "transient QBO failure; backing off");
                }
                Step::Fail => return Err(QueryError::Qbo(err)),
                Step::Exhausted => {
                    return Err(QueryError::Qbo(QboError::Exhausted {
                        attempts: retry.attempts(),
                        last: Box::new(err),
                    }));
                }
            }
            RequestStats::bump(&stats.retries);
            let wait = step.wait().unwrap_or_default();
            if !wait.is_zero() && !stop.sleep(wait).await {
                return Err(QueryError::Qbo(QboError::Stopped));
            }
        }
    }

    fn observe(
        &self,
        request: Request<'_>,
        attempt: u32,
        started: Instant,
        outcome: Outcome,
        step: Option<Step>,
    ) {
        let Some(observer) = &self.observer else {
            return;
        };
        let retry_after = match step {
            Some(Step::Throttle(d)) => Some(d),
            _ => None,
        };
        observer.request_finished(&RequestRecord {
            realm: &self.realm,
            endpoint: request.endpoint(),
            outcome,
            attempt,
            retried: step.is_some_and(|s| s.wait().is_some()),
            retry_after,
            duration: started.elapsed(),
        });
    }

    /// One attempt: wait for the limits, send, read. Returns the token generation used so a
    /// 401 can invalidate exactly that token, and whether a request reached the wire.
    async fn attempt(
        &self,
        request: Request<'_>,
        stats: &RequestStats,
        stop: &StopSignal,
    ) -> Result<bytes::Bytes, Failure> {
        let unsent = |error| Failure {
            error,
            generation: None,
            sent: false,
        };
        let bearer = self.auth.bearer(stop).await.map_err(|e| match e {
            AuthError::Stopped => unsent(QboError::Stopped),
            e => unsent(e.into()),
        })?;
        tokio::select! {
            _ = self.limits.limiter.until_ready() => {}
            _ = stop.stopped() => return Err(unsent(QboError::Stopped)),
        }
        let _permit = tokio::select! {
            permit = self.limits.in_flight.acquire() => permit.map_err(|_| unsent(QboError::Stopped))?,
            _ = stop.stopped() => return Err(unsent(QboError::Stopped)),
        };
        if let Some(gate) = &self.gate {
            gate.admit(&self.realm, request.endpoint())
                .map_err(|why| unsent(QboError::Refused(why)))?;
        }
        RequestStats::bump(&stats.requests);
        let generation = Some(bearer.generation);
        let sent = |error| Failure {
            error,
            generation,
            sent: true,
        };
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
            Request::Cdc {
                entities,
                changed_since,
            } => self.http.get(self.cdc_url.clone()).query(&[
                ("entities", entities),
                ("changedSince", changed_since),
                ("minorversion", MINOR_VERSION),
            ]),
        };
        tracing::trace!(request = %request.log_text(), "sending");
        let response = builder
            .bearer_auth(bearer.token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| sent(QboError::Network(e.without_url())))?;
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
            .map_err(sent)?;
        if status == 200 {
            // A 200 may still carry a Fault (QBO does this for some server errors).
            if let Some((code, message, detail)) = fault_in_ok_body(&body) {
                return Err(sent(QboError::Fault {
                    status,
                    code,
                    message,
                    detail,
                    intuit_tid,
                    retry_after,
                }));
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
        Err(sent(QboError::Fault {
            status,
            code,
            message,
            detail,
            intuit_tid,
            retry_after,
        }))
    }
}

/// A failed attempt: the error, the token generation it used, whether it reached the wire.
struct Failure {
    error: QboError,
    generation: Option<u64>,
    sent: bool,
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

    fn queue(records: &[u32]) -> Vec<(String, u32, ())> {
        records.iter().map(|&r| (String::new(), r, ())).collect()
    }

    #[test]
    fn a_batch_takes_at_most_30_queries_and_6000_records_and_at_least_one() {
        assert_eq!(batch_len(&queue(&[1; 40])), 30);
        assert_eq!(batch_len(&queue(&[1; 7])), 7);
        assert_eq!(batch_len(&queue(&[1000; 8])), 6);
        assert_eq!(
            batch_len(&queue(&[200, 1000, 1000, 1000, 1000, 1000, 900])),
            6
        );
        assert_eq!(batch_len(&queue(&[7000, 1])), 1, "one too big still goes");
        assert_eq!(batch_len(&queue(&[])), 0);
    }
}

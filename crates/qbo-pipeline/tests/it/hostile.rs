//! A misbehaving QBO look-alike: one mode per misbehaviour, over real HTTP on 127.0.0.1:0.
//!
//! It answers just enough of QBO to get a backfill of `customers` going (the token endpoint,
//! `COUNT(*)` queries and page queries) and then does the one wrong thing its [`Mode`] names.
//! Its honest answers are three customers updated on 2020-01-02..04, so a run over 2020 with
//! `--chunk whole` costs one token refresh, one count and one page.

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub const REALM: &str = "9130355555555555";
pub const CLIENT_ID: &str = "hostile-client";
pub const CLIENT_SECRET: &str = "hostile-client-secret-value";
pub const SEED_TOKEN: &str = "RT-hostile-seed-value";

#[derive(Clone, Debug)]
pub enum Mode {
    /// A record whose `LastUpdatedTime` has a non-ASCII character in its offset.
    BadTime,
    /// A gzip body that inflates to 256 MiB (about 250 KB on the wire).
    HugeGzip,
    /// A plain body of 200 MiB, streamed, without Content-Length.
    HugeBody,
    /// Every page query answers the same full page of two records (use `--page-size 2`).
    EndlessPages,
    /// Every query answers 429 with `Retry-After: 999999999` (31 years).
    HugeRetryAfter,
    /// A `Fault` inside an HTTP 200, not at byte 0 (`time` first, and leading white space).
    FaultIn200,
    /// `COUNT(*)` answers without `totalCount`.
    NoTotalCount,
    /// Records with `\u0000`, lone surrogates and a number `jsonb` cannot hold, among
    /// ordinary ones.
    Poison,
    /// Page queries redirect (302) to another host.
    ApiRedirect(String),
    /// Token answers with absurd lifetimes (and a rotated refresh token each time).
    HostileTokens,
    /// The token endpoint redirects (307) to another host.
    TokenRedirect(String),
    /// Honest answers in the entities' own shapes: ExchangeRate (no Id, keyed by currency
    /// pair and date), RecurringTransaction (records wrapped by type) and CreditCardPayment
    /// (answered under `CreditCardPaymentTxn`); customers as usual.
    Shapes,
    /// Queries of this entity answer the fault QBO gives an entity the company does not
    /// offer (400, 4001 `invalid context declaration`); everything else is honest.
    Unavailable(&'static str),
    /// A RecurringTransaction page whose second record wraps no object.
    WrappedWithoutInner,
    /// An ExchangeRate page whose second record has no TargetCurrencyCode.
    ExchangeRateMissingPart,
}

pub struct Hostile {
    pub mode: Mode,
    pub token_requests: AtomicU64,
    pub api_requests: AtomicU64,
    /// Refresh tokens issued, in order.
    pub issued: Mutex<Vec<String>>,
    gzip: Mutex<Option<bytes::Bytes>>,
}

pub struct RunningHostile {
    pub state: Arc<Hostile>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RunningHostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RunningHostile {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn token_url(&self) -> String {
        format!("http://{}/oauth2/v1/tokens/bearer", self.addr)
    }
    /// The environment that points the binary at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("QBO_API_BASE_URL", self.base_url()),
            ("QBO_TOKEN_URL", self.token_url()),
            ("QBO_CLIENT_ID", CLIENT_ID.into()),
            ("QBO_CLIENT_SECRET", CLIENT_SECRET.into()),
            ("QBO_REALM_ID", REALM.into()),
            ("QBO_REFRESH_TOKEN", SEED_TOKEN.into()),
        ]
    }
}

pub async fn spawn(mode: Mode) -> RunningHostile {
    let state = Arc::new(Hostile {
        mode,
        token_requests: AtomicU64::new(0),
        api_requests: AtomicU64::new(0),
        issued: Mutex::new(Vec::new()),
        gzip: Mutex::new(None),
    });
    let app = Router::new()
        .route("/oauth2/v1/tokens/bearer", post(token))
        .fallback(any(api))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    RunningHostile { state, addr, task }
}

/// A server that only counts what reaches it: where a redirect would send secrets.
pub struct Trap {
    pub hits: Arc<AtomicU64>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn trap() -> Trap {
    let hits = Arc::new(AtomicU64::new(0));
    let counted = hits.clone();
    let app = Router::new().fallback(any(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            (StatusCode::OK, "{}")
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Trap { hits, addr, task }
}

async fn token(State(s): State<Arc<Hostile>>) -> Response {
    let n = s.token_requests.fetch_add(1, Ordering::SeqCst) + 1;
    let refresh = format!("RT-hostile-rotated-{n}");
    s.issued.lock().unwrap().push(refresh.clone());
    match &s.mode {
        Mode::TokenRedirect(to) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, to.clone())],
            "",
        )
            .into_response(),
        Mode::HostileTokens => {
            // Lifetimes that once overflowed the clock, failed the token's INSERT, or made
            // every request refresh.
            let (expires_in, rt_expires) = match n % 3 {
                1 => ("1e30".to_string(), "99999999999999999999".to_string()),
                2 => ("0".to_string(), "-5".to_string()),
                _ => ("\"soon\"".to_string(), "9223372036854775807".to_string()),
            };
            json(format!(
                r#"{{"access_token":"AT-hostile-{n}","refresh_token":"{refresh}","token_type":"bearer","expires_in":{expires_in},"x_refresh_token_expires_in":{rt_expires}}}"#
            ))
        }
        _ => json(format!(
            r#"{{"access_token":"AT-hostile-{n}","refresh_token":"{refresh}","token_type":"bearer","expires_in":3600,"x_refresh_token_expires_in":8726400}}"#
        )),
    }
}

fn json(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn customer(id: u32, day: u32, extra: &str) -> String {
    format!(
        r#"{{"Id":"{id}","SyncToken":"0","DisplayName":"Customer {id}{extra}","Active":true,"MetaData":{{"CreateTime":"2020-01-01T00:00:00-08:00","LastUpdatedTime":"2020-01-{day:02}T10:00:00-08:00"}}}}"#
    )
}

fn page(records: &[String]) -> String {
    format!(
        r#"{{"QueryResponse":{{"Customer":[{}],"startPosition":1,"maxResults":{}}},"time":"2026-01-01T00:00:00.000-08:00"}}"#,
        records.join(","),
        records.len()
    )
}

/// The entity a query names (`... FROM Entity ...`).
fn queried_entity(query: &str) -> String {
    let mut words = query.split_whitespace();
    while let Some(w) = words.next() {
        if w.eq_ignore_ascii_case("FROM") {
            return words.next().unwrap_or_default().to_string();
        }
    }
    String::new()
}

fn meta(day: u32) -> String {
    format!(
        r#""MetaData":{{"CreateTime":"2020-01-01T00:00:00-08:00","LastUpdatedTime":"2020-01-{day:02}T10:00:00-08:00"}}"#
    )
}

fn exchange_rate(source: &str, target: Option<&str>, day: u32) -> String {
    let target = target
        .map(|t| format!(r#""TargetCurrencyCode":"{t}","#))
        .unwrap_or_default();
    format!(
        r#"{{"SourceCurrencyCode":"{source}",{target}"Rate":1.0812,"AsOfDate":"2020-01-{day:02}","domain":"QBO","sparse":false,"SyncToken":"0",{}}}"#,
        meta(day)
    )
}

/// A recurring template: the transaction wrapped by its type.
fn recurring(kind: &str, id: u32, day: u32) -> String {
    format!(
        r#"{{"{kind}":{{"Id":"{id}","SyncToken":"3","domain":"QBO","RecurringInfo":{{"Name":"Monthly {kind} {id}","RecurType":"Automated","Active":true}},"TotalAmt":100.00,{}}}}}"#,
        meta(day)
    )
}

/// The Shapes world: (entity, response key, records).
pub fn shapes() -> Vec<(&'static str, &'static str, Vec<String>)> {
    vec![
        (
            "ExchangeRate",
            "ExchangeRate",
            vec![
                exchange_rate("EUR", Some("USD"), 2),
                exchange_rate("GBP", Some("USD"), 2),
            ],
        ),
        (
            "RecurringTransaction",
            "RecurringTransaction",
            vec![recurring("Invoice", 7, 3), recurring("Bill", 8, 4)],
        ),
        (
            "CreditCardPayment",
            "CreditCardPaymentTxn",
            vec![format!(
                r#"{{"Id":"3","SyncToken":"0","Amount":50.00,"domain":"QBO",{}}}"#,
                meta(3)
            )],
        ),
    ]
}

fn keyed_page(key: &str, records: &[String]) -> String {
    format!(
        r#"{{"QueryResponse":{{"{key}":[{}],"startPosition":1,"maxResults":{}}},"time":"2026-01-01T00:00:00.000-08:00"}}"#,
        records.join(","),
        records.len()
    )
}

fn honest_page() -> String {
    page(&[customer(1, 2, ""), customer(2, 3, ""), customer(3, 4, "")])
}

fn count(n: u64) -> String {
    format!(r#"{{"QueryResponse":{{"totalCount":{n}}},"time":"2026-01-01T00:00:00.000-08:00"}}"#)
}

async fn api(
    State(s): State<Arc<Hostile>>,
    Query(params): Query<HashMap<String, String>>,
    _headers: HeaderMap,
) -> Response {
    s.api_requests.fetch_add(1, Ordering::SeqCst);
    let query = params.get("query").cloned().unwrap_or_default();
    let is_count = query.contains("COUNT(*)");
    let entity = queried_entity(&query);
    match &s.mode {
        Mode::Unavailable(name) if entity.eq_ignore_ascii_case(name) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            format!(
                r#"{{"Fault":{{"Error":[{{"Message":"Invalid query","Detail":"QueryValidationError: invalid context declaration: {entity}","code":"4001"}}],"type":"ValidationFault"}},"time":"2026-01-01T00:00:00.000-08:00"}}"#
            ),
        )
            .into_response(),
        Mode::Shapes | Mode::WrappedWithoutInner | Mode::ExchangeRateMissingPart
            if entity != "Customer" =>
        {
            let Some((_, key, mut records)) =
                shapes().into_iter().find(|(e, _, _)| *e == entity)
            else {
                return json(r#"{"QueryResponse":{},"time":"2026-01-01T00:00:00.000-08:00"}"#.into());
            };
            match (&s.mode, entity.as_str()) {
                (Mode::WrappedWithoutInner, "RecurringTransaction") => {
                    records[1] = r#"{"Invoice":"7","status":"Active"}"#.into()
                }
                (Mode::ExchangeRateMissingPart, "ExchangeRate") => {
                    records[1] = exchange_rate("GBP", None, 2)
                }
                _ => {}
            }
            if is_count {
                json(count(records.len() as u64))
            } else {
                json(keyed_page(key, &records))
            }
        }
        Mode::HugeRetryAfter => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "999999999")],
            r#"{"Fault":{"Error":[{"Message":"message=ThrottleExceeded; errorCode=003001; statusCode=429","code":"3001"}],"type":"SERVICE"},"time":"2026-01-01T00:00:00.000-08:00"}"#,
        )
            .into_response(),
        Mode::NoTotalCount if is_count => {
            json(r#"{"QueryResponse":{},"time":"2026-01-01T00:00:00.000-08:00"}"#.into())
        }
        _ if is_count => json(count(match &s.mode {
            Mode::Poison => 6,
            _ => 3,
        })),
        Mode::HostileTokens
        | Mode::NoTotalCount
        | Mode::TokenRedirect(_)
        | Mode::Shapes
        | Mode::Unavailable(_)
        | Mode::WrappedWithoutInner
        | Mode::ExchangeRateMissingPart => json(honest_page()),
        Mode::BadTime => json(
            honest_page().replace("2020-01-03T10:00:00-08:00", "2020-01-03T10:00:00-0\u{e9}0"),
        ),
        Mode::EndlessPages => json(page(&[customer(1, 2, ""), customer(2, 3, "")])),
        Mode::FaultIn200 => json(
            "\n  {\"time\":\"2026-01-01T00:00:00.000-08:00\",\"Fault\":{\"Error\":[{\"Message\":\"An application error has occurred\",\"Detail\":\"hostile\",\"code\":\"4000\"}],\"type\":\"ValidationFault\"}}".into(),
        ),
        Mode::Poison => json(page(&[
            customer(1, 2, ""),
            customer(2, 3, r"\u0000 nul"),
            customer(3, 4, r" lone \ud800 high"),
            customer(4, 5, r" lone \udfff low, pair \ud83d\ude00"),
            customer(5, 6, ""),
            // A number beyond PostgreSQL's numeric range: jsonb refuses the document.
            customer(6, 7, "").replace(r#""Active":true"#, r#""Active":true,"Balance":1e200000"#),
        ])),
        Mode::ApiRedirect(to) => {
            (StatusCode::FOUND, [(header::LOCATION, to.clone())], "").into_response()
        }
        Mode::HugeGzip => {
            let body = {
                let mut cached = s.gzip.lock().unwrap();
                cached.get_or_insert_with(gzip_of_zeros).clone()
            };
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CONTENT_ENCODING, "gzip"),
                ],
                body,
            )
                .into_response()
        }
        Mode::HugeBody => {
            let chunk = bytes::Bytes::from(vec![b' '; 1 << 20]);
            let stream = futures::stream::iter(
                (0..200).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            );
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(stream),
            )
                .into_response()
        }
    }
}

/// 256 MiB of zeros, gzipped (about 250 KB).
fn gzip_of_zeros() -> bytes::Bytes {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        enc.write_all(&zeros).unwrap();
    }
    bytes::Bytes::from(enc.finish().unwrap())
}

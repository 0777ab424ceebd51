//! OAuth 2.0 for QBO: the access-token refresher over a refresh-token store.
//!
//! - The newest refresh token per realm lives in a [`TokenStore`] (the pipeline's is a
//!   PostgreSQL table; [`MemoryTokenStore`] is for tests). It is written while the realm's
//!   lock, under which the refresh POST was made, is held, so the token Intuit just issued is
//!   committed before anything uses it, and two refreshers never refresh one realm at once
//!   (each re-reads the stored chain under the lock).
//! - `QBO_REFRESH_TOKEN` is only the seed: the stored chain is used while it grew from the same
//!   seed; a different seed means the user re-authorised, and the new seed wins.
//! - Access tokens are kept in memory, refreshed a minute before expiry and after a 401 (the
//!   caller passes the generation it was refused with, so one 401 storm causes one refresh).
//! - No token or secret ever reaches a log line, an error or `Debug` output.
//!
//! # What is guaranteed about a rotated refresh token
//! - Intuit's answer is checked before anything is stored: both tokens present, at most
//!   [`MAX_TOKEN_LEN`] printable ASCII characters; lifetimes clamped to sane ranges (so no
//!   value can make the statement that stores the token fail, or overflow a clock).
//! - The new refresh token is written ([`LockedChain::write`], durable when it returns), the
//!   first thing done after the answer arrives and before the access token is used; the token
//!   it replaces is kept as the chain's previous token.
//! - A crash in the instant between Intuit's answer and that commit cannot be excluded (no
//!   client can make two systems commit together). The stored token then is the one just
//!   used, which Intuit keeps valid for about 24 hours after issuing its successor, so the
//!   next run within that day refreshes with it. When the stored token is refused
//!   (`invalid_grant`) and it replaced another within the last 24 hours, the previous one is
//!   tried before giving up.
//! - How tokens are kept at rest (encrypted or not) is the store's business.

mod memory;
mod store;

pub use memory::{MemoryChain, MemoryTokenStore};
pub use store::{
    LockedChain, PREVIOUS_TOKEN_GRACE, Previous, StoreError, StoredChain, TokenStore, TokenWrite,
};

use crate::observe::{Endpoint, Outcome, RequestObserver, RequestRecord};
use crate::settings::redacted_url;
use crate::stop::StopSignal;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use url::Url;

/// Refresh an access token this long before it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// Warn when the refresh token itself expires within this many days.
const REFRESH_TOKEN_WARN_DAYS: u64 = 14;
/// Longest token accepted from the token endpoint (Intuit's are about a thousand characters).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Largest token-endpoint body read.
const MAX_TOKEN_BODY: usize = 64 * 1024;
/// Access-token lifetimes outside this range are clamped (Intuit: 3600 s). A lifetime of 0
/// would refresh before every request; a huge one would overflow the clock.
const ACCESS_LIFETIME: (u64, u64) = (300, 86_400);
/// Refresh-token lifetimes are clamped to at most this (Intuit: about 100 days; hard expiry
/// about five years).
const MAX_REFRESH_LIFETIME: u64 = 10 * 365 * 86_400;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "QuickBooks rejected the refresh token (invalid_grant{detail}). Re-authorise: open Intuit's OAuth 2.0 playground (or your app's connect flow) for realm {realm}, copy the new refresh token into QBO_REFRESH_TOKEN (for a company registered with `realm add`: pipe it into `qbo-pipeline realm add --realm-id {realm}`), and run the same command again; it resumes where it stopped (docs/runbook.md, 're-authorise')"
    )]
    InvalidGrant { realm: String, detail: String },
    #[error(
        "QuickBooks rejected the client credentials (HTTP {status}, {error}): check QBO_CLIENT_ID and QBO_CLIENT_SECRET"
    )]
    InvalidClient { status: u16, error: String },
    #[error("token endpoint {url} answered HTTP {status}: {error}")]
    Endpoint {
        url: String,
        status: u16,
        error: String,
    },
    #[error("cannot reach the token endpoint {url}: {source}")]
    Network {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("token endpoint {url} sent an unreadable answer: {reason}")]
    BadResponse { url: String, reason: String },
    #[error(
        "token endpoint {url} answered with a redirect (HTTP {status}); redirects are never followed on the token endpoint, because they would send the refresh token and client secret elsewhere: set QBO_TOKEN_URL to the endpoint itself"
    )]
    Redirect { url: String, status: u16 },
    #[error(
        "realm {realm} has no stored refresh token: register it with `qbo-pipeline realm add --realm-id {realm}` (the token on standard input), or set QBO_REALM_ID and QBO_REFRESH_TOKEN to it"
    )]
    NoToken { realm: String },
    #[error("stopped by a stop request")]
    Stopped,
    #[error("token store: {0}")]
    Store(#[source] StoreError),
}

impl AuthError {
    /// Worth another attempt (the endpoint or the network failed, not the grant).
    pub fn is_transient(&self) -> bool {
        match self {
            AuthError::Network { .. } => true,
            AuthError::Endpoint { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// The token endpoint's answer. Not `Debug`: it holds secrets until wrapped.
#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    refresh_token: String,
    /// Lifetimes are read leniently ([`lifetime`]): a strange value must not discard the
    /// refresh token Intuit has just rotated.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    x_refresh_token_expires_in: Option<serde_json::Value>,
}

/// Seconds from a lifetime field: a non-negative number (fractions dropped, huge values
/// saturated) or a numeric string; anything else is absent.
fn lifetime(v: Option<&serde_json::Value>) -> Option<u64> {
    match v? {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.max(0.0) as u64)
        }),
        serde_json::Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| f.max(0.0) as u64),
        _ => None,
    }
}

#[derive(serde::Deserialize, Default)]
struct TokenErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

struct AccessToken {
    value: SecretString,
    expires_at: Instant,
    generation: u64,
}

/// A bearer token and the generation it belongs to (report it back with [`Authorizer::rejected`]).
pub struct Bearer {
    pub token: SecretString,
    pub generation: u64,
}

fn invalid_token(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        Some("empty")
    } else if text.len() > MAX_TOKEN_LEN {
        Some("longer than 8 KiB")
    } else if !text.bytes().all(|b| b.is_ascii_graphic()) {
        Some("not printable ASCII")
    } else {
        None
    }
}

/// The lifetimes of a token answer, clamped (see [`ACCESS_LIFETIME`], [`MAX_REFRESH_LIFETIME`]).
fn clamp_lifetimes(
    expires_in: Option<u64>,
    refresh_expires_in: Option<u64>,
) -> (Duration, Option<u64>) {
    let access = expires_in.unwrap_or(3600);
    let clamped = access.clamp(ACCESS_LIFETIME.0, ACCESS_LIFETIME.1);
    if clamped != access {
        tracing::warn!(
            expires_in = access,
            used = clamped,
            "the token endpoint sent an implausible access-token lifetime; using a clamped one"
        );
    }
    (
        Duration::from_secs(clamped),
        refresh_expires_in.map(|s| s.min(MAX_REFRESH_LIFETIME)),
    )
}

/// The stored form of a seed: a digest, so the table holds one secret per realm, not two.
pub fn seed_digest(seed: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Whether a stored seed (a digest, or the plain text older versions stored) is `seed`.
pub fn seed_matches(stored: &str, seed: &str) -> bool {
    if stored.starts_with("sha256:") {
        stored == seed_digest(seed)
    } else {
        stored == seed
    }
}

/// The Intuit app and the realm an [`Authorizer`] refreshes tokens for.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub client_id: String,
    pub client_secret: SecretString,
    pub realm_id: String,
    /// The seed refresh token (`QBO_REFRESH_TOKEN`), if any: the stored chain is used while
    /// it grew from this seed; another seed starts a fresh chain. `None`: the stored chain is
    /// the only token there is.
    pub seed: Option<SecretString>,
    /// The OAuth 2.0 token endpoint.
    pub token_url: Url,
}

/// Hands out valid access tokens for one realm.
pub struct Authorizer {
    http: reqwest::Client,
    settings: AuthSettings,
    store: Arc<dyn TokenStore>,
    current: Mutex<Option<AccessToken>>,
    generation: AtomicU64,
    refreshes: AtomicU64,
    observer: std::sync::RwLock<Option<Arc<dyn RequestObserver>>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("realm", &self.settings.realm_id)
            .field("refreshes", &self.refreshes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// `http` must not follow redirects ([`crate::token_http_client`]).
    pub fn new(http: reqwest::Client, settings: AuthSettings, store: Arc<dyn TokenStore>) -> Self {
        Authorizer {
            http,
            settings,
            store,
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            observer: std::sync::RwLock::new(None),
        }
    }

    /// Reports every token-endpoint request to `observer` (set by
    /// [`crate::QboClient::with_observer`]).
    pub fn set_observer(&self, observer: Arc<dyn RequestObserver>) {
        *self.observer.write().unwrap_or_else(|p| p.into_inner()) = Some(observer);
    }

    fn observer(&self) -> Option<Arc<dyn RequestObserver>> {
        self.observer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many refreshes this process made.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// A valid access token, refreshing first when there is none or it is about to expire.
    pub async fn bearer(&self, stop: &StopSignal) -> Result<Bearer, AuthError> {
        let mut current = self.current.lock().await;
        if let Some(t) = current.as_ref()
            && t.expires_at > Instant::now() + EXPIRY_MARGIN
        {
            return Ok(Bearer {
                token: t.value.clone(),
                generation: t.generation,
            });
        }
        if stop.is_stopped() {
            return Err(AuthError::Stopped);
        }
        // One attempt: a transient failure (network, 5xx, 429 from the token endpoint) goes
        // back to the client, whose single retry loop backs off and tries again.
        let fresh = self.refresh().await?;
        let bearer = Bearer {
            token: fresh.value.clone(),
            generation: fresh.generation,
        };
        *current = Some(fresh);
        Ok(bearer)
    }

    /// QBO refused a token of `generation` with 401: forget it so the next call refreshes.
    pub async fn rejected(&self, generation: u64) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|t| t.generation == generation) {
            *current = None;
        }
    }

    /// One refresh under the realm's lock. The new refresh token is committed on its own,
    /// before the access token is handed out (see the module docs).
    async fn refresh(&self) -> Result<AccessToken, AuthError> {
        let realm = self.settings.realm_id.as_str();
        let seed = self.settings.seed.as_ref().map(|s| s.expose_secret());
        let mut chain = self.store.lock(realm).await.map_err(AuthError::Store)?;
        let result = self.refresh_locked(chain.as_mut(), realm, seed).await;
        let released = chain.release().await;
        match (result, released) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(AuthError::Store(e)),
            (Ok(t), Ok(())) => Ok(t),
        }
    }

    async fn refresh_locked(
        &self,
        chain: &mut (dyn LockedChain + '_),
        realm: &str,
        seed: Option<&str>,
    ) -> Result<AccessToken, AuthError> {
        let stored = chain.read().await.map_err(AuthError::Store)?;
        // Without a seed (a registered realm) the stored chain is the only token there is.
        let chain_matches =
            |stored_seed: &str| seed.is_none_or(|seed| seed_matches(stored_seed, seed));
        let fresh_chain = !matches!(&stored, Some(c) if chain_matches(&c.seed));
        let stored_seed = match (&stored, seed) {
            (_, Some(seed)) if fresh_chain => seed_digest(seed),
            (Some(c), _) => c.seed.clone(),
            (None, Some(seed)) => seed_digest(seed),
            (None, None) => {
                return Err(AuthError::NoToken {
                    realm: realm.to_string(),
                });
            }
        };
        let (using, rotations, fallback) = match (&stored, seed) {
            (Some(c), _) if chain_matches(&c.seed) => (
                c.refresh_token.expose_secret().to_string(),
                c.rotations,
                c.previous.as_ref().map(|p| p.expose_secret().to_string()),
            ),
            (Some(_), Some(seed)) => {
                tracing::info!(
                    realm,
                    "the refresh token given differs from the stored chain's seed: using it (fresh authorisation)"
                );
                (seed.to_string(), 0, None)
            }
            (None, Some(seed)) => (seed.to_string(), 0, None),
            (_, None) => {
                return Err(AuthError::NoToken {
                    realm: realm.to_string(),
                });
            }
        };
        let tokens = match self.exchange(realm, &using).await {
            Err(AuthError::InvalidGrant { .. }) if fallback.is_some() => {
                tracing::warn!(
                    realm,
                    "QuickBooks refused the newest stored refresh token; trying the one it replaced (still valid for a day after a rotation)"
                );
                let previous = fallback.unwrap_or_default();
                let tokens = self.exchange(realm, &previous).await?;
                (tokens, previous)
            }
            other => (other?, using),
        };
        let (tokens, used) = tokens;
        let rotated = tokens.refresh_token != used;
        let (access_lifetime, rt_expires) = clamp_lifetimes(
            lifetime(tokens.expires_in.as_ref()),
            lifetime(tokens.x_refresh_token_expires_in.as_ref()),
        );
        // Committed by itself, before anything uses the access token.
        chain
            .write(TokenWrite {
                client_id: self.settings.client_id.clone(),
                refresh_token: SecretString::from(tokens.refresh_token.clone()),
                seed: stored_seed,
                refresh_expires_in: rt_expires,
                rotations: rotations.saturating_add(i32::from(rotated)),
                previous: if rotated {
                    Previous::Set(SecretString::from(used))
                } else if fresh_chain {
                    // A fresh authorisation starts a new chain: the old chain's tokens are not kept.
                    Previous::Clear
                } else {
                    Previous::Keep
                },
            })
            .await
            .map_err(AuthError::Store)?;

        self.refreshes.fetch_add(1, Ordering::Relaxed);
        if let Some(why) = invalid_token(&tokens.access_token) {
            return Err(AuthError::BadResponse {
                url: redacted_url(&self.settings.token_url),
                reason: format!("access_token is {why}"),
            });
        }
        tracing::info!(
            realm,
            rotated,
            access_token_lifetime_s = access_lifetime.as_secs(),
            "access token refreshed"
        );
        if let Some(secs) = rt_expires
            && secs < REFRESH_TOKEN_WARN_DAYS * 86_400
        {
            tracing::warn!(
                realm,
                days_left = secs / 86_400,
                "the QBO refresh token expires soon: re-authorise the app before then (docs/runbook.md)"
            );
        }
        Ok(AccessToken {
            value: SecretString::from(tokens.access_token),
            expires_at: Instant::now() + access_lifetime,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }

    /// One POST to the token endpoint with `refresh_token`; the answer checked.
    async fn exchange(&self, realm: &str, refresh_token: &str) -> Result<TokenResponse, AuthError> {
        let started = Instant::now();
        let result = self.exchange_once(realm, refresh_token).await;
        if let Some(observer) = self.observer() {
            let outcome = match &result {
                Ok(_) => Some(Outcome::Ok),
                Err(
                    AuthError::Endpoint { status, .. }
                    | AuthError::InvalidClient { status, .. }
                    | AuthError::Redirect { status, .. },
                ) => Some(Outcome::Status {
                    status: *status,
                    code: None,
                }),
                Err(AuthError::InvalidGrant { .. }) => Some(Outcome::Status {
                    status: 400,
                    code: Some("invalid_grant".into()),
                }),
                Err(AuthError::Network { .. } | AuthError::BadResponse { .. }) => {
                    Some(Outcome::Transport)
                }
                Err(_) => None,
            };
            if let Some(outcome) = outcome {
                observer.request_finished(&RequestRecord {
                    realm,
                    endpoint: Endpoint::Token,
                    outcome,
                    attempt: 1,
                    retried: false,
                    retry_after: None,
                    duration: started.elapsed(),
                });
            }
        }
        result
    }

    async fn exchange_once(
        &self,
        realm: &str,
        refresh_token: &str,
    ) -> Result<TokenResponse, AuthError> {
        let url = redacted_url(&self.settings.token_url);
        let response = self
            .http
            .post(self.settings.token_url.clone())
            .basic_auth(
                &self.settings.client_id,
                Some(self.settings.client_secret.expose_secret()),
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            .map_err(|source| AuthError::Network {
                url: url.clone(),
                source: source.without_url(),
            })?;
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            return Err(AuthError::Redirect { url, status });
        }
        let body = crate::response::read_body(response, MAX_TOKEN_BODY)
            .await
            .map_err(|e| match e {
                crate::response::BodyError::TooLarge => AuthError::BadResponse {
                    url: url.clone(),
                    reason: format!("the answer is larger than {MAX_TOKEN_BODY} bytes"),
                },
                crate::response::BodyError::Network(source) => AuthError::Network {
                    url: url.clone(),
                    source: source.without_url(),
                },
            })?;
        if status != 200 {
            let err: TokenErrorBody = serde_json::from_slice(&body).unwrap_or_default();
            // Error codes are short ASCII words; anything else is not shown as sent.
            let code: String = err
                .error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            let error = if code.is_empty() {
                "no error code".to_string()
            } else {
                code.clone()
            };
            return Err(match code.as_str() {
                "invalid_grant" => AuthError::InvalidGrant {
                    realm: realm.to_string(),
                    detail: err
                        .error_description
                        .map(|d| {
                            let d: String =
                                d.chars().filter(|c| !c.is_control()).take(200).collect();
                            format!(": {d}")
                        })
                        .unwrap_or_default(),
                },
                "invalid_client" => AuthError::InvalidClient { status, error },
                _ => AuthError::Endpoint { url, status, error },
            });
        }
        let tokens: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| AuthError::BadResponse {
                url: url.clone(),
                // Not serde's message: it can quote the value, and the value may be a token.
                reason: format!(
                    "not the expected JSON ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            })?;
        // The access token is checked after the refresh token is stored.
        if let Some(why) = invalid_token(&tokens.refresh_token) {
            return Err(AuthError::BadResponse {
                url,
                reason: format!("refresh_token is {why}"),
            });
        }
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lifetimes_are_read_leniently_and_clamped() {
        assert_eq!(lifetime(Some(&json!(3600))), Some(3600));
        assert_eq!(lifetime(Some(&json!("3600"))), Some(3600));
        assert_eq!(lifetime(Some(&json!(-5))), Some(0));
        assert_eq!(lifetime(Some(&json!("soon"))), None);
        assert_eq!(lifetime(Some(&json!(null))), None);
        let huge: serde_json::Value = serde_json::from_str("1e30").unwrap();
        assert_eq!(lifetime(Some(&huge)), Some(u64::MAX));
        assert_eq!(clamp_lifetimes(Some(0), None).0, Duration::from_secs(300));
        assert_eq!(
            clamp_lifetimes(Some(u64::MAX), None).0,
            Duration::from_secs(86_400)
        );
        assert_eq!(
            clamp_lifetimes(None, Some(u64::MAX)).1,
            Some(MAX_REFRESH_LIFETIME)
        );
        assert_eq!(clamp_lifetimes(None, None).0, Duration::from_secs(3600));
    }

    #[test]
    fn tokens_are_checked_and_seeds_stored_as_digests() {
        assert_eq!(invalid_token(""), Some("empty"));
        assert_eq!(invalid_token("a b"), Some("not printable ASCII"));
        assert_eq!(invalid_token("a\nb"), Some("not printable ASCII"));
        assert!(invalid_token(&"x".repeat(MAX_TOKEN_LEN + 1)).is_some());
        assert_eq!(invalid_token("AB11234567890abc"), None);
        let d = seed_digest("seed");
        assert!(d.starts_with("sha256:") && !d.contains("seed") && d.len() == 7 + 64);
        assert!(seed_matches(&d, "seed") && !seed_matches(&d, "other"));
        assert!(
            seed_matches("seed", "seed"),
            "plain seeds of older versions still match"
        );
    }
}

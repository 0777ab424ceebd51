//! OAuth 2.0 for QBO: the refresh-token store and the access-token refresher.
//!
//! - The newest refresh token per realm lives in `qbo_pipeline.oauth_tokens`. It is written in
//!   the same transaction that holds the per-realm advisory lock under which the refresh POST
//!   was made, so the token Intuit just issued is committed before anything uses it, and two
//!   processes never refresh one realm at once (each re-reads the stored token under the lock).
//! - `QBO_REFRESH_TOKEN` is only the seed: the stored chain is used while it grew from the same
//!   seed; a different seed means the user re-authorised, and the new seed wins.
//! - Access tokens are kept in memory, refreshed a minute before expiry and after a 401 (the
//!   caller passes the generation it was refused with, so one 401 storm causes one refresh).
//! - No token or secret ever reaches a log line, an error or `Debug` output.

use crate::config::QboSettings;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Refresh an access token this long before it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// Warn when the refresh token itself expires within this many days.
const REFRESH_TOKEN_WARN_DAYS: u64 = 14;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "QuickBooks rejected the refresh token (invalid_grant{detail}). Re-authorise: open Intuit's OAuth 2.0 playground (or your app's connect flow) for realm {realm}, copy the new refresh token into QBO_REFRESH_TOKEN, and run the same command again; it resumes where it stopped (docs/runbook.md, 're-authorise')"
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
    #[error("token store: {0}")]
    Store(#[from] sqlx::Error),
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
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    x_refresh_token_expires_in: Option<u64>,
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

/// Hands out valid access tokens for one realm.
pub struct Authorizer {
    http: reqwest::Client,
    settings: QboSettings,
    pool: PgPool,
    current: Mutex<Option<AccessToken>>,
    generation: AtomicU64,
    refreshes: AtomicU64,
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
    pub fn new(http: reqwest::Client, settings: QboSettings, pool: PgPool) -> Self {
        Authorizer {
            http,
            settings,
            pool,
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
        }
    }

    /// How many refreshes this process made.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// A valid access token, refreshing first when there is none or it is about to expire.
    pub async fn bearer(&self) -> Result<Bearer, AuthError> {
        let mut current = self.current.lock().await;
        if let Some(t) = current.as_ref()
            && t.expires_at > Instant::now() + EXPIRY_MARGIN
        {
            return Ok(Bearer {
                token: t.value.clone(),
                generation: t.generation,
            });
        }
        let fresh = self.refresh_with_retries().await?;
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

    async fn refresh_with_retries(&self) -> Result<AccessToken, AuthError> {
        let mut delay = Duration::from_millis(500);
        let mut attempt = 0;
        loop {
            match self.refresh().await {
                Err(e) if e.is_transient() && attempt < 4 => {
                    attempt += 1;
                    tracing::warn!(attempt, error = %e, "token refresh failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                other => return other,
            }
        }
    }

    /// One refresh under the realm's advisory lock, persisting the new refresh token in the
    /// same transaction.
    async fn refresh(&self) -> Result<AccessToken, AuthError> {
        let realm = self.settings.realm_id.as_str();
        let seed = self.settings.refresh_token.expose_secret();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('qbo_pipeline.oauth:' || $1, 0))",
        )
        .bind(realm)
        .execute(&mut *tx)
        .await?;
        let stored: Option<(String, String, i32)> = sqlx::query_as(
            "SELECT refresh_token, seed_refresh_token, rotations FROM qbo_pipeline.oauth_tokens WHERE realm_id = $1",
        )
        .bind(realm)
        .fetch_optional(&mut *tx)
        .await?;
        let (using, rotations) = match &stored {
            Some((rt, stored_seed, rotations)) if stored_seed == seed => (rt.clone(), *rotations),
            Some(_) => {
                tracing::info!(
                    realm,
                    "QBO_REFRESH_TOKEN differs from the stored chain's seed: using it (fresh authorisation)"
                );
                (seed.to_string(), 0)
            }
            None => (seed.to_string(), 0),
        };

        let url = self.settings.token_url.to_string();
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
                ("refresh_token", using.as_str()),
            ])
            .send()
            .await
            .map_err(|source| AuthError::Network {
                url: url.clone(),
                source: source.without_url(),
            })?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|source| AuthError::Network {
                url: url.clone(),
                source: source.without_url(),
            })?;
        if status != 200 {
            let err: TokenErrorBody = serde_json::from_slice(&body).unwrap_or_default();
            let error = if err.error.is_empty() {
                "no error code".to_string()
            } else {
                err.error.clone()
            };
            return Err(match err.error.as_str() {
                "invalid_grant" => AuthError::InvalidGrant {
                    realm: realm.to_string(),
                    detail: err
                        .error_description
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default(),
                },
                "invalid_client" => AuthError::InvalidClient { status, error },
                _ => AuthError::Endpoint { url, status, error },
            });
        }
        let tokens: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| AuthError::BadResponse {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        if tokens.access_token.is_empty() || tokens.refresh_token.is_empty() {
            return Err(AuthError::BadResponse {
                url,
                reason: "empty access_token or refresh_token".into(),
            });
        }
        let rotated = tokens.refresh_token != using;
        let rt_expires = tokens.x_refresh_token_expires_in;
        sqlx::query(
            "INSERT INTO qbo_pipeline.oauth_tokens
                 (realm_id, client_id, refresh_token, seed_refresh_token, refresh_token_expires_at, rotations, updated_at)
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6, now())
             ON CONFLICT (realm_id) DO UPDATE SET
                 client_id = EXCLUDED.client_id,
                 refresh_token = EXCLUDED.refresh_token,
                 seed_refresh_token = EXCLUDED.seed_refresh_token,
                 refresh_token_expires_at = EXCLUDED.refresh_token_expires_at,
                 rotations = EXCLUDED.rotations,
                 updated_at = now()",
        )
        .bind(realm)
        .bind(&self.settings.client_id)
        .bind(&tokens.refresh_token)
        .bind(seed)
        .bind(rt_expires.map(|s| s as f64))
        .bind(rotations + i32::from(rotated))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;

        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let expires_in = Duration::from_secs(tokens.expires_in.unwrap_or(3600));
        tracing::info!(
            realm,
            rotated,
            access_token_lifetime_s = expires_in.as_secs(),
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
            expires_at: Instant::now() + expires_in,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }
}

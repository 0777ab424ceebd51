//! [`PgTokenStore`]: the realms' refresh-token chains in `qbo_pipeline.oauth_tokens`, behind
//! `qbo_client`'s [`TokenStore`].
//!
//! - A refresh holds the realm's session advisory lock (`qbo_pipeline.oauth:<realm>`) on a
//!   dedicated connection; the token write commits by itself (auto-commit) while the lock is
//!   still held, so no other process refreshes in between and the token Intuit just issued
//!   is durable before it is used.
//! - The seed is stored as a digest; the replaced token is kept as `previous_refresh_token`
//!   and read back only within a day of the rotation.
//! - With `QBO_TOKEN_KEY` set, tokens are stored encrypted (AES-256-GCM, see [`TokenKey`]).

use crate::config::{QboSettings, TokenKey};
use futures::future::BoxFuture;
use qbo_client::auth::{
    AuthSettings, Authorizer, LockedChain, PREVIOUS_TOKEN_GRACE, Previous, StoreError, StoredChain,
    TokenStore, TokenWrite,
};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use std::sync::Arc;

/// The token store of a deployment: its database, its optional encryption key.
#[derive(Clone)]
pub struct PgTokenStore {
    pool: PgPool,
    key: Option<TokenKey>,
}

impl std::fmt::Debug for PgTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTokenStore")
            .field("encrypted", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

/// A stored token that cannot be decrypted (or a token that cannot be sealed).
#[derive(Debug, thiserror::Error)]
#[error(
    "a stored token is encrypted but cannot be decrypted: {0}. Set QBO_TOKEN_KEY to the key it was stored with (or re-authorise and put the new refresh token in QBO_REFRESH_TOKEN)"
)]
pub struct DecryptError(String);

impl PgTokenStore {
    pub fn new(pool: PgPool, key: Option<TokenKey>) -> Self {
        PgTokenStore { pool, key }
    }

    fn seal(&self, token: &str) -> Result<String, StoreError> {
        match &self.key {
            Some(k) => k
                .seal(token)
                .map_err(|e| Box::new(DecryptError(e)) as StoreError),
            None => Ok(token.to_string()),
        }
    }

    fn open(&self, stored: &str) -> Result<SecretString, StoreError> {
        TokenKey::open_stored(self.key.as_ref(), stored)
            .map(SecretString::from)
            .map_err(|e| Box::new(DecryptError(e)) as StoreError)
    }
}

/// The authorizer of one realm over the deployment's token store.
pub fn authorizer(http: reqwest::Client, settings: &QboSettings, pool: PgPool) -> Authorizer {
    Authorizer::new(
        http,
        AuthSettings {
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.clone(),
            realm_id: settings.realm_id.as_str().to_string(),
            seed: settings.seed.clone(),
            token_url: settings.token_url.clone(),
        },
        Arc::new(PgTokenStore::new(pool, settings.token_key.clone())),
    )
}

/// The connection holding the realm's token lock. Unless taken back after a successful
/// unlock, dropping it (an error, a dropped future) closes the session, and the lock with it,
/// instead of returning a locked connection to the pool.
struct Locked {
    store: PgTokenStore,
    realm: String,
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

impl Drop for Locked {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

impl Locked {
    fn conn(&mut self) -> &mut sqlx::PgConnection {
        self.conn.as_mut().expect("held until released")
    }
}

impl LockedChain for Locked {
    fn read(&mut self) -> BoxFuture<'_, Result<Option<StoredChain>, StoreError>> {
        Box::pin(async move {
            type Row = (String, String, i32, Option<String>, Option<bool>);
            let realm = self.realm.clone();
            let row: Option<Row> = sqlx::query_as(
                "SELECT refresh_token, seed_refresh_token, rotations, previous_refresh_token,
                        rotated_at > now() - make_interval(secs => $2)
                 FROM qbo_pipeline.oauth_tokens WHERE realm_id = $1",
            )
            .bind(&realm)
            .bind(PREVIOUS_TOKEN_GRACE.as_secs_f64())
            .fetch_optional(self.conn())
            .await?;
            let Some((rt, seed, rotations, previous, recent)) = row else {
                return Ok(None);
            };
            let previous = match (previous, recent) {
                (Some(p), Some(true)) => Some(self.store.open(&p)?),
                _ => None,
            };
            Ok(Some(StoredChain {
                refresh_token: self.store.open(&rt)?,
                seed,
                rotations,
                previous,
            }))
        })
    }

    fn write(&mut self, w: TokenWrite) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let (rotated, fresh_chain, replaced) = match &w.previous {
                Previous::Set(p) => (true, false, Some(self.store.seal(p.expose_secret())?)),
                Previous::Clear => (false, true, None),
                Previous::Keep => (false, false, None),
            };
            let sealed = self.store.seal(w.refresh_token.expose_secret())?;
            let realm = self.realm.clone();
            // Committed by itself (auto-commit), before anything uses the access token.
            sqlx::query(
                "INSERT INTO qbo_pipeline.oauth_tokens
                     (realm_id, client_id, refresh_token, seed_refresh_token, refresh_token_expires_at,
                      rotations, updated_at, previous_refresh_token, rotated_at)
                 VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6, now(),
                         CASE WHEN $7 THEN $8 END, CASE WHEN $7 THEN now() END)
                 ON CONFLICT (realm_id) DO UPDATE SET
                     client_id = EXCLUDED.client_id,
                     refresh_token = EXCLUDED.refresh_token,
                     seed_refresh_token = EXCLUDED.seed_refresh_token,
                     refresh_token_expires_at = EXCLUDED.refresh_token_expires_at,
                     rotations = EXCLUDED.rotations,
                     updated_at = now(),
                     previous_refresh_token = CASE WHEN $7 THEN EXCLUDED.previous_refresh_token
                                                   WHEN $9 THEN NULL
                                                   ELSE qbo_pipeline.oauth_tokens.previous_refresh_token END,
                     rotated_at = CASE WHEN $7 THEN now() WHEN $9 THEN NULL
                                       ELSE qbo_pipeline.oauth_tokens.rotated_at END",
            )
            .bind(&realm)
            .bind(&w.client_id)
            .bind(sealed)
            .bind(&w.seed)
            .bind(w.refresh_expires_in.map(|s| s as f64))
            .bind(w.rotations)
            .bind(rotated)
            .bind(replaced)
            // A fresh authorisation starts a new chain: the old chain's tokens are not kept.
            .bind(fresh_chain)
            .execute(self.conn())
            .await?;
            Ok(())
        })
    }

    fn release(mut self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async move {
            let realm = self.realm.clone();
            let unlocked = sqlx::query(
                "SELECT pg_advisory_unlock(hashtextextended('qbo_pipeline.oauth:' || $1, 0))",
            )
            .bind(&realm)
            .execute(self.conn())
            .await;
            if unlocked.is_ok() {
                // Unlocked: the connection may go back to the pool.
                drop(self.conn.take());
            }
            Ok(())
        })
    }
}

impl TokenStore for PgTokenStore {
    fn lock<'a>(
        &'a self,
        realm: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn LockedChain + 'a>, StoreError>> {
        Box::pin(async move {
            // A session lock on a dedicated connection: the token write commits by itself
            // while the lock is still held, so no other process refreshes in between.
            let mut locked = Locked {
                store: self.clone(),
                realm: realm.to_string(),
                conn: Some(self.pool.acquire().await?),
            };
            sqlx::query(
                "SELECT pg_advisory_lock(hashtextextended('qbo_pipeline.oauth:' || $1, 0))",
            )
            .bind(realm)
            .execute(locked.conn())
            .await?;
            Ok(Box::new(locked) as Box<dyn LockedChain + 'a>)
        })
    }
}

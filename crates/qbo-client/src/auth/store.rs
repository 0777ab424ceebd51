//! Where a realm's refresh-token chain is kept: the [`TokenStore`] trait.
//!
//! A refresh is made under the realm's lock ([`TokenStore::lock`]): the chain is read, the
//! token endpoint called, the rotated token written ([`LockedChain::write`], committed when
//! it returns, before the access token is used) and the lock released
//! ([`LockedChain::release`]). Dropping a [`LockedChain`] without releasing it (an error, a
//! dropped future) must release the lock too. Implementations: `MemoryTokenStore` (this
//! crate, for tests) and the pipeline's PostgreSQL store.

use futures::future::BoxFuture;
use secrecy::SecretString;
use std::time::Duration;

/// How long Intuit keeps a replaced refresh token valid: a store hands back the previous
/// token only when it was replaced within this long.
pub const PREVIOUS_TOKEN_GRACE: Duration = Duration::from_secs(24 * 3600);

/// A token store's own failure (its database, its encryption key, ...).
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// The stored chain of one realm.
pub struct StoredChain {
    /// The newest refresh token.
    pub refresh_token: SecretString,
    /// The digest of the seed the chain grew from (`sha256:<hex>`; older stores: the seed).
    pub seed: String,
    /// How many times the chain rotated.
    pub rotations: i32,
    /// The token `refresh_token` replaced, when that happened within
    /// [`PREVIOUS_TOKEN_GRACE`] (Intuit still accepts it).
    pub previous: Option<SecretString>,
}

impl std::fmt::Debug for StoredChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredChain")
            .field("rotations", &self.rotations)
            .field("has_previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

/// What becomes of the stored previous token on a write.
pub enum Previous {
    /// The chain rotated: keep the replaced token.
    Set(SecretString),
    /// A fresh chain (new seed): the old chain's tokens are not kept.
    Clear,
    /// Unchanged (the token did not rotate).
    Keep,
}

/// A refresh's result to store.
pub struct TokenWrite {
    pub client_id: String,
    pub refresh_token: SecretString,
    pub seed: String,
    /// Seconds until the refresh token expires, when the endpoint said.
    pub refresh_expires_in: Option<u64>,
    pub rotations: i32,
    pub previous: Previous,
}

/// A realm's chain, locked against other refreshers until released or dropped.
pub trait LockedChain: Send {
    /// The stored chain, `None` when the realm has none.
    fn read(&mut self) -> BoxFuture<'_, Result<Option<StoredChain>, StoreError>>;
    /// Stores a refresh's result, committed (durable) when it returns.
    fn write(&mut self, write: TokenWrite) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Releases the lock.
    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>>;
}

/// Keeps refresh-token chains, one per realm, and locks them for a refresh.
pub trait TokenStore: Send + Sync {
    /// Waits for the realm's lock (across processes, where the store is shared).
    fn lock<'a>(
        &'a self,
        realm: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn LockedChain + 'a>, StoreError>>;
}

//! [`MemoryTokenStore`]: refresh-token chains in memory, for tests and one-off tools.

use super::store::PREVIOUS_TOKEN_GRACE;
use super::store::{LockedChain, Previous, StoreError, StoredChain, TokenStore, TokenWrite};
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One realm's chain as the memory store keeps it.
#[derive(Clone)]
pub struct MemoryChain {
    pub refresh_token: SecretString,
    pub seed: String,
    pub rotations: i32,
    pub previous: Option<SecretString>,
    pub rotated_at: Option<Instant>,
    pub refresh_expires_in: Option<u64>,
    pub writes: u64,
}

impl std::fmt::Debug for MemoryChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryChain")
            .field("rotations", &self.rotations)
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
}

/// Chains in memory, with a per-realm async lock. Clones share the chains.
#[derive(Clone, Default)]
pub struct MemoryTokenStore {
    chains: Arc<Mutex<HashMap<String, MemoryChain>>>,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl std::fmt::Debug for MemoryTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryTokenStore")
    }
}

impl MemoryTokenStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The realm's chain as stored now.
    pub fn chain(&self, realm: &str) -> Option<MemoryChain> {
        self.map().get(realm).cloned()
    }

    /// The realm's newest refresh token (tests compare it with the sandbox's).
    pub fn refresh_token(&self, realm: &str) -> Option<String> {
        self.chain(realm)
            .map(|c| c.refresh_token.expose_secret().to_string())
    }

    /// Stores a chain as it is (a test's starting point).
    pub fn put(&self, realm: &str, chain: MemoryChain) {
        self.map().insert(realm.to_string(), chain);
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, MemoryChain>> {
        self.chains.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Locked {
    store: MemoryTokenStore,
    realm: String,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl LockedChain for Locked {
    fn read(&mut self) -> BoxFuture<'_, Result<Option<StoredChain>, StoreError>> {
        let chain = self.store.chain(&self.realm).map(|c| StoredChain {
            refresh_token: c.refresh_token,
            seed: c.seed,
            rotations: c.rotations,
            previous: c.previous.filter(|_| {
                c.rotated_at
                    .is_some_and(|t| t.elapsed() < PREVIOUS_TOKEN_GRACE)
            }),
        });
        Box::pin(async move { Ok(chain) })
    }

    fn write(&mut self, w: TokenWrite) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut map = self.store.map();
        let old = map.get(&self.realm).cloned();
        let (previous, rotated_at) = match w.previous {
            Previous::Set(p) => (Some(p), Some(Instant::now())),
            Previous::Clear => (None, None),
            Previous::Keep => old
                .as_ref()
                .map(|o| (o.previous.clone(), o.rotated_at))
                .unwrap_or((None, None)),
        };
        map.insert(
            self.realm.clone(),
            MemoryChain {
                refresh_token: w.refresh_token,
                seed: w.seed,
                rotations: w.rotations,
                previous,
                rotated_at,
                refresh_expires_in: w.refresh_expires_in,
                writes: old.map_or(0, |o| o.writes) + 1,
            },
        );
        Box::pin(async { Ok(()) })
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

impl TokenStore for MemoryTokenStore {
    fn lock<'a>(
        &'a self,
        realm: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn LockedChain + 'a>, StoreError>> {
        Box::pin(async move {
            let lock = self
                .locks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(realm.to_string())
                .or_default()
                .clone();
            let guard = lock.lock_owned().await;
            Ok(Box::new(Locked {
                store: self.clone(),
                realm: realm.to_string(),
                _guard: guard,
            }) as Box<dyn LockedChain + 'a>)
        })
    }
}

//! qbo-client: the HTTP side of QuickBooks Online — an authorised, rate-limited client per
//! realm, the one retry decision, token refresh over a token store, and typed errors.
//!
//! | module | owns |
//! |---|---|
//! | [`settings`] | [`HttpSettings`] (limits, retry policy, timeouts) and `validate()`; URL redaction |
//! | [`stop`] | [`StopSignal`]: the stop request every wait races |
//! | [`error`] | [`QboError`], [`QueryError`], [`Parsed`]; [`LocatedError`] naming the entity and page |
//! | [`retry`] | the one retry decision: [`retry::classify`] and the [`retry::Retry`] state (back-off, refresh once) |
//! | [`limits`] | [`RealmLimits`]: per-realm GCRA limiter, batch limiter, in-flight semaphore |
//! | [`response`] | bounded body reads, QBO fault parsing (also inside a 200), `Retry-After`, batch answers |
//! | [`observe`] | [`RequestObserver`]: every HTTP request reported as it finishes |
//! | [`auth`] | [`Authorizer`] (OAuth 2.0 refresh), the [`TokenStore`] trait, [`MemoryTokenStore`] |
//! | [`client`] | [`QboClient`]: queries, small queries gathered into batches, the retry loop |
//!
//! # Example
//! ```no_run
//! use qbo_client::{
//!     AuthSettings, Authorizer, HttpSettings, MemoryTokenStore, QboClient, RequestStats,
//!     StopSignal, http_client, token_http_client,
//! };
//! use std::sync::Arc;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let http = HttpSettings::default();
//! let auth = Authorizer::new(
//!     token_http_client(&http)?,
//!     AuthSettings {
//!         client_id: "app".into(),
//!         client_secret: "secret".to_string().into(),
//!         realm_id: "9130350000000000".into(),
//!         seed: Some("refresh-token".to_string().into()),
//!         token_url: "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer".parse()?,
//!     },
//!     Arc::new(MemoryTokenStore::new()),
//! );
//! let client = QboClient::new(
//!     http_client(&http)?,
//!     &"https://quickbooks.api.intuit.com".parse()?,
//!     "9130350000000000",
//!     Arc::new(auth),
//!     http,
//! )?;
//! let body = client
//!     .query("SELECT COUNT(*) FROM Invoice", &RequestStats::default(), &StopSignal::default())
//!     .await?;
//! println!("{}", String::from_utf8_lossy(&body));
//! # Ok(())
//! # }
//! ```

pub mod auth;
pub mod client;
pub mod error;
pub mod limits;
pub mod observe;
pub mod response;
pub mod retry;
pub mod settings;
pub mod stop;

pub use auth::{AuthError, AuthSettings, Authorizer, MemoryTokenStore, TokenStore};
pub use client::{
    MAX_BATCH_ITEMS, MINOR_VERSION, QboClient, RequestStats, http_client, token_http_client,
};
pub use error::{LocatedError, Parsed, QboError, QueryError, Site};
pub use limits::RealmLimits;
pub use observe::{Endpoint, Outcome, RequestGate, RequestObserver, RequestRecord};
pub use response::{printable, read_body};
pub use retry::{RetryClass, classify};
pub use settings::{HttpSettings, redacted_url};
pub use stop::StopSignal;

/// Installs rustls' ring crypto provider once per process (reqwest is built without one).
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

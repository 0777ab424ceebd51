//! Configuration: environment, `.env` and flags turned into validated types before anything
//! runs. Nothing downstream sees a raw string for a date, entity, realm or URL.
//!
//! Precedence (contract.md): command-line flags > real environment > `.env` file. Secrets
//! (client secret, refresh token, database password) are wrapped in [`SecretString`] so that
//! `Debug` and logs cannot show them; every problem found is reported at once, and the binary
//! turns a [`ConfigError`] into exit code 2 before anything is written.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::time::Duration;
use url::Url;

/// Default Intuit hosts (qbo-api.md §1, §7).
pub const INTUIT_SANDBOX_API: &str = "https://sandbox-quickbooks.api.intuit.com";
pub const INTUIT_PRODUCTION_API: &str = "https://quickbooks.api.intuit.com";
pub const INTUIT_TOKEN_URL: &str = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer";

/// Every problem with the configuration, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    pub fn one(problem: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![problem.into()],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.problems.len() == 1 {
            return write!(f, "invalid configuration: {}", self.problems[0]);
        }
        writeln!(
            f,
            "invalid configuration ({} problems):",
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where configuration values come from; tests pass a map instead of the process environment.
pub trait Source {
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment (after `.env` has been loaded into it).
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Source for std::collections::HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        std::collections::HashMap::get(self, key).cloned()
    }
}

/// Loads `.env` from the working directory into the process environment without overriding
/// variables that are already set. A malformed file is a configuration error.
pub fn load_dotenv() -> Result<(), ConfigError> {
    match dotenvy::dotenv() {
        Ok(_) => Ok(()),
        Err(e) if e.not_found() => Ok(()),
        Err(e) => Err(ConfigError::one(format!(
            "could not read .env in the working directory: {e}; fix or remove the file"
        ))),
    }
}

/// A QuickBooks company id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RealmId(String);

impl RealmId {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("QBO_REALM_ID is empty: set it to your QuickBooks company id".into());
        }
        if t.len() > 50
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "QBO_REALM_ID '{t}' is not a company id: expected up to 50 letters or digits"
            ));
        }
        Ok(RealmId(t.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RealmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything needed to talk to QBO for one company.
#[derive(Debug, Clone)]
pub struct QboSettings {
    pub client_id: String,
    pub client_secret: SecretString,
    pub realm_id: RealmId,
    /// The seed refresh token (`QBO_REFRESH_TOKEN`); the token store may hold a newer one.
    pub refresh_token: SecretString,
    /// API host: requests go to `{api_base}/v3/company/{realm}/...`.
    pub api_base: Url,
    pub token_url: Url,
}

/// Client-side limits and retry policy, shared by everything one process runs per realm.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Requests per minute per realm (QBO allows 500; the default keeps 2% headroom).
    pub requests_per_minute: u32,
    /// Requests in flight per realm (QBO allows 10).
    pub max_in_flight: u32,
    /// Retries of one request after 5xx, timeouts, dropped connections and 429s.
    pub max_retries: u32,
    /// Wait after a 429 without `Retry-After` (Intuit: "wait 60 seconds").
    pub throttle_wait: Duration,
    /// First backoff delay after a transient failure; doubles with jitter up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// QBO times out queries after 120 s; we give up slightly later.
    pub request_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            requests_per_minute: 490,
            max_in_flight: 10,
            max_retries: 8,
            throttle_wait: Duration::from_secs(60),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(130),
        }
    }
}

impl HttpSettings {
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=10_000).contains(&self.requests_per_minute) {
            problems.push(format!(
                "--rpm {} is out of range: use 1..=10000 (QBO allows 500 per minute)",
                self.requests_per_minute
            ));
        }
        if !(1..=100).contains(&self.max_in_flight) {
            problems.push(format!(
                "--max-in-flight {} is out of range: use 1..=100 (QBO allows 10)",
                self.max_in_flight
            ));
        }
        problems
    }
}

/// A PostgreSQL connection target. The URL may hold a password, so it is a secret; use
/// [`DbSettings::display`] in messages.
#[derive(Clone)]
pub struct DbSettings {
    url: SecretString,
    display: String,
}

impl fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbSettings")
            .field("target", &self.display)
            .finish_non_exhaustive()
    }
}

impl DbSettings {
    pub fn from_url(text: &str) -> Result<Self, String> {
        let url = Url::parse(text.trim()).map_err(|e| {
            format!("DATABASE_URL is not a URL ({e}): use postgres://USER:PASSWORD@HOST:PORT/DB")
        })?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            return Err(format!(
                "DATABASE_URL has scheme '{}': use postgres://USER:PASSWORD@HOST:PORT/DB",
                url.scheme()
            ));
        }
        let mut shown = url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        shown.set_query(None);
        Ok(DbSettings {
            url: SecretString::from(url.to_string()),
            display: shown.to_string(),
        })
    }

    /// Reads `DATABASE_URL`, or builds it from `POSTGRES_HOST/PORT/USER/PASSWORD/DB`.
    /// `None` when neither is configured.
    pub fn from_source(src: &dyn Source) -> Result<Option<Self>, String> {
        if let Some(u) = src.get("DATABASE_URL").filter(|u| !u.trim().is_empty()) {
            return Self::from_url(&u).map(Some);
        }
        let user = src.get("POSTGRES_USER").filter(|v| !v.is_empty());
        let db = src.get("POSTGRES_DB").filter(|v| !v.is_empty());
        if user.is_none() && db.is_none() && src.get("POSTGRES_HOST").is_none() {
            return Ok(None);
        }
        let mut url = Url::parse("postgres://localhost").map_err(|e| e.to_string())?;
        let host = src
            .get("POSTGRES_HOST")
            .unwrap_or_else(|| "localhost".into());
        url.set_host(Some(&host))
            .map_err(|e| format!("POSTGRES_HOST '{host}' is not a host name: {e}"))?;
        let port = src.get("POSTGRES_PORT").unwrap_or_else(|| "5432".into());
        let port: u16 = port
            .trim()
            .parse()
            .map_err(|_| format!("POSTGRES_PORT '{port}' is not a port number (1-65535)"))?;
        let _ = url.set_port(Some(port));
        let _ = url.set_username(user.as_deref().unwrap_or("postgres"));
        if let Some(p) = src.get("POSTGRES_PASSWORD").filter(|v| !v.is_empty()) {
            let _ = url.set_password(Some(&p));
        }
        url.set_path(db.as_deref().unwrap_or("postgres"));
        Self::from_url(url.as_str()).map(Some)
    }

    pub fn url(&self) -> &str {
        self.url.expose_secret()
    }

    /// The target without password or parameters, for messages.
    pub fn display(&self) -> &str {
        &self.display
    }
}

/// Reads the QBO settings. `api_base` / `token_url` flags override the environment.
pub fn qbo_settings(
    src: &dyn Source,
    api_base_flag: Option<&str>,
    token_url_flag: Option<&str>,
) -> Result<QboSettings, ConfigError> {
    let mut problems = Vec::new();
    let mut required = |key: &str, what: &str| -> String {
        match src.get(key).map(|v| v.trim().to_string()) {
            Some(v) if !v.is_empty() => v,
            Some(_) => {
                problems.push(format!("{key} is empty: set it to {what}"));
                String::new()
            }
            None => {
                problems.push(format!(
                    "{key} is not set: set it to {what} (environment or .env)"
                ));
                String::new()
            }
        }
    };
    let client_id = required("QBO_CLIENT_ID", "your Intuit app's client id");
    let client_secret = required("QBO_CLIENT_SECRET", "your Intuit app's client secret");
    let realm = required("QBO_REALM_ID", "the QuickBooks company id (realm)");
    let refresh_token = required(
        "QBO_REFRESH_TOKEN",
        "a refresh token from Intuit's OAuth playground or your app's consent flow",
    );
    let realm_id = if realm.is_empty() {
        None
    } else {
        RealmId::parse(&realm).map_err(|e| problems.push(e)).ok()
    };

    let environment = src
        .get("QBO_ENVIRONMENT")
        .unwrap_or_else(|| "sandbox".into());
    let default_api = match environment.trim().to_ascii_lowercase().as_str() {
        "sandbox" | "" => INTUIT_SANDBOX_API,
        "production" => INTUIT_PRODUCTION_API,
        other => {
            problems.push(format!(
                "QBO_ENVIRONMENT '{other}' is not valid: use sandbox or production"
            ));
            INTUIT_SANDBOX_API
        }
    };
    let api_text = api_base_flag
        .map(str::to_string)
        .or_else(|| src.get("QBO_API_BASE_URL").filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| default_api.to_string());
    let api_base = parse_http_url("QBO_API_BASE_URL", &api_text).map_err(|e| problems.push(e));
    let token_text = token_url_flag
        .map(str::to_string)
        .or_else(|| src.get("QBO_TOKEN_URL").filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| INTUIT_TOKEN_URL.to_string());
    let token_url = parse_http_url("QBO_TOKEN_URL", &token_text).map_err(|e| problems.push(e));

    match (realm_id, api_base, token_url) {
        (Some(realm_id), Ok(api_base), Ok(token_url)) if problems.is_empty() => Ok(QboSettings {
            client_id,
            client_secret: SecretString::from(client_secret),
            realm_id,
            refresh_token: SecretString::from(refresh_token),
            api_base,
            token_url,
        }),
        _ => Err(ConfigError { problems }),
    }
}

fn parse_http_url(key: &str, text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim())
        .map_err(|e| format!("{key} '{text}' is not a URL ({e}): use e.g. https://host:port"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "{key} '{text}' must start with http:// or https://"
        ));
    }
    if url.host_str().is_none() {
        return Err(format!("{key} '{text}' has no host"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const GOOD: &[(&str, &str)] = &[
        ("QBO_CLIENT_ID", "client-id"),
        ("QBO_CLIENT_SECRET", "very-secret-value"),
        ("QBO_REALM_ID", "4620816365031245070"),
        ("QBO_REFRESH_TOKEN", "refresh-token-value"),
    ];

    #[test]
    fn complete_settings_parse_and_hide_secrets() {
        let s = qbo_settings(&env(GOOD), None, None).unwrap();
        assert_eq!(
            s.api_base.as_str(),
            "https://sandbox-quickbooks.api.intuit.com/"
        );
        assert_eq!(s.token_url.as_str(), INTUIT_TOKEN_URL);
        let debug = format!("{s:?}");
        assert!(!debug.contains("very-secret-value"), "{debug}");
        assert!(!debug.contains("refresh-token-value"), "{debug}");
    }

    #[test]
    fn production_and_overrides() {
        let mut e = env(GOOD);
        e.insert("QBO_ENVIRONMENT".into(), "production".into());
        let s = qbo_settings(&e, None, None).unwrap();
        assert_eq!(s.api_base.host_str(), Some("quickbooks.api.intuit.com"));
        e.insert("QBO_API_BASE_URL".into(), "http://127.0.0.1:9999".into());
        let s = qbo_settings(&e, Some("http://127.0.0.1:1234"), None).unwrap();
        assert_eq!(s.api_base.port(), Some(1234), "flag wins over environment");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = env(&[("QBO_CLIENT_ID", ""), ("QBO_ENVIRONMENT", "staging")]);
        let err = qbo_settings(&e, None, None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("QBO_CLIENT_ID is empty"), "{text}");
        assert!(text.contains("QBO_CLIENT_SECRET is not set"), "{text}");
        assert!(text.contains("QBO_REALM_ID is not set"), "{text}");
        assert!(text.contains("QBO_REFRESH_TOKEN is not set"), "{text}");
        assert!(text.contains("QBO_ENVIRONMENT 'staging'"), "{text}");
    }

    #[test]
    fn bad_realm_and_url() {
        let mut e = env(GOOD);
        e.insert("QBO_REALM_ID".into(), "12 34".into());
        e.insert("QBO_TOKEN_URL".into(), "ftp://x".into());
        let text = qbo_settings(&e, None, None).unwrap_err().to_string();
        assert!(text.contains("not a company id"), "{text}");
        assert!(text.contains("http:// or https://"), "{text}");
    }

    #[test]
    fn database_url_from_parts_hides_password() {
        let e = env(&[
            ("POSTGRES_HOST", "db.internal"),
            ("POSTGRES_USER", "loader"),
            ("POSTGRES_PASSWORD", "p@ss/word"),
            ("POSTGRES_DB", "qbo_raw_db"),
        ]);
        let db = DbSettings::from_source(&e).unwrap().unwrap();
        assert_eq!(
            db.display(),
            "postgres://loader:***@db.internal:5432/qbo_raw_db"
        );
        assert!(db.url().contains("p%40ss%2Fword"));
        assert!(!format!("{db:?}").contains("p%40ss"));
        assert!(DbSettings::from_source(&env(&[])).unwrap().is_none());
        let err = DbSettings::from_url("mysql://x/y").unwrap_err();
        assert!(err.contains("postgres://"), "{err}");
    }
}

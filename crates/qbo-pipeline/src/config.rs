//! Configuration: environment, `.env` and flags turned into validated types before anything
//! runs. Nothing downstream sees a raw string for a date, entity, realm or URL.
//!
//! Precedence (contract.md): command-line flags > real environment > `.env` file. Secrets
//! (client secret, refresh token, database password) are wrapped in [`SecretString`] so that
//! `Debug` and logs cannot show them; every problem found is reported at once, and the binary
//! turns a [`ConfigError`] into exit code 2 before anything is written.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use url::Url;

/// The client's settings and URL redaction live in `qbo_client`; config parses into them.
pub use qbo_client::{HttpSettings, redacted_url};

/// Default Intuit hosts: the sandbox and production API, and the OAuth 2.0 token endpoint.
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

/// Loads `./.env` (the working directory's, never a parent's) into the process environment
/// without overriding variables that are already set.
///
/// Values are taken literally: no `$VAR` expansion (a value can hold a `$`, and a planted
/// reference cannot pull in another variable). Lines are `KEY=VALUE`, optionally prefixed by
/// `export `, with `#` comments and blank lines; a value may be wrapped in single or double
/// quotes. A malformed line is a configuration error naming its line number, never its text
/// (it may hold a secret).
pub fn load_dotenv() -> Result<(), ConfigError> {
    let text = match std::fs::read(".env") {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(ConfigError::one(format!(
                "could not read .env in the working directory ({}); fix its permissions or remove it",
                e.kind()
            )));
        }
    };
    let text = String::from_utf8(text).map_err(|_| {
        ConfigError::one(".env in the working directory is not UTF-8 text; fix or remove it")
    })?;
    for (key, value) in parse_dotenv(&text)? {
        if std::env::var_os(&key).is_none() {
            // SAFETY: called at the start of `main`, before any other thread exists.
            unsafe { std::env::set_var(key, value) };
        }
    }
    Ok(())
}

/// Parses `.env` text (see [`load_dotenv`]); every malformed line is reported by number.
pub fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let parsed = line.split_once('=').and_then(|(k, v)| {
            let key = k.trim();
            let valid_key = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            valid_key.then_some((key, v.trim()))
        });
        let Some((key, raw)) = parsed else {
            problems.push(format!(
                ".env line {}: not KEY=VALUE (KEY of letters, digits and _); fix or remove the line",
                n + 1
            ));
            continue;
        };
        let value = match raw.chars().next() {
            Some(q @ ('"' | '\'')) => match raw[1..].find(q) {
                Some(end)
                    if raw[1 + end + 1..].trim_start().is_empty()
                        || raw[1 + end + 1..].trim_start().starts_with('#') =>
                {
                    raw[1..1 + end].to_string()
                }
                _ => {
                    problems.push(format!(
                        ".env line {}: the quoted value of {key} is not closed (or text follows the closing quote)",
                        n + 1
                    ));
                    continue;
                }
            },
            // An unquoted value ends at ` #` (a trailing comment).
            _ => match raw.find(" #") {
                Some(i) => raw[..i].trim_end().to_string(),
                None => raw.to_string(),
            },
        };
        if value.contains('\0') {
            problems.push(format!(
                ".env line {}: the value of {key} holds a NUL character; fix or remove the line",
                n + 1
            ));
            continue;
        }
        out.push((key.to_string(), value));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(ConfigError { problems })
    }
}

/// Whether `url` points at this machine (where plain `http://` is acceptable).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        // Non-special schemes (postgres://) leave IP addresses unparsed.
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The key that encrypts stored OAuth tokens (`QBO_TOKEN_KEY`: 32 random bytes, base64;
/// e.g. `openssl rand -base64 32`). AES-256-GCM with a random nonce per value; stored as
/// `enc:v1:<base64(nonce | ciphertext | tag)>`.
///
/// Trade-off: with a key, a database dump or backup alone no longer yields a usable refresh
/// token; but the key must then be kept as carefully as the database (lose it and the app
/// must be re-authorised), and a process that has both can still read the tokens.
#[derive(Clone)]
pub struct TokenKey(std::sync::Arc<ring::aead::LessSafeKey>);

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

const SEALED_PREFIX: &str = "enc:v1:";

impl TokenKey {
    pub fn parse(text: &str) -> Result<Self, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| {
                "QBO_TOKEN_KEY is not base64: generate one with `openssl rand -base64 32`"
                    .to_string()
            })?;
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &bytes).map_err(|_| {
            format!(
                "QBO_TOKEN_KEY holds {} bytes, not 32: generate one with `openssl rand -base64 32`",
                bytes.len()
            )
        })?;
        Ok(TokenKey(std::sync::Arc::new(ring::aead::LessSafeKey::new(
            key,
        ))))
    }

    /// Encrypts a token for storage.
    pub fn seal(&self, plain: &str) -> Result<String, String> {
        use base64::Engine;
        use ring::rand::SecureRandom;
        let mut nonce = [0u8; 12];
        ring::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "no system randomness for a nonce".to_string())?;
        let mut data = plain.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                &mut data,
            )
            .map_err(|_| "encryption failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!(
            "{SEALED_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// Reads a stored value: decrypts `enc:v1:` values (a key is then required), returns
    /// others as they are (tokens stored before a key was configured).
    pub fn open_stored(key: Option<&TokenKey>, stored: &str) -> Result<String, String> {
        use base64::Engine;
        let Some(sealed) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_string());
        };
        let key = key.ok_or("QBO_TOKEN_KEY is not set")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| "the stored value is damaged")?;
        if bytes.len() < 12 + 16 {
            return Err("the stored value is damaged".into());
        }
        let (nonce, data) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce
            .try_into()
            .map_err(|_| "the stored value is damaged")?;
        let mut data = data.to_vec();
        let plain = key
            .0
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                &mut data,
            )
            .map_err(|_| "QBO_TOKEN_KEY is not the key it was stored with")?;
        String::from_utf8(plain.to_vec()).map_err(|_| "the stored value is damaged".into())
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
    /// The seed refresh token (`QBO_REFRESH_TOKEN`) of the environment's realm; the token
    /// store may hold a newer one. `None` for a registered realm: its token is in the store.
    pub seed: Option<SecretString>,
    /// API host: requests go to `{api_base}/v3/company/{realm}/...`.
    pub api_base: Url,
    pub token_url: Url,
    /// Encrypts stored tokens when set (`QBO_TOKEN_KEY`).
    pub token_key: Option<TokenKey>,
}

/// The realm named by the environment: `QBO_REALM_ID`, with `QBO_REFRESH_TOKEN` as its seed
/// when set.
#[derive(Debug, Clone)]
pub struct EnvRealm {
    pub realm_id: RealmId,
    pub seed: Option<SecretString>,
}

/// The Intuit app every realm of a deployment uses (`QBO_CLIENT_ID`/`QBO_CLIENT_SECRET`,
/// endpoints, token key) and the environment's realm, if any.
#[derive(Debug, Clone)]
pub struct QboApp {
    pub client_id: String,
    pub client_secret: SecretString,
    pub api_base: Url,
    pub token_url: Url,
    pub token_key: Option<TokenKey>,
    pub env_realm: Option<EnvRealm>,
    /// `QBO_MONTHLY_CALL_BUDGET`: most API calls per company and calendar month (UTC); a run
    /// stops before going past it.
    pub monthly_budget: Option<u64>,
}

impl QboApp {
    /// The app of one realm's settings, with that realm as the environment's.
    pub fn single(s: &QboSettings) -> QboApp {
        QboApp {
            client_id: s.client_id.clone(),
            client_secret: s.client_secret.clone(),
            api_base: s.api_base.clone(),
            token_url: s.token_url.clone(),
            token_key: s.token_key.clone(),
            env_realm: Some(EnvRealm {
                realm_id: s.realm_id.clone(),
                seed: s.seed.clone(),
            }),
            monthly_budget: None,
        }
    }

    /// The settings for one realm: the environment's seed when it is the environment's realm.
    pub fn realm(&self, realm_id: &RealmId) -> QboSettings {
        let seed = self
            .env_realm
            .as_ref()
            .filter(|e| &e.realm_id == realm_id)
            .and_then(|e| e.seed.clone());
        QboSettings {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            realm_id: realm_id.clone(),
            seed,
            api_base: self.api_base.clone(),
            token_url: self.token_url.clone(),
            token_key: self.token_key.clone(),
        }
    }
}

/// A PostgreSQL connection target. The URL may hold a password, so it is a secret; use
/// [`DbSettings::display`] in messages.
#[derive(Clone)]
pub struct DbSettings {
    url: SecretString,
    display: String,
    /// A server on another machine without certificate verification (see [`DbSettings::tls_warning`]).
    unverified_remote: bool,
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
        let sslmode = url
            .query_pairs()
            .find(|(k, _)| k == "sslmode")
            .map(|(_, v)| v.to_ascii_lowercase());
        let socket = url
            .query_pairs()
            .any(|(k, v)| k == "host" && v.starts_with('/'));
        let local = socket || url.host_str().is_none_or(|h| h.is_empty()) || is_loopback(&url);
        let verified = matches!(sslmode.as_deref(), Some("verify-full" | "verify-ca"));
        Ok(DbSettings {
            url: SecretString::from(url.to_string()),
            display: shown.to_string(),
            unverified_remote: !local && !verified,
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

    /// A warning when the server is on another machine and its certificate is not checked:
    /// the default `sslmode=prefer` encrypts when the server offers TLS but accepts any
    /// certificate (and a plain connection), so a machine in the middle can read the data and
    /// the password. `?sslmode=verify-full` (with `sslrootcert=/path/ca.pem` for a private CA)
    /// checks the server's certificate and host name.
    pub fn tls_warning(&self) -> Option<String> {
        self.unverified_remote.then(|| {
            format!(
                "the database {} is on another machine and its TLS certificate is not verified: add sslmode=verify-full (and sslrootcert=/path/to/ca.pem for a private CA) to DATABASE_URL",
                self.display
            )
        })
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
    for (key, what) in [
        ("QBO_REALM_ID", "the QuickBooks company id (realm)"),
        (
            "QBO_REFRESH_TOKEN",
            "a refresh token from Intuit's OAuth playground or your app's consent flow",
        ),
    ] {
        match src.get(key) {
            Some(v) if v.trim().is_empty() => {
                problems.push(format!("{key} is empty: set it to {what}"))
            }
            None => problems.push(format!(
                "{key} is not set: set it to {what} (environment or .env)"
            )),
            Some(_) => {}
        }
    }
    match qbo_app(src, api_base_flag, token_url_flag) {
        Ok(app) if problems.is_empty() => match &app.env_realm {
            Some(e) => Ok(app.realm(&e.realm_id)),
            None => Err(ConfigError::one("QBO_REALM_ID is not set")),
        },
        Ok(_) => Err(ConfigError { problems }),
        Err(e) => {
            for p in e.problems {
                if !problems.contains(&p) {
                    problems.push(p);
                }
            }
            Err(ConfigError { problems })
        }
    }
}

/// The Intuit app's settings and the environment's realm. `QBO_REALM_ID` and
/// `QBO_REFRESH_TOKEN` are optional here: without them the registered realms are used, and
/// `QBO_REALM_ID` alone selects a registered realm. `QBO_REFRESH_TOKEN` without
/// `QBO_REALM_ID` is a mistake (which company is it for?).
pub fn qbo_app(
    src: &dyn Source,
    api_base_flag: Option<&str>,
    token_url_flag: Option<&str>,
) -> Result<QboApp, ConfigError> {
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
    let optional = |key: &str| {
        src.get(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let realm = optional("QBO_REALM_ID");
    let refresh_token = optional("QBO_REFRESH_TOKEN");
    let env_realm = match (realm, refresh_token) {
        (Some(realm), seed) => RealmId::parse(&realm)
            .map_err(|e| problems.push(e))
            .ok()
            .map(|realm_id| EnvRealm {
                realm_id,
                seed: seed.map(SecretString::from),
            }),
        (None, Some(_)) => {
            problems.push(
                "QBO_REFRESH_TOKEN is set but QBO_REALM_ID is not: set QBO_REALM_ID to the company the token belongs to (or register companies with `qbo-pipeline realm add`)"
                    .into(),
            );
            None
        }
        (None, None) => {
            if client_id.is_empty() || client_secret.is_empty() {
                // A set-up with no credentials at all: name the company's too.
                problems.push(
                    "QBO_REALM_ID and QBO_REFRESH_TOKEN are not set: set them to the company (realm) id and its refresh token, or register companies with `qbo-pipeline realm add --realm-id R`"
                        .into(),
                );
            }
            None
        }
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
    let token_key = match src.get("QBO_TOKEN_KEY").filter(|v| !v.trim().is_empty()) {
        Some(k) => TokenKey::parse(&k).map_err(|e| problems.push(e)).ok(),
        None => None,
    };
    let monthly_budget = match optional("QBO_MONTHLY_CALL_BUDGET") {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (1..=1_000_000_000).contains(&n) => Some(n),
            _ => {
                problems.push(format!(
                    "QBO_MONTHLY_CALL_BUDGET '{}' is not a number of API calls from 1 to 1000000000 (e.g. 500000); unset it for no budget",
                    qbo_client::printable(&v, 40)
                ));
                None
            }
        },
    };
    for (key, url) in [
        ("QBO_API_BASE_URL", &api_base),
        ("QBO_TOKEN_URL", &token_url),
    ] {
        if let Ok(u) = url
            && u.scheme() == "http"
            && !is_loopback(u)
        {
            tracing::warn!(
                "{key} {} uses plain http:// to another machine: tokens and data cross the network unencrypted; use https://",
                redacted_url(u)
            );
        }
    }

    match (api_base, token_url) {
        (Ok(api_base), Ok(token_url)) if problems.is_empty() => Ok(QboApp {
            client_id,
            client_secret: SecretString::from(client_secret),
            api_base,
            token_url,
            token_key,
            env_realm,
            monthly_budget,
        }),
        _ => Err(ConfigError { problems }),
    }
}

/// Parses an http(s) URL. Messages never repeat a user name or password it may hold.
fn parse_http_url(key: &str, text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim())
        .map_err(|e| format!("{key} is not a URL ({e}): use e.g. https://host:port"))?;
    let shown = redacted_url(&url);
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "{key} '{shown}' must start with http:// or https://"
        ));
    }
    if url.host_str().is_none() {
        return Err(format!("{key} '{shown}' has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{key} '{shown}' holds a user name or password: remove it (the client id and secret are sent from QBO_CLIENT_ID and QBO_CLIENT_SECRET)"
        ));
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

    #[test]
    fn dotenv_values_are_literal_and_errors_name_lines_only() {
        let text =
            "# c\nexport A=1\nB = two words # comment\nC=\"$HOME x\"\nD='y # z'\nE=$HOME\n\n";
        let pairs = parse_dotenv(text).unwrap();
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("A"), Some("1"));
        assert_eq!(get("B"), Some("two words"));
        assert_eq!(get("C"), Some("$HOME x"));
        assert_eq!(get("D"), Some("y # z"));
        assert_eq!(get("E"), Some("$HOME"), "no expansion");
        assert_eq!(
            parse_dotenv("\u{feff}A=1\r\n").unwrap(),
            vec![("A".into(), "1".into())]
        );
        let nul = parse_dotenv("S=abc\0secret\n").unwrap_err().to_string();
        assert!(nul.contains("line 1") && !nul.contains("secret"), "{nul}");
        let err = parse_dotenv("OK=1\nthe-secret-value\nX=\"open\n1BAD=2\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(".env line 2")
                && text.contains(".env line 3")
                && text.contains(".env line 4"),
            "{text}"
        );
        assert!(
            !text.contains("the-secret-value") && !text.contains("open"),
            "{text}"
        );
    }

    #[test]
    fn urls_in_messages_hide_credentials() {
        let u = Url::parse("https://user:pw@host.example/token?x=secret").unwrap();
        assert_eq!(redacted_url(&u), "https://host.example/token");
        let mut e = env(GOOD);
        e.insert(
            "QBO_TOKEN_URL".into(),
            "https://user:hunter2@host.example/t".into(),
        );
        let text = qbo_settings(&e, None, None).unwrap_err().to_string();
        assert!(
            text.contains("user name or password") && !text.contains("hunter2"),
            "{text}"
        );
    }

    #[test]
    fn token_key_seals_and_opens() {
        use base64::Engine;
        let key_text = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let key = TokenKey::parse(&key_text).unwrap();
        assert_eq!(format!("{key:?}"), "TokenKey(***)");
        let sealed = key.seal("RT-secret").unwrap();
        assert!(sealed.starts_with("enc:v1:") && !sealed.contains("RT-secret"));
        assert_ne!(
            sealed,
            key.seal("RT-secret").unwrap(),
            "a fresh nonce each time"
        );
        assert_eq!(
            TokenKey::open_stored(Some(&key), &sealed).unwrap(),
            "RT-secret"
        );
        assert_eq!(TokenKey::open_stored(None, "plain").unwrap(), "plain");
        assert!(TokenKey::open_stored(None, &sealed).is_err());
        let other =
            TokenKey::parse(&base64::engine::general_purpose::STANDARD.encode([8u8; 32])).unwrap();
        assert!(TokenKey::open_stored(Some(&other), &sealed).is_err());
        assert!(TokenKey::open_stored(Some(&key), "enc:v1:AAAA").is_err());
        assert!(TokenKey::parse("not base64!").is_err());
        assert!(TokenKey::parse("c2hvcnQ=").unwrap_err().contains("5 bytes"));
    }

    #[test]
    fn remote_databases_without_certificate_checks_are_flagged() {
        let warn = |u: &str| DbSettings::from_url(u).unwrap().tls_warning().is_some();
        assert!(warn("postgres://u:p@db.example.com/x"));
        assert!(warn("postgres://u:p@db.example.com/x?sslmode=require"));
        assert!(!warn("postgres://u:p@db.example.com/x?sslmode=verify-full"));
        assert!(!warn("postgres://u@127.0.0.1:5432/x"));
        assert!(!warn("postgres://u@localhost/x?host=/var/run/postgresql"));
    }
}

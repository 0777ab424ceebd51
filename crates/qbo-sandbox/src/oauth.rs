//! OAuth 2.0 as Intuit's token endpoint does it: `POST /oauth2/v1/tokens/bearer` with HTTP
//! Basic client authentication (or `client_id`/`client_secret` form fields) and
//! `grant_type=refresh_token`, plus the bearer check the API applies.
//!
//! [`AuthStore`] is the pure part (tests drive it with explicit instants): which refresh tokens
//! are current, superseded (working until their grace ends) or revoked; which access tokens are
//! live. Rotation follows [`Rotation`]. Tokens are random; none is ever logged, and `Debug`
//! prints counts only.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::Rng;

use crate::config::Rotation;
use crate::state::SandboxState;

/// Five years: the refresh-token hard limit (`x_refresh_token_hard_expires_in`).
const HARD_LIFETIME: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

#[derive(Debug, Clone)]
struct RefreshToken {
    issued: Instant,
    superseded_at: Option<Instant>,
    revoked: bool,
}

#[derive(Debug, Clone, Copy)]
struct AccessToken {
    expires: Instant,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    Missing,
    Unknown,
    Expired,
}

/// Why a refresh was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantError {
    InvalidClient,
    InvalidGrant,
    UnsupportedGrantType,
    InvalidRequest,
}

/// A successful refresh.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub refresh_expires_in: u64,
    pub hard_expires_in: u64,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// Token state. All methods take `now` so tests control time.
pub struct AuthStore {
    client_id: String,
    client_secret: String,
    access_ttl: Duration,
    refresh_ttl: Duration,
    rotation: Rotation,
    grace: Duration,
    created: Instant,
    refresh: HashMap<String, RefreshToken>,
    current: String,
    access: HashMap<String, AccessToken>,
}

impl fmt::Debug for AuthStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthStore")
            .field("client_id", &self.client_id)
            .field("refresh_tokens", &self.refresh.len())
            .field("access_tokens", &self.access.len())
            .finish_non_exhaustive()
    }
}

fn random_token(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut token = String::with_capacity(prefix.len() + len);
    token.push_str(prefix);
    for _ in 0..len {
        token.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    token
}

impl AuthStore {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client_id: &str,
        client_secret: &str,
        first_refresh: &str,
        access_ttl: Duration,
        refresh_ttl: Duration,
        rotation: Rotation,
        grace: Duration,
        now: Instant,
    ) -> AuthStore {
        let mut refresh = HashMap::new();
        refresh.insert(
            first_refresh.to_owned(),
            RefreshToken {
                issued: now,
                superseded_at: None,
                revoked: false,
            },
        );
        AuthStore {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            access_ttl,
            refresh_ttl,
            rotation,
            grace,
            created: now,
            refresh,
            current: first_refresh.to_owned(),
            access: HashMap::new(),
        }
    }

    /// Whether these are the app's credentials.
    pub fn client_ok(&self, id: &str, secret: &str) -> bool {
        id == self.client_id && secret == self.client_secret
    }

    /// `grant_type=refresh_token` with `token`.
    pub fn refresh(&mut self, token: &str, now: Instant) -> Result<Issued, GrantError> {
        let state = self.refresh.get(token).ok_or(GrantError::InvalidGrant)?;
        if state.revoked
            || state
                .superseded_at
                .is_some_and(|at| now.saturating_duration_since(at) >= self.grace)
        {
            return Err(GrantError::InvalidGrant);
        }
        let is_current = token == self.current;
        let rotate = is_current
            && match self.rotation {
                Rotation::Never => false,
                Rotation::EveryRefresh => true,
                Rotation::Interval(every) => now.saturating_duration_since(state.issued) >= every,
            };
        if rotate {
            let fresh = random_token("AB11", 46);
            if let Some(old) = self.refresh.get_mut(token) {
                old.superseded_at = Some(now);
            }
            self.refresh.insert(
                fresh.clone(),
                RefreshToken {
                    issued: now,
                    superseded_at: None,
                    revoked: false,
                },
            );
            self.current = fresh;
        }
        // Forget tokens whose grace is long over.
        let grace = self.grace;
        self.refresh.retain(|_, t| {
            t.superseded_at.is_none_or(|at| {
                now.saturating_duration_since(at) < grace * 2 + Duration::from_secs(3600)
            })
        });
        self.access
            .retain(|_, t| now.saturating_duration_since(t.expires) < Duration::from_secs(3600));
        let access = random_token("eyJsandbox.", 120);
        self.access.insert(
            access.clone(),
            AccessToken {
                expires: now + self.access_ttl,
            },
        );
        let hard = HARD_LIFETIME.saturating_sub(now.saturating_duration_since(self.created));
        Ok(Issued {
            access_token: access,
            refresh_token: self.current.clone(),
            expires_in: self.access_ttl.as_secs(),
            refresh_expires_in: self.refresh_ttl.as_secs(),
            hard_expires_in: hard.as_secs(),
        })
    }

    /// Checks an `Authorization` header value against this chain's access tokens.
    pub fn check_bearer(&self, header: Option<&str>, now: Instant) -> Result<(), BearerError> {
        self.check_access_token(bearer_token(header)?, now)
    }

    /// Checks a bearer token (without the `Bearer ` prefix): `Unknown` when this chain never
    /// issued it.
    pub fn check_access_token(&self, token: &str, now: Instant) -> Result<(), BearerError> {
        let state = self.access.get(token).ok_or(BearerError::Unknown)?;
        if now >= state.expires {
            return Err(BearerError::Expired);
        }
        Ok(())
    }

    /// Whether this chain issued `token` as a refresh token (current, superseded or revoked,
    /// until it is forgotten long after its grace).
    pub fn knows_refresh_token(&self, token: &str) -> bool {
        self.refresh.contains_key(token)
    }

    /// Every access token expires now.
    pub fn expire_access_tokens(&mut self, now: Instant) {
        for token in self.access.values_mut() {
            token.expires = token.expires.min(now);
        }
    }

    /// Every refresh token issued so far stops working (a re-consent is needed).
    pub fn revoke_refresh_tokens(&mut self) {
        for token in self.refresh.values_mut() {
            token.revoked = true;
        }
    }

    /// The newest refresh token (for the admin API; never logged).
    pub fn current_refresh_token(&self) -> &str {
        &self.current
    }
}

/// The token of an `Authorization: Bearer ...` header value.
pub fn bearer_token(header: Option<&str>) -> Result<&str, BearerError> {
    let header = header.ok_or(BearerError::Missing)?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or(BearerError::Missing)
}

/// Client credentials from `Authorization: Basic` or the form.
fn client_credentials(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Option<(String, String)> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(encoded) = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        return Some((id.to_owned(), secret.to_owned()));
    }
    Some((
        form.get("client_id")?.clone(),
        form.get("client_secret")?.clone(),
    ))
}

fn oauth_error(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json;charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache, no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The company a token request is about: the one its `refresh_token` was issued for, else
/// realm 1 (which then counts the failure).
pub fn token_request_realm<'a>(
    state: &'a SandboxState,
    form: &HashMap<String, String>,
) -> &'a std::sync::Arc<crate::Realm> {
    form.get("refresh_token")
        .and_then(|t| state.realm_of_refresh_token(t))
        .unwrap_or_else(|| state.default_realm())
}

/// `POST /oauth2/v1/tokens/bearer`: one endpoint for every company (one Intuit app); the
/// refresh token picks the company whose chain refreshes.
pub async fn token_endpoint(
    State(state): State<std::sync::Arc<SandboxState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let form: HashMap<String, String> = url_form(&body);
    // The authorization-code grant: the code names the company (used once).
    let code_realm = (form.get("grant_type").map(String::as_str) == Some("authorization_code"))
        .then(|| {
            take_code(
                &state,
                form.get("code").map(String::as_str).unwrap_or(""),
                form.get("redirect_uri").map(String::as_str).unwrap_or(""),
            )
        });
    let realm = match &code_realm {
        Some(Some(id)) => state.realm(id).unwrap_or_else(|| state.default_realm()),
        _ => token_request_realm(&state, &form),
    };
    let Some((id, secret)) = client_credentials(&headers, &form) else {
        realm.note_token_failure();
        return oauth_error(StatusCode::UNAUTHORIZED, r#"{"error":"invalid_client"}"#);
    };
    let with_hard = headers
        .get("x-include-refresh-token-hard-expires-in")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let result = realm.with_auth(|auth| {
        if !auth.client_ok(&id, &secret) {
            return Err(GrantError::InvalidClient);
        }
        match (form.get("grant_type").map(String::as_str), &code_realm) {
            (Some("refresh_token"), _) => {}
            // A valid code: the company's chain issues its current refresh token.
            (Some("authorization_code"), Some(Some(_))) => {
                let current = auth.current_refresh_token().to_string();
                return auth.refresh(&current, Instant::now());
            }
            (Some("authorization_code"), _) => return Err(GrantError::InvalidGrant),
            (Some(_), _) => return Err(GrantError::UnsupportedGrantType),
            (None, _) => return Err(GrantError::InvalidRequest),
        }
        let token = form
            .get("refresh_token")
            .ok_or(GrantError::InvalidRequest)?;
        auth.refresh(token, Instant::now())
    });
    match result {
        Ok(issued) => {
            realm.note_token_refresh();
            let mut body = serde_json::Map::new();
            body.insert("access_token".into(), issued.access_token.into());
            body.insert("refresh_token".into(), issued.refresh_token.into());
            body.insert("token_type".into(), "bearer".into());
            body.insert("expires_in".into(), issued.expires_in.into());
            body.insert(
                "x_refresh_token_expires_in".into(),
                issued.refresh_expires_in.into(),
            );
            if with_hard {
                body.insert(
                    "x_refresh_token_hard_expires_in".into(),
                    issued.hard_expires_in.into(),
                );
            }
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/json;charset=utf-8"),
                    (header::CACHE_CONTROL, "no-cache, no-store"),
                    (header::PRAGMA, "no-cache"),
                ],
                serde_json::Value::Object(body).to_string(),
            )
                .into_response()
        }
        Err(error) => {
            realm.note_token_failure();
            match error {
                GrantError::InvalidClient => {
                    oauth_error(StatusCode::UNAUTHORIZED, r#"{"error":"invalid_client"}"#)
                }
                GrantError::InvalidGrant => oauth_error(
                    StatusCode::BAD_REQUEST,
                    r#"{"error_description":"Incorrect or invalid refresh token","error":"invalid_grant"}"#,
                ),
                GrantError::UnsupportedGrantType => oauth_error(
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"unsupported_grant_type"}"#,
                ),
                GrantError::InvalidRequest => {
                    oauth_error(StatusCode::BAD_REQUEST, r#"{"error":"invalid_request"}"#)
                }
            }
        }
    }
}

/// The path of Intuit's consent page (`https://appcenter.intuit.com/connect/oauth2`).
pub const AUTHORIZE_PATH: &str = "/connect/oauth2";

/// How long an authorization code may be exchanged (Intuit: a few minutes).
const CODE_TTL: Duration = Duration::from_secs(300);

/// An authorization code the consent endpoint issued.
#[derive(Debug, Clone)]
pub struct IssuedCode {
    realm_id: String,
    redirect_uri: String,
    issued: Instant,
}

fn consent_error(detail: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("The authorization request is invalid: {detail}\n"),
    )
        .into_response()
}

/// `GET /connect/oauth2?client_id=&response_type=code&scope=&redirect_uri=&state=`: Intuit's
/// consent page, consenting at once. Redirects (302) to `redirect_uri` with `code`, `state`
/// and `realmId`, like Intuit after the user picks a company; the sandbox takes the company
/// from `realm=` (an extension; default its first). An unknown client, a missing parameter
/// or a scope without `com.intuit.quickbooks.accounting` is a 400 (Intuit shows an error
/// page and does not redirect).
pub async fn authorize(
    State(state): State<std::sync::Arc<SandboxState>>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    if get("client_id") != Some(state.config.client_id.as_str()) {
        return consent_error("unknown client_id");
    }
    if get("response_type") != Some("code") {
        return consent_error("response_type must be code");
    }
    if !get("scope").is_some_and(|s| {
        s.split(' ')
            .any(|x| x == "com.intuit.quickbooks.accounting")
    }) {
        return consent_error("scope must include com.intuit.quickbooks.accounting");
    }
    let Some(redirect) = get("redirect_uri").and_then(|u| url::Url::parse(u).ok()) else {
        return consent_error("redirect_uri is missing or not a URL");
    };
    if !matches!(redirect.scheme(), "http" | "https") {
        return consent_error("redirect_uri must be http or https");
    }
    let Some(state_param) = get("state") else {
        return consent_error("state is required");
    };
    let realm = match get("realm") {
        Some(id) => match state.realm(id) {
            Some(r) => r,
            None => return consent_error("unknown realm"),
        },
        None => state.default_realm(),
    };
    let code = random_token("AB11code", 40);
    {
        let mut codes = state.codes.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        codes.retain(|_, c| now.saturating_duration_since(c.issued) < CODE_TTL);
        codes.insert(
            code.clone(),
            IssuedCode {
                realm_id: realm.id().to_string(),
                redirect_uri: redirect.as_str().to_string(),
                issued: now,
            },
        );
    }
    let mut target = redirect;
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", state_param)
        .append_pair("realmId", realm.id());
    (
        StatusCode::FOUND,
        [(header::LOCATION, target.as_str().to_string())],
    )
        .into_response()
}

/// Takes a code for `redirect_uri` (once): the company it was issued for.
fn take_code(state: &SandboxState, code: &str, redirect_uri: &str) -> Option<String> {
    let mut codes = state.codes.lock().unwrap_or_else(|e| e.into_inner());
    let issued = codes.remove(code)?;
    (Instant::now().saturating_duration_since(issued.issued) < CODE_TTL
        && issued.redirect_uri == redirect_uri)
        .then_some(issued.realm_id)
}

/// Decodes an `application/x-www-form-urlencoded` body.
pub fn url_form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `+` → space, `%XX` → byte; invalid escapes kept as written.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(rotation: Rotation, now: Instant) -> AuthStore {
        AuthStore::new(
            "id",
            "secret",
            "RT0",
            Duration::from_secs(3600),
            Duration::from_secs(8_726_400),
            rotation,
            Duration::from_secs(60),
            now,
        )
    }

    #[test]
    fn every_refresh_rotates_and_old_token_works_during_grace_only() {
        let t0 = Instant::now();
        let mut auth = store(Rotation::EveryRefresh, t0);
        let first = auth.refresh("RT0", t0).unwrap();
        assert_ne!(first.refresh_token, "RT0");
        // Within grace the old token still works and yields the current token.
        let again = auth.refresh("RT0", t0 + Duration::from_secs(30)).unwrap();
        assert_eq!(again.refresh_token, first.refresh_token);
        assert_eq!(
            auth.refresh("RT0", t0 + Duration::from_secs(61)),
            Err(GrantError::InvalidGrant)
        );
        assert!(
            auth.refresh(&first.refresh_token, t0 + Duration::from_secs(61))
                .is_ok()
        );
    }

    #[test]
    fn never_rotation_keeps_the_token_and_interval_rotates_late() {
        let t0 = Instant::now();
        let mut auth = store(Rotation::Never, t0);
        assert_eq!(auth.refresh("RT0", t0).unwrap().refresh_token, "RT0");
        let mut auth = store(Rotation::Interval(Duration::from_secs(100)), t0);
        assert_eq!(
            auth.refresh("RT0", t0 + Duration::from_secs(50))
                .unwrap()
                .refresh_token,
            "RT0"
        );
        assert_ne!(
            auth.refresh("RT0", t0 + Duration::from_secs(150))
                .unwrap()
                .refresh_token,
            "RT0"
        );
    }

    #[test]
    fn unknown_and_revoked_tokens_are_invalid_grants() {
        let t0 = Instant::now();
        let mut auth = store(Rotation::Never, t0);
        assert_eq!(auth.refresh("nope", t0), Err(GrantError::InvalidGrant));
        auth.revoke_refresh_tokens();
        assert_eq!(auth.refresh("RT0", t0), Err(GrantError::InvalidGrant));
    }

    #[test]
    fn access_tokens_expire() {
        let t0 = Instant::now();
        let mut auth = store(Rotation::Never, t0);
        let issued = auth.refresh("RT0", t0).unwrap();
        let header = format!("Bearer {}", issued.access_token);
        assert_eq!(auth.check_bearer(Some(&header), t0), Ok(()));
        assert_eq!(
            auth.check_bearer(Some(&header), t0 + Duration::from_secs(3600)),
            Err(BearerError::Expired)
        );
        assert_eq!(auth.check_bearer(None, t0), Err(BearerError::Missing));
        assert_eq!(
            auth.check_bearer(Some("Bearer x"), t0),
            Err(BearerError::Unknown)
        );
        auth.expire_access_tokens(t0);
        assert_eq!(
            auth.check_bearer(Some(&header), t0),
            Err(BearerError::Expired)
        );
    }

    #[test]
    fn debug_shows_no_tokens() {
        let t0 = Instant::now();
        let mut auth = store(Rotation::EveryRefresh, t0);
        let issued = auth.refresh("RT0", t0).unwrap();
        let debug = format!("{auth:?} {issued:?}");
        assert!(!debug.contains("RT0") && !debug.contains("secret"));
        assert!(!debug.contains(&issued.access_token) && !debug.contains(&issued.refresh_token));
    }

    #[test]
    fn form_decoding() {
        let form = url_form("grant_type=refresh_token&refresh_token=AB%2B1+x&bad=%zz&tail=%4");
        assert_eq!(form["grant_type"], "refresh_token");
        assert_eq!(form["refresh_token"], "AB+1 x");
        assert_eq!(form["bad"], "%zz");
        assert_eq!(form["tail"], "%4");
    }
}

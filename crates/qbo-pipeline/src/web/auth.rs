//! Who may use the dashboard, and proof that a form was sent by one of its own pages.
//!
//! - With `QBO_WEB_TOKEN` set, a page needs the session cookie the login form sets
//!   (`qbo_session`: HttpOnly, SameSite=Strict, 12 hours) and answers a redirect to `/login`
//!   without it; `/api/...` and `/metrics` take the cookie or `Authorization: Bearer TOKEN`
//!   and answer 401 without either. Without the token (loopback only) everyone on this
//!   machine is let in.
//! - The cookie is stateless: the time it was issued and an HMAC of that time under a key
//!   derived from the token, so every `serve` process sharing the token accepts it, and
//!   changing the token signs everyone out. It never holds the token itself.
//! - Every POST carries a CSRF token (a hidden `csrf` field; an HMAC of the session under the
//!   same key, a random per-process key without `QBO_WEB_TOKEN`), and a POST whose `Origin`
//!   is another site is refused whatever it carries.

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use secrecy::{ExposeSecret, SecretString};

pub const COOKIE: &str = "qbo_session";
/// How long a login lasts.
pub const SESSION_SECS: i64 = 12 * 3600;

pub struct Auth {
    token: Option<SecretString>,
    key: hmac::Key,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// Equal without leaking where they differ through timing.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No token is configured: everyone is let in.
    Open,
    /// A valid session cookie, issued at this Unix time.
    Session(i64),
    /// A valid bearer token.
    Bearer,
    /// Nothing valid.
    Nobody,
}

impl Caller {
    pub fn allowed(&self) -> bool {
        !matches!(self, Caller::Nobody)
    }
}

impl Auth {
    pub fn new(token: Option<SecretString>) -> Auth {
        let key = match &token {
            Some(t) => {
                let root = hmac::Key::new(hmac::HMAC_SHA256, t.expose_secret().as_bytes());
                let derived = hmac::sign(&root, b"qbo-pipeline dashboard key v1");
                hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
            }
            None => {
                let random: [u8; 32] = rand::random();
                hmac::Key::new(hmac::HMAC_SHA256, &random)
            }
        };
        Auth { token, key }
    }

    pub fn required(&self) -> bool {
        self.token.is_some()
    }

    fn sign(&self, what: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, what.as_bytes()).as_ref())
    }

    /// Whether `given` is the configured token.
    pub fn token_matches(&self, given: &str) -> bool {
        self.token
            .as_ref()
            .is_some_and(|t| same(given.trim().as_bytes(), t.expose_secret().as_bytes()))
    }

    /// A session cookie's value, issued at `now` (Unix seconds).
    pub fn session_value(&self, now: i64) -> String {
        format!("{now}.{}", self.sign(&format!("session:{now}")))
    }

    /// The `Set-Cookie` header of a new session.
    pub fn session_cookie(&self, now: i64) -> String {
        format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECS}",
            self.session_value(now)
        )
    }

    /// The `Set-Cookie` header that ends a session.
    pub fn logout_cookie() -> String {
        format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
    }

    /// A cookie value's issue time, when it is valid at `now`.
    pub fn check_session(&self, value: &str, now: i64) -> Option<i64> {
        let (issued, mac) = value.split_once('.')?;
        let issued: i64 = issued.parse().ok()?;
        let expected = self.sign(&format!("session:{issued}"));
        (same(mac.as_bytes(), expected.as_bytes())
            && issued <= now + 60
            && now - issued < SESSION_SECS)
            .then_some(issued)
    }

    pub fn caller(&self, headers: &HeaderMap, now: i64) -> Caller {
        if self.token.is_none() {
            return Caller::Open;
        }
        if let Some(bearer) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            && self.token_matches(bearer)
        {
            return Caller::Bearer;
        }
        match cookie(headers, COOKIE).and_then(|v| self.check_session(v, now)) {
            Some(issued) => Caller::Session(issued),
            None => Caller::Nobody,
        }
    }

    /// The CSRF token the forms of `caller`'s pages carry.
    pub fn csrf(&self, caller: &Caller) -> String {
        match caller {
            Caller::Session(issued) => self.sign(&format!("csrf:{issued}")),
            _ => self.sign("csrf:open"),
        }
    }

    /// Whether a POST may change anything: its `csrf` field is this caller's, and it does
    /// not come from another site. A bearer caller (a script, not a browser) needs no field.
    pub fn post_allowed(&self, caller: &Caller, headers: &HeaderMap, given: Option<&str>) -> bool {
        if cross_site(headers) {
            return false;
        }
        match caller {
            Caller::Nobody => false,
            Caller::Bearer => true,
            _ => given.is_some_and(|g| same(g.as_bytes(), self.csrf(caller).as_bytes())),
        }
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The browser says the request comes from another site (`Sec-Fetch-Site`), or its `Origin`
/// is not this server's `Host`.
fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return true;
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (None, _) => false,
        (Some("null"), _) => true,
        (Some(o), Some(h)) => {
            let o = o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .unwrap_or(o);
            !o.eq_ignore_ascii_case(h)
        }
        (Some(_), None) => true,
    }
}

/// Where to go after logging in: a path of this site only (never `//host` or a URL).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth() -> Auth {
        Auth::new(Some(SecretString::from(
            "0123456789abcdef-token".to_string(),
        )))
    }

    #[test]
    fn sessions_expire_and_cannot_be_forged() {
        let a = auth();
        let v = a.session_value(1_000_000);
        assert_eq!(a.check_session(&v, 1_000_010), Some(1_000_000));
        assert_eq!(
            a.check_session(&v, 1_000_000 + SESSION_SECS),
            None,
            "expired"
        );
        assert_eq!(a.check_session("1000000.forged", 1_000_010), None);
        let other = Auth::new(Some(SecretString::from(
            "another-token-0123456".to_string(),
        )));
        assert_eq!(
            other.check_session(&v, 1_000_010),
            None,
            "another token's key"
        );
        assert!(
            !v.contains("0123456789abcdef"),
            "the cookie never holds the token"
        );
    }

    #[test]
    fn csrf_needs_the_field_and_the_same_site() {
        let a = auth();
        let caller = Caller::Session(5);
        let token = a.csrf(&caller);
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(a.post_allowed(&caller, &h, Some(&token)));
        assert!(!a.post_allowed(&caller, &h, None));
        assert!(!a.post_allowed(&caller, &h, Some("x")));
        assert!(
            !a.post_allowed(&Caller::Session(6), &h, Some(&token)),
            "another session's"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(a.post_allowed(&caller, &h, Some(&token)));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!a.post_allowed(&caller, &h, Some(&token)));
        assert!(
            !a.post_allowed(&Caller::Bearer, &h, None),
            "cross-site even with a bearer"
        );
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/runs?x=1")), "/runs?x=1");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}

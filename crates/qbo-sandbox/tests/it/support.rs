//! Shared helpers: a sandbox on a free port plus an authorised HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;

use qbo_sandbox::{RunningSandbox, SandboxConfig, SandboxState};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("reqwest client")
}

pub fn local() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

/// A small config (fast to build).
pub fn small() -> SandboxConfig {
    SandboxConfig {
        customers: 40,
        items: 20,
        invoices: 600,
        ..SandboxConfig::default()
    }
}

pub struct World {
    pub sandbox: RunningSandbox,
    pub http: reqwest::Client,
    pub access: String,
}

/// A response as text.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub async fn answer(r: reqwest::Response) -> Answer {
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.text().await.expect("body");
    Answer {
        status,
        headers,
        body,
    }
}

impl World {
    pub async fn start(config: SandboxConfig) -> World {
        let sandbox = qbo_sandbox::spawn(config, local()).await.expect("spawn");
        Self::with(sandbox).await
    }

    #[allow(dead_code)]
    pub async fn with_state(state: SandboxState) -> World {
        let sandbox = qbo_sandbox::spawn_with_state(Arc::new(state), local())
            .await
            .expect("spawn");
        Self::with(sandbox).await
    }

    async fn with(sandbox: RunningSandbox) -> World {
        let http = http();
        let token = refresh(&http, &sandbox, sandbox.refresh_token()).await;
        assert_eq!(token.status, StatusCode::OK, "{}", token.body);
        let access = token.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned();
        World {
            sandbox,
            http,
            access,
        }
    }

    pub fn state(&self) -> &Arc<SandboxState> {
        self.sandbox.state()
    }

    pub fn api(&self, rest: &str) -> String {
        self.api_in(self.sandbox.realm_id(), rest)
    }

    /// `{base}/v3/company/{realm}/{rest}`.
    pub fn api_in(&self, realm: &str, rest: &str) -> String {
        format!("{}/v3/company/{realm}/{rest}", self.sandbox.base_url())
    }

    /// `{base}/admin/{rest}`.
    #[allow(dead_code)]
    pub fn admin(&self, rest: &str) -> String {
        format!("{}/admin/{rest}", self.sandbox.base_url())
    }

    /// A fresh access token for `realm` (refreshing its first refresh token).
    #[allow(dead_code)]
    pub async fn access_for(&self, realm: &str) -> String {
        let first = self
            .sandbox
            .refresh_token_of(realm)
            .unwrap_or_else(|| panic!("no realm {realm}"));
        let token = refresh(&self.http, &self.sandbox, first).await;
        assert_eq!(token.status, StatusCode::OK, "{}", token.body);
        token.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// `GET /v3/company/{realm}/query?query=q` with `token`.
    #[allow(dead_code)]
    pub async fn query_in(&self, realm: &str, token: &str, q: &str) -> Answer {
        answer(
            self.http
                .get(self.api_in(realm, "query"))
                .query(&[("query", q), ("minorversion", "75")])
                .bearer_auth(token)
                .header("Accept", "application/json")
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    /// `POST /v3/company/{realm}/batch` with `body` and `token`.
    #[allow(dead_code)]
    pub async fn batch_in(&self, realm: &str, token: &str, body: &str) -> Answer {
        answer(
            self.http
                .post(self.api_in(realm, "batch"))
                .query(&[("minorversion", "75")])
                .bearer_auth(token)
                .header("Accept", "application/json")
                .header("Content-Type", "application/json")
                .body(body.to_owned())
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    /// A batch in realm 1 with the world's token.
    #[allow(dead_code)]
    pub async fn batch(&self, body: &str) -> Answer {
        self.batch_in(self.sandbox.realm_id(), &self.access, body)
            .await
    }

    pub async fn get(&self, rest: &str) -> Answer {
        answer(
            self.http
                .get(self.api(rest))
                .bearer_auth(&self.access)
                .header("Accept", "application/json")
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    pub async fn query(&self, q: &str) -> Answer {
        answer(
            self.http
                .get(self.api("query"))
                .query(&[("query", q), ("minorversion", "75")])
                .bearer_auth(&self.access)
                .header("Accept", "application/json")
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    /// The rows of a page (empty for the empty page), asserting 200.
    pub async fn rows(&self, q: &str, entity: &str) -> Vec<serde_json::Value> {
        let a = self.query(q).await;
        assert_eq!(a.status, StatusCode::OK, "{q}: {}", a.body);
        a.json()["QueryResponse"][entity]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn ids(&self, q: &str, entity: &str) -> Vec<u64> {
        self.rows(q, entity)
            .await
            .iter()
            .map(|r| r["Id"].as_str().expect("Id").parse().expect("numeric Id"))
            .collect()
    }

    pub async fn count(&self, q: &str) -> u64 {
        let a = self.query(q).await;
        assert_eq!(a.status, StatusCode::OK, "{q}: {}", a.body);
        a.json()["QueryResponse"]["totalCount"]
            .as_u64()
            .expect("totalCount")
    }
}

/// `grant_type=refresh_token` with HTTP Basic client authentication.
pub async fn refresh(http: &reqwest::Client, sandbox: &RunningSandbox, token: &str) -> Answer {
    refresh_as(
        http,
        sandbox,
        sandbox.client_id(),
        sandbox.client_secret(),
        token,
    )
    .await
}

pub async fn refresh_as(
    http: &reqwest::Client,
    sandbox: &RunningSandbox,
    id: &str,
    secret: &str,
    token: &str,
) -> Answer {
    answer(
        http.post(sandbox.token_url())
            .basic_auth(id, Some(secret))
            .header("Accept", "application/json")
            .form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
            .send()
            .await
            .expect("send"),
    )
    .await
}

/// `2020-09-29T06:04:23.783-07:00`-shaped.
pub fn is_envelope_time(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 29
        && b[10] == b'T'
        && b[19] == b'.'
        && (s.ends_with("-07:00") || s.ends_with("-08:00"))
}

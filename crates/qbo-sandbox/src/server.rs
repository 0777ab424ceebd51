//! Wiring: [`app`] builds the axum `Router` (token endpoint, v3 API, admin API, behind the
//! fault/log middleware); [`spawn`] binds a socket, serves the router in a tokio task with
//! killable connections, and returns a [`RunningSandbox`] handle with the credentials and URLs
//! a client needs, for each company it serves.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::SandboxConfig;
use crate::faults::{ConnHandle, KillableListener, pipeline};
use crate::realm::Realm;
use crate::state::SandboxState;
use crate::{admin, api, oauth};

/// The path of the OAuth 2.0 token endpoint.
pub const TOKEN_PATH: &str = "/oauth2/v1/tokens/bearer";

/// The whole sandbox as a router (usable without a socket; dropping connections then
/// degrades to 503 answers).
pub fn app(state: Arc<SandboxState>) -> Router {
    Router::new()
        .route(TOKEN_PATH, post(oauth::token_endpoint))
        .route(oauth::AUTHORIZE_PATH, get(oauth::authorize))
        .route(
            "/v3/company/{realm}/query",
            get(api::query_get)
                .post(api::query_post)
                .fallback(api::unsupported),
        )
        .route(
            "/v3/company/{realm}/cdc",
            get(api::cdc).fallback(api::unsupported),
        )
        .route(
            "/v3/company/{realm}/batch",
            post(api::batch).fallback(api::unsupported),
        )
        .route(
            "/v3/company/{realm}/{entity}",
            post(api::write)
                .get(api::read_singleton)
                .fallback(api::unsupported),
        )
        .route(
            "/v3/company/{realm}/{entity}/{id}",
            get(api::read).fallback(api::unsupported),
        )
        .merge(admin::routes())
        .fallback(any(api::unsupported))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            pipeline,
        ))
        .with_state(state)
}

/// The `QBO_*=` lines for a sandbox reachable at `base_url`: `QBO_API_BASE_URL`,
/// `QBO_TOKEN_URL`, `QBO_CLIENT_ID`, `QBO_CLIENT_SECRET`, `QBO_REALM_ID` and
/// `QBO_REFRESH_TOKEN` (realm 1's), and, when it serves more than one company,
/// `QBO_SANDBOX_REALMS=id1,id2,...` and one `QBO_SANDBOX_REFRESH_TOKEN_<realm id>=<token>` per
/// company, realm 1 included.
pub fn env_lines(base_url: &str, state: &SandboxState) -> String {
    let config = state.config();
    let mut lines = format!(
        "QBO_API_BASE_URL={base_url}\nQBO_TOKEN_URL={base_url}{TOKEN_PATH}\nQBO_CLIENT_ID={}\n\
         QBO_CLIENT_SECRET={}\nQBO_REALM_ID={}\nQBO_REFRESH_TOKEN={}\n",
        config.client_id, config.client_secret, config.realm_id, config.refresh_token
    );
    if state.realms().len() > 1 {
        lines.push_str("QBO_SANDBOX_REALMS=");
        lines.push_str(&state.realm_ids().join(","));
        lines.push('\n');
        for realm in state.realms() {
            lines.push_str(&format!(
                "QBO_SANDBOX_REFRESH_TOKEN_{}={}\n",
                realm.id(),
                realm.refresh_token()
            ));
        }
    }
    lines
}

/// A sandbox serving in the background.
#[derive(Debug)]
pub struct RunningSandbox {
    addr: SocketAddr,
    state: Arc<SandboxState>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Builds the state from `config`, binds `listen` (`127.0.0.1:0` picks a port) and serves.
pub async fn spawn(config: SandboxConfig, listen: SocketAddr) -> anyhow::Result<RunningSandbox> {
    let state = Arc::new(tokio::task::spawn_blocking(move || SandboxState::new(config)).await??);
    spawn_with_state(state, listen).await
}

/// Serves an existing state (e.g. one built with [`SandboxState::from_data_text`]).
pub async fn spawn_with_state(
    state: Arc<SandboxState>,
    listen: SocketAddr,
) -> anyhow::Result<RunningSandbox> {
    let listener = TcpListener::bind(listen).await?;
    let mut addr = listener.local_addr()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let router = app(state.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<ConnHandle>();
        let served = axum::serve(KillableListener(listener), service)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "sandbox server stopped with an error");
        }
    });
    Ok(RunningSandbox {
        addr,
        state,
        stop: Some(stop),
        task,
    })
}

impl RunningSandbox {
    /// `http://127.0.0.1:PORT` (the `QBO_API_BASE_URL`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.base_url())
    }

    /// Realm 1's id (`QBO_REALM_ID`).
    pub fn realm_id(&self) -> &str {
        &self.state.config.realm_id
    }

    pub fn client_id(&self) -> &str {
        &self.state.config.client_id
    }

    pub fn client_secret(&self) -> &str {
        &self.state.config.client_secret
    }

    /// Realm 1's first refresh token (`QBO_REFRESH_TOKEN`).
    pub fn refresh_token(&self) -> &str {
        &self.state.config.refresh_token
    }

    /// Every company's realm id, realm 1 first.
    pub fn realm_ids(&self) -> Vec<&str> {
        self.state.realm_ids()
    }

    /// The first refresh token of the company `realm`.
    pub fn refresh_token_of(&self, realm: &str) -> Option<&str> {
        self.state.refresh_token_of(realm)
    }

    /// The company `realm` (its records, faults, limits, clock, stats and log).
    pub fn realm(&self, realm: &str) -> Option<&Arc<Realm>> {
        self.state.realm(realm)
    }

    /// Shell-sourceable lines pointing a QBO client at this sandbox (see [`env_lines`]).
    pub fn env_lines(&self) -> String {
        env_lines(&self.base_url(), &self.state)
    }

    pub fn state(&self) -> &Arc<SandboxState> {
        &self.state
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

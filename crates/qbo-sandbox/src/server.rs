//! Wiring: [`app`] builds the axum `Router` (token endpoint, v3 API, admin API, behind the
//! fault/log middleware); [`spawn`] binds a socket, serves the router in a tokio task with
//! killable connections, and returns a [`RunningSandbox`] handle with the credentials and URLs
//! a client needs.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::SandboxConfig;
use crate::faults::{ConnHandle, KillableListener, pipeline};
use crate::state::SandboxState;
use crate::{admin, api, oauth};

/// The path of the OAuth 2.0 token endpoint.
pub const TOKEN_PATH: &str = "/oauth2/v1/tokens/bearer";

/// The whole sandbox as a router (usable without a socket; dropping connections then
/// degrades to 503 answers).
pub fn app(state: Arc<SandboxState>) -> Router {
    Router::new()
        .route(TOKEN_PATH, post(oauth::token_endpoint))
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

    pub fn realm_id(&self) -> &str {
        &self.state.config.realm_id
    }

    pub fn client_id(&self) -> &str {
        &self.state.config.client_id
    }

    pub fn client_secret(&self) -> &str {
        &self.state.config.client_secret
    }

    /// The first refresh token the token endpoint accepts.
    pub fn refresh_token(&self) -> &str {
        &self.state.config.refresh_token
    }

    /// Shell-sourceable lines pointing a QBO client at this sandbox.
    pub fn env_lines(&self) -> String {
        format!(
            "QBO_API_BASE_URL={}\nQBO_TOKEN_URL={}\nQBO_CLIENT_ID={}\nQBO_CLIENT_SECRET={}\nQBO_REALM_ID={}\nQBO_REFRESH_TOKEN={}\n",
            self.base_url(),
            self.token_url(),
            self.client_id(),
            self.client_secret(),
            self.realm_id(),
            self.refresh_token()
        )
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

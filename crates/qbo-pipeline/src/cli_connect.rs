//! `qbo-pipeline connect`: connects a company through Intuit's consent page (the OAuth 2.0
//! authorization-code flow) instead of pasting a refresh token.
//!
//! It listens on the redirect URI's loopback address, prints `QBO_CONSENT_URL=` (Intuit's
//! consent page with the client id, scope `com.intuit.quickbooks.accounting`, the redirect
//! URI and a random `state`), and waits for the browser to come back. A callback whose
//! `state` is missing or wrong is answered 400 and ignored (it did not come from this run's
//! consent). With the right one, the code is exchanged at the token endpoint and the
//! company (`realmId`) registered with its refresh token, proved like `realm add` proves
//! one.

use crate::backfill::StopSignal;
use crate::cli_common::install_signal_handlers;
use crate::cli_schedule::{QboFlags, database_settings};
use crate::config::{ProcessEnv, RealmId, Source};
use crate::runtime::usage;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use clap::Args;
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Intuit's consent page.
pub const INTUIT_AUTH_URL: &str = "https://appcenter.intuit.com/connect/oauth2";
/// The scope the pipeline asks for.
pub const SCOPE: &str = "com.intuit.quickbooks.accounting";

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Where Intuit sends the browser back: http on this machine (localhost, 127.0.0.1 or
    /// [::1]); port 0 picks a free one. It must be one of the app's redirect URIs in Intuit's
    /// developer portal.
    #[arg(long, default_value = "http://localhost:8090/callback")]
    pub redirect_uri: String,
    /// Overrides QBO_AUTH_URL (Intuit's consent page).
    #[arg(long)]
    pub auth_url: Option<String>,
    /// Give up after this many seconds without a valid answer from the browser.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub qbo: QboFlags,
}

/// What the browser brought back with the right `state`.
struct Callback {
    result: Result<(String, String), String>,
    reply: oneshot::Sender<Result<String, String>>,
}

struct Listener {
    state: String,
    tx: mpsc::Sender<Callback>,
}

fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    (
        status,
        [
            (axum::http::header::CACHE_CONTROL, "no-store"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'",
            ),
        ],
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head><body><h1>{t}</h1><p>{x}</p></body></html>",
            t = escape(title),
            x = escape(text)
        )),
    )
        .into_response()
}

async fn callback(
    State(l): State<Arc<Listener>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let given = q.get("state").map(String::as_str).unwrap_or("");
    let same = given.len() == l.state.len()
        && given
            .bytes()
            .zip(l.state.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0;
    if !same {
        return page(
            StatusCode::BAD_REQUEST,
            "Not this connection",
            "The state of this answer does not match the consent page this `qbo-pipeline connect` printed; it was ignored. Open the QBO_CONSENT_URL it printed.",
        );
    }
    let result = match (q.get("code"), q.get("realmId"), q.get("error")) {
        (_, _, Some(error)) => Err(format!(
            "Intuit answered {} instead of a code (the consent was refused or failed)",
            qbo_client::printable(error, 60)
        )),
        (Some(code), Some(realm), None) if !code.is_empty() && !realm.is_empty() => {
            Ok((code.clone(), realm.clone()))
        }
        _ => Err("the answer has no code or no realmId".into()),
    };
    let (reply, outcome) = oneshot::channel();
    if l.tx.send(Callback { result, reply }).await.is_err() {
        return page(
            StatusCode::GONE,
            "Already done",
            "This connection is finished.",
        );
    }
    match outcome.await {
        Ok(Ok(text)) => page(StatusCode::OK, "Connected", &text),
        Ok(Err(text)) => page(StatusCode::BAD_GATEWAY, "Not connected", &text),
        Err(_) => page(
            StatusCode::GONE,
            "Already done",
            "This connection is finished.",
        ),
    }
}

/// The redirect URI checked: http, on this machine, with a path; returns it and the address
/// to listen on.
fn check_redirect(text: &str) -> Result<(url::Url, std::net::SocketAddr), String> {
    let url = url::Url::parse(text).map_err(|e| {
        format!(
            "--redirect-uri '{}' is not a URL ({e}): use e.g. http://localhost:8090/callback",
            qbo_client::printable(text, 80)
        )
    })?;
    if url.scheme() != "http" {
        return Err(format!(
            "--redirect-uri must be http:// on this machine (the browser comes back to it here), not {}",
            url.scheme()
        ));
    }
    let ip: std::net::IpAddr = match url.host() {
        Some(url::Host::Domain("localhost")) => [127, 0, 0, 1].into(),
        Some(url::Host::Ipv4(ip)) if ip.is_loopback() => ip.into(),
        Some(url::Host::Ipv6(ip)) if ip.is_loopback() => ip.into(),
        _ => {
            return Err(
                "--redirect-uri must point at this machine: localhost, 127.0.0.1 or [::1]".into(),
            );
        }
    };
    if url.path().len() <= 1 || url.query().is_some() || url.fragment().is_some() {
        return Err(
            "--redirect-uri needs a path and no query or fragment, e.g. http://localhost:8090/callback"
                .into(),
        );
    }
    let port = url.port_or_known_default().unwrap_or(80);
    Ok((url, (ip, port).into()))
}

pub async fn connect(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    let redirect = check_redirect(&args.redirect_uri)
        .map_err(|e| problems.push(e))
        .ok();
    let auth_text = args
        .auth_url
        .clone()
        .or_else(|| {
            ProcessEnv
                .get("QBO_AUTH_URL")
                .filter(|v| !v.trim().is_empty())
        })
        .unwrap_or_else(|| INTUIT_AUTH_URL.to_string());
    let auth_url = url::Url::parse(auth_text.trim())
        .map_err(|e| problems.push(format!("QBO_AUTH_URL is not a URL ({e})")))
        .ok();
    if !(1..=86_400).contains(&args.timeout_secs) {
        problems.push("--timeout-secs must be 1..=86400".into());
    }
    let settings = args.qbo.settings(&mut problems);
    let db = database_settings(&mut problems);
    let (Some((redirect, addr)), Some(mut auth_url), Some((app, http)), Some(db)) =
        (redirect, auth_url, settings, db)
    else {
        return Err(usage(problems));
    };
    if !problems.is_empty() {
        return Err(usage(problems));
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        usage(vec![format!(
            "cannot listen on {addr} for the redirect: {e}"
        )])
    })?;
    let mut redirect = redirect;
    let _ = redirect.set_port(Some(listener.local_addr()?.port()));
    let state: String = (0..32)
        .map(|_| format!("{:x}", rand::random::<u8>() & 0x0f))
        .collect();
    auth_url
        .query_pairs_mut()
        .append_pair("client_id", &app.client_id)
        .append_pair("response_type", "code")
        .append_pair("scope", SCOPE)
        .append_pair("redirect_uri", redirect.as_str())
        .append_pair("state", &state);
    let (tx, mut rx) = mpsc::channel(4);
    let router = axum::Router::new()
        .route(redirect.path(), axum::routing::get(callback))
        .with_state(Arc::new(Listener { state, tx }));
    let stop = StopSignal::default();
    install_signal_handlers(stop.clone());
    let server = tokio::spawn({
        let stop = stop.clone();
        async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.stopped().await })
                .await;
        }
    });
    println!("QBO_CONSENT_URL={auth_url}");
    std::io::stdout().flush().ok();
    eprintln!(
        "open the QBO_CONSENT_URL above in a browser, sign in and pick the company; waiting for Intuit to send it back to {redirect}"
    );
    let deadline = tokio::time::sleep(Duration::from_secs(args.timeout_secs));
    tokio::pin!(deadline);
    let outcome: anyhow::Result<ExitCode> = async {
        let cb = tokio::select! {
            cb = rx.recv() => cb,
            _ = &mut deadline => return Err(anyhow::anyhow!("no answer from the consent page within {} s; run connect again", args.timeout_secs)),
            _ = stop.stopped() => return Err(anyhow::anyhow!("stopped before the company was connected")),
        };
        let Some(cb) = cb else {
            return Err(anyhow::anyhow!("the redirect listener stopped"));
        };
        let (code, realm) = match cb.result {
            Ok(pair) => pair,
            Err(e) => {
                let _ = cb.reply.send(Err(e.clone()));
                return Err(anyhow::anyhow!("{e}; nothing was stored"));
            }
        };
        let realm = match RealmId::parse(&realm) {
            Ok(r) => r,
            Err(e) => {
                let _ = cb.reply.send(Err(e.clone()));
                return Err(anyhow::anyhow!("Intuit's answer names a bad realmId: {e}"));
            }
        };
        let token = match exchange(&app, &http, &code, redirect.as_str()).await {
            Ok(t) => t,
            Err(e) => {
                let _ = cb.reply.send(Err(e.clone()));
                return Err(anyhow::anyhow!("{e}; nothing was stored"));
            }
        };
        let stored =
            crate::cli_realm::prove_and_store(&app, &http, &db, &realm, token, &stop, args.json)
                .await;
        let _ = cb.reply.send(match &stored {
            Ok(_) => Ok(format!(
                "Company {realm} is connected: qbo-pipeline keeps its refresh token. You can close this tab."
            )),
            Err(e) => Err(format!("{e:#}")),
        });
        stored
    }
    .await;
    // Let the browser's page go out, then stop listening.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.stop();
    let _ = server.await;
    outcome
}

/// Exchanges an authorization code for the company's first refresh token.
pub(crate) async fn exchange(
    app: &crate::config::QboApp,
    http: &crate::config::HttpSettings,
    code: &str,
    redirect_uri: &str,
) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Tokens {
        refresh_token: Option<String>,
    }
    let client = qbo_client::token_http_client(http)
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    let answer = client
        .post(app.token_url.clone())
        .basic_auth(&app.client_id, Some(app.client_secret.expose_secret()))
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
        ])
        .send()
        .await
        .map_err(|e| format!("exchanging the code failed: {}", e.without_url()))?;
    let status = answer.status();
    let body = qbo_client::read_body(answer, 64 * 1024)
        .await
        .map_err(|_| "exchanging the code failed: the answer could not be read".to_string())?;
    if !status.is_success() {
        let error = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default();
        return Err(format!(
            "Intuit refused the code (HTTP {}{}): it expired, was used already, or the redirect URI differs",
            status.as_u16(),
            if error.is_empty() {
                String::new()
            } else {
                format!(", {}", qbo_client::printable(&error, 40))
            }
        ));
    }
    serde_json::from_slice::<Tokens>(&body)
        .ok()
        .and_then(|t| t.refresh_token)
        .filter(|t| !t.is_empty() && t.len() <= 4096)
        .ok_or_else(|| "Intuit's answer to the code has no refresh token".to_string())
}

#[cfg(test)]
mod tests {
    use super::check_redirect;

    #[test]
    fn redirects_must_come_back_to_this_machine() {
        let (u, a) = check_redirect("http://localhost:8090/callback").unwrap();
        assert_eq!(
            (u.path(), a.to_string().as_str()),
            ("/callback", "127.0.0.1:8090")
        );
        assert!(check_redirect("http://127.0.0.1:0/cb").is_ok());
        assert!(check_redirect("http://[::1]:9000/cb").is_ok());
        for bad in [
            "https://localhost:8090/callback",
            "http://example.com/callback",
            "http://10.0.0.1:8090/cb",
            "http://localhost:8090/",
            "http://localhost:8090/cb?x=1",
            "not a url",
        ] {
            assert!(check_redirect(bad).is_err(), "{bad}");
        }
    }
}

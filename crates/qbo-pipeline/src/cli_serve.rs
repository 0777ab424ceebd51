//! `qbo-pipeline serve`: the web server ([`crate::web`]) over one runtime, with the scheduler
//! running in the same process unless `--no-scheduler` (a one-process deployment).

use crate::backfill::StopSignal;
use crate::cli_common::{RealmArgs, install_signal_handlers};
use crate::cli_schedule::{QboFlags, database_settings};
use crate::config::{ProcessEnv, Source};
use crate::job::SyncSettings;
use crate::runtime::{Runtime, usage};
use crate::scheduler::{LoopOptions, Scheduler};
use crate::web::{WebOptions, WebState, router};
use clap::Args;
use secrecy::SecretString;
use std::future::IntoFuture;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one. An address that is not loopback needs
    /// QBO_WEB_TOKEN.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Do not run the scheduler in this process.
    #[arg(long)]
    pub no_scheduler: bool,
    /// The scheduler's longest sleep between looks at the triggers (seconds).
    #[arg(long, default_value_t = 30)]
    pub poll_secs: u64,
    /// Where validations started from the dashboard archive their evidence.
    #[arg(long, default_value = "evidence", value_name = "DIR")]
    pub evidence_dir: std::path::PathBuf,
    /// This server's URL as browsers reach it (behind a proxy), e.g. https://qbo.example.com:
    /// the consent flow's redirect URI is <URL>/connect/callback. By default the request's
    /// Host.
    #[arg(long, env = "QBO_WEB_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// An entity with no successful sync for this many hours is shown late.
    #[arg(long, default_value_t = 24)]
    pub late_after_hours: u32,
    #[command(flatten)]
    pub qbo: QboFlags,
    #[command(flatten)]
    pub realm: RealmArgs,
}

/// Shortest `QBO_WEB_TOKEN` accepted.
const MIN_TOKEN: usize = 16;

/// `--listen` and `QBO_WEB_TOKEN`, checked the same way for `serve` and `demo --serve`:
/// every problem goes to `problems`.
pub fn web_settings(
    listen: &str,
    problems: &mut Vec<String>,
) -> (Option<SocketAddr>, Option<SecretString>) {
    let listen_text = listen;
    let listen: Option<SocketAddr> = listen_text
        .parse()
        .map_err(|_| {
            problems.push(format!(
                "--listen '{}' is not an address and port, e.g. 127.0.0.1:8080 (port 0 picks a free one)",
                qbo_client::printable(listen_text, 80)
            ))
        })
        .ok();
    let token = match std::env::var("QBO_WEB_TOKEN") {
        Ok(t) if t.trim().is_empty() => None,
        Ok(t) if t.trim().len() < MIN_TOKEN => {
            problems.push(format!(
                "QBO_WEB_TOKEN is too short: use at least {MIN_TOKEN} random characters (e.g. `openssl rand -hex 24`)"
            ));
            None
        }
        Ok(t) => Some(SecretString::from(t.trim().to_string())),
        Err(_) => None,
    };
    if let Some(addr) = listen
        && !addr.ip().is_loopback()
        && token.is_none()
    {
        problems.push(format!(
            "refusing to serve on {addr}, which other machines can reach, without QBO_WEB_TOKEN: set it (at least {MIN_TOKEN} random characters) or listen on 127.0.0.1"
        ));
    }
    (listen, token)
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut problems = Vec::new();
    let (listen, token) = web_settings(&args.listen, &mut problems);
    if !(1..=3600).contains(&args.poll_secs) {
        problems.push(format!(
            "--poll-secs {} is out of range: use 1..=3600",
            args.poll_secs
        ));
    }
    if !(1..=24 * 366).contains(&args.late_after_hours) {
        problems.push(format!(
            "--late-after-hours {} is out of range: use 1..=8784",
            args.late_after_hours
        ));
    }
    let public_url = args
        .public_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .and_then(|u| match url::Url::parse(u) {
            Ok(p) if matches!(p.scheme(), "http" | "https") && p.host().is_some() => {
                Some(u.trim_end_matches('/').to_string())
            }
            _ => {
                problems.push(format!(
                    "--public-url '{}' is not an http(s) URL, e.g. https://qbo.example.com",
                    qbo_client::printable(u, 80)
                ));
                None
            }
        });
    let auth_text = ProcessEnv
        .get("QBO_AUTH_URL")
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| crate::cli_connect::INTUIT_AUTH_URL.to_string());
    let auth_url = url::Url::parse(auth_text.trim())
        .map_err(|e| problems.push(format!("QBO_AUTH_URL is not a URL ({e})")))
        .ok();
    let settings = args.qbo.settings(&mut problems);
    let db = database_settings(&mut problems);
    let sync = SyncSettings::from_source(&ProcessEnv, &mut problems);
    let selection = args.realm.selection(&mut problems);
    let (Some(listen), Some((app, http)), Some(db), Some(auth_url)) =
        (listen, settings, db, auth_url)
    else {
        return Err(usage(problems));
    };
    if !problems.is_empty() {
        return Err(usage(problems));
    }
    let stop = StopSignal::default();
    install_signal_handlers(stop.clone());
    let listener = bind(listen).await?;
    let runtime = Arc::new(Runtime::open(&db, app, http, 12, stop.clone()).await?);
    let wake = Arc::new(tokio::sync::Notify::new());
    let scheduler = (!args.no_scheduler).then(|| {
        Scheduler::over(runtime.clone(), selection)
            .with_sync(sync)
            .with_wake(wake.clone())
    });
    let opts = WebOptions {
        token,
        scheduler: None,
        wake,
        evidence_dir: args.evidence_dir.clone(),
        auth_url,
        public_url,
        late_after: chrono::Duration::hours(i64::from(args.late_after_hours)),
    };
    run_server(
        runtime,
        listener,
        opts,
        scheduler,
        Duration::from_secs(args.poll_secs),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Binds `listen`; failing to is a usage error (exit 2).
pub(crate) async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| usage(vec![format!("cannot listen on {listen}: {e}")]))
}

/// Serves [`router`] on `listener` over `runtime`, with `scheduler` (when given, built with
/// `opts.wake`) running beside it, until the runtime's stop signal; prints
/// `QBO_WEB_URL=http://ADDR` on stdout once it accepts connections. `opts.scheduler` is set
/// here. Closes the runtime at the end. Used by `serve` and `demo --serve`.
pub(crate) async fn run_server(
    runtime: Arc<Runtime>,
    listener: tokio::net::TcpListener,
    mut opts: WebOptions,
    scheduler: Option<Scheduler>,
    poll: Duration,
) -> anyhow::Result<()> {
    let stop = runtime.stop().clone();
    let alive = Arc::new(AtomicBool::new(scheduler.is_some()));
    opts.scheduler = scheduler.is_some().then(|| alive.clone());
    let state = Arc::new(WebState::new(runtime.clone(), opts));
    let addr = listener.local_addr()?;
    println!("QBO_WEB_URL=http://{addr}");
    std::io::stdout().flush().ok();
    tracing::info!(%addr, scheduler = scheduler.is_some(), "serving");
    let server = axum::serve(listener, router(state)).with_graceful_shutdown({
        let stop = stop.clone();
        async move { stop.stopped().await }
    });
    // The scheduler runs beside the server in this task; both end on the stop signal.
    let scheduling = async {
        if let Some(s) = &scheduler {
            let opts = LoopOptions {
                poll,
                exit_when_idle: false,
            };
            let outcome = s.run(&opts).await;
            alive.store(false, Ordering::Relaxed);
            if let Err(e) = outcome {
                tracing::error!(error = %format!("{e:#}"), "the scheduler stopped");
            }
        }
    };
    let (served, ()) = tokio::join!(server.into_future(), scheduling);
    drop(scheduler);
    if let Ok(runtime) = Arc::try_unwrap(runtime) {
        runtime.close().await;
    }
    served?;
    Ok(())
}

//! The `sandbox` command: [`SandboxArgs`] (clap) → validated [`SandboxConfig`] →
//! [`run_cli`], which serves until Ctrl-C/SIGTERM, printing the `QBO_*=` lines on stdout once
//! the socket accepts connections. Logs go to stderr via `tracing`; secrets never do.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::config::{Faults, Rotation, SandboxConfig};

/// Options of `qbo-pipeline sandbox`.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Seed of the deterministic data generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 200)]
    pub customers: u64,
    #[arg(long, default_value_t = 2000)]
    pub invoices: u64,
    #[arg(long, default_value_t = 100)]
    pub items: u64,
    /// Load records from this JSON file (`{"Customer":[...],...}`) instead of generating.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub realm_id: Option<String>,
    #[arg(long)]
    pub client_id: Option<String>,
    /// Access-token lifetime (`expires_in`).
    #[arg(long, default_value_t = 3600)]
    pub access_token_ttl_secs: u64,
    /// Refresh-token rotation: never, every (each refresh), or a number of seconds.
    #[arg(long, default_value = "every")]
    pub rotation: Rotation,
    /// How long a superseded refresh token keeps working.
    #[arg(long, default_value_t = 86_400)]
    pub refresh_grace_secs: u64,
    /// CDC refuses changedSince older than this many days; 0 disables the check.
    #[arg(long, default_value_t = 30)]
    pub cdc_horizon_days: u64,
    /// Requests per minute per realm (QBO: 500).
    #[arg(long)]
    pub rpm_limit: Option<u32>,
    /// Requests per second per realm (QBO: 10).
    #[arg(long)]
    pub rps_limit: Option<u32>,
    /// Requests in flight per realm (QBO: 10).
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// Share (0..1) of API requests answered 500/503.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Share (0..1) of API requests answered 429.
    #[arg(long, default_value_t = 0.0)]
    pub throttle_rate: f64,
    /// Added latency per API request, milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Share (0..1) of API requests whose connection is closed without a response.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// After each query page, this many records before the page's end are edited.
    #[arg(long, default_value_t = 0)]
    pub mutate_during_paging: u32,
    /// Send `Retry-After` with 429s.
    #[arg(long)]
    pub retry_after_secs: Option<u64>,
}

impl SandboxArgs {
    /// The validated config these options describe.
    pub fn to_config(&self) -> anyhow::Result<SandboxConfig> {
        let defaults = SandboxConfig::default();
        let config = SandboxConfig {
            seed: self.seed,
            customers: self.customers,
            invoices: self.invoices,
            items: self.items,
            data_file: self.data.clone(),
            realm_id: self.realm_id.clone().unwrap_or(defaults.realm_id.clone()),
            client_id: self.client_id.clone().unwrap_or(defaults.client_id.clone()),
            access_token_ttl: Duration::from_secs(self.access_token_ttl_secs),
            rotation: self.rotation,
            refresh_grace: Duration::from_secs(self.refresh_grace_secs),
            cdc_horizon: (self.cdc_horizon_days > 0)
                .then(|| Duration::from_secs(self.cdc_horizon_days * 86_400)),
            faults: Faults {
                rpm_limit: self.rpm_limit,
                rps_limit: self.rps_limit,
                max_in_flight: self.max_in_flight,
                error_rate: self.error_rate,
                throttle_rate: self.throttle_rate,
                latency: Duration::from_millis(self.latency_ms),
                drop_rate: self.drop_rate,
                mutate_during_paging: self.mutate_during_paging,
                retry_after_secs: self.retry_after_secs,
                scripted: Vec::new(),
            },
            ..defaults
        };
        config.validate()?;
        Ok(config)
    }
}

/// Serves a sandbox until Ctrl-C or SIGTERM.
pub async fn run_cli(args: SandboxArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let config = args.to_config()?;
    tracing::info!(
        customers = config.customers,
        invoices = config.invoices,
        items = config.items,
        seed = config.seed,
        data = ?config.data_file,
        "building sandbox data"
    );
    let sandbox = crate::spawn(config, args.listen)
        .await
        .with_context(|| format!("starting the sandbox on {}", args.listen))?;
    {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(sandbox.env_lines().as_bytes())?;
        stdout.flush()?;
    }
    tracing::info!(
        base_url = sandbox.base_url(),
        realm = sandbox.realm_id(),
        "sandbox accepting connections"
    );
    wait_for_signal().await;
    tracing::info!("shutting down");
    sandbox.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SandboxArgs,
    }

    #[test]
    fn flags_become_a_config() {
        let cli = Cli::try_parse_from([
            "x",
            "--customers",
            "5",
            "--invoices",
            "10",
            "--items",
            "3",
            "--rotation",
            "120",
            "--rpm-limit",
            "500",
            "--latency-ms",
            "20",
            "--cdc-horizon-days",
            "0",
        ])
        .unwrap();
        let config = cli.args.to_config().unwrap();
        assert_eq!(config.customers, 5);
        assert_eq!(
            config.rotation,
            Rotation::Interval(Duration::from_secs(120))
        );
        assert_eq!(config.faults.rpm_limit, Some(500));
        assert_eq!(config.faults.latency, Duration::from_millis(20));
        assert_eq!(config.cdc_horizon, None);
        assert_eq!(config.access_token_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn bad_flags_are_rejected() {
        let cli = Cli::try_parse_from(["x", "--error-rate", "2"]).unwrap();
        assert!(cli.args.to_config().is_err());
        assert!(Cli::try_parse_from(["x", "--rotation", "sometimes"]).is_err());
    }
}

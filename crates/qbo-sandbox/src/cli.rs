//! The `sandbox` command: [`SandboxArgs`] (clap) → validated [`SandboxConfig`] →
//! [`run_cli`], which serves until Ctrl-C/SIGTERM, printing the `QBO_*=` lines on stdout once
//! the socket accepts connections (with `--realms N`, N > 1, also `QBO_SANDBOX_REALMS=` and one
//! `QBO_SANDBOX_REFRESH_TOKEN_<realm id>=` line per company). Logs go to stderr via `tracing`;
//! secrets never do.
//!
//! The sandbox has no security of its own (the admin API is unauthenticated, the OAuth
//! credentials are fixed public values), so it listens on loopback addresses only, unless
//! `--allow-remote` is given ([`SandboxArgs::check_listen`]); then it logs a warning saying
//! so. The printed URLs name an address clients can connect to ([`client_addr`]).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::config::{Faults, Rotation, SandboxConfig};
use crate::server::RunningSandbox;

/// Options of `qbo-pipeline sandbox`.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Address to listen on; port 0 picks a free port. Loopback only (127.0.0.0/8, [::1])
    /// unless --allow-remote is given.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Allow a --listen address other machines can reach (0.0.0.0, [::], a LAN address). The
    /// sandbox has no security: its admin API is unauthenticated and its OAuth credentials
    /// are fixed public values, so anyone who can connect can mint tokens and rewrite the data.
    #[arg(long)]
    pub allow_remote: bool,
    /// Seed of the deterministic data generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 200)]
    pub customers: u64,
    #[arg(long, default_value_t = 2000)]
    pub invoices: u64,
    #[arg(long, default_value_t = 100)]
    pub items: u64,
    /// Record count of one entity, `ENTITY=N` (repeatable; QBO names in any case):
    /// `--count Vendor=12 --count Bill=0`. Unnamed entities get the defaults (small fixed
    /// lists; transactions scaled from --invoices). Payment and BillPayment follow the paid
    /// invoices and bills.
    #[arg(long = "count", value_name = "ENTITY=N", value_parser = parse_count)]
    pub counts: Vec<(String, u64)>,
    /// Turn a company feature on (repeatable): multi-currency, inventory, tracking, budgets,
    /// recurring, journal-codes, tax-payments, billable-expenses. The default company has all
    /// but journal-codes and tax-payments.
    #[arg(long = "feature", value_name = "FEATURE", value_parser = parse_feature)]
    pub features_on: Vec<qbo_entities::Feature>,
    /// Turn a company feature off (repeatable); its entities then answer QBO's 5020
    /// Permission Denied fault.
    #[arg(long = "no-feature", value_name = "FEATURE", value_parser = parse_feature)]
    pub features_off: Vec<qbo_entities::Feature>,
    /// Load records from this JSON file (`{"Customer":[...],...}`) instead of generating.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Realm 1's id (the other companies' ids follow it: id + 1, id + 2, ...).
    #[arg(long)]
    pub realm_id: Option<String>,
    /// Serve this many companies (1 to 1000), each with its own books, refresh token, token
    /// chain, limits, faults and stats; printed as QBO_SANDBOX_REALMS and
    /// QBO_SANDBOX_REFRESH_TOKEN_<realm id> lines when more than one.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::config::MAX_REALMS)))]
    pub realms: u32,
    #[arg(long)]
    pub client_id: Option<String>,
    /// Access-token lifetime (`expires_in`).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub access_token_ttl_secs: u64,
    /// Refresh-token rotation: never, every (each refresh), or a number of seconds.
    #[arg(long, default_value = "every")]
    pub rotation: Rotation,
    /// How long a superseded refresh token keeps working.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    pub refresh_grace_secs: u64,
    /// CDC refuses changedSince older than this many days; 0 disables the check.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3650))]
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
    /// Batch requests per minute per realm (QBO: 40).
    #[arg(long)]
    pub batch_rpm_limit: Option<u32>,
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

/// `ENTITY=N`.
fn parse_count(text: &str) -> Result<(String, u64), String> {
    let (name, n) = text
        .split_once('=')
        .ok_or_else(|| format!("expected ENTITY=N, got {text:?}"))?;
    let entity = qbo_entities::by_qbo_name(name.trim())
        .ok_or_else(|| format!("unknown entity {:?}", name.trim()))?;
    let n = n
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("{text:?}: N must be a whole number"))?;
    Ok((entity.qbo_name.to_owned(), n))
}

fn parse_feature(text: &str) -> Result<qbo_entities::Feature, String> {
    qbo_entities::Feature::parse(text)
        .filter(|f| *f != qbo_entities::Feature::Always)
        .ok_or_else(|| {
            let names: Vec<&str> = qbo_entities::Feature::OPTIONAL
                .iter()
                .map(|f| f.as_str())
                .collect();
            format!("unknown feature {text:?} (one of {})", names.join(", "))
        })
}

/// `--listen` names an address other machines may reach, and `--allow-remote` was not given.
/// The user's to fix: `qbo-pipeline` should exit with code 2 on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to listen on {listen}: it is not a loopback address, and the sandbox has no \
     security (its admin API is unauthenticated and its OAuth credentials are fixed public \
     values); listen on 127.0.0.1 or [::1], or pass --allow-remote to expose it anyway"
)]
pub struct RemoteListenRefused {
    pub listen: SocketAddr,
}

/// Whether only this machine can connect to `ip`: 127.0.0.0/8, `::1`, or an IPv4-mapped
/// `::ffff:127.x.y.z`.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The address to tell clients for a sandbox asked to listen on `listen` and bound at
/// `bound`: `bound` itself (the port that port 0 picked included), except for a wildcard
/// (`0.0.0.0`, `::`), which accepts on every interface but is no address to connect to; then
/// the loopback address of the same family, which reaches the sandbox from this machine (see
/// [`wildcard_note`] for the other machines).
pub fn client_addr(listen: SocketAddr, bound: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => bound.ip(),
    };
    SocketAddr::new(ip, bound.port())
}

/// The warning `--allow-remote` earns once the sandbox listens on `bound`, a non-loopback
/// address.
pub fn remote_warning(bound: SocketAddr) -> String {
    format!(
        "--allow-remote: the sandbox listens on {bound}, which other machines may reach. It \
         has NO security: its admin API (/admin/...) is unauthenticated, so anyone who can \
         connect can change faults, edit or delete records and revoke tokens, and the OAuth \
         client id, client secret and refresh token printed on stdout are fixed public \
         values, so anyone can get an access token. Expose it only on a network you trust, \
         and never with real books loaded through --data."
    )
}

/// The note for a wildcard `bound` (`0.0.0.0:PORT`, `[::]:PORT`) whose printed URLs name
/// `client` (a loopback address, see [`client_addr`]).
pub fn wildcard_note(bound: SocketAddr, client: SocketAddr) -> String {
    let host = match client.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    format!(
        "{bound} accepts connections on every interface: QBO_API_BASE_URL and QBO_TOKEN_URL \
         name {host}, which reaches the sandbox from this machine only; on another machine, \
         replace {host} with an address of this machine that it can reach (port {port})",
        port = client.port()
    )
}

/// A sandbox serving in the background, and what a client needs to reach it.
#[derive(Debug)]
pub struct Started {
    pub sandbox: RunningSandbox,
    /// `http://HOST:PORT` with HOST from [`client_addr`] (the `QBO_API_BASE_URL`).
    pub base_url: String,
    /// The shell-sourceable `QBO_*=` lines, one per line ([`crate::env_lines`]).
    pub env_lines: String,
}

/// Checks `args` (the listen address first, before any work), builds the data, binds and
/// serves in the background; logs the `--allow-remote` warning and the wildcard note.
pub async fn start(args: &SandboxArgs) -> anyhow::Result<Started> {
    args.check_listen()?;
    let config = args.to_config()?;
    tracing::info!(
        customers = config.customers,
        invoices = config.invoices,
        items = config.items,
        seed = config.seed,
        realms = config.realms,
        data = ?config.data_file,
        "building sandbox data"
    );
    let sandbox = crate::spawn(config, args.listen)
        .await
        .with_context(|| format!("starting the sandbox on {}", args.listen))?;
    // `spawn` reports a wildcard bind as 127.0.0.1; the socket's real address is the one asked
    // for, with the port it got.
    let bound = SocketAddr::new(args.listen.ip(), sandbox.addr().port());
    let client = client_addr(args.listen, sandbox.addr());
    if !is_loopback(bound.ip()) {
        tracing::warn!("{}", remote_warning(bound));
    }
    if bound.ip().is_unspecified() {
        tracing::warn!("{}", wildcard_note(bound, client));
    }
    let base_url = format!("http://{client}");
    let env_lines = crate::server::env_lines(&base_url, sandbox.state());
    Ok(Started {
        sandbox,
        base_url,
        env_lines,
    })
}

impl SandboxArgs {
    /// `--listen` against `--allow-remote`: a non-loopback address needs the flag.
    pub fn check_listen(&self) -> Result<(), RemoteListenRefused> {
        if self.allow_remote || is_loopback(self.listen.ip()) {
            Ok(())
        } else {
            Err(RemoteListenRefused {
                listen: self.listen,
            })
        }
    }

    /// The validated config these options describe.
    pub fn to_config(&self) -> anyhow::Result<SandboxConfig> {
        let defaults = SandboxConfig::default();
        let mut features = defaults.features.clone();
        features.extend(self.features_on.iter().copied());
        for f in &self.features_off {
            features.remove(f);
        }
        let config = SandboxConfig {
            seed: self.seed,
            customers: self.customers,
            invoices: self.invoices,
            items: self.items,
            counts: self.counts.iter().cloned().collect(),
            features,
            data_file: self.data.clone(),
            realm_id: self.realm_id.clone().unwrap_or(defaults.realm_id.clone()),
            client_id: self.client_id.clone().unwrap_or(defaults.client_id.clone()),
            access_token_ttl: Duration::from_secs(self.access_token_ttl_secs),
            rotation: self.rotation,
            refresh_grace: Duration::from_secs(self.refresh_grace_secs),
            cdc_horizon: (self.cdc_horizon_days > 0)
                .then(|| Duration::from_secs(self.cdc_horizon_days * 86_400)),
            realms: self.realms,
            faults: Faults {
                rpm_limit: self.rpm_limit,
                rps_limit: self.rps_limit,
                max_in_flight: self.max_in_flight,
                batch_rpm_limit: self.batch_rpm_limit,
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

/// Serves a sandbox until Ctrl-C or SIGTERM. Fails at once, with [`RemoteListenRefused`],
/// on a non-loopback `--listen` without `--allow-remote`.
pub async fn run_cli(args: SandboxArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let started = start(&args).await?;
    {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(started.env_lines.as_bytes())?;
        stdout.flush()?;
    }
    tracing::info!(
        base_url = started.base_url,
        realm = started.sandbox.realm_id(),
        "sandbox accepting connections"
    );
    wait_for_signal().await;
    tracing::info!("shutting down");
    started.sandbox.shutdown().await;
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
    use crate::server::TOKEN_PATH;
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
    fn counts_and_features_become_a_config() {
        let config = args(&[
            "--count",
            "vendor=7",
            "--count",
            "Bill=0",
            "--feature",
            "journal-codes",
            "--no-feature",
            "multicurrency",
        ])
        .to_config()
        .unwrap();
        assert_eq!(config.counts.get("Vendor"), Some(&7));
        assert_eq!(config.counts.get("Bill"), Some(&0));
        assert!(
            config
                .features
                .contains(&qbo_entities::Feature::JournalCodes)
        );
        assert!(
            !config
                .features
                .contains(&qbo_entities::Feature::MultiCurrency)
        );
        let cli = Cli::try_parse_from(["x", "--count", "Vendr=3"]);
        assert!(cli.is_err());
        let cli = Cli::try_parse_from(["x", "--feature", "payroll"]);
        assert!(cli.is_err());
        let refused = args(&["--count", "Payment=5"]).to_config();
        assert!(refused.is_err());
    }

    fn args(flags: &[&str]) -> SandboxArgs {
        let argv = ["x", "--customers", "3", "--items", "2", "--invoices", "5"];
        Cli::try_parse_from(argv.iter().chain(flags))
            .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
            .args
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn listen_is_loopback_only_unless_allow_remote() {
        for listen in [
            "127.0.0.1:0",
            "127.0.0.1:8080",
            "127.45.6.7:0",
            "[::1]:0",
            "[::ffff:127.0.0.1]:0",
        ] {
            assert_eq!(
                args(&["--listen", listen]).check_listen(),
                Ok(()),
                "{listen}"
            );
        }
        assert_eq!(args(&[]).check_listen(), Ok(()), "the default");
        for listen in [
            "0.0.0.0:0",
            "0.0.0.0:8080",
            "[::]:0",
            "192.168.1.5:8080",
            "10.0.0.1:0",
            "192.0.2.1:0",
            "[fe80::1]:0",
            "[2001:db8::1]:0",
            "[::ffff:10.0.0.1]:0",
        ] {
            let refused = args(&["--listen", listen]).check_listen();
            assert_eq!(
                refused,
                Err(RemoteListenRefused {
                    listen: addr(listen)
                }),
                "{listen}"
            );
            let message = refused.unwrap_err().to_string();
            assert!(message.contains("--allow-remote"), "{message}");
            assert!(message.contains(&addr(listen).to_string()), "{message}");
            assert_eq!(
                args(&["--listen", listen, "--allow-remote"]).check_listen(),
                Ok(()),
                "{listen}"
            );
        }
    }

    /// `run_cli` on a non-loopback address fails at once with [`RemoteListenRefused`]
    /// (before this check it bound the address, or tried to, and served until a signal).
    #[tokio::test]
    async fn run_cli_refuses_a_remote_listen_address() {
        // 192.0.2.1 is TEST-NET-1 (documentation only): no socket can be bound on it, so
        // nothing listens even where the check is missing.
        for listen in ["192.0.2.1:0", "0.0.0.0:0", "[::]:0"] {
            let outcome = tokio::time::timeout(
                Duration::from_secs(10),
                run_cli(args(&["--listen", listen])),
            )
            .await
            .unwrap_or_else(|_| panic!("{listen}: still serving after 10 s"));
            let error = outcome.expect_err(listen);
            assert_eq!(
                error.downcast_ref::<RemoteListenRefused>(),
                Some(&RemoteListenRefused {
                    listen: addr(listen)
                }),
                "{listen}: {error:#}"
            );
        }
    }

    #[test]
    fn client_addresses() {
        let cases = [
            ("127.0.0.1:0", "127.0.0.1:41000", "127.0.0.1:41000"),
            ("[::1]:0", "[::1]:41000", "[::1]:41000"),
            // `spawn` reports a wildcard as 127.0.0.1: the family comes from `listen`.
            ("0.0.0.0:0", "127.0.0.1:41000", "127.0.0.1:41000"),
            ("[::]:8080", "127.0.0.1:8080", "[::1]:8080"),
            ("192.168.1.5:0", "192.168.1.5:41000", "192.168.1.5:41000"),
            (
                "[2001:db8::1]:9000",
                "[2001:db8::1]:9000",
                "[2001:db8::1]:9000",
            ),
        ];
        for (listen, bound, client) in cases {
            assert_eq!(
                client_addr(addr(listen), addr(bound)),
                addr(client),
                "{listen}"
            );
        }
        let note = wildcard_note(addr("[::]:8080"), addr("[::1]:8080"));
        assert!(note.starts_with("[::]:8080 accepts connections on every interface"));
        assert!(
            note.contains("replace [::1] with an address of this machine"),
            "{note}"
        );
    }

    /// Log lines written while the returned guard lives, on this thread.
    fn capture_logs() -> (
        std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        tracing::subscriber::DefaultGuard,
    ) {
        struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("log buffer").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn logged(logs: &std::sync::Mutex<Vec<u8>>) -> String {
        String::from_utf8_lossy(&logs.lock().expect("log buffer")).into_owned()
    }

    /// The `QBO_*=` lines, as `source` would read them.
    fn env(lines: &str) -> std::collections::HashMap<String, String> {
        lines
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// A refresh with the printed credentials at the printed token URL: whether it succeeds.
    async fn refresh_works(lines: &str) -> bool {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let vars = env(lines);
        let http = reqwest::Client::builder().build().expect("reqwest client");
        let response = http
            .post(&vars["QBO_TOKEN_URL"])
            .basic_auth(&vars["QBO_CLIENT_ID"], Some(&vars["QBO_CLIENT_SECRET"]))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", vars["QBO_REFRESH_TOKEN"].as_str()),
            ])
            .send()
            .await
            .expect("the token URL answers");
        response.status() == reqwest::StatusCode::OK
    }

    #[tokio::test]
    async fn loopback_start_prints_its_address_and_warns_of_nothing() {
        let (logs, _guard) = capture_logs();
        let started = start(&args(&["--listen", "127.0.0.1:0"]))
            .await
            .expect("starts");
        let port = started.sandbox.addr().port();
        assert_ne!(port, 0);
        assert_eq!(started.base_url, format!("http://127.0.0.1:{port}"));
        assert_eq!(started.env_lines, started.sandbox.env_lines());
        assert!(refresh_works(&started.env_lines).await);
        let logs = logged(&logs);
        assert!(!logs.contains("WARN"), "{logs}");
        started.sandbox.shutdown().await;
    }

    /// `--allow-remote` on the wildcard: it serves, warns loudly, and the printed URLs (with
    /// the port it got) work from this machine.
    #[tokio::test]
    async fn allow_remote_warns_and_prints_a_reachable_address() {
        let (logs, _guard) = capture_logs();
        let started = start(&args(&["--listen", "0.0.0.0:0", "--allow-remote"]))
            .await
            .expect("starts");
        let port = started.sandbox.addr().port();
        let vars = env(&started.env_lines);
        assert_eq!(vars["QBO_API_BASE_URL"], format!("http://127.0.0.1:{port}"));
        assert_eq!(
            vars["QBO_TOKEN_URL"],
            format!("http://127.0.0.1:{port}{TOKEN_PATH}")
        );
        assert_eq!(vars["QBO_REFRESH_TOKEN"], started.sandbox.refresh_token());
        assert!(refresh_works(&started.env_lines).await);
        let logs = logged(&logs);
        let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 2, "{logs}");
        assert!(
            warnings[0].contains(&format!("the sandbox listens on 0.0.0.0:{port}"))
                && warnings[0].contains("unauthenticated")
                && warnings[0].contains("fixed public"),
            "{logs}"
        );
        assert!(
            warnings[1].contains(&format!("0.0.0.0:{port} accepts connections on every"))
                && warnings[1].contains("replace 127.0.0.1"),
            "{logs}"
        );
        started.sandbox.shutdown().await;
    }

    #[test]
    fn bad_flags_are_rejected() {
        let cli = Cli::try_parse_from(["x", "--error-rate", "2"]).unwrap();
        assert!(cli.args.to_config().is_err());
        assert!(Cli::try_parse_from(["x", "--rotation", "sometimes"]).is_err());
        for realms in ["0", "1001", "-1", "many"] {
            assert!(
                Cli::try_parse_from(["x", "--realms", realms]).is_err(),
                "{realms}"
            );
        }
        let cli =
            Cli::try_parse_from(["x", "--realms", "1000", "--batch-rpm-limit", "40"]).unwrap();
        let config = cli.args.to_config().unwrap();
        assert_eq!(config.realms, 1000);
        assert_eq!(config.faults.batch_rpm_limit, Some(40));
    }

    /// `--realms 3`: the six lines describe realm 1 as before, then the company list and one
    /// refresh-token line per company; every printed token refreshes at the printed URL.
    #[tokio::test]
    async fn realms_print_every_company_and_its_token() {
        let started = start(&args(&["--realms", "3"])).await.expect("starts");
        let lines = &started.env_lines;
        assert_eq!(lines, &started.sandbox.env_lines());
        let vars = env(lines);
        let ids: Vec<&str> = vars["QBO_SANDBOX_REALMS"].split(',').collect();
        assert_eq!(ids, started.sandbox.realm_ids());
        assert_eq!(ids[0], vars["QBO_REALM_ID"]);
        let keys: Vec<&str> = lines
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys[..7],
            [
                "QBO_API_BASE_URL",
                "QBO_TOKEN_URL",
                "QBO_CLIENT_ID",
                "QBO_CLIENT_SECRET",
                "QBO_REALM_ID",
                "QBO_REFRESH_TOKEN",
                "QBO_SANDBOX_REALMS"
            ]
        );
        assert_eq!(keys.len(), 10);
        assert_eq!(
            vars[&format!("QBO_SANDBOX_REFRESH_TOKEN_{}", ids[0])],
            vars["QBO_REFRESH_TOKEN"]
        );
        for id in &ids {
            let token = &vars[&format!("QBO_SANDBOX_REFRESH_TOKEN_{id}")];
            assert_eq!(Some(token.as_str()), started.sandbox.refresh_token_of(id));
            let mut one = vars.clone();
            one.insert("QBO_REFRESH_TOKEN".into(), token.clone());
            let text: String = one.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            assert!(refresh_works(&text).await, "{id}");
        }
        started.sandbox.shutdown().await;
        // One company: exactly the six lines.
        let single = start(&args(&[])).await.expect("starts");
        assert_eq!(single.env_lines.lines().count(), 6);
        assert!(!single.env_lines.contains("QBO_SANDBOX_"));
        single.sandbox.shutdown().await;
    }
}

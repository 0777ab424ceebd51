//! A private, throwaway PostgreSQL server for zero-configuration runs.
//!
//! # What it owns
//!
//! [`PrivatePostgres`] owns one temporary directory (`/tmp/qbo-pg-XXXXXX`) and one `postgres`
//! server process started from the system's PostgreSQL binaries. The directory holds the
//! cluster (`data/`), the server's Unix socket and lock files, and the server log
//! (`postgres.log`). When the value is stopped ([`PrivatePostgres::stop`]) or dropped, the
//! server is shut down and the directory is deleted.
//!
//! # Why it exists
//!
//! `qbo-pipeline demo` must work with no configuration at all. When `DATABASE_URL` is unset
//! the demo starts one of these for the duration of the run. Embedded-PostgreSQL crates do
//! not work on our machines (they download binaries; there is no network), so this module
//! drives the binaries that the `postgresql` package installs.
//!
//! # How it works
//!
//! 1. [`find_bindir`] locates `initdb` and `postgres`: `pg_config --bindir`, else the highest
//!    version `/usr/lib/postgresql/*/bin` holding both, else `$PATH`.
//! 2. A short temporary directory is created (Unix socket paths are limited to ~107 bytes),
//!    mode 0700. `initdb` and `postgres` refuse to run as root, so when we are root the
//!    directory is chowned to the `postgres` system user and both programs run as that user
//!    (`CommandExt::uid`/`gid`); otherwise they run as the current user.
//! 3. `initdb --auth-local=trust --auth-host=reject -N -E UTF8 --no-locale -U postgres` creates
//!    the cluster (`-N`: no fsync; the data is disposable).
//! 4. `postgres` is started with **no TCP listener** (`listen_addresses=''`): its only way in is
//!    the Unix socket `.s.PGSQL.5432` in the temporary directory (`-k`), created with mode 0700
//!    (`unix_socket_permissions`). The port number only names the socket file, so there is
//!    nothing to pick and nothing another process can take. Durability is switched off.
//!    Readiness is polled every 20 ms with a real sqlx connection over the socket; if the
//!    server dies or does not come up in time, the error carries the tail of its log.
//!    [`PrivatePostgres::url`] is a socket URL
//!    (`postgres://postgres@localhost/postgres?host=<dir>&port=5432&sslmode=disable`).
//! 5. Stopping sends SIGINT (PostgreSQL's "fast shutdown"), waits for the exit, and deletes the
//!    directory. `Drop` does the same synchronously (bounded wait, SIGKILL as a last resort).
//!
//! # Who can connect, and why `trust` is safe here
//!
//! The database superuser logs in without a password (`trust`), and a database superuser can
//! run programs as the server's OS user (`COPY ... TO PROGRAM`). That is only acceptable
//! because nobody but that OS user can reach the server:
//!
//! - there is no TCP socket at all, and `host` lines of `pg_hba.conf` say `reject` besides;
//! - the socket sits in a directory of mode 0700 owned by the server's OS user, and the socket
//!   itself is mode 0700, so other users cannot even open it. Root can (it bypasses file
//!   permissions), which is how we connect when we run as root and the server as `postgres`.
//!
//! So whoever can connect is the server's OS user or root already, and gains nothing. (As
//! root, other processes of the `postgres` system user, such as the machine's own PostgreSQL,
//! can reach the socket too; they run as that user already.) Password or `peer`
//! authentication would add nothing: `peer` would also refuse us when our OS user name is not
//! `postgres`.
//!
//! # If our process dies without running `Drop`
//!
//! The server runs in its own process group (a terminal Ctrl-C goes to us, not to it, so the
//! demo can shut down in order) and with a parent-death signal: if our process is killed,
//! the kernel sends the server SIGINT. The parent-death signal is tied to the *thread* that
//! spawned the server, so the server is spawned from a small dedicated thread that lives
//! exactly as long as the server does. The directory such a run leaves behind is removed by
//! the next [`PrivatePostgres::start`], which deletes `qbo-pg-*` directories whose owning
//! process and server are both gone (each directory records its owner's pid in
//! `owner.pid`).

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, geteuid};
use sqlx::{Connection, PgConnection};

/// Database superuser created by `initdb -U`, and the system user we run as when root.
const SUPERUSER: &str = "postgres";
/// Where Debian/Ubuntu install versioned server binaries (`<root>/<version>/bin`).
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";
/// Prefix of our temporary directories (also what the stale-directory sweep looks for).
const DIR_PREFIX: &str = "qbo-pg-";
/// File in the temporary directory holding the pid of the process that owns it.
const OWNER_FILE: &str = "owner.pid";
/// Server log file in the temporary directory.
const LOG_FILE: &str = "postgres.log";
/// Longest temporary base directory we accept before falling back to `/tmp`, so that
/// `<base>/qbo-pg-XXXXXX/.s.PGSQL.5432` stays well under the ~107-byte socket path limit.
const MAX_TEMP_BASE_LEN: usize = 64;
/// The server's `port`. With no TCP listener it only names the socket file
/// (`.s.PGSQL.5432`), which lives in our private directory: it cannot clash with anything.
const SOCKET_PORT: u16 = 5432;

const POLL_INTERVAL: Duration = Duration::from_millis(20);
const START_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const DROP_STOP_TIMEOUT: Duration = Duration::from_secs(10);
const KILL_WAIT_TIMEOUT: Duration = Duration::from_secs(5);
const LOG_TAIL_LINES: usize = 25;

/// Why a private PostgreSQL could not be started or stopped. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PgTempError {
    #[error(
        "the PostgreSQL server programs (initdb and postgres) were not found (looked in: \
         {searched}). Install them with `apt-get install -y postgresql` (Debian/Ubuntu), or set \
         DATABASE_URL to an existing PostgreSQL server"
    )]
    BinariesNotFound { searched: String },

    #[error(
        "running as root, but there is no `postgres` system user to run a private PostgreSQL \
         as (initdb and postgres refuse to run as root). Install the server package, which \
         creates that user (`apt-get install -y postgresql` on Debian/Ubuntu), run as a \
         non-root user, or set DATABASE_URL to an existing PostgreSQL server"
    )]
    NoPostgresUser,

    #[error("could not {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },

    #[error(
        "initdb ({program}) failed with {status} while creating a private PostgreSQL cluster; \
         set DATABASE_URL to use an existing server instead. Its output ends with:\n{output}"
    )]
    Initdb {
        program: PathBuf,
        status: ExitStatus,
        output: String,
    },

    #[error(
        "the private PostgreSQL server ({program}) exited with {status} while starting; set \
         DATABASE_URL to use an existing server instead. Its log ends with:\n{log}"
    )]
    ServerExited {
        program: PathBuf,
        status: ExitStatus,
        log: String,
    },

    #[error(
        "the private PostgreSQL server did not accept connections on its socket {} within \
         {waited:?} (last attempt: {last_error}); the machine may be overloaded, or set \
         DATABASE_URL to use an existing server instead. Its log ends with:\n{log}",
        socket.display()
    )]
    StartTimeout {
        socket: PathBuf,
        waited: Duration,
        last_error: String,
        log: String,
    },

    #[error("could not send {signal} to the private PostgreSQL server (pid {pid}): {source}")]
    Signal {
        signal: Signal,
        pid: i32,
        #[source]
        source: Errno,
    },
}

fn io_error(action: impl Into<String>) -> impl FnOnce(io::Error) -> PgTempError {
    move |source| PgTempError::Io {
        action: action.into(),
        source,
    }
}

/// A running private PostgreSQL server and the temporary directory it lives in.
///
/// Connect with [`url`](Self::url). Call [`stop`](Self::stop) to shut it down and see errors;
/// dropping it also shuts it down and removes the directory (best effort).
pub struct PrivatePostgres {
    dir_path: PathBuf,
    bindir: PathBuf,
    // Field order matters: the server must be stopped (dropped) before its directory is removed.
    server: Option<Server>,
    dir: Option<tempfile::TempDir>,
}

impl fmt::Debug for PrivatePostgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivatePostgres")
            .field("dir", &self.dir_path)
            .field("bindir", &self.bindir)
            .field("pid", &self.server.as_ref().map(|s| s.child.id()))
            .finish()
    }
}

impl PrivatePostgres {
    /// Creates a fresh cluster in a new temporary directory and starts a server that listens
    /// only on a Unix socket in that directory. Returns once the server accepts connections
    /// (typically about 1 s).
    pub async fn start() -> Result<Self, PgTempError> {
        let started = Instant::now();
        let bindir = find_bindir()?;
        let run_as = run_as()?;

        let base = temp_base(run_as.is_some());
        sweep_stale_dirs(&base);
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in(&base)
            .map_err(io_error(format!(
                "create a temporary directory in {}",
                base.display()
            )))?;
        let dir_path = dir.path().to_path_buf();
        // Only the server's user (and root) may reach its socket and files: see the module docs.
        fs::set_permissions(&dir_path, fs::Permissions::from_mode(0o700)).map_err(io_error(
            format!("restrict access to {}", dir_path.display()),
        ))?;
        let owner_file = dir_path.join(OWNER_FILE);
        fs::write(&owner_file, std::process::id().to_string())
            .map_err(io_error(format!("write {}", owner_file.display())))?;
        if let Some(user) = run_as {
            std::os::unix::fs::chown(&dir_path, Some(user.uid), Some(user.gid)).map_err(
                io_error(format!(
                    "give {} to the `{SUPERUSER}` user",
                    dir_path.display()
                )),
            )?;
        }

        let mut pg = PrivatePostgres {
            dir_path,
            bindir,
            server: None,
            dir: Some(dir),
        };
        pg.initdb(run_as).await?;

        pg.server = Some(pg.spawn_server(run_as)?);
        pg.wait_until_ready().await?;
        tracing::info!(
            dir = %pg.dir_path.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "private PostgreSQL started"
        );
        Ok(pg)
    }

    /// A URL for the server's Unix socket, as the superuser `postgres`:
    /// `postgres://postgres@localhost/postgres?host=<dir>&port=5432&sslmode=disable`
    /// (the directory percent-encoded). `host` is the socket directory; `localhost` is a
    /// placeholder no connection uses. The port is explicit so that `PGPORT` cannot change
    /// the socket file name.
    pub fn url(&self) -> String {
        url_for(&self.dir_path)
    }

    /// The server's Unix socket (`<dir>/.s.PGSQL.5432`), its only way in.
    pub fn socket_path(&self) -> PathBuf {
        self.dir_path.join(format!(".s.PGSQL.{SOCKET_PORT}"))
    }

    /// The temporary directory holding the cluster (`data/`), the socket and `postgres.log`.
    /// Mode 0700, owned by the OS user the server runs as. It is deleted when the server is
    /// stopped or dropped.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Shuts the server down (SIGINT, "fast shutdown"; SIGKILL if it has not exited after
    /// 30 s), waits for it to exit, and deletes the temporary directory.
    pub async fn stop(mut self) -> Result<(), PgTempError> {
        if let Some(mut server) = self.server.take() {
            server.shutdown().await?;
        }
        if let Some(dir) = self.dir.take() {
            dir.close().map_err(io_error(format!(
                "remove the temporary directory {}",
                self.dir_path.display()
            )))?;
        }
        tracing::info!(dir = %self.dir_path.display(), "private PostgreSQL stopped");
        Ok(())
    }

    async fn initdb(&self, run_as: Option<RunAs>) -> Result<(), PgTempError> {
        let program = self.bindir.join("initdb");
        let mut cmd = tokio::process::Command::new(&program);
        cmd.arg("-D")
            .arg(self.dir_path.join("data"))
            // Trust on the private socket only (see the module docs); TCP is refused even if
            // it were ever enabled.
            .args([
                "--auth-local=trust",
                "--auth-host=reject",
                "-N",
                "-E",
                "UTF8",
                "--no-locale",
                "-U",
                SUPERUSER,
            ])
            .current_dir(&self.dir_path)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(user) = run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        let output = cmd
            .output()
            .await
            .map_err(io_error(format!("run {}", program.display())))?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Err(PgTempError::Initdb {
            program,
            status: output.status,
            output: tail(&text, LOG_TAIL_LINES),
        })
    }

    fn spawn_server(&self, run_as: Option<RunAs>) -> Result<Server, PgTempError> {
        let program = self.bindir.join("postgres");
        let log_path = self.dir_path.join(LOG_FILE);
        let log = fs::File::create(&log_path)
            .map_err(io_error(format!("create {}", log_path.display())))?;
        let log_for_stdout = log
            .try_clone()
            .map_err(io_error(format!("duplicate {}", log_path.display())))?;

        let mut cmd = std::process::Command::new(&program);
        cmd.arg("-D")
            .arg(self.dir_path.join("data"))
            .arg("-p")
            .arg(SOCKET_PORT.to_string())
            .arg("-k")
            .arg(&self.dir_path)
            .args([
                // No TCP listener at all: the socket in our private directory is the only way in.
                "-c",
                "listen_addresses=",
                "-c",
                "unix_socket_permissions=0700",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .current_dir(&self.dir_path)
            .stdin(Stdio::null())
            .stdout(log_for_stdout)
            .stderr(log)
            // Own process group: a terminal Ctrl-C reaches us, and we stop the server in order.
            .process_group(0);
        if let Some(user) = run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only makes two
        // async-signal-safe system calls (prctl, getppid); it allocates nothing and takes no
        // locks. It runs after std has switched uid/gid, which matters because changing
        // credentials clears the parent-death signal.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGINT)?;
                // If we died between fork and prctl, nobody will send the signal: don't start.
                if nix::unistd::getppid().as_raw() as u32 != parent {
                    return Err(io::Error::other("parent process exited"));
                }
                Ok(())
            });
        }
        spawn_from_parent_thread(cmd).map_err(io_error(format!("start {}", program.display())))
    }

    /// Polls until the server answers a query on its socket, it exits, or [`START_TIMEOUT`].
    async fn wait_until_ready(&mut self) -> Result<(), PgTempError> {
        let started = Instant::now();
        let url = self.url();
        let socket = self.socket_path();
        let log_path = self.dir_path.join(LOG_FILE);
        let program = self.bindir.join("postgres");
        let server = self
            .server
            .as_mut()
            .expect("wait_until_ready is called right after spawn_server");
        loop {
            match server.child.try_wait() {
                Ok(Some(status)) => {
                    return Err(PgTempError::ServerExited {
                        program,
                        status,
                        log: log_tail(&log_path),
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(PgTempError::Io {
                        action: "check on the private PostgreSQL server process".into(),
                        source: e,
                    });
                }
            }
            // Only our server can have created a socket in our private directory, so whatever
            // answers is ours.
            let last_error =
                match tokio::time::timeout(CONNECT_ATTEMPT_TIMEOUT, answers_a_query(&url)).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {CONNECT_ATTEMPT_TIMEOUT:?}"),
                };
            if started.elapsed() >= START_TIMEOUT {
                return Err(PgTempError::StartTimeout {
                    socket,
                    waited: started.elapsed(),
                    last_error,
                    log: log_tail(&log_path),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// Connects once and runs `SELECT 1`.
async fn answers_a_query(url: &str) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::query("SELECT 1").execute(&mut conn).await?;
    let _ = conn.close().await;
    Ok(())
}

/// The socket URL of a server whose socket directory is `dir` (see [`PrivatePostgres::url`]).
fn url_for(dir: &Path) -> String {
    let mut url = url::Url::parse(&format!("postgres://{SUPERUSER}@localhost/postgres"))
        .expect("a constant URL");
    url.query_pairs_mut()
        .append_pair("host", &dir.to_string_lossy())
        .append_pair("port", &SOCKET_PORT.to_string())
        .append_pair("sslmode", "disable");
    url.into()
}

/// The user `initdb` and `postgres` run as when we are root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// `None` when not root (run as ourselves); the `postgres` user when root.
fn run_as() -> Result<Option<RunAs>, PgTempError> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name(SUPERUSER) {
        Ok(Some(user)) => Ok(Some(RunAs {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })),
        Ok(None) => Err(PgTempError::NoPostgresUser),
        Err(errno) => Err(PgTempError::Io {
            action: format!("look up the `{SUPERUSER}` user"),
            source: errno.into(),
        }),
    }
}

/// Base directory for our temporary directory: `$TMPDIR` when it is short enough for socket
/// paths (and UTF-8, as the socket URL needs), else `/tmp`. As root always `/tmp`: the
/// `postgres` user must be able to reach it.
fn temp_base(as_root: bool) -> PathBuf {
    let env = std::env::temp_dir();
    if !as_root
        && env.is_absolute()
        && env.to_str().is_some()
        && env.as_os_str().len() <= MAX_TEMP_BASE_LEN
    {
        env
    } else {
        PathBuf::from("/tmp")
    }
}

/// The last lines of the server log, or a note that it is empty or unreadable.
fn log_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) if bytes.is_empty() => "(the log is empty)".to_owned(),
        Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), LOG_TAIL_LINES),
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Finding the binaries

/// Finds the directory holding the PostgreSQL server programs (`initdb` and `postgres`):
/// `pg_config --bindir` if it has them, else the highest-version `/usr/lib/postgresql/*/bin`
/// that has them, else the first `$PATH` entry that has them.
pub fn find_bindir() -> Result<PathBuf, PgTempError> {
    let from_pg_config = pg_config_bindir();
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    find_bindir_in(
        from_pg_config.as_deref(),
        &[Path::new(DEBIAN_ROOT)],
        &path_dirs,
    )
}

/// `pg_config --bindir`, if `pg_config` runs and prints something.
fn pg_config_bindir() -> Option<PathBuf> {
    let output = std::process::Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    (output.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

/// [`find_bindir`] over explicit candidates: the `pg_config` answer, roots laid out as
/// `<root>/<version>/bin` (highest version wins), then plain directories in order.
fn find_bindir_in(
    pg_config: Option<&Path>,
    versioned_roots: &[&Path],
    plain_dirs: &[PathBuf],
) -> Result<PathBuf, PgTempError> {
    if let Some(dir) = pg_config.filter(|dir| is_server_bindir(dir)) {
        return Ok(dir.to_path_buf());
    }

    let mut versioned: Vec<(Vec<u32>, PathBuf)> = versioned_roots
        .iter()
        .filter_map(|root| fs::read_dir(root).ok())
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = parse_version(entry.file_name().to_str()?)?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| is_server_bindir(bin))
        .collect();
    versioned.sort();
    if let Some((_, bin)) = versioned.pop() {
        return Ok(bin);
    }

    if let Some(dir) = plain_dirs.iter().find(|dir| is_server_bindir(dir)) {
        return Ok(dir.clone());
    }

    let mut searched = Vec::new();
    match pg_config {
        Some(dir) => searched.push(format!("`pg_config --bindir` ({})", dir.display())),
        None => searched.push("`pg_config --bindir` (no pg_config)".to_owned()),
    }
    for root in versioned_roots {
        searched.push(format!("{}/*/bin", root.display()));
    }
    searched.push("$PATH".to_owned());
    Err(PgTempError::BinariesNotFound {
        searched: searched.join(", "),
    })
}

/// `"15"` -> `[15]`, `"9.6"` -> `[9, 6]`; anything else is not a version directory.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn is_server_bindir(dir: &Path) -> bool {
    ["initdb", "postgres"].iter().all(|program| {
        fs::metadata(dir.join(program))
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

// ---------------------------------------------------------------------------------------------
// The server process

/// The `postgres` child process. Dropping it stops the server (bounded, blocking).
struct Server {
    child: Child,
    /// Keeps alive the thread that spawned the server (see [`spawn_from_parent_thread`]).
    _parent_thread: mpsc::Sender<()>,
}

/// Spawns `cmd` from a dedicated thread that stays alive until the returned sender is dropped.
///
/// Linux delivers the parent-death signal when the *thread* that forked the child exits, not
/// the process. Spawning from a tokio worker or blocking-pool thread would tie the server's
/// life to that thread (blocking-pool threads exit when idle), so we use our own thread.
fn spawn_from_parent_thread(mut cmd: std::process::Command) -> io::Result<Server> {
    let (child_tx, child_rx) = mpsc::sync_channel(1);
    let (keep_tx, keep_rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("qbo-pg-parent".to_owned())
        .spawn(move || {
            let spawned = cmd.spawn();
            let ok = spawned.is_ok();
            let _ = child_tx.send(spawned);
            if ok {
                // Returns when the `Server` (holding the sender) is dropped.
                let _ = keep_rx.recv();
            }
        })?;
    let child = child_rx
        .recv()
        .map_err(|_| io::Error::other("the thread spawning the server exited unexpectedly"))??;
    Ok(Server {
        child,
        _parent_thread: keep_tx,
    })
}

impl Server {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends `signal` to the server. Only called while the child is unreaped, so the pid is
    /// still ours (a zombie keeps its pid until we wait for it).
    fn signal(&self, signal: Signal) -> Result<(), PgTempError> {
        kill(self.pid(), signal).map_err(|source| PgTempError::Signal {
            signal,
            pid: self.pid().as_raw(),
            source,
        })
    }

    /// Fast shutdown, waiting asynchronously; SIGKILL after [`STOP_TIMEOUT`].
    async fn shutdown(&mut self) -> Result<ExitStatus, PgTempError> {
        if let Some(status) = self.child.try_wait().map_err(wait_error)? {
            return Ok(status);
        }
        self.signal(Signal::SIGINT)?;
        for (deadline, escalate) in [(STOP_TIMEOUT, true), (KILL_WAIT_TIMEOUT, false)] {
            let started = Instant::now();
            while started.elapsed() < deadline {
                if let Some(status) = self.child.try_wait().map_err(wait_error)? {
                    return Ok(status);
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            if escalate {
                tracing::warn!(
                    pid = self.child.id(),
                    "private PostgreSQL ignored SIGINT for {deadline:?}; sending SIGKILL"
                );
                self.signal(Signal::SIGKILL)?;
            }
        }
        Err(wait_error(io::Error::new(
            io::ErrorKind::TimedOut,
            "it did not exit even after SIGKILL",
        )))
    }

    /// Blocking best-effort version of [`shutdown`](Self::shutdown), for `Drop`.
    fn shutdown_blocking(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return; // Already reaped (or unknowable): nothing to signal.
        }
        if self.signal(Signal::SIGINT).is_ok() && self.wait_blocking(DROP_STOP_TIMEOUT) {
            return;
        }
        tracing::warn!(
            pid = self.child.id(),
            "private PostgreSQL did not stop on SIGINT; sending SIGKILL"
        );
        let _ = self.signal(Signal::SIGKILL);
        if !self.wait_blocking(KILL_WAIT_TIMEOUT) {
            tracing::error!(
                pid = self.child.id(),
                "private PostgreSQL did not exit even after SIGKILL"
            );
        }
    }

    /// Polls for exit for up to `timeout`; true once the child has exited and been reaped.
    fn wait_blocking(&mut self, timeout: Duration) -> bool {
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) if started.elapsed() < timeout => std::thread::sleep(POLL_INTERVAL),
                _ => return false,
            }
        }
    }
}

fn wait_error(source: io::Error) -> PgTempError {
    io_error("wait for the private PostgreSQL server to exit")(source)
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown_blocking();
    }
}

// ---------------------------------------------------------------------------------------------
// Directories left behind by processes that died without cleaning up

/// Deletes `DIR_PREFIX*` directories in `base` whose owner process and server are both gone.
/// Best effort: anything unclear (no owner file, unreadable, process alive) is left alone.
fn sweep_stale_dirs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(DIR_PREFIX));
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir()); // not following symlinks
        let path = entry.path();
        // Only directories we (or, as root, the server user we run as) created: another local
        // user may plant look-alikes in a shared temporary directory.
        let owned = {
            use std::os::unix::fs::MetadataExt;
            let uid = fs::symlink_metadata(&path).map(|m| m.uid()).ok();
            let server_uid = geteuid()
                .is_root()
                .then(|| {
                    User::from_name(SUPERUSER)
                        .ok()
                        .flatten()
                        .map(|u| u.uid.as_raw())
                })
                .flatten();
            uid.is_some_and(|u| u == geteuid().as_raw() || Some(u) == server_uid)
        };
        if is_ours && is_dir && owned && is_stale(&path) {
            match fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(dir = %path.display(), "removed a stale private PostgreSQL directory")
                }
                Err(e) => {
                    tracing::debug!(dir = %path.display(), error = %e, "could not remove a stale private PostgreSQL directory")
                }
            }
        }
    }
}

fn is_stale(dir: &Path) -> bool {
    let Some(owner) = read_pid(&dir.join(OWNER_FILE)) else {
        return false;
    };
    if pid_alive(owner) {
        return false;
    }
    // The first line of postmaster.pid is the server's pid; the file is gone after a clean stop.
    match read_pid(&dir.join("data").join("postmaster.pid")) {
        Some(server) => !pid_alive(server),
        None => true,
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // A regular file only, never through a symlink, without blocking (a planted FIFO), and
    // only its first bytes (a planted huge file or device).
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut head = Vec::with_capacity(64);
    file.take(64).read_to_end(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head);
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    // 0 and negative numbers would address process groups in kill(2).
    (pid > 0).then_some(pid)
}

/// False only when the process certainly does not exist (a reused pid reads as alive: safe).
fn pid_alive(pid: i32) -> bool {
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_program(dir: &Path, name: &str, mode: u32) {
        fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        fs::write(&path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn fake_server_bindir(dir: &Path) {
        fake_program(dir, "initdb", 0o755);
        fake_program(dir, "postgres", 0o755);
    }

    #[test]
    fn pg_config_bindir_wins_when_it_has_the_server_programs() {
        let tmp = tempfile::tempdir().unwrap();
        let from_pg_config = tmp.path().join("pgconfig/bin");
        fake_server_bindir(&from_pg_config);
        let root = tmp.path().join("lib/postgresql");
        fake_server_bindir(&root.join("17/bin"));

        let found = find_bindir_in(Some(&from_pg_config), &[&root], &[]).unwrap();
        assert_eq!(found, from_pg_config);
    }

    #[test]
    fn falls_back_to_the_highest_version_that_has_initdb() {
        let tmp = tempfile::tempdir().unwrap();
        // pg_config from a client-only package: points at a bindir without initdb.
        let client_only = tmp.path().join("lib/postgresql/16/bin");
        fake_program(&client_only, "psql", 0o755);
        let root = tmp.path().join("lib/postgresql");
        fake_server_bindir(&root.join("9.6/bin"));
        fake_server_bindir(&root.join("10/bin")); // numeric, not lexical: 10 > 9.6
        fake_server_bindir(&root.join("not-a-version/bin"));
        // Non-executable initdb does not count.
        fake_program(&root.join("18/bin"), "initdb", 0o644);
        fake_program(&root.join("18/bin"), "postgres", 0o755);

        let found = find_bindir_in(Some(&client_only), &[&root], &[]).unwrap();
        assert_eq!(found, root.join("10/bin"));
    }

    #[test]
    fn highest_version_across_several_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        fake_server_bindir(&a.join("13/bin"));
        fake_server_bindir(&b.join("15/bin"));
        fake_server_bindir(&b.join("9.6/bin"));
        let found = find_bindir_in(None, &[&a, &b], &[]).unwrap();
        assert_eq!(found, b.join("15/bin"));
    }

    #[test]
    fn path_is_the_last_resort() {
        let tmp = tempfile::tempdir().unwrap();
        let empty_root = tmp.path().join("none");
        let on_path_without = tmp.path().join("usr/bin");
        fake_program(&on_path_without, "postgres", 0o755);
        let on_path = tmp.path().join("usr/local/bin");
        fake_server_bindir(&on_path);

        let found =
            find_bindir_in(None, &[&empty_root], &[on_path_without, on_path.clone()]).unwrap();
        assert_eq!(found, on_path);
    }

    #[test]
    fn missing_binaries_say_how_to_install_them() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("lib/postgresql");
        fake_program(&root.join("15/bin"), "psql", 0o755);
        let err = find_bindir_in(None, &[&root], &[tmp.path().to_path_buf()]).unwrap_err();
        assert!(matches!(err, PgTempError::BinariesNotFound { .. }));
        let message = err.to_string();
        assert!(
            message.contains("apt-get install -y postgresql"),
            "{message}"
        );
        assert!(message.contains("DATABASE_URL"), "{message}");
        assert!(message.contains(&root.display().to_string()), "{message}");
    }

    #[test]
    fn versions_parse_numerically() {
        assert_eq!(parse_version("15"), Some(vec![15]));
        assert_eq!(parse_version("9.6"), Some(vec![9, 6]));
        assert_eq!(parse_version("15beta"), None);
        assert_eq!(parse_version(""), None);
        assert!(parse_version("9.6") < parse_version("10"));
    }

    #[test]
    fn url_names_the_socket_directory_and_port() {
        let url = url_for(Path::new("/tmp/qbo-pg-Ab12Cd"));
        assert_eq!(
            url,
            "postgres://postgres@localhost/postgres?host=%2Ftmp%2Fqbo-pg-Ab12Cd&port=5432&sslmode=disable"
        );
        let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        assert_eq!(
            opts.get_socket(),
            Some(&PathBuf::from("/tmp/qbo-pg-Ab12Cd"))
        );
        assert_eq!(opts.get_port(), SOCKET_PORT);
        assert_eq!(opts.get_username(), SUPERUSER);
        assert_eq!(opts.get_database(), Some("postgres"));
    }

    #[test]
    fn url_survives_unusual_directory_names() {
        // $TMPDIR may hold characters that mean something in a URL.
        let dir = Path::new("/tmp/my tmp&x=1#frag%41?/qbo-pg-Ab12Cd");
        let opts: sqlx::postgres::PgConnectOptions = url_for(dir).parse().unwrap();
        assert_eq!(opts.get_socket(), Some(&dir.to_path_buf()));
        assert_eq!(opts.get_port(), SOCKET_PORT);
    }

    #[test]
    fn url_is_accepted_by_the_database_settings() {
        let url = url_for(Path::new("/tmp/qbo-pg-Ab12Cd"));
        let settings = crate::config::DbSettings::from_url(&url).unwrap();
        assert_eq!(settings.url(), url);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn temp_base_is_short_and_absolute() {
        let base = temp_base(false);
        assert!(base.is_absolute());
        assert!(base.as_os_str().len() <= MAX_TEMP_BASE_LEN);
        assert_eq!(temp_base(true), PathBuf::from("/tmp"));
    }

    #[test]
    fn pid_files_are_read_safely() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, "4242\nrest").unwrap();
        assert_eq!(read_pid(&plain), Some(4242));
        // A FIFO would block a plain open forever; a symlink could point anywhere.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert_eq!(read_pid(&fifo), None);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&plain, &link).unwrap();
        assert_eq!(read_pid(&link), None);
        let big = dir.path().join("big");
        fs::write(&big, "7".repeat(1 << 20)).unwrap();
        assert_eq!(read_pid(&big), None, "only the first bytes are read");
        assert_eq!(read_pid(Path::new("/dev/zero")), None);
    }

    #[test]
    fn sweep_removes_only_dirs_whose_owner_is_gone() {
        let base = tempfile::tempdir().unwrap();
        let dead_pid = {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            pid
        };
        let make = |name: &str, owner: Option<String>| {
            let dir = base.path().join(name);
            fs::create_dir_all(dir.join("data")).unwrap();
            if let Some(owner) = owner {
                fs::write(dir.join(OWNER_FILE), owner).unwrap();
            }
            dir
        };
        let stale = make("qbo-pg-stale", Some(dead_pid.to_string()));
        let alive = make("qbo-pg-alive", Some(std::process::id().to_string()));
        let server_alive = make("qbo-pg-server", Some(dead_pid.to_string()));
        fs::write(
            server_alive.join("data/postmaster.pid"),
            format!("{}\n/some/dir\n", std::process::id()),
        )
        .unwrap();
        let unowned = make("qbo-pg-unowned", None);
        let zero = make("qbo-pg-zero", Some("0".to_owned()));
        let foreign = make("other-stale", Some(dead_pid.to_string()));

        sweep_stale_dirs(base.path());

        assert!(!stale.exists());
        assert!(alive.exists());
        assert!(server_alive.exists());
        assert!(unowned.exists());
        assert!(zero.exists());
        assert!(foreign.exists());
    }

    #[tokio::test]
    async fn serves_on_its_socket_only_and_stops_cleanly() {
        let pg = PrivatePostgres::start()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let socket = pg.socket_path();
        assert!(socket.starts_with(pg.dir()));
        let mode = fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", socket.display());
        let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
        let listen: String = sqlx::query_scalar("SHOW listen_addresses")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(listen, "");
        // Only local (socket) lines trust; any TCP line rejects.
        let non_reject: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_hba_file_rules WHERE type <> 'local' AND auth_method <> 'reject'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(non_reject, 0);
        // Over the socket, inet_server_addr() is NULL.
        let addr: Option<String> = sqlx::query_scalar("SELECT inet_server_addr()::text")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(addr, None);
        conn.close().await.unwrap();
        let dir = pg.dir().to_path_buf();
        pg.stop().await.unwrap();
        assert!(!dir.exists());
    }
}

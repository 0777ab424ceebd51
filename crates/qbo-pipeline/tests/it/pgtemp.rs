//! Starts real private PostgreSQL servers from the system's binaries.
//!
//! No silent skips: on a machine without the server binaries these tests fail with the
//! module's actionable message (how to install them, or to set DATABASE_URL).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;

use qbo_pipeline::pgtemp::PrivatePostgres;
use sqlx::{Connection, PgConnection};

async fn start() -> PrivatePostgres {
    PrivatePostgres::start()
        .await
        .unwrap_or_else(|e| panic!("could not start a private PostgreSQL: {e}"))
}

fn assert_gone(dir: &Path, socket: &Path) {
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        UnixStream::connect(socket).is_err(),
        "{} still accepts connections",
        socket.display()
    );
}

#[tokio::test]
async fn starts_serves_queries_and_stops_cleanly() -> anyhow::Result<()> {
    let pg = start().await;
    let dir = pg.dir().to_path_buf();
    let socket = pg.socket_path();
    let encoded_dir: String =
        url::form_urlencoded::byte_serialize(dir.to_str().expect("a UTF-8 directory").as_bytes())
            .collect();
    assert_eq!(
        pg.url(),
        format!(
            "postgres://postgres@localhost/postgres?host={encoded_dir}&port=5432&sslmode=disable"
        )
    );
    assert!(dir.join("data").join("PG_VERSION").is_file());
    // The socket path must fit the ~107-byte limit.
    assert_eq!(socket, dir.join(".s.PGSQL.5432"));
    assert!(socket.as_os_str().len() < 100);
    let debug = format!("{pg:?}");
    assert!(debug.contains(&dir.display().to_string()), "{debug}");
    // The rest of the program (pool, database creation) takes the URL as DATABASE_URL.
    let settings =
        qbo_pipeline::config::DbSettings::from_url(&pg.url()).unwrap_or_else(|e| panic!("{e}"));
    let pool = qbo_pipeline::db::connect(&settings, 2).await?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await?;
    assert_eq!(one, 1);
    pool.close().await;

    let mut conn = PgConnection::connect(&pg.url()).await?;
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&mut conn)
        .await?;
    assert!(version.starts_with("PostgreSQL "), "{version}");

    sqlx::query("CREATE TABLE smoke (id int PRIMARY KEY, name text NOT NULL)")
        .execute(&mut conn)
        .await?;
    sqlx::query("INSERT INTO smoke (id, name) VALUES ($1, $2), ($3, $4)")
        .bind(1)
        .bind("one")
        .bind(2)
        .bind("two")
        .execute(&mut conn)
        .await?;
    let rows: Vec<(i32, String)> = sqlx::query_as("SELECT id, name FROM smoke ORDER BY id")
        .fetch_all(&mut conn)
        .await?;
    assert_eq!(rows, vec![(1, "one".to_owned()), (2, "two".to_owned())]);
    let encoding: String = sqlx::query_scalar("SHOW server_encoding")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(encoding, "UTF8");
    // Left open on purpose: a fast shutdown must not wait for clients.

    pg.stop().await?;
    assert_gone(&dir, &socket);
    assert!(conn.ping().await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_run_side_by_side() -> anyhow::Result<()> {
    let (a, b) = tokio::join!(start(), start());
    assert_ne!(a.dir(), b.dir());
    assert_ne!(a.socket_path(), b.socket_path());

    let mut conn_a = PgConnection::connect(&a.url()).await?;
    let mut conn_b = PgConnection::connect(&b.url()).await?;
    sqlx::query("CREATE TABLE only_in_a (x int)")
        .execute(&mut conn_a)
        .await?;
    let in_b: Option<String> = sqlx::query_scalar("SELECT to_regclass('only_in_a')::text")
        .fetch_one(&mut conn_b)
        .await?;
    assert_eq!(in_b, None, "the two servers share a cluster");
    conn_a.close().await?;
    conn_b.close().await?;

    let (socket_a, dir_a) = (a.socket_path(), a.dir().to_path_buf());
    let (socket_b, dir_b) = (b.socket_path(), b.dir().to_path_buf());
    let (stop_a, stop_b) = tokio::join!(a.stop(), b.stop());
    stop_a?;
    stop_b?;
    assert_gone(&dir_a, &socket_a);
    assert_gone(&dir_b, &socket_b);
    Ok(())
}

#[tokio::test]
async fn drop_stops_the_server_and_removes_the_directory() -> anyhow::Result<()> {
    let pg = start().await;
    let (socket, dir) = (pg.socket_path(), pg.dir().to_path_buf());
    let mut conn = PgConnection::connect(&pg.url()).await?;
    sqlx::query("SELECT 1").execute(&mut conn).await?;

    drop(pg);
    assert_gone(&dir, &socket);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Other local users cannot reach the server

/// What `psql` reported when asked for the server's data directory.
struct PsqlOutcome {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs the server package's `psql` with a clean environment, as `uid`/`gid` when given, and
/// asks whoever answers `conninfo` where its cluster lives.
fn data_directory_via_psql(conninfo: &str, as_user: Option<(u32, u32)>) -> PsqlOutcome {
    use std::os::unix::process::CommandExt;
    let bindir = qbo_pipeline::pgtemp::find_bindir()
        .unwrap_or_else(|e| panic!("the PostgreSQL binaries are needed: {e}"));
    let psql = bindir.join("psql");
    assert!(
        psql.is_file(),
        "{} is missing: install the PostgreSQL client (apt-get install -y postgresql)",
        psql.display()
    );
    let mut cmd = std::process::Command::new(&psql);
    cmd.env_clear()
        .args(["-X", "-w", "-A", "-t", "-d", conninfo])
        .args(["-c", "SELECT current_setting('data_directory')"])
        .current_dir("/")
        .stdin(std::process::Stdio::null());
    if let Some((uid, gid)) = as_user {
        // As root, std also drops the supplementary groups before switching user.
        cmd.uid(uid).gid(gid);
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", psql.display()));
    PsqlOutcome {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    }
}

/// The ports of the TCP sockets (IPv4 and IPv6) that process `pid` holds in LISTEN state.
fn tcp_listen_ports(pid: u32) -> Vec<u16> {
    use std::collections::HashMap;
    // Socket inode -> port, for every listening TCP socket of the machine.
    let mut listening: HashMap<String, u16> = HashMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue; // no IPv6 on this machine
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if fields.len() > 9 && fields[3] == "0A" {
                let port = fields[1].rsplit(':').next().unwrap();
                let port = u16::from_str_radix(port, 16).unwrap();
                listening.insert(fields[9].to_owned(), port);
            }
        }
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot list the server's file descriptors: {e}"));
    let mut ports: Vec<u16> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?.to_owned();
            let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?;
            listening.get(inode).copied()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Regression test: the server used to trust every TCP connection on 127.0.0.1, so any local
/// OS user could log in as the database superuser and run programs as the server's OS user
/// (`COPY ... TO PROGRAM`). Now it has no TCP listener and its socket directory is private.
///
/// The cross-user part needs root (to run `psql` as `nobody`), which is how CI runs the suite.
/// Without root the TCP part still runs, then the test fails saying so: it never passes
/// without having checked that another user is locked out.
#[tokio::test]
async fn other_local_users_cannot_connect() -> anyhow::Result<()> {
    let pg = start().await;
    let dir = pg.dir().to_path_buf();
    let data_dir = dir.join("data");
    let mut conn = PgConnection::connect(&pg.url()).await?;
    let listen: String = sqlx::query_scalar("SHOW listen_addresses")
        .fetch_one(&mut conn)
        .await?;
    let port: String = sqlx::query_scalar("SHOW port").fetch_one(&mut conn).await?;
    let reported: String = sqlx::query_scalar("SELECT current_setting('data_directory')")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(Path::new(&reported), data_dir);
    conn.close().await?;

    // No TCP listener: neither configured nor actually open.
    assert_eq!(listen, "", "the server listens on TCP ({listen:?})");
    let pid_file = std::fs::read_to_string(data_dir.join("postmaster.pid"))?;
    let server_pid: u32 = pid_file.lines().next().unwrap_or_default().trim().parse()?;
    let open = tcp_listen_ports(server_pid);
    assert!(
        open.is_empty(),
        "the server (pid {server_pid}) listens on TCP ports {open:?}"
    );

    // Its socket directory is reachable only by the OS user the server runs as (and root).
    let server_uid = std::fs::metadata(data_dir.join("PG_VERSION"))?.uid();
    let meta = std::fs::metadata(&dir)?;
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o700,
        "{}",
        dir.display()
    );
    assert_eq!(
        meta.uid(),
        server_uid,
        "{} is not the server's",
        dir.display()
    );

    let tcp = format!(
        "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable connect_timeout=5"
    );
    let socket = format!(
        "host={} port={port} user=postgres dbname=postgres sslmode=disable connect_timeout=5",
        dir.display()
    );
    // Control: we (the user who started it) reach it through the socket with this conninfo.
    let ours = data_directory_via_psql(&socket, None);
    assert!(
        ours.success && Path::new(&ours.stdout) == data_dir,
        "the owner could not connect through the socket: {} {}",
        ours.stdout,
        ours.stderr
    );

    // Whatever answers on 127.0.0.1 at the server's port (the machine's own PostgreSQL may)
    // must not be this server.
    let as_self = data_directory_via_psql(&tcp, None);
    assert!(
        !(as_self.success && Path::new(&as_self.stdout) == data_dir),
        "127.0.0.1:{port} reaches the private server"
    );

    let root = nix::unistd::geteuid().is_root();
    assert!(
        root,
        "this test must run as root to check that another OS user (nobody) cannot connect; \
         the TCP part passed"
    );
    let nobody = nix::unistd::User::from_name("nobody")?.expect("a `nobody` user");
    let nobody = (nobody.uid.as_raw(), nobody.gid.as_raw());
    assert_ne!(nobody.0, server_uid);

    let over_tcp = data_directory_via_psql(&tcp, Some(nobody));
    assert!(
        !(over_tcp.success && Path::new(&over_tcp.stdout) == data_dir),
        "nobody reached the private server over TCP on 127.0.0.1:{port}"
    );
    let over_socket = data_directory_via_psql(&socket, Some(nobody));
    assert!(
        !over_socket.success,
        "nobody connected through the socket: {}",
        over_socket.stdout
    );
    assert!(
        over_socket.stderr.contains("Permission denied"),
        "nobody failed to connect through the socket, but not for lack of permission: {}",
        over_socket.stderr
    );

    pg.stop().await?;
    assert!(!dir.exists());
    Ok(())
}

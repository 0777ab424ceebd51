//! Starts real private PostgreSQL servers from the system's binaries.
//!
//! No silent skips: on a machine without the server binaries these tests fail with the
//! module's actionable message (how to install them, or to set DATABASE_URL).

use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::Duration;

use qbo_pipeline::pgtemp::PrivatePostgres;
use sqlx::{Connection, PgConnection};

async fn start() -> PrivatePostgres {
    PrivatePostgres::start()
        .await
        .unwrap_or_else(|e| panic!("could not start a private PostgreSQL: {e}"))
}

fn accepts_connections(port: u16) -> bool {
    TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(500),
    )
    .is_ok()
}

fn assert_gone(dir: &Path, port: u16) {
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        !accepts_connections(port),
        "port {port} still accepts connections"
    );
}

#[tokio::test]
async fn starts_serves_queries_and_stops_cleanly() -> anyhow::Result<()> {
    let pg = start().await;
    let port = pg.port();
    let dir = pg.dir().to_path_buf();
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable")
    );
    assert!(dir.join("data").join("PG_VERSION").is_file());
    // The socket path must fit the ~107-byte limit.
    assert!(dir.join(format!(".s.PGSQL.{port}")).as_os_str().len() < 100);
    let debug = format!("{pg:?}");
    assert!(debug.contains(&port.to_string()), "{debug}");

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
    assert_gone(&dir, port);
    assert!(conn.ping().await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_run_side_by_side() -> anyhow::Result<()> {
    let (a, b) = tokio::join!(start(), start());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());

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

    let (port_a, dir_a) = (a.port(), a.dir().to_path_buf());
    let (port_b, dir_b) = (b.port(), b.dir().to_path_buf());
    let (stop_a, stop_b) = tokio::join!(a.stop(), b.stop());
    stop_a?;
    stop_b?;
    assert_gone(&dir_a, port_a);
    assert_gone(&dir_b, port_b);
    Ok(())
}

#[tokio::test]
async fn drop_stops_the_server_and_removes_the_directory() -> anyhow::Result<()> {
    let pg = start().await;
    let (port, dir) = (pg.port(), pg.dir().to_path_buf());
    let mut conn = PgConnection::connect(&pg.url()).await?;
    sqlx::query("SELECT 1").execute(&mut conn).await?;

    drop(pg);
    assert_gone(&dir, port);
    Ok(())
}

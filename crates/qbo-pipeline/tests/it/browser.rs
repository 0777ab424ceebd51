//! The web dashboard in a real headless Chromium: `qbo-pipeline serve` over real HTTP,
//! driven through Debian's chromedriver (WebDriver over loopback HTTP, by fantoccini).
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them). Without them every test here FAILS with a
//! message saying so: no silent skips. `QBO_CHROMEDRIVER` and `QBO_CHROMIUM` name other
//! binaries.
//!
//! Every view a test visits is saved as a PNG under `target/screenshots/<test>-<view>.png`
//! (the test's artifacts; `CARGO_TARGET_DIR` moves them). With `QBO_UPDATE_SCREENSHOTS=1` the
//! views the README shows are also copied to `docs/screenshots/<view>.png`; commit them by
//! hand after looking at them.

use crate::realms::{add_all, app_only};
use crate::support::*;
use fantoccini::{Client, ClientBuilder, Locator};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "browser-web-token-0123456789abcdef";

/// How long any page condition may take to come true.
const PATIENCE: Duration = Duration::from_secs(30);

fn chromedriver_path() -> PathBuf {
    std::env::var_os("QBO_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"))
}

fn chromium_path() -> PathBuf {
    std::env::var_os("QBO_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// A free loopback port (bound, then released for chromedriver, which needs a number).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// chromedriver in its own process group; the group (chromedriver and the Chromium it
/// started) is killed on drop, whatever state the test left it in.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// `scratch` becomes chromedriver's and Chromium's `TMPDIR` (Chromium leaves
    /// `org.chromium.*` directories in it), removed with the test's directory.
    fn start(scratch: &Path) -> Driver {
        let (driver, chromium) = (chromedriver_path(), chromium_path());
        for (what, path, package) in [
            ("chromedriver", &driver, "chromium-driver"),
            ("chromium", &chromium, "chromium"),
        ] {
            assert!(
                path.is_file(),
                "the browser tests need {what} at {}: install Debian's packages \
                 (apt-get install -y chromium chromium-driver; .ci/run does) or name another \
                 binary with QBO_{}; package {package} is missing",
                path.display(),
                what.to_uppercase()
            );
        }
        // The port is free when chosen; another process may take it before chromedriver
        // binds it, so a failed start retries with another one.
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&driver)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .env("TMPDIR", scratch)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("{} does not start: {e}", driver.display()));
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let mut seen = String::new();
            let started = loop {
                match lines.next() {
                    Some(Ok(line)) => {
                        seen.push_str(&line);
                        seen.push('\n');
                        if line.contains("started successfully") {
                            break true;
                        }
                    }
                    _ => break false,
                }
            };
            if started {
                // Keep reading its output so it never blocks on a full pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return Driver {
                    child,
                    url: format!("http://127.0.0.1:{port}"),
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("chromedriver on port {port} did not start:\n{seen}");
        }
        panic!("chromedriver did not start in 5 tries");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// `<target>/screenshots`: `CARGO_TARGET_DIR` when set, else the workspace's `target`.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("screenshots")
}

/// One headless Chromium for one test.
struct Browser {
    client: Client,
    test: &'static str,
    // Dropped after the client's session: kills chromedriver and Chromium, then removes
    // their profile and temporary files.
    _driver: Driver,
    _scratch: tempfile::TempDir,
}

impl Browser {
    async fn start(test: &'static str) -> Browser {
        let scratch = tempfile::tempdir().unwrap();
        let profile = scratch.path().join("profile");
        let driver = Driver::start(scratch.path());
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium_path(),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    "--no-first-run",
                    "--no-default-browser-check",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("a Chromium session through chromedriver: {e}"));
        Browser {
            client,
            test,
            _driver: driver,
            _scratch: scratch,
        }
    }

    /// Ends the session (Chromium quits cleanly); the driver is killed on drop anyway.
    async fn close(self) {
        let Browser {
            client,
            _driver,
            _scratch,
            ..
        } = self;
        let _ = client.close().await;
    }

    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    async fn url(&self) -> url::Url {
        self.client.current_url().await.unwrap()
    }

    /// The HTTP status of the page now shown (Navigation Timing's `responseStatus`).
    async fn status(&self) -> u16 {
        let v = self
            .client
            .execute(
                "return performance.getEntriesByType('navigation')[0].responseStatus;",
                vec![],
            )
            .await
            .unwrap();
        v.as_u64().expect("a status") as u16
    }

    /// The page's HTML, for failure messages (cut to a readable length).
    async fn source(&self) -> String {
        let html = self.client.source().await.unwrap_or_default();
        html.chars().take(6000).collect()
    }

    /// The element `css` matches, waiting for it to appear.
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!(
                "{css} not found on {} within {PATIENCE:?}: {e}\n{}",
                self.url().await,
                self.source().await
            ),
        }
    }

    async fn all(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        self.client.find_all(Locator::Css(css)).await.unwrap()
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// Runs `script` (which returns a value) in the page.
    async fn js(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Waits until `script` returns true in the page.
    async fn until(&self, what: &str, script: &str) {
        let started = Instant::now();
        loop {
            if let Ok(v) = self.client.execute(script, vec![]).await
                && v == serde_json::Value::Bool(true)
            {
                return;
            }
            if started.elapsed() > PATIENCE {
                panic!(
                    "{what}: not true within {PATIENCE:?} on {}: {script}\n{}",
                    self.url().await,
                    self.source().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Marks the current document; [`Browser::same_document`] then tells whether the page
    /// was reloaded or left since.
    async fn mark_document(&self) {
        self.js("window.__qboMark = 'kept'; return true;").await;
    }

    async fn same_document(&self) -> bool {
        self.js("return window.__qboMark === 'kept';").await == serde_json::Value::Bool(true)
    }

    /// From now on records every text the element `css` shows, in `sessionStorage` (which a
    /// reload keeps): [`Browser::watched`] then proves a change made by the page's script,
    /// even when the page reloads itself afterwards.
    async fn watch_text(&self, css: &str) {
        let script = format!(
            "const el = document.querySelector({css}); const key = 'qboWatch:' + {css};
             sessionStorage.setItem(key, JSON.stringify([el.textContent.trim()]));
             new MutationObserver(() => {{
                 const seen = JSON.parse(sessionStorage.getItem(key));
                 seen.push(el.textContent.trim());
                 sessionStorage.setItem(key, JSON.stringify(seen));
             }}).observe(el, {{ childList: true, characterData: true, subtree: true }});
             return true;",
            css = q(css)
        );
        self.js(&script).await;
    }

    /// The texts [`Browser::watch_text`] recorded, first the one it started with.
    async fn watched(&self, css: &str) -> Vec<String> {
        let v = self
            .js(&format!(
                "return JSON.parse(sessionStorage.getItem('qboWatch:' + {}) || '[]');",
                q(css)
            ))
            .await;
        serde_json::from_value(v).unwrap()
    }

    /// Saves the page as `target/screenshots/<test>-<view>.png`.
    async fn shot(&self, view: &str) {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot of {view}: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}-{view}.png", self.test));
        std::fs::write(&path, &png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if std::env::var("QBO_UPDATE_SCREENSHOTS").as_deref() == Ok("1")
            && ["overview", "run", "triggers", "usage"].contains(&view)
        {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::write(docs.join(format!("{view}.png")), &png).unwrap();
        }
    }
}

/// `qbo-pipeline serve` on 127.0.0.1:0; its log goes to `serve.log` in the test's directory.
type Server = WebServer;

struct ServeOptions<'a> {
    token: Option<&'a str>,
    scheduler: bool,
    /// Companies from the registry only (no `QBO_REALM_ID`/`QBO_REFRESH_TOKEN`).
    registry_only: bool,
}

fn serve(sb: &qbo_sandbox::RunningSandbox, db: &TestDb, dir: &Path, o: ServeOptions<'_>) -> Server {
    let mut c = command(dir);
    if o.registry_only {
        app_only(&mut c, sb, db);
    } else {
        with_sandbox(&mut c, sb, db);
    }
    if let Some(t) = o.token {
        c.env("QBO_WEB_TOKEN", t);
    }
    c.env("QBO_AUTH_URL", format!("{}/connect/oauth2", sb.base_url()))
        .args(["serve", "--listen", "127.0.0.1:0", "--poll-secs", "1"]);
    if !o.scheduler {
        c.arg("--no-scheduler");
    }
    start_serve(c, dir)
}

/// Runs the binary to completion with the registry's companies; asserts exit 0.
fn run(sb: &qbo_sandbox::RunningSandbox, db: &TestDb, dir: &Path, args: &[&str]) -> String {
    let mut c = command(dir);
    app_only(&mut c, sb, db);
    let out = c.args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A trigger's status as `trigger list --json` tells it.
fn trigger_status(sb: &qbo_sandbox::RunningSandbox, db: &TestDb, dir: &Path, name: &str) -> String {
    let list = run(sb, db, dir, &["trigger", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let t = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {list}"));
    t["status"]
        .as_str()
        .unwrap_or_else(|| panic!("status in {t}"))
        .to_string()
}

/// The harness itself against what `serve` has answered since before the dashboard: JSON
/// endpoints and the 404 fallback, seen by a real Chromium, with a screenshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_harness_drives_chromium_against_serve() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let out = c
        .args(["sync", "--entity", "customers", "--no-progress"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let server = serve(
        &sb,
        &db,
        dir.path(),
        ServeOptions {
            token: None,
            scheduler: false,
            registry_only: false,
        },
    );
    let b = Browser::start("harness").await;

    b.goto(&format!("{}/healthz", server.url)).await;
    assert_eq!(b.status().await, 200);
    let health: serde_json::Value = serde_json::from_str(&b.text("body").await).unwrap();
    assert_eq!(health["database"], "reachable");
    b.shot("healthz").await;

    b.goto(&format!("{}/api/runs", server.url)).await;
    assert_eq!(b.status().await, 200, "{}", server.log());
    let runs: serde_json::Value = serde_json::from_str(&b.text("body").await).unwrap();
    let runs = runs.as_array().expect("a list of runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "succeeded");

    b.goto(&format!("{}/nothing/here", server.url)).await;
    assert_eq!(b.status().await, 404);
    b.shot("not-found").await;
    b.close().await;
    let png = screenshot_dir().join("harness-healthz.png");
    assert!(std::fs::metadata(&png).unwrap().len() > 1000, "{png:?}");
}

/// A CSS attribute selector value, quoted.
fn q(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Logs in through `form#login-form` (the browser is on the login page).
async fn log_in(b: &Browser, token: &str) {
    let field = b.find("form#login-form input#token").await;
    assert_eq!(
        field.attr("type").await.unwrap().as_deref(),
        Some("password")
    );
    field.clear().await.unwrap();
    field.send_keys(token).await.unwrap();
    b.click("button#login-submit").await;
}

/// Every POST form of the page carries a non-empty hidden `csrf` field.
async fn assert_csrf_on_every_post_form(b: &Browser) {
    b.until(
        "every POST form has a hidden csrf field",
        "return [...document.querySelectorAll('form')]
            .filter(f => (f.getAttribute('method') || 'get').toLowerCase() === 'post')
            .every(f => { const c = f.querySelector('input[type=hidden][name=csrf]');
                          return c !== null && c.value.length > 0; });",
    )
    .await;
}

/// The navigation every page carries.
async fn assert_nav(b: &Browser) {
    for (id, path) in [
        ("nav-overview", "/"),
        ("nav-runs", "/runs"),
        ("nav-triggers", "/triggers"),
        ("nav-validation", "/validation"),
        ("nav-usage", "/usage"),
    ] {
        let href = b
            .find(&format!("nav a#{id}"))
            .await
            .prop("href")
            .await
            .unwrap()
            .unwrap_or_default();
        let href = url::Url::parse(&href).unwrap_or_else(|e| panic!("#{id} href {href}: {e}"));
        assert_eq!(href.path(), path, "#{id}");
    }
}

/// Clicks a navigation link and waits for its page.
async fn nav(b: &Browser, id: &str, path: &str) {
    b.click(&format!("nav a#{id}")).await;
    b.until(
        &format!("on {path}"),
        &format!("return location.pathname === {};", q(path)),
    )
    .await;
    assert_nav(b).await;
    assert_csrf_on_every_post_form(b).await;
}

/// Log in (the form, a wrong token, the cookie), the overview of two synced companies, the
/// runs list and its filter, a run's page, the usage and validation pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_logs_in_and_shows_two_companies_their_runs_usage_and_validation() {
    let started = Instant::now();
    let sb = sandbox(qbo_sandbox::SandboxConfig {
        realms: 2,
        ..small_company()
    })
    .await;
    let ids: Vec<String> = sb.realm_ids().iter().map(|s| s.to_string()).collect();
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    add_all(&sb, &db, dir.path());
    run(
        &sb,
        &db,
        dir.path(),
        // Three entities keep the sync and the page's validation short.
        &[
            "sync",
            "--all-realms",
            "--entity",
            "customers,invoices,items",
            "--no-progress",
        ],
    );
    // A nightly sync of the first company: its entities show it as their next trigger.
    run(
        &sb,
        &db,
        dir.path(),
        &[
            "trigger",
            "create",
            "--name",
            "nightly_sync",
            "--pipeline",
            "qb_sync",
            "--cron",
            "0 3 * * *",
            "--timezone",
            "UTC",
            "--realm",
            &ids[0],
        ],
    );
    let server = serve(
        &sb,
        &db,
        dir.path(),
        ServeOptions {
            token: Some(TOKEN),
            scheduler: false,
            registry_only: true,
        },
    );
    let b = Browser::start("login").await;

    // Not logged in: a page visit lands on the login form, remembering where it was going.
    b.goto(&format!("{}/runs", server.url)).await;
    b.find("form#login-form").await;
    let at = b.url().await;
    assert_eq!(at.path(), "/login", "{at}");
    let next: Option<String> = at
        .query_pairs()
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned());
    assert_eq!(next.as_deref(), Some("/runs"), "{at}");
    assert_csrf_on_every_post_form(&b).await;
    b.shot("login").await;

    // A wrong token: 401 and the error, no session.
    log_in(&b, "wrong-token-wrong-token-wrong-token").await;
    let error = b.text("#login-error").await;
    assert!(!error.trim().is_empty(), "the error says something");
    assert_eq!(b.status().await, 401);
    assert!(b.client.get_named_cookie("qbo_session").await.is_err());
    b.shot("login-error").await;

    // The right token: back where it was going, with an HttpOnly, SameSite=Lax session.
    if b.all("form#login-form input#token").await.is_empty() {
        b.goto(&format!("{}/login?next=%2Fruns", server.url)).await;
    }
    log_in(&b, TOKEN).await;
    b.find("table#runs").await;
    assert_eq!(b.url().await.path(), "/runs");
    let cookie = b
        .client
        .get_named_cookie("qbo_session")
        .await
        .expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true), "{cookie:?}");
    assert_eq!(
        format!("{:?}", cookie.same_site()),
        "Some(Lax)",
        "{cookie:?}"
    );
    assert!(
        !cookie.value().contains(TOKEN),
        "the cookie is not the token"
    );
    assert_eq!(
        b.js("return document.cookie.includes('qbo_session');")
            .await,
        serde_json::Value::Bool(false),
        "scripts cannot read the session"
    );

    // The overview: both companies, each entity's rows as in the sandbox.
    nav(&b, "nav-overview", "/").await;
    b.find("table#overview").await;
    for id in &ids {
        for (entity, qbo) in [("customers", "Customer"), ("invoices", "Invoice")] {
            let row = format!(
                "table#overview tr[data-realm={}][data-entity={entity}]",
                q(id)
            );
            let want = sb.realm(id).unwrap().all_records(qbo).len();
            let rows = b.text(&format!("{row} td.rows")).await;
            let rows: String = rows.chars().filter(|c| c.is_ascii_digit()).collect();
            assert_eq!(rows, want.to_string(), "{row} td.rows");
            assert!(
                !b.text(&format!("{row} td.last-sync"))
                    .await
                    .trim()
                    .is_empty(),
                "{row} td.last-sync"
            );
            for cell in ["deleted", "age", "proof"] {
                b.find(&format!("{row} td.{cell}")).await;
            }
            let next = b.text(&format!("{row} td.next-trigger")).await;
            assert_eq!(
                next.contains("nightly_sync"),
                id == &ids[0],
                "{row}: {next}"
            );
        }
    }
    b.find("section#live").await;
    b.find("form#connect-form button#connect-submit").await;
    b.shot("overview").await;

    // Runs: one succeeded sync per company, charts, the filter by company.
    nav(&b, "nav-runs", "/runs").await;
    let runs = b
        .all("table#runs tr[data-run][data-status=succeeded]")
        .await;
    assert_eq!(runs.len(), 2, "{}", b.source().await);
    b.find("svg#chart-duration").await;
    b.find("svg#chart-rows").await;
    b.shot("runs").await;
    let filter = b.find("form#runs-filter").await;
    let realm = filter
        .find(Locator::Css("input[name=realm]"))
        .await
        .unwrap();
    realm.send_keys(&ids[1]).await.unwrap();
    b.js("document.querySelector('form#runs-filter').submit(); return true;")
        .await;
    b.until(
        "the filter is in the address",
        &format!("return location.search.includes({});", q(&ids[1])),
    )
    .await;
    b.until(
        "one run for the second company",
        "return document.querySelectorAll('table#runs tr[data-run]').length === 1;",
    )
    .await;

    // A run's page.
    let link = b.find("table#runs tr[data-run] a.run-link").await;
    let run_id = b
        .find("table#runs tr[data-run]")
        .await
        .attr("data-run")
        .await
        .unwrap()
        .unwrap();
    link.click().await.unwrap();
    b.until(
        "on the run's page",
        &format!(
            "return location.pathname === {};",
            q(&format!("/runs/{run_id}"))
        ),
    )
    .await;
    assert_eq!(b.text("#run-status").await.trim(), "succeeded");
    b.find("table#run-entities tr[data-entity=customers]").await;
    b.find("table#run-entities tr[data-entity=invoices]").await;
    b.find("#run-errors").await;
    b.find("section#run-log").await;
    assert_nav(&b).await;
    b.shot("run").await;

    // Usage: one row per company.
    nav(&b, "nav-usage", "/usage").await;
    for id in &ids {
        let row = format!("table#usage tr[data-realm={}]", q(id));
        for cell in [
            "rpm",
            "in-flight",
            "throttled",
            "month",
            "budget",
            "refresh-expiry",
        ] {
            b.find(&format!("{row} td.{cell}")).await;
        }
        // The company's sync made requests this month.
        let month: String = b
            .text(&format!("{row} td.month"))
            .await
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect();
        assert!(
            month.parse::<u64>().is_ok_and(|n| n > 0),
            "{row} td.month: {month}"
        );
    }
    b.shot("usage").await;

    // Validation of the first company: every check passes.
    nav(&b, "nav-validation", "/validation").await;
    b.find("form#validate-form select[name=realm]")
        .await
        .select_by_value(&ids[0])
        .await
        .unwrap();
    b.click("button#validate-submit").await;
    b.find("#validation-report").await;
    b.until(
        "validation checks shown",
        "return document.querySelectorAll('tr.check').length > 0;",
    )
    .await;
    let failed = b.all("tr.check[data-status=fail]").await;
    assert!(failed.is_empty(), "{}", b.source().await);
    b.shot("validation").await;

    // Logged-in pages never show a secret.
    let html = b.client.source().await.unwrap();
    for secret in [sb.client_secret(), TOKEN] {
        assert!(!html.contains(secret), "a secret on a page");
    }
    b.close().await;
    eprintln!("dashboard login test: {:?}", started.elapsed());
}

/// A trigger made with the form, disabled and re-enabled, run now: the run's page follows it
/// live to the end; a second run shows in the overview's live section, updated by script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_disables_enables_and_runs_a_trigger_now_watching_it_live() {
    let started = Instant::now();
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let realm = sb.realm_id().to_string();
    let server = serve(
        &sb,
        &db,
        dir.path(),
        ServeOptions {
            token: None,
            scheduler: true,
            registry_only: false,
        },
    );
    let b = Browser::start("triggers").await;
    b.goto(&format!("{}/triggers", server.url)).await;
    b.find("table#triggers").await;
    assert_nav(&b).await;
    assert_csrf_on_every_post_form(&b).await;

    // Create one with the form: a nightly sync of the company.
    let form = b.find("form#trigger-create").await;
    for (name, value) in [
        ("name", "browser_nightly"),
        ("pipeline", "qb_sync"),
        ("cron", "0 3 * * *"),
        ("timezone", "UTC"),
        ("realm", realm.as_str()),
    ] {
        let field = form
            .find(Locator::Css(&format!("[name={name}]")))
            .await
            .unwrap_or_else(|e| panic!("field {name}: {e}"));
        if field.tag_name().await.unwrap() == "select" {
            field.select_by_value(value).await.unwrap();
        } else {
            field.clear().await.unwrap();
            field.send_keys(value).await.unwrap();
        }
    }
    let kind = form.find(Locator::Css("[name=kind]")).await.unwrap();
    if kind.tag_name().await.unwrap() == "select" {
        kind.select_by_value("cron").await.unwrap();
    } else {
        form.find(Locator::Css("[name=kind][value=cron]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    b.click("button#trigger-create-submit").await;
    let row = "table#triggers tr[data-trigger=browser_nightly]";
    b.find(&format!("{row}[data-status=enabled] button.disable"))
        .await;
    let shown = run(
        &sb,
        &db,
        dir.path(),
        &["trigger", "show", "browser_nightly"],
    );
    assert!(shown.contains("0 3 * * *"), "{shown}");
    b.shot("triggers").await;

    // Disable, re-enable: the row says so, and so does the ledger.
    b.click(&format!("{row} button.disable")).await;
    b.find(&format!("{row}[data-status=disabled] button.enable"))
        .await;
    assert_eq!(
        trigger_status(&sb, &db, dir.path(), "browser_nightly"),
        "inactive"
    );
    b.shot("triggers-disabled").await;
    b.click(&format!("{row} button.enable")).await;
    b.find(&format!("{row}[data-status=enabled] button.disable"))
        .await;
    assert_eq!(
        trigger_status(&sb, &db, dir.path(), "browser_nightly"),
        "active"
    );

    // Run now, the first full sync made slow: the run's page shows it running, then
    // succeeded, without a reload.
    let mut faults = sb.state().faults();
    faults.latency = Duration::from_millis(200);
    sb.state().set_faults(faults.clone());
    b.click(&format!("{row} button.run-now")).await;
    b.until(
        "on the started run's page",
        "return /^\\/runs\\/\\d+$/.test(location.pathname);",
    )
    .await;
    let first_run = b
        .url()
        .await
        .path()
        .trim_start_matches("/runs/")
        .to_string();
    b.find("#run-status").await;
    b.watch_text("#run-status").await;
    assert_eq!(
        b.watched("#run-status").await,
        ["running"],
        "{}",
        server.log()
    );
    b.shot("run-running").await;
    // The script turns the status to succeeded in place (then reloads the finished page).
    b.until(
        "the script shows the run succeeded",
        "return JSON.parse(sessionStorage.getItem('qboWatch:#run-status')).includes('succeeded');",
    )
    .await;
    let seen = b.watched("#run-status").await;
    assert_eq!(
        seen.first().map(String::as_str),
        Some("running"),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|s| s == "running" || s == "succeeded"),
        "{seen:?}"
    );
    b.until(
        "the finished page says succeeded",
        "return document.querySelector('#run-status').textContent.trim() === 'succeeded';",
    )
    .await;
    b.find("table#run-entities tr[data-entity=customers]").await;
    b.shot("run-finished").await;

    // A second, slower run: the overview's live section shows it, refreshed by script, and
    // lets it go when it ends.
    faults.latency = Duration::from_millis(1500);
    sb.state().set_faults(faults);
    b.goto(&format!("{}/triggers", server.url)).await;
    b.click(&format!("{row} button.run-now")).await;
    b.until(
        "on the second run's page",
        &format!(
            "return /^\\/runs\\/\\d+$/.test(location.pathname) && location.pathname !== {};",
            q(&format!("/runs/{first_run}"))
        ),
    )
    .await;
    let second_run = b
        .url()
        .await
        .path()
        .trim_start_matches("/runs/")
        .to_string();
    b.goto(&format!("{}/", server.url)).await;
    b.mark_document().await;
    let live = format!("section#live tr[data-run={}]", q(&second_run));
    b.find(&format!("{live} td.pages")).await;
    for cell in ["records", "rate", "eta"] {
        b.find(&format!("{live} td.{cell}")).await;
    }
    b.shot("overview-live").await;
    b.until(
        "the finished run leaves the live section",
        &format!("return document.querySelector({}) === null;", q(&live)),
    )
    .await;
    assert!(
        b.same_document().await,
        "the live section changed without a reload"
    );
    let status = run(
        &sb,
        &db,
        dir.path(),
        &["runs", "show", &second_run, "--json"],
    );
    assert!(status.contains("\"succeeded\""), "{status}");
    b.close().await;
    eprintln!("dashboard triggers test: {:?}", started.elapsed());
}

/// Connecting a company from the overview: the sandbox's consent page (auto-consent) sends
/// the browser back to the dashboard, which registers the company and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_connects_a_company_through_the_consent_page() {
    let sb = sandbox(qbo_sandbox::SandboxConfig {
        realms: 2,
        ..small_company()
    })
    .await;
    let first = sb.realm_ids()[0].to_string();
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        &sb,
        &db,
        dir.path(),
        ServeOptions {
            token: Some(TOKEN),
            scheduler: false,
            registry_only: true,
        },
    );
    let b = Browser::start("connect").await;
    b.goto(&format!("{}/", server.url)).await;
    log_in(&b, TOKEN).await;
    b.find("table#overview").await;
    b.click("form#connect-form button#connect-submit").await;
    b.until(
        "back on the overview, connected",
        "return location.pathname === '/' && location.search.includes('connected=');",
    )
    .await;
    let at = b.url().await;
    let connected: Option<String> = at
        .query_pairs()
        .find(|(k, _)| k == "connected")
        .map(|(_, v)| v.into_owned());
    assert_eq!(connected.as_deref(), Some(first.as_str()), "{at}");
    assert!(b.text("#flash").await.contains(&first));
    let html = b.client.source().await.unwrap();
    for secret in [sb.client_secret(), sb.refresh_token_of(&first).unwrap()] {
        assert!(!html.contains(secret), "a secret on the page");
    }
    b.shot("connected").await;
    let list = run(&sb, &db, dir.path(), &["realm", "list", "--json"]);
    assert!(list.contains(&first), "{list}");
    run(
        &sb,
        &db,
        dir.path(),
        &[
            "sync",
            "--realm",
            &first,
            "--entity",
            "customers",
            "--no-progress",
        ],
    );

    // As with Intuit, the way back starts on another site: the dashboard is opened as
    // http://localhost:PORT (so its redirect URI names localhost) while the consent page is
    // on http://127.0.0.1, and the browser goes to the consent page from a page of that
    // other site, as a user clicking "Connect" on Intuit's page does.
    let local = server.url.replace("://127.0.0.1:", "://localhost:");
    b.goto(&format!("{local}/")).await;
    log_in(&b, TOKEN).await;
    b.find("table#overview").await;
    // The consent URL of a flow started for localhost (a script's POST: the bearer needs no
    // CSRF field).
    let started = qbo_client::token_http_client(&fast_http())
        .unwrap()
        .post(format!("{local}/connect"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(started.status().as_u16(), 303);
    let consent = started.headers()["location"].to_str().unwrap().to_string();
    assert!(
        consent.contains("redirect_uri=http%3A%2F%2Flocalhost%3A"),
        "{consent}"
    );
    b.goto(&format!("{}/", sb.base_url())).await;
    b.js(&format!("location.href = {}; return true;", q(&consent)))
        .await;
    b.until(
        "back on the dashboard",
        "return location.hostname === 'localhost' &&
                (location.pathname === '/' || location.pathname === '/login');",
    )
    .await;
    // The session is SameSite=Lax: sent with the top-level navigation back from the other
    // site, so no second sign-in (and the code never sits in a login page's URL).
    assert_eq!(b.url().await.path(), "/", "{}", b.url().await);
    b.until(
        "connected through a cross-site consent",
        "return location.pathname === '/' && location.search.includes('connected=');",
    )
    .await;
    assert!(b.text("#flash").await.contains(&first));
    b.close().await;
}

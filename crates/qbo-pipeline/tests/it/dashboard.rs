//! The dashboard over real HTTP (`serve` with its scheduler, two companies): the login form
//! and its cookie, pages and their JSON, CSRF refusals, triggers created, disabled, enabled,
//! run now and deleted from the pages, a validation with its evidence, connecting a third
//! company through the sandbox's consent page, bad input, and no secret in any answer. The
//! router's gates are also tested without a socket (`router_*`).

use crate::realms::{app_only, with_stdin};
use crate::support::*;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use std::time::{Duration, Instant};

const TOKEN: &str = "dashboard-token-0123456789abcdef";

fn serve(sb: &qbo_sandbox::RunningSandbox, db: &TestDb, dir: &std::path::Path) -> WebServer {
    let mut c = command(dir);
    app_only(&mut c, sb, db);
    c.env("QBO_WEB_TOKEN", TOKEN)
        .env("QBO_AUTH_URL", format!("{}/connect/oauth2", sb.base_url()))
        .args(["serve", "--listen", "127.0.0.1:0", "--poll-secs", "30"])
        .arg("--evidence-dir")
        .arg(dir.join("evidence"));
    start_serve(c, dir)
}

/// A browser-like client: no redirects followed, the session cookie sent when given.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
    /// Every body and header seen, for the secret scan.
    seen: Vec<String>,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> String {
        self.headers
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser {
            // Redirects are answers to check, not to follow.
            http: qbo_client::token_http_client(&qbo_pipeline::config::HttpSettings {
                request_timeout: Duration::from_secs(60),
                ..fast_http()
            })
            .unwrap(),
            base: base.to_string(),
            cookie: None,
            seen: Vec::new(),
        }
    }

    async fn send(&mut self, r: reqwest::RequestBuilder) -> Answer {
        let r = match &self.cookie {
            Some(c) => r.header("cookie", c),
            None => r,
        };
        let a = r.send().await.unwrap();
        let status = a.status().as_u16();
        let headers = a.headers().clone();
        let body = a.text().await.unwrap();
        self.seen.push(format!("{headers:?}\n{body}"));
        Answer {
            status,
            headers,
            body,
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        let r = self.http.get(self.url(path));
        self.send(r).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let r = self
            .http
            .post(self.url(path))
            .header("origin", self.base.clone())
            .form(form);
        self.send(r).await
    }

    async fn json(&mut self, path: &str) -> serde_json::Value {
        let a = self.get(path).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        serde_json::from_str(&a.body).unwrap()
    }
}

/// The CSRF token a page's forms carry.
fn csrf(page: &str) -> String {
    let at = page
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token");
    let rest = &page[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

async fn wait_run(b: &mut Browser, id: i64) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let detail = b.json(&format!("/api/runs/{id}")).await;
        if detail["run"]["status"] != "running" {
            return detail;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "run {id} never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_end_to_end_behind_its_login() {
    let sb = sandbox(qbo_sandbox::SandboxConfig {
        realms: 3,
        ..small_company()
    })
    .await;
    let ids: Vec<String> = sb.realm_ids().iter().map(|s| s.to_string()).collect();
    let (one, two, third) = (&ids[0], &ids[1], &ids[2]);
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    for id in [one, two] {
        let mut c = command(dir.path());
        app_only(&mut c, &sb, &db);
        c.args(["realm", "add", "--realm-id", id]);
        let out = with_stdin(c, sb.refresh_token_of(id).unwrap());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let sync = || {
        let mut c = command(dir.path());
        app_only(&mut c, &sb, &db);
        let out = c
            .args([
                "sync",
                "--all-realms",
                "--entity",
                "customers,invoices,items",
                "--no-progress",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    };
    sync();
    sb.state()
        .realm(one)
        .unwrap()
        .delete("Invoice", "8")
        .unwrap();
    sync();

    let server = serve(&sb, &db, dir.path());
    let mut b = Browser::new(&server.url);

    // Signed out: pages go to the login form, the API and metrics answer 401.
    let a = b.get("/runs?status=failed").await;
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(a.location(), "/login?next=%2Fruns%3Fstatus%3Dfailed");
    for path in ["/api/overview", "/api/live", "/metrics", "/api/runs/1"] {
        assert_eq!(b.get(path).await.status, 401, "{path}");
    }
    assert_eq!(b.get("/healthz").await.status, 200);
    let login = b.get("/login?next=/runs").await;
    assert_eq!(login.status, 200);
    assert!(login.body.contains(r#"id="login-form""#), "{}", login.body);
    let login_csrf = csrf(&login.body);

    // Wrong token, no CSRF token, another site: refused, no cookie.
    let a = b
        .post(
            "/login",
            &[("token", "wrong"), ("next", "/runs"), ("csrf", &login_csrf)],
        )
        .await;
    assert_eq!(a.status, 401);
    assert!(a.body.contains("login-error"));
    assert!(a.headers.get(SET_COOKIE).is_none());
    let a = b
        .post("/login", &[("token", TOKEN), ("next", "/runs")])
        .await;
    assert_eq!(a.status, 403, "{}", a.body);
    let r = b
        .http
        .post(b.url("/login"))
        .header("origin", "http://evil.example")
        .form(&[("token", TOKEN), ("csrf", login_csrf.as_str())]);
    assert_eq!(b.send(r).await.status, 403);

    // The right token: a 12-hour HttpOnly, SameSite=Lax cookie that is not the token.
    let a = b
        .post(
            "/login",
            &[("token", TOKEN), ("next", "/runs"), ("csrf", &login_csrf)],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(a.location(), "/runs");
    let cookie = a.headers[SET_COOKIE].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    assert!(!cookie.contains(TOKEN));
    b.cookie = Some(cookie.split(';').next().unwrap().to_string());
    // An open redirect is not possible.
    let a = b
        .post(
            "/login",
            &[
                ("token", TOKEN),
                ("next", "//evil.example/"),
                ("csrf", &login_csrf),
            ],
        )
        .await;
    assert_eq!(a.location(), "/");

    // The overview: both companies, rows and deletions as the tables hold them.
    let page = b.get("/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    for id in [one, two] {
        assert!(
            page.body
                .contains(&format!(r#"data-realm="{id}" data-entity="invoices""#)),
            "{id}"
        );
    }
    // One company's entities only.
    let page = b.get(&format!("/?realm={two}")).await;
    assert!(
        page.body
            .contains(&format!(r#"data-realm="{two}" data-entity="invoices""#))
    );
    assert!(
        !page
            .body
            .contains(&format!(r#"data-realm="{one}" data-entity="invoices""#))
    );
    assert!(page.body.contains(r#"id="overview-filter""#));
    let overview = b.json("/api/overview").await;
    let cell = |realm: &str, entity: &str| {
        overview["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["realm_id"] == realm && c["entity"] == entity)
            .unwrap()
            .clone()
    };
    let invoices = cell(one, "invoices");
    assert_eq!(invoices["deleted"], 1, "{invoices}");
    assert_eq!(invoices["state"], "ok", "{invoices}");
    assert_eq!(invoices["rows"], invoices["proven_rows"], "{invoices}");
    assert_eq!(invoices["rows"], invoices["qbo_count"], "{invoices}");
    assert_eq!(cell(two, "invoices")["deleted"], 0);
    assert_eq!(cell(one, "payments")["state"], "never");
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM raw.qb_invoices WHERE realm_id = $1 AND deleted_at_utc IS NULL",
    )
    .bind(one)
    .fetch_one(&db.pool().await)
    .await
    .unwrap();
    assert_eq!(invoices["rows"], stored);

    // Runs: the list, a filter, a run's page with its entities and log.
    let runs = b.json("/api/runs").await;
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 4, "two syncs of two companies");
    let page = b.get(&format!("/runs?realm={one}&status=succeeded")).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body.matches("class=\"run-link\"").count(), 2);
    assert!(page.body.contains(r#"id="chart-duration""#));
    let latest = runs[0]["id"].as_i64().unwrap();
    let page = b.get(&format!("/runs/{latest}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"id="run-entities""#));
    assert!(page.body.contains(r#"data-entity="invoices""#));
    let detail = b.json(&format!("/api/runs/{latest}")).await;
    let log: Vec<&str> = detail["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(log.iter().any(|l| l.starts_with("sync started")), "{log:?}");
    assert!(
        log.iter().any(|l| l.starts_with("run succeeded")),
        "{log:?}"
    );

    // Triggers: refused without the CSRF token, created with it.
    let page = b.get("/triggers").await;
    let token = csrf(&page.body);
    let form = |csrf: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("name", "every-15".to_string()),
            ("pipeline", "qb_sync".to_string()),
            ("realm", two.clone()),
            ("kind", "cron".to_string()),
            ("cron", "*/15 * * * *".to_string()),
            ("timezone", "America/Bogota".to_string()),
        ]
    };
    let refused = b
        .post(
            "/triggers",
            &form("forged")
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(refused.status, 403);
    assert!(b.json("/api/triggers").await.as_array().unwrap().is_empty());
    let bad = b
        .post(
            "/triggers",
            &[
                ("csrf", token.as_str()),
                ("name", "bad one"),
                ("pipeline", "qb_nothing"),
                ("realm", two),
                ("kind", "cron"),
                ("cron", "every now and then"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains(r#"id="problem""#), "{}", bad.body);
    let created = b
        .post(
            "/triggers",
            &form(&token)
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.body);
    let page = b.get(&created.location()).await;
    assert!(
        page.body.contains("Trigger every-15 created"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains(r#"data-trigger="every-15" data-status="enabled""#)
    );

    // Disable, enable, run now (the in-process scheduler starts it at once), delete.
    let a = b
        .post("/triggers/every-15/disable", &[("csrf", &token)])
        .await;
    assert_eq!(a.status, 303);
    let page = b.get("/triggers").await;
    assert!(
        page.body
            .contains(r#"data-trigger="every-15" data-status="disabled""#)
    );
    let a = b.post("/triggers/every-15/run", &[("csrf", &token)]).await;
    assert_eq!(a.status, 409, "a disabled trigger does not run: {}", a.body);
    let a = b
        .post("/triggers/every-15/enable", &[("csrf", &token)])
        .await;
    assert_eq!(a.status, 303);
    let a = b.post("/triggers/every-15/run", &[("csrf", &token)]).await;
    assert_eq!(a.status, 303, "{}", a.body);
    let run_id: i64 = a
        .location()
        .strip_prefix("/runs/")
        .unwrap_or_else(|| panic!("run now answers the run: {}", a.location()))
        .parse()
        .unwrap();
    let finished = wait_run(&mut b, run_id).await;
    assert_eq!(finished["run"]["status"], "succeeded", "{finished}");
    assert_eq!(finished["run"]["trigger_name"], "every-15");
    assert_eq!(finished["run"]["realm_id"], two.as_str());
    let a = b
        .post("/triggers/every-15/explode", &[("csrf", &token)])
        .await;
    assert_eq!(a.status, 404);
    let a = b
        .post("/triggers/every-15/delete", &[("csrf", &token)])
        .await;
    assert_eq!(a.status, 303);
    assert!(b.json("/api/triggers").await.as_array().unwrap().is_empty());
    let a = b
        .post("/triggers/every-15/delete", &[("csrf", &token)])
        .await;
    assert_eq!(a.status, 400, "deleting it again: {}", a.body);
    assert!(a.body.contains("every-15"), "{}", a.body);

    // Validation of a company, its report and archived evidence.
    let page = b.get("/validation").await;
    let started = Instant::now();
    let a = b
        .post(
            "/validation",
            &[("csrf", &csrf(&page.body)), ("realm", one)],
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.body);
    eprintln!("validation took {:?}", started.elapsed());
    let page = b.get(&a.location()).await;
    assert!(page.body.contains(r#"id="validation-report""#));
    assert!(page.body.contains(r#"class="check" data-status="pass""#));
    let evidence = page
        .body
        .split('"')
        .find(|s| s.ends_with("/evidence/report.json"))
        .expect("an evidence link")
        .to_string();
    let report = b.get(&evidence).await;
    assert_eq!(report.status, 200);
    assert!(report.body.contains("\"checks\""));
    assert_eq!(
        b.get("/validation/1/evidence/..%2F..%2Fetc%2Fpasswd")
            .await
            .status,
        404
    );

    // Connecting a third company: the consent page, back to the dashboard, registered.
    let page = b.get("/").await;
    let a = b.post("/connect", &[("csrf", &csrf(&page.body))]).await;
    assert_eq!(a.status, 303);
    let consent = a.location();
    assert!(consent.contains("/connect/oauth2?client_id="), "{consent}");
    assert!(
        consent.contains("redirect_uri=http%3A%2F%2F127.0.0.1"),
        "{consent}"
    );
    let back = b.get(&format!("{consent}&realm={third}")).await;
    assert_eq!(back.status, 302, "{}", back.body);
    let callback = back.location();
    // A forged state is refused and stores nothing.
    let forged = callback.replace("state=", "state=forged");
    assert_eq!(b.get(&forged).await.status, 400);
    let a = b.get(&callback).await;
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(a.location(), format!("/?connected={third}"));
    let page = b.get(&a.location()).await;
    assert!(page.body.contains(r#"id="flash""#));
    assert!(page.body.contains(third.as_str()));
    let realms = b.json("/api/realms").await;
    assert!(
        realms
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["realm_id"] == third.as_str() && r["has_token"] == true),
        "{realms}"
    );
    // The same answer again: its state is used.
    assert_eq!(b.get(&callback).await.status, 400);

    // Usage: every company, with its calls this month.
    let usage = b.json("/api/usage").await;
    let row = usage
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["realm_id"] == one.as_str())
        .unwrap()
        .clone();
    assert!(row["calls_this_month"].as_u64().unwrap() > 0, "{row}");
    // The pipeline's own pace, under QBO's 500.
    assert_eq!(row["requests_per_minute_limit"], 490);
    let page = b.get("/usage").await;
    assert!(page.body.contains(&format!(r#"<tr data-realm="{third}">"#)));

    // Bad input: clear 4xx.
    for (path, status) in [
        ("/runs/abc", 400),
        ("/runs/999999", 404),
        ("/api/runs/abc", 400),
        ("/api/runs?window=2y", 400),
        ("/runs?status=weird", 400),
        ("/static/nothing.js", 404),
        ("/validation/abc", 400),
        ("/nothing/here", 404),
    ] {
        let a = b.get(path).await;
        assert_eq!(a.status, status, "{path}: {}", a.body);
    }

    // Signing out ends the session in this browser.
    let page = b.get("/").await;
    let a = b.post("/logout", &[("csrf", &csrf(&page.body))]).await;
    assert_eq!(a.status, 303);
    assert!(
        a.headers[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );

    // No secret in any answer.
    let mut secrets = vec![sb.client_secret().to_string(), TOKEN.to_string()];
    for id in &ids {
        secrets.push(sb.refresh_token_of(id).unwrap().to_string());
    }
    for seen in &b.seen {
        for s in &secrets {
            assert!(!seen.contains(s.as_str()), "a secret in an answer: {seen}");
        }
    }
}

/// The router's gates, without a socket.
mod router {
    use crate::support::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use qbo_pipeline::backfill::StopSignal;
    use qbo_pipeline::config::QboApp;
    use qbo_pipeline::runtime::Runtime;
    use qbo_pipeline::web::{WebOptions, WebState, router};
    use secrecy::SecretString;
    use std::sync::Arc;
    use tower::ServiceExt;

    const TOKEN: &str = "router-token-0123456789abcdef";

    async fn app(token: Option<&str>) -> (axum::Router, TestDb) {
        let sb = sandbox(small_company()).await;
        let db = TestDb::create().await;
        let runtime = Runtime::open(
            &db.settings(),
            QboApp::single(&qbo_settings(&sb)),
            fast_http(),
            4,
            StopSignal::default(),
        )
        .await
        .unwrap();
        let state = WebState::new(
            Arc::new(runtime),
            WebOptions {
                token: token.map(|t| SecretString::from(t.to_string())),
                ..WebOptions::new()
            },
        );
        (router(Arc::new(state)), db)
    }

    async fn call(app: &axum::Router, r: Request<Body>) -> (StatusCode, String, String) {
        let a = app.clone().oneshot(r).await.unwrap();
        let status = a.status();
        let location = a
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = axum::body::to_bytes(a.into_body(), 1 << 20).await.unwrap();
        (
            status,
            location,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn router_gates_pages_api_and_posts() {
        let (app, _db) = app(Some(TOKEN)).await;
        let (s, loc, _) = call(&app, get("/triggers")).await;
        assert_eq!(
            (s, loc.as_str()),
            (StatusCode::SEE_OTHER, "/login?next=%2Ftriggers")
        );
        assert_eq!(
            call(&app, get("/api/runs")).await.0,
            StatusCode::UNAUTHORIZED
        );
        let bearer = |path: &str| {
            Request::get(path)
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap()
        };
        assert_eq!(call(&app, bearer("/api/runs")).await.0, StatusCode::OK);
        assert_eq!(call(&app, bearer("/")).await.0, StatusCode::OK);
        assert_eq!(
            call(&app, bearer("/api/runs/x")).await.0,
            StatusCode::BAD_REQUEST
        );
        // A POST from a signed-in browser without the CSRF token changes nothing.
        let (status, _, body) = call(
            &app,
            Request::post("/triggers/x/delete")
                .header(header::COOKIE, "qbo_session=1.forged")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::SEE_OTHER,
            "a forged cookie is no session: {body}"
        );
        // A bearer script from another site is refused too.
        let (status, ..) = call(
            &app,
            Request::post("/triggers/x/delete")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::ORIGIN, "https://evil.example")
                .header(header::HOST, "127.0.0.1:8080")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // Security headers on every answer.
        let a = app.clone().oneshot(get("/healthz")).await.unwrap();
        let csp = a.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(a.headers()[header::X_FRAME_OPTIONS], "DENY");
    }

    #[tokio::test]
    async fn router_without_a_token_still_needs_csrf() {
        let (app, _db) = app(None).await;
        let (status, _, page) = call(&app, get("/triggers")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains(r#"name="csrf""#));
        assert_eq!(call(&app, get("/login")).await.0, StatusCode::SEE_OTHER);
        let (status, ..) = call(
            &app,
            Request::post("/triggers")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(
                    "name=x&pipeline=qb_sync&kind=cron&cron=%40daily",
                ))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (_, _, triggers) = call(&app, get("/api/triggers")).await;
        assert_eq!(triggers, "[]");
    }
}

/// A run QBO refused: its page names QBO's fault and the `intuit_tid` to quote to Intuit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_shows_qbos_fault_and_intuit_tid() {
    let mut config = small_company();
    config.faults.scripted = vec![qbo_sandbox::ScriptedFault {
        endpoint: qbo_sandbox::Endpoint::Query,
        count: 1000,
        action: qbo_sandbox::FaultAction::Status(403),
    }];
    let sb = sandbox(config).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    let out = c
        .args(["sync", "--entity", "customers", "--no-progress"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let mut c = command(dir.path());
    with_sandbox(&mut c, &sb, &db);
    c.args(["serve", "--listen", "127.0.0.1:0", "--no-scheduler"]);
    let server = start_serve(c, dir.path());
    let mut b = Browser::new(&server.url);
    let runs = b.json("/api/runs").await;
    assert_eq!(runs[0]["status"], "failed", "{runs}");
    let id = runs[0]["id"].as_i64().unwrap();
    let page = b.get(&format!("/runs/{id}")).await;
    assert_eq!(page.status, 200);
    let errors = &page.body[page.body.find(r#"id="run-errors""#).unwrap()..];
    let errors = &errors[..errors.find("</section>").unwrap()];
    assert!(errors.contains("403"), "{errors}");
    assert!(errors.contains("intuit_tid 1-"), "{errors}");
    let overview = b.json("/api/overview").await;
    let cell = overview["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["entity"] == "customers")
        .unwrap()
        .clone();
    assert_eq!(cell["state"], "failed", "{cell}");
}

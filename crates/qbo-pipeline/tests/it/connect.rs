//! `connect`: the authorization-code flow through the sandbox's consent endpoint, a forged
//! `state` refused while the real answer still connects, the company then synced.

use crate::realms::app_only;
use crate::support::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

/// A client that does not follow redirects (the test follows Intuit's 302 itself).
fn client() -> reqwest::Client {
    qbo_client::token_http_client(&fast_http()).expect("an HTTP client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_registers_the_company_the_consent_page_sends_back() {
    let sb = sandbox(qbo_sandbox::SandboxConfig {
        realms: 2,
        ..small_company()
    })
    .await;
    let second = sb.realm_ids()[1].to_string();
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let mut child = c
        .env("QBO_AUTH_URL", format!("{}/connect/oauth2", sb.base_url()))
        .args([
            "connect",
            "--redirect-uri",
            "http://127.0.0.1:0/callback",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let consent = line
        .trim()
        .strip_prefix("QBO_CONSENT_URL=")
        .unwrap_or_else(|| panic!("first line is the consent URL: {line}"))
        .to_string();
    let parsed = url::Url::parse(&consent).unwrap();
    let q: std::collections::HashMap<String, String> = parsed.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], sb.client_id());
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["scope"], "com.intuit.quickbooks.accounting");
    assert!(q["state"].len() >= 32);
    let redirect = url::Url::parse(&q["redirect_uri"]).unwrap();
    assert_ne!(redirect.port(), Some(0), "the real port is named");

    // A forged answer (wrong state), and one without a state: 400, and connect keeps waiting.
    for forged in ["state=forged&code=x&realmId=1", "code=x&realmId=1"] {
        let a = client()
            .get(format!("{redirect}?{forged}"))
            .send()
            .await
            .unwrap();
        assert_eq!(a.status().as_u16(), 400, "{forged}");
    }
    assert!(child.try_wait().unwrap().is_none(), "still waiting");

    // The consent page (auto-consent) sends the browser back with a code for the company.
    let a = client()
        .get(format!("{consent}&realm={second}"))
        .send()
        .await
        .unwrap();
    assert_eq!(a.status().as_u16(), 302);
    let back = a.headers()["location"].to_str().unwrap().to_string();
    assert!(back.starts_with(redirect.as_str()), "{back}");
    let a = client().get(&back).send().await.unwrap();
    let status = a.status().as_u16();
    let page = a.text().await.unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(&format!("Company {second} is connected")),
        "{page}"
    );
    for secret in [sb.client_secret(), sb.refresh_token_of(&second).unwrap()] {
        assert!(!page.contains(secret));
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{rest}\n{err}");
    let registered: serde_json::Value = serde_json::from_str(&rest).unwrap();
    assert_eq!(registered["realm_id"], second.as_str());
    for secret in [sb.client_secret(), sb.refresh_token_of(&second).unwrap()] {
        assert!(!rest.contains(secret) && !err.contains(secret));
    }
    // A code is used once: the same answer again is refused by the token endpoint.
    let code: String = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
    ];
    let again = client()
        .post(sb.token_url())
        .basic_auth(sb.client_id(), Some(sb.client_secret()))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 400);

    // The company is registered with a working token: a sync of it succeeds.
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let out = c
        .args([
            "sync",
            "--realm",
            &second,
            "--entity",
            "customers",
            "--no-progress",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.qb_customers WHERE realm_id = $1")
        .bind(&second)
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert_eq!(
        n as usize,
        sb.realm(&second).unwrap().all_records("Customer").len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_rejects_a_redirect_elsewhere_and_times_out_cleanly() {
    let sb = sandbox(small_company()).await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let out = c
        .args(["connect", "--redirect-uri", "http://example.com/callback"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("must point at this machine"),
        "{}",
        text(&out)
    );
    let mut c = command(dir.path());
    app_only(&mut c, &sb, &db);
    let started = std::time::Instant::now();
    let out = c
        .args([
            "connect",
            "--redirect-uri",
            "http://127.0.0.1:0/callback",
            "--timeout-secs",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no answer from the consent page"),
        "{}",
        text(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

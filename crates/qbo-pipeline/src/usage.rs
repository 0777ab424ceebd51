//! QBO API usage: every request counted per realm, day, endpoint and outcome in
//! `qbo_pipeline.api_usage` (aggregated in memory from the event bus's `RequestFinished`
//! events and added to the table every few seconds, never a row per request), the
//! `qbo-pipeline usage` report, and the optional monthly call budget
//! (`QBO_MONTHLY_CALL_BUDGET`) that stops a run before it goes past it: Intuit meters data
//! calls on its partner tiers and blocks, rather than throttles, past the allowance.

use crate::events::{Event, Sink};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use qbo_client::{Endpoint, Outcome, RequestGate};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Mutex;

/// The outcome as it is counted: `ok`, `http_<status>`, `fault` (inside a 200), `transport`.
pub fn outcome_label(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::Status { status, .. } => format!("http_{status}"),
        Outcome::Fault { .. } => "fault".into(),
        Outcome::Transport => "transport".into(),
    }
}

type Key = (String, NaiveDate, &'static str, String);

/// Counts requests from the bus until [`UsageMeter::flush`] adds them to the table.
#[derive(Default)]
pub struct UsageMeter {
    pending: Mutex<HashMap<Key, i64>>,
}

impl Sink for UsageMeter {
    fn on(&self, event: &Event) {
        if let Event::RequestFinished(r) = event {
            let key = (
                r.realm.to_string(),
                Utc::now().date_naive(),
                r.endpoint.as_str(),
                outcome_label(&r.outcome),
            );
            *self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key)
                .or_default() += 1;
        }
    }
}

impl UsageMeter {
    /// Adds the counts gathered since the last flush to `qbo_pipeline.api_usage`, in one
    /// statement; on failure they are kept for the next flush. Returns the requests added per
    /// realm.
    pub async fn flush(&self, pool: &PgPool) -> Result<HashMap<String, u64>, sqlx::Error> {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.is_empty() {
            return Ok(HashMap::new());
        }
        let mut realms = Vec::new();
        let mut days = Vec::new();
        let mut endpoints = Vec::new();
        let mut outcomes = Vec::new();
        let mut counts = Vec::new();
        for ((realm, day, endpoint, outcome), n) in &taken {
            realms.push(realm.clone());
            days.push(*day);
            endpoints.push(endpoint.to_string());
            outcomes.push(outcome.clone());
            counts.push(*n);
        }
        let written = sqlx::query(
            "INSERT INTO qbo_pipeline.api_usage AS u (realm_id, day, endpoint, outcome, requests)
             SELECT * FROM UNNEST($1::text[], $2::date[], $3::text[], $4::text[], $5::bigint[])
             ON CONFLICT (realm_id, day, endpoint, outcome)
             DO UPDATE SET requests = u.requests + EXCLUDED.requests",
        )
        .bind(&realms)
        .bind(&days)
        .bind(&endpoints)
        .bind(&outcomes)
        .bind(&counts)
        .execute(pool)
        .await;
        if let Err(e) = written {
            // Keep them for the next try.
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (k, n) in taken {
                *pending.entry(k).or_default() += n;
            }
            return Err(e);
        }
        let mut per_realm: HashMap<String, u64> = HashMap::new();
        for ((realm, ..), n) in taken {
            *per_realm.entry(realm).or_default() += n.max(0) as u64;
        }
        Ok(per_realm)
    }
}

/// First day of `t`'s month (UTC).
pub fn month_start(t: DateTime<Utc>) -> NaiveDate {
    NaiveDate::from_ymd_opt(t.year(), t.month(), 1).unwrap_or(t.date_naive())
}

/// API calls (every endpoint but the token endpoint, which Intuit does not meter as data
/// calls) of each realm this month, from the table.
pub async fn month_calls(pool: &PgPool) -> Result<HashMap<String, u64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT realm_id, sum(requests)::bigint FROM qbo_pipeline.api_usage
         WHERE day >= $1 AND endpoint <> 'token' GROUP BY realm_id",
    )
    .bind(month_start(Utc::now()))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(r, n)| (r, n.max(0) as u64))
        .collect())
}

/// The monthly call budget of every realm: admits a request while the month's calls (those
/// in the table, plus those this process sent since its last flush) are below the budget.
/// Other processes' calls are seen at each flush (every few seconds), so concurrent
/// processes may pass the budget by what they send in that interval.
pub struct MonthlyBudget {
    limit: u64,
    state: Mutex<BudgetState>,
}

#[derive(Default)]
struct BudgetState {
    month: Option<NaiveDate>,
    /// Calls this month in the table at the last refresh.
    stored: HashMap<String, u64>,
    /// Calls admitted since (not yet in `stored`).
    admitted: HashMap<String, u64>,
}

impl MonthlyBudget {
    pub fn new(limit: u64, stored: HashMap<String, u64>) -> MonthlyBudget {
        MonthlyBudget {
            limit,
            state: Mutex::new(BudgetState {
                month: Some(month_start(Utc::now())),
                stored,
                admitted: HashMap::new(),
            }),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// After a flush: the table's month totals, and the calls the flush added (no longer
    /// counted as admitted-but-unstored).
    pub fn refresh(&self, stored: HashMap<String, u64>, flushed: &HashMap<String, u64>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.stored = stored;
        for (realm, n) in flushed {
            if let Some(a) = s.admitted.get_mut(realm) {
                *a = a.saturating_sub(*n);
            }
        }
    }
}

impl RequestGate for MonthlyBudget {
    fn admit(&self, realm: &str, _endpoint: Endpoint) -> Result<(), String> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let month = month_start(Utc::now());
        if s.month != Some(month) {
            // A new month: the budget starts again.
            s.month = Some(month);
            s.stored.clear();
            s.admitted.clear();
        }
        let used =
            s.stored.get(realm).copied().unwrap_or(0) + s.admitted.get(realm).copied().unwrap_or(0);
        if used >= self.limit {
            return Err(format!(
                "the monthly call budget of realm {realm} is spent ({used} of {} API calls this month, QBO_MONTHLY_CALL_BUDGET); the run stops here and resumes from its checkpoints next month or with a larger budget",
                self.limit
            ));
        }
        *s.admitted.entry(realm.to_string()).or_default() += 1;
        Ok(())
    }
}

/// One realm's usage for `qbo-pipeline usage`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RealmUsage {
    pub realm_id: String,
    /// API calls (token endpoint excluded) today and this month (UTC).
    pub calls_today: u64,
    pub calls_this_month: u64,
    /// Requests this month answered 429 (throttled).
    pub throttled_this_month: u64,
    pub monthly_budget: Option<u64>,
    pub budget_left: Option<u64>,
    /// This month, per endpoint and outcome (token requests included).
    pub by_endpoint: Vec<EndpointUsage>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointUsage {
    pub endpoint: String,
    pub outcome: String,
    pub requests: u64,
}

/// Usage of every realm with any (or the realms given), this month.
pub async fn report(
    pool: &PgPool,
    realms: &[String],
    budget: Option<u64>,
) -> Result<Vec<RealmUsage>, sqlx::Error> {
    let today = Utc::now().date_naive();
    let rows: Vec<(String, NaiveDate, String, String, i64)> = sqlx::query_as(
        "SELECT realm_id, day, endpoint, outcome, requests FROM qbo_pipeline.api_usage
         WHERE day >= $1 AND (cardinality($2::text[]) = 0 OR realm_id = ANY($2))
         ORDER BY realm_id, endpoint, outcome",
    )
    .bind(month_start(Utc::now()))
    .bind(realms)
    .fetch_all(pool)
    .await?;
    let mut out: Vec<RealmUsage> = Vec::new();
    for (realm, day, endpoint, outcome, n) in rows {
        let n = n.max(0) as u64;
        if out.last().is_none_or(|u| u.realm_id != realm) {
            out.push(RealmUsage {
                realm_id: realm.clone(),
                calls_today: 0,
                calls_this_month: 0,
                throttled_this_month: 0,
                monthly_budget: budget,
                budget_left: None,
                by_endpoint: Vec::new(),
            });
        }
        let Some(u) = out.last_mut() else { continue };
        if endpoint != "token" {
            u.calls_this_month += n;
            if day == today {
                u.calls_today += n;
            }
        }
        if outcome == "http_429" {
            u.throttled_this_month += n;
        }
        match u
            .by_endpoint
            .iter_mut()
            .find(|e| e.endpoint == endpoint && e.outcome == outcome)
        {
            Some(e) => e.requests += n,
            None => u.by_endpoint.push(EndpointUsage {
                endpoint,
                outcome,
                requests: n,
            }),
        }
    }
    for u in &mut out {
        u.budget_left = budget.map(|b| b.saturating_sub(u.calls_this_month));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_admits_up_to_its_limit_per_realm() {
        let b = MonthlyBudget::new(3, HashMap::from([("a".to_string(), 2)]));
        assert!(b.admit("a", Endpoint::Query).is_ok());
        let refused = b.admit("a", Endpoint::Query).unwrap_err();
        assert!(refused.contains("3 of 3"), "{refused}");
        assert!(refused.contains("QBO_MONTHLY_CALL_BUDGET"), "{refused}");
        for _ in 0..3 {
            assert!(b.admit("b", Endpoint::Cdc).is_ok());
        }
        assert!(b.admit("b", Endpoint::Batch).is_err());
        // A flush moves admitted calls into the stored totals without counting them twice.
        b.refresh(
            HashMap::from([("a".to_string(), 3), ("b".to_string(), 3)]),
            &HashMap::from([("a".to_string(), 1), ("b".to_string(), 3)]),
        );
        assert!(b.admit("b", Endpoint::Query).is_err());
    }

    #[test]
    fn outcomes_are_labelled() {
        assert_eq!(outcome_label(&Outcome::Ok), "ok");
        assert_eq!(
            outcome_label(&Outcome::Status {
                status: 429,
                code: None
            }),
            "http_429"
        );
        assert_eq!(outcome_label(&Outcome::Fault { code: None }), "fault");
    }
}

//! The whole books over HTTP: every catalogue entity pages and counts its configured size,
//! every reference resolves, payments and balances add up, journal entries balance, the
//! singletons, ExchangeRate, RecurringTransaction and CreditCardPaymentTxn shapes, the
//! permission fault of an entity the company lacks, CDC of the new entities, determinism.

use std::collections::{BTreeMap, HashMap};

use qbo_entities::{ENTITIES, Feature, Kind};
use qbo_sandbox::SandboxConfig;
use qbo_sandbox::generate::GenKind;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::World;

fn company() -> SandboxConfig {
    SandboxConfig {
        customers: 30,
        items: 25,
        invoices: 400,
        features: Feature::OPTIONAL.into_iter().collect(),
        cdc_horizon: None,
        ..SandboxConfig::default()
    }
}

fn active_clause(kind: Kind) -> &'static str {
    if kind == Kind::NameList {
        " WHERE Active IN (true, false)"
    } else {
        ""
    }
}

/// Every record of `entity` (inactive included), paged 1000 at a time.
async fn all(world: &World, entity: &str) -> Vec<Value> {
    let def = qbo_entities::by_qbo_name(entity).unwrap();
    let mut out = Vec::new();
    let mut start = 1;
    loop {
        let q = format!(
            "SELECT * FROM {entity}{} STARTPOSITION {start} MAXRESULTS 1000",
            active_clause(def.kind)
        );
        let rows = world.rows(&q, def.response_key).await;
        let n = rows.len();
        out.extend(rows);
        if n < 1000 {
            return out;
        }
        start += 1000;
    }
}

fn cents(v: &Value) -> i64 {
    let text = v.to_string();
    let negative = text.starts_with('-');
    let text = text.trim_start_matches('-');
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let frac = format!("{frac:0<2}");
    let c = int.parse::<i64>().unwrap_or_else(|_| panic!("amount {v}")) * 100
        + frac[..2].parse::<i64>().unwrap();
    if negative { -c } else { c }
}

fn id_of(v: &Value) -> String {
    v["Id"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn every_entity_pages_and_counts_its_configured_size() {
    let config = company();
    let generator = config.generator().unwrap();
    let world = World::start(config).await;
    for def in ENTITIES {
        let kind = GenKind::from_name(def.qbo_name).unwrap();
        let size = generator.count(kind);
        assert!(size > 0, "{} has no records", def.qbo_name);
        let all = world
            .count(&format!(
                "SELECT COUNT(*) FROM {}{}",
                def.qbo_name,
                active_clause(def.kind)
            ))
            .await;
        assert_eq!(all, size, "{}", def.qbo_name);
        let default = world
            .count(&format!("select count(*) from {}", def.qbo_name))
            .await;
        if def.kind == Kind::NameList {
            assert!(default <= all, "{}", def.qbo_name);
            let inactive = world
                .count(&format!(
                    "SELECT COUNT(*) FROM {} WHERE Active = false",
                    def.qbo_name
                ))
                .await;
            assert_eq!(default + inactive, all, "{}", def.qbo_name);
        } else {
            assert_eq!(default, all, "{}", def.qbo_name);
        }
        let a = world
            .query(&format!("SELECT * FROM {} MAXRESULTS 1000", def.qbo_name))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}: {}", def.qbo_name, a.body);
        let v = a.json();
        let rows = v["QueryResponse"][def.response_key]
            .as_array()
            .unwrap_or_else(|| panic!("{}: {}", def.qbo_name, &a.body[..200.min(a.body.len())]));
        assert_eq!(rows.len() as u64, default.min(1000), "{}", def.qbo_name);
    }
    // The sizes scale from the invoices and follow --count.
    let g = SandboxConfig {
        invoices: 3000,
        counts: BTreeMap::from([("Vendor".to_owned(), 7), ("Bill".to_owned(), 50)]),
        ..company()
    }
    .generator()
    .unwrap();
    assert_eq!(g.count(GenKind::Vendor), 7);
    assert_eq!(g.count(GenKind::Bill), 50);
    assert_eq!(g.count(GenKind::Purchase), 750);
    let paid = g.count(GenKind::Payment);
    assert!(
        (1500..2100).contains(&paid),
        "{paid} payments for 3000 invoices"
    );
}

/// Which entity a `*Ref` (or `LinkedTxn.TxnType`) names.
fn target(key: &str, owner: &str) -> Option<&'static str> {
    Some(match key {
        "CustomerRef" => "Customer",
        "VendorRef" => "Vendor",
        "ItemRef" => "Item",
        "EmployeeRef" => "Employee",
        "AccountRef"
        | "APAccountRef"
        | "ARAccountRef"
        | "DepositToAccountRef"
        | "IncomeAccountRef"
        | "ExpenseAccountRef"
        | "AssetAccountRef"
        | "BankAccountRef"
        | "CreditCardAccountRef"
        | "CCAccountRef"
        | "FromAccountRef"
        | "ToAccountRef"
        | "AdjustAccountRef"
        | "PaymentAccountRef"
        | "ItemAccountRef" => "Account",
        "TermRef" | "SalesTermRef" | "DefaultTerms" => "Term",
        "ClassRef" => "Class",
        "DepartmentRef" => "Department",
        "PaymentMethodRef" => "PaymentMethod",
        "TaxCodeRef" | "TxnTaxCodeRef" => "TaxCode",
        "TaxRateRef" => "TaxRate",
        "AgencyRef" => "TaxAgency",
        "CustomerTypeRef" => "CustomerType",
        "RecurDataRef" => "RecurringTransaction",
        "ParentRef" => match owner {
            "Customer" | "Account" | "Item" | "Class" | "Department" => {
                return Some(match owner {
                    "Customer" => "Customer",
                    "Account" => "Account",
                    "Item" => "Item",
                    "Class" => "Class",
                    _ => "Department",
                });
            }
            _ => return None,
        },
        _ => return None,
    })
}

/// The AccountTypes a reference key may point at (None: any).
fn fitting(key: &str, context: &str) -> Option<&'static [&'static str]> {
    Some(match key {
        "APAccountRef" => &["Accounts Payable"],
        "DepositToAccountRef" => &["Bank", "Other Current Asset"],
        "BankAccountRef" | "FromAccountRef" | "ToAccountRef" | "PaymentAccountRef" => &["Bank"],
        "CreditCardAccountRef" | "CCAccountRef" => &["Credit Card"],
        "ItemAccountRef" => &["Income"],
        "AccountRef" if context == "AccountBasedExpenseLineDetail" => {
            &["Expense", "Cost of Goods Sold"]
        }
        "AccountRef" if context == "DepositLineDetail" => &["Income", "Other Income"],
        "AccountRef" if context == "Purchase" => &["Bank", "Credit Card"],
        _ => return None,
    })
}

struct Walk<'a> {
    books: &'a HashMap<&'static str, HashMap<String, Value>>,
    checked: usize,
}

impl Walk<'_> {
    fn exists(&self, entity: &str, id: &str) -> bool {
        self.books.get(entity).is_some_and(|t| t.contains_key(id))
    }

    fn walk(&mut self, owner: &str, context: &str, v: &Value, path: &str) {
        match v {
            Value::Object(map) => {
                // A LinkedTxn entry.
                if let (Some(Value::String(id)), Some(Value::String(t))) =
                    (map.get("TxnId"), map.get("TxnType"))
                {
                    assert!(self.exists(t, id), "{path}: {t} {id} does not exist");
                    self.checked += 1;
                }
                for (key, child) in map {
                    let here = format!("{path}.{key}");
                    if let Some(value) = child.get("value").and_then(Value::as_str) {
                        if key == "CurrencyRef" || key == "HomeCurrency" {
                            let known = value == "USD"
                                || self.books["CompanyCurrency"]
                                    .values()
                                    .any(|c| c["Code"] == value);
                            assert!(known, "{here}: currency {value}");
                            self.checked += 1;
                        } else if key == "EntityRef" || key == "Entity" {
                            let t = child["type"].as_str().unwrap();
                            let entity = match t {
                                "CUSTOMER" => "Customer",
                                "VENDOR" => "Vendor",
                                other => other,
                            };
                            let entity = qbo_entities::by_qbo_name(entity)
                                .unwrap_or_else(|| panic!("{here}: type {t}"))
                                .qbo_name;
                            assert!(self.exists(entity, value), "{here}: {entity} {value}");
                            self.checked += 1;
                        } else if let Some(entity) = target(key, owner) {
                            if entity == "TaxCode" && (value == "TAX" || value == "NON") {
                                continue; // QBO's US pseudo-codes, not records.
                            }
                            let record = self.books.get(entity).and_then(|t| t.get(value));
                            let record = record
                                .unwrap_or_else(|| panic!("{here}: {entity} {value} missing"));
                            if let Some(types) = fitting(key, context)
                                && owner != "Item"
                            {
                                let t = record["AccountType"].as_str().unwrap();
                                assert!(types.contains(&t), "{here}: account {value} is {t}");
                            }
                            self.checked += 1;
                        }
                    }
                    let next_context = if key.ends_with("Detail") {
                        key.as_str()
                    } else {
                        context
                    };
                    self.walk(owner, next_context, child, &here);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk(owner, context, item, &format!("{path}[{i}]"));
                }
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn references_resolve_and_amounts_add_up() {
    let world = World::start(company()).await;
    let mut books: HashMap<&'static str, HashMap<String, Value>> = HashMap::new();
    let mut records: Vec<(&'static str, Value)> = Vec::new();
    for def in ENTITIES {
        let rows = all(&world, def.qbo_name).await;
        let mut table = HashMap::new();
        for row in rows {
            let row = if def.qbo_name == "RecurringTransaction" {
                row.as_object().unwrap().values().next().unwrap().clone()
            } else {
                row
            };
            table.insert(id_of(&row), row.clone());
            records.push((def.qbo_name, row));
        }
        books.insert(def.qbo_name, table);
    }
    let mut walk = Walk {
        books: &books,
        checked: 0,
    };
    for (entity, record) in &records {
        walk.walk(entity, entity, record, entity);
    }
    assert!(walk.checked > 10_000, "{} references checked", walk.checked);

    // Payments apply to invoices, at most their total; balances are totals less payments.
    let mut applied: HashMap<String, i64> = HashMap::new();
    for payment in books["Payment"].values() {
        let mut sum = 0;
        for line in payment["Line"].as_array().unwrap() {
            let linked = &line["LinkedTxn"][0];
            assert_eq!(linked["TxnType"], "Invoice");
            let invoice = &books["Invoice"][linked["TxnId"].as_str().unwrap()];
            let amount = cents(&line["Amount"]);
            assert!(amount <= cents(&invoice["TotalAmt"]));
            *applied.entry(id_of(invoice)).or_default() += amount;
            sum += amount;
        }
        assert_eq!(
            sum,
            cents(&payment["TotalAmt"]) - cents(&payment["UnappliedAmt"])
        );
    }
    for invoice in books["Invoice"].values() {
        let paid = applied.get(&id_of(invoice)).copied().unwrap_or(0);
        assert_eq!(
            cents(&invoice["Balance"]),
            cents(&invoice["TotalAmt"]) - paid,
            "invoice {}",
            id_of(invoice)
        );
    }
    assert!(!applied.is_empty());
    // Bill payments pay bills the same way.
    let mut paid_bills: HashMap<String, i64> = HashMap::new();
    for payment in books["BillPayment"].values() {
        let line = &payment["Line"][0];
        let linked = &line["LinkedTxn"][0];
        assert_eq!(linked["TxnType"], "Bill");
        *paid_bills
            .entry(linked["TxnId"].as_str().unwrap().to_owned())
            .or_default() += cents(&line["Amount"]);
    }
    for bill in books["Bill"].values() {
        let paid = paid_bills.get(&id_of(bill)).copied().unwrap_or(0);
        assert_eq!(cents(&bill["Balance"]), cents(&bill["TotalAmt"]) - paid);
    }
    // Lines add up to the totals; journal entries balance.
    for (entity, record) in &records {
        let lines = record["Line"].as_array();
        match *entity {
            "Invoice" | "Estimate" | "SalesReceipt" | "CreditMemo" | "RefundReceipt" => {
                let lines = lines.unwrap();
                let (subtotal, items): (Vec<_>, Vec<_>) = lines
                    .iter()
                    .partition(|l| l["DetailType"] == "SubTotalLineDetail");
                let sum: i64 = items.iter().map(|l| cents(&l["Amount"])).sum();
                assert_eq!(
                    sum,
                    cents(&subtotal[0]["Amount"]),
                    "{entity} {}",
                    id_of(record)
                );
                assert_eq!(
                    cents(&record["TotalAmt"]),
                    sum + cents(&record["TxnTaxDetail"]["TotalTax"]),
                    "{entity} {}",
                    id_of(record)
                );
            }
            "Bill" | "Purchase" | "VendorCredit" | "PurchaseOrder" | "Deposit" => {
                let sum: i64 = lines.unwrap().iter().map(|l| cents(&l["Amount"])).sum();
                assert_eq!(
                    sum,
                    cents(&record["TotalAmt"]),
                    "{entity} {}",
                    id_of(record)
                );
            }
            "ReimburseCharge" => {
                let sum: i64 = lines.unwrap().iter().map(|l| cents(&l["Amount"])).sum();
                assert_eq!(sum, cents(&record["Amount"]));
            }
            "JournalEntry" => {
                let (mut debit, mut credit) = (0, 0);
                for line in lines.unwrap() {
                    let amount = cents(&line["Amount"]);
                    match line["JournalEntryLineDetail"]["PostingType"].as_str() {
                        Some("Debit") => debit += amount,
                        Some("Credit") => credit += amount,
                        other => panic!("posting type {other:?}"),
                    }
                }
                assert_eq!(debit, credit, "journal entry {}", id_of(record));
                assert_eq!(debit, cents(&record["TotalAmt"]));
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn singletons_exchange_rates_templates_and_the_card_payment_key() {
    let world = World::start(company()).await;
    for entity in ["CompanyInfo", "Preferences"] {
        let rows = world.rows(&format!("SELECT * FROM {entity}"), entity).await;
        assert_eq!(rows.len(), 1, "{entity}");
        assert_eq!(rows[0]["Id"], "1");
    }
    let realm = world.sandbox.realm_id().to_owned();
    let a = world.get(&format!("companyinfo/{realm}")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let info = a.json()["CompanyInfo"].clone();
    assert_eq!(info["Id"], "1");
    let sku = info["NameValue"]
        .as_array()
        .unwrap()
        .iter()
        .find(|nv| nv["Name"] == "OfferingSku")
        .unwrap();
    assert_eq!(sku["Value"], "QuickBooks Online Plus");
    let a = world.get("preferences").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let prefs = a.json()["Preferences"].clone();
    assert_eq!(prefs["CurrencyPrefs"]["MultiCurrencyEnabled"], true);
    assert_eq!(prefs["ProductAndServicesPrefs"]["QuantityOnHand"], true);
    assert_eq!(
        world.get("invoice").await.status,
        StatusCode::BAD_REQUEST,
        "only singletons are read without an Id"
    );

    // ExchangeRate: no Id, keyed by currency pair and date.
    let rates = all(&world, "ExchangeRate").await;
    assert_eq!(rates.len(), 48);
    let mut keys = std::collections::HashSet::new();
    for rate in &rates {
        assert!(rate.get("Id").is_none(), "{rate}");
        assert_eq!(rate["TargetCurrencyCode"], "USD");
        assert!(rate["MetaData"]["LastUpdatedTime"].is_string());
        let key = format!(
            "{}:{}:{}",
            rate["SourceCurrencyCode"].as_str().unwrap(),
            rate["TargetCurrencyCode"].as_str().unwrap(),
            rate["AsOfDate"].as_str().unwrap()
        );
        assert!(keys.insert(key.clone()), "{key} twice");
    }

    // RecurringTransaction: wrapped by type, inner Id, MetaData and RecurringInfo.
    let templates = world
        .rows("select * from RecurringTransaction", "RecurringTransaction")
        .await;
    assert_eq!(templates.len(), 12);
    let mut types = std::collections::BTreeSet::new();
    for t in &templates {
        let object = t.as_object().unwrap();
        assert_eq!(object.len(), 1, "{t}");
        let (kind, inner) = object.iter().next().unwrap();
        types.insert(kind.clone());
        assert!(inner["Id"].is_string() && inner["MetaData"]["LastUpdatedTime"].is_string());
        assert!(inner["RecurringInfo"]["ScheduleInfo"]["IntervalType"].is_string());
    }
    assert_eq!(types, ["Bill", "Invoice"].map(str::to_owned).into());

    // CreditCardPayment answers under CreditCardPaymentTxn, in pages, reads and CDC.
    let a = world.query("SELECT * FROM CreditCardPayment").await;
    let v = a.json();
    assert!(
        v["QueryResponse"]["CreditCardPaymentTxn"].is_array(),
        "{}",
        a.body
    );
    assert!(v["QueryResponse"].get("CreditCardPayment").is_none());
    let a = world.get("creditcardpayment/1").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["CreditCardPaymentTxn"]["Id"], "1");
    let a = world
        .get("cdc?entities=CreditCardPayment&changedSince=2011-01-01")
        .await;
    let v = a.json();
    assert!(v["CDCResponse"][0]["QueryResponse"][0]["CreditCardPaymentTxn"].is_array());
}

fn is_permission_denied(a: &crate::support::Answer) -> bool {
    a.status == StatusCode::BAD_REQUEST
        && a.json()["Fault"]["Error"][0]["code"] == "5020"
        && a.json()["Fault"]["Error"][0]["Message"] == "Permission Denied Error"
}

#[tokio::test]
async fn an_entity_the_company_lacks_answers_permission_denied() {
    // The default company: US Plus, multicurrency on, no journal codes, no tax payments.
    let world = World::start(crate::support::small()).await;
    for entity in ["JournalCode", "TaxPayment"] {
        for q in [
            format!("SELECT * FROM {entity}"),
            format!("SELECT COUNT(*) FROM {entity}"),
        ] {
            let a = world.query(&q).await;
            assert!(is_permission_denied(&a), "{q}: {}", a.body);
        }
        let a = world.get(&format!("{}/1", entity.to_lowercase())).await;
        assert!(is_permission_denied(&a), "read {entity}: {}", a.body);
    }
    let a = world
        .get("cdc?entities=TaxPayment&changedSince=2026-01-01")
        .await;
    assert!(a.status == StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(world.count("SELECT COUNT(*) FROM ExchangeRate").await, 48);

    // A company without multicurrency or tracking.
    let mut features = qbo_sandbox::config::default_features();
    features.remove(&Feature::MultiCurrency);
    features.remove(&Feature::Tracking);
    let world = World::start(SandboxConfig {
        features,
        cdc_horizon: None,
        ..crate::support::small()
    })
    .await;
    for entity in ["CompanyCurrency", "ExchangeRate", "Class", "Department"] {
        let a = world.query(&format!("select count(*) from {entity}")).await;
        assert!(is_permission_denied(&a), "{entity}: {}", a.body);
    }
    let a = world
        .get("cdc?entities=Class&changedSince=2011-01-01")
        .await;
    assert!(is_permission_denied(&a), "{}", a.body);
    let prefs = world.get("preferences").await.json();
    assert_eq!(
        prefs["Preferences"]["CurrencyPrefs"]["MultiCurrencyEnabled"],
        false
    );
    assert_eq!(
        prefs["Preferences"]["AccountingInfoPrefs"]["TrackDepartments"],
        false
    );
    // No ClassRef or DepartmentRef anywhere.
    let bills = world.query("SELECT * FROM Bill MAXRESULTS 1000").await;
    assert!(!bills.body.contains("ClassRef") && !bills.body.contains("DepartmentRef"));
}

#[tokio::test]
async fn cdc_reports_the_new_entities_and_refuses_the_documented_five() {
    let world = World::start(company()).await;
    let now = chrono::Utc::now();
    world.state().set_clock(Some(now));
    world
        .state()
        .update("Bill", "3", serde_json::json!({"PrivateNote": "changed"}))
        .unwrap();
    let payment = world.rows("SELECT * FROM Payment", "Payment").await[0]["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    world.state().delete("Payment", &payment).unwrap();
    world.state().delete("Vendor", "4").unwrap();
    let since = (now - chrono::Duration::hours(1)).to_rfc3339();
    let a = world
        .get(&format!(
            "cdc?entities=Bill,Payment,Vendor,JournalEntry&changedSince={}",
            since.replace('+', "%2B")
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let v = a.json();
    let sections = v["CDCResponse"][0]["QueryResponse"].as_array().unwrap();
    assert_eq!(sections[0]["Bill"][0]["PrivateNote"], "changed");
    assert_eq!(sections[1]["Payment"][0]["status"], "Deleted");
    assert_eq!(sections[1]["Payment"][0]["Id"], payment.as_str());
    assert_eq!(sections[2]["Vendor"][0]["Active"], false);
    assert!(
        sections[2]["Vendor"][0]["DisplayName"]
            .as_str()
            .unwrap()
            .ends_with(" (deleted)")
    );
    assert_eq!(sections[3], serde_json::json!({}));
    // Deleting a name-list record over the API is refused, as QBO does.
    let body = world.state().record("Vendor", "5").unwrap();
    let a = crate::support::answer(
        world
            .http
            .post(world.api("vendor?operation=delete"))
            .bearer_auth(&world.access)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    for refused in [
        "JournalCode",
        "TaxAgency",
        "TimeActivity",
        "TaxCode",
        "TaxRate",
    ] {
        let a = world
            .get(&format!("cdc?entities={refused}&changedSince=2024-01-01"))
            .await;
        assert_eq!(
            a.json()["Fault"]["Error"][0]["Message"],
            "Unsupported Operation",
            "{refused}"
        );
    }
}

#[tokio::test]
async fn same_seed_same_bytes_for_every_entity() {
    let a = World::start(company()).await;
    let b = World::start(company()).await;
    let c = World::start(SandboxConfig {
        seed: 2,
        ..company()
    })
    .await;
    let mut differ = 0;
    for def in ENTITIES {
        let q = format!("SELECT * FROM {} ORDERBY Id MAXRESULTS 50", def.qbo_name);
        let strip = |body: String| body[..body.rfind(",\"time\"").unwrap_or(body.len())].to_owned();
        let (x, y, z) = (
            strip(a.query(&q).await.body),
            strip(b.query(&q).await.body),
            strip(c.query(&q).await.body),
        );
        assert_eq!(x, y, "{}", def.qbo_name);
        differ += usize::from(x != z);
    }
    assert!(differ > 30, "{differ} entities differ across seeds");
}

#[tokio::test]
async fn admin_edits_work_for_new_entities() {
    let world = World::start(company()).await;
    let state = world.state();
    let vendor = state
        .create(
            "Vendor",
            serde_json::json!({"DisplayName": "New Vendor Co"}),
        )
        .unwrap();
    assert_eq!(vendor["Id"], "41");
    state.deactivate("Term", "2").unwrap();
    assert_eq!(state.record("Term", "2").unwrap()["Active"], false);
    state
        .update("JournalEntry", "1", serde_json::json!({"PrivateNote": "x"}))
        .unwrap();
    state.delete("Bill", "1").unwrap();
    assert!(state.record("Bill", "1").is_err());
    let rate = state
        .create(
            "ExchangeRate",
            serde_json::json!({"SourceCurrencyCode": "EUR", "TargetCurrencyCode": "USD",
                "AsOfDate": "2026-01-01", "Rate": 1.1}),
        )
        .unwrap();
    assert!(rate.get("Id").is_none(), "{rate}");
    assert_eq!(world.count("SELECT COUNT(*) FROM ExchangeRate").await, 49);
    assert!(state.deactivate("Bill", "2").is_err());
}

/// `GET /v3/company/{realm}/{rest}` with `token`.
async fn get_in(world: &World, realm: &str, token: &str, rest: &str) -> crate::support::Answer {
    crate::support::answer(
        world
            .http
            .get(world.api_in(realm, rest))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// `--realms 2`: the second company has the whole books (its own seed, the same sizes and
/// features), counted through `/batch` for every entity, its own singletons at
/// `companyinfo/{its realm}`; a batch item for an entity the company lacks answers 5020 for
/// that item only.
#[tokio::test]
async fn a_second_company_serves_every_entity_and_batches_fault_per_item() {
    let config = SandboxConfig {
        realms: 2,
        ..company()
    };
    let spec = config.realm_specs()[1].clone();
    let sizes = qbo_sandbox::generate::Generator {
        seed: spec.seed,
        ..config.generator().unwrap()
    };
    let world = World::start(config).await;
    let two = spec.realm_id.as_str();
    let access = world.access_for(two).await;
    for chunk in ENTITIES.chunks(20) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|def| {
                serde_json::json!({
                    "bId": def.qbo_name,
                    "Query": format!(
                        "SELECT COUNT(*) FROM {}{}",
                        def.qbo_name,
                        active_clause(def.kind)
                    ),
                })
            })
            .collect();
        let body = serde_json::json!({ "BatchItemRequest": items }).to_string();
        let a = world.batch_in(two, &access, &body).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let answered = a.json()["BatchItemResponse"].as_array().unwrap().clone();
        assert_eq!(answered.len(), chunk.len());
        for (def, item) in chunk.iter().zip(&answered) {
            assert_eq!(item["bId"], def.qbo_name);
            let size = sizes.count(GenKind::from_name(def.qbo_name).unwrap());
            assert!(size > 0, "{} has no records", def.qbo_name);
            assert_eq!(
                item["QueryResponse"]["totalCount"], size,
                "{}: {item}",
                def.qbo_name
            );
        }
    }
    // Its own books: Payment follows its own paid invoices, its vendors have other names.
    let vendor = |realm: &str, token: &str| {
        let (realm, token) = (realm.to_owned(), token.to_owned());
        let world = &world;
        async move {
            get_in(world, &realm, &token, "vendor/1").await.json()["Vendor"]["DisplayName"].clone()
        }
    };
    let one = world.sandbox.realm_id().to_owned();
    assert_ne!(
        vendor(&one, &world.access).await,
        vendor(two, &access).await
    );
    // Its singletons, at its own realm id.
    let info = get_in(&world, two, &access, &format!("companyinfo/{two}")).await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.body);
    assert_eq!(info.json()["CompanyInfo"]["Id"], "1");
    let prefs = get_in(&world, two, &access, "preferences").await;
    assert_eq!(prefs.status, StatusCode::OK, "{}", prefs.body);
    assert!(prefs.json()["Preferences"].is_object());

    // The default features lack journal codes and tax payments: those items fault with 5020,
    // alone, inside an HTTP 200; the other items are answered as usual.
    let world = World::start(SandboxConfig {
        realms: 2,
        ..crate::support::small()
    })
    .await;
    let two = world.sandbox.realm_ids()[1].to_owned();
    let access = world.access_for(&two).await;
    let body = serde_json::json!({ "BatchItemRequest": [
        {"bId": "vendors", "Query": "SELECT COUNT(*) FROM Vendor WHERE Active IN (true, false)"},
        {"bId": "codes", "Query": "SELECT * FROM JournalCode"},
        {"bId": "taxes", "Query": "select count(*) from TaxPayment"},
        {"bId": "new-code", "operation": "create", "JournalCode": {"Name": "VT"}},
        {"bId": "invoices", "Query": "SELECT COUNT(*) FROM Invoice"},
    ]})
    .to_string();
    let a = world.batch_in(&two, &access, &body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let answered = a.json()["BatchItemResponse"].as_array().unwrap().clone();
    let by_id: HashMap<&str, &Value> = answered
        .iter()
        .map(|item| (item["bId"].as_str().unwrap(), item))
        .collect();
    for id in ["codes", "taxes", "new-code"] {
        let error = &by_id[id]["Fault"]["Error"][0];
        assert_eq!(error["code"], "5020", "{id}: {}", by_id[id]);
        assert_eq!(error["Message"], "Permission Denied Error", "{id}");
        assert_eq!(by_id[id]["Fault"]["type"], "ValidationFault", "{id}");
        assert!(by_id[id].get("QueryResponse").is_none(), "{id}");
    }
    assert_eq!(
        by_id["vendors"]["QueryResponse"]["totalCount"],
        world
            .sandbox
            .realm(&two)
            .unwrap()
            .count("Vendor", None, None)
    );
    assert_eq!(by_id["invoices"]["QueryResponse"]["totalCount"], 600);
    assert_eq!(
        world
            .sandbox
            .realm(&two)
            .unwrap()
            .count("JournalCode", None, None),
        0,
        "the refused create wrote nothing"
    );
}

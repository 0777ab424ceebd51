//! The QuickBooks Online entity catalogue as data: one [`EntityDef`] row per entity the
//! pipeline extracts ([`ENTITIES`]), shared by the pipeline (what to query, where to write,
//! how to key a record) and the sandbox (what to serve, and how QBO answers for it).
//!
//! Facts and their sources are in `docs/qbo-behaviour.md` §11 (entities), §10 (CDC) and §6
//! (name lists). Where a fact is uncertain the row takes the safe side, and says why:
//! an entity not known to be covered by CDC is marked `cdc: false` (the sync then reads it by
//! query and proves deletions by Id), and an entity not known to accept a
//! `MetaData.LastUpdatedTime` filter is read whole (`filterable: false`).
//!
//! No I/O and no dependencies beyond `serde` (for listings).

use serde::Serialize;

/// What kind of QBO entity it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Lists with an `Active` flag (customers, items, accounts, …): QBO hides inactive ones
    /// unless a query constrains `Active`, and never deletes them (it deactivates them).
    NameList,
    /// Documents (invoices, bills, payments, …): deleted for real, some voided.
    Transaction,
    /// One record per company (CompanyInfo, Preferences).
    Singleton,
    /// Everything else (attachments, recurring templates, exchange rates).
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NameList => "name-list",
            Kind::Transaction => "transaction",
            Kind::Singleton => "singleton",
            Kind::Other => "other",
        }
    }
}

/// How a record's `id` column is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyShape {
    /// The record's `Id`.
    Id,
    /// Records without an `Id` (ExchangeRate): these properties' values joined by `:` in
    /// this order, e.g. `EUR:USD:2025-03-01`.
    Composite(&'static [&'static str]),
    /// Records wrapped by type (RecurringTransaction answers `{"Invoice": {...}}`): the
    /// inner object's `Id`. The stored payload keeps the wrapper.
    Wrapped,
}

/// A company feature an entity needs. QBO answers a query for an entity the company's edition
/// or region does not offer with a fault instead of rows (`docs/qbo-behaviour.md` §11); the
/// pipeline skips such an entity with a note, and the sandbox refuses it the same way when
/// the feature is switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// Every company has it.
    Always,
    /// Multicurrency turned on (CompanyCurrency, ExchangeRate).
    MultiCurrency,
    /// Quantity-on-hand inventory: US Plus and Advanced (InventoryAdjustment).
    Inventory,
    /// Class and location tracking: Plus and Advanced (Class, Department).
    Tracking,
    /// Budgets: Plus and Advanced.
    Budgets,
    /// Recurring transactions: Essentials and above.
    Recurring,
    /// Journal codes: French companies only.
    JournalCodes,
    /// Tax payments: companies outside the US (AU, CA, UK).
    TaxPayments,
    /// Billable expenses (ReimburseCharge).
    BillableExpenses,
}

impl Feature {
    /// Every feature a company can lack (not [`Feature::Always`]).
    pub const OPTIONAL: [Feature; 8] = [
        Feature::MultiCurrency,
        Feature::Inventory,
        Feature::Tracking,
        Feature::Budgets,
        Feature::Recurring,
        Feature::JournalCodes,
        Feature::TaxPayments,
        Feature::BillableExpenses,
    ];

    /// The kebab-case name (as serialised): `multi-currency`, `journal-codes`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Always => "always",
            Feature::MultiCurrency => "multi-currency",
            Feature::Inventory => "inventory",
            Feature::Tracking => "tracking",
            Feature::Budgets => "budgets",
            Feature::Recurring => "recurring",
            Feature::JournalCodes => "journal-codes",
            Feature::TaxPayments => "tax-payments",
            Feature::BillableExpenses => "billable-expenses",
        }
    }

    /// The feature named `text` (kebab-case, ignoring ASCII case, `_` or no separator
    /// accepted: `multicurrency`, `multi_currency`).
    pub fn parse(text: &str) -> Option<Feature> {
        let squash = |s: &str| -> String {
            s.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .map(|c| c.to_ascii_lowercase())
                .collect()
        };
        let want = squash(text);
        Feature::OPTIONAL
            .into_iter()
            .chain([Feature::Always])
            .find(|f| squash(f.as_str()) == want)
    }
}

/// Everything both sides know about one entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityDef {
    /// The name QBO uses in queries (canonical PascalCase).
    pub qbo_name: &'static str,
    /// The key QBO answers records under in `QueryResponse` (differs for CreditCardPayment).
    pub response_key: &'static str,
    /// The `--entity` spelling: snake_case plural (singletons singular).
    pub name: &'static str,
    /// The destination table in schema `raw`: `qb_<name>`.
    pub table: &'static str,
    /// The backfill pipeline's name: `qb_<name>_backfill`.
    pub backfill_pipeline: &'static str,
    /// The sync pipeline's name: `qb_<name>_sync`.
    pub sync_pipeline: &'static str,
    pub kind: Kind,
    /// QBO's CDC endpoint reports its changes (known; see the module docs).
    pub cdc: bool,
    /// QBO filters and orders it by `MetaData.LastUpdatedTime` (else it is read whole).
    pub filterable: bool,
    pub key: KeyShape,
    /// The lowest `minorversion` that serves it (the pipeline sends 75).
    pub min_minor_version: u32,
    pub requires: Feature,
}

impl EntityDef {
    /// Name lists carry `Active`, and QBO hides inactive rows unless a query constrains it.
    pub fn is_name_list(&self) -> bool {
        self.kind == Kind::NameList
    }

    /// Read whole on every run: singletons and entities QBO cannot filter by time.
    pub fn read_whole(&self) -> bool {
        self.kind == Kind::Singleton || !self.filterable
    }
}

macro_rules! entity {
    ($qbo:literal, $name:literal, $kind:ident $(, $field:ident : $value:expr)* $(,)?) => {
        EntityDef {
            $($field: $value,)*
            ..EntityDef {
                qbo_name: $qbo,
                response_key: $qbo,
                name: $name,
                table: concat!("qb_", $name),
                backfill_pipeline: concat!("qb_", $name, "_backfill"),
                sync_pipeline: concat!("qb_", $name, "_sync"),
                kind: Kind::$kind,
                cdc: true,
                filterable: true,
                key: KeyShape::Id,
                min_minor_version: 1,
                requires: Feature::Always,
            }
        }
    };
}

/// Every entity the pipeline extracts, in the order `--entity all` runs them: the three of
/// the original project first (their pipelines and tables predate the rest), then name lists
/// (which transactions reference), transactions, the others and the singletons.
pub const ENTITIES: &[EntityDef] = &[
    entity!("Customer", "customers", NameList),
    entity!("Invoice", "invoices", Transaction),
    entity!("Item", "items", NameList),
    // Name lists.
    entity!("Account", "accounts", NameList),
    entity!("Budget", "budgets", NameList, requires: Feature::Budgets),
    entity!("Class", "classes", NameList, requires: Feature::Tracking),
    // Tiny, and connectors disagree on whether its MetaData is filterable: read whole.
    entity!("CompanyCurrency", "company_currencies", NameList, filterable: false,
        requires: Feature::MultiCurrency),
    entity!("CustomerType", "customer_types", NameList),
    entity!("Department", "departments", NameList, requires: Feature::Tracking),
    entity!("Employee", "employees", NameList),
    entity!("JournalCode", "journal_codes", NameList, cdc: false,
        requires: Feature::JournalCodes),
    entity!("PaymentMethod", "payment_methods", NameList),
    // Connectors read it whole; its ORDERBY is reported unreliable.
    entity!("TaxAgency", "tax_agencies", NameList, cdc: false, filterable: false),
    // Intuit marks only Id, Name, Active and Description filterable.
    entity!("TaxCode", "tax_codes", NameList, cdc: false, filterable: false),
    entity!("TaxRate", "tax_rates", NameList, cdc: false),
    entity!("Term", "terms", NameList),
    entity!("Vendor", "vendors", NameList),
    // Transactions.
    entity!("Bill", "bills", Transaction),
    entity!("BillPayment", "bill_payments", Transaction),
    entity!("CreditCardPayment", "credit_card_payments", Transaction,
        response_key: "CreditCardPaymentTxn"),
    entity!("CreditMemo", "credit_memos", Transaction),
    entity!("Deposit", "deposits", Transaction),
    entity!("Estimate", "estimates", Transaction),
    // Minor version 70+, US Plus/Advanced with inventory on; CDC coverage unverified.
    entity!("InventoryAdjustment", "inventory_adjustments", Transaction, cdc: false,
        min_minor_version: 70, requires: Feature::Inventory),
    entity!("JournalEntry", "journal_entries", Transaction),
    entity!("Payment", "payments", Transaction),
    entity!("Purchase", "purchases", Transaction),
    entity!("PurchaseOrder", "purchase_orders", Transaction),
    entity!("RefundReceipt", "refund_receipts", Transaction),
    // CDC coverage unverified.
    entity!("ReimburseCharge", "reimburse_charges", Transaction, cdc: false,
        requires: Feature::BillableExpenses),
    entity!("SalesReceipt", "sales_receipts", Transaction),
    // AU/CA/UK only; CDC coverage unverified.
    entity!("TaxPayment", "tax_payments", Transaction, cdc: false,
        requires: Feature::TaxPayments),
    entity!("TimeActivity", "time_activities", Transaction, cdc: false),
    entity!("Transfer", "transfers", Transaction),
    entity!("VendorCredit", "vendor_credits", Transaction),
    // Others.
    entity!("Attachable", "attachables", Other),
    // Templates wrapped by type (`{"Invoice": {...}}`); CDC coverage and the MetaData filter
    // unverified: read whole.
    entity!("RecurringTransaction", "recurring_transactions", Other, cdc: false,
        filterable: false, key: KeyShape::Wrapped, requires: Feature::Recurring),
    // No Id: keyed by currency pair and date. Read whole.
    entity!("ExchangeRate", "exchange_rates", Other, cdc: false, filterable: false,
        key: KeyShape::Composite(&["SourceCurrencyCode", "TargetCurrencyCode", "AsOfDate"]),
        requires: Feature::MultiCurrency),
    // Singletons: one row per company, read whole on every run.
    entity!("CompanyInfo", "company_info", Singleton, filterable: false),
    entity!("Preferences", "preferences", Singleton, filterable: false),
];

/// The entity QBO calls `name` (any ASCII case), by query name or response key.
pub fn by_qbo_name(name: &str) -> Option<&'static EntityDef> {
    ENTITIES.iter().find(|e| {
        e.qbo_name.eq_ignore_ascii_case(name) || e.response_key.eq_ignore_ascii_case(name)
    })
}

/// The entity whose `--entity` name, table name (`qb_<name>`) or QBO name is `text`.
pub fn lookup(text: &str) -> Option<&'static EntityDef> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    ENTITIES
        .iter()
        .find(|e| lower == e.name || lower == e.table)
        .or_else(|| by_qbo_name(t))
}

/// The CDC-covered entities' QBO names.
pub fn cdc_covered() -> impl Iterator<Item = &'static str> {
    ENTITIES.iter().filter(|e| e.cdc).map(|e| e.qbo_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = HashSet::new();
        for e in ENTITIES {
            let mut own: Vec<String> = [e.qbo_name, e.response_key, e.name, e.table]
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect();
            own.sort();
            own.dedup();
            for n in own {
                assert!(seen.insert(n.clone()), "{n} names two entities");
            }
            assert!(e.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert_eq!(e.table, format!("qb_{}", e.name));
            assert_eq!(e.backfill_pipeline, format!("qb_{}_backfill", e.name));
            assert_eq!(e.sync_pipeline, format!("qb_{}_sync", e.name));
            assert!(e.qbo_name.starts_with(|c: char| c.is_ascii_uppercase()));
        }
        assert_eq!(ENTITIES.len(), 40);
    }

    #[test]
    fn the_original_three_come_first_with_their_old_tables() {
        let first: Vec<_> = ENTITIES[..3].iter().map(|e| e.table).collect();
        assert_eq!(first, ["qb_customers", "qb_invoices", "qb_items"]);
    }

    #[test]
    fn lookups_accept_every_spelling() {
        for (text, want) in [
            ("bill_payments", "BillPayment"),
            ("BillPayment", "BillPayment"),
            ("billpayment", "BillPayment"),
            ("qb_journal_entries", "JournalEntry"),
            ("CreditCardPaymentTxn", "CreditCardPayment"),
            ("company_info", "CompanyInfo"),
            (" Preferences ", "Preferences"),
        ] {
            assert_eq!(lookup(text).map(|e| e.qbo_name), Some(want), "{text}");
        }
        assert_eq!(lookup("vendor").map(|e| e.name), Some("vendors"));
        assert!(lookup("vendorz").is_none());
        assert!(lookup("TaxService").is_none());
    }

    #[test]
    fn the_documented_cdc_gaps_are_marked() {
        for name in [
            "JournalCode",
            "TaxAgency",
            "TimeActivity",
            "TaxCode",
            "TaxRate",
        ] {
            assert!(!by_qbo_name(name).unwrap().cdc, "{name}");
        }
        assert!(cdc_covered().any(|n| n == "Invoice"));
    }

    #[test]
    fn features_parse_in_any_spelling() {
        for f in Feature::OPTIONAL {
            assert_eq!(Feature::parse(f.as_str()), Some(f));
            assert_eq!(
                serde_json::to_value(f).unwrap(),
                serde_json::json!(f.as_str())
            );
        }
        assert_eq!(
            Feature::parse("MultiCurrency"),
            Some(Feature::MultiCurrency)
        );
        assert_eq!(Feature::parse("journal_codes"), Some(Feature::JournalCodes));
        assert_eq!(Feature::parse("payroll"), None);
    }

    #[test]
    fn whole_reads_and_keys() {
        for name in ["CompanyInfo", "Preferences", "TaxCode", "ExchangeRate"] {
            assert!(by_qbo_name(name).unwrap().read_whole(), "{name}");
        }
        assert!(!by_qbo_name("Invoice").unwrap().read_whole());
        assert_eq!(
            by_qbo_name("RecurringTransaction").unwrap().key,
            KeyShape::Wrapped
        );
        assert!(matches!(
            by_qbo_name("ExchangeRate").unwrap().key,
            KeyShape::Composite(_)
        ));
        assert_eq!(Kind::NameList.as_str(), "name-list");
        assert_eq!(
            serde_json::to_value(Kind::Singleton).unwrap(),
            serde_json::json!("singleton")
        );
    }
}

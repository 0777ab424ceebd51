//! The rest of the books: every entity of [`qbo_entities::ENTITIES`] beyond Customer, Item
//! and Invoice, generated the same memory-light way as those (`crate::generate`): a record's
//! JSON is written on demand from `(seed, entity, id)` and its [`Meta`], nothing is stored.
//!
//! Shapes follow the recordings in `crates/qbo-sandbox/tests/fixtures/qbo-recorded` (Vendor,
//! Employee, Account, SalesReceipt, Estimate, Attachable) and Intuit's API reference for the
//! rest (`docs/qbo-behaviour.md` §13).
//!
//! # Referential consistency
//! Every `*Ref.value` names an existing record of the right entity, computed from ids alone:
//! - the chart of accounts is fixed ([`ACCOUNTS`]: ids by role, so `APAccountRef` is always
//!   the A/P account, `DepositToAccountRef` a bank or Undeposited Funds, expense lines an
//!   Expense account, `CreditCardAccountRef` a Credit Card account, …);
//! - a Payment exists for exactly the invoices the invoice generator marks paid (they already
//!   name it: `LinkedTxn` `TxnId = invoices + i`), applies the invoice's whole `TotalAmt` to
//!   it (`Line[].LinkedTxn`), so an invoice's `Balance` is its total less what its payment
//!   applies; [`Generator::invoice_facts`] replays the invoice generator's draws to know the
//!   total without writing the invoice;
//! - a BillPayment has the Id of the bill it pays (about 70% of bills), which names it back in
//!   its `LinkedTxn`; the bill's `Balance` is then 0, else its total;
//! - journal entries balance (each debit line has a credit line of the same amount);
//! - optional references (`ClassRef`, `DepartmentRef`, `PaymentMethodRef`, `SalesTermRef`,
//!   billable `CustomerRef`) are written only when that list exists (size > 0 and, for
//!   classes and locations, tracking on).
//!
//! TaxCode's US pseudo-codes `TAX` and `NON` (used by line `TaxCodeRef`s) are not records:
//! only numeric tax codes are generated. ExchangeRate records have no `Id`: the store keys
//! them by their position (currency × month), which never appears in the payload.

use std::collections::BTreeMap;

use qbo_entities::{Feature, Kind};

use crate::clock::{decimal, money, pacific_date, pacific_secs, push_json_str};
use crate::generate::{
    DAY, DESCRIPTIONS, END, FIRST, GenKind, Generator, LAST, MEMOS, Meta, Rng, START, create_time,
    mix,
};

/// Generated transactions of one kind at most, when derived from `--invoices`.
pub const SCALED_CAP: u64 = 20_000;

/// Fixed default sizes of name lists and other small entities.
const FIXED: &[(GenKind, u64)] = &[
    (GenKind::Account, ACCOUNTS.len() as u64),
    (GenKind::Budget, 2),
    (GenKind::Class, 8),
    (GenKind::CompanyCurrency, 4),
    (GenKind::CustomerType, 5),
    (GenKind::Department, 4),
    (GenKind::Employee, 8),
    (GenKind::JournalCode, 6),
    (GenKind::PaymentMethod, 6),
    (GenKind::TaxAgency, 3),
    (GenKind::TaxCode, 12),
    (GenKind::TaxRate, 12),
    (GenKind::Term, 5),
    (GenKind::Vendor, 40),
    (GenKind::RecurringTransaction, 12),
    (GenKind::ExchangeRate, 48),
    (GenKind::CompanyInfo, 1),
    (GenKind::Preferences, 1),
];

/// Transactions scaled from the invoice count: `invoices / divisor` (at least 1 when there
/// are invoices, at most [`SCALED_CAP`]).
const SCALED: &[(GenKind, u64)] = &[
    (GenKind::Bill, 3),
    (GenKind::Purchase, 4),
    (GenKind::SalesReceipt, 4),
    (GenKind::Estimate, 5),
    (GenKind::Deposit, 10),
    (GenKind::TimeActivity, 10),
    (GenKind::JournalEntry, 20),
    (GenKind::PurchaseOrder, 20),
    (GenKind::CreditMemo, 30),
    (GenKind::VendorCredit, 40),
    (GenKind::RefundReceipt, 50),
    (GenKind::Transfer, 50),
    (GenKind::Attachable, 50),
    (GenKind::CreditCardPayment, 100),
    (GenKind::ReimburseCharge, 100),
    (GenKind::InventoryAdjustment, 200),
    (GenKind::TaxPayment, 200),
];

/// What a kind's records reference and cannot do without.
fn needs(kind: GenKind) -> &'static [GenKind] {
    use GenKind::*;
    match kind {
        Budget | CreditCardPayment | Deposit | JournalEntry | Transfer | TaxPayment => &[Account],
        TaxCode => &[TaxRate],
        TaxRate => &[TaxAgency],
        Bill | VendorCredit | Purchase => &[Vendor, Account],
        PurchaseOrder => &[Vendor, Item, Account],
        Estimate | SalesReceipt | CreditMemo | RefundReceipt => &[Customer, Item, Account],
        InventoryAdjustment => &[Item, Account],
        ReimburseCharge => &[Customer, Account],
        TimeActivity => &[Employee, Customer, Item],
        Attachable => &[Invoice],
        RecurringTransaction => &[Customer, Item, Vendor, Account],
        ExchangeRate => &[CompanyCurrency],
        _ => &[],
    }
}

/// The sizes of every entity but Customer, Item and Invoice, from the invoice count,
/// explicit `counts` (canonical QBO names) and the company's features. Refuses counts that
/// cannot be honoured (derived or fixed entities, a missing feature, a needed list left
/// empty, a chart of accounts smaller than the fixed one).
pub fn resolve_sizes(
    customers: u64,
    items: u64,
    invoices: u64,
    counts: &BTreeMap<String, u64>,
    features: &std::collections::BTreeSet<Feature>,
) -> Result<[u64; 40], String> {
    let mut sizes = [0u64; 40];
    for (kind, n) in FIXED {
        sizes[kind.index()] = *n;
    }
    for (kind, divisor) in SCALED {
        sizes[kind.index()] = if invoices == 0 {
            0
        } else {
            (invoices / divisor).clamp(1, SCALED_CAP)
        };
    }
    sizes[GenKind::Customer.index()] = customers;
    sizes[GenKind::Item.index()] = items;
    sizes[GenKind::Invoice.index()] = invoices;
    let mut explicit = [false; 40];
    for (name, n) in counts {
        let kind = qbo_entities::by_qbo_name(name)
            .and_then(|d| GenKind::from_name(d.qbo_name))
            .ok_or_else(|| format!("--count {name}={n}: no such entity"))?;
        match kind {
            GenKind::Customer | GenKind::Item | GenKind::Invoice => continue,
            GenKind::Payment => {
                return Err(format!(
                    "--count Payment={n}: payments follow the invoices (one per paid invoice); set --invoices"
                ));
            }
            GenKind::BillPayment => {
                return Err(format!(
                    "--count BillPayment={n}: bill payments follow the bills (one per paid bill); set --count Bill=N"
                ));
            }
            GenKind::CompanyInfo | GenKind::Preferences if *n != 1 => {
                return Err(format!(
                    "--count {}={n}: a company has exactly one",
                    kind.name()
                ));
            }
            GenKind::Account if *n > 0 && *n < ACCOUNTS.len() as u64 => {
                return Err(format!(
                    "--count Account={n}: the chart of accounts has {} fixed accounts (items and transactions reference them); use 0 or at least {}",
                    ACCOUNTS.len(),
                    ACCOUNTS.len()
                ));
            }
            GenKind::ExchangeRate if *n > 0 => {
                let currencies = counts
                    .get("CompanyCurrency")
                    .copied()
                    .unwrap_or(sizes[GenKind::CompanyCurrency.index()])
                    .min(CURRENCIES.len() as u64);
                if *n > currencies * 144 {
                    return Err(format!(
                        "--count ExchangeRate={n}: at most {} (one rate per foreign currency and month, 2014-2025)",
                        currencies * 144
                    ));
                }
            }
            GenKind::CompanyCurrency if *n > CURRENCIES.len() as u64 => {
                return Err(format!(
                    "--count CompanyCurrency={n}: at most {}",
                    CURRENCIES.len()
                ));
            }
            _ => {}
        }
        let need = kind.def().requires;
        if *n > 0 && need != Feature::Always && !features.contains(&need) {
            return Err(format!(
                "--count {}={n}: the company lacks the feature {} (enable it with --feature {})",
                kind.name(),
                need.as_str(),
                need.as_str()
            ));
        }
        sizes[kind.index()] = *n;
        explicit[kind.index()] = true;
    }
    for kind in GenKind::ALL {
        let need = kind.def().requires;
        if need != Feature::Always && !features.contains(&need) {
            sizes[kind.index()] = 0;
        }
    }
    // Dependencies are at most three deep (TaxCode → TaxRate → TaxAgency).
    for _ in 0..3 {
        for kind in GenKind::ALL {
            if sizes[kind.index()] == 0 {
                continue;
            }
            if let Some(missing) = needs(kind).iter().find(|k| sizes[k.index()] == 0) {
                if explicit[kind.index()] {
                    return Err(format!(
                        "--count {}={}: its records reference {}, which has no records",
                        kind.name(),
                        sizes[kind.index()],
                        missing.name()
                    ));
                }
                sizes[kind.index()] = 0;
            }
        }
    }
    Ok(sizes)
}

// ----- the chart of accounts -----

/// One fixed account: name, AccountType, AccountSubType, Classification, parent (1-based).
type AccountRow = (&'static str, &'static str, &'static str, &'static str, u64);

const BANK: &str = "Bank";
const OCA: &str = "Other Current Asset";
const INCOME: &str = "Income";
const EXPENSE: &str = "Expense";

/// The chart of accounts, by Id (`ACCOUNTS[id - 1]`). Ids by role: 1–4 bank, 5 A/R,
/// 6 Undeposited Funds, 12 A/P, 13–14 credit cards, 22–45 income, 46–79 expenses (47–50
/// under 46 "Utilities"), 80 Cost of Goods Sold, 81 Inventory Asset (the ids the item
/// generator names), 82–85 other income, 86–90 other expense.
pub const ACCOUNTS: &[AccountRow] = &[
    ("Checking", BANK, "Checking", "Asset", 0),
    ("Savings", BANK, "Savings", "Asset", 0),
    ("Petty Cash", BANK, "CashOnHand", "Asset", 0),
    ("Money Market", BANK, "MoneyMarket", "Asset", 0),
    (
        "Accounts Receivable (A/R)",
        "Accounts Receivable",
        "AccountsReceivable",
        "Asset",
        0,
    ),
    ("Undeposited Funds", OCA, "UndepositedFunds", "Asset", 0),
    ("Prepaid Expenses", OCA, "PrepaidExpenses", "Asset", 0),
    (
        "Employee Cash Advances",
        OCA,
        "EmployeeCashAdvances",
        "Asset",
        0,
    ),
    ("Truck", "Fixed Asset", "Vehicles", "Asset", 0),
    (
        "Furniture and Equipment",
        "Fixed Asset",
        "FurnitureAndFixtures",
        "Asset",
        0,
    ),
    (
        "Accumulated Depreciation",
        "Fixed Asset",
        "AccumulatedDepreciation",
        "Asset",
        0,
    ),
    (
        "Accounts Payable (A/P)",
        "Accounts Payable",
        "AccountsPayable",
        "Liability",
        0,
    ),
    ("Mastercard", "Credit Card", "CreditCard", "Liability", 0),
    ("Visa", "Credit Card", "CreditCard", "Liability", 0),
    (
        "Board of Equalization Payable",
        "Other Current Liability",
        "SalesTaxPayable",
        "Liability",
        0,
    ),
    (
        "Payroll Liabilities",
        "Other Current Liability",
        "PayrollTaxPayable",
        "Liability",
        0,
    ),
    (
        "Loan Payable",
        "Other Current Liability",
        "LoanPayable",
        "Liability",
        0,
    ),
    (
        "Notes Payable",
        "Long Term Liability",
        "NotesPayable",
        "Liability",
        0,
    ),
    (
        "Opening Balance Equity",
        "Equity",
        "OpeningBalanceEquity",
        "Equity",
        0,
    ),
    (
        "Retained Earnings",
        "Equity",
        "RetainedEarnings",
        "Equity",
        0,
    ),
    ("Owner's Equity", "Equity", "OwnersEquity", "Equity", 0),
    ("Design income", INCOME, "ServiceFeeIncome", "Revenue", 0),
    (
        "Landscaping Services",
        INCOME,
        "ServiceFeeIncome",
        "Revenue",
        0,
    ),
    (
        "Job Materials",
        INCOME,
        "SalesOfProductIncome",
        "Revenue",
        0,
    ),
    ("Labor", INCOME, "ServiceFeeIncome", "Revenue", 0),
    ("Installation", INCOME, "ServiceFeeIncome", "Revenue", 0),
    (
        "Maintenance and Repair Income",
        INCOME,
        "ServiceFeeIncome",
        "Revenue",
        0,
    ),
    (
        "Pest Control Services",
        INCOME,
        "ServiceFeeIncome",
        "Revenue",
        0,
    ),
    (
        "Sales of Product Income",
        INCOME,
        "SalesOfProductIncome",
        "Revenue",
        0,
    ),
    ("Services", INCOME, "ServiceFeeIncome", "Revenue", 0),
    ("Fees Billed", INCOME, "ServiceFeeIncome", "Revenue", 0),
    (
        "Discounts given",
        INCOME,
        "DiscountsRefundsGiven",
        "Revenue",
        0,
    ),
    (
        "Refunds-Allowances",
        INCOME,
        "DiscountsRefundsGiven",
        "Revenue",
        0,
    ),
    (
        "Consulting Income",
        INCOME,
        "ServiceFeeIncome",
        "Revenue",
        0,
    ),
    ("Rental Income", INCOME, "OtherPrimaryIncome", "Revenue", 0),
    ("Gardening Income", INCOME, "ServiceFeeIncome", "Revenue", 0),
    (
        "Fountain Sales",
        INCOME,
        "SalesOfProductIncome",
        "Revenue",
        0,
    ),
    ("Sod Sales", INCOME, "SalesOfProductIncome", "Revenue", 0),
    (
        "Lighting Sales",
        INCOME,
        "SalesOfProductIncome",
        "Revenue",
        0,
    ),
    (
        "Plants and Soil",
        INCOME,
        "SalesOfProductIncome",
        "Revenue",
        0,
    ),
    (
        "Sprinklers and Drip Systems",
        INCOME,
        "SalesOfProductIncome",
        "Revenue",
        0,
    ),
    ("Tree Services", INCOME, "ServiceFeeIncome", "Revenue", 0),
    ("Concrete Work", INCOME, "ServiceFeeIncome", "Revenue", 0),
    ("Deck Building", INCOME, "ServiceFeeIncome", "Revenue", 0),
    (
        "Hardscape Income — Café Patios ☕",
        INCOME,
        "ServiceFeeIncome",
        "Revenue",
        0,
    ),
    ("Utilities", EXPENSE, "Utilities", "Expense", 0),
    ("Gas and Electric", EXPENSE, "Utilities", "Expense", 46),
    ("Telephone", EXPENSE, "Utilities", "Expense", 46),
    ("Water", EXPENSE, "Utilities", "Expense", 46),
    ("Internet", EXPENSE, "Utilities", "Expense", 46),
    (
        "Advertising",
        EXPENSE,
        "AdvertisingPromotional",
        "Expense",
        0,
    ),
    ("Automobile", EXPENSE, "Auto", "Expense", 0),
    ("Fuel", EXPENSE, "Auto", "Expense", 0),
    ("Bank Charges", EXPENSE, "BankCharges", "Expense", 0),
    (
        "Commissions & fees",
        EXPENSE,
        "CommissionsAndFees",
        "Expense",
        0,
    ),
    (
        "Dues & Subscriptions",
        EXPENSE,
        "DuesSubscriptions",
        "Expense",
        0,
    ),
    ("Equipment Rental", EXPENSE, "EquipmentRental", "Expense", 0),
    ("Insurance", EXPENSE, "Insurance", "Expense", 0),
    ("Workers Compensation", EXPENSE, "Insurance", "Expense", 0),
    ("Interest Expense", EXPENSE, "InterestPaid", "Expense", 0),
    ("Job Expenses", EXPENSE, "CostOfLabor", "Expense", 0),
    ("Cost of Labor", EXPENSE, "CostOfLabor", "Expense", 0),
    (
        "Equipment Rental for Jobs",
        EXPENSE,
        "EquipmentRental",
        "Expense",
        0,
    ),
    (
        "Legal & Professional Fees",
        EXPENSE,
        "LegalProfessionalFees",
        "Expense",
        0,
    ),
    ("Accounting", EXPENSE, "LegalProfessionalFees", "Expense", 0),
    ("Bookkeeper", EXPENSE, "LegalProfessionalFees", "Expense", 0),
    ("Lawyer", EXPENSE, "LegalProfessionalFees", "Expense", 0),
    (
        "Maintenance and Repair",
        EXPENSE,
        "RepairMaintenance",
        "Expense",
        0,
    ),
    (
        "Building Repairs",
        EXPENSE,
        "RepairMaintenance",
        "Expense",
        0,
    ),
    (
        "Meals and Entertainment",
        EXPENSE,
        "EntertainmentMeals",
        "Expense",
        0,
    ),
    (
        "Office Expenses",
        EXPENSE,
        "OfficeGeneralAdministrativeExpenses",
        "Expense",
        0,
    ),
    (
        "Promotional",
        EXPENSE,
        "AdvertisingPromotional",
        "Expense",
        0,
    ),
    ("Purchases", EXPENSE, "SuppliesMaterials", "Expense", 0),
    (
        "Rent or Lease",
        EXPENSE,
        "RentOrLeaseOfBuildings",
        "Expense",
        0,
    ),
    (
        "Stationery & Printing",
        EXPENSE,
        "OfficeGeneralAdministrativeExpenses",
        "Expense",
        0,
    ),
    ("Supplies", EXPENSE, "SuppliesMaterials", "Expense", 0),
    ("Taxes & Licenses", EXPENSE, "TaxesPaid", "Expense", 0),
    ("Travel", EXPENSE, "Travel", "Expense", 0),
    ("Travel Meals", EXPENSE, "TravelMeals", "Expense", 0),
    (
        "Cost of Goods Sold",
        "Cost of Goods Sold",
        "SuppliesMaterialsCogs",
        "Expense",
        0,
    ),
    ("Inventory Asset", OCA, "Inventory", "Asset", 0),
    (
        "Interest Earned",
        "Other Income",
        "InterestEarned",
        "Revenue",
        0,
    ),
    (
        "Other Portfolio Income",
        "Other Income",
        "OtherInvestmentIncome",
        "Revenue",
        0,
    ),
    (
        "Late Fees Income",
        "Other Income",
        "OtherMiscellaneousIncome",
        "Revenue",
        0,
    ),
    (
        "Gain on Sale of Assets",
        "Other Income",
        "GainLossOnSaleOfFixedAssets",
        "Revenue",
        0,
    ),
    (
        "Depreciation",
        "Other Expense",
        "Depreciation",
        "Expense",
        0,
    ),
    (
        "Miscellaneous",
        "Other Expense",
        "OtherMiscellaneousExpense",
        "Expense",
        0,
    ),
    (
        "Penalties & Settlements",
        "Other Expense",
        "PenaltiesSettlements",
        "Expense",
        0,
    ),
    (
        "Amortization",
        "Other Expense",
        "Amortization",
        "Expense",
        0,
    ),
    (
        "Exchange Gain or Loss",
        "Other Expense",
        "ExchangeGainOrLoss",
        "Expense",
        0,
    ),
];

const BANK_IDS: [u64; 2] = [1, 2];
const UNDEPOSITED_ID: u64 = 6;
const AP_ID: u64 = 12;
const CARD_IDS: [u64; 2] = [13, 14];
const INCOME_IDS: (u64, u64) = (22, 45);
const EXPENSE_IDS: (u64, u64) = (47, 79);
const COGS_ID: u64 = 80;
const OTHER_INCOME_IDS: (u64, u64) = (82, 85);

/// Name, type, subtype, classification and parent of account `id` (beyond the fixed chart:
/// more expense accounts).
pub fn account(id: u64) -> (String, &'static str, &'static str, &'static str, u64) {
    let n = ACCOUNTS.len() as u64;
    if (1..=n).contains(&id) {
        let (name, t, st, class, parent) = ACCOUNTS[(id - 1) as usize];
        return (name.to_owned(), t, st, class, parent);
    }
    let span = EXPENSE_IDS.1 - EXPENSE_IDS.0 + 1;
    let base = ACCOUNTS[(EXPENSE_IDS.0 - 1 + (id - n - 1) % span) as usize];
    let cycle = (id - n - 1) / span + 2;
    (format!("{} {cycle}", base.0), base.1, base.2, base.3, 0)
}

fn account_fqn(id: u64) -> String {
    let (name, .., parent) = account(id);
    if parent > 0 {
        format!("{}:{name}", account(parent).0)
    } else {
        name
    }
}

fn in_range(rng: &mut Rng, (lo, hi): (u64, u64)) -> u64 {
    lo + rng.below(hi - lo + 1)
}

// ----- small fixed lists -----

const TERMS: &[(&str, u32)] = &[
    ("Due on receipt", 0),
    ("Net 10", 10),
    ("Net 30", 30),
    ("Net 60", 60),
    ("Net 15", 15),
];
const PAYMENT_METHODS: &[(&str, &str)] = &[
    ("Cash", "NON_CREDIT_CARD"),
    ("Check", "NON_CREDIT_CARD"),
    ("Visa", "CREDIT_CARD"),
    ("MasterCard", "CREDIT_CARD"),
    ("American Express", "CREDIT_CARD"),
    ("Discover", "CREDIT_CARD"),
];
const CUSTOMER_TYPES: &[&str] = &[
    "Retail",
    "Wholesale",
    "Commercial",
    "Residential",
    "Non-profit",
];
const CLASSES: &[&str] = &[
    "Design",
    "Landscaping",
    "Maintenance",
    "Installation",
    "Irrigation",
    "Hardscape",
    "Tree Care",
    "Café Projects ☕",
];
const DEPARTMENTS: &[&str] = &["Palo Alto", "Sunnyvale", "San José", "Seattle"];
/// Foreign currencies (the home currency is USD).
pub const CURRENCIES: &[(&str, &str, i64)] = &[
    ("CAD", "Canadian Dollar", 74),
    ("EUR", "Euro", 109),
    ("GBP", "British Pound Sterling", 127),
    ("MXN", "Mexican Peso", 5),
    ("JPY", "Japanese Yen", 1),
    ("AUD", "Australian Dollar", 66),
    ("CHF", "Swiss Franc", 113),
    ("INR", "Indian Rupee", 1),
];
const JOURNAL_CODES: &[(&str, &str, &str)] = &[
    ("VT", "Sales", "Ventes"),
    ("HA", "Purchases", "Achats"),
    ("BQ", "Bank", "Banque"),
    ("OD", "Others", "Opérations diverses"),
    ("CA", "Cash", "Caisse"),
    ("AN", "Nouveaux", "À nouveaux"),
];
const TAX_AGENCIES: &[&str] = &[
    "California Department of Tax and Fee Administration",
    "Arizona Department of Revenue",
    "Washington State Department of Revenue",
];
/// Tax rates: name, percent in hundredths, agency. Rate 3 is the 8% the invoices use.
const TAX_RATES: &[(&str, i64, u64)] = &[
    ("California", 725, 1),
    ("Santa Clara County", 100, 1),
    ("Bay Area Rate", 800, 1),
    ("San José City", 25, 1),
    ("Arizona", 560, 2),
    ("Pima County", 50, 2),
    ("Tucson City", 260, 2),
    ("Washington", 650, 3),
    ("King County", 10, 3),
    ("Seattle City", 375, 3),
    ("Palo Alto Special District", 25, 1),
    ("Out of State", 0, 1),
];
const VENDOR_NOUNS: &[&str] = &[
    "Hardware",
    "Nursery",
    "Telephone",
    "Power & Light",
    "Lumber",
    "Insurance",
    "Office Supply",
    "Fuel",
    "Stone Yard",
    "Irrigation Supply",
    "Printing",
    "Rentals",
    "Bookkeeping",
    "Law Office",
    "Water District",
    "Garage",
    "Café ☕",
    "\"Quality\" Tools",
    "Back\\Office Services",
    "Pépinière",
];
const FILES: &[(&str, &str, u64)] = &[
    ("receipt.jpg", "image/jpeg", 48_213),
    ("signed_estimate.pdf", "application/pdf", 120_334),
    ("site photo 📷.png", "image/png", 381_920),
    (
        "contract – final.docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        22_016,
    ),
    ("notes.txt", "text/plain", 538),
];

/// A tiny JSON object writer (keys in the order written, commas handled).
struct J {
    out: String,
    first: Vec<bool>,
}

impl J {
    fn new(capacity: usize) -> J {
        let mut out = String::with_capacity(capacity);
        out.push('{');
        J {
            out,
            first: vec![true],
        }
    }

    fn sep(&mut self) {
        if let Some(first) = self.first.last_mut() {
            if *first {
                *first = false;
            } else {
                self.out.push(',');
            }
        }
    }

    fn key(&mut self, k: &str) -> &mut J {
        self.sep();
        push_json_str(&mut self.out, k);
        self.out.push(':');
        self
    }

    fn s(&mut self, k: &str, v: &str) -> &mut J {
        self.key(k);
        push_json_str(&mut self.out, v);
        self
    }

    fn raw(&mut self, k: &str, v: &str) -> &mut J {
        self.key(k);
        self.out.push_str(v);
        self
    }

    fn b(&mut self, k: &str, v: bool) -> &mut J {
        self.raw(k, if v { "true" } else { "false" })
    }

    fn money(&mut self, k: &str, cents: i64) -> &mut J {
        let text = money(cents);
        self.raw(k, &text)
    }

    fn int(&mut self, k: &str, v: u64) -> &mut J {
        let text = v.to_string();
        self.raw(k, &text)
    }

    fn obj(&mut self, k: &str) -> &mut J {
        self.key(k);
        self.out.push('{');
        self.first.push(true);
        self
    }

    fn arr(&mut self, k: &str) -> &mut J {
        self.key(k);
        self.out.push('[');
        self.first.push(true);
        self
    }

    /// An object as the next element of the open array.
    fn elem(&mut self) -> &mut J {
        self.sep();
        self.out.push('{');
        self.first.push(true);
        self
    }

    fn end_obj(&mut self) -> &mut J {
        self.out.push('}');
        self.first.pop();
        self
    }

    fn end_arr(&mut self) -> &mut J {
        self.out.push(']');
        self.first.pop();
        self
    }

    /// `"k":{"value":"id"[,"name":"…"]}`.
    fn reference(&mut self, k: &str, value: u64, name: Option<&str>) -> &mut J {
        self.obj(k).s("value", &value.to_string());
        if let Some(name) = name {
            self.s("name", name);
        }
        self.end_obj()
    }

    fn str_ref(&mut self, k: &str, value: &str, name: Option<&str>) -> &mut J {
        self.obj(k).s("value", value);
        if let Some(name) = name {
            self.s("name", name);
        }
        self.end_obj()
    }

    /// `domain`, `sparse`, `Id`, `SyncToken`, `MetaData`, as the other generators write them.
    fn common(&mut self, id: u64, meta: &Meta) -> &mut J {
        self.sep();
        Generator::push_common(&mut self.out, id, meta);
        self
    }

    fn account(&mut self, k: &str, id: u64) -> &mut J {
        let name = account_fqn(id);
        self.reference(k, id, Some(&name))
    }

    fn usd(&mut self) -> &mut J {
        self.str_ref("CurrencyRef", "USD", Some("United States Dollar"))
    }

    fn finish(mut self) -> String {
        while self.first.len() > 1 {
            self.end_obj();
        }
        self.out.push('}');
        self.out
    }
}

/// What another record needs to know about an invoice, without writing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceFacts {
    pub customer: u64,
    pub paid: bool,
    pub voided: bool,
    /// `TotalAmt` in cents.
    pub total: i64,
    /// `TxnDate`, epoch seconds of its Pacific day.
    pub txn_secs: i64,
}

/// What a bill payment needs to know about its bill.
struct BillFacts {
    vendor: u64,
    total: i64,
    txn_secs: i64,
}

/// One expense line: account, amount in cents, billable customer.
type ExpenseLine = (u64, i64, Option<u64>);

const QTYS: [i64; 12] = [100, 100, 200, 300, 400, 450, 500, 800, 1000, 50, 1200, 2000];

impl Generator {
    fn has(&self, kind: GenKind) -> bool {
        self.offers(kind) && self.size(kind) > 0
    }

    /// `Taxable` and currency of customer `id`: the first draws of its profile.
    fn customer_taxable(&self, id: u64) -> bool {
        let mut rng = Rng::new(self.seed, 0x1009, id);
        rng.below(crate::generate::PLACES.len() as u64);
        rng.below(9999);
        rng.below(crate::generate::STREETS.len() as u64);
        rng.below(100);
        rng.below(2) == 0
    }

    /// Whether invoice `id` is paid (the invoice generator's first draws, replayed).
    pub(crate) fn invoice_paid(&self, id: u64) -> bool {
        if self.is_voided(id) {
            return false;
        }
        let mut rng = Rng::new(self.seed, 0x3007, id);
        let customer = 1 + rng.below(self.customers.max(1));
        if rng.chance(3) {
            rng.below(300);
        } else {
            rng.below(7);
        }
        if self.customer_taxable(customer) {
            rng.below(2);
        }
        rng.chance(600)
    }

    /// Customer, paid/voided, total and date of invoice `id`, replaying the invoice
    /// generator's draws (`tests` check them against the written invoices).
    pub fn invoice_facts(&self, id: u64) -> InvoiceFacts {
        let meta = self.initial_meta(GenKind::Invoice, id);
        let mut rng = Rng::new(self.seed, 0x3007, id);
        let voided = self.is_voided(id);
        let customer = 1 + rng.below(self.customers.max(1));
        let line_count = if rng.chance(3) {
            150 + rng.below(300)
        } else {
            1 + rng.below(7)
        };
        let taxable = self.customer_taxable(customer) && rng.below(2) == 0;
        let paid = !voided && rng.chance(600);
        rng.chance(300);
        if rng.chance(400) {
            rng.below(900);
        }
        let txn_secs = meta.create - rng.below(3) as i64 * DAY;
        let mut subtotal = 0;
        for _ in 0..line_count {
            let item = 1 + rng.below(self.items.max(1));
            let qty = QTYS[rng.below(12) as usize];
            let price = self.item_price(item);
            subtotal += if voided { 0 } else { (qty * price + 50) / 100 };
            rng.below(DESCRIPTIONS.len() as u64);
            rng.below(2);
        }
        let tax = if taxable && !voided {
            subtotal * 8 / 100
        } else {
            0
        };
        InvoiceFacts {
            customer,
            paid,
            voided,
            total: subtotal + tax,
            txn_secs,
        }
    }

    pub(crate) fn bill_paid(&self, id: u64) -> bool {
        mix(self.seed, GenKind::Bill.stream() + 8, id) % 100 < 70
    }

    /// The item type the item generator gives item `id` (its first draw).
    fn item_kind(&self, id: u64) -> u64 {
        Rng::new(self.seed, 0x2008, id).below(10)
    }

    /// An item, preferring `Inventory` ones when `inventory`, from a random start.
    fn pick_item(&self, rng: &mut Rng, inventory: bool) -> u64 {
        let n = self.items.max(1);
        let start = rng.below(n);
        if inventory {
            for step in 0..n.min(1000) {
                let id = 1 + (start + step) % n;
                if self.item_kind(id) == 9 {
                    return id;
                }
            }
        }
        1 + start
    }

    /// Create time spread over the first year for name lists, over 2014–2025 for the rest.
    pub(crate) fn books_meta(&self, kind: GenKind, id: u64) -> Meta {
        let stream = kind.stream();
        let def = kind.def();
        let noise = mix(self.seed, stream + 1, id);
        let create = match kind {
            GenKind::Payment => {
                let invoice = id.saturating_sub(self.invoices).max(1);
                self.invoice_facts(invoice).txn_secs + 3600 + (noise % (30 * DAY as u64)) as i64
            }
            GenKind::BillPayment => {
                self.bill_facts(id).txn_secs + 3600 + (noise % (30 * DAY as u64)) as i64
            }
            GenKind::ExchangeRate => self.rate_date(id) + 10 * 3600 + (noise % 3600) as i64,
            _ if matches!(def.kind, Kind::NameList | Kind::Singleton) => {
                let n = self.size(kind).max(1);
                START + ((id - 1) * 365 * DAY as u64 / n) as i64 + (noise % 86_000) as i64
            }
            _ => create_time(id, self.size(kind).max(1), noise),
        };
        let mut rng = Rng::new(self.seed, stream + 2, id);
        let lut = match rng.below(100) {
            0..55 => create,
            55..85 => create + rng.below(30 * DAY as u64) as i64,
            85..95 => create + rng.below(3 * 365 * DAY as u64) as i64,
            _ => (create / DAY + 1 + rng.below(60) as i64) * DAY,
        };
        let create = create.min(END);
        let lut = lut.min(END).max(create);
        let sync = if lut == create {
            0
        } else {
            1 + rng.below(3) as u32
        };
        let active = def.kind != Kind::NameList || mix(self.seed, stream + 5, id) % 1000 >= 100;
        Meta {
            create,
            lut,
            sync,
            active,
        }
    }

    /// The JSON text of record `id` of one of the entities this module generates.
    pub(crate) fn books_json(&self, kind: GenKind, id: u64, meta: &Meta) -> String {
        use GenKind::*;
        match kind {
            Account => self.account_json(id, meta),
            Term => self.simple_list(kind, id, meta),
            PaymentMethod | CustomerType | Class | Department | CompanyCurrency | JournalCode => {
                self.simple_list(kind, id, meta)
            }
            Vendor => self.vendor_json(id, meta),
            Employee => self.employee_json(id, meta),
            Budget => self.budget_json(id, meta),
            TaxAgency => self.tax_agency_json(id, meta),
            TaxRate => self.tax_rate_json(id, meta),
            TaxCode => self.tax_code_json(id, meta),
            Bill | VendorCredit | Purchase => self.expense_txn_json(kind, id, meta),
            BillPayment => self.bill_payment_json(id, meta),
            Payment => self.payment_json(id, meta),
            Estimate | SalesReceipt | CreditMemo | RefundReceipt => {
                self.sales_txn_json(kind, id, meta)
            }
            PurchaseOrder => self.purchase_order_json(id, meta),
            JournalEntry => self.journal_entry_json(id, meta),
            Deposit => self.deposit_json(id, meta),
            Transfer => self.transfer_json(id, meta),
            CreditCardPayment => self.card_payment_json(id, meta),
            TimeActivity => self.time_activity_json(id, meta),
            InventoryAdjustment => self.inventory_adjustment_json(id, meta),
            ReimburseCharge => self.reimburse_json(id, meta),
            TaxPayment => self.tax_payment_json(id, meta),
            Attachable => self.attachable_json(id, meta),
            RecurringTransaction => self.recurring_json(id, meta),
            ExchangeRate => self.exchange_rate_json(id, meta),
            CompanyInfo => self.company_info_json(meta),
            Preferences => self.preferences_json(meta),
            Customer | Item | Invoice => String::from("{}"),
        }
    }

    fn suffix(&self, kind: GenKind, id: u64, meta: &Meta) -> &'static str {
        if !meta.active && self.is_deleted_name(kind, id) {
            " (deleted)"
        } else {
            ""
        }
    }

    /// `name` for entry `id` of a fixed pool, numbered past the pool's end.
    fn pooled(pool: &[&str], id: u64) -> String {
        let n = pool.len() as u64;
        let base = pool[((id - 1) % n) as usize];
        match (id - 1) / n {
            0 => base.to_owned(),
            cycle => format!("{base} {}", cycle + 1),
        }
    }

    fn account_json(&self, id: u64, meta: &Meta) -> String {
        let (name, account_type, sub_type, class, parent) = account(id);
        let suffix = self.suffix(GenKind::Account, id, meta);
        let mut rng = Rng::new(self.seed, GenKind::Account.stream() + 7, id);
        let mut j = J::new(600);
        j.s("Name", &format!("{name}{suffix}"))
            .b("SubAccount", parent > 0);
        if parent > 0 {
            j.reference("ParentRef", parent, None);
        }
        let balance = if matches!(class, "Asset" | "Liability") {
            rng.below(2_000_000) as i64
        } else {
            0
        };
        j.s(
            "FullyQualifiedName",
            &format!("{}{suffix}", account_fqn(id)),
        )
        .b("Active", meta.active)
        .s("Classification", class)
        .s("AccountType", account_type)
        .s("AccountSubType", sub_type)
        .money("CurrentBalance", balance)
        .money("CurrentBalanceWithSubAccounts", balance)
        .usd()
        .common(id, meta);
        j.finish()
    }

    fn simple_list(&self, kind: GenKind, id: u64, meta: &Meta) -> String {
        let suffix = self.suffix(kind, id, meta);
        let mut j = J::new(400);
        match kind {
            GenKind::Term => {
                let (_, days) = TERMS[((id - 1) % TERMS.len() as u64) as usize];
                let name = Self::pooled(&TERMS.iter().map(|t| t.0).collect::<Vec<_>>(), id);
                j.s("Name", &format!("{name}{suffix}"))
                    .b("Active", meta.active)
                    .s("Type", "STANDARD")
                    .int("DiscountPercent", 0)
                    .int("DueDays", u64::from(days))
                    .int("DiscountDays", 0);
            }
            GenKind::PaymentMethod => {
                let (_, kind_name) = PAYMENT_METHODS[((id - 1) % 6) as usize];
                let name =
                    Self::pooled(&PAYMENT_METHODS.iter().map(|p| p.0).collect::<Vec<_>>(), id);
                j.s("Name", &format!("{name}{suffix}"))
                    .b("Active", meta.active)
                    .s("Type", kind_name);
            }
            GenKind::CustomerType => {
                j.s(
                    "Name",
                    &format!("{}{suffix}", Self::pooled(CUSTOMER_TYPES, id)),
                )
                .b("Active", meta.active);
            }
            GenKind::Class | GenKind::Department => {
                let (pool, sub) = if kind == GenKind::Class {
                    (CLASSES, "SubClass")
                } else {
                    (DEPARTMENTS, "SubDepartment")
                };
                let name = format!("{}{suffix}", Self::pooled(pool, id));
                j.s("Name", &name)
                    .b(sub, false)
                    .s("FullyQualifiedName", &name)
                    .b("Active", meta.active);
            }
            GenKind::CompanyCurrency => {
                let (code, name, _) = CURRENCIES[((id - 1) as usize).min(CURRENCIES.len() - 1)];
                j.s("Code", code)
                    .s("Name", &format!("{name}{suffix}"))
                    .b("Active", meta.active);
            }
            _ => {
                let (_, kind_name, description) =
                    JOURNAL_CODES[((id - 1) % JOURNAL_CODES.len() as u64) as usize];
                let name = Self::pooled(&JOURNAL_CODES.iter().map(|c| c.0).collect::<Vec<_>>(), id);
                j.s("Name", &format!("{name}{suffix}"))
                    .s("Type", kind_name)
                    .s("Description", description)
                    .b("Active", meta.active);
            }
        }
        j.common(id, meta);
        j.finish()
    }

    fn vendor_name(id: u64) -> (&'static str, String, String) {
        let total = (LAST.len() * VENDOR_NOUNS.len()) as u64;
        let k = (id - 1) % total * 7919 % total;
        let family = LAST[(k % LAST.len() as u64) as usize];
        let noun = VENDOR_NOUNS[(k / LAST.len() as u64) as usize];
        let cycle = (id - 1) / total;
        let company = if cycle > 0 {
            format!("{family} {noun} {}", cycle + 1)
        } else {
            format!("{family} {noun}")
        };
        (family, company.clone(), company)
    }

    fn vendor_json(&self, id: u64, meta: &Meta) -> String {
        let mut rng = Rng::new(self.seed, GenKind::Vendor.stream() + 7, id);
        let (family, company, display) = Self::vendor_name(id);
        let suffix = self.suffix(GenKind::Vendor, id, meta);
        let given = rng.pick(FIRST);
        let mut j = J::new(900);
        if rng.chance(700) {
            let (city, state, zip, lat, long) =
                crate::generate::PLACES[rng.below(crate::generate::PLACES.len() as u64) as usize];
            j.obj("BillAddr")
                .s("Id", &(1000 + id).to_string())
                .s(
                    "Line1",
                    &format!(
                        "{} {}",
                        1 + rng.below(9999),
                        rng.pick(crate::generate::STREETS)
                    ),
                )
                .s("City", city)
                .s("CountrySubDivisionCode", state)
                .s("PostalCode", zip)
                .s("Lat", lat)
                .s("Long", long)
                .end_obj();
        }
        j.int("Balance", 0);
        if rng.chance(500) {
            j.s("AcctNum", &(1000 + rng.below(9000)).to_string());
        }
        j.b("Vendor1099", rng.chance(200));
        j.usd();
        if self.has(GenKind::Term) {
            let term = 1 + rng.below(self.size(GenKind::Term));
            j.reference("TermRef", term, None);
        }
        j.common(id, meta)
            .s("GivenName", given)
            .s("FamilyName", family)
            .s("CompanyName", &company)
            .s("DisplayName", &format!("{display}{suffix}"))
            .s("PrintOnCheckName", &company)
            .b("Active", meta.active)
            .obj("PrimaryPhone")
            .s(
                "FreeFormNumber",
                &format!("({}) 555-{:04}", 200 + rng.below(800), rng.below(10_000)),
            )
            .end_obj()
            .obj("PrimaryEmailAddr")
            .s("Address", &format!("billing{id}@sandbox-vendors.example"))
            .end_obj();
        j.finish()
    }

    fn employee_name(id: u64) -> (&'static str, &'static str, String) {
        let total = (FIRST.len() * LAST.len()) as u64;
        let k = (id - 1) % total * 7919 % total;
        let given = FIRST[(k % FIRST.len() as u64) as usize];
        let family = LAST[(k / FIRST.len() as u64) as usize];
        let cycle = (id - 1) / total;
        let display = if cycle > 0 {
            format!("{given} {family} {}", cycle + 1)
        } else {
            format!("{given} {family}")
        };
        (given, family, display)
    }

    fn employee_json(&self, id: u64, meta: &Meta) -> String {
        let mut rng = Rng::new(self.seed, GenKind::Employee.stream() + 7, id);
        let (given, family, display) = Self::employee_name(id);
        let suffix = self.suffix(GenKind::Employee, id, meta);
        let mut j = J::new(600);
        j.b("BillableTime", rng.chance(500));
        if rng.chance(600) {
            j.s(
                "BirthDate",
                &pacific_date(START - (20 + rng.below(40)) as i64 * 365 * DAY),
            );
        }
        j.s("HiredDate", &pacific_date(meta.create))
            .common(id, meta)
            .s("GivenName", given)
            .s("FamilyName", family)
            .s("DisplayName", &format!("{display}{suffix}"))
            .s("PrintOnCheckName", &display)
            .b("Active", meta.active)
            .s("EmployeeNumber", &format!("E{id:03}"))
            .obj("PrimaryPhone")
            .s(
                "FreeFormNumber",
                &format!("({}) 555-{:04}", 200 + rng.below(800), rng.below(10_000)),
            )
            .end_obj();
        j.finish()
    }

    fn budget_json(&self, id: u64, meta: &Meta) -> String {
        let year = 2024 - (id as i64 - 1) % 10;
        let suffix = self.suffix(GenKind::Budget, id, meta);
        let mut rng = Rng::new(self.seed, GenKind::Budget.stream() + 7, id);
        let mut j = J::new(6000);
        j.s("Name", &format!("FY{year} Budget{suffix}"))
            .s("StartDate", &format!("{year}-01-01"))
            .s("EndDate", &format!("{year}-12-31"))
            .s("BudgetType", "ProfitAndLoss")
            .s("BudgetEntryType", "Monthly")
            .b("Active", meta.active)
            .arr("BudgetDetail");
        let accounts = [22, 23, 29, 47, 48, 51, 58, 75];
        for account in accounts {
            for month in 1..=12 {
                j.elem()
                    .s("BudgetDate", &format!("{year}-{month:02}-01"))
                    .money("Amount", (100 + rng.below(5000)) as i64 * 100)
                    .account("AccountRef", account)
                    .end_obj();
            }
        }
        j.end_arr().common(id, meta);
        j.finish()
    }

    fn tax_agency_json(&self, id: u64, meta: &Meta) -> String {
        let suffix = self.suffix(GenKind::TaxAgency, id, meta);
        let mut j = J::new(400);
        j.s(
            "DisplayName",
            &format!("{}{suffix}", Self::pooled(TAX_AGENCIES, id)),
        )
        .b("Active", meta.active)
        .b("TaxTrackedOnSales", true)
        .b("TaxTrackedOnPurchases", false)
        .common(id, meta);
        j.finish()
    }

    fn tax_rate(id: u64) -> (String, i64, u64) {
        let (_, rate, agency) = TAX_RATES[((id - 1) % TAX_RATES.len() as u64) as usize];
        let name = Self::pooled(&TAX_RATES.iter().map(|r| r.0).collect::<Vec<_>>(), id);
        (name, rate, agency)
    }

    fn tax_rate_json(&self, id: u64, meta: &Meta) -> String {
        let (name, rate, agency) = Self::tax_rate(id);
        let agency = 1 + (agency - 1) % self.size(GenKind::TaxAgency).max(1);
        let suffix = self.suffix(GenKind::TaxRate, id, meta);
        let mut j = J::new(500);
        j.s("Name", &format!("{name}{suffix}"))
            .s("Description", "Sales Tax")
            .b("Active", meta.active)
            .raw("RateValue", &decimal(rate))
            .reference("AgencyRef", agency, None)
            .s("SpecialTaxType", "NONE")
            .s("DisplayType", "ReadOnly")
            .arr("EffectiveTaxRate")
            .elem()
            .raw("RateValue", &decimal(rate))
            .s("EffectiveDate", &pacific_secs(START))
            .end_obj()
            .end_arr()
            .common(id, meta);
        j.finish()
    }

    fn tax_code_json(&self, id: u64, meta: &Meta) -> String {
        // Code k charges rate k + 1 (so code 2, which the invoices name, charges rate 3).
        let rates = self.size(GenKind::TaxRate).max(1);
        let rate = 1 + id % rates;
        let (rate_name, ..) = Self::tax_rate(rate);
        let suffix = self.suffix(GenKind::TaxCode, id, meta);
        let mut j = J::new(600);
        j.s("Name", &format!("{rate_name}{suffix}"))
            .s("Description", &format!("{rate_name} sales tax"))
            .b("Active", meta.active)
            .b("Hidden", false)
            .b("Taxable", true)
            .b("TaxGroup", true)
            .obj("SalesTaxRateList")
            .arr("TaxRateDetail")
            .elem()
            .reference("TaxRateRef", rate, Some(&rate_name))
            .s("TaxTypeApplicable", "TaxOnAmount")
            .int("TaxOrder", 0)
            .end_obj()
            .end_arr()
            .end_obj()
            .obj("PurchaseTaxRateList")
            .arr("TaxRateDetail")
            .end_arr()
            .end_obj()
            .common(id, meta);
        j.finish()
    }
}

// ----- transactions -----

impl Generator {
    fn customer_name(&self, id: u64) -> String {
        self.customer_profile(id).fqn
    }

    fn class_ref(&self, j: &mut J, rng: &mut Rng) {
        if self.has(GenKind::Class) {
            let class = 1 + rng.below(self.size(GenKind::Class));
            j.reference("ClassRef", class, Some(&Self::pooled(CLASSES, class)));
        }
    }

    fn department_ref(&self, j: &mut J, rng: &mut Rng) {
        if self.has(GenKind::Department) && rng.chance(600) {
            let dept = 1 + rng.below(self.size(GenKind::Department));
            j.reference(
                "DepartmentRef",
                dept,
                Some(&Self::pooled(DEPARTMENTS, dept)),
            );
        }
    }

    fn payment_method_ref(&self, j: &mut J, rng: &mut Rng) {
        if self.has(GenKind::PaymentMethod) {
            let pm = 1 + rng.below(self.size(GenKind::PaymentMethod));
            let name = Self::pooled(&PAYMENT_METHODS.iter().map(|p| p.0).collect::<Vec<_>>(), pm);
            j.reference("PaymentMethodRef", pm, Some(&name));
        }
    }

    fn vendor_ref(&self, j: &mut J, key: &str, vendor: u64) {
        let (_, _, display) = Self::vendor_name(vendor);
        j.reference(key, vendor, Some(&display));
    }

    fn txn_date(create: i64, rng: &mut Rng) -> i64 {
        create - rng.below(3) as i64 * DAY
    }

    /// Vendor, date and expense lines of a Bill, VendorCredit or Purchase, and the rng for
    /// the rest of the record.
    fn expense_facts(&self, kind: GenKind, id: u64) -> (BillFacts, Vec<ExpenseLine>, Rng) {
        let create = self.initial_meta(kind, id).create;
        let mut rng = Rng::new(self.seed, kind.stream() + 7, id);
        let vendor = 1 + rng.below(self.size(GenKind::Vendor).max(1));
        let txn_secs = Self::txn_date(create, &mut rng);
        let billable = self.features.contains(&Feature::BillableExpenses) && self.customers > 0;
        let lines: Vec<ExpenseLine> = (0..1 + rng.below(4))
            .map(|_| {
                let account = if rng.chance(100) {
                    COGS_ID
                } else {
                    in_range(&mut rng, EXPENSE_IDS)
                };
                let amount = 500 + rng.below(250_000) as i64;
                let customer =
                    (billable && rng.chance(150)).then(|| 1 + rng.below(self.customers.max(1)));
                (account, amount, customer)
            })
            .collect();
        let total = lines.iter().map(|l| l.1).sum();
        (
            BillFacts {
                vendor,
                total,
                txn_secs,
            },
            lines,
            rng,
        )
    }

    fn bill_facts(&self, id: u64) -> BillFacts {
        self.expense_facts(GenKind::Bill, id).0
    }

    fn push_expense_lines(&self, j: &mut J, lines: &[ExpenseLine], rng: &mut Rng) {
        j.arr("Line");
        for (n, (account, amount, customer)) in lines.iter().enumerate() {
            j.elem()
                .s("Id", &(n + 1).to_string())
                .int("LineNum", n as u64 + 1);
            if rng.chance(500) {
                j.s("Description", rng.pick(DESCRIPTIONS));
            }
            j.money("Amount", *amount)
                .s("DetailType", "AccountBasedExpenseLineDetail")
                .obj("AccountBasedExpenseLineDetail");
            if let Some(customer) = customer {
                j.reference(
                    "CustomerRef",
                    *customer,
                    Some(&self.customer_name(*customer)),
                );
            }
            self.class_ref(j, rng);
            j.account("AccountRef", *account)
                .s(
                    "BillableStatus",
                    if customer.is_some() {
                        "Billable"
                    } else {
                        "NotBillable"
                    },
                )
                .str_ref("TaxCodeRef", "NON", None)
                .end_obj()
                .end_obj();
        }
        j.end_arr();
    }

    /// Bill, VendorCredit and Purchase: a vendor's expense lines.
    fn expense_txn_json(&self, kind: GenKind, id: u64, meta: &Meta) -> String {
        let (facts, lines, mut rng) = self.expense_facts(kind, id);
        let date = pacific_date(facts.txn_secs);
        let mut j = J::new(1200 + 400 * lines.len());
        match kind {
            GenKind::Bill => {
                let terms = self.size(GenKind::Term);
                let term = (terms > 0).then(|| 1 + rng.below(terms));
                let due_days = term.map_or(30, |t| {
                    i64::from(TERMS[((t - 1) % TERMS.len() as u64) as usize].1)
                });
                let paid = self.bill_paid(id);
                j.s("DueDate", &pacific_date(facts.txn_secs + due_days * DAY))
                    .money("Balance", if paid { 0 } else { facts.total })
                    .common(id, meta);
                if rng.chance(600) {
                    j.s("DocNumber", &format!("B-{}", 5000 + id));
                }
                j.s("TxnDate", &date).usd();
                j.arr("LinkedTxn");
                if paid {
                    j.elem()
                        .s("TxnId", &id.to_string())
                        .s("TxnType", "BillPayment")
                        .end_obj();
                }
                j.end_arr();
                self.push_expense_lines(&mut j, &lines, &mut rng);
                self.vendor_ref(&mut j, "VendorRef", facts.vendor);
                j.account("APAccountRef", AP_ID);
                if let Some(term) = term {
                    j.reference("SalesTermRef", term, None);
                }
                j.money("TotalAmt", facts.total);
                self.department_ref(&mut j, &mut rng);
            }
            GenKind::VendorCredit => {
                j.money("Balance", facts.total).common(id, meta);
                j.s("DocNumber", &format!("VC-{}", 100 + id))
                    .s("TxnDate", &date)
                    .usd();
                self.push_expense_lines(&mut j, &lines, &mut rng);
                self.vendor_ref(&mut j, "VendorRef", facts.vendor);
                j.account("APAccountRef", AP_ID)
                    .money("TotalAmt", facts.total);
            }
            _ => {
                let (payment_type, account) = match rng.below(10) {
                    0..4 => ("CreditCard", CARD_IDS[rng.below(2) as usize]),
                    4..7 => ("Check", BANK_IDS[0]),
                    _ => ("Cash", BANK_IDS[rng.below(2) as usize]),
                };
                j.account("AccountRef", account)
                    .s("PaymentType", payment_type);
                j.obj("EntityRef").s("value", &facts.vendor.to_string());
                let (_, _, display) = Self::vendor_name(facts.vendor);
                j.s("name", &display).s("type", "Vendor").end_obj();
                j.b("Credit", false).money("TotalAmt", facts.total);
                if payment_type == "CreditCard" {
                    self.payment_method_ref(&mut j, &mut rng);
                }
                j.s(
                    "PrintStatus",
                    if payment_type == "Check" {
                        "NeedToPrint"
                    } else {
                        "NotSet"
                    },
                )
                .common(id, meta);
                if payment_type == "Check" {
                    j.s("DocNumber", &(2000 + id).to_string());
                }
                j.s("TxnDate", &date).usd();
                if rng.chance(300) {
                    j.s("PrivateNote", rng.pick(MEMOS));
                }
                self.push_expense_lines(&mut j, &lines, &mut rng);
                self.department_ref(&mut j, &mut rng);
            }
        }
        j.finish()
    }

    fn bill_payment_json(&self, id: u64, meta: &Meta) -> String {
        let facts = self.bill_facts(id);
        let mut rng = Rng::new(self.seed, GenKind::BillPayment.stream() + 7, id);
        let mut j = J::new(800);
        self.vendor_ref(&mut j, "VendorRef", facts.vendor);
        j.account("APAccountRef", AP_ID);
        let check = rng.chance(700);
        if check {
            j.s("PayType", "Check")
                .obj("CheckPayment")
                .account("BankAccountRef", BANK_IDS[0])
                .s("PrintStatus", "NotSet")
                .end_obj();
        } else {
            j.s("PayType", "CreditCard")
                .obj("CreditCardPayment")
                .account("CCAccountRef", CARD_IDS[rng.below(2) as usize])
                .end_obj();
        }
        j.money("TotalAmt", facts.total).common(id, meta);
        if check {
            j.s("DocNumber", &(7000 + id).to_string());
        }
        j.s("TxnDate", &pacific_date(meta.create))
            .usd()
            .arr("Line")
            .elem()
            .money("Amount", facts.total)
            .arr("LinkedTxn")
            .elem()
            .s("TxnId", &id.to_string())
            .s("TxnType", "Bill")
            .end_obj()
            .end_arr()
            .end_obj()
            .end_arr();
        j.finish()
    }

    fn payment_json(&self, id: u64, meta: &Meta) -> String {
        let invoice = id.saturating_sub(self.invoices).max(1);
        let facts = self.invoice_facts(invoice);
        let customer = self.customer_profile(facts.customer);
        let mut rng = Rng::new(self.seed, GenKind::Payment.stream() + 7, id);
        let mut j = J::new(900);
        j.reference("CustomerRef", facts.customer, Some(&customer.fqn));
        if self.has(GenKind::Account) {
            j.account("DepositToAccountRef", UNDEPOSITED_ID);
        }
        self.payment_method_ref(&mut j, &mut rng);
        if rng.chance(500) {
            j.s("PaymentRefNum", &(1000 + rng.below(9000)).to_string());
        }
        j.money("TotalAmt", facts.total)
            .int("UnappliedAmt", 0)
            .b("ProcessPayment", false)
            .common(id, meta)
            .s("TxnDate", &pacific_date(meta.create))
            .str_ref(
                "CurrencyRef",
                customer.currency.0,
                Some(customer.currency.1),
            )
            .arr("Line")
            .elem()
            .money("Amount", facts.total)
            .arr("LinkedTxn")
            .elem()
            .s("TxnId", &invoice.to_string())
            .s("TxnType", "Invoice")
            .end_obj()
            .end_arr()
            .end_obj()
            .end_arr();
        j.finish()
    }

    /// `SalesItemLineDetail` lines and the subtotal line; returns the subtotal in cents.
    fn push_sales_lines(&self, j: &mut J, rng: &mut Rng, tax_code: &str) -> i64 {
        let mut subtotal = 0;
        j.arr("Line");
        for line in 1..=1 + rng.below(5) {
            let item = 1 + rng.below(self.items.max(1));
            let qty = QTYS[rng.below(12) as usize];
            let price = self.item_price(item);
            let amount = (qty * price + 50) / 100;
            subtotal += amount;
            j.elem()
                .s("Id", &line.to_string())
                .int("LineNum", line)
                .s("Description", rng.pick(DESCRIPTIONS))
                .money("Amount", amount)
                .s("DetailType", "SalesItemLineDetail")
                .obj("SalesItemLineDetail")
                .reference("ItemRef", item, Some(&self.item_name(item)))
                .raw("UnitPrice", &decimal(price))
                .raw("Qty", &decimal(qty));
            self.class_ref(j, rng);
            j.str_ref("TaxCodeRef", tax_code, None).end_obj().end_obj();
        }
        j.elem()
            .money("Amount", subtotal)
            .s("DetailType", "SubTotalLineDetail")
            .obj("SubTotalLineDetail")
            .end_obj()
            .end_obj()
            .end_arr();
        subtotal
    }

    fn push_tax(&self, j: &mut J, subtotal: i64, taxable: bool) -> i64 {
        let tax = if taxable { subtotal * 8 / 100 } else { 0 };
        if tax > 0 {
            j.obj("TxnTaxDetail")
                .reference("TxnTaxCodeRef", 2, None)
                .money("TotalTax", tax)
                .arr("TaxLine")
                .elem()
                .money("Amount", tax)
                .s("DetailType", "TaxLineDetail")
                .obj("TaxLineDetail")
                .reference("TaxRateRef", 3, None)
                .b("PercentBased", true)
                .int("TaxPercent", 8)
                .money("NetAmountTaxable", subtotal)
                .end_obj()
                .end_obj()
                .end_arr()
                .end_obj();
        } else {
            j.obj("TxnTaxDetail").int("TotalTax", 0).end_obj();
        }
        tax
    }

    /// Estimate, SalesReceipt, CreditMemo, RefundReceipt: a customer's item lines.
    fn sales_txn_json(&self, kind: GenKind, id: u64, meta: &Meta) -> String {
        let mut rng = Rng::new(self.seed, kind.stream() + 7, id);
        let customer_id = 1 + rng.below(self.customers.max(1));
        let customer = self.customer_profile(customer_id);
        let txn_secs = Self::txn_date(meta.create, &mut rng);
        let taxes = self.has(GenKind::TaxCode)
            && self.size(GenKind::TaxCode) >= 2
            && self.size(GenKind::TaxRate) >= 3;
        let taxable = taxes
            && matches!(kind, GenKind::Estimate | GenKind::SalesReceipt)
            && customer.taxable
            && rng.below(2) == 0;
        let mut j = J::new(2000);
        j.common(id, meta)
            .arr("CustomField")
            .elem()
            .s("DefinitionId", "1")
            .s("Name", "Crew #")
            .s("Type", "StringType")
            .end_obj()
            .end_arr()
            .s("DocNumber", &(1000 + id).to_string())
            .s("TxnDate", &pacific_date(txn_secs))
            .str_ref(
                "CurrencyRef",
                customer.currency.0,
                Some(customer.currency.1),
            );
        if kind == GenKind::Estimate {
            j.s(
                "TxnStatus",
                ["Pending", "Accepted", "Closed", "Rejected"][rng.below(4) as usize],
            );
        }
        let subtotal = self.push_sales_lines(&mut j, &mut rng, if taxable { "TAX" } else { "NON" });
        let tax = self.push_tax(&mut j, subtotal, taxable);
        let total = subtotal + tax;
        j.reference("CustomerRef", customer_id, Some(&customer.fqn));
        if rng.chance(400) {
            j.obj("CustomerMemo").s("value", rng.pick(MEMOS)).end_obj();
        }
        j.key("BillAddr");
        self.push_addr(&mut j.out, customer_id * 2, &customer);
        j.money("TotalAmt", total)
            .b("ApplyTaxAfterDiscount", false)
            .s(
                "PrintStatus",
                if rng.chance(500) {
                    "NeedToPrint"
                } else {
                    "NotSet"
                },
            )
            .s("EmailStatus", "NotSet");
        match kind {
            GenKind::Estimate => {
                j.s("ExpirationDate", &pacific_date(txn_secs + 30 * DAY));
            }
            GenKind::SalesReceipt => {
                j.int("Balance", 0);
                self.payment_method_ref(&mut j, &mut rng);
                j.account("DepositToAccountRef", UNDEPOSITED_ID);
            }
            GenKind::CreditMemo => {
                j.money("RemainingCredit", total).money("Balance", total);
            }
            _ => {
                j.int("Balance", 0);
                self.payment_method_ref(&mut j, &mut rng);
                j.account("DepositToAccountRef", BANK_IDS[0]);
            }
        }
        self.department_ref(&mut j, &mut rng);
        j.finish()
    }

    fn purchase_order_json(&self, id: u64, meta: &Meta) -> String {
        let mut rng = Rng::new(self.seed, GenKind::PurchaseOrder.stream() + 7, id);
        let vendor = 1 + rng.below(self.size(GenKind::Vendor).max(1));
        let txn_secs = Self::txn_date(meta.create, &mut rng);
        let mut j = J::new(1500);
        j.s("POStatus", if rng.chance(600) { "Closed" } else { "Open" })
            .common(id, meta)
            .s("DocNumber", &(1000 + id).to_string())
            .s("TxnDate", &pacific_date(txn_secs))
            .usd()
            .arr("Line");
        let mut total = 0;
        for line in 1..=1 + rng.below(4) {
            let inventory = rng.chance(500);
            let item = self.pick_item(&mut rng, inventory);
            let qty = QTYS[rng.below(12) as usize];
            let cost = self.item_price(item) * 6 / 10;
            let amount = (qty * cost + 50) / 100;
            total += amount;
            j.elem()
                .s("Id", &line.to_string())
                .int("LineNum", line)
                .money("Amount", amount)
                .s("DetailType", "ItemBasedExpenseLineDetail")
                .obj("ItemBasedExpenseLineDetail")
                .s("BillableStatus", "NotBillable")
                .reference("ItemRef", item, Some(&self.item_name(item)))
                .raw("UnitPrice", &decimal(cost))
                .raw("Qty", &decimal(qty))
                .str_ref("TaxCodeRef", "NON", None)
                .end_obj()
                .end_obj();
        }
        j.end_arr();
        self.vendor_ref(&mut j, "VendorRef", vendor);
        j.account("APAccountRef", AP_ID).money("TotalAmt", total);
        j.finish()
    }

    fn journal_entry_json(&self, id: u64, meta: &Meta) -> String {
        let mut rng = Rng::new(self.seed, GenKind::JournalEntry.stream() + 7, id);
        let txn_secs = Self::txn_date(meta.create, &mut rng);
        let pairs: Vec<(u64, u64, i64)> = (0..1 + rng.below(3))
            .map(|_| {
                let debit = match rng.below(3) {
                    0 => in_range(&mut rng, EXPENSE_IDS),
                    1 => 7 + rng.below(5),
                    _ => 86 + rng.below(5),
                };
                let credit = [1, 2, 15, 16, 17, 18, 19][rng.below(7) as usize];
                (debit, credit, 1000 + rng.below(500_000) as i64)
            })
            .collect();
        let total: i64 = pairs.iter().map(|p| p.2).sum();
        let mut j = J::new(600 + 400 * pairs.len());
        j.b("Adjustment", rng.chance(100))
            .common(id, meta)
            .s("DocNumber", &format!("JE{}", 100 + id))
            .s("TxnDate", &pacific_date(txn_secs))
            .usd();
        if rng.chance(400) {
            j.s("PrivateNote", "Month-end accrual — reversed next month");
        }
        j.arr("Line");
        let postings = pairs
            .iter()
            .map(|p| ("Debit", p.0, p.2))
            .chain(pairs.iter().map(|p| ("Credit", p.1, p.2)));
        for (n, (side, account, amount)) in postings.enumerate() {
            j.elem()
                .s("Id", &n.to_string())
                .s("Description", &format!("{side} {}", account_fqn(account)))
                .money("Amount", amount)
                .s("DetailType", "JournalEntryLineDetail")
                .obj("JournalEntryLineDetail")
                .s("PostingType", side)
                .account("AccountRef", account);
            self.class_ref(&mut j, &mut rng);
            j.end_obj().end_obj();
        }
        j.end_arr().money("TotalAmt", total);
        j.finish()
    }

    fn deposit_json(&self, id: u64, meta: &Meta) -> String {
        let mut rng = Rng::new(self.seed, GenKind::Deposit.stream() + 7, id);
        let txn_secs = Self::txn_date(meta.create, &mut rng);
        let mut j = J::new(1200);
        j.account("DepositToAccountRef", BANK_IDS[rng.below(2) as usize])
            .common(id, meta)
            .s("TxnDate", &pacific_date(txn_secs))
            .usd()
            .arr("Line");
        let mut total = 0;
        for line in 1..=1 + rng.below(3) {
            let amount = 1000 + rng.below(300_000) as i64;
            total += amount;
            let account = if rng.chance(500) {
                in_range(&mut rng, OTHER_INCOME_IDS)
            } else {
                in_range(&mut rng, INCOME_IDS)
            };
            j.elem()
                .s("Id", &line.to_string())
                .int("LineNum", line)
                .money("Amount", amount)
                .s("DetailType", "DepositLineDetail")
                .obj("DepositLineDetail");
            if self.customers > 0 && rng.chance(500) {
                let c = 1 + rng.below(self.customers);
                j.obj("Entity")
                    .s("value", &c.to_string())
                    .s("name", &self.customer_name(c))
                    .s("type", "CUSTOMER")
                    .end_obj();
            }
            j.account("AccountRef", account);
            self.payment_method_ref(&mut j, &mut rng);
            j.end_obj().end_obj();
        }
        j.end_arr().money("TotalAmt", total);
        j.finish()
    }

    fn transfer_json(&self, id: u64, meta: &Meta) -> String {
        let mut rng = Rng::new(self.seed, GenKind::Transfer.stream() + 7, id);
        let from = 1 + rng.below(4);
        let to = 1 + (from + rng.below(3)) % 4;
        let txn_secs = Self::txn_date(meta.create, &mut rng);
        let mut j = J::new(500);
        j.account("FromAccountRef", from)
            .account("ToAccountRef", to)
            .money("Amount", 10_000 + rng.below(1_000_000) as i64)
            .common(id, meta)
            .s("TxnDate", &pacific_date(txn_secs))
            .usd();
        if rng.chance(300) {
            j.s("PrivateNote", "Sweep to savings");
        }
        j.finish()
    }

    fn card_payment_json(&self, id: u64, meta: &Meta) -> String {
        let mut rng = Rng::new(self.seed, GenKind::CreditCardPayment.stream() + 7, id);
        let txn_secs = Self::txn_date(meta.create, &mut rng);
        let mut j = J::new(500);
        j.account("CreditCardAccountRef", CARD_IDS[rng.below(2) as usize])
            .s("TxnDate", &pacific_date(txn_secs))
            .usd()
            .money("Amount", 5_000 + rng.below(500_000) as i64)
            .account("BankAccountRef", BANK_IDS[0]);
        if rng.chance(300) {
            j.s("PrivateNote", "Pay down card balance");
        }
        j.common(id, meta);
        j.finish()
    }

    fn time_activity_json(&self, id: u64, meta: &Meta) -> String {
        let mut rng = Rng::new(self.seed, GenKind::TimeActivity.stream() + 7, id);
        let employee = 1 + rng.below(self.size(GenKind::Employee).max(1));
        let customer = 1 + rng.below(self.customers.max(1));
        let item = self.pick_item(&mut rng, false);
        let txn_secs = Self::txn_date(meta.create, &mut rng);
        let billable = rng.chance(600);
        let (_, _, employee_name) = Self::employee_name(employee);
        let mut j = J::new(800);
        j.s("TxnDate", &pacific_date(txn_secs))
            .s("NameOf", "Employee")
            .reference("EmployeeRef", employee, Some(&employee_name))
            .reference("CustomerRef", customer, Some(&self.customer_name(customer)))
            .reference("ItemRef", item, Some(&self.item_name(item)))
            .s(
                "BillableStatus",
                if billable { "Billable" } else { "NotBillable" },
            )
            .b("Taxable", false)
            .raw("HourlyRate", &decimal(self.item_price(item)))
            .int("Hours", 1 + rng.below(8))
            .int("Minutes", [0, 15, 30, 45][rng.below(4) as usize])
            .s("Description", rng.pick(DESCRIPTIONS))
            .common(id, meta);
        j.finish()
    }

    fn inventory_adjustment_json(&self, id: u64, meta: &Meta) -> String {
        let mut rng = Rng::new(self.seed, GenKind::InventoryAdjustment.stream() + 7, id);
        let txn_secs = Self::txn_date(meta.create, &mut rng);
        let mut j = J::new(700);
        j.account("AdjustAccountRef", COGS_ID)
            .s("DocNumber", &format!("IA-{id}"))
            .s("TxnDate", &pacific_date(txn_secs))
            .arr("Line");
        for line in 1..=1 + rng.below(3) {
            let item = self.pick_item(&mut rng, true);
            let qty = 1 + rng.below(20) as i64;
            let diff = if rng.chance(700) { -qty } else { qty };
            j.elem()
                .s("Id", &line.to_string())
                .s("DetailType", "ItemAdjustmentLineDetail")
                .obj("ItemAdjustmentLineDetail")
                .reference("ItemRef", item, Some(&self.item_name(item)))
                .raw("QtyDiff", &diff.to_string())
                .end_obj()
                .end_obj();
        }
        j.end_arr().common(id, meta);
        j.finish()
    }

    fn reimburse_json(&self, id: u64, meta: &Meta) -> String {
        let mut rng = Rng::new(self.seed, GenKind::ReimburseCharge.stream() + 7, id);
        let customer_id = 1 + rng.below(self.customers.max(1));
        let customer = self.customer_profile(customer_id);
        let txn_secs = Self::txn_date(meta.create, &mut rng);
        let amounts: Vec<i64> = (0..1 + rng.below(2))
            .map(|_| 500 + rng.below(80_000) as i64)
            .collect();
        let total = amounts.iter().sum();
        let mut j = J::new(800);
        j.money("Amount", total)
            .reference("CustomerRef", customer_id, Some(&customer.fqn))
            .b("HasBeenInvoiced", rng.chance(300))
            .str_ref(
                "CurrencyRef",
                customer.currency.0,
                Some(customer.currency.1),
            )
            .s("TxnDate", &pacific_date(txn_secs))
            .arr("Line");
        for (n, amount) in amounts.iter().enumerate() {
            j.elem()
                .s("Id", &(n + 1).to_string())
                .int("LineNum", n as u64 + 1)
                .money("Amount", *amount)
                .s("DetailType", "ReimburseLineDetail")
                .obj("ReimburseLineDetail")
                .account("ItemAccountRef", in_range(&mut rng, INCOME_IDS))
                .end_obj()
                .end_obj();
        }
        j.end_arr().common(id, meta);
        j.finish()
    }

    fn tax_payment_json(&self, id: u64, meta: &Meta) -> String {
        let mut rng = Rng::new(self.seed, GenKind::TaxPayment.stream() + 7, id);
        let refund = rng.chance(100);
        let mut j = J::new(500);
        j.money("PaymentAmount", 10_000 + rng.below(900_000) as i64)
            .s("PaymentDate", &pacific_date(meta.create))
            .account("PaymentAccountRef", BANK_IDS[0])
            .b("Refund", refund)
            .s(
                "Description",
                if refund {
                    "Sales tax refund"
                } else {
                    "Sales tax payment"
                },
            )
            .common(id, meta);
        j.finish()
    }

    fn attachable_json(&self, id: u64, meta: &Meta) -> String {
        let mut rng = Rng::new(self.seed, GenKind::Attachable.stream() + 7, id);
        let (name, content_type, size) = FILES[rng.below(FILES.len() as u64) as usize];
        let invoice = 1 + rng.below(self.invoices.max(1));
        let mut j = J::new(500);
        j.s("FileName", name)
            .int("Size", size + rng.below(1000))
            .s("ContentType", content_type);
        if rng.chance(300) {
            j.s("Note", rng.pick(crate::generate::NOTES));
        }
        j.common(id, meta)
            .arr("AttachableRef")
            .elem()
            .obj("EntityRef")
            .s("value", &invoice.to_string())
            .s("type", "Invoice")
            .end_obj()
            .b("IncludeOnSend", false)
            .end_obj()
            .end_arr();
        j.finish()
    }

    /// `{"Invoice": {...}}` or `{"Bill": {...}}`: a template with `RecurringInfo`.
    fn recurring_json(&self, id: u64, meta: &Meta) -> String {
        let mut rng = Rng::new(self.seed, GenKind::RecurringTransaction.stream() + 7, id);
        let invoice = id % 2 == 1;
        let mut j = J::new(1500);
        let name;
        if invoice {
            let customer_id = 1 + rng.below(self.customers.max(1));
            let customer = self.customer_profile(customer_id);
            name = format!("Monthly service — {}", customer.display);
            j.b("AllowOnlineACHPayment", false)
                .common(id, meta)
                .str_ref(
                    "CurrencyRef",
                    customer.currency.0,
                    Some(customer.currency.1),
                );
            let subtotal = self.push_sales_lines(&mut j, &mut rng, "NON");
            j.obj("TxnTaxDetail").int("TotalTax", 0).end_obj();
            j.reference("CustomerRef", customer_id, Some(&customer.fqn))
                .money("TotalAmt", subtotal)
                .money("Balance", subtotal)
                .b("ApplyTaxAfterDiscount", false)
                .s("PrintStatus", "NotSet")
                .s("EmailStatus", "NotSet");
        } else {
            let vendor = 1 + rng.below(self.size(GenKind::Vendor).max(1));
            let (_, _, display) = Self::vendor_name(vendor);
            name = format!("{display} bill");
            let lines: Vec<ExpenseLine> = vec![(
                in_range(&mut rng, EXPENSE_IDS),
                2_000 + rng.below(50_000) as i64,
                None,
            )];
            j.common(id, meta).usd();
            self.push_expense_lines(&mut j, &lines, &mut rng);
            self.vendor_ref(&mut j, "VendorRef", vendor);
            j.account("APAccountRef", AP_ID)
                .money("TotalAmt", lines[0].1)
                .money("Balance", lines[0].1);
        }
        let start = pacific_date(meta.create + 7 * DAY);
        let day = 1 + rng.below(28);
        j.reference("RecurDataRef", id, None)
            .obj("RecurringInfo")
            .s("Name", &name)
            .s(
                "RecurType",
                ["Automated", "Reminder", "Unscheduled"][rng.below(3) as usize],
            )
            .b("Active", rng.chance(850))
            .obj("ScheduleInfo")
            .s("StartDate", &start)
            .s("IntervalType", "Monthly")
            .int("NumInterval", 1)
            .int("DayOfMonth", day)
            .end_obj()
            .end_obj();
        let inner = j.finish();
        let mut out = String::with_capacity(inner.len() + 12);
        out.push_str(if invoice {
            "{\"Invoice\":"
        } else {
            "{\"Bill\":"
        });
        out.push_str(&inner);
        out.push('}');
        out
    }

    fn currencies(&self) -> u64 {
        self.size(GenKind::CompanyCurrency)
            .min(CURRENCIES.len() as u64)
            .max(1)
    }

    /// Source currency and as-of month of ExchangeRate row `key`: every foreign currency
    /// each month, newest month first from December 2025.
    fn rate_key(&self, key: u64) -> (usize, i32, u32) {
        let n = self.currencies();
        let currency = ((key - 1) % n) as usize;
        let back = ((key - 1) / n) as i32;
        let months = 2025 * 12 + 11 - back;
        (
            currency,
            months.div_euclid(12),
            (months.rem_euclid(12) + 1) as u32,
        )
    }

    /// Epoch seconds of ExchangeRate row `key`'s as-of date (midnight Pacific standard time).
    pub(crate) fn rate_date(&self, key: u64) -> i64 {
        let (_, year, month) = self.rate_key(key);
        chrono::NaiveDate::from_ymd_opt(year, month, 1)
            .and_then(|d| d.and_hms_opt(8, 0, 0))
            .map_or(START, |t| t.and_utc().timestamp())
    }

    fn exchange_rate_json(&self, key: u64, meta: &Meta) -> String {
        let (currency, year, month) = self.rate_key(key);
        let (code, _, base) = CURRENCIES[currency];
        // Rates in 1/10000 of a dollar, a few percent around the base.
        let base = base * 100;
        let rate = base + (mix(self.seed, GenKind::ExchangeRate.stream() + 7, key) % 1000) as i64
            - 500 * base / 10_000;
        let rate = rate.max(1);
        let mut j = J::new(250);
        j.s("SyncToken", &meta.sync.to_string())
            .s("AsOfDate", &format!("{year}-{month:02}-01"))
            .s("SourceCurrencyCode", code)
            .raw("Rate", &format!("{}.{:04}", rate / 10_000, rate % 10_000))
            .s("TargetCurrencyCode", "USD")
            .obj("MetaData")
            .s("LastUpdatedTime", &pacific_secs(meta.lut))
            .end_obj();
        j.finish()
    }

    /// The edition the features imply (OfferingSku).
    pub fn offering_sku(&self) -> &'static str {
        let has = |f| self.features.contains(&f);
        if has(Feature::Tracking) || has(Feature::Budgets) || has(Feature::Inventory) {
            "QuickBooks Online Plus"
        } else if has(Feature::Recurring) || has(Feature::BillableExpenses) {
            "QuickBooks Online Essentials"
        } else {
            "QuickBooks Online Simple Start"
        }
    }

    /// The company's country: France with journal codes, Canada with tax payments (a
    /// non-US feature), else the US.
    pub fn country(&self) -> (&'static str, &'static str) {
        if self.features.contains(&Feature::JournalCodes) {
            ("FR", "FRA")
        } else if self.features.contains(&Feature::TaxPayments) {
            ("CA", "CAN")
        } else {
            ("US", "USA")
        }
    }

    fn company_info_json(&self, meta: &Meta) -> String {
        let (country, iso3) = self.country();
        let mut j = J::new(1500);
        j.s("CompanyName", &format!("Sandbox Company_{country}_1"))
            .s("LegalName", "Craig's Design and Landscaping Services");
        for key in ["CompanyAddr", "CustomerCommunicationAddr", "LegalAddr"] {
            j.obj(key)
                .s("Id", "1")
                .s("Line1", "123 Sierra Way")
                .s("City", "San Pablo")
                .s("Country", iso3)
                .s("CountrySubDivisionCode", "CA")
                .s("PostalCode", "87999")
                .end_obj();
        }
        j.obj("PrimaryPhone")
            .s("FreeFormNumber", "(650) 555-0100")
            .end_obj()
            .s("CompanyStartDate", &pacific_date(START))
            .s("FiscalYearStartMonth", "January")
            .s("Country", country)
            .obj("Email")
            .s("Address", "owner@sandbox-company.example")
            .end_obj()
            .obj("WebAddr")
            .end_obj()
            .s(
                "SupportedLanguages",
                if country == "FR" { "fr" } else { "en" },
            )
            .arr("NameValue");
        let sku = self.offering_sku();
        for (name, value) in [
            ("NeoEnabled", "true"),
            ("IndustryType", "Landscaping Services"),
            ("CompanyType", "SingleMemberLLC"),
            ("SubscriptionStatus", "SUBSCRIBED"),
            ("OfferingSku", sku),
            ("PayrollFeature", "false"),
            ("AccountantFeature", "false"),
            ("IsQbdtMigrated", "false"),
        ] {
            j.elem().s("Name", name).s("Value", value).end_obj();
        }
        j.end_arr().common(1, meta);
        j.finish()
    }

    fn preferences_json(&self, meta: &Meta) -> String {
        let has = |f| self.features.contains(&f);
        let tracking = has(Feature::Tracking);
        let billable = has(Feature::BillableExpenses);
        let mut j = J::new(2000);
        j.obj("AccountingInfoPrefs")
            .b("TrackDepartments", tracking)
            .s("DepartmentTerminology", "Location")
            .b("ClassTrackingPerTxn", false)
            .b("ClassTrackingPerTxnLine", tracking)
            .s("CustomerTerminology", "Customers")
            .s("FirstMonthOfFiscalYear", "January")
            .b("UseAccountNumbers", false)
            .s("TaxYearMonth", "January")
            .end_obj()
            .obj("ProductAndServicesPrefs")
            .b("ForSales", true)
            .b("ForPurchase", true)
            .b("QuantityWithPriceAndRate", true)
            .b("QuantityOnHand", has(Feature::Inventory))
            .end_obj()
            .obj("SalesFormsPrefs")
            .b("AllowDeposit", true)
            .b("AllowDiscount", true)
            .b("AllowEstimates", true)
            .b("AllowShipping", false)
            .b("AutoApplyCredit", true)
            .str_ref("DefaultTerms", "3", None)
            .b("UsingProgressInvoicing", false)
            .end_obj()
            .obj("VendorAndPurchasesPrefs")
            .b("TrackingByCustomer", billable)
            .b("BillableExpenseTracking", billable)
            .str_ref("DefaultTerms", "3", None)
            .int("DefaultMarkup", 0)
            .end_obj()
            .obj("TimeTrackingPrefs")
            .b("UseServices", true)
            .b("BillCustomers", true)
            .b("ShowBillRateToAll", false)
            .s("WorkWeekStartDate", "Monday")
            .b("MarkTimeEntriesBillable", true)
            .end_obj()
            .obj("TaxPrefs")
            .b("UsingSalesTax", true)
            .b("PartnerTaxEnabled", self.country().0 == "US")
            .end_obj()
            .obj("CurrencyPrefs")
            .b("MultiCurrencyEnabled", has(Feature::MultiCurrency))
            .str_ref("HomeCurrency", "USD", None)
            .end_obj()
            .obj("ReportPrefs")
            .s("ReportBasis", "Accrual")
            .b("CalcAgingReportFromTxnDate", false)
            .end_obj()
            .obj("OtherPrefs")
            .arr("NameValue")
            .elem()
            .s("Name", "SalesFormsPrefs.DefaultCustomerMessage")
            .s("Value", MEMOS[0])
            .end_obj()
            .elem()
            .s("Name", "DTXCopyMemo")
            .s("Value", "false")
            .end_obj()
            .end_arr()
            .end_obj()
            .common(1, meta);
        j.finish()
    }
}

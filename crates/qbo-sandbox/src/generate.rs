//! The deterministic data generator: Customers, Items and Invoices modelled on the real
//! recordings (`docs/qbo-behaviour.md` §13; the Customer/Invoice/SalesReceipt objects in
//! `crates/qbo-sandbox/tests/fixtures/qbo-recorded`).
//!
//! Nothing is materialised. [`Generator::initial_meta`] gives a record's index entry (create
//! time, last-updated time, SyncToken, Active) from `(seed, entity, id)` alone, and
//! [`Generator::json`] writes a record's JSON text from `(seed, entity, id)` plus its current
//! [`Meta`] (so edits that only move `LastUpdatedTime`/`SyncToken` need no stored payload).
//! Same seed → same bytes. The PRNG is a private SplitMix64, stable across crate versions.
//!
//! What the data exercises: Pacific offsets right for the date (`-07:00`/`-08:00`), times to
//! the second over 2014–2025 including UTC day boundaries and groups sharing one second,
//! sub-customers (`ParentRef`/`Job`/`Level`, `Parent:Child` names), about 12% inactive name-list
//! records (half of them ` (deleted)`), voided invoices, accents/emoji/CJK, quotes and
//! backslashes, QBO-style decimals (`100.00`, `337.50`, `0.5`), and a few invoices with
//! hundreds of lines. Invoices average about 2.5 KB.

use std::collections::BTreeSet;

use qbo_entities::Feature;

use crate::clock::{decimal, money, pacific_date, pacific_secs, push_json_str};

/// 2014-01-01T00:00:00Z.
pub const START: i64 = 1_388_534_400;
/// 2025-12-31T23:59:59Z.
pub const END: i64 = 1_767_225_599;
pub(crate) const DAY: i64 = 86_400;

/// The generated entity kinds: one per entity of [`qbo_entities::ENTITIES`], in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GenKind {
    Customer,
    Invoice,
    Item,
    Account,
    Budget,
    Class,
    CompanyCurrency,
    CustomerType,
    Department,
    Employee,
    JournalCode,
    PaymentMethod,
    TaxAgency,
    TaxCode,
    TaxRate,
    Term,
    Vendor,
    Bill,
    BillPayment,
    CreditCardPayment,
    CreditMemo,
    Deposit,
    Estimate,
    InventoryAdjustment,
    JournalEntry,
    Payment,
    Purchase,
    PurchaseOrder,
    RefundReceipt,
    ReimburseCharge,
    SalesReceipt,
    TaxPayment,
    TimeActivity,
    Transfer,
    VendorCredit,
    Attachable,
    RecurringTransaction,
    ExchangeRate,
    CompanyInfo,
    Preferences,
}

impl GenKind {
    pub const ALL: [GenKind; 40] = {
        use GenKind::*;
        [
            Customer,
            Invoice,
            Item,
            Account,
            Budget,
            Class,
            CompanyCurrency,
            CustomerType,
            Department,
            Employee,
            JournalCode,
            PaymentMethod,
            TaxAgency,
            TaxCode,
            TaxRate,
            Term,
            Vendor,
            Bill,
            BillPayment,
            CreditCardPayment,
            CreditMemo,
            Deposit,
            Estimate,
            InventoryAdjustment,
            JournalEntry,
            Payment,
            Purchase,
            PurchaseOrder,
            RefundReceipt,
            ReimburseCharge,
            SalesReceipt,
            TaxPayment,
            TimeActivity,
            Transfer,
            VendorCredit,
            Attachable,
            RecurringTransaction,
            ExchangeRate,
            CompanyInfo,
            Preferences,
        ]
    };

    /// Position in [`GenKind::ALL`] (and in [`qbo_entities::ENTITIES`]).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The catalogue row.
    pub fn def(self) -> &'static qbo_entities::EntityDef {
        &qbo_entities::ENTITIES[self.index()]
    }

    /// The QBO name (`Customer`, `CreditCardPayment`).
    pub fn name(self) -> &'static str {
        let def = self.def();
        def.qbo_name
    }

    /// The kind QBO calls `name` (canonical spelling).
    pub fn from_name(name: &str) -> Option<GenKind> {
        GenKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub(crate) fn stream(self) -> u64 {
        match self {
            GenKind::Customer => 0x1000,
            GenKind::Item => 0x2000,
            GenKind::Invoice => 0x3000,
            other => 0x1_0000 + 0x100 * other.index() as u64,
        }
    }
}

/// A record's index entry: everything a query filters or sorts on without the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// `MetaData.CreateTime`, epoch seconds.
    pub create: i64,
    /// `MetaData.LastUpdatedTime`, epoch seconds.
    pub lut: i64,
    pub sync: u32,
    pub active: bool,
}

/// SplitMix64: tiny, fast and fixed forever (unlike `rand`'s `StdRng`).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, stream: u64, id: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        r.0 ^= r
            .next()
            .wrapping_add(id.wrapping_mul(0xE703_7ED1_A0B4_28DB));
        r
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// True with probability `per_mille`/1000.
    pub(crate) fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    pub(crate) fn pick<'a>(&mut self, pool: &[&'a str]) -> &'a str {
        pool[self.below(pool.len() as u64) as usize]
    }
}

pub(crate) fn mix(seed: u64, stream: u64, id: u64) -> u64 {
    Rng::new(seed, stream, id).next()
}

pub(crate) const FIRST: &[&str] = &[
    "Amy",
    "Bill",
    "Dylan",
    "Kate",
    "Sasha",
    "John",
    "Geeta",
    "Mark",
    "Shara",
    "Travis",
    "José",
    "Zoë",
    "François",
    "Björn",
    "Siobhán",
    "Łukasz",
    "Ngọc",
    "Aiyana",
    "Mateo",
    "Chloé",
    "Søren",
    "İlkay",
    "美咲",
    "太郎",
    "민준",
    "Olamide",
    "Priya",
    "Răzvan",
    "Dmitri",
    "Ana-María",
    "Nuño",
    "Renée",
    "Jürgen",
    "Øyvind",
    "Chiara",
    "Kwame",
    "Noor",
    "Mei",
    "Yusuf",
    "Whitney",
];
pub(crate) const LAST: &[&str] = &[
    "Lauterbach",
    "Sollfrank",
    "Whelan",
    "Tillou",
    "Melton",
    "Kalapatapu",
    "Cho",
    "Barnett",
    "Waldron",
    "O'Brien",
    "D'Angelo",
    "Müller",
    "García",
    "Nguyễn",
    "山田",
    "김",
    "Ødegård",
    "Şahin",
    "Dvořák",
    "Kowalski",
    "Fitzgerald-Smith",
    "MacLeod",
    "Van der Berg",
    "Okafor",
    "Haddad",
    "Rossi",
    "Papadopoulos",
    "Novák",
    "Lindqvist",
    "Rondonuwu",
];
pub(crate) const NOUNS: &[&str] = &[
    "Bird Sanctuary",
    "Windsurf Shop",
    "Sporting Goods",
    "Cakes 🎂",
    "Café ☕",
    "Landscaping",
    "Photography",
    "Medical Supplies",
    "Travel Agency",
    "Diner",
    "Fruit and Vegi",
    "Design Studio",
    "Family Store",
    "Sushi 寿司",
    "Consulting",
    "Plumbing & Heating",
    "\"Best\" Auto Body",
    "Back\\Slash Repairs",
    "Bäckerei",
    "Crêperie",
    "Jalopies",
    "Wedding Planning 💍",
    "Video Games 🎮",
    "Insurance Agency",
    "Hardware",
    "花屋 Florist",
    "Tea House 茶",
    "Bike Shop 🚲",
    "Car Wash",
];
pub(crate) const STREETS: &[&str] = &[
    "Ocean View Road",
    "Twin Lane",
    "Easy St.",
    "Finch St.",
    "Court St.",
    "Main St.",
    "S. Boise Ave",
    "Calle Señora",
    "Rue de l'Église",
    "Maple Ave.",
    "Harbor Blvd",
    "Elm Court",
    "Straße des 17. Juni",
    "銀座通り",
    "Willow Way",
    "Park Pl.",
];
pub(crate) const PLACES: &[(&str, &str, &str, &str, &str)] = &[
    ("Bayshore", "CA", "94326", "INVALID", "INVALID"),
    ("Tucson", "AZ", "85719", "32.2841116", "-110.9744298"),
    ("Middlefield", "CA", "94482", "37.4031672", "-122.0642815"),
    ("Sunnyvale", "CA", "94086", "37.3688301", "-122.0363496"),
    ("Palo Alto", "CA", "94303", "37.4530553", "-122.1178261"),
    ("San José", "CA", "95123", "37.2466182", "-121.8323486"),
    ("Española", "NM", "87532", "35.9911", "-106.0806"),
    ("Cañon City", "CO", "81212", "38.4409", "-105.2424"),
    ("Coeur d'Alene", "ID", "83814", "47.6777", "-116.7805"),
    ("Seattle", "WA", "98101", "47.6101", "-122.3421"),
];
pub(crate) const ITEM_NAMES: &[&str] = &[
    "Services",
    "Design",
    "Installation",
    "Rock Fountain",
    "Rocks",
    "Pest Control",
    "Gardening",
    "Hours",
    "Lighting",
    "Maintenance & Repair",
    "Pump",
    "Sprinklers",
    "Sod",
    "Soil",
    "Trimming",
    "Concrete",
    "Deck Lumber",
    "Café Table ☕",
    "Garden Gnome 🧙",
    "Bonsai 盆栽",
    "Stone \"Premium\"",
    "Pipe 1/2\\\"",
    "Fertilizer",
    "Tree Removal",
];
pub(crate) const DESCRIPTIONS: &[&str] = &[
    "Custom Design",
    "Installation of landscape design",
    "Rock Fountain",
    "Garden Rocks",
    "Pest Control Services",
    "Weekly Gardening Service",
    "Sprinkler Heads",
    "Sod (pallet)",
    "Fountain Pump",
    "Garden Lighting",
    "Maintenance & repair — labour",
    "Trimming, per hour",
    "Concrete for fountain installation",
    "Café table \"bistro\" set ☕",
    "盆栽 Bonsai care",
    "Pipe fittings 1/2\\\" brass",
    "Tree removal — large (> 30')",
    "Soil, premium blend 🌱",
];
pub(crate) const MEMOS: &[&str] = &[
    "Thank you for your business and have a great day!",
    "Merci beaucoup — à bientôt!",
    "Danke schön! Zahlbar innerhalb von 30 Tagen.",
    "ありがとうございました 🙏",
    "Please pay by \"Net 30\"; checks to C:\\Payments\\Inbox.",
    "Thanks! 😀",
];
pub(crate) const NOTES: &[&str] = &[
    "Prefers email.\nCall before 5pm.",
    "Key under the mat \\ back door",
    "Says \"hi\" to the crew 👋",
    "支払いは月末",
    "Água de coco no verão ☀️",
];

/// Builds records from `(seed, entity, id)`.
#[derive(Debug, Clone)]
pub struct Generator {
    pub seed: u64,
    pub customers: u64,
    pub items: u64,
    pub invoices: u64,
    /// How many records each other entity has, by [`GenKind::index`] (the entries of
    /// Customer, Item and Invoice are unused; Payment and BillPayment follow the paid
    /// invoices and bills). See [`crate::books`].
    pub sizes: [u64; 40],
    /// The company's features (`qbo_entities::Feature`); entities needing a missing one are
    /// not generated and answer QBO's permission fault.
    pub features: BTreeSet<Feature>,
}

/// What an invoice needs to know about its customer.
pub(crate) struct CustomerProfile {
    pub(crate) given: &'static str,
    pub(crate) family: &'static str,
    pub(crate) display: String,
    pub(crate) fqn: String,
    pub(crate) company: Option<String>,
    pub(crate) place: usize,
    pub(crate) street_no: u64,
    pub(crate) street: &'static str,
    pub(crate) currency: (&'static str, &'static str),
    pub(crate) email: String,
    pub(crate) taxable: bool,
    pub(crate) parent: Option<u64>,
    pub(crate) level: u32,
}

impl Generator {
    /// Customers, Items and Invoices only (every other entity empty), default features.
    pub fn new(seed: u64, customers: u64, items: u64, invoices: u64) -> Generator {
        Generator {
            seed,
            customers,
            items,
            invoices,
            sizes: [0; 40],
            features: crate::config::default_features(),
        }
    }

    /// How many records `kind` has (Payment and BillPayment: one per paid invoice / bill).
    pub fn count(&self, kind: GenKind) -> u64 {
        match kind {
            GenKind::Customer => self.customers,
            GenKind::Item => self.items,
            GenKind::Invoice => self.invoices,
            GenKind::Payment | GenKind::BillPayment => self.ids(kind).count() as u64,
            other => self.sizes[other.index()],
        }
    }

    /// The configured size of `kind` (for Payment/BillPayment: of what they follow).
    pub(crate) fn size(&self, kind: GenKind) -> u64 {
        match kind {
            GenKind::Customer => self.customers,
            GenKind::Item => self.items,
            GenKind::Invoice | GenKind::Payment => self.invoices,
            GenKind::BillPayment => self.sizes[GenKind::Bill.index()],
            other => self.sizes[other.index()],
        }
    }

    /// Whether the company offers `kind` (its required feature is on).
    pub fn offers(&self, kind: GenKind) -> bool {
        let need = kind.def().requires;
        need == Feature::Always || self.features.contains(&need)
    }

    /// The Ids of `kind`'s generated records, ascending. Dense `1..=n` except Payment (Id
    /// `invoices + i` for each paid invoice `i`, the Id its `LinkedTxn` names) and
    /// BillPayment (the Id of the bill it pays).
    pub fn ids(&self, kind: GenKind) -> Box<dyn Iterator<Item = u64> + '_> {
        if !self.offers(kind) {
            return Box::new(std::iter::empty());
        }
        match kind {
            GenKind::Payment => {
                let n = self.invoices;
                Box::new(
                    (1..=n)
                        .filter(|i| self.invoice_paid(*i))
                        .map(move |i| n + i),
                )
            }
            GenKind::BillPayment => {
                Box::new((1..=self.sizes[GenKind::Bill.index()]).filter(|b| self.bill_paid(*b)))
            }
            other => Box::new(1..=self.size(other)),
        }
    }

    /// The index entry of record `id` (1-based) as generated.
    pub fn initial_meta(&self, kind: GenKind, id: u64) -> Meta {
        if !matches!(kind, GenKind::Customer | GenKind::Item | GenKind::Invoice) {
            return self.books_meta(kind, id);
        }
        let n = self.count(kind).max(1);
        let stream = kind.stream();
        let create = create_time(id, n, mix(self.seed, stream + 1, id));
        let mut rng = Rng::new(self.seed, stream + 2, id);
        let group = (id - 1) / 8;
        let lut = if mix(self.seed, stream + 3, group) % 100 < 4 {
            // A bulk edit: the whole group of 8 shares one second.
            let last = (group * 8 + 8).min(n);
            create_time(last, n, mix(self.seed, stream + 1, last))
                + (mix(self.seed, stream + 4, group) % 3600) as i64
        } else {
            match rng.below(100) {
                0..55 => create,
                55..85 => create + rng.below(30 * DAY as u64) as i64,
                85..95 => create + rng.below(3 * 365 * DAY as u64) as i64,
                // Exactly on a UTC day boundary.
                _ => (create / DAY + 1 + rng.below(60) as i64) * DAY,
            }
        };
        let lut = lut.min(END).max(create);
        let voided = kind == GenKind::Invoice && self.is_voided(id);
        let sync = if lut == create {
            0
        } else {
            1 + rng.below(3) as u32
        } + u32::from(voided);
        let active = match kind {
            GenKind::Invoice => true,
            // About 12% inactive.
            _ => mix(self.seed, stream + 5, id) % 1000 >= 120,
        };
        Meta {
            create,
            lut,
            sync,
            active,
        }
    }

    /// The JSON text of record `id` with index entry `meta`.
    pub fn json(&self, kind: GenKind, id: u64, meta: &Meta) -> String {
        match kind {
            GenKind::Customer => self.customer_json(id, meta),
            GenKind::Item => self.item_json(id, meta),
            GenKind::Invoice => self.invoice_json(id, meta),
            other => self.books_json(other, id, meta),
        }
    }

    pub(crate) fn is_voided(&self, id: u64) -> bool {
        mix(self.seed, 0x3006, id) % 1000 < 20
    }

    /// Whether an inactive name-list record was "deleted" (` (deleted)` name suffix).
    pub(crate) fn is_deleted_name(&self, kind: GenKind, id: u64) -> bool {
        mix(self.seed, kind.stream() + 6, id).is_multiple_of(2)
    }

    fn customer_parent(&self, id: u64) -> Option<u64> {
        if id < 3 || mix(self.seed, 0x1007, id) % 100 >= 15 {
            return None;
        }
        let parent = 1 + mix(self.seed, 0x1008, id) % (id - 1);
        (self.customer_level(parent) < 2).then_some(parent)
    }

    fn customer_level(&self, id: u64) -> u32 {
        match self.customer_parent(id) {
            Some(parent) => self.customer_level(parent) + 1,
            None => 0,
        }
    }

    pub(crate) fn customer_profile(&self, id: u64) -> CustomerProfile {
        let mut rng = Rng::new(self.seed, 0x1009, id);
        let total = (FIRST.len() * LAST.len() * (NOUNS.len() + 1)) as u64;
        let j = ((id - 1) % total * 7919 + self.seed % total) % total;
        let cycle = (id - 1) / total;
        let given = FIRST[(j % FIRST.len() as u64) as usize];
        let family = LAST[(j / FIRST.len() as u64 % LAST.len() as u64) as usize];
        let noun = (j / (FIRST.len() * LAST.len()) as u64) as usize;
        let place = rng.below(PLACES.len() as u64) as usize;
        let street_no = 1 + rng.below(9999);
        let street = rng.pick(STREETS);
        let parent = self.customer_parent(id);
        let (display, company) = match parent {
            Some(_) => (format!("{id:04} {street}"), None),
            None if noun < NOUNS.len() => {
                let company = format!("{given} {family}'s {}", NOUNS[noun]);
                (company.clone(), Some(company))
            }
            None => (format!("{given} {family}"), None),
        };
        let display = if cycle > 0 {
            format!("{display} {}", cycle + 1)
        } else {
            display
        };
        let (fqn, level) = match parent {
            Some(p) => {
                let parent_profile = self.customer_profile(p);
                (
                    format!("{}:{display}", parent_profile.fqn),
                    parent_profile.level + 1,
                )
            }
            None => (display.clone(), 0),
        };
        let currency = match rng.below(100) {
            0..3 => ("CAD", "Canadian Dollar"),
            3..5 => ("EUR", "Euro"),
            _ => ("USD", "United States Dollar"),
        };
        let local: String = given
            .chars()
            .filter(char::is_ascii_alphabetic)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let email = format!(
            "{}{id}@sandbox-customers.example",
            if local.is_empty() { "customer" } else { &local }
        );
        CustomerProfile {
            given,
            family,
            display,
            fqn,
            company,
            place,
            street_no,
            street,
            currency,
            email,
            taxable: rng.below(2) == 0,
            parent,
            level,
        }
    }

    pub(crate) fn push_addr(&self, out: &mut String, addr_id: u64, p: &CustomerProfile) {
        let (city, state, zip, lat, long) = PLACES[p.place];
        out.push_str("{\"Id\":\"");
        out.push_str(&addr_id.to_string());
        out.push_str("\",\"Line1\":");
        push_json_str(out, &format!("{} {}", p.street_no, p.street));
        out.push_str(",\"City\":");
        push_json_str(out, city);
        out.push_str(",\"CountrySubDivisionCode\":\"");
        out.push_str(state);
        out.push_str("\",\"PostalCode\":\"");
        out.push_str(zip);
        out.push_str("\",\"Lat\":\"");
        out.push_str(lat);
        out.push_str("\",\"Long\":\"");
        out.push_str(long);
        out.push_str("\"}");
    }

    pub(crate) fn push_common(out: &mut String, id: u64, meta: &Meta) {
        out.push_str("\"domain\":\"QBO\",\"sparse\":false,\"Id\":\"");
        out.push_str(&id.to_string());
        out.push_str("\",\"SyncToken\":\"");
        out.push_str(&meta.sync.to_string());
        out.push_str("\",\"MetaData\":{\"CreateTime\":\"");
        out.push_str(&pacific_secs(meta.create));
        out.push_str("\",\"LastUpdatedTime\":\"");
        out.push_str(&pacific_secs(meta.lut));
        out.push_str("\"}");
    }

    fn customer_json(&self, id: u64, meta: &Meta) -> String {
        let p = self.customer_profile(id);
        let mut rng = Rng::new(self.seed, 0x100A, id);
        let deleted = !meta.active && self.is_deleted_name(GenKind::Customer, id);
        let suffix = if deleted { " (deleted)" } else { "" };
        let mut out = String::with_capacity(1200);
        out.push_str("{\"Taxable\":");
        out.push_str(if p.taxable { "true" } else { "false" });
        out.push_str(",\"BillAddr\":");
        self.push_addr(&mut out, id * 2, &p);
        out.push_str(",\"ShipAddr\":");
        self.push_addr(&mut out, id * 2, &p);
        if rng.chance(150) {
            out.push_str(",\"Notes\":");
            push_json_str(&mut out, rng.pick(NOTES));
        }
        out.push_str(",\"Job\":");
        out.push_str(if p.parent.is_some() { "true" } else { "false" });
        out.push_str(",\"BillWithParent\":false");
        if let Some(parent) = p.parent {
            out.push_str(",\"ParentRef\":{\"value\":\"");
            out.push_str(&parent.to_string());
            out.push_str("\"},\"Level\":");
            out.push_str(&p.level.to_string());
        }
        let balance = if rng.chance(400) {
            rng.below(500_000) as i64
        } else {
            0
        };
        out.push_str(",\"Balance\":");
        out.push_str(&money(balance));
        out.push_str(",\"BalanceWithJobs\":");
        out.push_str(&money(balance));
        out.push_str(",\"CurrencyRef\":{\"value\":\"");
        out.push_str(p.currency.0);
        out.push_str("\",\"name\":\"");
        out.push_str(p.currency.1);
        out.push_str("\"},\"PreferredDeliveryMethod\":\"");
        out.push_str(if rng.chance(300) { "Email" } else { "Print" });
        out.push_str("\",");
        Self::push_common(&mut out, id, meta);
        out.push_str(",\"GivenName\":");
        push_json_str(&mut out, p.given);
        out.push_str(",\"FamilyName\":");
        push_json_str(&mut out, p.family);
        out.push_str(",\"FullyQualifiedName\":");
        push_json_str(&mut out, &format!("{}{suffix}", p.fqn));
        if let Some(company) = &p.company {
            out.push_str(",\"CompanyName\":");
            push_json_str(&mut out, company);
        }
        out.push_str(",\"DisplayName\":");
        push_json_str(&mut out, &format!("{}{suffix}", p.display));
        out.push_str(",\"PrintOnCheckName\":");
        push_json_str(&mut out, p.company.as_deref().unwrap_or(&p.display));
        out.push_str(",\"Active\":");
        out.push_str(if meta.active { "true" } else { "false" });
        out.push_str(",\"PrimaryPhone\":{\"FreeFormNumber\":\"(");
        out.push_str(&format!(
            "{}) 555-{:04}",
            200 + rng.below(800),
            rng.below(10_000)
        ));
        out.push_str("\"},\"PrimaryEmailAddr\":{\"Address\":");
        push_json_str(&mut out, &p.email);
        out.push('}');
        if p.company.is_some() && rng.chance(500) {
            out.push_str(",\"WebAddr\":{\"URI\":\"http://www.example.com/c");
            out.push_str(&id.to_string());
            out.push_str("\"}");
        }
        out.push('}');
        out
    }

    pub(crate) fn item_name(&self, id: u64) -> String {
        let n = ITEM_NAMES.len() as u64;
        let base = ITEM_NAMES[((id - 1) % n) as usize];
        match (id - 1) / n {
            0 => base.to_owned(),
            cycle => format!("{base} {}", cycle + 1),
        }
    }

    /// An item's unit price in hundredths (`75`, `22.5`, `0.5`).
    pub(crate) fn item_price(&self, id: u64) -> i64 {
        let r = mix(self.seed, 0x2007, id);
        match r % 10 {
            0 => 50,
            1 => 2250,
            2 => 7500,
            3 => 27500,
            _ => 100 * (1 + (r >> 8) % 400) as i64 + [0, 25, 50, 99][((r >> 20) % 4) as usize],
        }
    }

    fn item_json(&self, id: u64, meta: &Meta) -> String {
        let mut rng = Rng::new(self.seed, 0x2008, id);
        let deleted = !meta.active && self.is_deleted_name(GenKind::Item, id);
        let name = format!(
            "{}{}",
            self.item_name(id),
            if deleted { " (deleted)" } else { "" }
        );
        let kind = match rng.below(10) {
            0..6 => "Service",
            6..9 => "NonInventory",
            _ => "Inventory",
        };
        let mut out = String::with_capacity(700);
        out.push_str("{\"Name\":");
        push_json_str(&mut out, &name);
        out.push_str(",\"Description\":");
        push_json_str(&mut out, rng.pick(DESCRIPTIONS));
        out.push_str(",\"Active\":");
        out.push_str(if meta.active { "true" } else { "false" });
        out.push_str(",\"FullyQualifiedName\":");
        push_json_str(&mut out, &name);
        out.push_str(",\"Taxable\":");
        out.push_str(if rng.below(2) == 0 { "true" } else { "false" });
        out.push_str(",\"UnitPrice\":");
        out.push_str(&decimal(self.item_price(id)));
        out.push_str(",\"Type\":\"");
        out.push_str(kind);
        out.push_str("\",\"IncomeAccountRef\":{\"value\":\"");
        out.push_str(&(1 + rng.below(90)).to_string());
        out.push_str("\",\"name\":\"Sales of Product Income\"},\"PurchaseCost\":");
        out.push_str(&decimal(rng.below(5000) as i64));
        if kind == "Inventory" {
            out.push_str(",\"ExpenseAccountRef\":{\"value\":\"80\",\"name\":\"Cost of Goods Sold\"},\"AssetAccountRef\":{\"value\":\"81\",\"name\":\"Inventory Asset\"},\"TrackQtyOnHand\":true,\"QtyOnHand\":");
            out.push_str(&rng.below(500).to_string());
            out.push_str(",\"InvStartDate\":\"");
            out.push_str(&pacific_date(meta.create));
            out.push('"');
        } else {
            out.push_str(",\"TrackQtyOnHand\":false");
        }
        out.push(',');
        Self::push_common(&mut out, id, meta);
        out.push('}');
        out
    }

    fn invoice_json(&self, id: u64, meta: &Meta) -> String {
        let mut rng = Rng::new(self.seed, 0x3007, id);
        let voided = self.is_voided(id);
        let customer_id = 1 + rng.below(self.customers.max(1));
        let customer = self.customer_profile(customer_id);
        let line_count = if rng.chance(3) {
            150 + rng.below(300)
        } else {
            1 + rng.below(7)
        };
        let taxable = customer.taxable && rng.below(2) == 0;
        let paid = !voided && rng.chance(600);
        let mut out = String::with_capacity(1600 + line_count as usize * 300);
        out.push_str("{\"AllowIPNPayment\":false,\"AllowOnlinePayment\":false,\"AllowOnlineCreditCardPayment\":");
        out.push_str(if rng.chance(300) { "true" } else { "false" });
        out.push_str(",\"AllowOnlineACHPayment\":false,");
        Self::push_common(&mut out, id, meta);
        out.push_str(
            ",\"CustomField\":[{\"DefinitionId\":\"1\",\"Name\":\"Crew #\",\"Type\":\"StringType\"",
        );
        if rng.chance(400) {
            out.push_str(",\"StringValue\":\"");
            out.push_str(&(100 + rng.below(900)).to_string());
            out.push('"');
        }
        out.push_str("}],\"DocNumber\":\"");
        out.push_str(&(1000 + id).to_string());
        out.push_str("\",\"TxnDate\":\"");
        let txn_secs = meta.create - rng.below(3) as i64 * DAY;
        out.push_str(&pacific_date(txn_secs));
        out.push_str("\",\"CurrencyRef\":{\"value\":\"");
        out.push_str(customer.currency.0);
        out.push_str("\",\"name\":\"");
        out.push_str(customer.currency.1);
        out.push_str("\"}");
        if voided {
            out.push_str(",\"PrivateNote\":\"Voided\"");
        }
        out.push_str(",\"LinkedTxn\":[");
        if paid {
            out.push_str("{\"TxnId\":\"");
            out.push_str(&(self.invoices + id).to_string());
            out.push_str("\",\"TxnType\":\"Payment\"}");
        }
        out.push_str("],\"Line\":[");
        let mut subtotal: i64 = 0;
        let tax_code = if taxable { "TAX" } else { "NON" };
        for line in 1..=line_count {
            let item = 1 + rng.below(self.items.max(1));
            let qty: i64 = [100, 100, 200, 300, 400, 450, 500, 800, 1000, 50, 1200, 2000]
                [rng.below(12) as usize];
            let price = self.item_price(item);
            let amount = if voided { 0 } else { (qty * price + 50) / 100 };
            subtotal += amount;
            out.push_str("{\"Id\":\"");
            out.push_str(&line.to_string());
            out.push_str("\",\"LineNum\":");
            out.push_str(&line.to_string());
            out.push_str(",\"Description\":");
            push_json_str(&mut out, rng.pick(DESCRIPTIONS));
            out.push_str(",\"Amount\":");
            out.push_str(&money(amount));
            out.push_str(",\"DetailType\":\"SalesItemLineDetail\",\"SalesItemLineDetail\":{\"ItemRef\":{\"value\":\"");
            out.push_str(&item.to_string());
            out.push_str("\",\"name\":");
            push_json_str(&mut out, &self.item_name(item));
            out.push_str("},\"UnitPrice\":");
            out.push_str(&decimal(price));
            out.push_str(",\"Qty\":");
            out.push_str(&decimal(qty));
            if rng.below(2) == 0 {
                out.push_str(",\"ServiceDate\":\"");
                out.push_str(&pacific_date(txn_secs));
                out.push('"');
            }
            out.push_str(",\"TaxCodeRef\":{\"value\":\"");
            out.push_str(tax_code);
            out.push_str("\"}}},");
        }
        out.push_str("{\"Amount\":");
        out.push_str(&money(subtotal));
        out.push_str(",\"DetailType\":\"SubTotalLineDetail\",\"SubTotalLineDetail\":{}}]");
        let tax = if taxable && !voided {
            subtotal * 8 / 100
        } else {
            0
        };
        if tax > 0 {
            out.push_str(",\"TxnTaxDetail\":{\"TxnTaxCodeRef\":{\"value\":\"2\"},\"TotalTax\":");
            out.push_str(&money(tax));
            out.push_str(",\"TaxLine\":[{\"Amount\":");
            out.push_str(&money(tax));
            out.push_str(",\"DetailType\":\"TaxLineDetail\",\"TaxLineDetail\":{\"TaxRateRef\":{\"value\":\"3\"},\"PercentBased\":true,\"TaxPercent\":8,\"NetAmountTaxable\":");
            out.push_str(&money(subtotal));
            out.push_str("}}]}");
        } else {
            out.push_str(",\"TxnTaxDetail\":{\"TotalTax\":0}");
        }
        out.push_str(",\"CustomerRef\":{\"value\":\"");
        out.push_str(&customer_id.to_string());
        out.push_str("\",\"name\":");
        push_json_str(&mut out, &customer.fqn);
        out.push('}');
        if !voided && rng.chance(500) {
            out.push_str(",\"CustomerMemo\":{\"value\":");
            push_json_str(&mut out, rng.pick(MEMOS));
            out.push('}');
        }
        out.push_str(",\"BillAddr\":");
        self.push_addr(&mut out, customer_id * 2, &customer);
        out.push_str(",\"ShipAddr\":");
        self.push_addr(&mut out, customer_id * 2 + 1, &customer);
        out.push_str(",\"SalesTermRef\":{\"value\":\"3\"}");
        out.push_str(",\"DueDate\":\"");
        out.push_str(&pacific_date(txn_secs + 30 * DAY));
        let total = subtotal + tax;
        out.push_str("\",\"TotalAmt\":");
        out.push_str(&money(total));
        out.push_str(",\"ApplyTaxAfterDiscount\":false,\"PrintStatus\":\"");
        out.push_str(if rng.chance(500) {
            "NeedToPrint"
        } else {
            "NotSet"
        });
        out.push_str("\",\"EmailStatus\":\"");
        let emailed = rng.chance(500);
        out.push_str(if emailed { "EmailSent" } else { "NotSet" });
        out.push('"');
        if emailed {
            out.push_str(",\"BillEmail\":{\"Address\":");
            push_json_str(&mut out, &customer.email);
            out.push('}');
        }
        out.push_str(",\"Balance\":");
        out.push_str(&money(if paid || voided { 0 } else { total }));
        out.push('}');
        out
    }
}

/// Creation times rise with the id across 2014–2025, with jitter below one step so they stay
/// in id order.
pub(crate) fn create_time(id: u64, n: u64, noise: u64) -> i64 {
    let span = (END - START - 40 * DAY) as u128;
    let step = (span / n as u128).max(1) as u64;
    START + ((id - 1) as u128 * span / n as u128) as i64 + (noise % step) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator() -> Generator {
        Generator::new(7, 300, 60, 3000)
    }

    /// Every entity, every feature on.
    fn company() -> Generator {
        let features = qbo_entities::Feature::OPTIONAL.into_iter().collect();
        let sizes =
            crate::books::resolve_sizes(300, 60, 3000, &Default::default(), &features).unwrap();
        Generator {
            sizes,
            features,
            ..generator()
        }
    }

    fn value(kind: GenKind, id: u64, g: &Generator) -> serde_json::Value {
        let meta = g.initial_meta(kind, id);
        let text = g.json(kind, id, &meta);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{kind:?} {id}: {e}\n{text}"))
    }

    #[test]
    fn every_record_is_valid_json_with_matching_metadata() {
        let g = company();
        for kind in GenKind::ALL {
            assert!(g.ids(kind).next().is_some(), "{kind:?} has no records");
            for id in g.ids(kind) {
                let meta = g.initial_meta(kind, id);
                let mut v = value(kind, id, &g);
                if kind == GenKind::RecurringTransaction {
                    let (_, inner) = v.as_object().unwrap().iter().next().unwrap();
                    v = inner.clone();
                }
                if kind != GenKind::ExchangeRate {
                    let want = if kind.def().kind == qbo_entities::Kind::Singleton {
                        1
                    } else {
                        id
                    };
                    assert_eq!(v["Id"], want.to_string(), "{kind:?}");
                }
                assert_eq!(v["SyncToken"], meta.sync.to_string(), "{kind:?}");
                assert_eq!(v["MetaData"]["LastUpdatedTime"], pacific_secs(meta.lut));
                assert!(meta.lut >= meta.create && meta.lut <= END && meta.create >= START);
            }
        }
    }

    /// Customer, Item and Invoice bytes are frozen (tests and benchmarks depend on them): a
    /// hash of every record of seed 1 at 200/100/5000, as generated before the other
    /// entities existed.
    #[test]
    fn customers_items_and_invoices_keep_their_bytes() {
        let g = Generator::new(1, 200, 100, 5000);
        let mut h: u64 = 1_469_598_103_934_665_603;
        for kind in [GenKind::Customer, GenKind::Item, GenKind::Invoice] {
            for id in 1..=g.count(kind) {
                let m = g.initial_meta(kind, id);
                for b in g.json(kind, id, &m).bytes() {
                    h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
                }
            }
        }
        assert_eq!(h, 0x3705_a677_e80b_28da);
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let a = generator();
        let b = generator();
        let c = Generator {
            seed: 8,
            ..generator()
        };
        for id in [1, 17, 2999] {
            let m = a.initial_meta(GenKind::Invoice, id);
            assert_eq!(m, b.initial_meta(GenKind::Invoice, id));
            assert_eq!(
                a.json(GenKind::Invoice, id, &m),
                b.json(GenKind::Invoice, id, &m)
            );
            assert_ne!(
                a.json(GenKind::Invoice, id, &m),
                c.json(GenKind::Invoice, id, &m)
            );
        }
    }

    #[test]
    fn inactive_share_is_ten_to_fifteen_percent() {
        let g = Generator {
            customers: 5000,
            ..generator()
        };
        let inactive = (1..=5000)
            .filter(|&id| !g.initial_meta(GenKind::Customer, id).active)
            .count();
        assert!((500..=750).contains(&inactive), "{inactive}");
    }

    #[test]
    fn timestamps_hit_day_boundaries_and_share_seconds() {
        let g = generator();
        let luts: Vec<i64> = (1..=3000)
            .map(|id| g.initial_meta(GenKind::Invoice, id).lut)
            .collect();
        assert!(luts.iter().filter(|t| *t % DAY == 0).count() > 10);
        let mut sorted = luts.clone();
        sorted.sort_unstable();
        let ties = sorted.windows(2).filter(|w| w[0] == w[1]).count();
        assert!(ties > 20, "{ties}");
        let pst = luts.iter().any(|t| pacific_secs(*t).ends_with("-08:00"));
        let pdt = luts.iter().any(|t| pacific_secs(*t).ends_with("-07:00"));
        assert!(pst && pdt);
    }

    #[test]
    fn sub_customers_name_their_parents() {
        let g = generator();
        let mut jobs = 0;
        for id in 1..=300 {
            let v = value(GenKind::Customer, id, &g);
            if v["Job"] == true {
                jobs += 1;
                let parent: u64 = v["ParentRef"]["value"].as_str().unwrap().parse().unwrap();
                let pv = value(GenKind::Customer, parent, &g);
                let pfqn = pv["FullyQualifiedName"]
                    .as_str()
                    .unwrap()
                    .trim_end_matches(" (deleted)");
                let fqn = v["FullyQualifiedName"].as_str().unwrap();
                assert!(fqn.starts_with(&format!("{pfqn}:")), "{fqn} / {pfqn}");
                assert!(v["Level"].as_u64().unwrap() >= 1);
            }
        }
        assert!(jobs > 10, "{jobs}");
    }

    #[test]
    fn invoices_are_consistent_and_about_2_5_kb() {
        let g = Generator {
            invoices: 20_000,
            ..generator()
        };
        let mut bytes = 0usize;
        let mut voided = 0;
        let mut big = 0;
        for id in 1..=20_000 {
            let meta = g.initial_meta(GenKind::Invoice, id);
            let text = g.json(GenKind::Invoice, id, &meta);
            bytes += text.len();
            if id % 50 == 0 || text.contains("Voided") {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                let lines = v["Line"].as_array().unwrap();
                assert_eq!(lines.last().unwrap()["DetailType"], "SubTotalLineDetail");
                if v["PrivateNote"] == "Voided" {
                    voided += 1;
                    assert_eq!(v["TotalAmt"].to_string(), "0");
                    assert_eq!(v["Balance"].to_string(), "0");
                }
                if lines.len() > 100 {
                    big += 1;
                }
            }
        }
        let avg = bytes / 20_000;
        assert!((2200..=2800).contains(&avg), "average invoice {avg} bytes");
        assert!(voided > 100, "{voided}");
        assert!(big >= 1, "{big}");
    }

    #[test]
    fn text_covers_unicode_quotes_and_backslashes() {
        let g = generator();
        let all: String = (1..=300)
            .map(|id| {
                let m = g.initial_meta(GenKind::Customer, id);
                g.json(GenKind::Customer, id, &m)
            })
            .collect();
        assert!(all.contains('é') || all.contains('ü'));
        assert!(all.contains("山田") || all.contains("美咲") || all.contains("太郎"));
        assert!(
            all.contains('🎂') || all.contains('☕') || all.contains('🎮') || all.contains('💍')
        );
        assert!(all.contains("\\\"") && all.contains("\\\\"));
        assert!(all.contains(" (deleted)"));
    }

    #[test]
    fn amounts_use_qbo_decimal_literals() {
        let g = generator();
        let meta = g.initial_meta(GenKind::Invoice, 5);
        let text = g.json(GenKind::Invoice, 5, &meta);
        assert!(text.contains("\"Amount\":"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let amount = v["Line"][0]["Amount"].to_string();
        assert!(
            amount == "0" || amount.split('.').nth(1).is_some_and(|f| f.len() == 2),
            "{amount}"
        );
    }
}

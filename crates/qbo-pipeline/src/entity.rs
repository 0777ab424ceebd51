//! The entities the pipeline extracts: [`Entity`] is a small `Copy` handle over one row of the
//! shared catalogue [`qbo_entities::ENTITIES`] (QBO name, response key, `--entity` name,
//! table, pipeline names, kind, CDC coverage, time filter, key shape, minor version, required
//! feature). Nothing about an entity is written down twice: every accessor reads the row.
//!
//! Adding an entity is one row in `crates/qbo-entities` and its table in a migration (a test
//! checks that every entity's table exists with the columns of the first three).

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

pub use qbo_entities::{EntityDef, Feature, KeyShape, Kind};

/// How many entities the catalogue holds.
pub const COUNT: usize = qbo_entities::ENTITIES.len();

/// A QBO entity the pipeline can back-fill: an index into [`qbo_entities::ENTITIES`]. Ordered
/// as the catalogue is (the order `--entity all` runs them).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entity(u8);

/// The catalogue position of the entity QBO calls `qbo_name` (at compile time).
const fn position(qbo_name: &str) -> u8 {
    let mut i = 0;
    while i < COUNT {
        let a = qbo_entities::ENTITIES[i].qbo_name.as_bytes();
        let b = qbo_name.as_bytes();
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i as u8;
            }
        }
        i += 1;
    }
    panic!("no such entity in qbo_entities::ENTITIES")
}

/// Schema-qualified table names, in catalogue order (fixed strings: safe to splice into SQL).
static TABLES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    qbo_entities::ENTITIES
        .iter()
        .map(|e| &*Box::leak(format!("raw.{}", e.table).into_boxed_str()))
        .collect()
});

impl Entity {
    /// Every entity, in the order `--entity all` runs them.
    pub const ALL: [Entity; COUNT] = {
        let mut all = [Entity(0); COUNT];
        let mut i = 0;
        while i < COUNT {
            all[i] = Entity(i as u8);
            i += 1;
        }
        all
    };
    pub const CUSTOMER: Entity = Entity(position("Customer"));
    pub const INVOICE: Entity = Entity(position("Invoice"));
    pub const ITEM: Entity = Entity(position("Item"));

    /// Every entity, in catalogue order.
    pub fn all() -> impl Iterator<Item = Entity> {
        Entity::ALL.into_iter()
    }

    /// The entity QBO calls `name` (query name or response key, any ASCII case).
    pub fn from_qbo_name(name: &str) -> Option<Entity> {
        Entity::all().find(|e| {
            e.qbo_name().eq_ignore_ascii_case(name) || e.response_key().eq_ignore_ascii_case(name)
        })
    }

    /// The entity `text` names: its `--entity` name, its table (`qb_<name>`, with or without
    /// `raw.`) or its QBO name, in any ASCII case.
    pub fn lookup(text: &str) -> Option<Entity> {
        let t = text.trim();
        let t = t
            .get(..4)
            .filter(|p| p.eq_ignore_ascii_case("raw."))
            .map_or(t, |_| &t[4..]);
        let def = qbo_entities::lookup(t)?;
        // By name: `ENTITIES` is a constant, so its rows' addresses may differ between uses.
        Entity::all().find(|e| e.qbo_name() == def.qbo_name)
    }

    /// This entity's row of the catalogue.
    pub fn spec(self) -> &'static EntityDef {
        &qbo_entities::ENTITIES[self.0 as usize]
    }

    /// The name QBO uses in queries.
    pub fn qbo_name(self) -> &'static str {
        self.spec().qbo_name
    }

    /// The key QBO answers its records under (`CreditCardPaymentTxn` for CreditCardPayment).
    pub fn response_key(self) -> &'static str {
        self.spec().response_key
    }

    /// The CLI spelling (`customers`), also used in the run ledger and checkpoints.
    pub fn cli_name(self) -> &'static str {
        self.spec().name
    }

    /// The destination table, schema-qualified. A fixed string: safe to splice into SQL.
    pub fn table(self) -> &'static str {
        TABLES[self.0 as usize]
    }

    /// The backfill pipeline's name (`qb_invoices_backfill`).
    pub fn pipeline_name(self) -> &'static str {
        self.spec().backfill_pipeline
    }

    pub fn kind(self) -> Kind {
        self.spec().kind
    }

    pub fn key(self) -> KeyShape {
        self.spec().key
    }

    /// Name-list entities carry `Active`, and QBO hides inactive rows unless the query
    /// constrains `Active` (Intuit documents this for every name list).
    pub fn is_name_list(self) -> bool {
        self.spec().is_name_list()
    }

    /// Read whole on every run, whatever the window: singletons and entities QBO cannot
    /// filter by `MetaData.LastUpdatedTime`.
    pub fn read_whole(self) -> bool {
        self.spec().read_whole()
    }

    pub fn is_singleton(self) -> bool {
        self.spec().kind == Kind::Singleton
    }
}

impl fmt::Debug for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.qbo_name())
    }
}

/// One line of `qbo-pipeline entities --json` (the contract's fields, then more).
#[derive(Debug, serde::Serialize)]
pub struct EntityListing {
    pub name: &'static str,
    pub qbo_name: &'static str,
    pub table: &'static str,
    pub kind: Kind,
    pub cdc: bool,
    pub filterable: bool,
    pub pipeline: &'static str,
    pub requires: Feature,
}

/// The catalogue as `entities` lists it.
pub fn listing() -> Vec<EntityListing> {
    Entity::all()
        .map(|e| {
            let s = e.spec();
            EntityListing {
                name: s.name,
                qbo_name: s.qbo_name,
                table: e.table(),
                kind: s.kind,
                cdc: s.cdc,
                filterable: s.filterable,
                pipeline: s.backfill_pipeline,
                requires: s.requires,
            }
        })
        .collect()
}

impl serde::Serialize for Entity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.cli_name())
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.cli_name())
    }
}

/// An `--entity` value that names no entity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown entity '{}': `qbo-pipeline entities` lists the {COUNT} names --entity takes \
     (its name, e.g. invoices; QBO's name, e.g. Invoice; or its table, e.g. qb_invoices), or use all",
    qbo_client::printable(.0, 60)
)]
pub struct UnknownEntity(pub String);

/// What `--entity` accepts: one entity or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntitySelection {
    One(Entity),
    All,
}

impl FromStr for EntitySelection {
    type Err = UnknownEntity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(EntitySelection::All);
        }
        Entity::lookup(s)
            .map(EntitySelection::One)
            .ok_or_else(|| UnknownEntity(s.to_string()))
    }
}

/// Parses `--entity` values, each one name or a comma list of them; every unknown name is
/// reported.
pub fn parse_selections(values: &[String]) -> Result<Vec<EntitySelection>, Vec<UnknownEntity>> {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for part in values.iter().flat_map(|v| v.split(',')) {
        match part.parse() {
            Ok(s) => out.push(s),
            Err(e) => unknown.push(e),
        }
    }
    if unknown.is_empty() {
        Ok(out)
    } else {
        Err(unknown)
    }
}

/// Expands selections into a sorted, de-duplicated entity list (empty input means all).
pub fn expand(selections: &[EntitySelection]) -> Vec<Entity> {
    let mut out: Vec<Entity> = if selections.is_empty() {
        Entity::ALL.to_vec()
    } else {
        selections
            .iter()
            .flat_map(|s| match s {
                EntitySelection::All => Entity::ALL.to_vec(),
                EntitySelection::One(e) => vec![*e],
            })
            .collect()
    };
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(qbo: &str) -> Entity {
        Entity::from_qbo_name(qbo).unwrap()
    }

    #[test]
    fn the_handle_reads_the_shared_catalogue() {
        assert_eq!(Entity::ALL.len(), 40);
        for (i, entity) in Entity::all().enumerate() {
            let def = &qbo_entities::ENTITIES[i];
            assert_eq!(entity.spec(), def);
            assert_eq!(entity.table(), format!("raw.{}", def.table));
            assert_eq!(entity.pipeline_name(), format!("qb_{}_backfill", def.name));
            assert_eq!(entity.to_string(), def.name);
            assert_eq!(Entity::lookup(def.name), Some(entity));
            assert_eq!(Entity::lookup(def.qbo_name), Some(entity));
            assert_eq!(Entity::lookup(entity.table()), Some(entity));
        }
        assert_eq!(Entity::CUSTOMER.table(), "raw.qb_customers");
        assert_eq!(Entity::INVOICE.cli_name(), "invoices");
        assert_eq!(Entity::ITEM.qbo_name(), "Item");
        assert_eq!(format!("{:?}", Entity::ITEM), "Item");
        assert_eq!(
            e("CreditCardPayment").response_key(),
            "CreditCardPaymentTxn"
        );
        let json = serde_json::to_value(listing()).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 40);
        assert_eq!(json[0]["kind"], "name-list");
        assert_eq!(json[1]["kind"], "transaction");
        assert_eq!(json[1]["cdc"], true);
        let ex = json
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["qbo_name"] == "ExchangeRate")
            .unwrap();
        assert_eq!(ex["requires"], "multi-currency");
        assert_eq!(ex["filterable"], false);
        assert_eq!(ex["table"], "raw.qb_exchange_rates");
    }

    #[test]
    fn agrees_with_the_sandbox_catalogue_where_the_sandbox_knows_the_entity() {
        for entity in Entity::all() {
            let name = entity.qbo_name();
            if !qbo_sandbox::catalog::QUERYABLE.contains(&name) {
                continue;
            }
            let sandbox = qbo_sandbox::catalog::EntityKind::new(name);
            assert_eq!(sandbox.name_list, entity.is_name_list(), "{name}");
            // CDC coverage: the catalogue may be more careful than the sandbox, never less.
            if entity.spec().cdc {
                assert!(sandbox.cdc_supported(), "{name}");
            }
        }
    }

    #[test]
    fn parses_every_spelling() {
        for (text, want) in [
            ("customers", Entity::CUSTOMER),
            ("Customer", Entity::CUSTOMER),
            ("INVOICES", Entity::INVOICE),
            ("qb_items", Entity::ITEM),
            ("raw.qb_items", Entity::ITEM),
            ("billpayment", e("BillPayment")),
            ("journal_entries", e("JournalEntry")),
            ("CreditCardPaymentTxn", e("CreditCardPayment")),
            (" company_info ", e("CompanyInfo")),
        ] {
            assert_eq!(
                text.parse::<EntitySelection>(),
                Ok(EntitySelection::One(want)),
                "{text}"
            );
        }
        assert_eq!("ALL".parse::<EntitySelection>(), Ok(EntitySelection::All));
        let err = "vendorz".parse::<EntitySelection>().unwrap_err();
        assert!(err.to_string().contains("qbo-pipeline entities"), "{err}");
        assert!(err.to_string().contains("'vendorz'"), "{err}");
        let err = "x\ny".parse::<EntitySelection>().unwrap_err();
        assert!(!err.to_string().contains('\n'), "{err}");
        let sel = parse_selections(&["vendors,bills".into(), "items".into()]).unwrap();
        assert_eq!(
            expand(&sel),
            vec![Entity::ITEM, e("Vendor"), e("Bill")],
            "catalogue order"
        );
        let bad = parse_selections(&["vendors,nope".into(), "zilch".into()]).unwrap_err();
        assert_eq!(bad.len(), 2);
    }

    #[test]
    fn expand_dedupes_and_defaults_to_all() {
        assert_eq!(expand(&[]), Entity::ALL.to_vec());
        assert_eq!(
            expand(&[
                EntitySelection::One(Entity::ITEM),
                EntitySelection::All,
                EntitySelection::One(Entity::ITEM)
            ]),
            Entity::ALL.to_vec()
        );
    }

    #[test]
    fn shapes_come_from_the_catalogue() {
        assert!(Entity::CUSTOMER.is_name_list());
        assert!(!Entity::INVOICE.is_name_list());
        assert!(e("CompanyInfo").read_whole() && e("CompanyInfo").is_singleton());
        assert!(e("TaxCode").read_whole() && !e("TaxCode").is_singleton());
        assert!(!Entity::INVOICE.read_whole());
        assert_eq!(e("RecurringTransaction").key(), KeyShape::Wrapped);
    }
}

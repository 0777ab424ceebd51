//! The entity catalogue: the closed set of QBO entities the pipeline extracts, as one table of
//! [`EntitySpec`]s ([`CATALOGUE`]) holding everything that differs between them: QBO name,
//! `--entity` name, destination table, pipeline name, kind, whether CDC covers it and whether
//! QBO can filter it by `MetaData.LastUpdatedTime`.
//!
//! Adding an entity is one [`Entity`] variant, one row here and its table in a migration; a
//! test checks the rows against the sandbox's own catalogue (name lists, CDC coverage).

use std::fmt;
use std::str::FromStr;

/// A QBO entity the pipeline can back-fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    Customer,
    Invoice,
    Item,
}

/// What kind of QBO entity it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Lists with an `Active` flag (customers, items, accounts, …): QBO hides inactive ones
    /// unless a query constrains `Active`, and never deletes them (it deactivates them).
    NameList,
    /// Documents (invoices, bills, payments, …).
    Transaction,
    /// One record per company (CompanyInfo, Preferences).
    Singleton,
    /// Everything else.
    Other,
}

/// Everything the pipeline knows about one entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntitySpec {
    pub entity: Entity,
    /// The name QBO uses in queries and response keys.
    pub qbo_name: &'static str,
    /// The `--entity` spelling (snake_case plural), also used in the run ledger.
    pub cli_name: &'static str,
    /// The destination table, schema-qualified. A fixed string: safe to splice into SQL.
    pub table: &'static str,
    /// The old project's pipeline name for this entity's backfill.
    pub pipeline: &'static str,
    pub kind: Kind,
    /// QBO's CDC endpoint reports its changes.
    pub cdc: bool,
    /// QBO can filter and order it by `MetaData.LastUpdatedTime` (else it is read whole).
    pub filterable: bool,
}

/// The catalogue, in `Entity` order (the order `--entity all` runs them).
pub const CATALOGUE: &[EntitySpec] = &[
    EntitySpec {
        entity: Entity::Customer,
        qbo_name: "Customer",
        cli_name: "customers",
        table: "raw.qb_customers",
        pipeline: "qb_customers_backfill",
        kind: Kind::NameList,
        cdc: true,
        filterable: true,
    },
    EntitySpec {
        entity: Entity::Invoice,
        qbo_name: "Invoice",
        cli_name: "invoices",
        table: "raw.qb_invoices",
        pipeline: "qb_invoices_backfill",
        kind: Kind::Transaction,
        cdc: true,
        filterable: true,
    },
    EntitySpec {
        entity: Entity::Item,
        qbo_name: "Item",
        cli_name: "items",
        table: "raw.qb_items",
        pipeline: "qb_items_backfill",
        kind: Kind::NameList,
        cdc: true,
        filterable: true,
    },
];

impl Entity {
    /// Every supported entity, in the order `--entity all` runs them.
    pub const ALL: [Entity; 3] = [Entity::Customer, Entity::Invoice, Entity::Item];

    /// This entity's row of the catalogue.
    pub fn spec(self) -> &'static EntitySpec {
        &CATALOGUE[self as usize]
    }

    /// The name QBO uses in queries and response keys.
    pub fn qbo_name(self) -> &'static str {
        self.spec().qbo_name
    }

    /// The CLI spelling (`customers`), also used in the run ledger.
    pub fn cli_name(self) -> &'static str {
        self.spec().cli_name
    }

    /// The destination table, schema-qualified. A fixed string: safe to splice into SQL.
    pub fn table(self) -> &'static str {
        self.spec().table
    }

    /// The old project's pipeline name for this entity's backfill.
    pub fn pipeline_name(self) -> &'static str {
        self.spec().pipeline
    }

    /// Name-list entities carry `Active`, and QBO hides inactive rows unless the query
    /// constrains `Active` (Intuit documents this for every name list).
    pub fn is_name_list(self) -> bool {
        self.spec().kind == Kind::NameList
    }
}

/// One line of `qbo-pipeline entities --json` (the contract's fields).
#[derive(Debug, serde::Serialize)]
pub struct EntityListing {
    pub name: &'static str,
    pub qbo_name: &'static str,
    pub table: &'static str,
    pub kind: Kind,
    pub cdc: bool,
    pub filterable: bool,
    pub pipeline: &'static str,
}

/// The catalogue as `entities` lists it.
pub fn listing() -> Vec<EntityListing> {
    CATALOGUE
        .iter()
        .map(|s| EntityListing {
            name: s.cli_name,
            qbo_name: s.qbo_name,
            table: s.table,
            kind: s.kind,
            cdc: s.cdc,
            filterable: s.filterable,
            pipeline: s.pipeline,
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
        f.write_str(self.cli_name())
    }
}

/// An `--entity` value that names no entity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown entity '{0}': use customers, invoices, items or all")]
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
        let lower = s.trim().to_ascii_lowercase();
        if lower == "all" {
            return Ok(EntitySelection::All);
        }
        Entity::ALL
            .into_iter()
            .find(|e| {
                lower == e.cli_name()
                    || lower == e.qbo_name().to_ascii_lowercase()
                    || lower == format!("qb_{}", e.cli_name())
            })
            .map(EntitySelection::One)
            .ok_or_else(|| UnknownEntity(s.to_string()))
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

    #[test]
    fn the_catalogue_is_in_entity_order_and_agrees_with_the_sandbox() {
        for (i, e) in Entity::ALL.into_iter().enumerate() {
            assert_eq!(CATALOGUE[i].entity, e, "row {i}");
            let spec = e.spec();
            assert_eq!(spec.table, format!("raw.qb_{}", spec.cli_name));
            assert_eq!(spec.pipeline, format!("qb_{}_backfill", spec.cli_name));
            let sandbox = qbo_sandbox::catalog::EntityKind::new(spec.qbo_name);
            assert_eq!(
                sandbox.name_list,
                spec.kind == Kind::NameList,
                "{}",
                spec.qbo_name
            );
            assert_eq!(sandbox.cdc_supported(), spec.cdc, "{}", spec.qbo_name);
            assert!(qbo_sandbox::catalog::QUERYABLE.contains(&spec.qbo_name));
        }
        assert_eq!(CATALOGUE.len(), Entity::ALL.len());
        let json = serde_json::to_value(listing()).unwrap();
        assert_eq!(json[0]["kind"], "name-list");
        assert_eq!(json[1]["kind"], "transaction");
        assert_eq!(json[1]["cdc"], true);
    }

    #[test]
    fn parses_every_spelling() {
        for (text, want) in [
            ("customers", EntitySelection::One(Entity::Customer)),
            ("Customer", EntitySelection::One(Entity::Customer)),
            ("INVOICES", EntitySelection::One(Entity::Invoice)),
            ("qb_items", EntitySelection::One(Entity::Item)),
            ("all", EntitySelection::All),
        ] {
            assert_eq!(text.parse::<EntitySelection>(), Ok(want), "{text}");
        }
        let err = "vendors".parse::<EntitySelection>().unwrap_err();
        assert!(
            err.to_string()
                .contains("customers, invoices, items or all")
        );
    }

    #[test]
    fn expand_dedupes_and_defaults_to_all() {
        assert_eq!(expand(&[]), Entity::ALL.to_vec());
        assert_eq!(
            expand(&[
                EntitySelection::One(Entity::Item),
                EntitySelection::All,
                EntitySelection::One(Entity::Item)
            ]),
            Entity::ALL.to_vec()
        );
    }

    #[test]
    fn only_name_lists_filter_active() {
        assert!(Entity::Customer.is_name_list());
        assert!(Entity::Item.is_name_list());
        assert!(!Entity::Invoice.is_name_list());
    }
}

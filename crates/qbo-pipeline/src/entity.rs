//! The entity catalogue: the closed set of QBO entities the pipeline extracts, and everything
//! that differs between them (QBO name, destination table, pipeline name, name-list or not).
//!
//! Adding an entity is one variant here plus its table in a migration.

use std::fmt;
use std::str::FromStr;

/// A QBO entity the pipeline can back-fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    Customer,
    Invoice,
    Item,
}

impl Entity {
    /// Every supported entity, in the order `--entity all` runs them.
    pub const ALL: [Entity; 3] = [Entity::Customer, Entity::Invoice, Entity::Item];

    /// The name QBO uses in queries and response keys.
    pub fn qbo_name(self) -> &'static str {
        match self {
            Entity::Customer => "Customer",
            Entity::Invoice => "Invoice",
            Entity::Item => "Item",
        }
    }

    /// The CLI spelling (`customers`), also used in the run ledger.
    pub fn cli_name(self) -> &'static str {
        match self {
            Entity::Customer => "customers",
            Entity::Invoice => "invoices",
            Entity::Item => "items",
        }
    }

    /// The destination table, schema-qualified. A fixed string: safe to splice into SQL.
    pub fn table(self) -> &'static str {
        match self {
            Entity::Customer => "raw.qb_customers",
            Entity::Invoice => "raw.qb_invoices",
            Entity::Item => "raw.qb_items",
        }
    }

    /// The old project's pipeline name for this entity's backfill.
    pub fn pipeline_name(self) -> &'static str {
        match self {
            Entity::Customer => "qb_customers_backfill",
            Entity::Invoice => "qb_invoices_backfill",
            Entity::Item => "qb_items_backfill",
        }
    }

    /// Name-list entities carry `Active`, and QBO hides inactive rows unless the query
    /// constrains `Active` (Intuit documents this for every name list).
    pub fn is_name_list(self) -> bool {
        match self {
            Entity::Customer | Entity::Item => true,
            Entity::Invoice => false,
        }
    }
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

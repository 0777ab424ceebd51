//! The syntax tree of a QBO query, shared by the parser, the printer (`Display`), the
//! sandbox (which evaluates it) and the pipeline's client (which builds and prints it).
//!
//! Names are kept as written (`Customer`, `customer`, `MetaData.LastUpdatedTime`,
//! `Metadata.lastupdatedtime`): QBO treats entity and property names case-insensitively, and
//! resolving them against a catalogue is the consumer's job.

use std::fmt;

/// One `SELECT` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub select: Select,
    /// The entity as written after `FROM`.
    pub entity: String,
    /// `WHERE a AND b AND ...` (QBO has no `OR`); empty when there is no `WHERE`.
    pub conditions: Vec<Condition>,
    pub order_by: Option<OrderBy>,
    /// `STARTPOSITION n` (1-based; QBO treats 0 like 1) as written.
    pub start_position: Option<u64>,
    /// `MAXRESULTS n` as written (validation of the 1000 ceiling is the consumer's job).
    pub max_results: Option<u64>,
}

/// What is selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    /// `SELECT *`, optionally with extra named properties (`SELECT *, Sku FROM Item`).
    All { extra: Vec<String> },
    /// `SELECT COUNT(*)` (any case).
    Count,
}

/// `field op value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Dot path as written, e.g. `MetaData.LastUpdatedTime`.
    pub field: String,
    pub op: Op,
    pub value: Literal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
    /// `!=`: undocumented, accepted by QBO per one third-party test.
    Ne,
    In,
    Like,
}

/// A literal on the right of an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    /// `'...'` with `\'` (and `\\`) unescaped.
    String(String),
    /// An unquoted number, kept as its text.
    Number(String),
    /// `true` / `false` (unquoted, any case).
    Bool(bool),
    /// `( v, v, ... )` for `IN`.
    List(Vec<Literal>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    pub field: String,
    pub direction: Direction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Asc,
    Desc,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Eq => "=",
            Op::Lt => "<",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Ge => ">=",
            Op::Ne => "!=",
            Op::In => "IN",
            Op::Like => "LIKE",
        })
    }
}

/// Canonical QBO text: `SELECT * FROM Invoice WHERE a >= '...' AND b IN (true, false) ORDERBY
/// MetaData.LastUpdatedTime ASC STARTPOSITION 1 MAXRESULTS 1000`. Parsing the output gives the
/// same `Query` back for every `Query` the parser can produce.
impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SELECT {} FROM {}", self.select, self.entity)?;
        for (i, condition) in self.conditions.iter().enumerate() {
            f.write_str(if i == 0 { " WHERE " } else { " AND " })?;
            write!(f, "{condition}")?;
        }
        if let Some(order_by) = &self.order_by {
            write!(f, " {order_by}")?;
        }
        if let Some(start) = self.start_position {
            write!(f, " STARTPOSITION {start}")?;
        }
        if let Some(max) = self.max_results {
            write!(f, " MAXRESULTS {max}")?;
        }
        Ok(())
    }
}

/// `*`, `*, Sku` or `COUNT(*)`.
impl fmt::Display for Select {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Select::All { extra } => {
                f.write_str("*")?;
                for name in extra {
                    write!(f, ", {name}")?;
                }
                Ok(())
            }
            Select::Count => f.write_str("COUNT(*)"),
        }
    }
}

/// `field op value`, e.g. `DisplayName = 'Amy\'s Bird Sanctuary'`.
impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.field, self.op, self.value)
    }
}

/// `'text'` (with `'` and `\` backslash-escaped), `42`, `true`, `(v, v)`.
impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::String(text) => {
                f.write_str("'")?;
                for c in text.chars() {
                    if matches!(c, '\'' | '\\') {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str("'")
            }
            Literal::Number(text) => f.write_str(text),
            Literal::Bool(b) => f.write_str(if *b { "true" } else { "false" }),
            Literal::List(items) => {
                f.write_str("(")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// `ORDERBY field ASC|DESC`.
impl fmt::Display for OrderBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ORDERBY {} {}", self.field, self.direction)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Asc => "ASC",
            Direction::Desc => "DESC",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_canonical_text() {
        let q = Query {
            select: Select::All {
                extra: vec!["Sku".to_owned()],
            },
            entity: "Item".to_owned(),
            conditions: vec![
                Condition {
                    field: "Name".to_owned(),
                    op: Op::Like,
                    value: Literal::String(r"Amy's \ %".to_owned()),
                },
                Condition {
                    field: "Id".to_owned(),
                    op: Op::In,
                    value: Literal::List(vec![
                        Literal::String("5".to_owned()),
                        Literal::Number("6".to_owned()),
                        Literal::Bool(false),
                    ]),
                },
            ],
            order_by: Some(OrderBy {
                field: "Name".to_owned(),
                direction: Direction::Desc,
            }),
            start_position: Some(11),
            max_results: Some(5),
        };
        assert_eq!(
            q.to_string(),
            r"SELECT *, Sku FROM Item WHERE Name LIKE 'Amy\'s \\ %' AND Id IN ('5', 6, false) ORDERBY Name DESC STARTPOSITION 11 MAXRESULTS 5"
        );
        let count = Query {
            select: Select::Count,
            conditions: Vec::new(),
            order_by: None,
            start_position: None,
            max_results: None,
            ..q
        };
        assert_eq!(count.to_string(), "SELECT COUNT(*) FROM Item");
        assert_eq!(Literal::Bool(true).to_string(), "true");
        assert_eq!(Direction::default().to_string(), "ASC");
    }
}

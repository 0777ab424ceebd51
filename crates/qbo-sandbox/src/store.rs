//! The record store: one [`Table`] per entity, each a compact index plus an override map, and
//! query execution over it.
//!
//! A table keeps, per record, only a [`Row`] (create/last-updated epoch seconds, SyncToken,
//! Active, deleted) in `rows` (by numeric Id) and `by_time` (by `(LastUpdatedTime, Id)`).
//! Generated records have no stored payload: their JSON is written on demand by
//! [`Generator::json`] from the row. Records loaded from a data file, created, or edited
//! beyond a time/SyncToken bump carry a [`StoredRecord`] (parsed value + exact JSON text).
//! One million invoices cost well under 100 MB this way.
//!
//! Queries ([`Store::query`]) evaluate `MetaData.LastUpdatedTime`, `MetaData.CreateTime`,
//! `Id` and `Active` conditions on rows, walk `by_time` for `ORDERBY MetaData.LastUpdatedTime`
//! (ties by numeric Id; `DESC` reverses both), and generate payloads only for conditions on
//! other properties, for `ORDERBY` on other properties, and for the rows of the page. The
//! caller turns a [`Page`] into text outside the lock ([`Store::render`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use qbo_query::{Condition, Direction, Literal, Op, Query, Select};
use serde_json::{Map, Value};

use crate::catalog::{self, DefaultOrder, EntityKind};
use crate::clock::{pacific_secs, parse_epoch_secs};
use crate::generate::{GenKind, Generator, Meta};

/// A record kept as data (loaded, created or edited): the value and its exact JSON text.
#[derive(Debug)]
pub struct StoredRecord {
    pub value: Value,
    pub text: Box<str>,
}

impl StoredRecord {
    fn new(value: Value) -> Arc<StoredRecord> {
        let text = value.to_string().into_boxed_str();
        Arc::new(StoredRecord { value, text })
    }
}

/// A record's index entry.
#[derive(Debug, Clone)]
pub struct Row {
    pub meta: Meta,
    /// Transaction deleted: kept as a tombstone for CDC, invisible to queries and reads.
    pub deleted: bool,
    pub stored: Option<Arc<StoredRecord>>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("unknown entity {0}")]
    UnknownEntity(String),
    #[error("{entity} {id} not found")]
    NotFound { entity: String, id: String },
    #[error("{0} has no Active flag (not a name-list entity)")]
    NotNameList(String),
    #[error("invalid record: {0}")]
    BadRecord(String),
}

/// Why a query was refused; rendered as QBO faults by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// 4001 `QueryValidationError: ...` detail.
    Validation(String),
    /// The company's edition or region lacks the feature the entity needs (5020).
    Unavailable(qbo_entities::Feature),
}

/// One entity's records.
#[derive(Debug)]
pub struct Table {
    pub kind: EntityKind,
    generated: Option<GenKind>,
    rows: BTreeMap<u64, Row>,
    by_time: BTreeSet<(i64, u64)>,
    /// Lower-cased top-level property names (known ones plus any seen in stored records).
    properties: HashSet<String>,
}

impl Table {
    fn new(kind: EntityKind, generated: Option<GenKind>) -> Table {
        let properties = kind
            .known_properties()
            .iter()
            .map(|p| p.to_ascii_lowercase())
            .collect();
        Table {
            kind,
            generated,
            rows: BTreeMap::new(),
            by_time: BTreeSet::new(),
            properties,
        }
    }

    fn insert(&mut self, id: u64, row: Row) {
        if let Some(stored) = &row.stored
            && let Some(object) = stored.value.as_object()
        {
            for key in object.keys() {
                if !self.properties.contains(&key.to_ascii_lowercase()) {
                    self.properties.insert(key.to_ascii_lowercase());
                }
            }
        }
        if let Some(old) = self.rows.insert(id, row.clone()) {
            self.by_time.remove(&(old.meta.lut, id));
        }
        self.by_time.insert((row.meta.lut, id));
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn has_property(&self, path: &str) -> bool {
        let first = path.split('.').next().unwrap_or(path);
        self.properties.contains(&first.to_ascii_lowercase())
    }
}

/// A page row: enough to write its JSON without the lock.
#[derive(Debug, Clone)]
pub struct PageRow {
    pub id: u64,
    pub meta: Meta,
    pub stored: Option<Arc<StoredRecord>>,
}

/// What a query produced.
#[derive(Debug)]
pub enum QueryOutcome {
    Count(u64),
    Page(Page),
}

/// One page of a `SELECT *`.
#[derive(Debug)]
pub struct Page {
    /// Canonical entity name (the response key).
    pub entity: String,
    pub generated: Option<GenKind>,
    /// `startPosition` to echo (1-based).
    pub start: u64,
    pub rows: Vec<PageRow>,
}

/// A CDC entry.
#[derive(Debug, Clone)]
pub enum CdcRow {
    Changed(PageRow),
    Deleted { id: u64, lut: i64 },
}

/// A condition the index can answer without the payload.
#[derive(Debug)]
enum IndexCond {
    /// Compare `MetaData.LastUpdatedTime` (ms) with `op` and these instants (IN: any).
    Lut(Op, Vec<i64>),
    Create(Op, Vec<i64>),
    Id(Op, Vec<u64>),
    /// Allowed Active values.
    Active {
        allow_true: bool,
        allow_false: bool,
    },
}

fn compare_ms(op: Op, value_ms: i64, literals: &[i64]) -> bool {
    match op {
        Op::Eq | Op::In => literals.contains(&value_ms),
        Op::Ne => !literals.contains(&value_ms),
        Op::Lt => literals.iter().all(|l| value_ms < *l),
        Op::Le => literals.iter().all(|l| value_ms <= *l),
        Op::Gt => literals.iter().all(|l| value_ms > *l),
        Op::Ge => literals.iter().all(|l| value_ms >= *l),
        Op::Like => false,
    }
}

impl IndexCond {
    fn matches(&self, id: u64, row: &Row) -> bool {
        match self {
            IndexCond::Lut(op, lits) => compare_ms(*op, row.meta.lut * 1000, lits),
            IndexCond::Create(op, lits) => compare_ms(*op, row.meta.create * 1000, lits),
            IndexCond::Id(op, ids) => match op {
                Op::Eq | Op::In => ids.contains(&id),
                Op::Ne => !ids.contains(&id),
                _ => false,
            },
            IndexCond::Active {
                allow_true,
                allow_false,
            } => {
                if row.meta.active {
                    *allow_true
                } else {
                    *allow_false
                }
            }
        }
    }
}

fn literal_items(lit: &Literal) -> Vec<&Literal> {
    match lit {
        Literal::List(items) => items.iter().collect(),
        other => vec![other],
    }
}

fn literal_datetime_ms(lit: &Literal) -> Option<i64> {
    match lit {
        Literal::String(s) => qbo_query::parse_datetime(s).map(|t| t.timestamp_millis()),
        _ => None,
    }
}

fn literal_id(lit: &Literal) -> Option<u64> {
    match lit {
        Literal::String(s) | Literal::Number(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn literal_bool(lit: &Literal) -> Option<bool> {
    match lit {
        Literal::Bool(b) => Some(*b),
        Literal::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Literal::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// The index form of `c`, or `None` when it needs the payload.
fn index_cond(c: &Condition, name_list: bool) -> Option<IndexCond> {
    let items = literal_items(&c.value);
    let list_ok = matches!(c.value, Literal::List(_)) == (c.op == Op::In);
    if !list_ok {
        return None;
    }
    if c.is_on("MetaData.LastUpdatedTime") || c.is_on("MetaData.CreateTime") {
        if c.op == Op::Like {
            return None;
        }
        let ms: Option<Vec<i64>> = items.iter().map(|l| literal_datetime_ms(l)).collect();
        let ms = ms?;
        return Some(if c.is_on("MetaData.LastUpdatedTime") {
            IndexCond::Lut(c.op, ms)
        } else {
            IndexCond::Create(c.op, ms)
        });
    }
    if c.is_on("Id") && matches!(c.op, Op::Eq | Op::In | Op::Ne) {
        let ids: Option<Vec<u64>> = items.iter().map(|l| literal_id(l)).collect();
        return Some(IndexCond::Id(c.op, ids?));
    }
    if name_list && c.is_on("Active") && matches!(c.op, Op::Eq | Op::In | Op::Ne) {
        let values: Option<Vec<bool>> = items.iter().map(|l| literal_bool(l)).collect();
        let values = values?;
        let (has_true, has_false) = (values.contains(&true), values.contains(&false));
        return Some(if c.op == Op::Ne {
            IndexCond::Active {
                allow_true: !has_true,
                allow_false: !has_false,
            }
        } else {
            IndexCond::Active {
                allow_true: has_true,
                allow_false: has_false,
            }
        });
    }
    None
}

/// Seconds range of `by_time` that can hold rows matching the LUT conditions.
fn lut_range(conds: &[IndexCond]) -> (i64, i64) {
    let (mut lo, mut hi) = (i64::MIN, i64::MAX);
    for cond in conds {
        let IndexCond::Lut(op, lits) = cond else {
            continue;
        };
        for &ms in lits {
            let floor = ms.div_euclid(1000);
            let ceil = floor + i64::from(ms.rem_euclid(1000) != 0);
            match op {
                Op::Ge => lo = lo.max(ceil),
                Op::Gt => lo = lo.max(floor + 1),
                Op::Le => hi = hi.min(floor),
                Op::Lt => hi = hi.min(ceil - 1),
                Op::Eq if lits.len() == 1 => {
                    lo = lo.max(ceil);
                    hi = hi.min(floor);
                }
                _ => {}
            }
        }
    }
    (lo, hi)
}

/// How the result is ordered.
#[derive(Debug)]
enum Order {
    Lut(Direction),
    Create(Direction),
    Id(Direction),
    Field(qbo_query::OrderBy),
}

/// All tables, and the generator behind generated ones.
#[derive(Debug)]
pub struct Store {
    tables: BTreeMap<String, Table>,
    generator: Arc<Generator>,
}

impl Store {
    /// Every entity the generator makes (index only): Customers, Items and Invoices, and the
    /// rest of the books the company's features allow (`crate::books`).
    pub fn generated(generator: Generator) -> Store {
        let generator = Arc::new(generator);
        let mut tables = BTreeMap::new();
        for kind in GenKind::ALL {
            if !generator.offers(kind) {
                continue;
            }
            let mut table = Table::new(EntityKind::new(kind.name()), Some(kind));
            for id in generator.ids(kind) {
                let meta = generator.initial_meta(kind, id);
                if table.properties.len() < 400 && table.rows.len() < 20 {
                    let text = generator.json(kind, id, &meta);
                    if let Ok(members) = serde_json::from_str::<RawMembers<'_>>(&text) {
                        for (key, _) in members.0 {
                            table.properties.insert(key.to_ascii_lowercase());
                        }
                    }
                }
                table.rows.insert(
                    id,
                    Row {
                        meta,
                        deleted: false,
                        stored: None,
                    },
                );
                table.by_time.insert((meta.lut, id));
            }
            tables.insert(kind.name().to_owned(), table);
        }
        Store { tables, generator }
    }

    /// The same store for a company with these features (entities needing a missing one
    /// answer QBO's permission fault; generated tables are left as they are).
    pub fn with_features(
        mut self,
        features: std::collections::BTreeSet<qbo_entities::Feature>,
    ) -> Store {
        Arc::make_mut(&mut self.generator).features = features;
        self
    }

    /// The feature `canonical` needs and the company lacks, if any.
    pub fn unavailable(&self, canonical: &str) -> Option<qbo_entities::Feature> {
        let kind = GenKind::from_name(canonical)?;
        (!self.generator.offers(kind)).then(|| kind.def().requires)
    }

    /// Records from a data file: `{"Customer":[{...}],"Vendor":[...],...}`, kept verbatim.
    pub fn from_data(text: &str) -> Result<Store, StoreError> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| StoreError::BadRecord(format!("data file: {e}")))?;
        let Value::Object(root) = root else {
            return Err(StoreError::BadRecord(
                "data file must be an object of entity name → array of records".into(),
            ));
        };
        let mut store = Store {
            tables: BTreeMap::new(),
            generator: Arc::new(Generator::new(0, 0, 0, 0)),
        };
        for (name, records) in root {
            let canonical = catalog::canonical_known(&name)
                .map(str::to_owned)
                .unwrap_or(name.clone());
            let Value::Array(records) = records else {
                return Err(StoreError::BadRecord(format!("{name} must be an array")));
            };
            let table = store
                .tables
                .entry(canonical.clone())
                .or_insert_with(|| Table::new(EntityKind::new(&canonical), None));
            for record in records {
                let (id, meta) = row_meta(&record, &table.kind)
                    .map_err(|e| StoreError::BadRecord(format!("{name}: {e}")))?;
                // Records without an Id (ExchangeRate) are keyed by their position.
                let id = if table.kind.keyless {
                    table.rows.keys().next_back().copied().unwrap_or(0) + 1
                } else {
                    id
                };
                table.insert(
                    id,
                    Row {
                        meta,
                        deleted: false,
                        stored: Some(StoredRecord::new(record)),
                    },
                );
            }
        }
        Ok(store)
    }

    pub fn generator(&self) -> &Arc<Generator> {
        &self.generator
    }

    /// The canonical name for `name` (ignoring case): a table's, or a known empty entity's.
    pub fn resolve(&self, name: &str) -> Option<String> {
        if let Some(table) = self.tables.get(name) {
            return Some(table.kind.name.clone());
        }
        self.tables
            .keys()
            .find(|k| k.eq_ignore_ascii_case(name))
            .cloned()
            .or_else(|| catalog::canonical_known(name).map(str::to_owned))
    }

    pub fn table(&self, canonical: &str) -> Option<&Table> {
        self.tables.get(canonical)
    }

    fn table_mut(&mut self, entity: &str) -> Result<&mut Table, StoreError> {
        let canonical = self
            .resolve(entity)
            .ok_or_else(|| StoreError::UnknownEntity(entity.to_owned()))?;
        Ok(self
            .tables
            .entry(canonical.clone())
            .or_insert_with(|| Table::new(EntityKind::new(&canonical), None)))
    }

    /// Entity names with at least one record.
    pub fn entity_names(&self) -> Vec<String> {
        self.tables
            .iter()
            .filter(|(_, t)| !t.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Runs a parsed query (QBO semantics; see the module doc).
    pub fn query(&self, query: &Query) -> Result<QueryOutcome, QueryError> {
        let canonical = self.resolve(&query.entity).ok_or_else(|| {
            QueryError::Validation(format!("invalid context declaration: {}", query.entity))
        })?;
        if let Some(feature) = self.unavailable(&canonical) {
            return Err(QueryError::Unavailable(feature));
        }
        let empty;
        let table = match self.tables.get(&canonical) {
            Some(t) => t,
            None => {
                empty = Table::new(EntityKind::new(&canonical), None);
                &empty
            }
        };
        for field in query
            .conditions
            .iter()
            .map(|c| c.field.as_str())
            .chain(query.order_by.iter().map(|o| o.field.as_str()))
        {
            if !table.has_property(field) {
                return Err(QueryError::Validation(format!(
                    "Property {field} not found for Entity {canonical}"
                )));
            }
        }
        if let Some(n) = query.max_results
            && n > 1000
        {
            return Err(QueryError::Validation(format!(
                "value {n} is too large. Max allowed value is 1000"
            )));
        }
        let name_list = table.kind.name_list;
        let mut index = Vec::new();
        let mut residual = Vec::new();
        for c in &query.conditions {
            match index_cond(c, name_list) {
                Some(ic) => index.push(ic),
                None => residual.push(c),
            }
        }
        if name_list && !query.mentions_field("Active") {
            index.push(IndexCond::Active {
                allow_true: true,
                allow_false: false,
            });
        }
        let order = match &query.order_by {
            Some(o) if o.field.eq_ignore_ascii_case("MetaData.LastUpdatedTime") => {
                Order::Lut(o.direction)
            }
            Some(o) if o.field.eq_ignore_ascii_case("MetaData.CreateTime") => {
                Order::Create(o.direction)
            }
            Some(o) if o.field.eq_ignore_ascii_case("Id") => Order::Id(o.direction),
            Some(o) => Order::Field(o.clone()),
            None => match table.kind.default_order() {
                DefaultOrder::LastUpdatedDesc => Order::Lut(Direction::Desc),
                DefaultOrder::Field(field) => Order::Field(qbo_query::OrderBy {
                    field: field.to_owned(),
                    direction: Direction::Asc,
                }),
            },
        };
        let count_only = matches!(query.select, Select::Count);
        let start = query.start_position.unwrap_or(1).max(1);
        let skip = start - 1;
        let take = if count_only {
            u64::MAX
        } else {
            query.max_results.unwrap_or(100)
        };
        // Top-level properties the residual conditions and a payload ORDERBY need.
        let order_field = match &order {
            Order::Field(o) => Some(o.field.clone()),
            _ => None,
        };
        let mut fields: Vec<&str> = residual.iter().map(|c| c.field.as_str()).collect();
        fields.extend(order_field.as_deref());
        let fields: Vec<&str> = fields
            .iter()
            .map(|f| f.split('.').next().unwrap_or(f))
            .collect();
        let keep = |id: u64, row: &Row, value: Option<&Value>| -> bool {
            if row.deleted || !index.iter().all(|c| c.matches(id, row)) {
                return false;
            }
            if residual.is_empty() {
                return true;
            }
            let owned;
            let value = match value {
                Some(v) => v,
                None => {
                    owned = self.projection(table, id, row, &fields);
                    &owned
                }
            };
            residual.iter().all(|c| c.matches(value))
        };
        let mut count = 0u64;
        let mut rows = Vec::new();
        let mut visit = |id: u64, row: &Row| -> bool {
            if count >= skip && (rows.len() as u64) < take && !count_only {
                rows.push(PageRow {
                    id,
                    meta: row.meta,
                    stored: row.stored.clone(),
                });
            }
            count += 1;
            // Keep going only while a COUNT needs it or the page is not full.
            count_only || (rows.len() as u64) < take
        };
        let passes_index =
            |id: u64, row: &Row| !row.deleted && index.iter().all(|c| c.matches(id, row));
        let ordered: Option<Box<dyn Iterator<Item = (u64, &Row)> + '_>> = match &order {
            Order::Lut(direction) => {
                let (lo, hi) = lut_range(&index);
                let range = if lo <= hi {
                    table.by_time.range((lo, 0)..=(hi, u64::MAX))
                } else {
                    table.by_time.range((0, 0)..(0, 0))
                };
                let keys: Box<dyn Iterator<Item = &(i64, u64)>> = match direction {
                    Direction::Asc => Box::new(range),
                    Direction::Desc => Box::new(range.rev()),
                };
                Some(Box::new(keys.filter_map(|(_, id)| {
                    table.rows.get(id).map(|row| (*id, row))
                })))
            }
            Order::Id(direction) => Some(match direction {
                Direction::Asc => Box::new(table.rows.iter().map(|(id, row)| (*id, row))),
                Direction::Desc => Box::new(table.rows.iter().rev().map(|(id, row)| (*id, row))),
            }),
            _ => None,
        };
        if let Some(ordered) = ordered {
            let mut candidates = ordered.filter(|(id, row)| passes_index(*id, row));
            if residual.is_empty() {
                for (id, row) in candidates {
                    if !visit(id, row) {
                        break;
                    }
                }
            } else {
                // Payload conditions: evaluate blocks in parallel, visit in order.
                'blocks: loop {
                    let block: Vec<(u64, &Row)> = candidates.by_ref().take(4096).collect();
                    if block.is_empty() {
                        break;
                    }
                    let verdicts = self.residual_verdicts(table, &block, &residual, &fields);
                    for ((id, row), ok) in block.into_iter().zip(verdicts) {
                        if ok && !visit(id, row) {
                            break 'blocks;
                        }
                    }
                }
            }
        }
        match order {
            Order::Lut(_) | Order::Id(_) => {}
            Order::Create(direction) => {
                let mut matched: Vec<(i64, u64, &Row)> = table
                    .rows
                    .iter()
                    .filter(|(id, row)| keep(**id, row, None))
                    .map(|(id, row)| (row.meta.create, *id, row))
                    .collect();
                matched.sort_unstable_by_key(|(create, id, _)| (*create, *id));
                if direction == Direction::Desc {
                    matched.reverse();
                }
                for (_, id, row) in matched {
                    if !visit(id, row) {
                        break;
                    }
                }
            }
            Order::Field(order_by) => {
                let mut matched: Vec<(u64, &Row, Value)> = Vec::new();
                for (&id, row) in &table.rows {
                    if row.deleted || !index.iter().all(|c| c.matches(id, row)) {
                        continue;
                    }
                    let value = self.projection(table, id, row, &fields);
                    if keep(id, row, Some(&value)) {
                        matched.push((id, row, value));
                    }
                }
                matched.sort_by(|a, b| order_by.compare(&a.2, &b.2).then(a.0.cmp(&b.0)));
                for (id, row, _) in matched {
                    if !visit(id, row) {
                        break;
                    }
                }
            }
        }
        if count_only {
            return Ok(QueryOutcome::Count(count));
        }
        Ok(QueryOutcome::Page(Page {
            entity: canonical,
            generated: table.generated,
            start,
            rows,
        }))
    }

    /// Whether each `(id, row)` satisfies the payload conditions, using every core for big
    /// blocks.
    fn residual_verdicts(
        &self,
        table: &Table,
        block: &[(u64, &Row)],
        residual: &[&Condition],
        fields: &[&str],
    ) -> Vec<bool> {
        let eval = |(id, row): &(u64, &Row)| {
            let value = self.projection(table, *id, row, fields);
            residual.iter().all(|c| c.matches(&value))
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        if threads < 2 || block.len() < 512 {
            return block.iter().map(eval).collect();
        }
        let chunk = block.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = block
                .chunks(chunk)
                .map(|part| {
                    (
                        part.len(),
                        scope.spawn(move || part.iter().map(eval).collect::<Vec<bool>>()),
                    )
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|(len, handle)| handle.join().unwrap_or_else(|_| vec![false; len]))
                .collect()
        })
    }

    /// The record reduced to the top-level properties in `fields` (ASCII case-insensitive):
    /// enough to evaluate conditions and sort, far cheaper than parsing a whole generated
    /// payload (only the wanted members are parsed).
    fn projection(&self, table: &Table, id: u64, row: &Row, fields: &[&str]) -> Value {
        let wanted = |key: &str| fields.iter().any(|f| f.eq_ignore_ascii_case(key));
        let mut out = Map::new();
        match (&row.stored, table.generated) {
            (Some(stored), _) => {
                if let Value::Object(object) = &stored.value {
                    for (k, v) in object {
                        if wanted(k) {
                            out.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            (None, Some(kind)) => {
                let text = self.generator.json(kind, id, &row.meta);
                let members: Vec<(String, &serde_json::value::RawValue)> =
                    match serde_json::from_str::<RawMembers<'_>>(&text) {
                        Ok(m) => m.0,
                        Err(_) => Vec::new(),
                    };
                for (k, raw) in members {
                    if wanted(&k)
                        && let Ok(v) = serde_json::from_str::<Value>(raw.get())
                    {
                        out.insert(k, v);
                    }
                }
            }
            (None, None) => {}
        }
        Value::Object(out)
    }

    /// The record's current value.
    fn value_of(&self, table: &Table, id: u64, row: &Row) -> Value {
        match (&row.stored, table.generated) {
            (Some(stored), _) => stored.value.clone(),
            (None, Some(kind)) => serde_json::from_str(&self.generator.json(kind, id, &row.meta))
                .unwrap_or(Value::Null),
            (None, None) => Value::Null,
        }
    }

    /// JSON text of a page row.
    pub fn render(generator: &Generator, generated: Option<GenKind>, row: &PageRow) -> String {
        match (&row.stored, generated) {
            (Some(stored), _) => stored.text.to_string(),
            (None, Some(kind)) => generator.json(kind, row.id, &row.meta),
            (None, None) => "{}".to_owned(),
        }
    }

    /// Writes a page row's JSON text onto `out`.
    pub fn render_into(
        generator: &Generator,
        generated: Option<GenKind>,
        row: &PageRow,
        out: &mut String,
    ) {
        match (&row.stored, generated) {
            (Some(stored), _) => out.push_str(&stored.text),
            (None, Some(kind)) => out.push_str(&generator.json(kind, row.id, &row.meta)),
            (None, None) => out.push_str("{}"),
        }
    }

    /// One record by Id (not deleted), as a page row of its table.
    pub fn read(&self, canonical: &str, id: u64) -> Option<(Option<GenKind>, PageRow)> {
        let table = self.tables.get(canonical)?;
        let row = table.rows.get(&id).filter(|r| !r.deleted)?;
        Some((
            table.generated,
            PageRow {
                id,
                meta: row.meta,
                stored: row.stored.clone(),
            },
        ))
    }

    /// The current value of one record (not deleted).
    pub fn get_value(&self, entity: &str, id: u64) -> Result<Value, StoreError> {
        let canonical = self
            .resolve(entity)
            .ok_or_else(|| StoreError::UnknownEntity(entity.to_owned()))?;
        let not_found = || StoreError::NotFound {
            entity: canonical.clone(),
            id: id.to_string(),
        };
        let table = self.tables.get(&canonical).ok_or_else(not_found)?;
        let row = table
            .rows
            .get(&id)
            .filter(|r| !r.deleted)
            .ok_or_else(not_found)?;
        Ok(self.value_of(table, id, row))
    }

    /// Every current record of `entity` (inactive included, deleted transactions excluded),
    /// by numeric Id.
    pub fn all_values(&self, entity: &str) -> Vec<Value> {
        let Some(table) = self.resolve(entity).and_then(|c| self.tables.get(&c)) else {
            return Vec::new();
        };
        table
            .rows
            .iter()
            .filter(|(_, r)| !r.deleted)
            .map(|(id, r)| self.value_of(table, *id, r))
            .collect()
    }

    /// Records (inactive included, deleted excluded) with LastUpdatedTime in `[from, to]`.
    pub fn count(&self, entity: &str, from: Option<i64>, to: Option<i64>) -> u64 {
        let Some(table) = self.resolve(entity).and_then(|c| self.tables.get(&c)) else {
            return 0;
        };
        let lo = from.unwrap_or(i64::MIN);
        let hi = to.unwrap_or(i64::MAX);
        if lo > hi {
            return 0;
        }
        table
            .by_time
            .range((lo, 0)..=(hi, u64::MAX))
            .filter(|(_, id)| table.rows.get(id).is_some_and(|r| !r.deleted))
            .count() as u64
    }

    /// The Ids of the entity's deleted (tombstoned) records, ascending.
    pub fn deleted_ids(&self, entity: &str) -> Vec<u64> {
        let Some(table) = self.resolve(entity).and_then(|c| self.tables.get(&c)) else {
            return Vec::new();
        };
        table
            .rows
            .iter()
            .filter(|(_, r)| r.deleted)
            .map(|(id, _)| *id)
            .collect()
    }

    /// CDC: per entity, rows changed at or after `since_ms`, at most `cap` objects across all
    /// entities, as Intuit documents it (API reference, ChangeDataCapture): objects grouped by
    /// entity (in the order of `entities`), within a group the active (changed) objects in
    /// LastUpdatedTime order, then the deletions (tombstones) in LastUpdatedTime order. The
    /// cap is spent on the active objects of every entity first; only what is left of it goes
    /// to deletions (again in entity order), so a capped answer loses deletions first.
    pub fn changed_since(
        &self,
        entities: &[String],
        since_ms: i64,
        cap: usize,
    ) -> Vec<(String, Option<GenKind>, Vec<CdcRow>)> {
        let lo = since_ms.div_euclid(1000) + i64::from(since_ms.rem_euclid(1000) != 0);
        let mut left = cap;
        // The rows of `table` changed since `lo`, deleted ones or not, oldest first.
        let changed = |table: &'_ Table, deleted: bool, left: &mut usize| -> Vec<CdcRow> {
            let mut rows = Vec::new();
            for &(lut, id) in table.by_time.range((lo, 0)..) {
                if *left == 0 {
                    break;
                }
                let Some(row) = table.rows.get(&id).filter(|r| r.deleted == deleted) else {
                    continue;
                };
                rows.push(if deleted {
                    CdcRow::Deleted { id, lut }
                } else {
                    CdcRow::Changed(PageRow {
                        id,
                        meta: row.meta,
                        stored: row.stored.clone(),
                    })
                });
                *left -= 1;
            }
            rows
        };
        let mut out: Vec<(String, Option<GenKind>, Vec<CdcRow>)> = entities
            .iter()
            .map(|entity| {
                let table = self.tables.get(entity);
                let rows = table.map_or_else(Vec::new, |t| changed(t, false, &mut left));
                (entity.clone(), table.and_then(|t| t.generated), rows)
            })
            .collect();
        for (entity, _, rows) in &mut out {
            if let Some(table) = self.tables.get(entity.as_str()) {
                rows.extend(changed(table, true, &mut left));
            }
        }
        out
    }

    /// Adds a record: Id = highest + 1, SyncToken 0, both MetaData times = `now`.
    pub fn create(&mut self, entity: &str, record: Value, now: i64) -> Result<Value, StoreError> {
        let table = self.table_mut(entity)?;
        let Value::Object(fields) = record else {
            return Err(StoreError::BadRecord(
                "a record must be a JSON object".into(),
            ));
        };
        let id = table.rows.keys().next_back().copied().unwrap_or(0) + 1;
        let mut object = Map::new();
        for (k, v) in fields {
            if !matches!(
                k.as_str(),
                "Id" | "SyncToken" | "MetaData" | "domain" | "sparse"
            ) {
                object.insert(k, v);
            }
        }
        if table.kind.name_list && !object.contains_key("Active") {
            object.insert("Active".into(), Value::Bool(true));
        }
        if !table.kind.keyless {
            object.insert("domain".into(), Value::String("QBO".into()));
            object.insert("sparse".into(), Value::Bool(false));
            object.insert("Id".into(), Value::String(id.to_string()));
        }
        object.insert("SyncToken".into(), Value::String("0".into()));
        let mut metadata = Map::new();
        if !table.kind.keyless {
            metadata.insert("CreateTime".into(), Value::String(pacific_secs(now)));
        }
        metadata.insert("LastUpdatedTime".into(), Value::String(pacific_secs(now)));
        object.insert("MetaData".into(), Value::Object(metadata));
        let value = Value::Object(object);
        let (_, meta) = row_meta(&value, &table.kind).map_err(StoreError::BadRecord)?;
        table.insert(
            id,
            Row {
                meta,
                deleted: false,
                stored: Some(StoredRecord::new(value.clone())),
            },
        );
        Ok(value)
    }

    /// Applies `edit` to the record's value, bumps SyncToken and sets LastUpdatedTime = `now`.
    fn edit(
        &mut self,
        entity: &str,
        id: u64,
        now: i64,
        edit: impl FnOnce(&mut Map<String, Value>, bool) -> Result<(), StoreError>,
    ) -> Result<Value, StoreError> {
        self.edit_stamped(entity, id, Some(now), edit)
    }

    /// Applies `edit` to the record's value; with `stamp`, bumps SyncToken and sets
    /// LastUpdatedTime = the stamp, without, keeps both exactly as they were (a silent edit).
    fn edit_stamped(
        &mut self,
        entity: &str,
        id: u64,
        stamp: Option<i64>,
        edit: impl FnOnce(&mut Map<String, Value>, bool) -> Result<(), StoreError>,
    ) -> Result<Value, StoreError> {
        let current = self.get_value(entity, id)?;
        let table = self.table_mut(entity)?;
        let Value::Object(mut object) = current else {
            return Err(StoreError::BadRecord(
                "stored record is not an object".into(),
            ));
        };
        let old_sync = object.get("SyncToken").cloned();
        let old_lut = object
            .get("MetaData")
            .and_then(|m| m.get("LastUpdatedTime"))
            .cloned();
        edit(&mut object, table.kind.name_list)?;
        if !table.kind.keyless {
            object.insert("Id".into(), Value::String(id.to_string()));
        }
        match stamp {
            Some(now) => {
                let sync = object
                    .get("SyncToken")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0);
                object.insert("SyncToken".into(), Value::String((sync + 1).to_string()));
                set_last_updated(&mut object, now);
            }
            None => {
                match old_sync {
                    Some(sync) => object.insert("SyncToken".into(), sync),
                    None => object.remove("SyncToken"),
                };
                if let Some(lut) = old_lut {
                    let meta = object
                        .entry("MetaData")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(meta) = meta {
                        meta.insert("LastUpdatedTime".into(), lut);
                    }
                }
            }
        }
        let value = Value::Object(object);
        let (_, meta) = row_meta(&value, &table.kind).map_err(StoreError::BadRecord)?;
        table.insert(
            id,
            Row {
                meta,
                deleted: false,
                stored: Some(StoredRecord::new(value.clone())),
            },
        );
        Ok(value)
    }

    /// JSON merge patch (RFC 7396) onto the record; bumps SyncToken and LastUpdatedTime.
    pub fn update(
        &mut self,
        entity: &str,
        id: u64,
        patch: Value,
        now: i64,
    ) -> Result<Value, StoreError> {
        self.patch(entity, id, patch, Some(now))
    }

    /// The merge patch of [`Store::update`] leaving SyncToken and `MetaData.LastUpdatedTime`
    /// as they were: invisible to CDC and to LastUpdatedTime queries (QBO has had such bugs).
    pub fn update_silently(
        &mut self,
        entity: &str,
        id: u64,
        patch: Value,
    ) -> Result<Value, StoreError> {
        self.patch(entity, id, patch, None)
    }

    fn patch(
        &mut self,
        entity: &str,
        id: u64,
        patch: Value,
        stamp: Option<i64>,
    ) -> Result<Value, StoreError> {
        if !patch.is_object() {
            return Err(StoreError::BadRecord(
                "a patch must be a JSON object".into(),
            ));
        }
        self.edit_stamped(entity, id, stamp, |object, _| {
            let mut target = Value::Object(std::mem::take(object));
            merge_patch(&mut target, &patch);
            if let Value::Object(o) = target {
                *object = o;
            }
            Ok(())
        })
    }

    /// `Active = false` (name lists only).
    pub fn deactivate(&mut self, entity: &str, id: u64, now: i64) -> Result<Value, StoreError> {
        self.edit(entity, id, now, |object, name_list| {
            if !name_list {
                return Err(StoreError::NotNameList(entity.to_owned()));
            }
            object.insert("Active".into(), Value::Bool(false));
            Ok(())
        })
    }

    /// QBO's delete: name lists become inactive with ` (deleted)` appended to their names;
    /// other entities disappear, leaving a tombstone for CDC.
    pub fn delete(&mut self, entity: &str, id: u64, now: i64) -> Result<(), StoreError> {
        let name_list = {
            let canonical = self
                .resolve(entity)
                .ok_or_else(|| StoreError::UnknownEntity(entity.to_owned()))?;
            self.tables
                .get(&canonical)
                .is_some_and(|t| t.kind.name_list)
        };
        if name_list {
            self.edit(entity, id, now, |object, _| {
                object.insert("Active".into(), Value::Bool(false));
                for key in ["DisplayName", "Name", "FullyQualifiedName"] {
                    if let Some(Value::String(name)) = object.get_mut(key)
                        && !name.ends_with(" (deleted)")
                    {
                        name.push_str(" (deleted)");
                    }
                }
                Ok(())
            })?;
            return Ok(());
        }
        self.get_value(entity, id)?;
        let table = self.table_mut(entity)?;
        if let Some(row) = table.rows.get(&id).cloned() {
            let mut meta = row.meta;
            meta.lut = now;
            table.insert(
                id,
                Row {
                    meta,
                    deleted: true,
                    stored: None,
                },
            );
        }
        Ok(())
    }

    /// Sets LastUpdatedTime (and, with `bump`, SyncToken + 1) without other changes.
    pub fn touch(&mut self, entity: &str, id: u64, lut: i64, bump: bool) -> Result<(), StoreError> {
        let table = self.table_mut(entity)?;
        let not_found = || StoreError::NotFound {
            entity: entity.to_owned(),
            id: id.to_string(),
        };
        let row = table
            .rows
            .get(&id)
            .filter(|r| !r.deleted)
            .cloned()
            .ok_or_else(not_found)?;
        let mut meta = row.meta;
        meta.lut = lut;
        if bump {
            meta.sync += 1;
        }
        let stored = row.stored.map(|stored| {
            let mut value = stored.value.clone();
            if let Value::Object(object) = &mut value {
                set_last_updated(object, lut);
                if bump {
                    object.insert("SyncToken".into(), Value::String(meta.sync.to_string()));
                }
            }
            StoredRecord::new(value)
        });
        table.insert(
            id,
            Row {
                meta,
                deleted: false,
                stored,
            },
        );
        Ok(())
    }
}

/// A JSON object's members, values left as raw text.
struct RawMembers<'a>(Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for RawMembers<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Members<'a> {
            type Value = RawMembers<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) =
                    map.next_entry::<String, &'de serde_json::value::RawValue>()?
                {
                    members.push((k, v));
                }
                Ok(RawMembers(members))
            }
        }
        d.deserialize_map(Members(std::marker::PhantomData))
    }
}

/// Why a v3 write was refused (QBO fault codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// 610 Object Not Found.
    NotFound,
    /// 5010 Stale Object Error (SyncToken mismatch).
    Stale,
    /// 6240 Duplicate Name Exists Error.
    Duplicate,
    /// 2010 Request has invalid or unsupported property (detail).
    Invalid(String),
    /// 400 code "500" Unsupported Operation.
    Unsupported,
    /// 5020 Permission Denied: the company's edition lacks the entity's feature.
    Unavailable,
}

/// What a v3 write produced.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// The record after the write (`{"<E>": record}`).
    Record(Value),
    /// `{"<E>":{"domain":"QBO","status":"Deleted","Id":".."}}`.
    Deleted(u64),
}

/// The fields a write never sets directly.
const SYSTEM_FIELDS: &[&str] = &["Id", "SyncToken", "MetaData", "domain", "sparse", "status"];

fn display_name_of(object: &Map<String, Value>) -> Option<String> {
    object
        .get("DisplayName")
        .or_else(|| object.get("Name"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

impl Store {
    /// `POST /v3/company/{realm}/{entity}[?operation=delete|void]` with `body`: create (no
    /// `Id`), sparse or full update (same `SyncToken` required; an update that changes nothing
    /// keeps the SyncToken, as QBO does), delete or void of a transaction.
    pub fn write(
        &mut self,
        entity: &str,
        body: Value,
        operation: Option<&str>,
        now: i64,
    ) -> Result<(String, WriteOutcome), WriteError> {
        let canonical = self.resolve(entity).ok_or(WriteError::Unsupported)?;
        if self.unavailable(&canonical).is_some() {
            return Err(WriteError::Unavailable);
        }
        let name_list = EntityKind::new(&canonical).name_list;
        let Value::Object(body) = body else {
            return Err(WriteError::Invalid(
                "the request body must be a JSON object".into(),
            ));
        };
        let id = match body.get("Id") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or(WriteError::NotFound)?,
            ),
        };
        let current = match id {
            Some(id) => Some(
                self.get_value(&canonical, id)
                    .map_err(|_| WriteError::NotFound)?,
            ),
            None => None,
        };
        if let (Some(current), Some(_)) = (&current, id) {
            let have = current.get("SyncToken").and_then(Value::as_str);
            let sent = body.get("SyncToken").and_then(Value::as_str);
            if sent.is_none() || sent != have {
                return Err(WriteError::Stale);
            }
        }
        let sync_of = |v: &Value| {
            v.get("SyncToken")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // `operation=update` (node-quickbooks, Intuit's Java SDK) is an ordinary update.
        let operation = operation.filter(|o| *o != "update");
        match (operation, id, current) {
            (Some("delete"), Some(id), Some(_)) => {
                if name_list {
                    return Err(WriteError::Unsupported);
                }
                self.delete(&canonical, id, now)
                    .map_err(|_| WriteError::NotFound)?;
                Ok((canonical, WriteOutcome::Deleted(id)))
            }
            (Some("void"), Some(id), Some(current)) => {
                if name_list {
                    return Err(WriteError::Unsupported);
                }
                let Value::Object(mut object) = current else {
                    return Err(WriteError::NotFound);
                };
                let zero = Value::Number(0u8.into());
                if let Some(Value::Array(lines)) = object.get_mut("Line") {
                    for line in lines.iter_mut() {
                        if let Some(amount) = line.get_mut("Amount") {
                            *amount = zero.clone();
                        }
                    }
                }
                for key in ["TotalAmt", "Balance", "HomeTotalAmt", "HomeBalance"] {
                    if let Some(v) = object.get_mut(key) {
                        *v = zero.clone();
                    }
                }
                if let Some(Value::Object(tax)) = object.get_mut("TxnTaxDetail")
                    && let Some(v) = tax.get_mut("TotalTax")
                {
                    *v = zero.clone();
                }
                let note = Value::String("Voided".into());
                if object.contains_key("PrivateNote") {
                    object.insert("PrivateNote".into(), note);
                } else {
                    let at = object
                        .keys()
                        .position(|k| k == "CurrencyRef")
                        .map_or(object.len(), |i| i + 1);
                    object.shift_insert(at, "PrivateNote".into(), note);
                }
                let sync = sync_of(&Value::Object(object.clone()));
                object.insert("SyncToken".into(), Value::String((sync + 1).to_string()));
                set_last_updated(&mut object, now);
                let value = Value::Object(object);
                self.replace(&canonical, id, value.clone())?;
                Ok((canonical, WriteOutcome::Record(value)))
            }
            (Some(_), _, _) => Err(WriteError::Unsupported),
            (None, Some(id), Some(current)) => {
                let Value::Object(mut object) = current.clone() else {
                    return Err(WriteError::NotFound);
                };
                let old_name = display_name_of(&object);
                for (k, v) in &body {
                    if !SYSTEM_FIELDS.contains(&k.as_str()) {
                        object.insert(k.clone(), v.clone());
                    }
                }
                if name_list {
                    let new_name = display_name_of(&object);
                    if new_name != old_name
                        && let Some(name) = &new_name
                    {
                        if self.name_taken(&canonical, name, Some(id)) {
                            return Err(WriteError::Duplicate);
                        }
                        if !body.contains_key("FullyQualifiedName")
                            && let Some(Value::String(fqn)) = object.get_mut("FullyQualifiedName")
                        {
                            *fqn = match fqn.rsplit_once(':') {
                                Some((parent, _)) => format!("{parent}:{name}"),
                                None => name.clone(),
                            };
                        }
                        if !body.contains_key("PrintOnCheckName")
                            && object.get("PrintOnCheckName").and_then(Value::as_str)
                                == old_name.as_deref()
                            && object.contains_key("PrintOnCheckName")
                        {
                            object.insert("PrintOnCheckName".into(), Value::String(name.clone()));
                        }
                    }
                }
                if Value::Object(object.clone()) == current {
                    return Ok((canonical, WriteOutcome::Record(current)));
                }
                object.insert(
                    "SyncToken".into(),
                    Value::String((sync_of(&current) + 1).to_string()),
                );
                set_last_updated(&mut object, now);
                let value = Value::Object(object);
                self.replace(&canonical, id, value.clone())?;
                Ok((canonical, WriteOutcome::Record(value)))
            }
            (None, None, _) => {
                let mut record = body;
                if name_list {
                    let name = display_name_of(&record).or_else(|| {
                        let parts: Vec<&str> = ["GivenName", "FamilyName"]
                            .iter()
                            .filter_map(|k| record.get(*k).and_then(Value::as_str))
                            .collect();
                        (!parts.is_empty()).then(|| parts.join(" "))
                    });
                    let Some(name) = name else {
                        return Err(WriteError::Invalid(
                            "Required param missing, need to supply the required value for the API: DisplayName or Name".into(),
                        ));
                    };
                    if self.name_taken(&canonical, &name, None) {
                        return Err(WriteError::Duplicate);
                    }
                    let key = if record.contains_key("Name") && !record.contains_key("DisplayName")
                    {
                        "Name"
                    } else {
                        "DisplayName"
                    };
                    record
                        .entry(key)
                        .or_insert_with(|| Value::String(name.clone()));
                    record
                        .entry("FullyQualifiedName")
                        .or_insert_with(|| Value::String(name.clone()));
                    if key == "DisplayName" {
                        record
                            .entry("PrintOnCheckName")
                            .or_insert_with(|| Value::String(name.clone()));
                    }
                }
                let value = self
                    .create(&canonical, Value::Object(record), now)
                    .map_err(|e| WriteError::Invalid(e.to_string()))?;
                Ok((canonical, WriteOutcome::Record(value)))
            }
            _ => Err(WriteError::NotFound),
        }
    }

    /// Whether an active record of `canonical` other than `except` has this display name.
    fn name_taken(&self, canonical: &str, name: &str, except: Option<u64>) -> bool {
        let Some(table) = self.tables.get(canonical) else {
            return false;
        };
        let field = ["DisplayName", "Name"];
        table.rows.iter().any(|(id, row)| {
            Some(*id) != except && !row.deleted && row.meta.active && {
                let v = self.projection(table, *id, row, &field);
                display_name_of(v.as_object().unwrap_or(&Map::new()))
                    .is_some_and(|n| n.to_lowercase() == name.to_lowercase())
            }
        })
    }

    /// Stores `value` as record `id` (index entry from the value).
    fn replace(&mut self, canonical: &str, id: u64, value: Value) -> Result<(), WriteError> {
        let table = self
            .table_mut(canonical)
            .map_err(|_| WriteError::NotFound)?;
        let (_, meta) = row_meta(&value, &table.kind).map_err(WriteError::Invalid)?;
        table.insert(
            id,
            Row {
                meta,
                deleted: false,
                stored: Some(StoredRecord::new(value)),
            },
        );
        Ok(())
    }
}

fn set_last_updated(object: &mut Map<String, Value>, secs: i64) {
    let entry = object
        .entry("MetaData")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = entry {
        if !meta.contains_key("CreateTime") {
            meta.insert("CreateTime".into(), Value::String(pacific_secs(secs)));
        }
        meta.insert("LastUpdatedTime".into(), Value::String(pacific_secs(secs)));
    }
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(object) = target {
        for (key, value) in patch {
            if value.is_null() {
                object.remove(key);
            } else {
                merge_patch(object.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Id and index entry of a stored record.
fn row_meta(record: &Value, kind: &EntityKind) -> Result<(u64, Meta), String> {
    let name_list = kind.name_list;
    let id = match record
        .get("Id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(id) => id,
        // Keyed by position (the caller's), not by an Id.
        None if kind.keyless => 0,
        None => return Err("every record needs a numeric string \"Id\"".to_owned()),
    };
    let time = |key: &str| {
        record
            .get("MetaData")
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .and_then(parse_epoch_secs)
    };
    let lut = time("LastUpdatedTime")
        .ok_or_else(|| format!("record {id} needs MetaData.LastUpdatedTime"))?;
    let create = time("CreateTime").unwrap_or(lut);
    let sync = record
        .get("SyncToken")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let active = !name_list || record.get("Active") != Some(&Value::Bool(false));
    Ok((
        id,
        Meta {
            create,
            lut,
            sync,
            active,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::generated(Generator::new(3, 50, 20, 500))
    }

    fn page(store: &Store, q: &str) -> Vec<u64> {
        match store.query(&qbo_query::parse(q).unwrap()).unwrap() {
            QueryOutcome::Page(p) => p.rows.iter().map(|r| r.id).collect(),
            QueryOutcome::Count(_) => panic!("count"),
        }
    }

    fn count(store: &Store, q: &str) -> u64 {
        match store.query(&qbo_query::parse(q).unwrap()).unwrap() {
            QueryOutcome::Count(n) => n,
            QueryOutcome::Page(_) => panic!("page"),
        }
    }

    #[test]
    fn lut_range_handles_fractions_and_strictness() {
        let conds = vec![
            IndexCond::Lut(Op::Ge, vec![10_500]),
            IndexCond::Lut(Op::Lt, vec![20_000]),
        ];
        assert_eq!(lut_range(&conds), (11, 19));
        let conds = vec![
            IndexCond::Lut(Op::Gt, vec![10_000]),
            IndexCond::Lut(Op::Le, vec![12_999]),
        ];
        assert_eq!(lut_range(&conds), (11, 12));
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut v: Value = serde_json::json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(
            &mut v,
            &serde_json::json!({"b": {"c": null, "e": 4}, "f": "x"}),
        );
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": {"d": 3, "e": 4}, "f": "x"})
        );
    }

    #[test]
    fn default_active_filter_and_counts() {
        let s = store();
        let all = count(
            &s,
            "SELECT COUNT(*) FROM Customer WHERE Active IN (true, false)",
        );
        let active = count(&s, "SELECT COUNT(*) FROM Customer");
        let inactive = count(&s, "SELECT COUNT(*) FROM Customer WHERE Active = false");
        assert_eq!(all, 50);
        assert_eq!(active + inactive, all);
        assert!(inactive > 0);
        assert_eq!(count(&s, "select count(*) from invoice"), 500);
    }

    #[test]
    fn lut_order_is_stable_with_id_tiebreak_and_windows_bound() {
        let s = store();
        let ids = page(
            &s,
            "SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime MAXRESULTS 1000",
        );
        assert_eq!(ids.len(), 500);
        let table = s.table("Invoice").unwrap();
        let keys: Vec<(i64, u64)> = ids
            .iter()
            .map(|id| (table.rows[id].meta.lut, *id))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let (lo, hi) = (keys[100].0, keys[200].0);
        let q = format!(
            "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '{}' AND MetaData.LastUpdatedTime <= '{}' ORDERBY MetaData.LastUpdatedTime MAXRESULTS 1000",
            pacific_secs(lo),
            pacific_secs(hi)
        );
        let window = page(&s, &q);
        let expected: Vec<u64> = keys
            .iter()
            .filter(|(t, _)| *t >= lo && *t <= hi)
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(window, expected);
    }

    #[test]
    fn offset_pages_partition_the_result() {
        let s = store();
        let all = page(
            &s,
            "SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime MAXRESULTS 1000",
        );
        let mut paged = Vec::new();
        for start in (1..=500).step_by(70) {
            paged.extend(page(
                &s,
                &format!("SELECT * FROM Invoice ORDERBY MetaData.LastUpdatedTime STARTPOSITION {start} MAXRESULTS 70"),
            ));
        }
        assert_eq!(paged, all);
    }

    #[test]
    fn validation_errors() {
        let s = store();
        let q = qbo_query::parse("SELECT * FROM Custmoer").unwrap();
        assert_eq!(
            s.query(&q).unwrap_err(),
            QueryError::Validation("invalid context declaration: Custmoer".into())
        );
        let q = qbo_query::parse("SELECT * FROM Customer WHERE NoSuchField = '1'").unwrap();
        assert_eq!(
            s.query(&q).unwrap_err(),
            QueryError::Validation("Property NoSuchField not found for Entity Customer".into())
        );
        let q = qbo_query::parse("SELECT * FROM Invoice MAXRESULTS 1001").unwrap();
        assert_eq!(
            s.query(&q).unwrap_err(),
            QueryError::Validation("value 1001 is too large. Max allowed value is 1000".into())
        );
        let q = qbo_query::parse("SELECT * FROM Invoice WHERE Active = true").unwrap();
        assert!(s.query(&q).is_err());
    }

    #[test]
    fn residual_conditions_use_the_payload() {
        let s = store();
        let value = s.get_value("Invoice", 7).unwrap();
        let doc = value["DocNumber"].as_str().unwrap().to_owned();
        assert_eq!(
            page(
                &s,
                &format!("SELECT * FROM Invoice WHERE DocNumber = '{doc}'")
            ),
            vec![7]
        );
    }

    #[test]
    fn projections_answer_like_full_payloads() {
        let s = store();
        for q in [
            "SELECT * FROM Invoice WHERE billaddr.city = 'Tucson' MAXRESULTS 1000",
            "SELECT * FROM Invoice WHERE TotalAmt > '2000.00' MAXRESULTS 1000",
            "SELECT * FROM Customer WHERE DisplayName LIKE '%Café%' AND Active IN (true, false)",
        ] {
            let query = qbo_query::parse(q).unwrap();
            let entity = s.resolve(&query.entity).unwrap();
            let expected: Vec<u64> = s
                .all_values(&entity)
                .iter()
                .filter(|v| query.matches(v))
                .map(|v| v["Id"].as_str().unwrap().parse().unwrap())
                .collect();
            let mut got = page(&s, q);
            got.sort_unstable();
            assert!(!expected.is_empty(), "{q}");
            assert_eq!(got, expected, "{q}");
        }
    }

    #[test]
    fn edits_bump_sync_and_time_and_deletes_hide() {
        let mut s = store();
        let before = s.get_value("Invoice", 9).unwrap();
        let after = s
            .update(
                "Invoice",
                9,
                serde_json::json!({"PrivateNote": "edited"}),
                1_800_000_000,
            )
            .unwrap();
        let sync = |v: &Value| v["SyncToken"].as_str().unwrap().parse::<u32>().unwrap();
        assert_eq!(sync(&after), sync(&before) + 1);
        assert_eq!(
            after["MetaData"]["LastUpdatedTime"],
            pacific_secs(1_800_000_000)
        );
        assert_eq!(after["PrivateNote"], "edited");
        assert_eq!(s.count("Invoice", Some(1_800_000_000), None), 1);
        s.delete("Invoice", 9, 1_800_000_100).unwrap();
        assert!(s.get_value("Invoice", 9).is_err());
        assert_eq!(s.count("Invoice", None, None), 499);
        let cdc = s.changed_since(&["Invoice".into()], 1_800_000_000_000, 1000);
        assert!(matches!(
            cdc[0].2.as_slice(),
            [CdcRow::Deleted { id: 9, .. }]
        ));
        s.delete("Customer", 3, 1_800_000_000).unwrap();
        let c = s.get_value("Customer", 3).unwrap();
        assert_eq!(c["Active"], false);
        assert!(c["DisplayName"].as_str().unwrap().ends_with(" (deleted)"));
    }

    #[test]
    fn cdc_puts_deletions_after_active_objects_and_caps_them_first() {
        let mut s = store();
        let t = 1_800_000_000;
        s.delete("Invoice", 9, t).unwrap();
        s.update("Customer", 3, serde_json::json!({"Notes": "x"}), t + 50)
            .unwrap();
        s.update(
            "Invoice",
            4,
            serde_json::json!({"PrivateNote": "x"}),
            t + 100,
        )
        .unwrap();
        s.delete("Invoice", 11, t + 200).unwrap();
        s.update(
            "Invoice",
            2,
            serde_json::json!({"PrivateNote": "y"}),
            t + 300,
        )
        .unwrap();
        let names = ["Invoice".to_owned(), "Customer".to_owned()];
        let shape = |cap: usize| -> Vec<Vec<String>> {
            s.changed_since(&names, t * 1000, cap)
                .into_iter()
                .map(|(_, _, rows)| {
                    rows.iter()
                        .map(|r| match r {
                            CdcRow::Changed(p) => format!("{}", p.id),
                            CdcRow::Deleted { id, .. } => format!("-{id}"),
                        })
                        .collect()
                })
                .collect()
        };
        assert_eq!(shape(1000), [vec!["4", "2", "-9", "-11"], vec!["3"]]);
        // The cap goes to every entity's active objects first, then to deletions.
        assert_eq!(shape(4), [vec!["4", "2", "-9"], vec!["3"]]);
        assert_eq!(shape(3), [vec!["4", "2"], vec!["3"]]);
        assert_eq!(shape(2), [vec!["4", "2"], vec![]]);
        assert_eq!(shape(1), [vec!["4"], vec![]]);
    }

    #[test]
    fn silent_updates_keep_sync_and_time_and_deleted_ids_list_tombstones() {
        let mut s = store();
        let before = s.get_value("Invoice", 9).unwrap();
        let after = s
            .update_silently("Invoice", 9, serde_json::json!({"PrivateNote": "quiet"}))
            .unwrap();
        assert_eq!(after["PrivateNote"], "quiet");
        assert_eq!(after["SyncToken"], before["SyncToken"]);
        assert_eq!(after["MetaData"], before["MetaData"]);
        assert_eq!(s.get_value("Invoice", 9).unwrap(), after);
        let lut = parse_epoch_secs(before["MetaData"]["LastUpdatedTime"].as_str().unwrap());
        assert_eq!(s.table("Invoice").unwrap().rows[&9].meta.lut, lut.unwrap());
        assert!(s.deleted_ids("Invoice").is_empty());
        for id in [30, 4, 12] {
            s.delete("Invoice", id, 1_800_000_000).unwrap();
        }
        s.delete("Customer", 3, 1_800_000_000).unwrap();
        assert_eq!(s.deleted_ids("invoice"), [4, 12, 30]);
        assert!(
            s.deleted_ids("Customer").is_empty(),
            "name lists go inactive"
        );
        assert!(s.deleted_ids("NoSuchEntity").is_empty());
    }

    #[test]
    fn data_file_records_keep_key_order_and_literals() {
        let text = r#"{"Vendor":[{"Balance":315.00,"Id":"2","SyncToken":"0","MetaData":{"CreateTime":"2015-10-02T10:43:57-07:00","LastUpdatedTime":"2015-10-02T10:43:57-07:00"},"DisplayName":"b","Active":true},{"Id":"1","MetaData":{"LastUpdatedTime":"2015-10-02T10:43:57-07:00"},"DisplayName":"a","Active":false}]}"#;
        let s = Store::from_data(text).unwrap();
        let v = s.get_value("vendor", 2).unwrap();
        assert!(v.to_string().starts_with(r#"{"Balance":315.00,"Id":"2""#));
        assert_eq!(page(&s, "SELECT * FROM Vendor"), vec![2]);
        assert_eq!(
            page(&s, "SELECT * FROM Vendor WHERE Active IN (true,false)"),
            vec![1, 2]
        );
        assert!(Store::from_data(r#"{"Vendor":[{"Id":"x"}]}"#).is_err());
    }
}

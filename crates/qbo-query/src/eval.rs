//! Does a JSON record satisfy a query's conditions, and how do two records sort: the
//! semantics the sandbox applies to a parsed [`Query`].
//!
//! In: a [`Condition`] / [`Query`] / [`OrderBy`] and a QBO entity as a `serde_json::Value`.
//! Out: `bool` / [`Ordering`]. Pure functions; no catalogue knowledge (whether a property is
//! filterable, or which entities have `Active`, is the caller's business).
//!
//! The rules, chosen where QBO's behaviour is unknown (see also `GRAMMAR.md`, "Semantics"):
//! - Property paths are looked up case-insensitively, segment by segment ([`lookup`]).
//! - A reference field (`CustomerRef: {"value": "5", "name": ".."}`) compared with a string or
//!   number literal compares its `value` sub-field (QBO: `CustomerRef = '5'`).
//! - A missing (or `null`) field matches no condition at all, `!=` included (SQL semantics:
//!   QBO omits empty fields, and `NULL != 'x'` is not true).
//! - Datetimes ([`parse_datetime`]) compare as instants whenever both sides parse as one, so
//!   `2015-10-08T13:28:29-07:00` equals `2015-10-08T20:28:29Z`; zone-less and date-only
//!   values are read as UTC.
//! - `=` / `!=` / `IN`: datetimes as instants; a JSON number, or an unquoted number literal,
//!   numerically; otherwise case-insensitive text equality. Booleans equal JSON booleans (or
//!   the strings `"true"` / `"false"`, any case).
//! - `<` `<=` `>` `>=`: datetimes as instants, else numbers when both sides are numeric
//!   (`TotalAmt > '300.00'`), else case-insensitive text order. Booleans never order.
//! - `LIKE`: case-insensitive, `%` matches any run of characters (there is no other wildcard
//!   and no escape).
//! - Numbers compare exactly as decimals (`5000000000000503624` < `5000000000000503625`,
//!   `100.00` = `100`), never via JSON `Number` equality; with an exponent, as `f64`.
//!   `NaN` / `inf` are text, not numbers.
//! - Objects (other than references) and arrays match nothing.

use std::cmp::Ordering;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone};
use serde_json::Value;

use crate::ast::{Condition, Direction, Literal, Op, OrderBy, Query};

/// The value at a dotted `path` (`metadata.lastupdatedtime` finds
/// `MetaData.LastUpdatedTime`): each segment is looked up in an object, exact name first, then
/// ignoring ASCII case. `None` when a segment is missing or a non-object is in the way.
pub fn lookup<'a>(record: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(record, |value, segment| {
        let object = value.as_object()?;
        object.get(segment).or_else(|| {
            object
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(segment))
                .map(|(_, v)| v)
        })
    })
}

/// Parses a QBO datetime literal or value into an instant with its offset.
///
/// Accepted: `2011-08-10T10:20:30-0700`, `2014-09-16T10:36:03-07:00`, `...-07`,
/// `2020-09-29T13:04:48Z`, fractional seconds (`.000Z`, `.123-07:00`), minutes-only times
/// (`2024-06-01T00:00`), zone-less `2024-06-01T00:00:00` (read as UTC: QBO's own reading is
/// unknown), and date-only `2015-10-08` (00:00:00 UTC that day).
///
/// Total: any other text, whatever characters it holds, gives `None`, never a panic.
pub fn parse_datetime(s: &str) -> Option<DateTime<FixedOffset>> {
    let bytes = s.as_bytes();
    let date_shaped = bytes.len() >= 10
        && bytes[..10].iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !date_shaped {
        return None;
    }
    let utc = FixedOffset::east_opt(0)?;
    if bytes.len() == 10 {
        let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
        return utc
            .from_local_datetime(&date.and_hms_opt(0, 0, 0)?)
            .single();
    }
    if !matches!(bytes[10], b'T' | b't') {
        return None;
    }
    // `get`, not `[..]`: both offsets are character boundaries (the bytes before them are
    // ASCII, checked above), and `get` keeps that from ever becoming a panic.
    let (day, time) = (s.get(..10)?, s.get(11..)?);
    let (local, offset) = if let Some(local) = time.strip_suffix(['Z', 'z']) {
        (local, utc)
    } else if let Some(sign_at) = time.find(['+', '-']) {
        let (local, zone) = time.split_at_checked(sign_at)?;
        (local, parse_offset(zone)?)
    } else {
        (time, utc)
    };
    let local = format!("{day}T{local}");
    let naive = NaiveDateTime::parse_from_str(&local, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(&local, "%Y-%m-%dT%H:%M"))
        .ok()?;
    offset.from_local_datetime(&naive).single()
}

/// `+HH`, `-HHMM` or `-HH:MM`. Works on bytes: the text comes from the network and may hold
/// any character, so it is never sliced at a byte offset that could split one.
fn parse_offset(zone: &str) -> Option<FixedOffset> {
    let (sign, digits) = match zone.as_bytes() {
        [b'+', rest @ ..] => (1, rest),
        [b'-', rest @ ..] => (-1, rest),
        _ => return None,
    };
    let (hours, minutes) = match *digits {
        [h1, h2] => (two_digits(h1, h2)?, 0),
        [h1, h2, m1, m2] | [h1, h2, b':', m1, m2] => (two_digits(h1, h2)?, two_digits(m1, m2)?),
        _ => return None,
    };
    if minutes >= 60 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// The value of two ASCII digits (`0..=99`), or `None` when either byte is not one.
fn two_digits(tens: u8, units: u8) -> Option<i32> {
    (tens.is_ascii_digit() && units.is_ascii_digit())
        .then(|| i32::from(tens - b'0') * 10 + i32::from(units - b'0'))
}

/// A number written the way JSON or QBO writes one (`-12`, `300.00`, `.5`, `1e3`), as its
/// sign, integer digits (no leading zeros) and fraction digits (no trailing zeros) when it
/// has no exponent, so that long Ids (`5000000000000503624`) and amounts compare exactly.
/// `inf`, `NaN` and other words Rust's float parser accepts are not numbers here.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Number<'a> {
    Exact {
        negative: bool,
        int: &'a str,
        frac: &'a str,
    },
    /// With an exponent: compared as `f64`.
    Float(f64),
}

impl<'a> Number<'a> {
    fn parse(s: &'a str) -> Option<Self> {
        let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
        let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if (!int.is_empty() || !frac.is_empty()) && digits(int) && digits(frac) {
            let int = int.trim_start_matches('0');
            let frac = frac.trim_end_matches('0');
            return Some(Number::Exact {
                negative: s.starts_with('-') && !(int.is_empty() && frac.is_empty()),
                int,
                frac,
            });
        }
        let float_shaped = s.bytes().any(|b| b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
        if float_shaped {
            s.parse().ok().map(Number::Float)
        } else {
            None
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Number::Float(f) => f,
            Number::Exact {
                negative,
                int,
                frac,
            } => {
                let magnitude: f64 = format!("0{int}.{frac}0").parse().unwrap_or(f64::NAN);
                if negative { -magnitude } else { magnitude }
            }
        }
    }

    fn cmp(self, other: Number<'_>) -> Ordering {
        match (self, other) {
            (
                Number::Exact {
                    negative: an,
                    int: ai,
                    frac: af,
                },
                Number::Exact {
                    negative: bn,
                    int: bi,
                    frac: bf,
                },
            ) => {
                let magnitude = ai.len().cmp(&bi.len()).then(ai.cmp(bi)).then(af.cmp(bf));
                match (an, bn) {
                    (false, false) => magnitude,
                    (true, true) => magnitude.reverse(),
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                }
            }
            _ => self.as_f64().total_cmp(&other.as_f64()),
        }
    }
}

/// Whether `s` reads as a number, and which.
fn parse_number(s: &str) -> Option<Number<'_>> {
    Number::parse(s)
}

/// The number a record value stands for: a JSON number (its exact text, thanks to
/// `arbitrary_precision`), or a string that reads as one.
fn value_number(value: &Value) -> Option<Number<'_>> {
    match value {
        Value::Number(n) => Number::parse(n.as_str()),
        Value::String(s) => parse_number(s),
        _ => None,
    }
}

/// Case-insensitive (Unicode lower-case) text comparison.
fn cmp_text_ignore_case(a: &str, b: &str) -> Ordering {
    a.chars()
        .flat_map(char::to_lowercase)
        .cmp(b.chars().flat_map(char::to_lowercase))
}

/// The value a comparison sees: a reference object's `value` when the literal is text.
fn operand<'a>(value: &'a Value, literal: &Literal) -> &'a Value {
    let text_literal = match literal {
        Literal::String(_) | Literal::Number(_) => true,
        Literal::List(items) => items
            .iter()
            .any(|item| matches!(item, Literal::String(_) | Literal::Number(_))),
        Literal::Bool(_) => false,
    };
    match value {
        Value::Object(_) if text_literal => lookup(value, "value").unwrap_or(value),
        _ => value,
    }
}

/// `value = literal` by the rules in the module doc.
fn equals(value: &Value, literal: &Literal) -> bool {
    match literal {
        Literal::Bool(b) => match value {
            Value::Bool(v) => v == b,
            Value::String(s) => s.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
            _ => false,
        },
        Literal::String(text) | Literal::Number(text) => match value {
            Value::String(s) => {
                if let (Some(a), Some(b)) = (parse_datetime(s), parse_datetime(text)) {
                    return a == b;
                }
                if let (Literal::Number(_), Some(a), Some(b)) =
                    (literal, parse_number(s), parse_number(text))
                {
                    return a.cmp(b).is_eq();
                }
                cmp_text_ignore_case(s, text).is_eq()
            }
            Value::Number(_) => value_number(value)
                .zip(parse_number(text))
                .is_some_and(|(a, b)| a.cmp(b).is_eq()),
            Value::Bool(b) => text.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
            _ => false,
        },
        Literal::List(items) => items.iter().any(|item| equals(value, item)),
    }
}

/// `value <=> literal` for `< <= > >=`, or `None` when they do not order.
fn compare(value: &Value, literal: &Literal) -> Option<Ordering> {
    let (Literal::String(text) | Literal::Number(text)) = literal else {
        return None;
    };
    if let Value::String(s) = value
        && let (Some(a), Some(b)) = (parse_datetime(s), parse_datetime(text))
    {
        return Some(a.cmp(&b));
    }
    if let (Some(a), Some(b)) = (value_number(value), parse_number(text)) {
        return Some(a.cmp(b));
    }
    match value {
        Value::String(s) => Some(cmp_text_ignore_case(s, text)),
        _ => None,
    }
}

/// `value LIKE pattern`: case-insensitive, `%` = any run of characters.
fn like(value: &Value, literal: &Literal) -> bool {
    let (Literal::String(pattern) | Literal::Number(pattern)) = literal else {
        return false;
    };
    let text = match value {
        Value::String(s) => s.to_lowercase(),
        Value::Number(n) => n.to_string(),
        _ => return false,
    };
    let pattern = pattern.to_lowercase();
    let mut parts = pattern.split('%');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = parts.collect();
    let Some((last, middle)) = middle.split_last() else {
        // No `%` at all: the whole text must equal the pattern.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

impl Condition {
    /// Whether `record` satisfies this condition (rules in the module doc).
    pub fn matches(&self, record: &Value) -> bool {
        let Some(value) = lookup(record, &self.field).filter(|v| !v.is_null()) else {
            return false;
        };
        let value = operand(value, &self.value);
        match self.op {
            Op::Eq | Op::In => equals(value, &self.value),
            Op::Ne => !equals(value, &self.value),
            Op::Lt => compare(value, &self.value).is_some_and(Ordering::is_lt),
            Op::Le => compare(value, &self.value).is_some_and(Ordering::is_le),
            Op::Gt => compare(value, &self.value).is_some_and(Ordering::is_gt),
            Op::Ge => compare(value, &self.value).is_some_and(Ordering::is_ge),
            Op::Like => like(value, &self.value),
        }
    }

    /// Whether this condition is on `path` (ASCII case-insensitive, whole path).
    pub fn is_on(&self, path: &str) -> bool {
        self.field.eq_ignore_ascii_case(path)
    }
}

impl Query {
    /// Whether `record` satisfies every `WHERE` condition (true when there are none).
    pub fn matches(&self, record: &Value) -> bool {
        self.conditions.iter().all(|c| c.matches(record))
    }

    /// Whether a `WHERE` condition is on property `name` (case-insensitive, whole path; the
    /// `ORDERBY` and `SELECT` lists do not count). The sandbox uses it to decide whether the
    /// default `Active = true` filter applies.
    pub fn mentions_field(&self, name: &str) -> bool {
        self.conditions.iter().any(|c| c.is_on(name))
    }

    /// The `WHERE` conditions on `path` (case-insensitive, whole path), in query order.
    pub fn field_conditions<'q>(&'q self, path: &'q str) -> impl Iterator<Item = &'q Condition> {
        self.conditions.iter().filter(move |c| c.is_on(path))
    }
}

impl OrderBy {
    /// How two records sort under this `ORDERBY`: [`compare_for_order`] on the field,
    /// reversed for `DESC`, with records lacking the field last in both directions.
    pub fn compare(&self, a: &Value, b: &Value) -> Ordering {
        let ordering = compare_for_order(a, b, &self.field);
        let a_missing = order_key(a, &self.field).is_none();
        let b_missing = order_key(b, &self.field).is_none();
        match (self.direction, a_missing || b_missing) {
            (Direction::Desc, false) => ordering.reverse(),
            _ => ordering,
        }
    }
}

/// The value `ORDERBY path` sorts on: the field, or a reference's `value`; `None` if missing.
fn order_key<'a>(record: &'a Value, path: &str) -> Option<&'a Value> {
    let value = lookup(record, path).filter(|v| !v.is_null())?;
    Some(match value {
        Value::Object(_) => lookup(value, "value").unwrap_or(value),
        _ => value,
    })
}

/// Ascending order of two records by `path` for `ORDERBY`: datetimes as instants, numbers
/// (JSON numbers or numeric strings) numerically, other strings case-sensitively, `false`
/// before `true`; records lacking the field (or holding `null`) last. Values of different
/// kinds order booleans, numbers, strings, then anything else.
pub fn compare_for_order(a: &Value, b: &Value, path: &str) -> Ordering {
    match (order_key(a, path), order_key(b, path)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => compare_values(a, b),
    }
}

fn compare_values(a: &Value, b: &Value) -> Ordering {
    if let (Value::String(x), Value::String(y)) = (a, b)
        && let (Some(x), Some(y)) = (parse_datetime(x), parse_datetime(y))
    {
        return x.cmp(&y);
    }
    if let (Some(x), Some(y)) = (value_number(a), value_number(b)) {
        return x.cmp(y);
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => kind_rank(a).cmp(&kind_rank(b)),
    }
}

fn kind_rank(value: &Value) -> u8 {
    match value {
        Value::Bool(_) => 0,
        Value::Number(_) => 1,
        Value::String(_) => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;
    use serde_json::json;

    fn customer() -> Value {
        serde_json::from_str(
            r#"{"Id":"5","DisplayName":"Amy's Bird Sanctuary","Active":true,"Balance":239.00,
                "CustomerRef":{"value":"12","name":"Dukes"},"TxnDate":"2015-10-08",
                "MetaData":{"CreateTime":"2015-10-08T13:28:29-07:00",
                            "LastUpdatedTime":"2015-10-08T13:28:29-07:00"}}"#,
        )
        .expect("fixture is valid JSON")
    }

    fn matches(where_clause: &str) -> bool {
        let q = parse(&format!("SELECT * FROM Customer WHERE {where_clause}"))
            .unwrap_or_else(|e| panic!("{where_clause}: {e}"));
        q.matches(&customer())
    }

    #[test]
    fn conditions() {
        let cases = [
            ("MetaData.LastUpdatedTime = '2015-10-08T20:28:29Z'", true),
            (
                "metadata.lastupdatedtime >= '2015-10-08T13:28:29-0700'",
                true,
            ),
            (
                "MetaData.LastUpdatedTime > '2015-10-08T13:28:29-07:00'",
                false,
            ),
            ("MetaData.LastUpdatedTime < '2015-10-09'", true),
            (
                "MetaData.LastUpdatedTime > '2015-10-08T20:28:28.999Z'",
                true,
            ),
            (
                "MetaData.LastUpdatedTime <= '2015-10-08T20:28:28.999+00:00'",
                false,
            ),
            ("MetaData.LastUpdatedTime > '2015-10-08T20:28:28'", true),
            ("TxnDate = '2015-10-08'", true),
            ("TxnDate < '2015-10-08T00:00:01Z'", true),
            ("DisplayName = 'amy\\'s bird sanctuary'", true),
            ("DisplayName != 'Amy\\'s Bird Sanctuary'", false),
            ("DisplayName != 'Bob'", true),
            ("DisplayName LIKE 'amy%'", true),
            ("DisplayName LIKE '%bird%'", true),
            ("DisplayName LIKE '%Sanctuary'", true),
            ("DisplayName LIKE 'Amy'", false),
            ("DisplayName LIKE '%Birds%'", false),
            ("Id IN ('4', '5')", true),
            ("Id IN ('4', '6')", false),
            ("Id = 5", true),
            ("Active = true", true),
            ("Active = FALSE", false),
            ("Active IN (true, false)", true),
            ("Balance > '200.00'", true),
            ("Balance = 239", true),
            ("Balance < 100", false),
            ("CustomerRef = '12'", true),
            ("CustomerRef IN ('1', '12')", true),
            ("CustomerRef = '5'", false),
            ("NoSuchField = 'x'", false),
            ("NoSuchField != 'x'", false),
            ("MetaData = 'x'", false),
        ];
        for (where_clause, expected) in cases {
            assert_eq!(matches(where_clause), expected, "{where_clause}");
        }
    }

    #[test]
    fn lookup_is_case_insensitive() {
        let record = customer();
        assert_eq!(
            lookup(&record, "metadata.lastupdatedtime"),
            Some(&json!("2015-10-08T13:28:29-07:00"))
        );
        assert_eq!(lookup(&record, "MetaData.Nope"), None);
        assert_eq!(lookup(&record, "Id.value"), None);
    }

    #[test]
    fn datetimes() {
        let instant = |s: &str| {
            parse_datetime(s).map(|d| (d.timestamp_millis(), d.offset().local_minus_utc()))
        };
        // 2015-10-08T20:28:29Z
        let t = 1_444_336_109_000;
        let cases = [
            ("2015-10-08T13:28:29-07:00", Some((t, -7 * 3600))),
            ("2015-10-08T13:28:29-0700", Some((t, -7 * 3600))),
            ("2015-10-08T13:28:29-07", Some((t, -7 * 3600))),
            ("2015-10-08T20:28:29Z", Some((t, 0))),
            ("2015-10-08T20:28:29z", Some((t, 0))),
            ("2015-10-08T20:28:29.000Z", Some((t, 0))),
            ("2015-10-08T20:28:29.000000Z", Some((t, 0))),
            ("2015-10-08T13:28:29.123-07:00", Some((t + 123, -7 * 3600))),
            ("2015-10-09T01:58:29+05:30", Some((t, 5 * 3600 + 1800))),
            ("2015-10-08T20:28:29", Some((t, 0))),
            ("2015-10-08T20:28", Some((t - 29_000, 0))),
            ("2015-10-08", Some((1_444_262_400_000, 0))),
            ("2015-10-08 20:28:29", None),
            ("2015-13-08", None),
            ("2015-10-08T25:00:00Z", None),
            ("2015-10-08T20:28:29+07:60", None),
            ("2015-10-08T20:28:29-7:00", None),
            ("2015-1-08", None),
            ("20151008", None),
            ("Amy's Bird Sanctuary", None),
            ("", None),
            ("2015-10-08T", None),
        ];
        for (text, expected) in cases {
            assert_eq!(instant(text), expected, "{text}");
        }
    }

    /// A UTC offset holding non-ASCII characters used to be split at a byte that is not a
    /// character boundary (`str::split_at` panics there): it must read as "not a datetime".
    #[test]
    fn non_ascii_offsets_are_rejected_without_panicking() {
        let cases = [
            // Four bytes after the sign, byte 2 inside a character: the old `split_at(2)`.
            "2015-10-08T13:28:29+0\u{2212}",
            "2015-10-08T13:28:29-\u{2212}0",
            "2015-10-08T13:28:29-0é0",
            "2015-10-08T13:28:29+😀",
            "2015-10-08T13:28:29-é:0",
            // The shapes of the report: five or more bytes after the sign.
            "2015-10-08T13:28:29-0é:00",
            "2015-10-08T13:28:29+0\u{2212}00",
            "2015-10-08T13:28:29+07\u{2236}00",
            "2015-10-08T13:28:29-０７:００",
            "2015-10-08T13:28:29+é",
            "2015-10-08T13:28:29-\u{2212}",
            // Non-ASCII elsewhere in the time.
            "2015-10-08T13:28:2é-07:00",
            "2015-10-08Té",
            "2015-10-08T😀Z",
        ];
        for text in cases {
            let parsed = std::panic::catch_unwind(|| parse_datetime(text));
            assert!(
                matches!(parsed, Ok(None)),
                "{text:?}: {parsed:?} (expected Ok(None))"
            );
        }
        // A condition whose record holds such a value evaluates instead of panicking.
        let record = json!({"MetaData": {"LastUpdatedTime": "2015-10-08T13:28:29+0\u{2212}"}});
        let q = parse("SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime > '2015-10-01'")
            .expect("valid query");
        let matched = std::panic::catch_unwind(|| q.matches(&record));
        assert!(matches!(matched, Ok(true)), "compared as text: {matched:?}");
    }

    #[test]
    fn numbers_keep_arbitrary_precision_and_compare_numerically() {
        // The workspace enables `arbitrary_precision`: `100.00` stays `100.00` as text.
        let record: Value =
            serde_json::from_str(r#"{"Amount":100.00,"Big":12345678901234567890.5,"Text":"9"}"#)
                .expect("valid JSON");
        let holds = |clause: &str| {
            parse(&format!("SELECT * FROM Invoice WHERE {clause}"))
                .expect("valid query")
                .matches(&record)
        };
        assert!(holds("Amount = 100"));
        assert!(holds("Amount = '100.0'"));
        assert!(holds("Amount >= 100.00"));
        assert!(!holds("Amount > '100'"));
        assert!(holds("Big > 12345678901234567000"));
        assert!(holds("Text < '10'"), "numeric strings order as numbers");
        assert!(holds("Text = '9'"));
        assert!(!holds("Text = '9.0'"), "quoted text compares as text for =");
        assert!(
            holds("Text = 9.0"),
            "an unquoted number compares numerically"
        );
        assert!(holds("Amount LIKE '100%'"));
        assert!(!holds("Big > 12345678901234567890.5"));
        assert!(holds("Big < 12345678901234567890.51"));
        assert!(holds("Big = 012345678901234567890.500"));
        assert!(holds("Amount > -100.5"));
        assert!(holds("Amount > '1e1'"));
        assert!(!holds("Amount > '1e3'"));
    }

    #[test]
    fn edge_values() {
        let record = json!({
            "Active": "TRUE", "Name": "Café Ünïcode", "Tags": ["a", "b"], "Empty": null,
            "Line": [{"Amount": 5}], "Nan": "NaN", "Inf": "inf"
        });
        let holds = |clause: &str| {
            parse(&format!("SELECT * FROM Item WHERE {clause}"))
                .expect("valid query")
                .matches(&record)
        };
        assert!(holds("Active = true"), "boolean strings equal booleans");
        assert!(!holds("Active < true"), "booleans never order");
        assert!(holds("Name = 'CAFÉ üNÏCODE'"), "Unicode case folding");
        assert!(holds("Name LIKE 'caf%code'"));
        assert!(holds("Name LIKE '%'"));
        assert!(holds("Name LIKE '%%'"));
        assert!(!holds("Name LIKE 'Café'"), "no % means whole-text equality");
        assert!(holds("Name LIKE 'café ünïcode'"));
        assert!(!holds("Name LIKE '%é%é%'"));
        assert!(holds("Name LIKE 'C%f%Ü%'"));
        assert!(!holds("Name LIKE 'C_fé%'"), "_ is not a wildcard");
        assert!(!holds("Tags = 'a'"), "arrays match nothing");
        assert!(!holds("Line.Amount = 5"));
        assert!(!holds("Empty = 'x'"));
        assert!(!holds("Empty != 'x'"), "null behaves like missing");
        assert!(
            holds("Nan > 1"),
            "NaN is text here, and 'nan' > '1' as text"
        );
        assert!(!holds("Nan = 'NaN0'"));
        assert!(holds("Inf > 'hello'"), "inf compares as text");
    }

    #[test]
    fn query_helpers() {
        let q = parse(
            "SELECT * FROM Customer WHERE active IN (true, false) AND MetaData.LastUpdatedTime \
             >= '2015-10-01' AND metadata.lastupdatedtime < '2015-11-01' ORDERBY Active",
        )
        .expect("valid query");
        assert!(q.mentions_field("Active"));
        assert!(q.mentions_field("ACTIVE"));
        assert!(!q.mentions_field("MetaData"), "whole paths only");
        assert!(!q.mentions_field("DisplayName"));
        let window: Vec<Op> = q
            .field_conditions("MetaData.LastUpdatedTime")
            .map(|c| c.op)
            .collect();
        assert_eq!(window, [Op::Ge, Op::Lt]);
        assert!(q.matches(&customer()));
        let inactive =
            json!({"Active": false, "MetaData": {"LastUpdatedTime": "2015-11-01T00:00:00Z"}});
        assert!(!q.matches(&inactive), "the window's end is exclusive");
        let everything = parse("SELECT * FROM Customer").expect("valid query");
        assert!(everything.matches(&json!({})));
    }

    #[test]
    fn ordering() {
        let rows = [
            json!({"Id": "10", "Name": "b", "T": "2015-10-08T13:28:29-07:00", "Ref": {"value": "2"}}),
            json!({"Id": "9", "Name": "B", "T": "2015-10-08T20:28:30Z", "Ref": {"value": "10"}}),
            json!({"Id": "11", "Name": "a"}),
            json!({"Id": "1", "Name": null, "T": "2015-10-08T20:00:00Z", "Ref": {"value": "1"}}),
        ];
        let sorted_ids = |field: &str, direction| {
            let order = OrderBy {
                field: field.to_owned(),
                direction,
            };
            let mut sorted = rows.to_vec();
            sorted.sort_by(|a, b| order.compare(a, b));
            sorted
                .iter()
                .map(|r| r["Id"].as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(sorted_ids("Id", Direction::Asc), ["1", "9", "10", "11"]);
        assert_eq!(sorted_ids("id", Direction::Desc), ["11", "10", "9", "1"]);
        assert_eq!(sorted_ids("Name", Direction::Asc), ["9", "11", "10", "1"]);
        assert_eq!(sorted_ids("Name", Direction::Desc), ["10", "11", "9", "1"]);
        assert_eq!(sorted_ids("t", Direction::Asc), ["1", "10", "9", "11"]);
        assert_eq!(sorted_ids("T", Direction::Desc), ["9", "10", "1", "11"]);
        assert_eq!(sorted_ids("Ref", Direction::Asc), ["1", "10", "9", "11"]);
        assert_eq!(
            compare_for_order(&rows[2], &rows[0], "T"),
            Ordering::Greater,
            "missing sorts last"
        );
        assert_eq!(
            compare_for_order(&json!({}), &json!({}), "T"),
            Ordering::Equal
        );
        assert_eq!(
            compare_for_order(&json!({"A": true}), &json!({"A": "x"}), "A"),
            Ordering::Less
        );
    }
}

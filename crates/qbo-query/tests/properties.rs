//! Property tests: the query parser and the datetime parser are total (they return, never
//! panic, whatever text arrives from the network), printing round-trips, and evaluation never
//! panics on the records QBO (or anyone) sends.
//!
//! Bounds, so the suite stays fast (about a second in a debug build) and deterministic in CI:
//! each property runs `CASES` cases from a fixed seed, so every run tries the same inputs.
//! Override with the environment for a longer, fresh exploration, e.g.
//! `PROPTEST_CASES=100000 PROPTEST_RNG_SEED=$RANDOM cargo test -p qbo-query --test properties`.
//! A failure is shrunk to a minimal input, printed, and saved in
//! `tests/properties.proptest-regressions`; commit that file with the fix, and the case is
//! replayed first on every later run.

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::RngSeed;
use qbo_query::{
    Condition, Direction, Literal, Op, OrderBy, ParseError, Query, Select, compare_for_order,
    parse, parse_datetime,
};
use serde_json::{Value, json};

const CASES: u32 = 2000;
const SEED: u64 = 0x0b0_5eed;

/// `cases` cases from the fixed seed, unless `PROPTEST_CASES` / `PROPTEST_RNG_SEED` say
/// otherwise (`ProptestConfig::default()` reads every `PROPTEST_*` variable).
fn config(cases: u32) -> ProptestConfig {
    let from_env = ProptestConfig::default();
    let set = |name: &str| std::env::var_os(name).is_some();
    ProptestConfig {
        cases: if set("PROPTEST_CASES") {
            from_env.cases
        } else {
            cases
        },
        rng_seed: if set("PROPTEST_RNG_SEED") {
            from_env.rng_seed
        } else {
            RngSeed::Fixed(SEED)
        },
        ..from_env
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies: characters and tokens.

/// Characters that sit on the parsers' decision points, and multi-byte look-alikes of them
/// (MINUS SIGN, RATIO, full-width digits and quote, Arabic-Indic digits), plus any character.
fn interesting_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => select(vec![
            '0', '1', '2', '5', '9', '-', '+', ':', '.', 'T', 't', 'Z', 'z', ' ', '\t', '\n',
            '\r', '\'', '\\', '(', ')', ',', '=', '!', '<', '>', '%', '*', '"', ';', '_', 'a',
        ]),
        2 => select(vec![
            'é', 'ü', '\u{2212}', '\u{2236}', '\u{ff10}', '\u{ff07}', '\u{0661}', '😀', '\u{0}',
            '\u{feff}', '\u{301}', '\u{10ffff}',
        ]),
        1 => any::<char>(),
    ]
}

fn arbitrary_text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter),
        proptest::collection::vec(interesting_char(), 0..max).prop_map(String::from_iter),
    ]
}

const KEYWORDS: [&str; 16] = [
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "IN",
    "LIKE",
    "ORDERBY",
    "ORDER",
    "BY",
    "ASC",
    "DESC",
    "STARTPOSITION",
    "MAXRESULTS",
    "TRUE",
    "FALSE",
    "COUNT",
];

/// `word` in a letter case chosen by `mask` (bit i: upper-case letter i).
fn recase(word: &str, mask: u64) -> String {
    word.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn keyword() -> impl Strategy<Value = String> {
    (select(KEYWORDS.to_vec()), any::<u64>()).prop_map(|(k, mask)| recase(k, mask))
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// A property path the lexer reads as one `IDENTIFIER` (never a keyword).
fn identifier() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "Customer",
            "Invoice",
            "Id",
            "Active",
            "DisplayName",
            "MetaData.LastUpdatedTime",
            "metadata.createtime",
            "CustomerRef",
            "TotalAmt",
            "OR",
            "Description",
            "Order.By",
            "_x",
        ])
        .prop_map(str::to_owned),
        "[A-Za-z_][A-Za-z0-9_]{0,8}(\\.[A-Za-z_][A-Za-z0-9_]{0,6}){0,2}",
    ]
    .prop_filter("a keyword is not an identifier", |word| !is_keyword(word))
}

/// `-?[0-9]+(.[0-9]+)?`, up to 30 digits (past `u64` and `f64` precision).
fn number_text() -> impl Strategy<Value = String> {
    "-?[0-9]{1,30}(\\.[0-9]{1,12})?"
}

/// A `'...'` literal as the printer writes it (`'` and `\` escaped).
fn quoted(text: &str) -> String {
    Literal::String(text.to_owned()).to_string()
}

/// One token's text, valid or not: keywords, identifiers, strings (closed, unterminated,
/// with escapes), numbers, operators, stray characters, datetimes, well-formed fragments.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => keyword(),
        3 => identifier(),
        2 => arbitrary_text(12).prop_map(|t| quoted(&t)),
        1 => arbitrary_text(12).prop_map(|t| format!("'{t}")),
        1 => "'[a-z\\\\']{0,6}'?",
        3 => prop_oneof![number_text(), "[0-9]{18,24}"],
        4 => fragment(),
        3 => select(vec![
            "*", ",", "(", ")", "=", "!=", "<", "<=", ">", ">=", "<>", "!", "-", ".", "'", "\"",
            ";", "#", "OR", "NOT", "COUNT(*)", "ORDER BY", "IN (",
        ])
        .prop_map(str::to_owned),
        1 => interesting_char().prop_map(String::from),
        1 => valid_datetime().prop_map(|(text, _)| quoted(&text)),
    ]
}

/// A well-formed piece of a query: a condition, `AND` and a condition, an order, paging.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        condition().prop_map(|c| c.to_string()),
        condition().prop_map(|c| format!("AND {c}")),
        (identifier(), select(vec!["", " ASC", " desc"]))
            .prop_map(|(field, dir)| format!("ORDERBY {field}{dir}")),
        (select(vec!["STARTPOSITION", "maxresults"]), any::<u32>())
            .prop_map(|(word, n)| format!("{word} {n}")),
    ]
}

fn separator() -> impl Strategy<Value = &'static str> {
    select(vec![
        " ", " ", " ", "", "\t", "\n", "\r\n", "\r", "  ", "\u{c}",
    ])
}

/// Token soup, often after a valid query head so that later grammar rules are reached.
fn token_soup() -> impl Strategy<Value = String> {
    let head = select(vec![
        "",
        "SELECT ",
        "SELECT * FROM Customer ",
        "SELECT * FROM Customer WHERE ",
        "SELECT COUNT(*) FROM Invoice WHERE Id IN (",
        "select * from Invoice where MetaData.LastUpdatedTime >= ",
        "SELECT * FROM Customer WHERE Active = true ",
        "SELECT * FROM Customer ORDERBY ",
        "SELECT * FROM Customer MAXRESULTS ",
    ]);
    (
        head,
        proptest::collection::vec((token(), separator()), 0..12),
    )
        .prop_map(|(head, tokens)| {
            let mut text = head.to_owned();
            for (token, separator) in tokens {
                text.push_str(&token);
                text.push_str(separator);
            }
            text
        })
}

// ---------------------------------------------------------------------------------------------
// Strategies: query trees the parser can produce.

fn value_literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        3 => arbitrary_text(16).prop_map(Literal::String),
        1 => valid_datetime().prop_map(|(text, _)| Literal::String(text)),
        2 => number_text().prop_map(Literal::Number),
        1 => any::<bool>().prop_map(Literal::Bool),
    ]
}

fn condition() -> impl Strategy<Value = Condition> {
    let op = select(vec![
        Op::Eq,
        Op::Lt,
        Op::Gt,
        Op::Le,
        Op::Ge,
        Op::Ne,
        Op::In,
        Op::Like,
    ]);
    (
        identifier(),
        op,
        value_literal(),
        proptest::collection::vec(value_literal(), 1..5),
    )
        .prop_map(|(field, op, value, list)| Condition {
            field,
            op,
            value: if op == Op::In {
                Literal::List(list)
            } else {
                value
            },
        })
}

fn query_tree() -> impl Strategy<Value = Query> {
    let select = prop_oneof![
        Just(Select::Count),
        proptest::collection::vec(identifier(), 0..3).prop_map(|extra| Select::All { extra }),
    ];
    let order_by =
        proptest::option::of(
            (identifier(), any::<bool>()).prop_map(|(field, desc)| OrderBy {
                field,
                direction: if desc {
                    Direction::Desc
                } else {
                    Direction::Asc
                },
            }),
        );
    (
        select,
        identifier(),
        proptest::collection::vec(condition(), 0..5),
        order_by,
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(select, entity, conditions, order_by, start_position, max_results)| Query {
                select,
                entity,
                conditions,
                order_by,
                start_position,
                max_results,
            },
        )
}

/// `q` written the way a person might: keywords in any case, `ORDER BY` or `ORDERBY`, no
/// `ASC`, `MAXRESULTS` before `STARTPOSITION`, any whitespace, none around punctuation.
/// Every choice is read from `style`.
fn loose_text(q: &Query, style: &[u8]) -> String {
    let mut choices = style.iter().copied().cycle();
    let mut next = move || u64::from(choices.next().unwrap_or(0));
    let mut out = String::new();
    let space = |out: &mut String, next: &mut dyn FnMut() -> u64, optional: bool| {
        let pick = next() % 6;
        out.push_str(match pick {
            0 if optional => "",
            0..=2 => " ",
            3 => "\t",
            4 => "\r\n",
            _ => "  \n ",
        });
    };
    let kw = |word: &str, next: &mut dyn FnMut() -> u64| recase(word, next() * 0x9e37_79b9);
    out.push_str(&kw("SELECT", &mut next));
    space(&mut out, &mut next, false);
    match &q.select {
        Select::Count => {
            out.push_str(&kw("COUNT", &mut next));
            space(&mut out, &mut next, true);
            out.push('(');
            space(&mut out, &mut next, true);
            out.push('*');
            space(&mut out, &mut next, true);
            out.push(')');
        }
        Select::All { extra } => {
            out.push('*');
            for name in extra {
                space(&mut out, &mut next, true);
                out.push(',');
                space(&mut out, &mut next, true);
                out.push_str(name);
            }
        }
    }
    space(&mut out, &mut next, false);
    out.push_str(&kw("FROM", &mut next));
    space(&mut out, &mut next, false);
    out.push_str(&q.entity);
    for (i, c) in q.conditions.iter().enumerate() {
        space(&mut out, &mut next, false);
        out.push_str(&kw(if i == 0 { "WHERE" } else { "AND" }, &mut next));
        space(&mut out, &mut next, false);
        out.push_str(&c.field);
        let word_op = matches!(c.op, Op::In | Op::Like);
        space(&mut out, &mut next, !word_op);
        out.push_str(&kw(&c.op.to_string(), &mut next));
        match &c.value {
            Literal::List(items) => {
                space(&mut out, &mut next, true);
                out.push('(');
                for (j, item) in items.iter().enumerate() {
                    space(&mut out, &mut next, true);
                    if j > 0 {
                        out.push(',');
                        space(&mut out, &mut next, true);
                    }
                    out.push_str(&loose_literal(item, &mut next));
                }
                space(&mut out, &mut next, true);
                out.push(')');
            }
            value => {
                // `LIKE` needs a separator before its value; a symbol does not (`Id='5'`,
                // `Amount<-1`, `Active=true`).
                space(&mut out, &mut next, !word_op);
                out.push_str(&loose_literal(value, &mut next));
            }
        }
    }
    if let Some(order) = &q.order_by {
        space(&mut out, &mut next, false);
        if next() % 2 == 0 {
            out.push_str(&kw("ORDERBY", &mut next));
        } else {
            out.push_str(&kw("ORDER", &mut next));
            space(&mut out, &mut next, false);
            out.push_str(&kw("BY", &mut next));
        }
        space(&mut out, &mut next, false);
        out.push_str(&order.field);
        if order.direction == Direction::Desc || next() % 2 == 0 {
            space(&mut out, &mut next, false);
            out.push_str(&kw(&order.direction.to_string(), &mut next));
        }
    }
    let start = q.start_position.map(|n| ("STARTPOSITION", n));
    let max = q.max_results.map(|n| ("MAXRESULTS", n));
    let paging = if start.is_some() && max.is_some() && next() % 2 == 0 {
        [max, start]
    } else {
        [start, max]
    };
    for (word, n) in paging.into_iter().flatten() {
        space(&mut out, &mut next, false);
        out.push_str(&kw(word, &mut next));
        space(&mut out, &mut next, false);
        out.push_str(&n.to_string());
    }
    if next() % 3 == 0 {
        space(&mut out, &mut next, false);
    }
    out
}

fn loose_literal(literal: &Literal, next: &mut dyn FnMut() -> u64) -> String {
    match literal {
        Literal::Bool(b) => recase(if *b { "true" } else { "false" }, next()),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies: datetimes.

/// A datetime in one of the documented forms, and the instant it stands for.
fn valid_datetime() -> impl Strategy<Value = (String, DateTime<FixedOffset>)> {
    let date = (0i32..=9999, 1u32..=12, 1u32..=31)
        .prop_filter_map("a real day", |(y, m, d)| NaiveDate::from_ymd_opt(y, m, d));
    let zone = prop_oneof![
        Just(None),
        (any::<bool>(), 0i32..=23, 0i32..=59, 0u8..6).prop_map(Some),
    ];
    (
        date,
        0u32..24,
        0u32..60,
        0u32..60,
        proptest::option::of("[0-9]{1,9}"),
        0u8..4,
        zone,
    )
        .prop_map(|(date, h, mi, s, frac, shape, zone)| {
            let day = date.format("%Y-%m-%d").to_string();
            if shape == 0 {
                let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
                let utc = FixedOffset::east_opt(0).expect("UTC");
                let instant = utc.from_local_datetime(&midnight).single();
                return (day, instant.expect("UTC has no gaps"));
            }
            let (time, nanos) = match (shape, &frac) {
                (1, _) => (format!("{h:02}:{mi:02}"), 0),
                (_, Some(frac)) => {
                    let nanos: u32 = format!("{frac:0<9}").parse().expect("nine digits");
                    (format!("{h:02}:{mi:02}:{s:02}.{frac}"), nanos)
                }
                (_, None) => (format!("{h:02}:{mi:02}:{s:02}"), 0),
            };
            let seconds = if shape == 1 { 0 } else { s };
            let local = date
                .and_hms_nano_opt(h, mi, seconds, nanos)
                .expect("valid time");
            let (suffix, offset) = match zone {
                None => (String::new(), 0),
                Some((east, hh, mm, form)) => {
                    let sign = if east { '+' } else { '-' };
                    let signed = |secs: i32| if east { secs } else { -secs };
                    match form {
                        0 => ("Z".to_owned(), 0),
                        1 => ("z".to_owned(), 0),
                        2 => (format!("{sign}{hh:02}"), signed(hh * 3600)),
                        3 => (format!("{sign}{hh:02}{mm:02}"), signed(hh * 3600 + mm * 60)),
                        _ => (
                            format!("{sign}{hh:02}:{mm:02}"),
                            signed(hh * 3600 + mm * 60),
                        ),
                    }
                }
            };
            let offset = FixedOffset::east_opt(offset).expect("offset within a day");
            let instant = offset.from_local_datetime(&local).single();
            (
                format!("{day}T{time}{suffix}"),
                instant.expect("a fixed offset has no gaps"),
            )
        })
}

/// Where an edit applies: anywhere, or counted from the end (where the time and the UTC
/// offset are, so that edits land there more often than a uniform choice would make them).
#[derive(Debug, Clone)]
enum At {
    Anywhere(Index),
    FromEnd(usize),
}

impl At {
    /// A position in `0..len` (`len` > 0).
    fn of(&self, len: usize) -> usize {
        match self {
            At::Anywhere(index) => index.index(len),
            At::FromEnd(back) => len - 1 - back.min(&(len - 1)),
        }
    }
}

fn at() -> impl Strategy<Value = At> {
    prop_oneof![
        any::<Index>().prop_map(At::Anywhere),
        (0usize..8).prop_map(At::FromEnd),
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Replace(At, char),
    Insert(At, char),
    Delete(At),
    Truncate(At),
    Swap(At, At),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (at(), interesting_char()).prop_map(|(at, c)| Edit::Replace(at, c)),
        2 => (at(), interesting_char()).prop_map(|(at, c)| Edit::Insert(at, c)),
        2 => at().prop_map(Edit::Delete),
        1 => at().prop_map(Edit::Truncate),
        1 => (at(), at()).prop_map(|(a, b)| Edit::Swap(a, b)),
    ]
}

/// `text` after `edits`, applied to its characters (a `&str` is always valid UTF-8).
fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        let len = chars.len();
        match edit {
            Edit::Replace(at, c) if len > 0 => chars[at.of(len)] = *c,
            Edit::Insert(at, c) => chars.insert(at.of(len + 1), *c),
            Edit::Delete(at) if len > 0 => {
                chars.remove(at.of(len));
            }
            Edit::Truncate(at) => chars.truncate(at.of(len + 1)),
            Edit::Swap(a, b) if len > 0 => chars.swap(a.of(len), b.of(len)),
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// What "round-trips sensibly" means for an accepted datetime `text` read as `instant`:
/// printed as RFC 3339 it reads back as the same instant with the same offset, and the day
/// written at the start of `text` is the instant's local day (an offset never moves the date
/// that was written).
fn check_accepted(text: &str, instant: DateTime<FixedOffset>) -> Result<(), TestCaseError> {
    let printed = instant.to_rfc3339();
    let again = parse_datetime(&printed);
    prop_assert_eq!(again, Some(instant), "{:?} printed as {:?}", text, printed);
    prop_assert_eq!(
        again.map(|d| d.offset().local_minus_utc()),
        Some(instant.offset().local_minus_utc())
    );
    prop_assert_eq!(
        instant.format("%Y-%m-%d").to_string(),
        text.get(..10).unwrap_or_default(),
        "{:?}",
        text
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Records for evaluation.

fn record_value() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        3 => arbitrary_text(16).prop_map(Value::String),
        3 => (valid_datetime(), proptest::collection::vec(edit(), 0..3))
            .prop_map(|((text, _), edits)| Value::String(mutate(&text, &edits))),
        2 => "-?[0-9]{1,25}(\\.[0-9]{1,10})?([eE][+-]?[0-9]{1,3})?".prop_map(|n| {
            serde_json::from_str::<Value>(&n).unwrap_or(Value::String(n))
        }),
        1 => number_text().prop_map(Value::String),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
    ];
    prop_oneof![
        6 => scalar.clone(),
        1 => scalar.clone().prop_map(|v| json!({"value": v, "name": "x"})),
        1 => proptest::collection::vec(scalar, 0..3).prop_map(Value::Array),
    ]
}

/// A record holding `value` at `path` (nested objects for a dotted path).
fn record_at(path: &str, value: Value) -> Value {
    path.rsplit('.').fold(value, |inner, segment| {
        Value::Object(serde_json::Map::from_iter([(segment.to_owned(), inner)]))
    })
}

// ---------------------------------------------------------------------------------------------
// Properties.

fn check_error(text: &str, error: &ParseError) -> Result<(), TestCaseError> {
    use qbo_query::Found;
    prop_assert!(error.offset <= text.len(), "{:?}: {:?}", text, error);
    prop_assert!(
        text.is_char_boundary(error.offset),
        "{:?}: {:?}",
        text,
        error
    );
    prop_assert!(error.line >= 1, "{:?}: {:?}", text, error);
    let rest = &text[error.offset..];
    match &error.found {
        Found::Token { text: token, .. } => prop_assert!(rest.starts_with(token.as_str())),
        Found::Char(c) => prop_assert!(rest.starts_with(*c), "{:?}: {:?}", text, error),
        Found::Eof => prop_assert_eq!(error.offset, text.len()),
    }
    prop_assert!(!error.to_string().is_empty());
    prop_assert!(error.qbo_detail().starts_with("QueryParserError: "));
    Ok(())
}

/// `parse` on `text`: an error that points into `text`, or a tree that prints to text
/// parsing back to the same tree.
fn check_parse(text: &str) -> Result<(), TestCaseError> {
    match parse(text) {
        Ok(q) => {
            let printed = q.to_string();
            prop_assert_eq!(
                parse(&printed),
                Ok(q),
                "{:?} printed as {:?}",
                text,
                printed
            );
        }
        Err(error) => check_error(text, &error)?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CASES))]

    /// (a) Any text at all: `parse` returns.
    #[test]
    fn parse_is_total_on_arbitrary_text(text in arbitrary_text(200)) {
        check_parse(&text)?;
    }

    /// (a) Sequences of grammar tokens (valid and broken), mostly after a valid query head.
    #[test]
    fn parse_is_total_on_token_soup(text in token_soup()) {
        check_parse(&text)?;
    }

    /// (a) Valid queries (canonical or loosely written) with one to four character edits:
    /// every grammar rule is reached, and broken at every point.
    #[test]
    fn parse_is_total_on_mutated_queries(
        q in query_tree(),
        style in proptest::collection::vec(any::<u8>(), 0..32),
        edits in proptest::collection::vec(edit(), 1..5),
    ) {
        let text = if style.is_empty() { q.to_string() } else { loose_text(&q, &style) };
        check_parse(&mutate(&text, &edits))?;
    }

    /// (b) Any text at all: `parse_datetime` returns, and what it accepts round-trips.
    #[test]
    fn parse_datetime_is_total_on_arbitrary_text(text in arbitrary_text(40)) {
        if let Some(instant) = parse_datetime(&text) {
            check_accepted(&text, instant)?;
        }
    }

    /// (b) A valid date and `T`, then anything (reaches the time and offset parsers).
    #[test]
    fn parse_datetime_is_total_after_a_valid_date(
        head in select(vec!["2015-10-08T", "2015-10-08T13:28:29", "2015-10-08T13:28:29-",
                            "2015-10-08T13:28:29+0", "0000-01-01t", "9999-12-31T23:59:59.9"]),
        tail in arbitrary_text(10),
    ) {
        let text = format!("{head}{tail}");
        if let Some(instant) = parse_datetime(&text) {
            check_accepted(&text, instant)?;
        }
    }

    /// (b) Every documented form is read as the instant it writes.
    #[test]
    fn parse_datetime_reads_every_documented_form((text, instant) in valid_datetime()) {
        let parsed = parse_datetime(&text);
        prop_assert_eq!(parsed, Some(instant), "{:?}", text);
        prop_assert_eq!(
            parsed.map(|d| d.offset().local_minus_utc()),
            Some(instant.offset().local_minus_utc())
        );
        check_accepted(&text, instant)?;
    }

    /// (b) Valid timestamps with one to four character edits (non-ASCII look-alikes of digits
    /// and signs included): `parse_datetime` returns, and what it accepts round-trips.
    #[test]
    fn parse_datetime_is_total_on_mutated_timestamps(
        (text, _) in valid_datetime(),
        edits in proptest::collection::vec(edit(), 1..5),
    ) {
        let mutated = mutate(&text, &edits);
        if let Some(instant) = parse_datetime(&mutated) {
            check_accepted(&mutated, instant)?;
        }
    }

    /// (c) Every tree the parser can produce prints to canonical text that parses back to it,
    /// and printing is a fixed point.
    #[test]
    fn printed_trees_parse_back(q in query_tree()) {
        let printed = q.to_string();
        let parsed = parse(&printed);
        prop_assert_eq!(parsed.as_ref(), Ok(&q), "{}", printed);
        prop_assert_eq!(parsed.map(|p| p.to_string()), Ok(printed));
    }

    /// (c) The same trees written loosely (any keyword case, any whitespace, `ORDER BY`,
    /// implicit `ASC`, paging in either order) parse to the tree, and print canonically.
    #[test]
    fn loosely_written_queries_parse_to_their_tree(
        q in query_tree(),
        style in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let text = loose_text(&q, &style);
        prop_assert_eq!(parse(&text), Ok(q.clone()), "{:?}", text);
    }

    /// Evaluation is total too: any parsed condition against a record holding any value
    /// (mutated datetimes, huge or exponent numbers, references, arrays, null) returns, `!=`
    /// is the negation of `=` on a present value, and ordering is a total order's comparison.
    #[test]
    fn evaluation_is_total(
        condition in condition(),
        value in record_value(),
        other in record_value(),
        desc in any::<bool>(),
    ) {
        let record = record_at(&condition.field, value.clone());
        let matched = condition.matches(&record);
        if !value.is_null() && matches!(condition.op, Op::Eq | Op::Ne) {
            let flipped = Condition {
                op: if condition.op == Op::Eq { Op::Ne } else { Op::Eq },
                ..condition.clone()
            };
            prop_assert_eq!(flipped.matches(&record), !matched);
        }
        let other = record_at(&condition.field, other);
        let order = OrderBy {
            field: condition.field.clone(),
            direction: if desc { Direction::Desc } else { Direction::Asc },
        };
        let forward = order.compare(&record, &other);
        prop_assert_eq!(order.compare(&other, &record), forward.reverse());
        prop_assert_eq!(
            compare_for_order(&record, &record, &condition.field),
            std::cmp::Ordering::Equal
        );
    }
}

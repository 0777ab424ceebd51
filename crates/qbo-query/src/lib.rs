//! The QuickBooks Online query language, as real QBO accepts it (see `GRAMMAR.md`).
//!
//! # Layout
//! - [`ast`]: the syntax tree ([`Query`], [`Condition`], [`Literal`], ...) and its printer
//!   (`Display` gives canonical QBO text that parses back to the same tree).
//! - [`lexer`]: text → tokens, and QBO's JavaCC-style line/column of a byte offset.
//! - [`parser`]: tokens → [`Query`] by recursive descent ([`parse`]); [`ParseError`] points at
//!   the offending token, lists what was expected, and renders QBO's own fault detail
//!   ([`ParseError::qbo_detail`]).
//! - [`eval`]: does a JSON record satisfy a condition ([`Condition::matches`],
//!   [`Query::matches`]); datetimes compared as instants ([`parse_datetime`]); `ORDERBY`
//!   ordering ([`compare_for_order`], [`OrderBy::compare`]).
//!
//! No I/O: used by the sandbox (to answer queries) and by the pipeline (to build them).
//!
//! # Totality
//! [`parse`] and [`parse_datetime`] never panic, whatever text they are given (it comes from
//! the network): they return an error or `None`. Matching and ordering records never panic
//! either. `tests/properties.rs` checks this with property tests (arbitrary and grammar-built
//! inputs, mutated valid queries and timestamps), and that printed queries parse back to the
//! same tree; see `GRAMMAR.md`, "Totality".

pub mod ast;
pub mod eval;
pub mod lexer;
pub mod parser;

pub use ast::{Condition, Direction, Literal, Op, OrderBy, Query, Select};
pub use eval::{compare_for_order, lookup, parse_datetime};
pub use parser::{Found, ParseError, ParseErrorKind, parse};

//! The QuickBooks Online query language, as real QBO accepts it (see `GRAMMAR.md`).
//!
//! # Layout
//! - [`ast`]: the syntax tree ([`Query`], [`Condition`], [`Literal`], ...) and its printer.
//! - `lexer` / `parser`: text → [`Query`], errors pointing at the offending token.
//! - `eval`: does a JSON record satisfy a condition; datetime literals compared as instants.
//!
//! No I/O: used by the sandbox (to answer queries) and by the pipeline (to build them).

pub mod ast;

pub use ast::{Condition, Direction, Literal, Op, OrderBy, Query, Select};

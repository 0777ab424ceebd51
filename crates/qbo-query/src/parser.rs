//! Tokens → [`Query`]: a recursive-descent parser whose `parse_*` methods follow the rules of
//! `GRAMMAR.md` one to one, and the [`ParseError`] it reports.
//!
//! In: query text (lexed by [`crate::lexer`]). Out: a [`Query`], or a [`ParseError`] that points
//! at the offending token (byte offset plus QBO's JavaCC-style line/column), lists the tokens
//! that would have been accepted there, and renders QBO's own fault detail via
//! [`ParseError::qbo_detail`] (`QueryParserError: Encountered " <IDENTIFIER> "TxnDate "" at
//! line 1, column 29.`).
//!
//! Conventions (as in casey/just): `next_is` peeks and records the kind as expected,
//! `accept` consumes when it matches, `expect` consumes or fails with everything expected at
//! this point; consuming a token forgets the expected set.

use std::fmt;

use crate::ast::{Condition, Direction, Literal, Op, OrderBy, Query, Select};
use crate::lexer::{self, Token, TokenKind};

/// Parses one QBO query (see `GRAMMAR.md`). Total: any text gives a [`Query`] or a
/// [`ParseError`], never a panic, and the parser's depth does not grow with the input.
pub fn parse(input: &str) -> Result<Query, ParseError> {
    let tokens = lexer::tokenize(input)?;
    Parser {
        input,
        tokens,
        next: 0,
        expected: Vec::new(),
    }
    .parse_query()
}

/// What the parser found where it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A whole token, with its text as written.
    Token { kind: TokenKind, text: String },
    /// A character that cannot start (or continue) any token.
    Char(char),
    /// The end of the input.
    Eof,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Token { kind, text } if kind.image().starts_with('<') => {
                write!(f, "{} `{text}`", kind.image())
            }
            Found::Token { kind, .. } => f.write_str(kind.image()),
            Found::Char(c) => write!(f, "character {c:?}"),
            Found::Eof => f.write_str("end of query"),
        }
    }
}

/// Why parsing failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// A token the grammar does not allow at this point (see `found` and `expected`).
    Syntax,
    /// `OR` between conditions: QBO combines conditions with `AND` only. (QBO itself just
    /// reports an unexpected `<IDENTIFIER> "OR"`.)
    Or,
    /// A `STARTPOSITION` / `MAXRESULTS` number that is not a whole number in `0..=u64::MAX`.
    InvalidNumber,
    /// A character no token can start or continue with; `after` is the text of the token
    /// being read when it was met (empty between tokens).
    Lexical { after: String },
    /// The input ends inside a `'...'` literal; `after` is the literal so far.
    UnterminatedString { after: String },
}

/// A query QBO would reject with `QueryParserError` (fault code 4000).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub kind: ParseErrorKind,
    /// Byte offset of the offending token or character (`input.len()` at the end).
    pub offset: usize,
    /// QBO's 1-based line of the offending token or character (JavaCC rules).
    pub line: usize,
    /// QBO's 1-based column of the offending token or character (JavaCC rules: characters,
    /// tabs to multiples of 8; `<EOF>` sits on the last character of the input).
    pub column: usize,
    pub found: Found,
    /// The tokens that would have been accepted, in grammar order (empty for lexical errors).
    pub expected: Vec<TokenKind>,
}

impl ParseError {
    fn syntax(
        input: &str,
        token: Token<'_>,
        kind: ParseErrorKind,
        expected: Vec<TokenKind>,
    ) -> Self {
        let (line, column) = lexer::position(input, token.offset);
        let found = if token.kind == TokenKind::Eof {
            Found::Eof
        } else {
            Found::Token {
                kind: token.kind,
                text: token.text.to_owned(),
            }
        };
        ParseError {
            kind,
            offset: token.offset,
            line,
            column,
            found,
            expected,
        }
    }

    /// A lexical error at byte `at`: the character there, or the end of input (which JavaCC
    /// places one column after the last character).
    pub(crate) fn lexical(input: &str, at: usize, kind: ParseErrorKind) -> Self {
        let (found, (line, column)) = match input.get(at..).and_then(|rest| rest.chars().next()) {
            Some(c) => (Found::Char(c), lexer::position(input, at)),
            None => {
                let (line, column) = lexer::position(input, at);
                let ends_line = input.ends_with(['\n', '\r']);
                let position = if input.is_empty() {
                    (1, 1)
                } else if ends_line {
                    (line + 1, 0)
                } else {
                    (line, column + 1)
                };
                (Found::Eof, position)
            }
        };
        ParseError {
            kind,
            offset: at,
            line,
            column,
            found,
            expected: Vec::new(),
        }
    }

    /// The `Detail` text QBO puts in its 4000 fault for this error, e.g.
    /// `QueryParserError: Encountered " <IDENTIFIER> "TxnDate "" at line 1, column 29.` or
    /// `QueryParserError: Encountered "<EOF>" at line 1, column 22.` (JavaCC's wording, with
    /// the token text escaped as JavaCC does: `'` → `\'`, `"` → `\"`, `\` → `\\`). Lexical
    /// errors read `QueryParserError: Lexical error at line 1, column 40.  Encountered: <EOF>
    /// after : "\'Amy"`.
    pub fn qbo_detail(&self) -> String {
        let (line, column) = (self.line, self.column);
        match (&self.kind, &self.found) {
            (
                ParseErrorKind::Lexical { after } | ParseErrorKind::UnterminatedString { after },
                found,
            ) => {
                let encountered = match found {
                    Found::Char(c) => {
                        format!("\"{}\" ({}), ", java_escape(&c.to_string()), u32::from(*c))
                    }
                    _ => "<EOF> ".to_owned(),
                };
                format!(
                    "QueryParserError: Lexical error at line {line}, column {column}.  \
                     Encountered: {encountered}after : \"{}\"",
                    java_escape(after)
                )
            }
            (_, Found::Token { kind, text }) => format!(
                "QueryParserError: Encountered \" {} \"{} \"\" at line {line}, column {column}.",
                kind.image(),
                java_escape(text)
            ),
            (_, Found::Char(c)) => format!(
                "QueryParserError: Encountered \"{}\" at line {line}, column {column}.",
                java_escape(&c.to_string())
            ),
            (_, Found::Eof) => {
                format!("QueryParserError: Encountered \"<EOF>\" at line {line}, column {column}.")
            }
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}: ", self.line, self.column)?;
        match &self.kind {
            ParseErrorKind::Or => f.write_str(
                "QBO queries have no OR; conditions can only be combined with AND (use IN for \
                 alternatives of one field)",
            )?,
            ParseErrorKind::InvalidNumber => write!(
                f,
                "expected a whole number of at least 0, found {}",
                self.found
            )?,
            ParseErrorKind::Lexical { .. } => write!(f, "unexpected {}", self.found)?,
            ParseErrorKind::UnterminatedString { after } => {
                write!(f, "string literal {after} has no closing quote")?
            }
            ParseErrorKind::Syntax => {
                f.write_str("expected ")?;
                let names: Vec<&str> = self.expected.iter().map(|k| k.image()).collect();
                match names.as_slice() {
                    [] => f.write_str("nothing more")?,
                    [one] => f.write_str(one)?,
                    [rest @ .., last] => write!(f, "one of {} or {last}", rest.join(", "))?,
                }
                write!(f, ", found {}", self.found)?;
            }
        }
        Ok(())
    }
}

/// JavaCC's `ParseException.add_escapes`: backslash-escape quotes, backslashes and control
/// characters.
fn java_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '"' => out.push_str("\\\""),
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

struct Parser<'src> {
    input: &'src str,
    /// Always ends with one `Eof` token.
    tokens: Vec<Token<'src>>,
    next: usize,
    /// Kinds checked for (and not found) since the last token was consumed.
    expected: Vec<TokenKind>,
}

impl<'src> Parser<'src> {
    fn peek(&self) -> Token<'src> {
        // `tokenize` always ends the list with `Eof`, and `advance` never moves past it.
        self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn next_is(&mut self, kind: TokenKind) -> bool {
        if !self.expected.contains(&kind) {
            self.expected.push(kind);
        }
        self.peek().kind == kind
    }

    fn advance(&mut self) -> Token<'src> {
        let token = self.peek();
        if token.kind != TokenKind::Eof {
            self.next += 1;
        }
        self.expected.clear();
        token
    }

    fn accept(&mut self, kind: TokenKind) -> Option<Token<'src>> {
        self.next_is(kind).then(|| self.advance())
    }

    fn expect(&mut self, kind: TokenKind) -> Result<Token<'src>, ParseError> {
        self.accept(kind).ok_or_else(|| self.unexpected())
    }

    fn unexpected(&mut self) -> ParseError {
        let token = self.peek();
        let or = token.kind == TokenKind::Identifier
            && token.text.eq_ignore_ascii_case("or")
            && self.expected.contains(&TokenKind::And);
        let kind = if or {
            ParseErrorKind::Or
        } else {
            ParseErrorKind::Syntax
        };
        ParseError::syntax(self.input, token, kind, std::mem::take(&mut self.expected))
    }

    /// `query : "SELECT" select "FROM" IDENTIFIER where? order_by? paging EOF`
    fn parse_query(mut self) -> Result<Query, ParseError> {
        self.expect(TokenKind::Select)?;
        let select = self.parse_select()?;
        self.expect(TokenKind::From)?;
        let entity = self.expect(TokenKind::Identifier)?.text.to_owned();
        let conditions = if self.accept(TokenKind::Where).is_some() {
            self.parse_where()?
        } else {
            Vec::new()
        };
        let order_by = self.parse_order_by()?;
        let (start_position, max_results) = self.parse_paging()?;
        self.expect(TokenKind::Eof)?;
        Ok(Query {
            select,
            entity,
            conditions,
            order_by,
            start_position,
            max_results,
        })
    }

    /// `select : "*" ( "," IDENTIFIER )* | "COUNT" "(" "*" ")"`
    fn parse_select(&mut self) -> Result<Select, ParseError> {
        if self.accept(TokenKind::Star).is_some() {
            let mut extra = Vec::new();
            while self.accept(TokenKind::Comma).is_some() {
                extra.push(self.expect(TokenKind::Identifier)?.text.to_owned());
            }
            return Ok(Select::All { extra });
        }
        if self.accept(TokenKind::Count).is_some() {
            self.expect(TokenKind::LParen)?;
            self.expect(TokenKind::Star)?;
            self.expect(TokenKind::RParen)?;
            return Ok(Select::Count);
        }
        Err(self.unexpected())
    }

    /// `where : condition ( "AND" condition )*` (after `"WHERE"`)
    fn parse_where(&mut self) -> Result<Vec<Condition>, ParseError> {
        let mut conditions = vec![self.parse_condition()?];
        while self.accept(TokenKind::And).is_some() {
            conditions.push(self.parse_condition()?);
        }
        Ok(conditions)
    }

    /// `condition : IDENTIFIER comparison value | IDENTIFIER "IN" list`
    fn parse_condition(&mut self) -> Result<Condition, ParseError> {
        let field = self.expect(TokenKind::Identifier)?.text.to_owned();
        if self.accept(TokenKind::In).is_some() {
            let value = self.parse_list()?;
            return Ok(Condition {
                field,
                op: Op::In,
                value,
            });
        }
        const COMPARISONS: [(TokenKind, Op); 7] = [
            (TokenKind::Eq, Op::Eq),
            (TokenKind::Lt, Op::Lt),
            (TokenKind::Gt, Op::Gt),
            (TokenKind::Le, Op::Le),
            (TokenKind::Ge, Op::Ge),
            (TokenKind::Ne, Op::Ne),
            (TokenKind::Like, Op::Like),
        ];
        for (kind, op) in COMPARISONS {
            if self.accept(kind).is_some() {
                let value = self.parse_value()?;
                return Ok(Condition { field, op, value });
            }
        }
        Err(self.unexpected())
    }

    /// `list : "(" value ( "," value )* ")"`
    fn parse_list(&mut self) -> Result<Literal, ParseError> {
        self.expect(TokenKind::LParen)?;
        let mut values = vec![self.parse_value()?];
        while self.accept(TokenKind::Comma).is_some() {
            values.push(self.parse_value()?);
        }
        self.expect(TokenKind::RParen)?;
        Ok(Literal::List(values))
    }

    /// `value : STRING | INTEGER | DECIMAL | "TRUE" | "FALSE"`
    fn parse_value(&mut self) -> Result<Literal, ParseError> {
        if let Some(token) = self.accept(TokenKind::String) {
            return Ok(Literal::String(lexer::unescape_string(token.text)));
        }
        if let Some(token) = self
            .accept(TokenKind::Integer)
            .or_else(|| self.accept(TokenKind::Decimal))
        {
            return Ok(Literal::Number(token.text.to_owned()));
        }
        if self.accept(TokenKind::True).is_some() {
            return Ok(Literal::Bool(true));
        }
        if self.accept(TokenKind::False).is_some() {
            return Ok(Literal::Bool(false));
        }
        Err(self.unexpected())
    }

    /// `order_by : ( "ORDERBY" | "ORDER" "BY" ) IDENTIFIER ( "ASC" | "DESC" )?`
    fn parse_order_by(&mut self) -> Result<Option<OrderBy>, ParseError> {
        if self.accept(TokenKind::OrderBy).is_none() {
            if self.accept(TokenKind::Order).is_none() {
                return Ok(None);
            }
            self.expect(TokenKind::By)?;
        }
        let field = self.expect(TokenKind::Identifier)?.text.to_owned();
        let direction = if self.accept(TokenKind::Desc).is_some() {
            Direction::Desc
        } else {
            self.accept(TokenKind::Asc);
            Direction::Asc
        };
        Ok(Some(OrderBy { field, direction }))
    }

    /// `paging : ( "STARTPOSITION" INTEGER )? ( "MAXRESULTS" INTEGER )?
    ///         | "MAXRESULTS" INTEGER "STARTPOSITION" INTEGER`
    fn parse_paging(&mut self) -> Result<(Option<u64>, Option<u64>), ParseError> {
        if self.accept(TokenKind::StartPosition).is_some() {
            let start = self.parse_count()?;
            let max = if self.accept(TokenKind::MaxResults).is_some() {
                Some(self.parse_count()?)
            } else {
                None
            };
            return Ok((Some(start), max));
        }
        if self.accept(TokenKind::MaxResults).is_some() {
            let max = self.parse_count()?;
            let start = if self.accept(TokenKind::StartPosition).is_some() {
                Some(self.parse_count()?)
            } else {
                None
            };
            return Ok((start, Some(max)));
        }
        Ok((None, None))
    }

    /// An `INTEGER` that fits a `u64` (no sign).
    fn parse_count(&mut self) -> Result<u64, ParseError> {
        let token = self.expect(TokenKind::Integer)?;
        token.text.parse().map_err(|_| {
            ParseError::syntax(
                self.input,
                token,
                ParseErrorKind::InvalidNumber,
                vec![TokenKind::Integer],
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(extra: &[&str]) -> Select {
        Select::All {
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn cond(field: &str, op: Op, value: Literal) -> Condition {
        Condition {
            field: field.to_owned(),
            op,
            value,
        }
    }

    fn s(text: &str) -> Literal {
        Literal::String(text.to_owned())
    }

    fn ids(values: &[&str]) -> Literal {
        Literal::List(values.iter().map(|v| s(v)).collect())
    }

    fn active_all() -> Condition {
        cond(
            "Active",
            Op::In,
            Literal::List(vec![Literal::Bool(true), Literal::Bool(false)]),
        )
    }

    fn query(select: Select, entity: &str) -> Query {
        Query {
            select,
            entity: entity.to_owned(),
            conditions: Vec::new(),
            order_by: None,
            start_position: None,
            max_results: None,
        }
    }

    fn paged(mut q: Query, start: u64, max: u64) -> Query {
        q.start_position = Some(start);
        q.max_results = Some(max);
        q
    }

    fn filtered(mut q: Query, conditions: Vec<Condition>) -> Query {
        q.conditions = conditions;
        q
    }

    /// Every query in crates/qbo-sandbox/tests/fixtures/qbo-recorded (request.query_params.query
    /// and the batch `Query`), verbatim, and the tree it must parse to.
    #[test]
    fn recorded_queries_parse() {
        let id_list = cond("Id", Op::In, ids(&["5", "6", "7", "8", "9", "10"]));
        let customers_by_id = |start| {
            paged(
                filtered(
                    query(all(&[]), "Customer"),
                    vec![id_list.clone(), active_all()],
                ),
                start,
                2,
            )
        };
        let vendors_by_5 = |start| paged(query(all(&[]), "Vendor"), start, 5);
        let cases: Vec<(&str, Query)> = vec![
            ("SELECT * FROM Customer", query(all(&[]), "Customer")),
            ("SELECT * FROM Custmoer", query(all(&[]), "Custmoer")),
            (
                "SELECT * FROM Customer MAXRESULTS 1000 STARTPOSITION 1",
                paged(query(all(&[]), "Customer"), 1, 1000),
            ),
            (
                r"SELECT * FROM Customer WHERE DisplayName = 'Amy\'s Bird Sanctuary'",
                filtered(
                    query(all(&[]), "Customer"),
                    vec![cond("DisplayName", Op::Eq, s("Amy's Bird Sanctuary"))],
                ),
            ),
            (
                "SELECT * FROM Customer WHERE Id IN ('5', '6', '7', '8', '9', '10') AND Active IN ( true, false ) MAXRESULTS 2 STARTPOSITION 1",
                customers_by_id(1),
            ),
            (
                "SELECT * FROM Customer WHERE Id IN ('5', '6', '7', '8', '9', '10') AND Active IN ( true, false ) MAXRESULTS 2 STARTPOSITION 3",
                customers_by_id(3),
            ),
            (
                "SELECT * FROM Customer WHERE Id IN ('5', '6', '7', '8', '9', '10') AND Active IN ( true, false ) MAXRESULTS 2 STARTPOSITION 5",
                customers_by_id(5),
            ),
            (
                "SELECT * FROM Customer WHERE Id IN ('5', '6', '7', '8', '9', '10') AND Active IN ( true, false ) MAXRESULTS 2 STARTPOSITION 7",
                customers_by_id(7),
            ),
            (
                "SELECT * FROM Employee WHERE Active IN ( true, false ) MAXRESULTS 1000 STARTPOSITION 1",
                paged(
                    filtered(query(all(&[]), "Employee"), vec![active_all()]),
                    1,
                    1000,
                ),
            ),
            (
                "SELECT * FROM SalesReceipt MAXRESULTS 1000 STARTPOSITION 1",
                paged(query(all(&[]), "SalesReceipt"), 1, 1000),
            ),
            (
                "SELECT * FROM Vendor MAXRESULTS 5 STARTPOSITION 1",
                vendors_by_5(1),
            ),
            (
                "SELECT * FROM Vendor MAXRESULTS 5 STARTPOSITION 6",
                vendors_by_5(6),
            ),
            (
                "SELECT * FROM Vendor MAXRESULTS 5 STARTPOSITION 11",
                vendors_by_5(11),
            ),
            (
                "SELECT * FROM Vendor MAXRESULTS 5 STARTPOSITION 16",
                vendors_by_5(16),
            ),
            (
                "SELECT * FROM Vendor MAXRESULTS 5 STARTPOSITION 21",
                vendors_by_5(21),
            ),
            (
                "SELECT * FROM Vendor MAXRESULTS 5 STARTPOSITION 26",
                vendors_by_5(26),
            ),
            (
                "SELECT * FROM Vendor WHERE Active IN (true, false)",
                filtered(query(all(&[]), "Vendor"), vec![active_all()]),
            ),
            (
                "SELECT * FROM Vendor WHERE DisplayName = 'Robertson & Associates'",
                filtered(
                    query(all(&[]), "Vendor"),
                    vec![cond("DisplayName", Op::Eq, s("Robertson & Associates"))],
                ),
            ),
            (
                "SELECT COUNT(*) FROM Customer",
                query(Select::Count, "Customer"),
            ),
            (
                "SELECT COUNT(*) FROM Employee WHERE Active IN (true, false) ",
                filtered(query(Select::Count, "Employee"), vec![active_all()]),
            ),
            (
                "SELECT COUNT(*) FROM Vendor",
                query(Select::Count, "Vendor"),
            ),
            (
                "SELECT count(*) FROM Customer WHERE Id IN ('5', '6', '7', '8', '9', '10')",
                filtered(query(Select::Count, "Customer"), vec![id_list.clone()]),
            ),
            (
                "select * from SalesReceipt where TotalAmt > '300.00'",
                filtered(
                    query(all(&[]), "SalesReceipt"),
                    vec![cond("TotalAmt", Op::Gt, s("300.00"))],
                ),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn other_accepted_forms() {
        let item_with_sku = query(all(&["Sku"]), "Item");
        let active_by_update = Query {
            conditions: vec![cond("active", Op::Eq, Literal::Bool(true))],
            order_by: Some(OrderBy {
                field: "metadata.lastupdatedtime".to_owned(),
                direction: Direction::Desc,
            }),
            ..query(all(&[]), "Customer")
        };
        let ordered = |field: &str, direction| Query {
            order_by: Some(OrderBy {
                field: field.to_owned(),
                direction,
            }),
            ..query(all(&[]), "Invoice")
        };
        let cases: Vec<(&str, Query)> = vec![
            ("SELECT *, Sku FROM Item", item_with_sku.clone()),
            ("SELECT * ,Sku FROM Item", item_with_sku),
            (
                "SELECT *, Sku, MetaData.CreateTime FROM Item",
                query(all(&["Sku", "MetaData.CreateTime"]), "Item"),
            ),
            ("SELECT COUNT ( * ) FROM Bill", query(Select::Count, "Bill")),
            ("sElEcT cOuNt(*) fRoM bill", query(Select::Count, "bill")),
            (
                "SELECT * FROM Customer WHERE active = true ORDERBY metadata.lastupdatedtime DESC",
                active_by_update.clone(),
            ),
            (
                "select * from Customer where active = TRUE order by metadata.lastupdatedtime desc",
                active_by_update,
            ),
            (
                "SELECT * FROM Invoice ORDER BY TxnDate",
                ordered("TxnDate", Direction::Asc),
            ),
            (
                "SELECT * FROM Invoice ORDERBY TxnDate asc",
                ordered("TxnDate", Direction::Asc),
            ),
            (
                "SELECT * FROM Invoice\n\tORDER\r\n  BY Id DESC  \n",
                ordered("Id", Direction::Desc),
            ),
            (
                "SELECT * FROM Invoice STARTPOSITION 0 MAXRESULTS 1000",
                paged(query(all(&[]), "Invoice"), 0, 1000),
            ),
            (
                "SELECT * FROM Invoice startposition 101",
                Query {
                    start_position: Some(101),
                    ..query(all(&[]), "Invoice")
                },
            ),
            (
                "SELECT * FROM Invoice maxresults 10",
                Query {
                    max_results: Some(10),
                    ..query(all(&[]), "Invoice")
                },
            ),
            (
                "SELECT * FROM Invoice WHERE Balance > 0 AND TotalAmt <= 12.50 AND Id != '3' \
                 AND DocNumber < '1001' AND TxnDate >= '2015-10-08' AND Amount > -1.5",
                filtered(
                    query(all(&[]), "Invoice"),
                    vec![
                        cond("Balance", Op::Gt, Literal::Number("0".to_owned())),
                        cond("TotalAmt", Op::Le, Literal::Number("12.50".to_owned())),
                        cond("Id", Op::Ne, s("3")),
                        cond("DocNumber", Op::Lt, s("1001")),
                        cond("TxnDate", Op::Ge, s("2015-10-08")),
                        cond("Amount", Op::Gt, Literal::Number("-1.5".to_owned())),
                    ],
                ),
            ),
            (
                r"SELECT * FROM Customer WHERE DisplayName LIKE '%Bird%' AND Notes = 'a\\b' AND PrintOnCheckName = '' AND CompanyName = ' '",
                filtered(
                    query(all(&[]), "Customer"),
                    vec![
                        cond("DisplayName", Op::Like, s("%Bird%")),
                        cond("Notes", Op::Eq, s(r"a\b")),
                        cond("PrintOnCheckName", Op::Eq, s("")),
                        cond("CompanyName", Op::Eq, s(" ")),
                    ],
                ),
            ),
            (
                "SELECT * FROM Customer WHERE Id IN('5')AND Active IN (TRUE,False)",
                filtered(
                    query(all(&[]), "Customer"),
                    vec![cond("Id", Op::In, ids(&["5"])), active_all()],
                ),
            ),
            (
                "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime>='2015-10-08T13:28:29-07:00'",
                filtered(
                    query(all(&[]), "Invoice"),
                    vec![cond(
                        "MetaData.LastUpdatedTime",
                        Op::Ge,
                        s("2015-10-08T13:28:29-07:00"),
                    )],
                ),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    /// (query, QBO's fault detail, friendly message)
    #[test]
    fn errors() {
        let cases = [
            (
                "SELECT * FROM Customer WHERE DisplayName = 'Amy",
                r#"QueryParserError: Lexical error at line 1, column 48.  Encountered: <EOF> after : "\'Amy""#,
                "line 1, column 48: string literal 'Amy has no closing quote",
            ),
            (
                "SELECT * FROM Vendor WHERE DisplayName = 'Peet''s'",
                r#"QueryParserError: Encountered " <STRING> "\'s\' "" at line 1, column 48."#,
                r#"line 1, column 48: expected one of "AND", "ORDERBY", "ORDER", "STARTPOSITION", "MAXRESULTS" or <EOF>, found <STRING> `'s'`"#,
            ),
            (
                "SELECT * FROM Customer WHERE Active = true OR Id = '5'",
                r#"QueryParserError: Encountered " <IDENTIFIER> "OR "" at line 1, column 44."#,
                "line 1, column 44: QBO queries have no OR; conditions can only be combined with \
                 AND (use IN for alternatives of one field)",
            ),
            (
                "SELECT * Customer",
                r#"QueryParserError: Encountered " <IDENTIFIER> "Customer "" at line 1, column 10."#,
                r#"line 1, column 10: expected one of "," or "FROM", found <IDENTIFIER> `Customer`"#,
            ),
            (
                "SELECT * FROM Customer garbage",
                r#"QueryParserError: Encountered " <IDENTIFIER> "garbage "" at line 1, column 24."#,
                r#"line 1, column 24: expected one of "WHERE", "ORDERBY", "ORDER", "STARTPOSITION", "MAXRESULTS" or <EOF>, found <IDENTIFIER> `garbage`"#,
            ),
            (
                "SELECT * FROM Customer MAXRESULTS 10 MAXRESULTS 10",
                r#"QueryParserError: Encountered " "MAXRESULTS" "MAXRESULTS "" at line 1, column 38."#,
                r#"line 1, column 38: expected one of "STARTPOSITION" or <EOF>, found "MAXRESULTS""#,
            ),
            (
                "SELECT * FROM Customer MAXRESULTS abc",
                r#"QueryParserError: Encountered " <IDENTIFIER> "abc "" at line 1, column 35."#,
                "line 1, column 35: expected <INTEGER>, found <IDENTIFIER> `abc`",
            ),
            (
                "SELECT * FROM Customer MAXRESULTS 1.5",
                r#"QueryParserError: Encountered " <DECIMAL> "1.5 "" at line 1, column 35."#,
                "line 1, column 35: expected <INTEGER>, found <DECIMAL> `1.5`",
            ),
            (
                "SELECT * FROM Customer STARTPOSITION -1",
                r#"QueryParserError: Encountered " <INTEGER> "-1 "" at line 1, column 38."#,
                "line 1, column 38: expected a whole number of at least 0, found <INTEGER> `-1`",
            ),
            (
                "SELECT * FROM Customer MAXRESULTS 99999999999999999999",
                r#"QueryParserError: Encountered " <INTEGER> "99999999999999999999 "" at line 1, column 35."#,
                "line 1, column 35: expected a whole number of at least 0, found <INTEGER> \
                 `99999999999999999999`",
            ),
            (
                "SELECT * FROM Invoice ORDER TxnDate",
                r#"QueryParserError: Encountered " <IDENTIFIER> "TxnDate "" at line 1, column 29."#,
                r#"line 1, column 29: expected "BY", found <IDENTIFIER> `TxnDate`"#,
            ),
            (
                "SELECT * FROM",
                r#"QueryParserError: Encountered "<EOF>" at line 1, column 13."#,
                "line 1, column 13: expected <IDENTIFIER>, found end of query",
            ),
            (
                "SELECT * FROM Customer WHERE ",
                r#"QueryParserError: Encountered "<EOF>" at line 1, column 29."#,
                "line 1, column 29: expected <IDENTIFIER>, found end of query",
            ),
            (
                "SELECT * FROM Customer WHERE Id IN ()",
                r#"QueryParserError: Encountered " ")" ") "" at line 1, column 37."#,
                r#"line 1, column 37: expected one of <STRING>, <INTEGER>, <DECIMAL>, "TRUE" or "FALSE", found ")""#,
            ),
            (
                "SELECT * FROM Customer WHERE Id IN '5'",
                r#"QueryParserError: Encountered " <STRING> "\'5\' "" at line 1, column 36."#,
                r#"line 1, column 36: expected "(", found <STRING> `'5'`"#,
            ),
            (
                "SELECT * FROM Customer WHERE Id == '5'",
                r#"QueryParserError: Encountered " "=" "= "" at line 1, column 34."#,
                r#"line 1, column 34: expected one of <STRING>, <INTEGER>, <DECIMAL>, "TRUE" or "FALSE", found "=""#,
            ),
            (
                "SELECT Id FROM Customer",
                r#"QueryParserError: Encountered " <IDENTIFIER> "Id "" at line 1, column 8."#,
                r#"line 1, column 8: expected one of "*" or "COUNT", found <IDENTIFIER> `Id`"#,
            ),
            (
                "SELECT * FROM Customer WHERE DisplayName = \"Amy\"",
                r#"QueryParserError: Lexical error at line 1, column 44.  Encountered: "\"" (34), after : """#,
                r#"line 1, column 44: unexpected character '"'"#,
            ),
            (
                "SELECT * FROM Customer WHERE Balance ! 5",
                r#"QueryParserError: Lexical error at line 1, column 39.  Encountered: " " (32), after : "!""#,
                "line 1, column 39: unexpected character ' '",
            ),
            (
                "SELECT *\nFROM Customer\nWHERE Active = yes",
                r#"QueryParserError: Encountered " <IDENTIFIER> "yes "" at line 3, column 16."#,
                r#"line 3, column 16: expected one of <STRING>, <INTEGER>, <DECIMAL>, "TRUE" or "FALSE", found <IDENTIFIER> `yes`"#,
            ),
            (
                // JavaCC columns: a tab runs to the next multiple of 8.
                "SELECT *\tFROM\tCustomer\tWHERE",
                r#"QueryParserError: Encountered "<EOF>" at line 1, column 45."#,
                "line 1, column 45: expected <IDENTIFIER>, found end of query",
            ),
            (
                "",
                r#"QueryParserError: Encountered "<EOF>" at line 1, column 1."#,
                r#"line 1, column 1: expected "SELECT", found end of query"#,
            ),
        ];
        for (text, detail, friendly) in cases {
            let error = parse(text).expect_err(text);
            assert_eq!(error.qbo_detail(), detail, "{text}");
            assert_eq!(error.to_string(), friendly, "{text}");
        }
    }

    #[test]
    fn error_fields_point_at_the_token() {
        let text = "SELECT * FROM Customer WHERE Active = true OR Id = '5'";
        let error = parse(text).expect_err("OR is not QBO");
        assert_eq!(error.kind, ParseErrorKind::Or);
        assert_eq!(error.offset, text.find("OR").expect("OR is in the text"));
        assert_eq!((error.line, error.column), (1, 44));
        assert_eq!(
            error.found,
            Found::Token {
                kind: TokenKind::Identifier,
                text: "OR".to_owned()
            }
        );
        assert!(error.expected.contains(&TokenKind::And));

        let error = parse("SELECT * FROM Customer WHERE Name = 'x").expect_err("unterminated");
        assert_eq!(
            error.kind,
            ParseErrorKind::UnterminatedString {
                after: "'x".to_owned()
            }
        );
        assert_eq!(error.found, Found::Eof);
        assert_eq!(error.offset, 38);
    }

    #[test]
    fn java_escape_matches_javacc() {
        assert_eq!(java_escape(r#"a'b"c\d"#), r#"a\'b\"c\\d"#);
        assert_eq!(
            java_escape("\t\n\u{1}é😀"),
            "\\t\\n\\u0001\\u00e9\\ud83d\\ude00"
        );
    }

    /// Printing gives canonical text, and that text parses back to the same tree.
    #[test]
    fn print_then_reparse() {
        let cases = [
            (
                "select * from Invoice where MetaData.LastUpdatedTime >= '2015-10-08T13:28:29-07:00' \
                 and Active in ( true , false ) order by MetaData.LastUpdatedTime maxresults 1000 \
                 startposition 1",
                "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '2015-10-08T13:28:29-07:00' \
                 AND Active IN (true, false) ORDERBY MetaData.LastUpdatedTime ASC STARTPOSITION 1 \
                 MAXRESULTS 1000",
            ),
            (
                r"SELECT * FROM Customer WHERE DisplayName = 'Amy\'s Bird Sanctuary'",
                r"SELECT * FROM Customer WHERE DisplayName = 'Amy\'s Bird Sanctuary'",
            ),
            (
                r"SELECT * FROM Customer WHERE Notes = 'back\\slash \q' AND Name LIKE '%a%'",
                r"SELECT * FROM Customer WHERE Notes = 'back\\slash q' AND Name LIKE '%a%'",
            ),
            (
                "SELECT count(*) FROM Customer WHERE Id IN ('5','6')",
                "SELECT COUNT(*) FROM Customer WHERE Id IN ('5', '6')",
            ),
            ("SELECT *,Sku FROM Item", "SELECT *, Sku FROM Item"),
            (
                "SELECT * FROM Bill WHERE Balance > 0 AND TotalAmt != -1.50 AND Id <= '9' \
                 AND Id < '9' AND Id >= 1 ORDERBY TxnDate DESC STARTPOSITION 0",
                "SELECT * FROM Bill WHERE Balance > 0 AND TotalAmt != -1.50 AND Id <= '9' \
                 AND Id < '9' AND Id >= 1 ORDERBY TxnDate DESC STARTPOSITION 0",
            ),
            (
                "SELECT * FROM Vendor MAXRESULTS 5",
                "SELECT * FROM Vendor MAXRESULTS 5",
            ),
            (
                "SELECT * FROM Customer WHERE Name = ''",
                "SELECT * FROM Customer WHERE Name = ''",
            ),
        ];
        for (text, canonical) in cases {
            let parsed = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let printed = parsed.to_string();
            assert_eq!(printed, canonical, "{text}");
            assert_eq!(parse(&printed), Ok(parsed), "{printed}");
        }
    }

    /// Trees built by hand (as the pipeline does) print to text that parses back to them.
    #[test]
    fn built_trees_round_trip() {
        let tricky = [
            "",
            " ",
            "'",
            "\\",
            r"\'",
            "''",
            "%",
            "a\"b",
            "line\nbreak",
            "é ü 😀",
        ];
        for text in tricky {
            let q = filtered(
                query(all(&[]), "Customer"),
                vec![cond("DisplayName", Op::Eq, s(text)), active_all()],
            );
            assert_eq!(parse(&q.to_string()), Ok(q.clone()), "{q}");
        }
    }

    /// Runs `f` on a thread with a 256 KiB stack, so that any recursion whose depth follows
    /// the input would overflow it (and abort the test binary) on the inputs below.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(f)
            .expect("spawn a thread")
            .join()
            .expect("no panic")
    }

    /// The grammar nests nothing (no parenthesised conditions, lists of plain values only), so
    /// the parser's depth is fixed: 100,000 opening parentheses are one error at the first one
    /// the grammar does not allow, and 100,000 `AND`ed conditions parse in a loop.
    #[test]
    fn deep_nesting_and_long_inputs_are_errors_or_trees_not_stack_overflows() {
        const DEPTH: usize = 100_000;
        let cases: Vec<(String, usize)> = vec![
            ("(".repeat(DEPTH), 0),
            (format!("SELECT COUNT{}", "(".repeat(DEPTH)), 13),
            (
                format!(
                    "SELECT * FROM Customer WHERE Id IN {}'5'",
                    "(".repeat(DEPTH)
                ),
                36,
            ),
            (
                format!("SELECT * FROM Customer WHERE {}Id = '5'", "(".repeat(DEPTH)),
                29,
            ),
            (
                format!(
                    "SELECT * FROM Customer WHERE Id IN ('5'{}",
                    ")".repeat(DEPTH)
                ),
                40,
            ),
        ];
        for (text, offset) in cases {
            let error = on_small_stack(move || parse(&text).expect_err("not a query"));
            assert_eq!(error.offset, offset);
            assert_eq!(
                error.found,
                Found::Token {
                    kind: if offset == 40 {
                        TokenKind::RParen
                    } else {
                        TokenKind::LParen
                    },
                    text: if offset == 40 { ")" } else { "(" }.to_owned()
                }
            );
        }
        let many_conditions = format!(
            "SELECT * FROM Customer WHERE {}",
            vec!["Id = '5'"; DEPTH].join(" AND ")
        );
        let parsed = on_small_stack(move || parse(&many_conditions).map(|q| q.conditions.len()));
        assert_eq!(parsed, Ok(DEPTH));
        let long_list = format!(
            "SELECT * FROM Customer WHERE Id IN ({})",
            vec!["'5'"; DEPTH].join(",")
        );
        let parsed = on_small_stack(move || parse(&long_list).map(|q| q.conditions.len()));
        assert_eq!(parsed, Ok(1));
    }

    /// Errors at, after or inside multi-byte characters report them whole (no byte slicing
    /// inside a character), with JavaCC's character columns.
    #[test]
    fn non_ascii_input_gives_errors_not_panics() {
        let cases = [
            (
                "SELECT * FROM Cüstomer",
                r#"QueryParserError: Lexical error at line 1, column 16.  Encountered: "\u00fc" (252), after : """#,
            ),
            (
                "SELECT * FROM Customer WHERE Id \u{2260} '5'",
                r#"QueryParserError: Lexical error at line 1, column 33.  Encountered: "\u2260" (8800), after : """#,
            ),
            (
                "SELECT * FROM Customer WHERE Balance !\u{ff1d} 5",
                r#"QueryParserError: Lexical error at line 1, column 39.  Encountered: "\uff1d" (65309), after : "!""#,
            ),
            (
                "SELECT * FROM Customer WHERE Balance > -😀",
                r#"QueryParserError: Lexical error at line 1, column 41.  Encountered: "\ud83d\ude00" (128512), after : "-""#,
            ),
            (
                "SELECT * FROM Customer WHERE Name = 'é\\",
                r#"QueryParserError: Lexical error at line 1, column 40.  Encountered: <EOF> after : "\'\u00e9\\""#,
            ),
            (
                "SELECT * FROM Customer WHERE Name = 'é' 'ü'",
                r#"QueryParserError: Encountered " <STRING> "\'\u00fc\' "" at line 1, column 41."#,
            ),
            (
                "SELECT * FROM Customer MAXRESULTS ١٠",
                r#"QueryParserError: Lexical error at line 1, column 35.  Encountered: "\u0661" (1633), after : """#,
            ),
        ];
        for (text, detail) in cases {
            let error = parse(text).expect_err(text);
            assert_eq!(error.qbo_detail(), detail, "{text}");
            assert!(!error.to_string().is_empty());
        }
    }

    /// The examples in GRAMMAR.md's "Errors" section, verbatim.
    #[test]
    fn grammar_md_error_examples() {
        let cases = [
            (
                "SELECT * FROM Invoice ORDER TxnDate",
                r#"QueryParserError: Encountered " <IDENTIFIER> "TxnDate "" at line 1, column 29."#,
            ),
            (
                "SELECT * FROM Customer WHERE Active IN and",
                r#"QueryParserError: Encountered " "AND" "and "" at line 1, column 40."#,
            ),
            (
                "SELECT * FROM Customer WHERE",
                r#"QueryParserError: Encountered "<EOF>" at line 1, column 28."#,
            ),
            (
                "SELECT * FROM Customer WHERE DisplayName = 'Amy",
                r#"QueryParserError: Lexical error at line 1, column 48.  Encountered: <EOF> after : "\'Amy""#,
            ),
        ];
        for (text, detail) in cases {
            assert_eq!(parse(text).expect_err(text).qbo_detail(), detail, "{text}");
        }
        let friendly = parse("SELECT * FROM Invoice ORDER TxnDate").expect_err("no BY");
        assert_eq!(
            friendly.to_string(),
            r#"line 1, column 29: expected "BY", found <IDENTIFIER> `TxnDate`"#
        );
    }
}

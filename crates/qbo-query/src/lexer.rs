//! Query text → tokens, following the "Tokens" section of `GRAMMAR.md` one to one.
//!
//! In: the raw query string. Out: a `Vec<Token>` ending in one [`TokenKind::Eof`], each token
//! borrowing its text from the input and knowing its byte offset; or a lexical [`ParseError`]
//! (a character no token starts with, or a string literal with no closing quote).
//!
//! Keywords are recognised case-insensitively after an identifier has been read in full
//! (longest match first, so `Description` is an identifier, not `DESC` + `ription`). Positions
//! are turned into QBO's `line, column` (JavaCC's rules) by [`position`].

use crate::parser::{ParseError, ParseErrorKind};

/// The kinds of token, named after the token images QBO's (JavaCC) parser prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    Select,
    From,
    Where,
    And,
    In,
    Like,
    /// `ORDERBY` (one word).
    OrderBy,
    /// `ORDER` of `ORDER BY`.
    Order,
    /// `BY` of `ORDER BY`.
    By,
    Asc,
    Desc,
    StartPosition,
    MaxResults,
    True,
    False,
    Count,
    Star,
    Comma,
    LParen,
    RParen,
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    /// A name or dotted property path: `Customer`, `MetaData.LastUpdatedTime`.
    Identifier,
    /// `'...'`, text includes the quotes and escapes as written.
    String,
    /// `-?[0-9]+`
    Integer,
    /// `-?[0-9]+.[0-9]+`
    Decimal,
    /// End of input.
    Eof,
}

impl TokenKind {
    /// The token's name as a JavaCC parser prints it: `"SELECT"` (with the quotes) for fixed
    /// tokens, `<IDENTIFIER>` for classes of token, `<EOF>` at the end.
    pub fn image(self) -> &'static str {
        match self {
            TokenKind::Select => "\"SELECT\"",
            TokenKind::From => "\"FROM\"",
            TokenKind::Where => "\"WHERE\"",
            TokenKind::And => "\"AND\"",
            TokenKind::In => "\"IN\"",
            TokenKind::Like => "\"LIKE\"",
            TokenKind::OrderBy => "\"ORDERBY\"",
            TokenKind::Order => "\"ORDER\"",
            TokenKind::By => "\"BY\"",
            TokenKind::Asc => "\"ASC\"",
            TokenKind::Desc => "\"DESC\"",
            TokenKind::StartPosition => "\"STARTPOSITION\"",
            TokenKind::MaxResults => "\"MAXRESULTS\"",
            TokenKind::True => "\"TRUE\"",
            TokenKind::False => "\"FALSE\"",
            TokenKind::Count => "\"COUNT\"",
            TokenKind::Star => "\"*\"",
            TokenKind::Comma => "\",\"",
            TokenKind::LParen => "\"(\"",
            TokenKind::RParen => "\")\"",
            TokenKind::Eq => "\"=\"",
            TokenKind::Ne => "\"!=\"",
            TokenKind::Lt => "\"<\"",
            TokenKind::Gt => "\">\"",
            TokenKind::Le => "\"<=\"",
            TokenKind::Ge => "\">=\"",
            TokenKind::Identifier => "<IDENTIFIER>",
            TokenKind::String => "<STRING>",
            TokenKind::Integer => "<INTEGER>",
            TokenKind::Decimal => "<DECIMAL>",
            TokenKind::Eof => "<EOF>",
        }
    }

    /// The keyword an identifier-shaped word stands for, if any (case-insensitive).
    fn keyword(word: &str) -> Option<TokenKind> {
        const KEYWORDS: [(&str, TokenKind); 16] = [
            ("SELECT", TokenKind::Select),
            ("FROM", TokenKind::From),
            ("WHERE", TokenKind::Where),
            ("AND", TokenKind::And),
            ("IN", TokenKind::In),
            ("LIKE", TokenKind::Like),
            ("ORDERBY", TokenKind::OrderBy),
            ("ORDER", TokenKind::Order),
            ("BY", TokenKind::By),
            ("ASC", TokenKind::Asc),
            ("DESC", TokenKind::Desc),
            ("STARTPOSITION", TokenKind::StartPosition),
            ("MAXRESULTS", TokenKind::MaxResults),
            ("TRUE", TokenKind::True),
            ("FALSE", TokenKind::False),
            ("COUNT", TokenKind::Count),
        ];
        KEYWORDS
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(word))
            .map(|&(_, kind)| kind)
    }
}

/// One token: its kind, its text exactly as written, and the byte offset where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: TokenKind,
    pub text: &'a str,
    pub offset: usize,
}

/// Splits `input` into tokens; the last one is always [`TokenKind::Eof`] (offset = input
/// length, empty text). Whitespace (space, tab, CR, LF, form feed) separates tokens.
pub fn tokenize(input: &str) -> Result<Vec<Token<'_>>, ParseError> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'\x0c') {
            i += 1;
            continue;
        }
        let start = i;
        let kind = match c {
            b'*' => single(&mut i, TokenKind::Star),
            b',' => single(&mut i, TokenKind::Comma),
            b'(' => single(&mut i, TokenKind::LParen),
            b')' => single(&mut i, TokenKind::RParen),
            b'=' => single(&mut i, TokenKind::Eq),
            b'<' | b'>' => {
                i += 1;
                if bytes.get(i) == Some(&b'=') {
                    i += 1;
                    if c == b'<' {
                        TokenKind::Le
                    } else {
                        TokenKind::Ge
                    }
                } else if c == b'<' {
                    TokenKind::Lt
                } else {
                    TokenKind::Gt
                }
            }
            b'!' => {
                if bytes.get(i + 1) == Some(&b'=') {
                    i += 2;
                    TokenKind::Ne
                } else {
                    return Err(bad_char(input, i + 1, start));
                }
            }
            b'\'' => {
                i = string_end(input, start)?;
                TokenKind::String
            }
            b'-' | b'0'..=b'9' => {
                i = number_end(input, start)?;
                if input[start..i].contains('.') {
                    TokenKind::Decimal
                } else {
                    TokenKind::Integer
                }
            }
            c if is_ident_start(c) => {
                i = path_end(bytes, start);
                let word = &input[start..i];
                TokenKind::keyword(word).unwrap_or(TokenKind::Identifier)
            }
            _ => return Err(bad_char(input, start, start)),
        };
        tokens.push(Token {
            kind,
            text: &input[start..i],
            offset: start,
        });
    }
    tokens.push(Token {
        kind: TokenKind::Eof,
        text: "",
        offset: input.len(),
    });
    Ok(tokens)
}

fn single(i: &mut usize, kind: TokenKind) -> TokenKind {
    *i += 1;
    kind
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// End of `name ( "." name )*` starting at `start` (which holds an identifier start).
fn path_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    loop {
        while i < bytes.len() && is_ident_char(bytes[i]) {
            i += 1;
        }
        match (bytes.get(i), bytes.get(i + 1)) {
            (Some(b'.'), Some(&next)) if is_ident_start(next) => i += 1,
            _ => return i,
        }
    }
}

/// End of `-? digits ( "." digits )?` starting at `start`.
fn number_end(input: &str, start: usize) -> Result<usize, ParseError> {
    let bytes = input.as_bytes();
    let mut i = start;
    if bytes[i] == b'-' {
        i += 1;
        if !bytes.get(i).is_some_and(u8::is_ascii_digit) {
            return Err(bad_char(input, i, start));
        }
    }
    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    Ok(i)
}

/// End (one past the closing quote) of the string literal opening at `start`. A backslash
/// escapes the next character, whatever it is; `''` is two literals, not an escape.
fn string_end(input: &str, start: usize) -> Result<usize, ParseError> {
    let bytes = input.as_bytes();
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => return Ok(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    Err(ParseError::lexical(
        input,
        input.len(),
        ParseErrorKind::UnterminatedString {
            after: input[start..].to_owned(),
        },
    ))
}

/// The text of a string token without its quotes, with each `\x` replaced by `x`.
pub fn unescape_string(text: &str) -> String {
    let inner = text
        .strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .unwrap_or(text);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                out.push(escaped);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A lexical error at byte `at` (the character no token can continue or start with); `start`
/// is where the token being read began (equal to `at` when none was).
fn bad_char(input: &str, at: usize, start: usize) -> ParseError {
    ParseError::lexical(
        input,
        at,
        ParseErrorKind::Lexical {
            after: input[start..at].to_owned(),
        },
    )
}

/// QBO's `(line, column)` of the character at byte `offset`, by JavaCC's rules: both 1-based,
/// columns count characters, a tab's column is that of the next multiple of 8, and `\r\n`, `\r`
/// or `\n` ends a line. `offset >= input.len()` (end of input) gets the position of the last
/// character, which is where JavaCC reports `<EOF>`; an empty input gets line 1, column 1.
pub fn position(input: &str, offset: usize) -> (usize, usize) {
    let (mut line, mut column) = (1usize, 0usize);
    let (mut prev_cr, mut prev_lf) = (false, false);
    let mut here = (1, 1);
    for (at, c) in input.char_indices() {
        if at > offset {
            break;
        }
        column += 1;
        if prev_lf {
            prev_lf = false;
            line += 1;
            column = 1;
        } else if prev_cr {
            prev_cr = false;
            if c == '\n' {
                prev_lf = true;
            } else {
                line += 1;
                column = 1;
            }
        }
        match c {
            '\r' => prev_cr = true,
            '\n' => prev_lf = true,
            '\t' => {
                column -= 1;
                column += 8 - (column % 8);
            }
            _ => {}
        }
        here = (line, column);
    }
    here
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::Found;

    fn kinds(input: &str) -> Vec<(TokenKind, &str)> {
        tokenize(input)
            .unwrap_or_else(|e| panic!("{input}: {e}"))
            .into_iter()
            .map(|t| (t.kind, t.text))
            .collect()
    }

    #[test]
    fn tokens() {
        use TokenKind::*;
        let cases: Vec<(&str, Vec<(TokenKind, &str)>)> = vec![
            (
                "select COUNT(*)",
                vec![
                    (Select, "select"),
                    (Count, "COUNT"),
                    (LParen, "("),
                    (Star, "*"),
                    (RParen, ")"),
                    (Eof, ""),
                ],
            ),
            (
                "Description Desc descending MetaData.LastUpdatedTime Order.By",
                vec![
                    (Identifier, "Description"),
                    (Desc, "Desc"),
                    (Identifier, "descending"),
                    (Identifier, "MetaData.LastUpdatedTime"),
                    (Identifier, "Order.By"),
                    (Eof, ""),
                ],
            ),
            (
                "= != < <= > >= <> ,",
                vec![
                    (Eq, "="),
                    (Ne, "!="),
                    (Lt, "<"),
                    (Le, "<="),
                    (Gt, ">"),
                    (Ge, ">="),
                    (Lt, "<"),
                    (Gt, ">"),
                    (Comma, ","),
                    (Eof, ""),
                ],
            ),
            (
                r"'' 'a''b' 'it\'s' 'c:\\' '%'",
                vec![
                    (String, "''"),
                    (String, "'a'"),
                    (String, "'b'"),
                    (String, r"'it\'s'"),
                    (String, r"'c:\\'"),
                    (String, "'%'"),
                    (Eof, ""),
                ],
            ),
            (
                "0 42 -7 300.00 -0.5 5abc",
                vec![
                    (Integer, "0"),
                    (Integer, "42"),
                    (Integer, "-7"),
                    (Decimal, "300.00"),
                    (Decimal, "-0.5"),
                    (Integer, "5"),
                    (Identifier, "abc"),
                    (Eof, ""),
                ],
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(kinds(input), expected, "{input}");
        }
        // A dot that continues neither a number nor a path, a lone `-` or `!`, `"`, `;`.
        for input in ["1.x", "a. b", "- 1", "!", "\"x\"", "a;", "#"] {
            assert!(tokenize(input).is_err(), "{input}");
        }
    }

    #[test]
    fn keywords_are_case_insensitive() {
        for word in ["ORDERBY", "orderby", "OrderBy", "oRdErBy"] {
            assert_eq!(kinds(word)[0].0, TokenKind::OrderBy, "{word}");
        }
        for word in ["TRUE", "true", "True", "FaLsE"] {
            assert!(
                matches!(kinds(word)[0].0, TokenKind::True | TokenKind::False),
                "{word}"
            );
        }
    }

    #[test]
    fn unescape() {
        assert_eq!(unescape_string(r"'Amy\'s'"), "Amy's");
        assert_eq!(unescape_string(r"'a\\b'"), r"a\b");
        assert_eq!(unescape_string(r"'\q'"), "q");
        assert_eq!(unescape_string("''"), "");
    }

    /// Every place the lexer slices the input (`!`, `-`, numbers, strings, escapes, errors)
    /// next to a multi-byte character: an error or tokens, never a panic.
    #[test]
    fn multi_byte_characters_next_to_every_token_are_errors_not_panics() {
        let error_at = |input: &str| {
            let error = tokenize(input).expect_err(input);
            (error.offset, error.found)
        };
        assert_eq!(error_at("é"), (0, Found::Char('é')));
        assert_eq!(error_at("a é"), (2, Found::Char('é')));
        assert_eq!(error_at("!é"), (1, Found::Char('é')));
        assert_eq!(error_at("-é"), (1, Found::Char('é')));
        assert_eq!(error_at("-\u{2212}1"), (1, Found::Char('\u{2212}')));
        assert_eq!(error_at("\u{2212}1"), (0, Found::Char('\u{2212}')));
        assert_eq!(error_at("1.é"), (1, Found::Char('.')));
        assert_eq!(error_at("a.é"), (1, Found::Char('.')));
        assert_eq!(error_at("a😀"), (1, Found::Char('😀')));
        // Unterminated strings ending in a backslash, or in an escaped multi-byte character.
        for input in ["'\\", "'é\\", "'\\é", "'\\😀", "x = '\\\u{2212}"] {
            let error = tokenize(input).expect_err(input);
            assert_eq!(error.found, Found::Eof, "{input:?}");
            assert_eq!(error.offset, input.len(), "{input:?}");
        }
        // An escaped multi-byte character inside a closed string is one token.
        assert_eq!(
            kinds("'\\é' '\\😀x'"),
            [
                (TokenKind::String, "'\\é'"),
                (TokenKind::String, "'\\😀x'"),
                (TokenKind::Eof, "")
            ]
        );
        assert_eq!(unescape_string("'\\é\\😀'"), "é😀");
        assert_eq!(position("é😀\u{2212}x", "é😀\u{2212}".len()), (1, 4));
        assert_eq!(position("é😀", 1), (1, 1), "an offset inside a character");
        assert_eq!(position("é😀", usize::MAX), (1, 2));
    }

    #[test]
    fn positions_follow_javacc() {
        let text = "ab\tc\r\nd\re\nf";
        let at = |c: char| text.find(c).expect("char in text");
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, at('\t')), (1, 8));
        assert_eq!(position(text, at('c')), (1, 9));
        assert_eq!(position(text, at('\n')), (1, 11));
        assert_eq!(position(text, at('d')), (2, 1));
        assert_eq!(position(text, at('e')), (3, 1));
        assert_eq!(position(text, at('f')), (4, 1));
        assert_eq!(position(text, text.len()), (4, 1));
        assert_eq!(position("é x", 3), (1, 3));
        assert_eq!(position("", 0), (1, 1));
    }
}

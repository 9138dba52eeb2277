//! Postgres's array text format, `{1,2,NULL}`, `{"a b","c\"d"}`, `{{1,2},{3,4}}`, to
//! JSON arrays of the element type's values.
//!
//! Elements are separated by `,` (the delimiter of every element type read here). An
//! element is quoted when it holds a delimiter, brace, quote, backslash or white space,
//! is empty, or reads `NULL`; inside quotes a backslash takes the next byte literally.
//! An unquoted `NULL` is SQL NULL.

use serde_json::Value;

/// Postgres's limit on array dimensions (`MAXDIM`), which also bounds recursion here.
const DIMENSIONS_MAX: usize = 6;

/// An array's text as JSON, its elements read as `element_oid`; `None` if the text is
/// not an array this parser reads.
pub(super) fn to_json(element_oid: u32, text: &[u8]) -> Option<Value> {
    let mut parser = Parser {
        text,
        pos: 0,
        element_oid,
    };
    parser.skip_white_space();
    let value = parser.list(1)?;
    parser.skip_white_space();
    (parser.pos == text.len()).then_some(value)
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
    element_oid: u32,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn skip_white_space(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    /// `{` elements `}`, at nesting depth `depth`.
    fn list(&mut self, depth: usize) -> Option<Value> {
        if depth > DIMENSIONS_MAX || self.next()? != b'{' {
            return None;
        }
        let mut items = Vec::new();
        self.skip_white_space();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(Value::Array(items));
        }
        loop {
            self.skip_white_space();
            let item = match self.peek()? {
                b'{' => self.list(depth + 1)?,
                b'"' => {
                    let text = self.quoted()?;
                    super::to_json(self.element_oid, &text)
                }
                _ => match self.unquoted()? {
                    None => Value::Null,
                    Some(text) => super::to_json(self.element_oid, &text),
                },
            };
            items.push(item);
            self.skip_white_space();
            match self.next()? {
                b',' => continue,
                b'}' => return Some(Value::Array(items)),
                _ => return None,
            }
        }
    }

    /// A quoted element, without its quotes and escapes.
    fn quoted(&mut self) -> Option<Vec<u8>> {
        debug_assert_eq!(self.peek(), Some(b'"'));
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.next()? {
                b'"' => return Some(out),
                b'\\' => out.push(self.next()?),
                b => out.push(b),
            }
        }
    }

    /// An unquoted element up to the next `,` or `}`, trailing white space dropped;
    /// `Some(None)` for `NULL`.
    fn unquoted(&mut self) -> Option<Option<Vec<u8>>> {
        let mut out = Vec::new();
        let mut escaped = false;
        // Length of `out` up to its last byte that is not unescaped white space.
        let mut kept = 0;
        loop {
            match self.peek()? {
                b',' | b'}' => break,
                b'{' | b'"' => return None,
                b'\\' => {
                    self.pos += 1;
                    out.push(self.next()?);
                    escaped = true;
                    kept = out.len();
                }
                b => {
                    self.pos += 1;
                    out.push(b);
                    if !b.is_ascii_whitespace() {
                        kept = out.len();
                    }
                }
            }
        }
        out.truncate(kept);
        if out.is_empty() {
            return None;
        }
        if !escaped && out.eq_ignore_ascii_case(b"NULL") {
            return Some(None);
        }
        Some(Some(out))
    }
}

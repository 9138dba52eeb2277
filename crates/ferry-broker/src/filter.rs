//! Record filters for subscriptions: which records of a topic a subscription sees.
//!
//! A filter is JSON, every part optional, all parts required to match:
//!
//! ```json
//! {"subject": "orders.*.created", "headers": {"region": "eu", "tier": ["gold", "silver"], "trace": {"exists": true}}}
//! ```
//!
//! - `subject` matches the record key read as a dotted subject. Tokens are separated by
//!   `.`; `*` matches exactly one token; `>` matches one or more tokens and may only be
//!   last. `orders.>` matches `orders.eu.created` but not `orders`. A record without a
//!   key, or whose key is not UTF-8, never matches a subject.
//! - `headers` maps a header name to a value (the header must have it), a list of values
//!   (any of them), or `{"exists": true|false}`. A record with the header several times
//!   matches if any occurrence does. Header names are compared ASCII case-insensitively,
//!   as everywhere in Ferry (`ferry_log::Record::header`); values exactly.
//!
//! Parsing checks everything and names the problem, so a bad filter is refused when the
//! subscription is created, never at delivery.

use ferry_log::batch::RecordHeader;
use serde_json::Value;

/// Limits on filters, named with their unit last.
pub const SUBJECT_BYTES_MAX: usize = 1024;
pub const SUBJECT_TOKENS_MAX: usize = 64;
pub const HEADER_PREDICATES_MAX: usize = 32;
pub const HEADER_VALUES_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    /// `*`: one token.
    One,
    /// `>`: one or more tokens, last only.
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HeaderTest {
    AnyOf(Vec<Vec<u8>>),
    Exists(bool),
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    subject: Option<Vec<Token>>,
    headers: Vec<(Vec<u8>, HeaderTest)>,
}

/// Why a filter does not parse; `path` says where (e.g. `headers.tier[1]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter at {path}: {message}")]
pub struct FilterError {
    pub path: String,
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> FilterError {
    FilterError {
        path: path.into(),
        message: message.into(),
    }
}

fn parse_subject(s: &str) -> Result<Vec<Token>, FilterError> {
    if s.is_empty() {
        return Err(err("subject", "is empty"));
    }
    if s.len() > SUBJECT_BYTES_MAX {
        return Err(err(
            "subject",
            format!("is longer than {SUBJECT_BYTES_MAX} bytes"),
        ));
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > SUBJECT_TOKENS_MAX {
        return Err(err(
            "subject",
            format!("has more than {SUBJECT_TOKENS_MAX} tokens"),
        ));
    }
    let mut tokens = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let token = match *part {
            "" => {
                return Err(err(
                    "subject",
                    format!(
                        "token {} is empty (two dots in a row, or a dot at an end)",
                        i + 1
                    ),
                ))
            }
            "*" => Token::One,
            ">" if i + 1 == parts.len() => Token::Rest,
            ">" => return Err(err("subject", "'>' may only be the last token")),
            p if p.contains('*') || p.contains('>') => {
                return Err(err(
                    "subject",
                    format!("token {p:?} mixes a wildcard with other characters"),
                ))
            }
            p => Token::Literal(p.to_string()),
        };
        tokens.push(token);
    }
    Ok(tokens)
}

fn value_bytes(v: &Value, path: &str) -> Result<Vec<u8>, FilterError> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Number(n) => Ok(n.to_string().into_bytes()),
        Value::Bool(b) => Ok(b.to_string().into_bytes()),
        _ => Err(err(
            path,
            "a header value must be a string, number or boolean",
        )),
    }
}

impl Filter {
    /// Parses a filter from its JSON form.
    pub fn parse(v: &Value) -> Result<Filter, FilterError> {
        let Value::Object(m) = v else {
            return Err(err(
                "filter",
                "must be an object with \"subject\" and/or \"headers\"",
            ));
        };
        let mut f = Filter::default();
        for (k, v) in m {
            match k.as_str() {
                "subject" => {
                    let Value::String(s) = v else {
                        return Err(err(
                            "subject",
                            "must be a string such as \"orders.*.created\"",
                        ));
                    };
                    f.subject = Some(parse_subject(s)?);
                }
                "headers" => {
                    let Value::Object(h) = v else {
                        return Err(err("headers", "must be an object of header name to value"));
                    };
                    if h.len() > HEADER_PREDICATES_MAX {
                        return Err(err(
                            "headers",
                            format!("has more than {HEADER_PREDICATES_MAX} predicates"),
                        ));
                    }
                    for (name, test) in h {
                        let path = format!("headers.{name}");
                        let t = match test {
                            Value::Array(values) => {
                                if values.is_empty() || values.len() > HEADER_VALUES_MAX {
                                    return Err(err(
                                        path,
                                        format!("a list needs 1 to {HEADER_VALUES_MAX} values"),
                                    ));
                                }
                                let vals = values
                                    .iter()
                                    .enumerate()
                                    .map(|(i, x)| value_bytes(x, &format!("{path}[{i}]")))
                                    .collect::<Result<Vec<_>, _>>()?;
                                HeaderTest::AnyOf(vals)
                            }
                            Value::Object(o) => match (o.len(), o.get("exists")) {
                                (1, Some(Value::Bool(b))) => HeaderTest::Exists(*b),
                                _ => return Err(err(
                                    path,
                                    "an object must be {\"exists\": true} or {\"exists\": false}",
                                )),
                            },
                            other => HeaderTest::AnyOf(vec![value_bytes(other, &path)?]),
                        };
                        f.headers.push((name.as_bytes().to_vec(), t));
                    }
                }
                other => {
                    return Err(err(
                        other,
                        "unknown part; a filter has \"subject\" and \"headers\"",
                    ))
                }
            }
        }
        Ok(f)
    }

    /// Whether a record with this key and these headers passes.
    pub fn matches(&self, key: Option<&[u8]>, headers: &[RecordHeader]) -> bool {
        if let Some(pattern) = &self.subject {
            let Some(subject) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
                return false;
            };
            if !subject_matches(pattern, subject) {
                return false;
            }
        }
        self.headers.iter().all(|(name, test)| {
            let mut values = headers.iter().filter(|h| h.key.eq_ignore_ascii_case(name));
            match test {
                HeaderTest::Exists(want) => values.next().is_some() == *want,
                HeaderTest::AnyOf(allowed) => values.any(|h| {
                    h.value
                        .as_ref()
                        .is_some_and(|v| allowed.iter().any(|a| a.as_slice() == v.as_ref()))
                }),
            }
        })
    }
}

fn subject_matches(pattern: &[Token], subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for (i, p) in pattern.iter().enumerate() {
        match p {
            Token::Rest => {
                debug_assert_eq!(i + 1, pattern.len());
                return tokens.next().is_some_and(|t| !t.is_empty());
            }
            Token::One => match tokens.next() {
                Some(t) if !t.is_empty() => {}
                _ => return false,
            },
            Token::Literal(l) => match tokens.next() {
                Some(t) if t == l => {}
                _ => return false,
            },
        }
    }
    tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use serde_json::json;

    fn h(k: &str, v: &str) -> RecordHeader {
        RecordHeader {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
        }
    }

    #[test]
    fn subjects_match_with_one_and_rest_wildcards() {
        let f = Filter::parse(&json!({"subject": "orders.*.created"})).unwrap();
        assert!(f.matches(Some(b"orders.eu.created"), &[]));
        assert!(!f.matches(Some(b"orders.eu.west.created"), &[]));
        assert!(!f.matches(Some(b"orders.eu.deleted"), &[]));
        assert!(!f.matches(None, &[]));
        let f = Filter::parse(&json!({"subject": "orders.>"})).unwrap();
        assert!(f.matches(Some(b"orders.eu"), &[]));
        assert!(f.matches(Some(b"orders.eu.west.created"), &[]));
        assert!(!f.matches(Some(b"orders"), &[]));
        assert!(!f.matches(Some(b"payments.eu"), &[]));
    }

    #[test]
    fn header_predicates_all_have_to_hold() {
        let f = Filter::parse(&json!({"headers": {"region": "eu", "tier": ["gold", "silver"], "trace": {"exists": true}, "debug": {"exists": false}}}))
            .unwrap();
        let good = [h("region", "eu"), h("tier", "silver"), h("trace", "t1")];
        assert!(f.matches(Some(b"k"), &good));
        assert!(!f.matches(
            Some(b"k"),
            &[h("region", "us"), h("tier", "gold"), h("trace", "t")]
        ));
        assert!(!f.matches(
            Some(b"k"),
            &[h("region", "eu"), h("tier", "bronze"), h("trace", "t")]
        ));
        assert!(!f.matches(Some(b"k"), &[h("region", "eu"), h("tier", "gold")]));
        let mut debug = good.to_vec();
        debug.push(h("debug", "1"));
        assert!(!f.matches(Some(b"k"), &debug));
        // Any occurrence of a repeated header may match.
        let f = Filter::parse(&json!({"headers": {"tag": "b"}})).unwrap();
        assert!(f.matches(None, &[h("tag", "a"), h("tag", "b")]));
    }

    #[test]
    fn bad_filters_are_refused_with_where_and_why() {
        let cases = [
            (json!("orders.*"), "filter"),
            (json!({"subject": ""}), "subject"),
            (json!({"subject": "orders..x"}), "subject"),
            (json!({"subject": "orders.>.x"}), "subject"),
            (json!({"subject": "ord*ers"}), "subject"),
            (json!({"subject": 5}), "subject"),
            (json!({"headers": {"tier": []}}), "headers.tier"),
            (json!({"headers": {"tier": [1, null]}}), "headers.tier[1]"),
            (json!({"headers": {"x": {"exist": true}}}), "headers.x"),
            (json!({"subjet": "a"}), "subjet"),
        ];
        for (v, path) in cases {
            let e = Filter::parse(&v).unwrap_err();
            assert_eq!(e.path, path, "{v}: {e}");
            assert!(!e.message.is_empty());
        }
    }

    /// A plain reference: match token lists recursively.
    fn reference(pattern: &[&str], subject: &[&str]) -> bool {
        match (pattern.first(), subject.first()) {
            (None, None) => true,
            (Some(&">"), Some(_)) => true,
            (Some(&"*"), Some(s)) => !s.is_empty() && reference(&pattern[1..], &subject[1..]),
            (Some(p), Some(s)) => p == s && reference(&pattern[1..], &subject[1..]),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn subject_matching_agrees_with_a_reference(
            pattern in proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("*")], 1..5),
            rest in any::<bool>(),
            subject in proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..7),
        ) {
            let mut pattern: Vec<&str> = pattern;
            if rest {
                pattern.push(">");
            }
            let f = Filter::parse(&json!({"subject": pattern.join(".")})).unwrap();
            let key = subject.join(".");
            prop_assert_eq!(f.matches(Some(key.as_bytes()), &[]), reference(&pattern, &subject));
        }

        #[test]
        fn any_json_string_parses_or_is_refused_without_panicking(s in ".{0,40}") {
            let _ = Filter::parse(&json!({"subject": s}));
        }
    }
}

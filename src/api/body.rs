//! The one body policy of every edge: what JSON Hopper accepts, and how a refusal
//! is worded. A body is stored as sent and handed to other programs later, so
//! anything their JSON parsers would choke on is refused here, at the door: nesting
//! past [`MAX_DEPTH`] levels, a string with a lone UTF-16 surrogate, a number out of
//! the range of a double (`1e400`). Details speak the caller's terms (fields,
//! arrays, objects, numbers), never the Rust types behind them.

use std::fmt;

use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, IgnoredAny, Visitor};
use serde_json::value::RawValue;

use super::ApiError;

/// Deepest nesting accepted: serde_json's own recursion limit, which also guards
/// every typed parse; beyond it many parsers (and stacks) give up.
pub const MAX_DEPTH: usize = 127;

/// Checks `bytes` against the policy and returns the JSON as sent, less the
/// whitespace around it.
pub fn json_text(bytes: &[u8]) -> Result<&RawValue, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("a JSON body is required"));
    }
    let mut checker = serde_json::Deserializer::from_slice(bytes);
    Checked::deserialize(&mut checker)
        .and_then(|_| checker.end())
        .map_err(|e| syntax_error(&e))?;
    serde_json::from_slice(bytes).map_err(|e| syntax_error(&e))
}

/// Parses a JSON object body into `T` under the policy; the error names the field
/// and says what was expected. Arrays are refused even where serde would map them
/// onto a struct's fields in order.
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = json_text(bytes)?;
    if !text.get().starts_with('{') {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    parse_checked(text.get())
}

/// Parses JSON already checked by [`json_text`] into `T`, naming the field a
/// mismatch is in.
pub fn parse_checked<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            syntax_error(&inner)
        } else {
            ApiError::bad_request(field_error(&path, &without_position(&inner.to_string())))
        }
    })
}

/// Parses a query string or form body (`application/x-www-form-urlencoded`) into
/// `T`, naming the parameter a bad value is in.
pub fn parse_form<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(text.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        ApiError::bad_request(field_error(&path, &error.into_inner().to_string()))
    })
}

/// `"<field> must ..."` for Hopper's own rules, `"<field>: <what serde saw>"` for
/// the rest; no field for the whole body.
fn field_error(path: &str, message: &str) -> String {
    let message = user_terms(message);
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return match path {
            "" | "." => format!("{field} is required"),
            _ => format!("{path}.{field} is required"),
        };
    }
    // serde's path of an unknown field ends with the field itself, which the message names.
    let path = match message.starts_with("unknown field") {
        true => path.rsplit_once('.').map_or("", |(parent, _)| parent),
        false => path,
    };
    match path {
        "" | "." => message,
        _ if message.starts_with("must ") || message.starts_with("is ") => {
            format!("{path} {message}")
        }
        _ => format!("{path}: {message}"),
    }
}

fn syntax_error(error: &serde_json::Error) -> ApiError {
    let message = error.to_string();
    let detail = if message.starts_with("recursion limit exceeded") {
        format!("invalid JSON: nested deeper than {MAX_DEPTH} levels")
    } else if message.starts_with("number out of range") {
        "invalid JSON: a number is out of range (beyond ±1.7976931348623157e308)".to_owned()
    } else if message.contains("hex escape") || message.contains("surrogate") {
        format!("invalid JSON: a string escape is not a valid character (a lone UTF-16 surrogate?) at line {} column {}", error.line(), error.column())
    } else {
        format!("invalid JSON: {message}")
    };
    ApiError::bad_request(detail)
}

/// Drops serde_json's " at line L column C" from data errors: a field name says more.
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// serde's words for JSON's and a caller's: sequences are arrays, maps are objects,
/// and integer types are ranges.
fn user_terms(message: &str) -> String {
    const TERMS: &[(&str, &str)] = &[
        ("expected a sequence", "expected an array"),
        ("invalid type: sequence", "invalid type: array"),
        ("expected a map", "expected an object"),
        ("invalid type: map", "invalid type: object"),
        ("invalid type: unit value", "invalid type: null"),
        ("expected unit", "expected null"),
        ("expected u8", "expected an integer from 0 to 255"),
        ("expected u16", "expected an integer from 0 to 65535"),
        ("expected u32", "expected an integer from 0 to 4294967295"),
        ("expected u64", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
        ("expected i32", "expected an integer"),
        ("expected i64", "expected an integer"),
        ("expected f64", "expected a number"),
        ("invalid digit found in string", "must be an integer"),
        (
            "cannot parse integer from empty string",
            "must be an integer",
        ),
        ("number too large to fit in target type", "is too large"),
        ("number too small to fit in target type", "is too small"),
        ("invalid float literal", "must be a number"),
        (
            "provided string was not `true` or `false`",
            "must be true or false",
        ),
    ];
    let mut text = message.to_owned();
    for (rust, caller) in TERMS {
        text = text.replace(rust, caller);
    }
    text
}

/// Walks any JSON value through serde_json's parser, which enforces the depth limit,
/// decodes every string (refusing lone surrogates) and every number (refusing those
/// out of range), while keeping nothing.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Checked, E> {
        if value.is_finite() {
            Ok(Checked)
        } else {
            Err(E::custom("number out of range"))
        }
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        // Keys are decoded as strings by serde_json, so their escapes are checked too.
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> String {
        json_text(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn what_parsers_choke_on_is_refused_and_the_rest_kept_as_sent() {
        assert_eq!(
            json_text(b" {\"a\": [1, 2.5, \"\\u00e9\"]} ")
                .unwrap()
                .get(),
            "{\"a\": [1, 2.5, \"\\u00e9\"]}"
        );
        let deep = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(json_text(deep.as_bytes()).is_ok());
        let deeper = "[".repeat(100_000) + &"]".repeat(100_000);
        assert_eq!(
            refused(&deeper),
            format!("invalid JSON: nested deeper than {MAX_DEPTH} levels")
        );
        assert!(refused(r#"{"a": "\ud800"}"#).contains("lone UTF-16 surrogate"));
        assert!(refused(r#"{"\udc00": 1}"#).contains("lone UTF-16 surrogate"));
        assert!(refused(r#"{"a": 1e400}"#).contains("out of range"));
        assert!(refused("{} x").starts_with("invalid JSON: trailing characters"));
        assert_eq!(refused("  "), "a JSON body is required");
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        receipts: Vec<String>,
        delay: Option<u32>,
    }

    #[test]
    fn errors_name_the_field_in_json_terms() {
        let error = |body: &str| {
            parse_object::<Body>(body.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(error("[[\"r\"]]"), "the body must be a JSON object");
        assert_eq!(
            error(r#"{"receipts": 5}"#),
            "receipts: invalid type: integer `5`, expected an array"
        );
        assert_eq!(
            error(r#"{"receipts": [], "delay": -1}"#),
            "delay: invalid value: integer `-1`, expected an integer from 0 to 4294967295"
        );
        assert_eq!(error("{}"), "receipts is required");
        assert!(error(r#"{"receipts": [], "x": 1}"#).starts_with("unknown field `x`"));
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Query {
        count: Option<u32>,
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let error = |query: &str| parse_form::<Query>(query).unwrap_err().to_string();
        assert_eq!(error("count=abc"), "count must be an integer");
        assert_eq!(error("count=1&count=2"), "duplicate field `count`");
        assert!(parse_form::<Query>("other=1").is_ok());
    }
}

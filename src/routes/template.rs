//! Answer templates of `respond` and `empty`: JSON in which a string that is exactly
//! `{{name}}` becomes that value as JSON, and `{{name}}` inside a longer string
//! becomes its text. Compiled once at start, so a request never meets a bad template
//! or an unknown name.

use serde_json::{Map, Value};

/// A compiled JSON template.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    /// JSON without any placeholder, answered as written.
    Literal(Value),
    /// A string that is exactly `{{name}}`: the value itself, as JSON.
    Whole(String),
    /// A string with placeholders among text: the values' text spliced in.
    Text(Vec<Piece>),
    /// An array whose items are templates.
    Array(Vec<Template>),
    /// An object whose values are templates; keys are literal.
    Object(Vec<(String, Template)>),
}

/// A part of a [`Template::Text`].
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Text kept as written.
    Literal(String),
    /// A placeholder's name.
    Name(String),
}

/// The values a request offers to its templates, by name.
#[derive(Debug, Default)]
pub struct Values(Vec<(String, Value)>);

impl Values {
    /// Adds (or replaces) `name`.
    pub fn set(&mut self, name: &str, value: Value) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    fn get(&self, name: &str) -> &Value {
        // Names are checked at start, so a missing one is a bug; null keeps the answer valid.
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&Value::Null, |(_, v)| v)
    }
}

impl Template {
    /// Compiles `value`; an error says which string is malformed and why.
    pub fn compile(value: &Value) -> Result<Template, String> {
        let template = match value {
            Value::String(text) => compile_text(text)?,
            Value::Array(items) => Template::Array(
                items
                    .iter()
                    .map(Template::compile)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(fields) => Template::Object(
                fields
                    .iter()
                    .map(|(key, value)| Ok((key.clone(), Template::compile(value)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => Template::Literal(other.clone()),
        };
        // A subtree without placeholders is answered as written, without a walk.
        Ok(match template {
            Template::Array(ref items) if items.iter().all(Template::is_literal) => {
                Template::Literal(value.clone())
            }
            Template::Object(ref fields) if fields.iter().all(|(_, t)| t.is_literal()) => {
                Template::Literal(value.clone())
            }
            other => other,
        })
    }

    fn is_literal(&self) -> bool {
        matches!(self, Template::Literal(_))
    }

    /// Every placeholder name, in order of appearance.
    pub fn names(&self) -> Vec<&str> {
        let mut names = Vec::new();
        self.collect_names(&mut names);
        names
    }

    fn collect_names<'a>(&'a self, names: &mut Vec<&'a str>) {
        match self {
            Template::Literal(_) => {}
            Template::Whole(name) => names.push(name),
            Template::Text(pieces) => names.extend(pieces.iter().filter_map(|p| match p {
                Piece::Name(name) => Some(name.as_str()),
                Piece::Literal(_) => None,
            })),
            Template::Array(items) => items.iter().for_each(|t| t.collect_names(names)),
            Template::Object(fields) => fields.iter().for_each(|(_, t)| t.collect_names(names)),
        }
    }

    /// The JSON answer for `values`.
    pub fn render(&self, values: &Values) -> Value {
        match self {
            Template::Literal(value) => value.clone(),
            Template::Whole(name) => values.get(name).clone(),
            Template::Text(pieces) => {
                let mut text = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Literal(literal) => text.push_str(literal),
                        Piece::Name(name) => push_text(&mut text, values.get(name)),
                    }
                }
                Value::String(text)
            }
            Template::Array(items) => {
                Value::Array(items.iter().map(|t| t.render(values)).collect())
            }
            Template::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(key, t)| (key.clone(), t.render(values)))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

/// A value as text inside a string: a string's own text, anything else as compact JSON.
fn push_text(text: &mut String, value: &Value) {
    match value {
        Value::String(inner) => text.push_str(inner),
        other => text.push_str(&other.to_string()),
    }
}

fn compile_text(text: &str) -> Result<Template, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            pieces.push(Piece::Literal(rest[..open].to_owned()));
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("{text:?} opens {{{{ without closing it with }}}}"))?;
        let name = after[..close].trim();
        if !is_name(name) {
            return Err(format!(
                "{text:?} holds {{{{{}}}}}: a placeholder is {{{{name}}}} with a name of letters, digits and _",
                &after[..close]
            ));
        }
        pieces.push(Piece::Name(name.to_owned()));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest.to_owned()));
    }
    Ok(match pieces.as_slice() {
        [] => Template::Literal(Value::String(String::new())),
        [Piece::Literal(_)] => Template::Literal(Value::String(text.to_owned())),
        [Piece::Name(name)] => Template::Whole(name.clone()),
        _ => Template::Text(pieces),
    })
}

/// A placeholder or path parameter name: a letter or `_`, then letters, digits or `_`.
pub fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values() -> Values {
        let mut values = Values::default();
        values.set("count", json!(3));
        values.set("message", json!({"a": [1, "x"]}));
        values.set("name", json!("Ana"));
        values
    }

    #[test]
    fn whole_placeholders_keep_their_json_and_inner_ones_their_text() {
        let template = Template::compile(&json!({
            "count": "{{count}}",
            "spaced": "{{ count }}",
            "message": ["{{message}}", "got {{message}}"],
            "greeting": "hello {{name}}, {{count}} left",
            "plain": {"n": 1, "s": "no placeholder }}"},
        }))
        .unwrap();
        assert_eq!(
            template.render(&values()),
            json!({
                "count": 3,
                "spaced": 3,
                "message": [{"a": [1, "x"]}, r#"got {"a":[1,"x"]}"#],
                "greeting": "hello Ana, 3 left",
                "plain": {"n": 1, "s": "no placeholder }}"},
            })
        );
        // Object keys come sorted (serde_json's map), so names come in key order.
        assert_eq!(
            template.names(),
            ["count", "name", "count", "message", "message", "count"]
        );
        let literal = Template::compile(&json!({"status": "OK"})).unwrap();
        assert_eq!(literal, Template::Literal(json!({"status": "OK"})));
    }

    #[test]
    fn malformed_placeholders_are_refused() {
        for bad in ["{{", "a {{count", "{{}}", "{{a b}}", "{{1x}}", "{{a-b}}"] {
            assert!(Template::compile(&json!(bad)).is_err(), "{bad:?} accepted");
        }
        assert!(Template::compile(&json!({"deep": ["{{ok}}", "{{"]})).is_err());
    }
}

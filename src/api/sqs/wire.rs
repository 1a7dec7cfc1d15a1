//! SQS's two wire protocols. AWS JSON 1.0 (`X-Amz-Target: AmazonSQS.<Action>`,
//! what current SDKs speak) carries parameters and answers as JSON objects; the
//! query protocol (a form body with `Action=...`, what older SDKs speak) flattens
//! them into numbered keys and answers in XML. A query request is turned into the
//! JSON object the same call would have sent, and an answer is written from the
//! JSON object, so each action is written once, in JSON's shape.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{Map, Value};

/// The protocol a request speaks; its answer speaks the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// AWS JSON 1.0.
    Json,
    /// The query protocol: form parameters in, XML out.
    Query,
}

/// The content type of JSON requests and answers.
pub const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.0";
/// The XML namespace of query answers.
const XMLNS: &str = "http://queue.amazonaws.com/doc/2012-11-05/";

/// The JSON object a query request's parameters stand for: `Attribute.1.Name=A`
/// and `Attribute.1.Value=B` become `"Attributes": {"A": "B"}`, `AttributeName.1`
/// becomes `"AttributeNames": [...]`, `<X>BatchRequestEntry.N.<field>` becomes
/// `"Entries": [{...}]`, and so on. Values stay text; actions read numbers and
/// booleans from text or JSON alike. `Action` and `Version` are left out.
pub fn query_to_json(pairs: &[(String, String)]) -> Map<String, Value> {
    let mut tree = Node::default();
    for (key, value) in pairs {
        if key == "Action" || key == "Version" {
            continue;
        }
        tree.insert(key.split('.'), value.clone());
    }
    match tree.into_json() {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Keys of a query request as a tree, before numbered children become arrays.
#[derive(Default)]
struct Node {
    value: Option<String>,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn insert<'a>(&mut self, mut path: impl Iterator<Item = &'a str>, value: String) {
        match path.next() {
            Some(step) => self
                .children
                .entry(step.to_owned())
                .or_default()
                .insert(path, value),
            None => self.value = Some(value),
        }
    }

    fn into_json(self) -> Value {
        if self.children.is_empty() {
            return Value::String(self.value.unwrap_or_default());
        }
        let numbered = self
            .children
            .keys()
            .all(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()));
        if numbered {
            let mut items: Vec<(u64, Node)> = self
                .children
                .into_iter()
                .map(|(k, node)| (k.parse().unwrap_or(u64::MAX), node))
                .collect();
            items.sort_by_key(|(n, _)| *n);
            return Value::Array(items.into_iter().map(|(_, n)| n.into_json()).collect());
        }
        let mut map = Map::new();
        for (key, node) in self.children {
            let value = node.into_json();
            let (key, value) = renamed(&key, value);
            map.insert(key, value);
        }
        Value::Object(map)
    }
}

/// A flattened query member under its JSON name and shape.
fn renamed(key: &str, value: Value) -> (String, Value) {
    let pairs_to_map = |value: Value, name: &str, inner: &str| {
        let mut map = Map::new();
        for item in as_items(value) {
            if let Value::Object(mut item) = item {
                let name = item
                    .remove(name)
                    .and_then(|n| n.as_str().map(str::to_owned));
                if let (Some(name), Some(inner)) = (name, item.remove(inner)) {
                    map.insert(name, inner);
                }
            }
        }
        Value::Object(map)
    };
    match key {
        "Attribute" => ("Attributes".into(), pairs_to_map(value, "Name", "Value")),
        "MessageAttribute" => (
            "MessageAttributes".into(),
            pairs_to_map(value, "Name", "Value"),
        ),
        "MessageSystemAttribute" => (
            "MessageSystemAttributes".into(),
            pairs_to_map(value, "Name", "Value"),
        ),
        "Tag" => ("Tags".into(), pairs_to_map(value, "Key", "Value")),
        "AttributeName" | "MessageAttributeName" | "MessageSystemAttributeName" | "TagKey" => {
            (format!("{key}s"), Value::Array(as_items(value)))
        }
        entry if entry.ends_with("BatchRequestEntry") => {
            ("Entries".into(), Value::Array(as_items(value)))
        }
        _ => (key.to_owned(), value),
    }
}

/// A member that should be a list, as one: a lone value is a list of one.
fn as_items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        other => vec![other],
    }
}

/// The XML answer of a query request: the JSON answer inside `<ActionResponse>`'s
/// `<ActionResult>`, lists and maps written as the query protocol flattens them.
pub fn xml_answer(action: &str, answer: &Map<String, Value>, request_id: &str) -> String {
    let mut out = String::with_capacity(256);
    let _ = write!(
        out,
        r#"<?xml version="1.0" encoding="UTF-8"?><{action}Response xmlns="{XMLNS}"><{action}Result>"#
    );
    write_members(&mut out, action, answer);
    let _ = write!(
        out,
        "</{action}Result><ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{action}Response>"
    );
    out
}

fn write_members(out: &mut String, action: &str, members: &Map<String, Value>) {
    for (key, value) in members {
        match (key.as_str(), value) {
            ("Messages", Value::Array(items)) => write_list(out, action, "Message", items),
            ("QueueUrls" | "queueUrls", Value::Array(items)) => {
                write_list(out, action, "QueueUrl", items)
            }
            ("Successful", Value::Array(items)) => {
                write_list(out, action, &format!("{action}ResultEntry"), items)
            }
            ("Failed", Value::Array(items)) => {
                write_list(out, action, "BatchResultErrorEntry", items)
            }
            ("Attributes", Value::Object(map)) => write_pairs(out, "Attribute", "Name", map),
            ("Tags", Value::Object(map)) => write_pairs(out, "Tag", "Key", map),
            ("MessageAttributes", Value::Object(map)) => {
                for (name, value) in map {
                    let _ = write!(
                        out,
                        "<MessageAttribute><Name>{}</Name><Value>",
                        escape(name)
                    );
                    if let Value::Object(fields) = value {
                        write_members(out, action, fields);
                    }
                    out.push_str("</Value></MessageAttribute>");
                }
            }
            (_, value) => write_element(out, action, key, value),
        }
    }
}

fn write_list(out: &mut String, action: &str, element: &str, items: &[Value]) {
    for item in items {
        write_element(out, action, element, item);
    }
}

fn write_pairs(out: &mut String, element: &str, name: &str, map: &Map<String, Value>) {
    for (key, value) in map {
        let _ = write!(
            out,
            "<{element}><{name}>{}</{name}><Value>{}</Value></{element}>",
            escape(key),
            escape(&scalar_text(value))
        );
    }
}

fn write_element(out: &mut String, action: &str, element: &str, value: &Value) {
    match value {
        Value::Object(fields) => {
            let _ = write!(out, "<{element}>");
            write_members(out, action, fields);
            let _ = write!(out, "</{element}>");
        }
        Value::Array(items) => write_list(out, action, element, items),
        Value::Null => {}
        scalar => {
            let _ = write!(
                out,
                "<{element}>{}</{element}>",
                escape(&scalar_text(scalar))
            );
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Text as XML character data: markup escaped, and characters XML 1.0 cannot
/// hold at all (which SQS refuses in bodies anyway) written as references.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
    out
}

/// The XML answer of a failed query request.
pub fn xml_error(code: &str, sender: bool, message: &str, request_id: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><ErrorResponse xmlns="{XMLNS}"><Error><Type>{}</Type><Code>{}</Code><Message>{}</Message><Detail/></Error><RequestId>{request_id}</RequestId></ErrorResponse>"#,
        if sender { "Sender" } else { "Receiver" },
        escape(code),
        escape(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(raw: &[(&str, &str)]) -> Vec<(String, String)> {
        raw.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn query_parameters_become_the_json_request() {
        let json = query_to_json(&pairs(&[
            ("Action", "SendMessageBatch"),
            ("QueueUrl", "http://h/sqs/0/q"),
            ("SendMessageBatchRequestEntry.2.Id", "b"),
            ("SendMessageBatchRequestEntry.1.Id", "a"),
            ("SendMessageBatchRequestEntry.1.MessageBody", "x"),
            (
                "SendMessageBatchRequestEntry.1.MessageAttribute.1.Name",
                "k",
            ),
            (
                "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType",
                "String",
            ),
            (
                "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue",
                "v",
            ),
            ("SendMessageBatchRequestEntry.10.Id", "c"),
        ]));
        assert_eq!(
            Value::Object(json),
            serde_json::json!({
                "QueueUrl": "http://h/sqs/0/q",
                "Entries": [
                    {"Id": "a", "MessageBody": "x",
                     "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}},
                    {"Id": "b"},
                    {"Id": "c"},
                ]
            })
        );
        let json = query_to_json(&pairs(&[
            ("Attribute.1.Name", "DelaySeconds"),
            ("Attribute.1.Value", "5"),
            ("AttributeName.1", "All"),
        ]));
        assert_eq!(
            Value::Object(json),
            serde_json::json!({"Attributes": {"DelaySeconds": "5"}, "AttributeNames": ["All"]})
        );
    }

    #[test]
    fn answers_are_written_as_the_query_protocol_flattens_them() {
        let answer = serde_json::json!({
            "Messages": [{"MessageId": "1", "Body": "<a&b>",
                          "Attributes": {"SentTimestamp": "5"},
                          "MessageAttributes": {"k": {"StringValue": "v", "DataType": "String"}}}],
        });
        let xml = xml_answer("ReceiveMessage", answer.as_object().unwrap(), "r");
        assert!(!xml.contains("<ReceiveMessageResult><Message><Attributes>"));
        assert!(xml.contains("<Body>&lt;a&amp;b&gt;</Body>"), "{xml}");
        assert!(
            xml.contains("<Attribute><Name>SentTimestamp</Name><Value>5</Value></Attribute>"),
            "{xml}"
        );
        assert!(xml.contains("<MessageAttribute><Name>k</Name><Value><DataType>String</DataType><StringValue>v</StringValue></Value></MessageAttribute>"), "{xml}");
        let batch = serde_json::json!({"Successful": [{"Id": "a"}], "Failed": []});
        let xml = xml_answer("DeleteMessageBatch", batch.as_object().unwrap(), "r");
        assert!(
            xml.contains(
                "<DeleteMessageBatchResultEntry><Id>a</Id></DeleteMessageBatchResultEntry>"
            ),
            "{xml}"
        );
    }
}

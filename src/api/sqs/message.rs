//! An SQS message on a Hopper queue: its body (JSON kept as it is, any other text
//! carried as a JSON string), its message attributes in the message's metadata,
//! and the MD5 digests SDKs check.

use std::collections::BTreeMap;

use base64::Engine;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::error::{SqsError, SqsResult, INVALID_PARAMETER_VALUE};

/// Largest message (body and attributes), as SQS's `MaximumMessageSize` allows.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Most message attributes on one message.
const MAX_ATTRIBUTES: usize = 10;

/// One message attribute, as SQS's JSON protocol writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeValue {
    /// `String`, `Number` or `Binary`, optionally with a `.custom` suffix.
    pub data_type: String,
    /// The value of a `String` or `Number` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    /// The value of a `Binary` attribute, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_value: Option<String>,
}

/// Message attributes by name.
pub type Attributes = BTreeMap<String, AttributeValue>;

/// What an SQS message keeps in the message's metadata.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Meta {
    /// The body was text that is not JSON, carried as a JSON string.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    text: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    attributes: Attributes,
}

/// A message as SQS stores it on a queue: the JSON body and the metadata.
pub struct Stored {
    /// The JSON body.
    pub body: String,
    /// The metadata, when there is any.
    pub meta: Option<String>,
}

/// Checks a body and its attributes as SQS does, and makes the message Hopper stores.
pub fn store(body: &str, attributes: Attributes) -> SqsResult<Stored> {
    if body.is_empty() {
        return Err(SqsError::new(
            INVALID_PARAMETER_VALUE,
            "The request must contain the parameter MessageBody.",
        ));
    }
    if let Some(bad) = body.chars().find(|c| !allowed_in_body(*c)) {
        return Err(SqsError::new(
            super::error::INVALID_MESSAGE_CONTENTS,
            format!(
                "Invalid binary character '#x{:X}' was found in the message body; the set of allowed characters is #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF",
                bad as u32
            ),
        ));
    }
    check_attributes(&attributes)?;
    if body.len() + attributes_size(&attributes) > MAX_MESSAGE_BYTES {
        return Err(SqsError::new(
            INVALID_PARAMETER_VALUE,
            format!("One or more parameters are invalid. Reason: Message must be shorter than {MAX_MESSAGE_BYTES} bytes."),
        ));
    }
    // Kept as it is when it is JSON as Hopper hands JSON back (no surrounding space),
    // so Hopper's own consumers see the document; otherwise a JSON string of it.
    let is_json =
        body.trim() == body && serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok();
    let meta = Meta {
        text: !is_json,
        attributes,
    };
    let body = if is_json {
        body.to_owned()
    } else {
        serde_json::to_string(body).unwrap_or_default()
    };
    let meta = (meta.text || !meta.attributes.is_empty())
        .then(|| serde_json::to_string(&meta).unwrap_or_default());
    Ok(Stored { body, meta })
}

/// A stored message's SQS body and attributes; a message Hopper's own API pushed
/// (no metadata) has its JSON text as body and no attributes.
pub fn load(body: String, meta: Option<&str>) -> (String, Attributes) {
    let meta: Meta = meta
        .and_then(|raw| serde_json::from_str(raw).ok())
        .unwrap_or_default();
    let body = if meta.text {
        serde_json::from_str::<String>(&body).unwrap_or(body)
    } else {
        body
    };
    (body, meta.attributes)
}

/// Characters SQS accepts in a body.
fn allowed_in_body(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn attributes_size(attributes: &Attributes) -> usize {
    attributes
        .iter()
        .map(|(name, value)| {
            name.len()
                + value.data_type.len()
                + value.string_value.as_ref().map_or(0, String::len)
                + value.binary_value.as_ref().map_or(0, |b| b.len() * 3 / 4)
        })
        .sum()
}

fn check_attributes(attributes: &Attributes) -> SqsResult<()> {
    let invalid = |message: String| Err(SqsError::new(INVALID_PARAMETER_VALUE, message));
    if attributes.len() > MAX_ATTRIBUTES {
        return invalid(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [{MAX_ATTRIBUTES}].",
            attributes.len()
        ));
    }
    for (name, value) in attributes {
        let name_ok = !name.is_empty()
            && name.len() <= 256
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..")
            && !name.to_ascii_lowercase().starts_with("aws.")
            && !name.to_ascii_lowercase().starts_with("amazon.");
        if !name_ok {
            return invalid(format!("Message attribute name '{name}' is invalid."));
        }
        let base = value.data_type.split('.').next().unwrap_or_default();
        match base {
            "String" | "Number" => match &value.string_value {
                Some(text) if !text.is_empty() => {
                    if base == "Number" && text.parse::<f64>().is_err() {
                        return invalid(format!(
                            "Could not cast message attribute '{name}' value to number."
                        ));
                    }
                }
                _ => {
                    return invalid(format!(
                        "Message attribute '{name}' must contain a non-empty message attribute value for message attribute type '{base}'."
                    ))
                }
            },
            "Binary" => match &value.binary_value {
                Some(raw) if base64::engine::general_purpose::STANDARD.decode(raw).is_ok_and(|b| !b.is_empty()) => {}
                _ => {
                    return invalid(format!(
                        "Message attribute '{name}' must contain a non-empty message attribute value for message attribute type 'Binary'."
                    ))
                }
            },
            _ => {
                return invalid(format!(
                    "The type of message (user) attribute '{name}' is invalid. You must use only the following supported type prefixes: Binary, Number, String."
                ))
            }
        }
    }
    Ok(())
}

/// The hex MD5 of a body's UTF-8 bytes (`MD5OfMessageBody`, `MD5OfBody`).
pub fn md5_of_body(body: &str) -> String {
    hex(&Md5::digest(body.as_bytes()))
}

/// `MD5OfMessageAttributes` as the SDKs compute it: for each attribute in name
/// order, its name, data type and value, each as a 4-byte big-endian length and
/// the bytes, with a transport byte (1 text, 2 binary) just before the value.
pub fn md5_of_attributes(attributes: &Attributes) -> Option<String> {
    if attributes.is_empty() {
        return None;
    }
    let mut buffer = Vec::new();
    let field = |buffer: &mut Vec<u8>, bytes: &[u8]| {
        buffer.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        buffer.extend_from_slice(bytes);
    };
    for (name, value) in attributes {
        field(&mut buffer, name.as_bytes());
        field(&mut buffer, value.data_type.as_bytes());
        if value.data_type.starts_with("Binary") {
            let bytes = value
                .binary_value
                .as_deref()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .unwrap_or_default();
            buffer.push(2);
            field(&mut buffer, &bytes);
        } else {
            buffer.push(1);
            field(
                &mut buffer,
                value.string_value.as_deref().unwrap_or_default().as_bytes(),
            );
        }
    }
    Some(hex(&Md5::digest(&buffer)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_json_round_trips_as_a_json_string() {
        for body in ["hello", " {}", "{\"a\": 1}", "\"quoted\"", "42", "{broken"] {
            let stored = store(body, Attributes::new()).unwrap();
            serde_json::from_str::<serde_json::Value>(&stored.body).unwrap();
            let (back, attributes) = load(stored.body, stored.meta.as_deref());
            assert_eq!(back, body);
            assert!(attributes.is_empty());
        }
        assert!(store("", Attributes::new()).is_err());
        assert!(store("a\u{1}b", Attributes::new()).is_err());
    }

    #[test]
    fn digests_match_the_sdks() {
        assert_eq!(md5_of_body("hello"), "5d41402abc4b2a76b9719d911017c592");
        // As botocore computes it for {"a": String "b"}.
        let attributes = Attributes::from([(
            "a".to_owned(),
            AttributeValue {
                data_type: "String".into(),
                string_value: Some("b".into()),
                binary_value: None,
            },
        )]);
        let mut expected = Vec::new();
        for part in [&b"a"[..], b"String"] {
            expected.extend_from_slice(&(part.len() as u32).to_be_bytes());
            expected.extend_from_slice(part);
        }
        expected.push(1);
        expected.extend_from_slice(&1u32.to_be_bytes());
        expected.push(b'b');
        assert_eq!(
            md5_of_attributes(&attributes).unwrap(),
            hex(&Md5::digest(&expected))
        );
    }
}

//! Reads a JSON companion, `<video name>.json` (`clip.mov.json` for `clip.mov`): `title`,
//! `description`, `keywords` (list of text), `channels` (list of channel ids), `group`,
//! `custom_metadata` (object of text), `auto_publish` and `reference`. Each field is checked
//! by hand so that a wrong type is named with its field ("`channels`: expected a list of
//! channel ids, found text"); an unknown field is refused like an unknown config key, since a
//! misspelt `titel` would otherwise be dropped in silence.

use serde_json::{Map, Value};

use super::FileMetadata;

/// A JSON companion, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonCompanion {
    pub reference: Option<String>,
    pub metadata: FileMetadata,
}

/// Why a JSON companion is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonCompanionError {
    #[error("it is not valid JSON: {0}")]
    Syntax(String),
    #[error("it must be a JSON object ({{\"title\": …}}), not {0}")]
    NotAnObject(&'static str),
    #[error("`{field}`: expected {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: String,
    },
    #[error(
        "`{0}` is not a known field (title, description, keywords, channels, group, custom_metadata, auto_publish, reference)"
    )]
    UnknownField(String),
    #[error("`{0}` is given more than once; which one is meant is not for hotfolder to guess")]
    Repeated(String),
    #[error(
        "`{field}` contains the control character U+{code:04X}; a companion's text may not hold control characters (tab and line breaks aside)"
    )]
    ControlCharacter { field: String, code: u32 },
}

/// A JSON value read with every object's keys checked for repeats (serde_json keeps the
/// last of two silently).
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if fields.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("{REPEATED}{key}")));
            }
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

/// How a repeated key is told apart from other syntax errors.
const REPEATED: &str = "repeated key: ";

/// Reads `text` as a JSON companion.
pub fn parse(text: &str) -> Result<JsonCompanion, JsonCompanionError> {
    let value = match serde_json::from_str::<Strict>(text) {
        Ok(Strict(value)) => value,
        Err(err) => {
            let said = err.to_string();
            return Err(match said.strip_prefix(REPEATED) {
                Some(rest) => JsonCompanionError::Repeated(
                    rest.rsplit_once(" at line ")
                        .map_or(rest, |(key, _)| key)
                        .to_owned(),
                ),
                None => JsonCompanionError::Syntax(said),
            });
        }
    };
    let Value::Object(fields) = value else {
        return Err(JsonCompanionError::NotAnObject(kind(&value)));
    };
    let mut metadata = FileMetadata::default();
    let mut reference = None;
    for (field, value) in &fields {
        match field.as_str() {
            "title" => metadata.title = Some(text_of(field, value)?),
            "description" => metadata.description = Some(text_of(field, value)?),
            "reference" => reference = Some(text_of(field, value)?),
            // Empty keywords are dropped, as in a job XML.
            "keywords" => {
                let mut keywords = texts_of(field, value)?;
                keywords.retain(|k| !k.trim().is_empty());
                metadata.keywords = Some(keywords);
            }
            "channels" => metadata.channels = ids_of(field, value)?,
            "group" => metadata.group = Some(id_of(field, value)?),
            "auto_publish" => match value {
                Value::Bool(publish) => metadata.publish = Some(*publish),
                other => return Err(wrong(field, "true or false", other)),
            },
            "custom_metadata" => match value {
                Value::Object(custom) => {
                    metadata.custom_metadata = custom_of(field, custom)?;
                }
                other => return Err(wrong(field, "an object of field names and values", other)),
            },
            other => return Err(JsonCompanionError::UnknownField(other.to_owned())),
        }
    }
    Ok(JsonCompanion {
        reference,
        metadata,
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn wrong(field: &str, expected: &'static str, found: &Value) -> JsonCompanionError {
    let shown = match found {
        Value::String(text) => format!("text {text:?}"),
        Value::Number(n) => format!("the number {n}"),
        other => kind(other).to_owned(),
    };
    JsonCompanionError::WrongType {
        field: field.to_owned(),
        expected,
        found: shown,
    }
}

fn text_of(field: &str, value: &Value) -> Result<String, JsonCompanionError> {
    match value {
        Value::String(text) => {
            if let Some(c) = text
                .chars()
                .find(|c| super::job_xml::is_forbidden_control(*c))
            {
                return Err(JsonCompanionError::ControlCharacter {
                    field: field.to_owned(),
                    code: u32::from(c),
                });
            }
            Ok(text.clone())
        }
        other => Err(wrong(field, "text", other)),
    }
}

fn texts_of(field: &str, value: &Value) -> Result<Vec<String>, JsonCompanionError> {
    let Value::Array(items) = value else {
        return Err(wrong(field, "a list of text", value));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| text_of(&format!("{field}[{i}]"), item))
        .collect()
}

fn id_of(field: &str, value: &Value) -> Result<u64, JsonCompanionError> {
    match value.as_u64() {
        Some(id) if id > 0 => Ok(id),
        _ => Err(wrong(field, "a positive whole number (an id)", value)),
    }
}

fn ids_of(field: &str, value: &Value) -> Result<Vec<u64>, JsonCompanionError> {
    let Value::Array(items) = value else {
        return Err(wrong(field, "a list of channel ids", value));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| id_of(&format!("{field}[{i}]"), item))
        .collect()
}

/// Custom metadata values: text, or a number or true/false written as text.
fn custom_of(
    field: &str,
    custom: &Map<String, Value>,
) -> Result<std::collections::BTreeMap<String, String>, JsonCompanionError> {
    custom
        .iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(_) => text_of(&format!("{field}.{name}"), value)?,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(wrong(
                        &format!("{field}.{name}"),
                        "text, a number or true/false",
                        other,
                    ));
                }
            };
            Ok((name.clone(), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_json_companion_reads_every_field() {
        let parsed = parse(
            r#"{"title": "Summer", "description": "d", "keywords": ["a", "b"], "channels": [3054, 3055],
                "group": 2233, "custom_metadata": {"production company": "MGM", "year": 2019},
                "auto_publish": true, "reference": "abc"}"#,
        )
        .unwrap();
        let m = parsed.metadata;
        assert_eq!(m.title.as_deref(), Some("Summer"));
        assert_eq!(m.channels, vec![3054, 3055]);
        assert_eq!(m.group, Some(2233));
        assert_eq!(m.publish, Some(true));
        assert_eq!(m.custom_metadata["year"], "2019");
        assert_eq!(parsed.reference.as_deref(), Some("abc"));
    }

    #[test]
    fn metadata_json_empty_keywords_are_dropped_as_in_xml() {
        let parsed = parse(r#"{"keywords": ["", "k1", "  "]}"#).unwrap();
        assert_eq!(parsed.metadata.keywords, Some(vec!["k1".to_string()]));
    }

    #[test]
    fn metadata_json_wrong_types_name_their_field() {
        for (text, expected) in [
            (
                r#"{"channels": "3054"}"#,
                "`channels`: expected a list of channel ids, found text \"3054\"",
            ),
            (r#"{"channels": [3054, "x"]}"#, "`channels[1]`"),
            (
                r#"{"title": 5}"#,
                "`title`: expected text, found the number 5",
            ),
            (
                r#"{"auto_publish": "yes"}"#,
                "`auto_publish`: expected true or false",
            ),
            (
                r#"{"group": -1}"#,
                "`group`: expected a positive whole number",
            ),
            (r#"{"custom_metadata": {"a": [1]}}"#, "`custom_metadata.a`"),
            (r#"{"titel": "x"}"#, "`titel` is not a known field"),
            (r#"[1]"#, "must be a JSON object"),
            (r#"{"title": "#, "not valid JSON"),
            (
                r#"{"title": "a", "title": "b"}"#,
                "`title` is given more than once",
            ),
            (
                r#"{"custom_metadata": {"a": "1", "a": "2"}}"#,
                "`a` is given more than once",
            ),
            (
                r#"{"title": "a\u0001b"}"#,
                "`title` contains the control character U+0001",
            ),
            (
                r#"{"keywords": ["\u001b[31m"]}"#,
                "`keywords[0]` contains the control character U+001B",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}

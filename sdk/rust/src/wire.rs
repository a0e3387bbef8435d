//! Typed commands and events on the wire: a name and a JSON payload text.
//!
//! A guest's command and event enums are serde enums tagged
//! `#[serde(tag = "name", content = "payload")]`. This module reads a
//! (name, payload) pair into such an enum without building an intermediate
//! JSON value, writes an enum back into a pair, and asks serde itself for the
//! enum's names, so the lists the host sees can never disagree with what the
//! guest parses (renames included).

use crate::raw;
use serde::de::value::{BorrowedStrDeserializer, StrDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// Why a (name, payload) pair did not read as the enum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The name is none of the enum's; `known` lists them.
    UnknownName {
        name: String,
        known: &'static [&'static str],
    },
    /// The name is known, the payload is not what it carries.
    Invalid(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::UnknownName { name, known } => {
                write!(f, "unknown name {name:?}, expected one of {known:?}")
            }
            WireError::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for WireError {}

impl de::Error for WireError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        WireError::Invalid(message.to_string())
    }

    // serde's derive reports a tag that names no variant here, with the list
    // of variants: that is both how an unknown name is told apart from a bad
    // payload and how `names` learns the list.
    fn unknown_variant(name: &str, known: &'static [&'static str]) -> Self {
        WireError::UnknownName {
            name: name.to_owned(),
            known,
        }
    }
}

/// Reads the pair as an enum tagged `name`/`payload`.
pub fn from_pair<T: de::DeserializeOwned>(name: &str, payload: &str) -> Result<T, WireError> {
    T::deserialize(Pair {
        name,
        payload: Some(payload),
    })
}

/// Writes an enum tagged `name`/`payload` as a pair. A variant with no
/// payload (a unit variant) gets the payload `null`.
pub fn to_pair<T: Serialize>(value: &T) -> Result<raw::Event, WireError> {
    #[derive(Deserialize)]
    struct Tagged<'a> {
        name: String,
        #[serde(borrow)]
        payload: Option<&'a RawValue>,
    }
    let text = serde_json::to_string(value).map_err(de::Error::custom)?;
    let tagged: Tagged = serde_json::from_str(&text).map_err(|_| {
        WireError::Invalid(format!(
            "{} is not tagged #[serde(tag = \"name\", content = \"payload\")]",
            std::any::type_name::<T>()
        ))
    })?;
    Ok(raw::Event {
        name: tagged.name,
        payload: tagged.payload.map_or("null", RawValue::get).to_owned(),
    })
}

/// Every name the enum reads, in declaration order, as serde sees them.
/// `None` when the enum is not tagged `name`/`payload`, or has a
/// `#[serde(other)]` variant that swallows every name.
pub fn names<T: de::DeserializeOwned>() -> Option<&'static [&'static str]> {
    // A name no enum has: serde answers with the list it expected.
    match T::deserialize(Pair {
        name: "\u{0}eshost: no such name",
        payload: None,
    }) {
        Err(WireError::UnknownName { known, .. }) => Some(known),
        _ => None,
    }
}

/// A name and a payload, presented to serde as the map
/// `{"name": ..., "payload": ...}` (name first, so serde reads the payload
/// straight into the variant without buffering it).
struct Pair<'a> {
    name: &'a str,
    payload: Option<&'a str>,
}

impl<'de> de::Deserializer<'de> for Pair<'de> {
    type Error = WireError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, WireError> {
        visitor.visit_map(PairFields {
            pair: self,
            next: Field::Name,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Field {
    Name,
    Payload,
    Done,
}

struct PairFields<'a> {
    pair: Pair<'a>,
    next: Field,
}

impl<'de> MapAccess<'de> for PairFields<'de> {
    type Error = WireError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, WireError> {
        let key = match self.next {
            Field::Name => "name",
            Field::Payload if self.pair.payload.is_some() => "payload",
            Field::Payload | Field::Done => return Ok(None),
        };
        let key: StrDeserializer<WireError> = key.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, WireError> {
        match self.next {
            Field::Name => {
                self.next = Field::Payload;
                seed.deserialize(BorrowedStrDeserializer::new(self.pair.name))
            }
            _ => {
                self.next = Field::Done;
                let payload = self.pair.payload.unwrap_or("null");
                let mut json = serde_json::Deserializer::from_str(payload);
                let value = seed.deserialize(&mut json).map_err(de::Error::custom)?;
                json.end().map_err(de::Error::custom)?;
                Ok(value)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "name", content = "payload")]
    enum Command {
        Open {
            owner: String,
        },
        #[serde(rename = "Shut")]
        Close,
        Move(Target),
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Target {
        to_place: String,
        steps: u32,
    }

    /// Externally tagged, serde's default: not the wire's shape.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Untagged {
        A,
    }

    #[test]
    fn names_come_from_serde_renames_included() {
        assert_eq!(names::<Command>(), Some(&["Open", "Shut", "Move"][..]));
        assert_eq!(names::<Target>(), None);
        assert_eq!(names::<Untagged>(), None);
    }

    #[test]
    fn a_pair_reads_into_its_variant() {
        assert_eq!(
            from_pair::<Command>("Open", r#"{"owner":"ada"}"#),
            Ok(Command::Open {
                owner: "ada".into()
            })
        );
        assert_eq!(from_pair::<Command>("Shut", "null"), Ok(Command::Close));
        assert_eq!(
            from_pair::<Command>("Move", r#" {"toPlace":"x","steps":2} "#),
            Ok(Command::Move(Target {
                to_place: "x".into(),
                steps: 2
            }))
        );
    }

    #[test]
    fn an_unknown_name_is_told_apart_from_a_bad_payload() {
        assert!(matches!(
            from_pair::<Command>("Close", "null"),
            Err(WireError::UnknownName { name, .. }) if name == "Close"
        ));
        let Err(WireError::Invalid(message)) = from_pair::<Command>("Move", r#"{"steps":2}"#)
        else {
            panic!("a missing field is an invalid payload");
        };
        assert!(message.contains("toPlace"), "{message}");
        assert!(matches!(
            from_pair::<Command>("Open", r#"{"owner":"ada"} trailing"#),
            Err(WireError::Invalid(_))
        ));
        assert!(matches!(
            from_pair::<Command>("Open", "{not json"),
            Err(WireError::Invalid(_))
        ));
    }

    #[test]
    fn a_variant_writes_as_a_pair_keeping_field_order() {
        let event = to_pair(&Command::Move(Target {
            to_place: "x".into(),
            steps: 2,
        }))
        .unwrap();
        assert_eq!(event.name, "Move");
        assert_eq!(event.payload, r#"{"toPlace":"x","steps":2}"#);
        assert_eq!(to_pair(&Command::Close).unwrap().payload, "null");
        assert!(
            to_pair(&Target {
                to_place: "x".into(),
                steps: 1
            })
            .is_err()
        );
    }
}

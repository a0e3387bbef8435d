//! Personal data in events (contract 0.3.0). An event field whose type is
//! [`Subject`] names the person the event is about; a field whose type is
//! [`Personal<T>`] holds more of their personal data. The SDK reads those
//! types from the event enum and declares them in the manifest, so the
//! declaration lives on the field and cannot drift from it. The host keeps
//! such fields encrypted under the subject's own key; once the subject is
//! forgotten, each reads as [`Forgotten`], which the types make the domain
//! logic handle.
//!
//! ```
//! use eshost_guest::{Personal, Subject};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! #[serde(tag = "name", content = "payload", rename_all_fields = "camelCase")]
//! pub enum Event {
//!     ItemPurchased { buyer_id: Subject, quantity: u64 },
//!     ItemShipped { buyer_id: Subject, address: Personal<String> },
//! }
//!
//! let declared = eshost_guest::personal::declarations::<Event>(&["ItemPurchased", "ItemShipped"]);
//! assert_eq!(declared[1].subject, "buyerId");
//! assert_eq!(declared[1].fields, ["address"]);
//! ```

mod stand_in;

use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The name [`Subject`] gives serde, by which the SDK finds it.
const SUBJECT_MARKER: &str = "$eshost::Subject";
/// The name [`Personal`] gives serde, by which the SDK finds it.
const PERSONAL_MARKER: &str = "$eshost::Personal";

/// What stands in a forgotten subject's fields: their pseudonym, the same
/// in each of their fields and events. It tells forgotten subjects apart
/// and says nothing of who they were. On the wire, `{"$forgotten": PSEUDONYM}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Forgotten {
    #[serde(rename = "$forgotten")]
    pub pseudonym: String,
}

/// A field that holds personal data: its value, or once the subject is
/// forgotten, [`Forgotten`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Personal<T> {
    Known(T),
    Forgotten(Forgotten),
}

impl<T> Personal<T> {
    /// The value, unless it was forgotten.
    pub fn known(&self) -> Option<&T> {
        match self {
            Self::Known(value) => Some(value),
            Self::Forgotten(_) => None,
        }
    }
}

impl<T> From<T> for Personal<T> {
    fn from(value: T) -> Self {
        Self::Known(value)
    }
}

/// The field that names the data subject: their id, or once they are
/// forgotten, [`Forgotten`]. One per event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject(pub Personal<String>);

impl Subject {
    pub fn new(id: impl Into<String>) -> Self {
        Self(Personal::Known(id.into()))
    }

    /// The subject's id, unless they were forgotten.
    pub fn id(&self) -> Option<&str> {
        self.0.known().map(String::as_str)
    }

    /// What tells this subject apart from others: their id, or once
    /// forgotten, their pseudonym.
    pub fn key(&self) -> &str {
        match &self.0 {
            Personal::Known(id) => id,
            Personal::Forgotten(f) => &f.pseudonym,
        }
    }
}

impl From<&str> for Subject {
    fn from(id: &str) -> Self {
        Self::new(id)
    }
}

impl From<String> for Subject {
    fn from(id: String) -> Self {
        Self::new(id)
    }
}

/// In a compact binary format (a snapshot), as an enum.
#[derive(Serialize, Deserialize)]
enum Compact<T> {
    Known(T),
    Forgotten(String),
}

impl<T: Serialize> Serialize for Personal<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (self, serializer.is_human_readable()) {
            (Self::Known(value), true) => value.serialize(serializer),
            (Self::Forgotten(f), true) => f.serialize(serializer),
            (Self::Known(value), false) => Compact::Known(value).serialize(serializer),
            (Self::Forgotten(f), false) => {
                Compact::<&T>::Forgotten(f.pseudonym.clone()).serialize(serializer)
            }
        }
    }
}

impl Serialize for Subject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Reads a personal value in either format: in JSON, the value or a
/// tombstone; in a binary format, the enum.
fn read_personal<'de, T: DeserializeOwned, D: Deserializer<'de>>(
    d: D,
) -> Result<Personal<T>, D::Error> {
    if !d.is_human_readable() {
        return Ok(match Compact::<T>::deserialize(d)? {
            Compact::Known(value) => Personal::Known(value),
            Compact::Forgotten(pseudonym) => Personal::Forgotten(Forgotten { pseudonym }),
        });
    }
    let value = serde_json::Value::deserialize(d)?;
    if let Some(pseudonym) = value.get("$forgotten").and_then(|p| p.as_str())
        && value.as_object().is_some_and(|o| o.len() == 1)
    {
        return Ok(Personal::Forgotten(Forgotten {
            pseudonym: pseudonym.to_owned(),
        }));
    }
    T::deserialize(value)
        .map(Personal::Known)
        .map_err(de::Error::custom)
}

/// Deserializes through `deserialize_newtype_struct(marker)`, so the SDK's
/// tracer sees the marker.
struct Marked<T>(std::marker::PhantomData<T>);

impl<'de, T: DeserializeOwned> Visitor<'de> for Marked<T> {
    type Value = Personal<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a personal value, or {\"$forgotten\": PSEUDONYM}")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Personal<T>, D::Error> {
        read_personal(d)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Personal<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_newtype_struct(PERSONAL_MARKER, Marked(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_newtype_struct(SUBJECT_MARKER, Marked(std::marker::PhantomData))
            .map(Subject)
    }
}

/// One event's personal data, as the manifest declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    pub event: &'static str,
    /// The field of type [`Subject`].
    pub subject: &'static str,
    /// The fields of type [`Personal`].
    pub fields: Vec<&'static str>,
}

/// The events among `events` that hold personal data, read from the
/// types of their fields: each event is deserialized from stand-in values,
/// where a [`Subject`] or [`Personal`] field gets a tombstone naming its
/// type, then serialized, and the fields that hold those tombstones are
/// the declaration. Top-level fields only, as the contract declares them;
/// serde's names, renames included.
///
/// # Panics
/// On an event with personal fields and no [`Subject`], or with two; or
/// whose payload type cannot be made from stand-ins. A programming error
/// the guest's first `describe` reports.
pub fn declarations<E: DeserializeOwned + Serialize>(events: &[&'static str]) -> Vec<Declaration> {
    let mut declared = Vec::new();
    for &event in events {
        let value = stand_in::event::<E>(event).unwrap_or_else(|e| {
            panic!("cannot find the personal data of event {event}: its payload type cannot be made from stand-in values ({e})")
        });
        let json = serde_json::to_value(&value).unwrap_or_default();
        let mut subjects = Vec::new();
        let mut fields = Vec::new();
        if let Some(payload) = json.get("payload").and_then(|p| p.as_object()) {
            for (field, value) in payload {
                match value.get("$forgotten").and_then(|p| p.as_str()) {
                    Some(stand_in::SUBJECT_PROBE) => subjects.push(field.clone()),
                    Some(stand_in::PERSONAL_PROBE) => fields.push(field.clone()),
                    _ => {}
                }
            }
        }
        let leak = |names: Vec<String>| -> Vec<&'static str> {
            // Once per event type, when the guest describes itself.
            names
                .into_iter()
                .map(|n| &*Box::leak(n.into_boxed_str()))
                .collect()
        };
        match (subjects.as_slice(), fields.is_empty()) {
            ([], true) => {}
            ([_], _) => declared.push(Declaration {
                event,
                subject: leak(subjects)[0],
                fields: leak(fields),
            }),
            ([], false) => panic!(
                "event {event} has Personal fields ({fields:?}) and no Subject field naming whose they are"
            ),
            (many, _) => panic!(
                "event {event} has {} Subject fields ({many:?}); an event is about one subject",
                many.len()
            ),
        }
    }
    declared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "name", content = "payload", rename_all_fields = "camelCase")]
    enum Event {
        Created {
            stock: u64,
        },
        Purchased {
            buyer_id: Subject,
            quantity: u64,
        },
        Shipped {
            carrier: String,
            buyer_id: Subject,
            #[serde(rename = "addr")]
            address: Personal<Vec<String>>,
            note: Option<Personal<String>>,
        },
        Closed,
    }

    const EVENTS: &[&str] = &["Created", "Purchased", "Shipped", "Closed"];

    #[test]
    fn the_declarations_come_from_the_field_types_with_serde_names() {
        let declared = declarations::<Event>(EVENTS);
        assert_eq!(
            declared,
            [
                Declaration {
                    event: "Purchased",
                    subject: "buyerId",
                    fields: vec![],
                },
                Declaration {
                    event: "Shipped",
                    subject: "buyerId",
                    fields: vec!["addr", "note"],
                },
            ]
        );
    }

    #[test]
    fn a_forgotten_value_reads_as_such_in_json_and_in_a_snapshot() {
        let json = r#"{"name":"Shipped","payload":{"carrier":"bpost","buyerId":{"$forgotten":"psn_1"},"addr":{"$forgotten":"psn_1"},"note":null}}"#;
        let event: Event = serde_json::from_str(json).unwrap();
        let gone = Forgotten {
            pseudonym: "psn_1".into(),
        };
        assert_eq!(
            event,
            Event::Shipped {
                carrier: "bpost".into(),
                buyer_id: Subject(Personal::Forgotten(gone.clone())),
                address: Personal::Forgotten(gone.clone()),
                note: None,
            }
        );
        assert_eq!(serde_json::to_string(&event).unwrap(), json);
        let known: Event = serde_json::from_str(
            r#"{"name":"Purchased","payload":{"buyerId":"ann","quantity":1}}"#,
        )
        .unwrap();
        assert_eq!(
            known,
            Event::Purchased {
                buyer_id: Subject::new("ann"),
                quantity: 1
            }
        );
        for value in [Subject::new("ann"), Subject(Personal::Forgotten(gone))] {
            let bytes = postcard::to_allocvec(&value).unwrap();
            assert_eq!(postcard::from_bytes::<Subject>(&bytes).unwrap(), value);
        }
    }

    #[test]
    #[should_panic(expected = "event Lost has Personal fields ([\"address\"]) and no Subject")]
    fn personal_fields_without_a_subject_are_a_programming_error() {
        #[derive(Serialize, Deserialize)]
        #[serde(tag = "name", content = "payload")]
        #[allow(dead_code)]
        enum Bad {
            Lost { address: Personal<String> },
        }
        declarations::<Bad>(&["Lost"]);
    }
}

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

use serde::de::{self, DeserializeOwned, IntoDeserializer, MapAccess, Visitor};
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

/// The pseudonyms the tracer's stand-in values carry: a field that
/// serializes as one of these tombstones is of the marker's type.
const SUBJECT_PROBE: &str = "\u{0}eshost: subject";
const PERSONAL_PROBE: &str = "\u{0}eshost: personal";

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
        // A unit variant has no payload to make.
        let value = E::deserialize(Top { event, payload: true })
            .or_else(|e| E::deserialize(Top { event, payload: false }).map_err(|_| e))
            .unwrap_or_else(|e| {
                panic!("cannot find the personal data of event {event}: its payload type cannot be made from stand-in values ({e})")
            });
        let json = serde_json::to_value(&value).unwrap_or_default();
        let mut subjects = Vec::new();
        let mut fields = Vec::new();
        if let Some(payload) = json.get("payload").and_then(|p| p.as_object()) {
            for (field, value) in payload {
                match value.get("$forgotten").and_then(|p| p.as_str()) {
                    Some(SUBJECT_PROBE) => subjects.push(field.clone()),
                    Some(PERSONAL_PROBE) => fields.push(field.clone()),
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

type Error = de::value::Error;

/// Stand-ins read this deep at most: a recursive type ends there.
const MAX_DEPTH: usize = 16;

/// The fields a payload's stand-in offers, by index (a struct takes those
/// it has and ignores the rest).
const MAX_FIELDS: u64 = 256;

/// The event as `{"name": event, "payload": STAND-IN}`, or without the
/// payload.
struct Top {
    event: &'static str,
    payload: bool,
}

impl<'de> Deserializer<'de> for Top {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(TopMembers {
            event: self.event,
            next: 0,
            last: if self.payload { 2 } else { 1 },
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct TopMembers {
    event: &'static str,
    next: u8,
    last: u8,
}

impl<'de> MapAccess<'de> for TopMembers {
    type Error = Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let key = match self.next {
            n if n == self.last => return Ok(None),
            0 => "name",
            _ => "payload",
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        self.next += 1;
        if self.next == 1 {
            seed.deserialize(self.event.into_deserializer())
        } else {
            seed.deserialize(StandIn { depth: 0 })
        }
    }
}

/// A value of whatever type asks: zero, empty, the first variant; a
/// tombstone naming the marker for [`Subject`] and [`Personal`].
#[derive(Clone, Copy)]
struct StandIn {
    depth: usize,
}

impl StandIn {
    fn deeper(self) -> Self {
        Self {
            depth: self.depth + 1,
        }
    }

    fn elements(self, count: usize) -> StandIns {
        StandIns {
            left: if self.depth < MAX_DEPTH { count } else { 0 },
            each: self.deeper(),
        }
    }
}

impl<'de> Deserializer<'de> for StandIn {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.depth == 0 {
            // The payload: an adjacently tagged variant's content is read
            // as any map; its fields are named by their index.
            visitor.visit_map(IndexedFields {
                next: 0,
                each: self.deeper(),
            })
        } else {
            // A JSON value, an untagged enum: null, if it takes one.
            visitor.visit_unit()
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bool(false)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i64(0)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(0)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f64(0.0)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_char(' ')
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("")
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bytes(&[])
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // Some, so an optional personal field is found too.
        if self.depth < MAX_DEPTH {
            visitor.visit_some(self.deeper())
        } else {
            visitor.visit_none()
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        let probe = match name {
            SUBJECT_MARKER => SUBJECT_PROBE,
            PERSONAL_MARKER => PERSONAL_PROBE,
            _ => return visitor.visit_newtype_struct(self.deeper()),
        };
        let tombstone = serde_json::json!({ "$forgotten": probe });
        visitor
            .visit_newtype_struct(tombstone)
            .map_err(de::Error::custom)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(self.elements(0))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(self.elements(len))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_seq(self.elements(len))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(de::value::MapDeserializer::new(
            std::iter::empty::<((), ())>(),
        ))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_seq(self.elements(fields.len()))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let first = variants.first().copied().unwrap_or_default();
        visitor.visit_enum(FirstVariant {
            name: first,
            each: self.deeper(),
        })
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(0)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("")
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bytes(&[])
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i64(0)
    }

    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i64(0)
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i64(0)
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i64(0)
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(0)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(0)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(0)
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(0)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f64(0.0)
    }
}

/// A payload's fields, by index, each a stand-in.
struct IndexedFields {
    next: u64,
    each: StandIn,
}

impl<'de> MapAccess<'de> for IndexedFields {
    type Error = Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.next == MAX_FIELDS {
            return Ok(None);
        }
        self.next += 1;
        seed.deserialize((self.next - 1).into_deserializer())
            .map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(self.each)
    }
}

/// A sequence of stand-ins.
struct StandIns {
    left: usize,
    each: StandIn,
}

impl<'de> de::SeqAccess<'de> for StandIns {
    type Error = Error;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(self.each).map(Some)
    }
}

/// An enum's first variant, made of stand-ins.
struct FirstVariant {
    name: &'static str,
    each: StandIn,
}

impl<'de> de::EnumAccess<'de> for FirstVariant {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: de::DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let variant = seed.deserialize(self.name.into_deserializer())?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for FirstVariant {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self.each)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(self.each.elements(len))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_seq(self.each.elements(fields.len()))
    }
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

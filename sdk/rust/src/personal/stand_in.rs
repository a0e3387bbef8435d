//! Values of any serde type made from nothing: zero, empty, the first
//! variant; and, for [`Subject`](super::Subject) and
//! [`Personal`](super::Personal), a tombstone that names the marker. An
//! event made of them, serialized, shows which of its fields are personal
//! (see [`declarations`](super::declarations)).

use super::{PERSONAL_MARKER, SUBJECT_MARKER};
use serde::Deserializer;
use serde::de::{self, DeserializeOwned, IntoDeserializer, MapAccess, Visitor};

/// The pseudonyms the tracer's stand-in values carry: a field that
/// serializes as one of these tombstones is of the marker's type.
pub(super) const SUBJECT_PROBE: &str = "\u{0}eshost: subject";
pub(super) const PERSONAL_PROBE: &str = "\u{0}eshost: personal";

/// The event `event` of `E`, made of stand-ins. A unit variant has no
/// payload to make, so an event is tried without one too.
pub(super) fn event<E: DeserializeOwned>(event: &'static str) -> Result<E, Error> {
    E::deserialize(Top {
        event,
        payload: true,
    })
    .or_else(|e| {
        E::deserialize(Top {
            event,
            payload: false,
        })
        .map_err(|_| e)
    })
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

//! The list of buyers, one entry per purchase, kept as one text buffer and
//! the end offset of each entry rather than one `String` per buyer.
//!
//! A hot item collects a hundred thousand buyers, and a snapshot restore
//! that allocates a string for each spends most of its time in the
//! allocator. Here a restore fills two growing buffers instead. To serde
//! (and so to `eshost state`, specs and snapshots) it is a plain list of
//! strings.

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Buyers {
    text: String,
    /// `ends[i]` is where entry `i` ends in `text`; it starts where entry
    /// `i - 1` ends.
    ends: Vec<usize>,
}

impl Buyers {
    pub fn push(&mut self, buyer: &str) {
        self.text.push_str(buyer);
        self.ends.push(self.text.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter())
            .map(|(start, &end)| &self.text[start..end])
    }
}

impl<'a> FromIterator<&'a str> for Buyers {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        let mut buyers = Self::default();
        iter.into_iter().for_each(|b| buyers.push(b));
        buyers
    }
}

impl Serialize for Buyers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        self.iter()
            .try_for_each(|buyer| seq.serialize_element(buyer))?;
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Buyers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(BuyersVisitor)
    }
}

struct BuyersVisitor;

impl<'de> Visitor<'de> for BuyersVisitor {
    type Value = Buyers;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of buyer ids")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Buyers, A::Error> {
        let mut buyers = Buyers::default();
        // The length hint comes from the input: trust it only so far.
        buyers
            .ends
            .reserve(seq.size_hint().unwrap_or(0).min(1 << 16));
        while seq.next_element_seed(Entry(&mut buyers))?.is_some() {}
        Ok(buyers)
    }
}

/// Reads one entry straight into the buffer: the format lends us the text
/// (borrowed or transient), so no `String` is made per entry.
struct Entry<'b>(&'b mut Buyers);

impl<'de> DeserializeSeed<'de> for Entry<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for Entry<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a buyer id")
    }

    fn visit_str<E: serde::de::Error>(self, buyer: &str) -> Result<(), E> {
        self.0.push(buyer);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_entries_apart_whatever_they_contain() {
        let entries = ["ann", "", "b\nc", "ann", "dé\"j"];
        let buyers: Buyers = entries.iter().copied().collect();
        assert_eq!(buyers.len(), 5);
        assert_eq!(buyers.iter().collect::<Vec<_>>(), entries);
        let json = serde_json::to_string(&buyers).unwrap();
        assert_eq!(json, serde_json::to_string(&entries).unwrap());
        assert_eq!(serde_json::from_str::<Buyers>(&json).unwrap(), buyers);
        let bytes = postcard::to_allocvec(&buyers).unwrap();
        assert_eq!(postcard::from_bytes::<Buyers>(&bytes).unwrap(), buyers);
    }
}

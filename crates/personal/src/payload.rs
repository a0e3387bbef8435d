//! An event's payload as stored and as read: the subject field holds the
//! subject's pseudonym and each other declared field `enc:v1:` and the
//! base64 of its sealed JSON; the metadata's `personal` member says which.
//! Read back, the fields hold their plaintext again while the subject's key
//! exists, and the tombstone `{"$forgotten": PSEUDONYM}` once it does not.
//! Members keep their order and undeclared values their exact text.

use crate::declare::PersonalEvent;
use crate::keys::{DataKey, KeyError};
use base64::Engine;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// The metadata member that marks an event with personal data.
pub const MARKER: &str = "personal";

/// What a stored field's ciphertext starts with.
pub const CIPHERTEXT_PREFIX: &str = "enc:v1:";

/// The member a tombstone holds: `{"$forgotten": PSEUDONYM}`.
pub const FORGOTTEN: &str = "$forgotten";

/// The `personal` member of an event's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Marker {
    /// The subject's pseudonym.
    pub subject: String,
    /// The field that held the subject's id.
    pub subject_field: String,
    /// The other fields stored encrypted (those the event had).
    pub fields: Vec<String>,
}

/// Why an event's personal data could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("{event}: the payload is not a JSON object")]
    NotAnObject { event: String },
    #[error("{event}: the subject field `{field}` is missing or not a string")]
    NoSubject { event: String, field: String },
    #[error("{event}: the field `{field}` is not ciphertext eshost wrote")]
    NotCiphertext { event: String, field: String },
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A JSON object's members, in order, each value's text untouched.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Ordered)
    }
}

impl Members {
    fn parse(text: &str, event: &str) -> Result<Self, PayloadError> {
        serde_json::from_str(text).map_err(|_| PayloadError::NotAnObject {
            event: event.to_owned(),
        })
    }

    fn get(&self, field: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == field).map(|(_, v)| &**v)
    }

    fn set(&mut self, field: &str, value: Box<RawValue>) {
        if let Some(slot) = self.0.iter_mut().find(|(k, _)| k == field) {
            slot.1 = value;
        }
    }

    fn text(&self) -> String {
        let mut text = String::from("{");
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&json_string(key));
            text.push(':');
            text.push_str(value.get());
        }
        text.push('}');
        text
    }
}

fn json_string(s: &str) -> String {
    // A string always serializes.
    serde_json::to_string(s).unwrap_or_default()
}

fn raw(text: String) -> Box<RawValue> {
    // Only ever called with JSON this module wrote.
    RawValue::from_string(text).unwrap_or_else(|_| unreachable!())
}

/// What binds a field's ciphertext to its subject and its name.
fn aad(pseudonym: &str, field: &str) -> Vec<u8> {
    format!("{pseudonym}/{field}").into_bytes()
}

/// An event with declared personal data, parsed, waiting for its
/// subject's key.
pub(crate) struct Declared {
    members: Members,
    /// The subject's id.
    pub(crate) subject: String,
}

impl Declared {
    /// Reads the subject's id from the payload.
    pub(crate) fn parse(payload: &str, declared: &PersonalEvent) -> Result<Self, PayloadError> {
        let members = Members::parse(payload, &declared.event)?;
        let subject = members
            .get(&declared.subject)
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
            .ok_or_else(|| PayloadError::NoSubject {
                event: declared.event.clone(),
                field: declared.subject.clone(),
            })?;
        Ok(Self { members, subject })
    }

    /// The payload as stored, and the marker for its metadata.
    pub(crate) fn seal(
        mut self,
        declared: &PersonalEvent,
        pseudonym: &str,
        key: &DataKey,
    ) -> Result<(String, Marker), PayloadError> {
        self.members
            .set(&declared.subject, raw(json_string(pseudonym)));
        let mut fields = Vec::new();
        for field in &declared.fields {
            let Some(value) = self.members.get(field) else {
                continue;
            };
            let sealed = key.seal(value.get().as_bytes(), &aad(pseudonym, field))?;
            let text = format!(
                "{CIPHERTEXT_PREFIX}{}",
                base64::engine::general_purpose::STANDARD.encode(sealed)
            );
            self.members.set(field, raw(json_string(&text)));
            fields.push(field.clone());
        }
        let marker = Marker {
            subject: pseudonym.to_owned(),
            subject_field: declared.subject.clone(),
            fields,
        };
        Ok((self.members.text(), marker))
    }
}

/// `metadata` (a JSON object's text) with the marker added.
pub(crate) fn mark(metadata: &str, marker: &Marker) -> Result<String, PayloadError> {
    let mut members = Members::parse(metadata, "the metadata")?;
    // A marker serializes: strings and a list of strings.
    let text = serde_json::to_string(marker).unwrap_or_default();
    members.0.retain(|(k, _)| k != MARKER);
    members.0.push((MARKER.to_owned(), raw(text)));
    Ok(members.text())
}

/// The marker in an event's metadata, if it has one.
pub fn marker_of(metadata: &serde_json::Value) -> Option<Marker> {
    Marker::deserialize(metadata.get(MARKER)?).ok()
}

/// Whose key opens an event's fields.
pub(crate) enum Holder<'a> {
    /// The subject's key exists: their id, and their key.
    Known { subject: &'a str, key: &'a DataKey },
    /// Forgotten: every declared field reads as the tombstone.
    Forgotten,
}

/// The tombstone of a forgotten subject's field.
pub fn tombstone(pseudonym: &str) -> String {
    format!("{{{}:{}}}", json_string(FORGOTTEN), json_string(pseudonym))
}

/// A stored payload as read: plaintext, or tombstones.
pub(crate) fn open(
    payload: &str,
    event: &str,
    marker: &Marker,
    holder: &Holder<'_>,
) -> Result<String, PayloadError> {
    let mut members = Members::parse(payload, event)?;
    let pseudonym = &marker.subject;
    match holder {
        Holder::Forgotten => {
            for field in std::iter::once(&marker.subject_field).chain(&marker.fields) {
                members.set(field, raw(tombstone(pseudonym)));
            }
        }
        Holder::Known { subject, key } => {
            members.set(&marker.subject_field, raw(json_string(subject)));
            for field in &marker.fields {
                let not_ciphertext = || PayloadError::NotCiphertext {
                    event: event.to_owned(),
                    field: field.clone(),
                };
                let stored = members
                    .get(field)
                    .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
                    .ok_or_else(not_ciphertext)?;
                let sealed = stored
                    .strip_prefix(CIPHERTEXT_PREFIX)
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .ok_or_else(not_ciphertext)?;
                let what = format!("{event}'s field `{field}`");
                let plaintext = key.open(&sealed, &aad(pseudonym, field), &what)?;
                let text = String::from_utf8(plaintext).map_err(|_| not_ciphertext())?;
                let value = RawValue::from_string(text).map_err(|_| not_ciphertext())?;
                members.set(field, value);
            }
        }
    }
    Ok(members.text())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::new_key;

    fn purchase() -> PersonalEvent {
        PersonalEvent {
            event: "ItemPurchased".into(),
            subject: "buyerId".into(),
            fields: vec!["address".into(), "note".into()],
        }
    }

    #[test]
    fn declared_fields_are_sealed_and_read_back_in_their_order() {
        let key = DataKey::new(&new_key().unwrap());
        let payload = r#"{"buyerId":"ann","quantity":1,"address":{"city":"Gent"}}"#;
        let declared = Declared::parse(payload, &purchase()).unwrap();
        assert_eq!(declared.subject, "ann");
        let (stored, marker) = declared.seal(&purchase(), "psn_1", &key).unwrap();
        assert!(
            !stored.contains("ann") && !stored.contains("Gent"),
            "{stored}"
        );
        assert!(stored.starts_with(r#"{"buyerId":"psn_1","quantity":1,"address":"enc:v1:"#));
        // `note` was not in the payload, so it is not in the marker.
        assert_eq!(marker.fields, ["address"]);

        let known = Holder::Known {
            subject: "ann",
            key: &key,
        };
        assert_eq!(
            open(&stored, "ItemPurchased", &marker, &known).unwrap(),
            payload
        );
        let forgotten = open(&stored, "ItemPurchased", &marker, &Holder::Forgotten).unwrap();
        assert_eq!(
            forgotten,
            r#"{"buyerId":{"$forgotten":"psn_1"},"quantity":1,"address":{"$forgotten":"psn_1"}}"#
        );
        // Another subject's key, or the ciphertext under another subject's
        // pseudonym, does not open.
        let other = DataKey::new(&new_key().unwrap());
        let theirs = Holder::Known {
            subject: "bob",
            key: &other,
        };
        assert!(open(&stored, "ItemPurchased", &marker, &theirs).is_err());
        let moved = Marker {
            subject: "psn_2".into(),
            ..marker.clone()
        };
        assert!(open(&stored, "ItemPurchased", &moved, &known).is_err());
    }

    #[test]
    fn an_event_without_its_subject_is_refused_and_the_marker_joins_the_metadata() {
        let err = Declared::parse(r#"{"quantity":1}"#, &purchase())
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "ItemPurchased: the subject field `buyerId` is missing or not a string"
        );
        assert!(Declared::parse(r#"{"buyerId":7}"#, &purchase()).is_err());
        let marker = Marker {
            subject: "psn_1".into(),
            subject_field: "buyerId".into(),
            fields: vec![],
        };
        let metadata = mark(r#"{"commandId":"c1"}"#, &marker).unwrap();
        assert_eq!(
            metadata,
            r#"{"commandId":"c1","personal":{"subject":"psn_1","subjectField":"buyerId","fields":[]}}"#
        );
        let value: serde_json::Value = serde_json::from_str(&metadata).unwrap();
        assert_eq!(marker_of(&value), Some(marker));
    }
}

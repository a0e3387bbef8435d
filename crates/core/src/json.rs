//! Event payloads as exact JSON text: the check a guest's payload passes
//! before it is written, and [`JsonText`], the type a payload is carried in
//! once recorded. A payload is never re-serialised on its way back: a guest
//! replaying its stream is handed the bytes it decided, so `-0`, `1E2`,
//! 2^64 and repeated keys reach it as they left it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// The deepest a stored payload may nest: serde_json's own recursion
/// limit, so any reader built on it (the guest SDK's included) can decode
/// every payload.
pub const MAX_PAYLOAD_DEPTH: usize = 128;

/// Checks that `text` is JSON every store can hold as a payload and that
/// every reader can decode: it is parsed here the way serde_json decodes a
/// value (nesting at most [`MAX_PAYLOAD_DEPTH`], every number within the
/// 64-bit float range), and it holds no NUL character (PostgreSQL cannot
/// store one in text). Both stores refuse alike, before an append, so a bad
/// payload fails its one command, never the batch around it, and never
/// leaves a stream that cannot be read. The error is the reason, one line.
pub fn storable_json(text: &str) -> Result<(), String> {
    // One full decode checks syntax and the limits alike (skipping a value,
    // as `IgnoredAny` does, checks neither depth nor number range).
    let value = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => value,
        Err(e) => {
            let reason = e.to_string();
            return Err(if reason.starts_with("recursion limit exceeded") {
                format!("nests deeper than {MAX_PAYLOAD_DEPTH} levels ({reason})")
            } else if reason.starts_with("number out of range") {
                format!("holds a number beyond the 64-bit float range ({reason})")
            } else {
                reason
            });
        }
    };
    // JSON text holds a NUL only as the escape \u0000 (a raw one is not
    // JSON), so text without those six characters has none; text with them
    // may only spell them out (`"\\u0000"`), so the decoded value decides.
    if text.contains("\\u0000") && holds_nul(&value) {
        return Err("\\u0000 (NUL) cannot be stored".into());
    }
    Ok(())
}

/// True if a string or a key anywhere in `value` holds a NUL character.
fn holds_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(members) => members
            .iter()
            .any(|(key, value)| key.contains('\0') || holds_nul(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// A recorded payload: JSON text, exactly as the guest wrote it.
///
/// It serialises as the JSON value it holds, byte for byte, with one
/// exception: a line break between tokens (the only place JSON allows a raw
/// one) is written as a space, so an event is always one line of JSON lines
/// output. [`as_str`](Self::as_str) gives the exact text.
#[derive(Debug, Clone)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// Takes `text` if it is one JSON value. Recorded payloads passed
    /// [`storable_json`] before they were written, so reading one back
    /// cannot fail on that account.
    pub fn new(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    /// The payload as `value` serialises, for payloads the host makes.
    pub fn from_value(value: &serde_json::Value) -> Self {
        Self(serde_json::value::to_raw_value(value).expect("a JSON value always serialises"))
    }

    /// The exact text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The text decoded, for reading fields (decoding normalises numbers
    /// and keeps only the last of repeated keys, which is why payloads are
    /// not stored this way).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.as_str()).unwrap_or(serde_json::Value::Null)
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.as_str();
        // Inside a JSON string a raw line break is invalid, so every one
        // in valid JSON is whitespace between tokens and a space can stand
        // in for it.
        if !text.contains(['\n', '\r']) {
            return self.0.serialize(serializer);
        }
        let one_line = text.replace(['\n', '\r'], " ");
        match RawValue::from_string(one_line) {
            Ok(raw) => raw.serialize(serializer),
            Err(_) => self.0.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_survives_a_round_trip_through_serde_json_exactly() {
        let exact = r#"{"n": -0, "big": 18446744073709551616, "e": 1E2, "k": 1, "k": 2}"#;
        let payload = JsonText::new(exact.to_string()).unwrap();
        let written = serde_json::to_string(&payload).unwrap();
        assert_eq!(written, exact);
        let read: JsonText = serde_json::from_str(&written).unwrap();
        assert_eq!(read.as_str(), exact);
        // What a Value would have made of it.
        assert_ne!(payload.to_value().to_string(), exact);
    }

    #[test]
    fn a_line_break_between_tokens_is_written_as_a_space() {
        let payload = JsonText::new("{\n  \"a\": \"x\\ny\"\r\n}".to_string()).unwrap();
        assert_eq!(
            serde_json::to_string(&payload).unwrap(),
            "{   \"a\": \"x\\ny\"  }"
        );
        assert!(payload.as_str().contains('\n'));
    }

    #[test]
    fn a_nul_is_refused_where_it_decodes_and_only_there() {
        // The six characters \u0000 in a string, written as JSON: no NUL.
        assert_eq!(storable_json(r#"{"x":"\\u0000"}"#), Ok(()));
        assert_eq!(storable_json(r#"{"x":"a\\\\u0000"}"#), Ok(()));
        // A NUL, in a value or in a key.
        for nul in [r#"{"x":"\u0000"}"#, r#"{"\u0000":1}"#, r#"["a\\\u0000"]"#] {
            assert!(storable_json(nul).is_err(), "{nul}");
        }
    }

    #[test]
    fn only_one_json_value_is_taken() {
        assert!(JsonText::new("{".to_string()).is_err());
        assert!(JsonText::new("1 2".to_string()).is_err());
    }
}

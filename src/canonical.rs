//! The canonical JSON form of a webhook body.
//!
//! The seed's Express receiver verifies the signature over
//! `JSON.stringify(JSON.parse(body))`, so the bytes hookd signs and sends must be a fixed point
//! of that round trip. [`write_value`] writes a [`serde_json::Value`] exactly as JavaScript's
//! `JSON.stringify` would after `JSON.parse`:
//!
//! - no whitespace;
//! - numbers as ECMAScript's `Number::toString` writes the nearest double (`1.0` -> `1`,
//!   `1e21` -> `1e+21`, `-0` -> `0`), via the `ryu-js` crate;
//! - strings with only `"`, `\`, and control characters escaped (`\b \t \n \f \r`, the rest as
//!   lowercase `\u00XX`), everything else as raw UTF-8;
//! - object keys in JavaScript's property order: keys that are array indices (`"0"`, `"7"`,
//!   but not `"07"` or `"4294967295"`) first in ascending numeric order, then the other keys in
//!   the order they first appeared (a duplicate key keeps its first position and its last value,
//!   which is what `serde_json`'s `preserve_order` map does on parse).
//!
//! What cannot survive the round trip is refused at ingest by [`check_value`]: integers whose
//! digits JavaScript would change, such as 9007199254740993 (it reads and writes back
//! 9007199254740992), and
//! numbers outside the range of a double (JavaScript would turn them into `null`). Fractions are
//! rounded to the nearest double, as every JSON parser does.
//!
//! This module does no I/O.

use serde_json::Value;

/// Why a value cannot be sent unchanged through `JSON.stringify(JSON.parse(..))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotCanonicalizable {
    /// A JSON-pointer-like path to the offending value, e.g. `result.items[0].size`.
    pub path: String,
    pub reason: &'static str,
}

/// Checks that every number in `value` survives JavaScript's parse/stringify round trip.
pub fn check_value(value: &Value, path: &mut String) -> Result<(), NotCanonicalizable> {
    match value {
        Value::Number(n) => {
            // With serde_json's `arbitrary_precision`, a number keeps the text it was written
            // as: an integer literal is checked exactly, however long it is.
            let literal = n.to_string();
            if !literal.contains(['.', 'e', 'E']) && !integer_is_exact(&literal, n.as_f64()) {
                return Err(NotCanonicalizable {
                    path: path.clone(),
                    reason: "integer would come back as other digits from JavaScript's JSON round trip (it exceeds what a 64-bit float holds); send it as a string",
                });
            }
            match n.as_f64() {
                Some(f) if f.is_finite() => Ok(()),
                _ => Err(NotCanonicalizable {
                    path: path.clone(),
                    reason: "number is outside the range of a 64-bit float",
                }),
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_value(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                check_value(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

/// Whether an integer literal comes out of the round trip as the same digits: JavaScript
/// writes the double it reads, so `9007199254740993` comes back as `9007199254740992` and
/// `18446744073709551616` as `18446744073709552000`. Receivers that read integers exactly
/// (Python, Go) would then see another number than the one sent.
fn integer_is_exact(literal: &str, value: Option<f64>) -> bool {
    let Some(value) = value else { return false };
    if value == 0.0 {
        // "0" and "-0" both read as zero everywhere.
        return true;
    }
    let mut written = Vec::new();
    write_number(value, &mut written);
    written == literal.as_bytes()
}

/// Appends the canonical form of `value` to `out`. Callers run [`check_value`] first; a
/// non-finite number (which `serde_json` cannot hold anyway) is written as `null`, as
/// JavaScript does.
pub fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n.as_f64().unwrap_or(f64::NAN), out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            let mut first = true;
            let mut member = |key: &str, item: &Value, out: &mut Vec<u8>| {
                if !first {
                    out.push(b',');
                }
                first = false;
                write_string(key, out);
                out.push(b':');
                write_value(item, out);
            };
            let mut index_keys: Vec<(u32, &str, &Value)> = map
                .iter()
                .filter_map(|(k, v)| array_index(k).map(|i| (i, k.as_str(), v)))
                .collect();
            index_keys.sort_unstable_by_key(|(i, _, _)| *i);
            for (_, key, item) in &index_keys {
                member(key, item, out);
            }
            for (key, item) in map.iter().filter(|(k, _)| array_index(k).is_none()) {
                member(key, item, out);
            }
            out.push(b'}');
        }
    }
}

/// The canonical bytes of `value`.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_value(value, &mut out);
    out
}

/// A key that JavaScript treats as an array index: the canonical decimal form of an integer
/// in `0..=2^32 - 2`.
fn array_index(key: &str) -> Option<u32> {
    let bytes = key.as_bytes();
    if bytes.is_empty() || bytes.len() > 10 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if bytes.len() > 1 && bytes[0] == b'0' {
        return None;
    }
    let n: u64 = key.parse().ok()?;
    if n < u64::from(u32::MAX) {
        u32::try_from(n).ok()
    } else {
        None
    }
}

fn write_number(f: f64, out: &mut Vec<u8>) {
    if !f.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    if f == 0.0 {
        // Covers -0, which JavaScript writes as "0".
        out.push(b'0');
        return;
    }
    let mut buffer = ryu_js::Buffer::new();
    out.extend_from_slice(buffer.format_finite(f).as_bytes());
}

/// Writes `s` as a JSON string the way `JSON.stringify` does.
pub fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(input: &str) -> String {
        let value: Value = serde_json::from_str(input).expect("test input is JSON");
        check_value(&value, &mut String::new()).expect("test input is canonicalizable");
        String::from_utf8(to_vec(&value)).expect("canonical JSON is UTF-8")
    }

    // Expected outputs are what node 20 prints for JSON.stringify(JSON.parse(input)).
    #[test]
    fn numbers_follow_ecmascript_number_to_string() {
        assert_eq!(
            canon("[1.0, -0, -0.0, 1e3, 1E21, 1e-7, 0.000001, 1.2345678901234568e20]"),
            "[1,0,0,1000,1e+21,1e-7,0.000001,123456789012345680000]"
        );
        assert_eq!(
            canon("[45.20, 2.1, 0.1, 1.7976931348623157e308, 5e-324, 9007199254740991]"),
            "[45.2,2.1,0.1,1.7976931348623157e+308,5e-324,9007199254740991]"
        );
        assert_eq!(
            canon("[-1.5e-10, 100, 1e20, 1.5e300]"),
            "[-1.5e-10,100,100000000000000000000,1.5e+300]"
        );
    }

    #[test]
    fn strings_escape_like_json_stringify() {
        assert_eq!(
            canon(r#""a\/b\u00e9\u2028\u0001\u007f\t\"\\ 😀""#),
            "\"a/bé\u{2028}\\u0001\u{7f}\\t\\\"\\\\ 😀\""
        );
        assert_eq!(canon(r#""\b\f\n\r\u001F""#), r#""\b\f\n\r\u001f""#);
    }

    #[test]
    fn object_keys_follow_javascript_property_order() {
        assert_eq!(
            canon(r#"{"b":1,"2":2,"a":3,"1":4,"01":5,"4294967295":6,"4294967294":7}"#),
            r#"{"1":4,"2":2,"4294967294":7,"b":1,"a":3,"01":5,"4294967295":6}"#
        );
        assert_eq!(canon(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
        assert_eq!(
            canon(r#"{"__proto__":{"x":1}, "": [ ] , "n":null,"t":true}"#),
            r#"{"__proto__":{"x":1},"":[],"n":null,"t":true}"#
        );
    }

    #[test]
    fn unsafe_numbers_are_refused_with_their_path() {
        let value: Value =
            serde_json::from_str(r#"{"items":[{"size":9007199254740993}]}"#).unwrap();
        let err = check_value(&value, &mut "result".to_string()).unwrap_err();
        assert_eq!(err.path, "result.items[0].size");
        for big in [
            "[-9007199254740993]",
            "[18446744073709551616]",
            "[1000000000000000000000]",
            "[123456789012345678901234567890]",
            "[1e400]",
            "[-1e400]",
        ] {
            let value: Value = serde_json::from_str(big).unwrap();
            assert!(check_value(&value, &mut String::new()).is_err(), "{big}");
        }
        let value: Value =
            serde_json::from_str("[9007199254740991, -9007199254740991, 9007199254740992, 999999999999999900000, 1e21, 1e300, -0]").unwrap();
        assert!(check_value(&value, &mut String::new()).is_ok());
    }
}

//! Shared helpers for the integration tests: the 3GPP test data and hex parsing.
#![allow(dead_code)]

pub mod pki;

use std::sync::OnceLock;

use serde_json::Value;

/// The copy of shared/vectors/3gpp.json kept with the crate.
pub const VECTORS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/3gpp.json");

/// The parsed test data.
pub fn vectors() -> &'static Value {
    static V: OnceLock<Value> = OnceLock::new();
    V.get_or_init(|| {
        let text = std::fs::read_to_string(VECTORS_PATH).expect("read tests/fixtures/3gpp.json");
        serde_json::from_str(&text).expect("parse 3gpp.json")
    })
}

/// Entry `index` of the category `name`.
pub fn entry(name: &str, index: usize) -> &'static Value {
    &vectors()["vectors"][name][index]
}

/// Number of entries in a category.
pub fn count(name: &str) -> usize {
    vectors()["vectors"][name].as_array().map_or(0, Vec::len)
}

/// A hex field as bytes.
pub fn hx(v: &Value, field: &str) -> Vec<u8> {
    let s = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field} missing in {}", v["name"]));
    hex::decode(s).unwrap_or_else(|e| panic!("field {field}: {e}"))
}

/// A hex field as a fixed-size array.
pub fn arr<const N: usize>(v: &Value, field: &str) -> [u8; N] {
    hx(v, field)
        .try_into()
        .unwrap_or_else(|b: Vec<u8>| panic!("field {field} has {} octets, not {N}", b.len()))
}

/// A 32-bit hex field (COUNT, FRESH).
pub fn u32_field(v: &Value, field: &str) -> u32 {
    u32::from_be_bytes(arr::<4>(v, field))
}

/// An integer field.
pub fn int(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("field {field} missing"))
}

/// The first `bits` bits of `data` with the rest of the last octet cleared.
pub fn first_bits(data: &[u8], bits: usize) -> Vec<u8> {
    let mut out = data[..bits.div_ceil(8)].to_vec();
    if !bits.is_multiple_of(8) {
        let last = out.len() - 1;
        out[last] &= 0xffu8 << (8 - bits % 8);
    }
    out
}

//! Meter addresses: six bytes, twelve decimal digits, sent low byte first.

use std::fmt;
use std::str::FromStr;

/// A DL/T 645 meter address in wire order (`bytes[0]` is sent first and holds the two lowest digits).
///
/// Written as twelve digits, most significant first, as printed on the meter's nameplate: the address
/// `000000000001` is sent as `01 00 00 00 00 00`. Besides decimal digits, a byte may be `AA` (the
/// wildcard: "any meter", used by read-address) and the whole address may be `999999999999` (broadcast).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dlt645Address(pub [u8; 6]);

/// Why a string is not a meter address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not twelve characters.
    #[error("a meter address has 12 digits, `{0}` has {len}", len = .0.chars().count())]
    Length(String),
    /// A character that is neither a digit nor the wildcard `A` pair.
    #[error("`{text}` is not a meter address: character {position} is `{found}`; use digits 0-9 (or AA for a wildcard byte)")]
    Character {
        /// The text given.
        text: String,
        /// 1-based position of the character.
        position: usize,
        /// The character found.
        found: char,
    },
}

impl Dlt645Address {
    /// The broadcast address `999999999999`: every meter acts, none answers (time sync).
    pub const BROADCAST: Dlt645Address = Dlt645Address([0x99; 6]);
    /// The wildcard address `AAAAAAAAAAAA`: the one meter on the line answers (read address).
    pub const WILDCARD: Dlt645Address = Dlt645Address([0xAA; 6]);

    /// The address with this number (0..=999_999_999_999); larger numbers keep their low 12 digits.
    pub fn from_number(number: u64) -> Self {
        let mut bytes = [0u8; 6];
        let mut rest = number;
        for byte in &mut bytes {
            *byte = crate::bcd::to_byte((rest % 100) as u8);
            rest /= 100;
        }
        Dlt645Address(bytes)
    }

    /// The address as sent on the wire.
    pub fn to_wire(self) -> [u8; 6] {
        self.0
    }

    /// True for `999999999999`.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// True if any byte is the wildcard `AA`.
    pub fn has_wildcard(&self) -> bool {
        self.0.contains(&0xAA)
    }

    /// Whether a frame sent to `self` is meant for the meter whose own address is `meter`: equal, or
    /// equal wherever `self` does not hold the wildcard byte `AA`. Broadcast is not a match here (the
    /// caller decides what a broadcast means for the function).
    pub fn addresses(&self, meter: &Dlt645Address) -> bool {
        self.0
            .iter()
            .zip(meter.0.iter())
            .all(|(&to, &own)| to == 0xAA || to == own)
    }
}

impl fmt::Display for Dlt645Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0.iter().rev() {
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl FromStr for Dlt645Address {
    type Err = AddressError;

    /// Twelve digits, most significant first; `AA` pairs are wildcard bytes.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let chars: Vec<char> = text.chars().collect();
        if chars.len() != 12 {
            return Err(AddressError::Length(text.to_string()));
        }
        let mut bytes = [0u8; 6];
        for (index, byte) in bytes.iter_mut().rev().enumerate() {
            let (high, low) = (chars[2 * index], chars[2 * index + 1]);
            if high.eq_ignore_ascii_case(&'A') && low.eq_ignore_ascii_case(&'A') {
                *byte = 0xAA;
                continue;
            }
            let bad = |position: usize, found: char| AddressError::Character {
                text: text.to_string(),
                position,
                found,
            };
            let h = high.to_digit(10).ok_or_else(|| bad(2 * index + 1, high))?;
            let l = low.to_digit(10).ok_or_else(|| bad(2 * index + 2, low))?;
            *byte = ((h as u8) << 4) | l as u8;
        }
        Ok(Dlt645Address(bytes))
    }
}

impl serde::Serialize for Dlt645Address {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_order_and_text() {
        let address: Dlt645Address = "000000000001".parse().unwrap();
        assert_eq!(address.to_wire(), [1, 0, 0, 0, 0, 0]);
        assert_eq!(address.to_string(), "000000000001");
        assert_eq!(
            Dlt645Address::from_number(123_456_789_012).to_wire(),
            [0x12, 0x90, 0x78, 0x56, 0x34, 0x12]
        );
        assert_eq!(
            "AAAAAAAAAAAA".parse::<Dlt645Address>().unwrap(),
            Dlt645Address::WILDCARD
        );
        assert!("999999999999"
            .parse::<Dlt645Address>()
            .unwrap()
            .is_broadcast());
    }

    #[test]
    fn wildcard_matching() {
        let meter = Dlt645Address::from_number(201_800_001_234);
        assert!(Dlt645Address::WILDCARD.addresses(&meter));
        assert!(Dlt645Address([0x34, 0x12, 0xAA, 0xAA, 0xAA, 0xAA]).addresses(&meter));
        assert!(!Dlt645Address::from_number(1).addresses(&meter));
    }

    #[test]
    fn rejects_bad_text() {
        assert!(matches!(
            "12345".parse::<Dlt645Address>(),
            Err(AddressError::Length(_))
        ));
        let err = "00000000000X".parse::<Dlt645Address>().unwrap_err();
        assert_eq!(err.to_string(), "`00000000000X` is not a meter address: character 12 is `X`; use digits 0-9 (or AA for a wildcard byte)");
    }
}

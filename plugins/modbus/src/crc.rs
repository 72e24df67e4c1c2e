//! CRC-16/MODBUS: polynomial 0x8005 reflected (0xA001), initial value 0xFFFF, no final XOR, sent low
//! byte first (Modbus over Serial Line v1.02 §6.2.2).

const fn table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static TABLE: [u16; 256] = table();

/// The CRC of `bytes`.
pub fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0xFFFF, |crc, &b| {
        (crc >> 8) ^ TABLE[usize::from((crc as u8) ^ b)]
    })
}

/// `bytes` with their CRC appended, low byte first.
pub fn with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
    let crc = crc16(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// The CRC carried by the last two bytes of a frame (low byte first), if it has two.
pub fn carried(frame: &[u8]) -> Option<u16> {
    match frame {
        [.., lo, hi] => Some(u16::from_le_bytes([*lo, *hi])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values() {
        assert_eq!(crc16(b"123456789"), 0x4B37);
        assert_eq!(crc16(&[0x02, 0x07]), 0x1241);
        assert_eq!(with_crc(vec![0x02, 0x07]), vec![0x02, 0x07, 0x41, 0x12]);
        assert_eq!(crc16(&with_crc(vec![1, 4, 0, 0, 0, 2])), 0);
    }
}

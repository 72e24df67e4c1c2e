//! The example meter's wire format: a small subset of Modbus RTU (read holding registers, write single
//! register, write multiple registers, exception replies), with the Modbus CRC-16.

/// Read holding registers.
pub const READ_HOLDING: u8 = 0x03;
/// Write single register.
pub const WRITE_SINGLE: u8 = 0x06;
/// Write multiple registers.
pub const WRITE_MULTIPLE: u8 = 0x10;
/// Set on the function code of an exception reply.
pub const EXCEPTION_BIT: u8 = 0x80;

/// The Modbus CRC-16 (polynomial 0xA001 reflected, initial value 0xFFFF).
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for byte in bytes {
        crc ^= u16::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Appends the CRC (low byte first) and returns the frame.
pub fn seal(mut frame: Vec<u8>) -> Vec<u8> {
    let crc = crc16(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame
}

/// Whether a whole frame's CRC is right.
pub fn crc_ok(frame: &[u8]) -> bool {
    match frame.len().checked_sub(2) {
        Some(body) if body > 0 => crc16(&frame[..body]).to_le_bytes() == frame[body..],
        _ => false,
    }
}

/// A read-holding-registers request.
pub fn read_request(address: u8, register: u16, count: u16) -> Vec<u8> {
    let [rh, rl] = register.to_be_bytes();
    let [ch, cl] = count.to_be_bytes();
    seal(vec![address, READ_HOLDING, rh, rl, ch, cl])
}

/// A write-single-register request.
pub fn write_single_request(address: u8, register: u16, value: u16) -> Vec<u8> {
    let [rh, rl] = register.to_be_bytes();
    let [vh, vl] = value.to_be_bytes();
    seal(vec![address, WRITE_SINGLE, rh, rl, vh, vl])
}

/// A write-multiple-registers request.
pub fn write_multiple_request(address: u8, register: u16, values: &[u16]) -> Vec<u8> {
    let [rh, rl] = register.to_be_bytes();
    let count = values.len().min(123) as u16;
    let [ch, cl] = count.to_be_bytes();
    let mut frame = vec![address, WRITE_MULTIPLE, rh, rl, ch, cl, (count * 2) as u8];
    for value in values.iter().take(usize::from(count)) {
        frame.extend_from_slice(&value.to_be_bytes());
    }
    seal(frame)
}

/// The length of the whole reply that starts with `prefix`, once enough of it has arrived to tell.
pub fn expected_reply_len(prefix: &[u8]) -> Option<usize> {
    let function = *prefix.get(1)?;
    if function & EXCEPTION_BIT != 0 {
        return Some(5);
    }
    match function {
        READ_HOLDING => prefix.get(2).map(|count| 5 + usize::from(*count)),
        WRITE_SINGLE | WRITE_MULTIPLE => Some(8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_modbus_reference() {
        // Read 1 register at 0 from slave 1: the well-known frame 01 03 00 00 00 01 84 0A.
        assert_eq!(
            read_request(1, 0, 1),
            [0x01, 0x03, 0x00, 0x00, 0x00, 0x01, 0x84, 0x0A]
        );
        assert!(crc_ok(&read_request(7, 0x50, 2)));
        assert!(!crc_ok(&[0x01]));
    }
}

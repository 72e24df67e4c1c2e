//! Interpreting replies: checking that a reply answers the request, separating device exceptions from
//! protocol errors, and reading long data with follow-up requests.
//!
//! Every function returns `Result<Result<T, Dlt645Exception>, ReplyError>`: the outer error means the
//! exchange failed (wrong meter, garbled or unexpected reply); the inner one means the meter answered
//! and refused.

use crate::control::{ControlCode, Function};
use crate::data_id::{decode_value, DataId, Value, ValueError};
use crate::exception::Dlt645Exception;
use crate::frame::{Frame, FrameError};
use crate::request;
use crate::stream::decode_first;
use crate::Dlt645Address;

/// The outcome of an exchange: the meter's answer or its refusal.
pub type Outcome<T> = Result<Result<T, Dlt645Exception>, ReplyError>;

/// A reply that does not answer the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The bytes are not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The frame's direction bit says it is a request (an echo, or another master on the bus).
    #[error("the frame is a request (control code {0}), not a reply")]
    NotAReply(ControlCode),
    /// Another meter answered.
    #[error("the reply comes from meter {found}, the request went to {expected}")]
    WrongAddress {
        /// The address asked.
        expected: Dlt645Address,
        /// The address in the reply.
        found: Dlt645Address,
    },
    /// The reply is for another function.
    #[error("the reply's control code is {found}, expected a reply to function 0x{expected:02X}")]
    WrongFunction {
        /// The function code requested.
        expected: u8,
        /// The reply's control code.
        found: ControlCode,
    },
    /// A read reply for another DI.
    #[error("the reply carries data identifier {found}, the request asked for {expected}")]
    WrongDataId {
        /// The DI asked for.
        expected: DataId,
        /// The DI in the reply.
        found: DataId,
    },
    /// The data is shorter than the function's fixed part.
    #[error("the reply's data has {found} byte(s); a {what} has at least {needed}")]
    ShortData {
        /// What the data should hold.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes found.
        found: usize,
    },
    /// A follow-up reply with the wrong sequence number.
    #[error("follow-up reply number {found}, expected {expected}")]
    Sequence {
        /// Sequence expected.
        expected: u8,
        /// Sequence found.
        found: u8,
    },
    /// The meter keeps saying more data follows.
    #[error("the meter still had follow-up data after {0} follow-up reads; giving up")]
    TooManyFollowUps(u8),
    /// The value bytes do not fit the DI's format.
    #[error(transparent)]
    Value(#[from] ValueError),
}

/// The data of a normal read reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadReply {
    /// The DI the data is for.
    pub di: DataId,
    /// The value bytes after the DI (and before a follow-up reply's sequence byte).
    pub data: Vec<u8>,
    /// The meter has follow-up data (control bit 0x20).
    pub follow_up: bool,
    /// The sequence number of a follow-up reply (0x92/0xB2).
    pub sequence: Option<u8>,
}

/// Checks that `reply` comes from the addressed meter and answers `function`; returns the exception of
/// an abnormal reply. `expected` may hold wildcard bytes (read address).
pub fn check(expected: &Dlt645Address, function: Function, reply: &Frame) -> Outcome<()> {
    if !reply.control.is_reply() {
        return Err(ReplyError::NotAReply(reply.control));
    }
    if reply.control.function_code() != function.code() {
        return Err(ReplyError::WrongFunction {
            expected: function.code(),
            found: reply.control,
        });
    }
    if !expected.addresses(&reply.address) {
        return Err(ReplyError::WrongAddress {
            expected: *expected,
            found: reply.address,
        });
    }
    if reply.control.is_abnormal() {
        let error_byte = reply.data.first().copied().unwrap_or(0);
        return Ok(Err(Dlt645Exception {
            function: Some(function),
            error_byte,
        }));
    }
    Ok(Ok(()))
}

/// Interprets a reply to read data (0x11) or read follow-up (0x12) for `di`.
pub fn read_reply(request: &Frame, di: DataId, reply: &Frame) -> Outcome<ReadReply> {
    let function = request.control.function().unwrap_or(Function::ReadData);
    if let Err(exception) = check(&request.address, function, reply)? {
        return Ok(Err(exception));
    }
    let follow_up_reply = function == Function::ReadFollowUp;
    let needed = if follow_up_reply { 5 } else { 4 };
    if reply.data.len() < needed {
        let what = if follow_up_reply {
            "follow-up reply (DI and sequence)"
        } else {
            "read reply (DI)"
        };
        return Err(ReplyError::ShortData {
            what,
            needed,
            found: reply.data.len(),
        });
    }
    let found = DataId::from_wire([reply.data[0], reply.data[1], reply.data[2], reply.data[3]]);
    if found != di {
        return Err(ReplyError::WrongDataId {
            expected: di,
            found,
        });
    }
    let (data, sequence) = if follow_up_reply {
        let (data, seq) = reply.data[4..].split_at(reply.data.len() - 5);
        (data.to_vec(), seq.first().copied())
    } else {
        (reply.data[4..].to_vec(), None)
    };
    Ok(Ok(ReadReply {
        di,
        data,
        follow_up: reply.control.has_follow_up(),
        sequence,
    }))
}

/// Interprets a reply to read address (0x13): the meter's own address.
pub fn address_reply(reply: &Frame) -> Outcome<Dlt645Address> {
    if let Err(exception) = check(&Dlt645Address::WILDCARD, Function::ReadAddress, reply)? {
        return Ok(Err(exception));
    }
    if reply.data.len() < 6 {
        return Err(ReplyError::ShortData {
            what: "read-address reply",
            needed: 6,
            found: reply.data.len(),
        });
    }
    let mut address = [0u8; 6];
    address.copy_from_slice(&reply.data[..6]);
    Ok(Ok(Dlt645Address(address)))
}

/// Interprets the reply to a request that returns no data (write, relay control, freeze to one meter).
pub fn ack_reply(request: &Frame, reply: &Frame) -> Outcome<()> {
    let function = request.control.function().unwrap_or(Function::WriteData);
    check(&request.address, function, reply)
}

/// Decodes raw reply bytes (preamble and garbage before the frame allowed) into a frame.
pub fn decode_reply(bytes: &[u8]) -> Result<Frame, ReplyError> {
    Ok(decode_first(bytes)?.1.frame)
}

/// The next step of a [`ReadSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadStep {
    /// Send this follow-up request next.
    FollowUp(Frame),
    /// All data has come.
    Done(Vec<u8>),
}

/// Reading one DI, following up (0x12) as long as the meter says more data exists.
///
/// ```
/// use concentrator_driver_dlt645::{DataId, Dlt645Address, ReadSession, ReadStep, Frame};
/// let mut session = ReadSession::new(Dlt645Address::from_number(1), DataId::IMPORT_ACTIVE_ENERGY);
/// let request = session.request().clone();
/// let reply = Frame::decode(&hex_bytes("68010000000000689108333334339A785634D316")).unwrap().frame;
/// let step = session.on_reply(&reply).unwrap().unwrap();
/// assert_eq!(step, ReadStep::Done(vec![0x67, 0x45, 0x23, 0x01]));
/// # fn hex_bytes(s: &str) -> Vec<u8> { (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect() }
/// # let _ = request;
/// ```
#[derive(Debug, Clone)]
pub struct ReadSession {
    address: Dlt645Address,
    di: DataId,
    request: Frame,
    follow_ups: u8,
    data: Vec<u8>,
}

impl ReadSession {
    /// A session reading `di` from the meter at `address`.
    pub fn new(address: Dlt645Address, di: DataId) -> Self {
        ReadSession {
            address,
            di,
            request: request::read_data(address, di),
            follow_ups: 0,
            data: Vec::new(),
        }
    }

    /// The request to send now.
    pub fn request(&self) -> &Frame {
        &self.request
    }

    /// The DI being read.
    pub fn data_id(&self) -> DataId {
        self.di
    }

    /// Feeds the reply to [`ReadSession::request`]; returns the next request or the whole data.
    pub fn on_reply(&mut self, reply: &Frame) -> Outcome<ReadStep> {
        let read = match read_reply(&self.request, self.di, reply)? {
            Ok(read) => read,
            Err(exception) => return Ok(Err(exception)),
        };
        if let Some(found) = read.sequence {
            if found != self.follow_ups {
                return Err(ReplyError::Sequence {
                    expected: self.follow_ups,
                    found,
                });
            }
        }
        self.data.extend_from_slice(&read.data);
        if !read.follow_up {
            return Ok(Ok(ReadStep::Done(std::mem::take(&mut self.data))));
        }
        self.follow_ups = self
            .follow_ups
            .checked_add(1)
            .ok_or(ReplyError::TooManyFollowUps(u8::MAX))?;
        self.request = request::read_follow_up(self.address, self.di, self.follow_ups);
        Ok(Ok(ReadStep::FollowUp(self.request.clone())))
    }

    /// Feeds the reply and decodes the value when the data is complete.
    pub fn on_reply_value(&mut self, reply: &Frame) -> Outcome<Option<Value>> {
        match self.on_reply(reply)? {
            Ok(ReadStep::Done(data)) => Ok(Ok(Some(decode_value(self.di, &data)?))),
            Ok(ReadStep::FollowUp(_)) => Ok(Ok(None)),
            Err(exception) => Ok(Err(exception)),
        }
    }
}

/// Interprets a one-shot read (no follow-up expected) straight into a typed value.
pub fn read_value(request: &Frame, di: DataId, reply: &Frame) -> Outcome<Value> {
    match read_reply(request, di, reply)? {
        Ok(read) => Ok(Ok(decode_value(di, &read.data)?)),
        Err(exception) => Ok(Err(exception)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exception::ErrorBit;

    fn frame(hex_text: &str) -> Frame {
        Frame::decode(&hex::decode(hex_text.replace(' ', "")).unwrap())
            .unwrap()
            .frame
    }

    #[test]
    fn abnormal_reply_is_an_exception() {
        let request = request::read_data(Dlt645Address::from_number(1), DataId::REMAINING_MONEY);
        let reply = frame("68 01 00 00 00 00 00 68 D1 01 35 D8 16");
        let outcome = read_reply(&request, DataId::REMAINING_MONEY, &reply).unwrap();
        assert!(outcome.unwrap_err().has(ErrorBit::NoRequestedData));
    }

    #[test]
    fn wrong_meter_and_wrong_di_are_errors() {
        let request =
            request::read_data(Dlt645Address::from_number(2), DataId::IMPORT_ACTIVE_ENERGY);
        let reply = frame("68 01 00 00 00 00 00 68 91 08 33 33 34 33 9A 78 56 34 D3 16");
        assert!(matches!(
            read_reply(&request, DataId::IMPORT_ACTIVE_ENERGY, &reply),
            Err(ReplyError::WrongAddress { .. })
        ));
        let request = request::read_data(
            Dlt645Address::from_number(1),
            DataId::COMBINED_ACTIVE_ENERGY,
        );
        assert_eq!(
            read_reply(&request, DataId::COMBINED_ACTIVE_ENERGY, &reply)
                .unwrap_err()
                .to_string(),
            "the reply carries data identifier 00010000, the request asked for 00000000"
        );
        assert!(matches!(
            read_reply(&request, DataId::COMBINED_ACTIVE_ENERGY, &request),
            Err(ReplyError::NotAReply(_))
        ));
    }

    #[test]
    fn follow_up_reads_concatenate() {
        let address = Dlt645Address::from_number(1);
        let di = DataId(0x0330_0201);
        let mut session = ReadSession::new(address, di);
        let first = Frame::new(
            address,
            ControlCode(0xB1),
            vec![0x01, 0x02, 0x30, 0x03, 0xAA, 0xBB],
        );
        let Ok(Ok(ReadStep::FollowUp(next))) = session.on_reply(&first) else {
            panic!("expected a follow-up")
        };
        assert_eq!(next, request::read_follow_up(address, di, 1));
        let second = Frame::new(
            address,
            ControlCode(0x92),
            vec![0x01, 0x02, 0x30, 0x03, 0xCC, 0x01],
        );
        assert_eq!(
            session.on_reply(&second),
            Ok(Ok(ReadStep::Done(vec![0xAA, 0xBB, 0xCC])))
        );
    }

    #[test]
    fn follow_up_sequence_is_checked() {
        let address = Dlt645Address::from_number(1);
        let di = DataId(0x0330_0201);
        let mut session = ReadSession::new(address, di);
        let first = Frame::new(address, ControlCode(0xB1), vec![0x01, 0x02, 0x30, 0x03]);
        session.on_reply(&first).unwrap().unwrap();
        let second = Frame::new(
            address,
            ControlCode(0x92),
            vec![0x01, 0x02, 0x30, 0x03, 0x07],
        );
        assert_eq!(
            session.on_reply(&second),
            Err(ReplyError::Sequence {
                expected: 1,
                found: 7
            })
        );
    }
}

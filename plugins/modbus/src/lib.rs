//! Modbus RTU for meters, as a sans-IO library, with meter models as data.
//!
//! The Modbus driver plugin calls this crate; it never touches a port. The host sends a request's
//! bytes after the 3.5-character silence ([`timing`]), feeds received bytes to [`reply_complete`], and
//! hands the reply back for interpretation:
//!
//! - [`crc`] and [`frame`]: the RTU codec (CRC-16/MODBUS; functions 03, 04, 06, 16; exception replies),
//!   with errors that name the byte offset, what was expected and what came.
//! - [`stream`]: the incremental completion check and resynchronisation after garbage.
//! - [`driver`]: request builders and reply interpretation; an exception reply is a
//!   [`ModbusException`] inside `Ok`, a broken exchange a [`ReplyError`].
//! - [`model`] and [`plan`]: register maps in TOML (built in for the Eastron SDM120 and SDM630 and the
//!   DDS238, more from a user directory), validated with file:line errors, and reads grouped so that
//!   neighbouring quantities come in one exchange.
//! - [`value`]: register data types and exact decimal [`Reading`]s.
//! - [`sim`]: an emulated meter for simulated buses, driven by a register map.
//! - [`plugin`]: the driver plugin `modbus` ([`plugin::ModbusDriver`], an SDK `MeterDriver`); its
//!   declaration is exported from the cdylib with the default `export` feature, and
//!   [`plugin_declaration`] registers it statically.
//!
//! ```
//! use concentrator_driver_modbus::{read_registers, RegisterKind};
//! let request = read_registers(1, RegisterKind::Input, 0x0000, 2).unwrap();
//! assert_eq!(request.encode(), [0x01, 0x04, 0x00, 0x00, 0x00, 0x02, 0x71, 0xCB]);
//! ```
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod crc;
pub mod driver;
pub mod exception;
pub mod frame;
pub mod model;
pub mod plan;
pub mod plugin;
pub mod sim;
pub mod stream;
pub mod timing;
pub mod value;

pub use crc::crc16;
pub use driver::{
    decode_reply, interpret, read_block_reply, read_registers, write_register, write_registers,
    Outcome, ReplyError, RequestError,
};
pub use exception::{ExceptionCode, ModbusException};
pub use frame::{
    decode_exact, Adu, Decoded, Direction, FrameError, Request, RequestAdu, Response, ResponseAdu,
};
pub use model::{MapError, MapProblem, ModelRegistry, Register, RegisterKind, RegisterMap};
pub use plan::{QuantityValue, ReadBlock, UnknownQuantity};
pub use plugin::{plugin_declaration, ModbusDriver};
pub use stream::{reply_complete, request_complete, scan, Completeness, Scan};
pub use timing::{broadcast_timing, exchange_timing, DEFAULT_REPLY_TIMEOUT};
pub use value::{to_reading, DataType, Raw, Reading, ReadingError};

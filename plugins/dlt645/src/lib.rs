//! DL/T 645-2007, the Chinese multi-function meter protocol on RS485, as a sans-IO library.
//!
//! The DL/T 645 driver plugin calls this crate; it never touches a port. The plugin's host sends the
//! bytes a request encodes to, feeds received bytes to [`reply_complete`] until a frame is whole, and
//! hands the reply back for interpretation:
//!
//! - [`frame`]: the frame codec (`FE.. 68 address 68 C L data CS 16`, data `+0x33`, low byte first), with
//!   errors that name the byte offset, what was expected and what came.
//! - [`stream`]: the incremental completion check and resynchronisation after garbage.
//! - [`request`]: one builder per task: read data, follow-up read, read address (wildcard), write data
//!   with password and operator code, set clock, broadcast time sync, freeze, relay control.
//! - [`reply`]: replies checked against their request; a meter's refusal is a [`Dlt645Exception`]
//!   inside `Ok`, a broken exchange is a [`ReplyError`]; [`ReadSession`] follows up long replies.
//! - [`data_id`]: the data identifiers a concentrator reads and their typed [`Value`]s: energy as an
//!   exact [`Reading`] (`1234567 × 10^-2 kWh`), voltage, current, power, date, time, relay state
//!   ([`RunningStatus3`]), prepaid balances.
//! - [`timing`]: the reply window, inter-byte gap and wait before the next request, as HAL timings.
//! - [`sim`]: an emulated meter for simulated buses.
//! - [`plugin`]: the driver plugin `dlt645` ([`plugin::Dlt645Driver`], an SDK `MeterDriver`); its
//!   declaration is exported from the cdylib with the default `export` feature, and
//!   [`plugin_declaration`] registers it statically.
//!
//! ```
//! use concentrator_driver_dlt645::{read_data, DataId, Dlt645Address};
//! let request = read_data(Dlt645Address::from_number(1), DataId::IMPORT_ACTIVE_ENERGY);
//! let wire = request.encode_with_preamble(4).unwrap();
//! assert_eq!(wire[..6], [0xFE, 0xFE, 0xFE, 0xFE, 0x68, 0x01]);
//! ```
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod address;
pub mod bcd;
pub mod control;
pub mod data_id;
pub mod exception;
pub mod frame;
pub mod plugin;
pub mod reply;
pub mod request;
pub mod sim;
pub mod status;
pub mod stream;
pub mod timing;
pub mod value;

pub use address::{AddressError, Dlt645Address};
pub use control::{ControlCode, Function};
pub use data_id::{decode_value, DataFormat, DataId, Phase, Value, ValueError};
pub use exception::{Dlt645Exception, ErrorBit};
pub use frame::{Decoded, Frame, FrameError};
pub use plugin::{plugin_declaration, Dlt645Driver};
pub use reply::{
    ack_reply, address_reply, check, decode_reply, read_reply, read_value, Outcome, ReadReply,
    ReadSession, ReadStep, ReplyError,
};
pub use request::{
    broadcast_time_sync, freeze, read_address, read_data, read_follow_up, relay_control, set_clock,
    write_data, FreezeTime, OperatorCode, Password, RelayCommand,
};
pub use status::{MeterType, PowerSupply, RelayState, RunningStatus3};
pub use stream::{reply_complete, scan, Completeness, FrameBuffer, Scan};
pub use timing::{broadcast_timing, exchange_timing};
pub use value::{DateTimeError, MeterDate, MeterDateTime, MeterTime, Reading, Unit};

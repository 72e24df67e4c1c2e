//! TI Z-Stack 3.x coordinators (CC2652/CC1352) on a UART, speaking TI's Monitor and Test protocol as a
//! Zigbee network processor (ZNP), as a sans-IO library and a stream driver plugin.
//!
//! Who uses it: the daemon, which links the `znp` driver in (registered statically) for blocks whose
//! meters are reached over Zigbee, and the `concentrator decode znp` command. The driver never
//! touches a port; the plugin host's `StreamSession` moves bytes between it and the UART.
//!
//! - [`mt`]: the MT frame (`FE len cmd0 cmd1 data fcs`), a reader that resynchronises after garbage,
//!   and the typed SYS/UTIL/AF/ZDO commands.
//! - [`zcl`]: the ZCL frame, data types, global commands (read attributes, reports, configure reporting,
//!   default response), the Metering (0x0702) and Prepayment (0x0705) clusters, and readings.
//! - [`driver`]: [`ZnpDriver`], the coordinator state machine: start-up (from cold or an already formed
//!   network), SREQ/SRSP pairing with timeouts, AREQs, device discovery, the host's commands
//!   ([`Command`]) and their results ([`Notice`]).
//! - [`devices`]: the [`DeviceTable`] the daemon persists.
//! - [`decode`]: [`decode_to_json`], an MT frame and the ZCL inside it as JSON.
//! - [`sim`]: a coordinator emulator with Zigbee meters behind it, in-process, on a pseudo-terminal or
//!   over TCP, with the NV memory of a formed network for host stacks other than ours.
//! - [`plugin`]: the `znp` plugin; [`plugin_declaration`] registers it statically, and
//!   `plugins/znp-plugin` exports it as a loadable library.
//!
//! ```
//! use concentrator_driver_znp::decode_to_json;
//! let json = decode_to_json(&[0xFE, 0x00, 0x21, 0x01, 0x20]).unwrap();
//! assert_eq!(json["frame"]["command"], "SYS_PING");
//! ```
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod coordinator;
pub mod decode;
pub mod devices;
pub mod driver;
pub mod mt;
pub mod plugin;
pub mod sim;
pub mod wire;
pub mod zcl;

pub use decode::{decode_to_json, zcl_json, DecodeError};
pub use devices::{DeviceEntry, DeviceTable, MeterMapping};
pub use driver::{
    Command, CommandRejected, CommandRequest, CommandResult, LinkState, Notice, ZnpConfig,
    ZnpDriver, ZnpStats,
};
pub use mt::{MtCommand, MtFrame};
pub use plugin::{plugin_declaration, ZnpPlugin};
pub use wire::IeeeAddress;
pub use zcl::{PrepaymentCommand, PrepaymentResponse, ZclFrame, ZclValue};

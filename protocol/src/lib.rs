//! The wire protocol between a concentrator gateway and the utility's head-end.
//!
//! Used by the gateway's uplink (`concentrator-uplink`) and by any head-end, including the reference one.
//! It holds no state and does no I/O; it reads the wall clock ([`unix_now`], the one such reading of every
//! crate). The specification, with field tables and example octets, is `docs/protocol.md`; this crate is
//! its reference implementation.
//!
//! Layers, outside in:
//!
//! 1. the MQTT [`Topic`] (gateway id, up/down, the meter's TID or `gw`, the kind);
//! 2. the protected envelope of `concentrator-security` (for every kind whose [`Kind::protection`] is
//!    [`Protection::Sealed`]);
//! 3. the [`Frame`]: a CBOR map of header (version, [`MessageId`], kind, TID, creation time) and [`Body`].
//!
//! ```
//! use concentrator_protocol::*;
//!
//! let gw = GatewayId::new("gw-0001").unwrap();
//! let tid = Tid([0x5a; 8]);
//! let frame = Frame::new(
//!     MessageId::new(*b"readings", 42),
//!     Some(tid),
//!     1_767_225_600,
//!     Body::Readings(Readings {
//!         readings: vec![Reading {
//!             at: 1_767_225_600,
//!             quantity: Quantity::EnergyImportWh,
//!             value: 1_234_567,
//!             exponent: 0,
//!         }],
//!     }),
//! );
//! let octets = frame.encode().unwrap();
//! assert_eq!(Frame::decode(&octets).unwrap(), frame);
//! let topic = Topic::for_message(&gw, Scope::Meter(tid), frame.kind());
//! assert_eq!(topic.to_string(), "c/v1/gw-0001/up/5a5a5a5a5a5a5a5a/readings");
//! ```
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod body;
mod clock;
mod error;
mod frame;
mod ids;
mod kind;
pub mod protect;
pub mod sms;
mod topic;

pub use body::*;
pub use clock::unix_now;
pub use error::ProtocolError;
pub use frame::{Body, Frame, Header, FRAME_VERSION, MAX_FRAME_LEN};
pub use ids::{GatewayId, MessageId, Tid, MAX_GATEWAY_ID_LEN, MESSAGE_ID_LEN, TID_LEN};
pub use kind::{Flow, Kind, Priority, Protection};
pub use topic::{Scope, Topic, MOSQUITTO_ACL, PREFIX};

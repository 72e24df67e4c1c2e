//! TI's Monitor and Test (MT) protocol as Z-Stack's network processor (ZNP) speaks it on a UART: the
//! frame, an incremental reader that resynchronises after garbage, and the typed commands.

pub mod commands;
pub mod frame;
pub mod reader;
pub mod types;

pub use commands::{command_name, CommandError, MtCommand, DEV_ZB_COORD};
pub use frame::{fcs, CommandType, FrameError, MtFrame, Subsystem, MAX_DATA, SOF};
pub use reader::{FrameReader, Read};
pub use types::{AfDataRequest, AfIncomingMsg, EndpointDescriptor, SimpleDescriptor};

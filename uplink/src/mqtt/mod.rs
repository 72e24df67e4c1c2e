//! MQTT over TLS to the head-end, draining durable outboxes.
//!
//! The daemon opens a [`SledOutbox`] (and an [`Executed`] set) in the ledger's sled database, queues
//! readings and events into it with [`AppendOutbox::append`] (a local write that never waits for the
//! network), hands over other [`Outbox`]es to drain (the daemon adapts the ledger's), and starts an [`Uplink`] with its security
//! contexts ([`Channels`]) and its command handler ([`Downlink`]). The uplink connects with TLS and the
//! gateway's client certificate, keeps an MQTT persistent session (clean session off, QoS 1), publishes a
//! retained birth message and leaves a retained death message as its will, reconnects with capped
//! exponential backoff and full jitter ([`Backoff`]), seals each message when it sends it, and deletes an
//! entry only when the head-end acknowledges its message id. Design and numbers: `docs/uplink.md`.

mod backoff;
mod downlink;
mod error;
mod executed;
mod outbox;
mod session;
mod sled_outbox;
mod state;
mod tls;
mod uplink;

pub use backoff::Backoff;
pub use downlink::{
    is_aka, is_command, ChannelTable, Channels, Downlink, Handled, Outcome, Ticket,
};
pub use error::{OutboxError, UplinkError};
pub use executed::{Executed, DEFAULT_CAPACITY, EXECUTED_TREE};
pub use outbox::{merged, merged_where, AppendOutbox, Appended, Limits, Outbox, Pending};
pub use sled_outbox::{SledOutbox, DROP_REPORT_INTERVAL_S, OUTBOX_TREE};
pub use tls::TlsIdentity;
pub use uplink::{
    Inventory, LinkWaker, Uplink, UplinkConfig, UplinkParts, UplinkStatus, MAX_PACKET,
};

//! Errors of the MQTT uplink and its outboxes. Each says what failed, where, and what to do about it.

use thiserror::Error;

/// A failure of an outbox (the uplink's own, in sled, or the ledger's through its adapter).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The store refused a read or a write.
    #[error("outbox {outbox}: {op} failed in the store: {reason}; check the disk (space, read-only remount after a power cut) and restart the daemon")]
    Store {
        /// Which outbox (`uplink` or `ledger`).
        outbox: &'static str,
        /// What was being done.
        op: &'static str,
        /// The engine's message.
        reason: String,
    },
    /// A stored entry does not decode.
    #[error("outbox {outbox}: entry {key} is corrupt: {reason}; it is skipped and left in place for inspection with `concentrator outbox dump`")]
    Corrupt {
        /// Which outbox.
        outbox: &'static str,
        /// The entry's key, hex.
        key: String,
        /// Why.
        reason: String,
    },
    /// A frame could not be encoded (a body larger than the protocol allows, for instance).
    #[error("outbox {outbox}: cannot queue a {kind} message: {reason}; split the readings into smaller batches")]
    Encode {
        /// Which outbox.
        outbox: &'static str,
        /// The kind, for people.
        kind: String,
        /// The protocol's message.
        reason: String,
    },
    /// A routine reading was refused because the outbox is full of messages that may not be dropped.
    #[error("outbox {outbox} is full ({entries} entries, {bytes} octets) of messages that are never dropped; the reading was dropped and counted (event 51); restore the uplink or raise the limits")]
    Full {
        /// Which outbox.
        outbox: &'static str,
        /// Entries queued.
        entries: u64,
        /// Octets queued.
        bytes: u64,
    },
}

/// A failure of the MQTT uplink that stops it from starting (runtime failures are logged and retried).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UplinkError {
    /// The TLS material is unusable.
    #[error("uplink TLS setup: {what}: {reason}; provision the gateway's PEM certificate, its private key and the utility CA again")]
    Tls {
        /// Which part (CA, client certificate, key, connector).
        what: &'static str,
        /// The library's message.
        reason: String,
    },
    /// A setting is out of range.
    #[error("uplink setting {field} = {value} is invalid: {reason}")]
    Config {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: String,
        /// The valid range or form.
        reason: String,
    },
    /// The uplink thread could not be started or ended in a panic.
    #[error("uplink thread: {0}; this is a bug, report it with the daemon's log")]
    Thread(String),
    /// An outbox failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

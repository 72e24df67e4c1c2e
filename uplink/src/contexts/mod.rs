//! The security contexts the uplink seals and opens with ([`crate::mqtt::Channels`]): provisioned
//! ([`StaticChannels`], from a keys file) or made by AKA with the head-end ([`AkaChannels`], the USIM end
//! of docs/protocol.md, *Attach, AKA and security mode over MQTT*, for the gateway and on each meter's
//! behalf). Both keep what must survive a restart (SQN windows, contexts, COUNT reservations) through a
//! [`ContextStore`] and queue AKA messages through an [`crate::mqtt::AppendOutbox`]; they read no clock
//! (every call brings the time) and do no network I/O, so the tests beside them drive whole runs.
//!
//! The daemon reads the credentials and keys files into the types below and wires the rest.

mod aka;
mod provisioned;
mod store;

use concentrator_protocol::Tid;
use concentrator_security::suci::Profile;
use concentrator_security::SecurityMode;

pub use aka::{
    gateway_ik, local_scopes, meter_wire_tid, AkaChannels, AkaState, MAX_METER_RUNS, RETRY_MAX_S,
    RETRY_MIN_S, SEAL_MARGIN_S, STEP_TIMEOUT_S,
};
pub use provisioned::{StaticChannels, RESERVE};
pub use store::{ContextStore, MemContexts, SledContexts, Tree, AKA_TREE, COUNTS_TREE};

/// One subscriber's credentials: the USIM side of AKA.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The IMSI, 6–15 digits (concealed whole in the attach request).
    pub imsi: String,
    /// The subscriber key K.
    pub k: [u8; 16],
    /// OPc (the operator variant key, already derived with K).
    pub opc: [u8; 16],
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <secret>)", self.imsi)
    }
}

/// A meter's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterCredentials {
    /// The meter number (`meter_id`, else the address as written).
    pub meter: String,
    /// Its subscriber credentials.
    pub credentials: Credentials,
}

/// The `aka` file, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkaFile {
    /// The home network's public key id, sent in every attach request.
    pub key_id: u8,
    /// The SUCI concealment profile.
    pub profile: Profile,
    /// The home network's public key (32 octets for profile A, 33 compressed for B).
    pub home_network_public_key: Vec<u8>,
    /// The algorithm pairs offered, preferred first.
    pub modes: Vec<SecurityMode>,
    /// The gateway's own subscriber.
    pub gateway: Credentials,
    /// The meters'.
    pub meters: Vec<MeterCredentials>,
}

/// CK and IK of one security context.
#[derive(Clone, PartialEq, Eq)]
pub struct ScopeKey {
    /// Ciphering key.
    pub ck: [u8; 16],
    /// Integrity key.
    pub ik: [u8; 16],
}

impl std::fmt::Debug for ScopeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScopeKey(<secret>)")
    }
}

/// One meter's provisioned context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterKey {
    /// The meter number (`meter_id`, else the address as written).
    pub meter: String,
    /// Its temporary identity at the head-end (topics and envelopes use it).
    pub tid: Tid,
    /// Its keys.
    pub key: ScopeKey,
}

/// The provisioned security contexts (the `keys` file).
#[derive(Debug, Clone)]
pub struct KeyFile {
    /// The algorithms, 128-EIA2/EEA2 (`aes`, default) or UIA1/UEA1 (`kasumi`).
    pub mode: SecurityMode,
    /// When the contexts stop being valid, unix seconds; `None`: ten years from the daemon's start.
    pub valid_until: Option<u64>,
    /// The gateway's own context.
    pub gateway: ScopeKey,
    /// The meters' contexts.
    pub meters: Vec<MeterKey>,
}

//! The host's errors: why a plugin was refused ([`LoadError`]), why a signature does not hold
//! ([`SignatureError`], [`KeyError`]), and why a task failed ([`TaskError`]).

use std::path::PathBuf;

use concentrator_hal::HalError;
use concentrator_plugin_api::{ApiVersion, BUILD_TARGET};

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The text is not a PEM key of the expected kind.
    #[error("{origin} is not a PEM {expected}: {source}; make one with `openssl genpkey -algorithm ed25519` (private) and `openssl pkey -pubout` (public)")]
    Pem {
        /// The file or "the PEM text".
        origin: String,
        /// "public key" or "private key".
        expected: &'static str,
        /// OpenSSL's reason.
        source: openssl::error::ErrorStack,
    },
    /// The key is of a type we do not accept.
    #[error("{origin} holds a {found} key; plugin signatures use Ed25519 or ECDSA P-256 keys")]
    Unsupported {
        /// The file or "the PEM text".
        origin: String,
        /// What it holds.
        found: String,
    },
    /// OpenSSL failed while handling the key.
    #[error("{origin}: OpenSSL failed while {action}: {source}")]
    Crypto {
        /// The file or "the PEM text".
        origin: String,
        /// What we were doing.
        action: &'static str,
        /// OpenSSL's reason.
        source: openssl::error::ErrorStack,
    },
}

/// Why a plugin file's signature does not hold.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// There is no signature file next to the plugin.
    #[error("there is no signature file {sig_path}; sign the plugin with `concentrator plugins sign --key vendor.pem FILE`")]
    Missing {
        /// Where it was looked for.
        sig_path: PathBuf,
    },
    /// The signature file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The signature file is not in the expected format.
    #[error("the signature file is malformed ({reason}); re-sign the plugin with `concentrator plugins sign`")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The signing key is not trusted.
    #[error("it is signed with key {key_id}, which is not a trusted vendor key (trusted: {trusted}); add the vendor's public key to the daemon's config")]
    UnknownKey {
        /// The signature's key id.
        key_id: String,
        /// The ids of the trusted keys.
        trusted: String,
    },
    /// The signature names an algorithm that does not match the trusted key with its id.
    #[error("the signature says {found} but trusted key {key_id} is {expected}; re-sign with the right key")]
    AlgorithmMismatch {
        /// The key id.
        key_id: String,
        /// The signature's algorithm.
        found: String,
        /// The key's algorithm.
        expected: &'static str,
    },
    /// The file's hash is not the one that was signed.
    #[error("the file changed after signing: its SHA-256 is {actual}, the signature is for {signed}; reinstall the vendor's file or re-sign it")]
    FileChanged {
        /// The hash in the signature file.
        signed: String,
        /// The file's hash now.
        actual: String,
    },
    /// A signature of format 1, which bound only the file's hash.
    #[error("the signature is of format 1, which does not bind the plugin's name and version (an older signed build could be swapped back in); re-sign the plugin with this release's `concentrator plugins sign`")]
    OldFormat,
    /// The signature does not verify.
    #[error("the signature does not verify against trusted key {key_id}: the file or its signature was altered")]
    BadSignature {
        /// The key id.
        key_id: String,
    },
    /// OpenSSL failed.
    #[error("OpenSSL failed while {action}: {source}")]
    Crypto {
        /// What we were doing.
        action: &'static str,
        /// OpenSSL's reason.
        source: openssl::error::ErrorStack,
    },
}

/// Why a plugin declaration is refused. Checked before anything in the plugin is called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeclarationError {
    /// The declaration symbol is null.
    #[error("the declaration symbol points nowhere")]
    Null,
    /// Another ABI version.
    #[error("it is built for plugin ABI {found}, this host speaks ABI {expected}; rebuild it against the concentrator-plugin-sdk that matches this appliance")]
    AbiVersion {
        /// The plugin's.
        found: u32,
        /// The host's.
        expected: u32,
    },
    /// An API version this host does not serve.
    #[error("it needs plugin API {found}, this host serves {host} (same major, minor up to the host's); rebuild it against the SDK of this appliance or update the appliance")]
    ApiVersion {
        /// The plugin's.
        found: ApiVersion,
        /// The host's.
        host: ApiVersion,
    },
    /// A coordinator driver built before the coordinator API (1.2), which spoke notices of its own.
    #[error("it is a coordinator driver built against API {found}, before the typed coordinator API of 1.2 that this host speaks; rebuild it with this release's SDK (docs/plugins.md §2.4)")]
    OldCoordinatorApi {
        /// The plugin's.
        found: ApiVersion,
    },
    /// Another target triple.
    #[error("it is built for target `{found}`, this host is `{expected}`; build it with `cargo build --release --target {expected}`")]
    Target {
        /// The plugin's.
        found: String,
        /// The host's.
        expected: &'static str,
    },
    /// Built with panic = abort (or an unknown strategy).
    #[error("it is built with panic strategy {found}, so its panics could not be caught; build it with `panic = \"unwind\"` (the default) in its Cargo profile")]
    PanicStrategy {
        /// What the declaration says.
        found: String,
    },
    /// A name, version or target that is not valid.
    #[error("its {field} {reason}")]
    BadString {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An unknown driver kind.
    #[error("driver kind {0} is not known to this host (1: RS485 meter, 2: stream coordinator, 3: modem)")]
    Kind(u32),
    /// The entry points for the declared kind are missing.
    #[error("it declares a {kind} driver but {missing}")]
    Entries {
        /// The kind.
        kind: &'static str,
        /// What is missing.
        missing: String,
    },
}

/// Why a plugin was not loaded. Every message names the file (or the static driver) and the reason.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or the plugin directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file or directory may be changed by someone other than root.
    #[error("{path} is refused: {reason}; plugins must be root-owned and not writable by group or others (chown root:root, chmod 0644 for files and 0755 for the directory)")]
    NotPrivate {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The signature does not hold.
    #[error("{path} is refused: {source}")]
    Signature {
        /// The plugin file.
        path: PathBuf,
        /// Why.
        source: SignatureError,
    },
    /// The dynamic loader refused the file.
    #[error("{path} is refused: the dynamic loader cannot load it ({message}); build it as a cdylib for `{target}` with the appliance's toolchain", target = BUILD_TARGET)]
    Dlopen {
        /// The plugin file.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// The declaration symbol is missing.
    #[error("{path} is refused: it does not export the symbol `concentrator_plugin_declaration` ({message}); a driver crate must call `concentrator_plugin_sdk::export_plugin!()` and be built as a cdylib")]
    MissingSymbol {
        /// The plugin file.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// The declaration is refused.
    #[error("{origin} is refused before any call: {source}")]
    Declaration {
        /// The file, or `static driver` and its name.
        origin: String,
        /// Why.
        source: DeclarationError,
    },
    /// The plugin's `init` failed or panicked.
    #[error("{origin} is refused: plugin `{plugin}` failed to initialise ({status}): {message}")]
    Init {
        /// The file or static driver.
        origin: String,
        /// The plugin's name.
        plugin: String,
        /// The status name.
        status: &'static str,
        /// The plugin's message (its panic message when it panicked).
        message: String,
    },
    /// The file declares another name or version than its signature binds.
    #[error("{path} is refused: it declares plugin `{declared}` but its signature is for `{signed}`; re-sign the plugin after building it")]
    NotAsSigned {
        /// The plugin file.
        path: PathBuf,
        /// `name version` as declared.
        declared: String,
        /// `name version` as signed.
        signed: String,
    },
    /// An older version than one already run here.
    #[error("{path} is refused: plugin `{name}` {version} is older than {highest}, which this appliance has run before (recorded in {store}); install {highest} or later, or set `allow_downgrade = true` in the plugin's `[[plugin]]` entry")]
    Downgrade {
        /// The plugin file.
        path: PathBuf,
        /// The plugin's name.
        name: String,
        /// Its version.
        version: String,
        /// The highest version seen.
        highest: String,
        /// The state file.
        store: String,
    },
    /// The isolated mode could not start the plugin's child, or the child refused the plugin.
    #[error("{path} is refused in isolated mode: {reason}")]
    Isolated {
        /// The plugin file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A plugin with the same name is already loaded.
    #[error("{origin} is refused: a plugin named `{name}` is already loaded from {existing}; remove one of them from the plugin directory")]
    Duplicate {
        /// The new file or static driver.
        origin: String,
        /// The name.
        name: String,
        /// Where the loaded one came from.
        existing: String,
    },
}

/// Why a task (or a stream call) failed. A device exception is not here: it is a successful exchange
/// with a healthy meter, returned as `Ok(Err(DeviceException))`.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The plugin is quarantined; nothing in it is called any more.
    #[error("driver plugin `{plugin}` is quarantined ({reason}); its meters are reported as failed until the appliance restarts with a fixed plugin")]
    Quarantined {
        /// The plugin's name.
        plugin: String,
        /// Why it was quarantined.
        reason: String,
    },
    /// The plugin panicked; the panic counts towards quarantine.
    #[error("plugin `{plugin}` panicked in `{entry}`: {message}")]
    Panicked {
        /// The plugin's name.
        plugin: String,
        /// The entry point.
        entry: &'static str,
        /// The panic message.
        message: String,
    },
    /// The plugin broke the ABI's rules (a length beyond a buffer, an unknown code); counts towards
    /// quarantine.
    #[error("plugin `{plugin}` misbehaved in `{entry}`: {reason}")]
    Misbehaved {
        /// The plugin's name.
        plugin: String,
        /// The entry point.
        entry: &'static str,
        /// What it did.
        reason: String,
    },
    /// The driver refused the meter's config.
    #[error("plugin `{plugin}` refused the config of meter {meter}: {reason}; fix the meter's entry in the config")]
    ConfigRejected {
        /// The plugin's name.
        plugin: String,
        /// The meter's address in hex.
        meter: String,
        /// The driver's reason.
        reason: String,
    },
    /// The driver cannot do this task for this meter.
    #[error("plugin `{plugin}` cannot {task} on meter {meter}: {reason}")]
    TaskRejected {
        /// The plugin's name.
        plugin: String,
        /// The meter's address in hex.
        meter: String,
        /// The task.
        task: String,
        /// The driver's reason.
        reason: String,
    },
    /// The meter's reply could not be understood.
    #[error("meter {meter} (plugin `{plugin}`): protocol error: {message}")]
    Protocol {
        /// The plugin's name.
        plugin: String,
        /// The meter's address in hex.
        meter: String,
        /// The driver's message.
        message: String,
    },
    /// The meter did not answer.
    #[error("meter {meter} on bus {bus} did not answer")]
    NoReply {
        /// The meter's address in hex.
        meter: String,
        /// The bus's name.
        bus: String,
    },
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] HalError),
    /// A stream driver reported a failure of its own (not a fault of the plugin).
    #[error("plugin `{plugin}` failed in `{entry}`: {message}")]
    Failed {
        /// The plugin's name.
        plugin: String,
        /// The entry point.
        entry: &'static str,
        /// The driver's message.
        message: String,
    },
    /// An isolated plugin's child crashed, hung or broke the protocol in this call (or is waiting for
    /// its restart); counts as a fault, and repeated crashes quarantine the plugin.
    #[error("plugin `{plugin}` (isolated) failed in `{entry}`: {reason}")]
    ChildFailed {
        /// The plugin's name.
        plugin: String,
        /// The entry point.
        entry: &'static str,
        /// What happened to the child.
        reason: String,
    },
    /// An isolated plugin is quarantined after repeated crashes, until the time named.
    #[error("driver plugin `{plugin}` is quarantined until {until} ({reason}); its meters are reported as failed, other buses keep running")]
    ChildQuarantined {
        /// The plugin's name.
        plugin: String,
        /// When it is tried again (`HH:MM:SS UTC`).
        until: String,
        /// Why.
        reason: String,
    },
    /// The plugin is of another kind than the call needs.
    #[error("plugin `{plugin}` is a {found} driver, not a {expected} driver; check the driver named in the config")]
    WrongKind {
        /// The plugin's name.
        plugin: String,
        /// What was needed.
        expected: &'static str,
        /// What it is.
        found: &'static str,
    },
}

impl TaskError {
    /// Whether the error counted as a fault of the plugin.
    pub fn is_plugin_fault(&self) -> bool {
        matches!(
            self,
            TaskError::Panicked { .. }
                | TaskError::Misbehaved { .. }
                | TaskError::ChildFailed { .. }
        )
    }
}

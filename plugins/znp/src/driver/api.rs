//! What the host says to the driver (commands) and what the driver says back (notices), as JSON
//! through the stream API's `command` and `poll_notice` entry points (plugin API 1.1). The daemon links
//! this crate and uses these types on both sides; `docs/plugins.md` §4.3 shows the JSON.

use serde::{Deserialize, Serialize};

use crate::devices::{DeviceEntry, DeviceTable};
use crate::wire::IeeeAddress;
use crate::zcl::{ChangeDebt, ConfigureStatus, PrepaymentResponse, ReadRecord};

/// A command with the host's id, echoed in its notice: `{"id": 7, "op": "top_up", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// The host's id for the command.
    pub id: u64,
    /// The command.
    #[serde(flatten)]
    pub command: Command,
}

/// A command for the coordinator or a device behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Replace the driver's device table with the daemon's stored copy (at start).
    LoadDevices {
        /// The table.
        table: DeviceTable,
    },
    /// Open the network for joining for 1–254 seconds (0 closes it).
    PermitJoin {
        /// Seconds.
        seconds: u8,
    },
    /// Ask a device to leave the network.
    Leave {
        /// The device.
        device: IeeeAddress,
    },
    /// Read attributes of a cluster.
    Read {
        /// The device.
        device: IeeeAddress,
        /// The cluster (1794 = 0x0702 metering, 1797 = 0x0705 prepayment).
        cluster: u16,
        /// The attribute ids.
        attributes: Vec<u16>,
    },
    /// Configure the reporting of one attribute.
    ConfigureReporting {
        /// The device.
        device: IeeeAddress,
        /// The cluster.
        cluster: u16,
        /// The attribute.
        attribute: u16,
        /// Its ZCL data type.
        data_type: u8,
        /// Shortest interval, seconds.
        min_interval: u16,
        /// Longest interval, seconds.
        max_interval: u16,
        /// Change that triggers a report (analog types).
        #[serde(default)]
        reportable_change: Option<u64>,
    },
    /// Prepayment ConsumerTopUp with a top-up code.
    TopUp {
        /// The meter.
        device: IeeeAddress,
        /// The code (at most 25 characters).
        code: String,
        /// 0 energy service interface (us), 1 meter, 2 in-home display.
        #[serde(default)]
        originating_device: u8,
    },
    /// Prepayment SelectAvailableEmergencyCredit.
    SelectEmergencyCredit {
        /// The meter.
        device: IeeeAddress,
        /// Unix seconds the command was issued; the time of the command when absent.
        #[serde(default)]
        issued_at_unix: Option<i64>,
        /// 0 energy service interface (us), 1 meter, 2 in-home display.
        #[serde(default)]
        originating_device: u8,
    },
    /// Prepayment ChangeDebt.
    ChangeDebt {
        /// The meter.
        device: IeeeAddress,
        /// The debt's fields.
        #[serde(flatten)]
        debt: ChangeDebt,
    },
    /// Prepayment ChangePaymentMode, used to set the cut-off value.
    SetCutOff {
        /// The meter.
        device: IeeeAddress,
        /// Credit level at which the supply is cut.
        cut_off_value: i32,
        /// The supplier's id.
        #[serde(default)]
        provider_id: u32,
        /// The issuer's event id.
        #[serde(default)]
        issuer_event_id: u32,
        /// Proposed PaymentControlConfiguration bits.
        #[serde(default)]
        proposed_configuration: u16,
    },
    /// Prepayment SetLowCreditWarningLevel.
    SetLowCreditWarning {
        /// The meter.
        device: IeeeAddress,
        /// The level.
        level: u32,
    },
}

impl Command {
    /// The device the command is for, if any.
    pub fn device(&self) -> Option<IeeeAddress> {
        match self {
            Command::LoadDevices { .. } | Command::PermitJoin { .. } => None,
            Command::Leave { device }
            | Command::Read { device, .. }
            | Command::ConfigureReporting { device, .. }
            | Command::TopUp { device, .. }
            | Command::SelectEmergencyCredit { device, .. }
            | Command::ChangeDebt { device, .. }
            | Command::SetCutOff { device, .. }
            | Command::SetLowCreditWarning { device, .. } => Some(*device),
        }
    }
}

/// What came of a command that was carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommandResult {
    /// The coordinator accepted it (permit-join, leave request, table loaded).
    Accepted,
    /// The meter acknowledged it with a successful default response.
    Acknowledged,
    /// The attributes read (each with its own status).
    Attributes {
        /// One record per attribute.
        records: Vec<ReadRecord>,
    },
    /// The reporting configuration's statuses.
    Reporting {
        /// The statuses.
        statuses: Vec<ConfigureStatus>,
    },
    /// The prepayment meter's response (top-up, payment mode).
    Prepayment {
        /// The response.
        response: PrepaymentResponse,
    },
}

/// Something the driver tells the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// A command was carried out.
    CommandDone {
        /// The command's id.
        id: u64,
        /// What came of it.
        result: CommandResult,
    },
    /// The meter answered that it will not do it (a ZCL status): a healthy meter, not a failure.
    CommandRefused {
        /// The command's id.
        id: u64,
        /// The ZCL status.
        status: u8,
        /// Its name.
        status_name: String,
    },
    /// The command could not be carried out (not delivered, no answer, coordinator reset).
    CommandFailed {
        /// The command's id.
        id: u64,
        /// Why.
        reason: String,
    },
    /// A device was added to the table or changed in it; persist it.
    DeviceUpdated {
        /// The device as the table now holds it.
        device: Box<DeviceEntry>,
    },
    /// A device left the network and the table.
    DeviceRemoved {
        /// Its address.
        ieee: IeeeAddress,
    },
    /// The coordinator is up.
    CoordinatorUp {
        /// Its IEEE address.
        ieee: IeeeAddress,
        /// Its firmware, `major.minor.maint` (and revision).
        firmware: String,
        /// Whether it had formed the network before (restored rather than newly started).
        was_formed: bool,
    },
}

impl Notice {
    /// The notice as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"notice\":\"error\",\"reason\":\"{e}\"}}"))
    }
}

//! `[update]`: where the daemon sees a trial boot of a new slot and where it asks for the slot to be
//! made permanent (crate::trial). Both keys have the appliance image's values as defaults.
//!
//! ```toml
//! [update]
//! trial_flag = "/proc/device-tree/chosen/bootloader/tryboot"   # the firmware's: non-zero on a trial boot
//! request_dir = "/run/concentrator"                            # update-healthy / update-unhealthy go here
//! ```

use std::path::PathBuf;

use serde::Deserialize;

/// `[update]` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateSection {
    /// The file whose content says a trial boot (default the Raspberry Pi firmware's device-tree flag).
    pub trial_flag: Option<PathBuf>,
    /// Where the daemon leaves its verdict for the root unit that commits or rolls back.
    pub request_dir: Option<PathBuf>,
}

impl UpdateSection {
    /// The trial flag file.
    pub fn trial_flag(&self) -> PathBuf {
        self.trial_flag
            .clone()
            .unwrap_or_else(|| PathBuf::from("/proc/device-tree/chosen/bootloader/tryboot"))
    }

    /// The request directory.
    pub fn request_dir(&self) -> PathBuf {
        self.request_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/run/concentrator"))
    }
}

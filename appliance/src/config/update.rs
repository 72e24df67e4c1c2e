//! `[update]`: where the daemon sees a trial boot of a new slot and where it asks for the slot to be
//! made permanent (crate::trial). Both keys have the appliance image's values as defaults.
//!
//! ```toml
//! [update]
//! trial_flag = "/sys/firmware/devicetree/base/chosen/bootloader/tryboot"   # the firmware's flag (/proc/device-tree is hidden from the unit)
//! request_dir = "/run/concentrator"                            # update-healthy / update-unhealthy go here
//! trial_limit_s = 600                                          # how long a trial boot has to become healthy
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
    /// How long a trial boot has to become healthy, seconds (default 600).
    pub trial_limit_s: Option<u64>,
}

impl UpdateSection {
    /// The trial flag file.
    pub fn trial_flag(&self) -> PathBuf {
        self.trial_flag.clone().unwrap_or_else(|| {
            PathBuf::from("/sys/firmware/devicetree/base/chosen/bootloader/tryboot")
        })
    }

    /// How long a trial boot has to become healthy.
    pub fn trial_limit(&self) -> std::time::Duration {
        self.trial_limit_s
            .map_or(crate::trial::TRIAL_LIMIT, std::time::Duration::from_secs)
    }

    /// The request directory.
    pub fn request_dir(&self) -> PathBuf {
        self.request_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/run/concentrator"))
    }
}

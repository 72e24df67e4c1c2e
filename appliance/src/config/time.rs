//! The `[time]` table: the gateway as its meters' time authority (docs/install.md, *Meter clocks*).
//! Absent: the defaults below (a daily sync at 03:00 local time, a 60 s drift limit, the systemd-timesyncd
//! flag as the NTP source, the modem's network time as the fallback when `[modem]` is configured).
//!
//! ```toml
//! [time]
//! sync_hour = 3                                   # local hour of the daily broadcast time sync
//! drift_limit_s = 60                              # a meter clock further off raises an event
//! read_every_min = 60                             # each meter's clock is read this often
//! ntp_flag = "/run/systemd/timesync/synchronized" # exists while NTP has synchronised the system clock
//! modem_time = true                               # else the modem's network time (AT+CCLK?)
//! headend_step_max_s = 3600                       # an unsynchronised gateway takes the head-end's time
//!                                                 # when it is at most this far from its own
//! ```

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::Diagnostic;
use super::model::Config;

/// Where systemd-timesyncd marks a synchronised system clock (systemd 239 and later).
pub const TIMESYNCD_FLAG: &str = "/run/systemd/timesync/synchronized";

/// `[time]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeSection {
    /// The local hour (0 to 23) at which the meters get their daily broadcast time sync.
    #[serde(default = "default_sync_hour")]
    pub sync_hour: Spanned<u8>,
    /// A meter whose clock is further than this from the gateway's, seconds, raises an event (1 to 86400).
    #[serde(default = "default_drift_limit")]
    pub drift_limit_s: Spanned<u32>,
    /// How often each meter's clock is read, minutes (0: only around the daily sync; at most 1440).
    #[serde(default = "default_read_every")]
    pub read_every_min: Spanned<u32>,
    /// A file that exists while NTP has synchronised the system clock.
    #[serde(default = "default_ntp_flag")]
    pub ntp_flag: Spanned<PathBuf>,
    /// Fall back to the modem's network time (`AT+CCLK?`) while NTP has not synchronised (needs `[modem]`).
    #[serde(default = "default_true")]
    pub modem_time: Spanned<bool>,
    /// An unsynchronised gateway steps its clock to the head-end's TimeSync when the two are at most
    /// this far apart, seconds (0: never).
    #[serde(default = "default_step_max")]
    pub headend_step_max_s: Spanned<u32>,
}

fn default_sync_hour() -> Spanned<u8> {
    Spanned::new(0..0, 3)
}
fn default_drift_limit() -> Spanned<u32> {
    Spanned::new(0..0, 60)
}
fn default_read_every() -> Spanned<u32> {
    Spanned::new(0..0, 60)
}
fn default_ntp_flag() -> Spanned<PathBuf> {
    Spanned::new(0..0, PathBuf::from(TIMESYNCD_FLAG))
}
fn default_true() -> Spanned<bool> {
    Spanned::new(0..0, true)
}
fn default_step_max() -> Spanned<u32> {
    Spanned::new(0..0, 3600)
}

impl Default for TimeSection {
    fn default() -> Self {
        TimeSection {
            sync_hour: default_sync_hour(),
            drift_limit_s: default_drift_limit(),
            read_every_min: default_read_every(),
            ntp_flag: default_ntp_flag(),
            modem_time: default_true(),
            headend_step_max_s: default_step_max(),
        }
    }
}

/// The time settings in plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSetup {
    /// Local hour of the daily sync.
    pub sync_hour: u8,
    /// Drift limit, seconds.
    pub drift_limit_s: u32,
    /// Clock read interval, seconds (0: only around the daily sync).
    pub read_every_s: u64,
    /// The NTP flag file.
    pub ntp_flag: PathBuf,
    /// Use the modem's network time (only with `[modem]`).
    pub modem_time: bool,
    /// Largest step from the head-end's time, seconds.
    pub headend_step_max_s: u32,
}

impl TimeSetup {
    /// The settings of `config` (its `[time]` or the defaults).
    pub fn from_config(config: &Config) -> TimeSetup {
        let default = TimeSection::default();
        let s = config.time.as_ref().unwrap_or(&default);
        TimeSetup {
            sync_hour: *s.sync_hour.get_ref(),
            drift_limit_s: *s.drift_limit_s.get_ref(),
            read_every_s: u64::from(*s.read_every_min.get_ref()) * 60,
            ntp_flag: s.ntp_flag.get_ref().clone(),
            modem_time: *s.modem_time.get_ref() && config.modem.is_some(),
            headend_step_max_s: *s.headend_step_max_s.get_ref(),
        }
    }
}

/// The mistakes in `[time]`.
pub(super) fn check(config: &Config) -> Vec<Diagnostic> {
    let Some(s) = &config.time else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if *s.sync_hour.get_ref() > 23 {
        out.push(
            Diagnostic::at(
                s.sync_hour.span(),
                format!("hour {} does not exist", s.sync_hour.get_ref()),
            )
            .help("write the local hour of the daily meter time sync, 0 to 23 (3 is 03:00)"),
        );
    }
    if !(1..=86_400).contains(s.drift_limit_s.get_ref()) {
        out.push(
            Diagnostic::at(
                s.drift_limit_s.span(),
                "the drift limit must be 1 to 86400 seconds",
            )
            .help("60 raises an event for a meter clock more than a minute off"),
        );
    }
    if *s.read_every_min.get_ref() > 1440 {
        out.push(
            Diagnostic::at(
                s.read_every_min.span(),
                "meter clocks are read at least once a day",
            )
            .help("write 0 to 1440 minutes (0: only around the daily sync)"),
        );
    }
    if *s.modem_time.get_ref() && s.modem_time.span() != (0..0) && config.modem.is_none() {
        out.push(
            Diagnostic::at(
                s.modem_time.span(),
                "the modem's network time needs a [modem] table",
            )
            .help("configure [modem], or write `modem_time = false`"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(time: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(
            "t.toml",
            &format!("[gateway]\nid = \"gw\"\nstore = \"/tmp/x\"\n\n[time]\n{time}"),
        )
    }

    #[test]
    fn defaults_and_every_mistake_at_its_key() {
        let config = parse("").unwrap();
        let setup = TimeSetup::from_config(&config);
        assert_eq!(setup.sync_hour, 3);
        assert_eq!(setup.drift_limit_s, 60);
        assert_eq!(setup.read_every_s, 3600);
        assert!(!setup.modem_time, "no [modem]: no modem time");
        let err =
            parse("sync_hour = 24\ndrift_limit_s = 0\nread_every_min = 2000\nmodem_time = true\n")
                .unwrap_err()
                .to_string();
        for part in [
            "hour 24 does not exist",
            "1 to 86400 seconds",
            "at least once a day",
            "needs a [modem] table",
        ] {
            assert!(err.contains(part), "{part}: {err}");
        }
    }
}

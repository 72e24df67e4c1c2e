//! The coordinator's settings: the TOML fragment the host passes to `open`, checked before start.

use std::time::Duration;

use serde::Deserialize;

/// The keys the config may hold, for error messages.
pub const KNOWN_KEYS: &str = "line, reset_on_start, srsp_timeout_ms, reset_timeout_ms, formation_timeout_ms, zcl_timeout_ms, retry_backoff_ms, max_srsp_timeouts, endpoint, profile, radius, credit_exponent, configure_reporting, report_min_s, report_max_s";

/// Why a config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error("the ZNP coordinator's config: {0}; known keys: {KNOWN_KEYS}")]
    Toml(String),
    /// A value out of range.
    #[error("`{key}` in the ZNP coordinator's config: {fix}")]
    Value {
        /// The key.
        key: &'static str,
        /// What to write instead.
        fix: &'static str,
    },
}

/// The coordinator's settings. Every field has a default; an empty config is valid.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZnpConfig {
    /// The UART's line settings, from the daemon (`"115200 8N1"`); the driver does not need them.
    pub line: Option<String>,
    /// Soft-reset the coordinator before the start-up sequence (default true).
    pub reset_on_start: bool,
    /// How long an SREQ waits for its SRSP (default 3000 ms).
    pub srsp_timeout_ms: u64,
    /// How long to wait for SYS_RESET_IND after a reset (default 5000 ms); without it the sequence
    /// goes on with a ping.
    pub reset_timeout_ms: u64,
    /// How long to wait for the network to come up after ZDO_STARTUP_FROM_APP (default 30000 ms).
    pub formation_timeout_ms: u64,
    /// How long a ZCL command waits for the device's answer (default 10000 ms).
    pub zcl_timeout_ms: u64,
    /// Wait before starting again after a failed start-up (default 5000 ms).
    pub retry_backoff_ms: u64,
    /// SRSP timeouts in a row after which the coordinator is taken as lost and restarted (default 3).
    pub max_srsp_timeouts: u32,
    /// Our endpoint (default 1).
    pub endpoint: u8,
    /// Our endpoint's profile (default 0x0104 Home Automation; 0x0109 for Smart Energy networks).
    pub profile: u16,
    /// Radius of AF data requests (default 30).
    pub radius: u8,
    /// Decimal exponent of the prepayment cluster's money values (default -2: they count cents).
    pub credit_exponent: i8,
    /// Configure reporting on meters after discovery (default true).
    pub configure_reporting: bool,
    /// Shortest reporting interval, seconds (default 10).
    pub report_min_s: u16,
    /// Longest reporting interval, seconds (default 300).
    pub report_max_s: u16,
}

impl Default for ZnpConfig {
    fn default() -> Self {
        ZnpConfig {
            line: None,
            reset_on_start: true,
            srsp_timeout_ms: 3000,
            reset_timeout_ms: 5000,
            formation_timeout_ms: 30_000,
            zcl_timeout_ms: 10_000,
            retry_backoff_ms: 5000,
            max_srsp_timeouts: 3,
            endpoint: 1,
            profile: 0x0104,
            radius: 30,
            credit_exponent: -2,
            configure_reporting: true,
            report_min_s: 10,
            report_max_s: 300,
        }
    }
}

impl ZnpConfig {
    /// Parses and checks a TOML fragment.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: ZnpConfig =
            toml::from_str(text).map_err(|e| ConfigError::Toml(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, fix| Err(ConfigError::Value { key, fix });
        if !(1..=240).contains(&self.endpoint) {
            return bad("endpoint", "an application endpoint is 1 to 240");
        }
        if !(-20..=20).contains(&self.credit_exponent) {
            return bad(
                "credit_exponent",
                "use -20 to 20 (-2 when credit counts cents)",
            );
        }
        for (key, value) in [
            ("srsp_timeout_ms", self.srsp_timeout_ms),
            ("reset_timeout_ms", self.reset_timeout_ms),
            ("formation_timeout_ms", self.formation_timeout_ms),
            ("zcl_timeout_ms", self.zcl_timeout_ms),
        ] {
            if !(10..=600_000).contains(&value) {
                return bad(key, "use 10 to 600000 milliseconds");
            }
        }
        if self.max_srsp_timeouts == 0 {
            return bad("max_srsp_timeouts", "use at least 1");
        }
        if self.report_min_s > self.report_max_s {
            return bad("report_min_s", "must not be above report_max_s");
        }
        Ok(())
    }

    pub(crate) fn srsp_timeout(&self) -> Duration {
        Duration::from_millis(self.srsp_timeout_ms)
    }

    pub(crate) fn zcl_timeout(&self) -> Duration {
        Duration::from_millis(self.zcl_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        assert_eq!(ZnpConfig::parse("").unwrap(), ZnpConfig::default());
        let c = ZnpConfig::parse("profile = 0x0109\nline = \"115200 8N1\"").unwrap();
        assert_eq!(c.profile, 0x0109);
        let e = ZnpConfig::parse("colour = 1").unwrap_err().to_string();
        assert!(e.contains("colour") && e.contains("known keys"), "{e}");
        assert!(ZnpConfig::parse("endpoint = 0").is_err());
        assert!(ZnpConfig::parse("srsp_timeout_ms = 0").is_err());
    }
}

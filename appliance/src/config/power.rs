//! `[power]`: the power-fail input of a UPS HAT or supercapacitor board (the last gasp, crate::power).
//!
//! ```toml
//! [power]
//! fail_line = "gpiochip0:6"   # the board's power-good (or power-fail) output
//! polarity = "active_low"     # low means the supply failed (a "power good" output); or "active_high"
//! debounce_ms = 50            # a level must hold this long (a spike on a long wire is not an outage)
//! last_gasp_grace_ms = 3000   # how long the daemon waits for the last gasp to leave before it stops
//! ```

use std::time::Duration;

use concentrator_hal::linux::GpioLineSpec;
use concentrator_hal::power_fail::Polarity;
use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::Diagnostic;

/// `[power]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerSection {
    /// The power-fail line: GPIO chip and offset, `gpiochip0:6`.
    pub fail_line: Spanned<String>,
    /// `active_low` (default: low means failed) or `active_high`.
    pub polarity: Option<Spanned<String>>,
    /// Debounce, milliseconds (default 50).
    #[serde(default = "default_debounce")]
    pub debounce_ms: u64,
    /// How long the last gasp may take to leave before the daemon stops, milliseconds (default 3000).
    #[serde(default = "default_grace")]
    pub last_gasp_grace_ms: u64,
}

fn default_debounce() -> u64 {
    50
}

fn default_grace() -> u64 {
    3000
}

/// `[power]` loaded.
#[derive(Debug, Clone)]
pub struct PowerSetup {
    /// The line.
    pub line: GpioLineSpec,
    /// Which level means failed.
    pub polarity: Polarity,
    /// Debounce.
    pub debounce: Duration,
    /// The last gasp's time to leave.
    pub grace: Duration,
}

fn parse(s: &PowerSection) -> Result<PowerSetup, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let line = s
        .fail_line
        .get_ref()
        .parse::<GpioLineSpec>()
        .map_err(|e| {
            out.push(Diagnostic::at(s.fail_line.span(), e).help(
                "write the power-fail line as chip and offset, e.g. `fail_line = \"gpiochip0:6\"` (`gpioinfo` lists them)",
            ))
        })
        .ok();
    let polarity = match s
        .polarity
        .as_ref()
        .map(|p| (p.get_ref().as_str(), p.span()))
    {
        None | Some(("active_low", _)) => Some(Polarity::ActiveLow),
        Some(("active_high", _)) => Some(Polarity::ActiveHigh),
        Some((other, span)) => {
            out.push(
                Diagnostic::at(span, format!("polarity = {other:?} is not a polarity")).help(
                    "write `polarity = \"active_low\"` (low means the supply failed: a power-good output) or `\"active_high\"` (a power-fail output)",
                ),
            );
            None
        }
    };
    match (line, polarity) {
        (Some(line), Some(polarity)) if out.is_empty() => Ok(PowerSetup {
            line,
            polarity,
            debounce: Duration::from_millis(s.debounce_ms),
            grace: Duration::from_millis(s.last_gasp_grace_ms),
        }),
        _ => Err(out),
    }
}

/// The diagnostics of `[power]` (empty when usable or absent).
pub(super) fn check(section: Option<&Spanned<PowerSection>>) -> Vec<Diagnostic> {
    section
        .map(|s| parse(s.get_ref()).err().unwrap_or_default())
        .unwrap_or_default()
}

impl PowerSetup {
    /// `[power]` of a validated configuration; `Ok(None)` without one.
    pub fn load(section: Option<&Spanned<PowerSection>>) -> Result<Option<PowerSetup>, String> {
        let Some(s) = section else {
            return Ok(None);
        };
        parse(s.get_ref()).map(Some).map_err(|d| {
            d.iter()
                .map(Diagnostic::summary)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

//! The block balance's configuration (docs/install.md, *Block balance*): which meter is the feeder
//! (master) meter of a block or staircase and which dwellings are behind it, and the `[balance]` table
//! with the interval, the technical losses allowed and how many intervals over the allowance raise
//! the theft/loss event. Absent `[balance]`: the defaults below, used when a meter has `role = "feeder"`.
//!
//! ```toml
//! [balance]
//! interval_s = 900        # compare every quarter hour (aligned on the clock); 3600 for hourly
//! loss_percent = 5.0      # technical losses allowed, percent of the feeder's energy
//! loss_wh = 50            # plus this much per interval (register resolution, small loads)
//! intervals = 2           # consecutive intervals over the allowance before the event
//!
//! [[meter]]               # the staircase's master meter
//! # bus, address, driver, dwelling as usual
//! role = "feeder"
//! group = "stair-A"
//!
//! [[meter]]               # each dwelling behind it
//! # ...
//! group = "stair-A"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::diagnostic::Diagnostic;
use super::model::{Config, MeterConfig};

/// `[balance]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceSection {
    /// The interval compared, seconds (10 to 86400, a divisor of a day; intervals start at multiples of
    /// it since midnight UTC, so 900 is every quarter hour in every whole-hour time zone).
    #[serde(default = "default_interval")]
    pub interval_s: Spanned<u32>,
    /// Technical losses allowed, percent of the feeder's energy over the interval (0 to 50).
    #[serde(default = "default_loss_percent")]
    pub loss_percent: Spanned<f64>,
    /// Losses allowed on top, Wh per interval (register resolution, standby loads), at most 1000000.
    #[serde(default = "default_loss_wh")]
    pub loss_wh: Spanned<u32>,
    /// Consecutive intervals over the allowance before the theft/loss event (1 to 96).
    #[serde(default = "default_intervals")]
    pub intervals: Spanned<u32>,
}

fn default_interval() -> Spanned<u32> {
    Spanned::new(0..0, 900)
}
fn default_loss_percent() -> Spanned<f64> {
    Spanned::new(0..0, 5.0)
}
fn default_loss_wh() -> Spanned<u32> {
    Spanned::new(0..0, 50)
}
fn default_intervals() -> Spanned<u32> {
    Spanned::new(0..0, 2)
}

impl Default for BalanceSection {
    fn default() -> Self {
        BalanceSection {
            interval_s: default_interval(),
            loss_percent: default_loss_percent(),
            loss_wh: default_loss_wh(),
            intervals: default_intervals(),
        }
    }
}

/// One group: its feeder and its dwellings, by `bus/address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSetup {
    /// The group's name (`stair-A`).
    pub name: String,
    /// The feeder meter, `bus/address`.
    pub feeder: String,
    /// The dwellings' meters, `bus/address`.
    pub dwellings: Vec<String>,
}

/// The balance settings in plain values.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceSetup {
    /// Interval, seconds.
    pub interval_s: u64,
    /// Allowed losses, percent of the feeder's energy.
    pub loss_percent: f64,
    /// Allowed losses on top, Wh per interval.
    pub loss_wh: u64,
    /// Consecutive intervals over the allowance before the event.
    pub intervals: u32,
    /// The groups, by name.
    pub groups: Vec<GroupSetup>,
    /// The largest plausible power of one dwelling, watts (the ledger's `plausibility.max_power_w`
    /// with `[ledger]`, else the ledger's default): a register that rises faster is a reset or a
    /// replaced meter, not consumption. A feeder's is this times its dwellings.
    pub dwelling_max_power_w: u64,
}

/// A meter's key in the balance: `bus/address`.
pub fn meter_key(meter: &MeterConfig) -> String {
    format!("{}/{}", meter.bus.get_ref(), meter.address.get_ref())
}

impl BalanceSetup {
    /// The settings of a valid `config`; `None` when no meter is a feeder (nothing to balance).
    pub fn from_config(config: &Config) -> Option<BalanceSetup> {
        let default = BalanceSection::default();
        let s = config.balance.as_ref().unwrap_or(&default);
        let mut groups: BTreeMap<String, GroupSetup> = BTreeMap::new();
        for m in &config.meters {
            let Some(group) = &m.group else { continue };
            let g = groups
                .entry(group.get_ref().clone())
                .or_insert_with(|| GroupSetup {
                    name: group.get_ref().clone(),
                    feeder: String::new(),
                    dwellings: Vec::new(),
                });
            if m.is_feeder() {
                g.feeder = meter_key(m);
            } else {
                g.dwellings.push(meter_key(m));
            }
        }
        let groups: Vec<_> = groups
            .into_values()
            .filter(|g| !g.feeder.is_empty())
            .collect();
        (!groups.is_empty()).then(|| BalanceSetup {
            interval_s: u64::from(*s.interval_s.get_ref()),
            loss_percent: *s.loss_percent.get_ref(),
            loss_wh: u64::from(*s.loss_wh.get_ref()),
            intervals: *s.intervals.get_ref(),
            groups,
            dwelling_max_power_w: crate::balance::engine::DWELLING_MAX_POWER_W,
        })
    }
}

/// The mistakes in `[balance]` and in the meters' `role` and `group`.
pub(super) fn check(config: &Config) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    // Feeders and dwellings by group, in file order.
    let mut feeders: BTreeMap<&str, Vec<&MeterConfig>> = BTreeMap::new();
    let mut dwellings: BTreeMap<&str, Vec<&MeterConfig>> = BTreeMap::new();
    for m in &config.meters {
        if let Some(role) = &m.role {
            if !matches!(role.get_ref().as_str(), "feeder" | "dwelling") {
                out.push(
                    Diagnostic::at(role.span(), format!("no meter role `{}`", role.get_ref()))
                        .help("write `role = \"feeder\"` for a block's or staircase's master meter, or leave `role` out for a dwelling's meter"),
                );
                continue;
            }
        }
        if let Some(group) = &m.group {
            if group.get_ref().trim().is_empty() {
                out.push(
                    Diagnostic::at(group.span(), "the group name is empty")
                        .help("write the block or staircase, e.g. `group = \"stair-A\"`"),
                );
                continue;
            }
        }
        match (&m.group, m.is_feeder()) {
            (None, true) => {
                if let Some(role) = &m.role {
                    out.push(
                        Diagnostic::at(role.span(), "a feeder meter without a group").help(
                            "add `group = \"stair-A\"` (the name its dwellings' meters carry too)",
                        ),
                    );
                }
            }
            (Some(g), true) => feeders.entry(g.get_ref()).or_default().push(m),
            (Some(g), false) => dwellings.entry(g.get_ref()).or_default().push(m),
            (None, false) => {}
        }
        if m.is_feeder() {
            let reads_energy = m
                .read
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n.get_ref() == "energy-import-total"));
            if !reads_energy {
                let span = m
                    .read
                    .as_ref()
                    .and_then(|r| r.first())
                    .map_or(0..0, Spanned::span);
                out.push(
                    Diagnostic::at(span, "a feeder meter must read its energy register")
                        .help("add \"energy-import-total\" to its `read` list (the balance compares energy)"),
                );
            }
        }
    }
    for (group, list) in &feeders {
        for extra in list.iter().skip(1) {
            if let Some(role) = &extra.role {
                out.push(
                    Diagnostic::at(
                        role.span(),
                        format!(
                            "group `{group}` has a second feeder meter (the first is {} at {})",
                            list[0].address.get_ref(),
                            list[0].dwelling.get_ref()
                        ),
                    )
                    .help("a group has one master meter: give this one its own group, or remove `role = \"feeder\"`"),
                );
            }
        }
        if !dwellings.contains_key(group) {
            if let Some(g) = &list[0].group {
                out.push(
                    Diagnostic::at(g.span(), format!("no dwelling meter is in group `{group}`"))
                        .help(format!("add `group = \"{group}\"` to the meters of the dwellings this feeder supplies")),
                );
            }
        }
    }
    for (group, list) in &dwellings {
        if !feeders.contains_key(group) {
            if let Some(g) = &list[0].group {
                out.push(
                    Diagnostic::at(g.span(), format!("group `{group}` has no feeder meter"))
                        .help(format!("add `role = \"feeder\"` and `group = \"{group}\"` to its master meter, or check the spelling against the feeder's group")),
                );
            }
        }
    }
    let Some(s) = &config.balance else {
        return out;
    };
    let interval = *s.interval_s.get_ref();
    if !(10..=86_400).contains(&interval) || 86_400 % interval != 0 {
        out.push(
            Diagnostic::at(
                s.interval_s.span(),
                format!("an interval of {interval} s does not divide the day"),
            )
            .help("write a divisor of 86400 from 10 up: 900 (quarter hours), 1800, 3600 (hourly)"),
        );
    }
    let percent = *s.loss_percent.get_ref();
    if !(0.0..=50.0).contains(&percent) {
        out.push(
            Diagnostic::at(s.loss_percent.span(), format!("{percent} % of losses is not plausible"))
                .help("write the technical losses allowed, 0 to 50 percent (5.0 is usual for a block's wiring)"),
        );
    }
    if *s.loss_wh.get_ref() > 1_000_000 {
        out.push(
            Diagnostic::at(
                s.loss_wh.span(),
                "more than 1 MWh of fixed losses per interval",
            )
            .help("write the fixed allowance per interval in Wh, e.g. `loss_wh = 50`"),
        );
    }
    if !(1..=96).contains(s.intervals.get_ref()) {
        out.push(
            Diagnostic::at(s.intervals.span(), "the event needs 1 to 96 intervals over the allowance")
                .help("write how many intervals in a row before the theft/loss event, e.g. `intervals = 2`"),
        );
    }
    if feeders.is_empty() && s.interval_s.span() != (0..0) {
        out.push(
            Diagnostic::at(s.interval_s.span(), "[balance] is set but no meter is a feeder")
                .help("mark the block's master meter with `role = \"feeder\"` and `group = \"...\"`, or remove [balance]"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(
            "b.toml",
            &format!("[gateway]\nid = \"gw\"\nstore = \"/tmp/x\"\n\n[[bus]]\nname = \"b\"\nbackend = \"sim\"\n\n{text}"),
        )
    }

    fn meter(n: u32, extra: &str) -> String {
        format!("[[meter]]\nbus = \"b\"\naddress = \"{n:012}\"\ndriver = \"dlt645\"\ndwelling = \"d{n}\"\n{extra}\n")
    }

    #[test]
    fn groups_are_read_with_the_defaults() {
        let text = [
            meter(1, "role = \"feeder\"\ngroup = \"stair-A\""),
            meter(2, "group = \"stair-A\""),
            meter(3, "group = \"stair-A\""),
            meter(4, ""),
        ]
        .concat();
        let config = parse(&text).unwrap();
        let setup = BalanceSetup::from_config(&config).unwrap();
        assert_eq!(setup.interval_s, 900);
        assert_eq!(setup.intervals, 2);
        assert_eq!(
            setup.groups,
            vec![GroupSetup {
                name: "stair-A".into(),
                feeder: "b/000000000001".into(),
                dwellings: vec!["b/000000000002".into(), "b/000000000003".into()],
            }]
        );
        assert!(BalanceSetup::from_config(&parse(&meter(4, "")).unwrap()).is_none());
    }

    #[test]
    fn every_mistake_at_its_key_with_the_fix() {
        let text = [
            meter(1, "role = \"feeder\"\ngroup = \"stair-A\""),
            meter(2, "role = \"feeder\"\ngroup = \"stair-A\""),
            meter(3, "group = \"stair-A\""),
            meter(4, "group = \"stair-B\""),
            meter(5, "role = \"master\"\ngroup = \"stair-C\""),
            meter(
                6,
                "role = \"feeder\"\ngroup = \"stair-D\"\nread = [\"voltage-a\"]",
            ),
            meter(7, "role = \"feeder\""),
            "[balance]\ninterval_s = 700\nloss_percent = 80.0\nintervals = 0\n".into(),
        ]
        .concat();
        let err = parse(&text).unwrap_err().to_string();
        for part in [
            "group `stair-A` has a second feeder meter (the first is 000000000001 at d1)",
            "group `stair-B` has no feeder meter",
            "no meter role `master`",
            "a feeder meter must read its energy register",
            "no dwelling meter is in group `stair-D`",
            "a feeder meter without a group",
            "an interval of 700 s does not divide the day",
            "80 % of losses is not plausible",
            "1 to 96 intervals",
        ] {
            assert!(err.contains(part), "{part}: {err}");
        }
    }
}

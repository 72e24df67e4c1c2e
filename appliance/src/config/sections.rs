//! Every TOML mistake at once. Serde stops at the first unknown key or wrong type; an installer who
//! fixes one typo and gets the next is sent back and forth. So, when the file does not deserialise:
//!
//! - an unknown key (or table), or a key whose value has the wrong type, is blanked out of a working
//!   copy of the text, offsets unchanged, and the file is read again, until it deserialises or a
//!   mistake cannot be blanked (a wrong type of a key that has no default is then reported once, not
//!   again as missing);
//! - when one cannot (a missing key, a key inside an inline table), every other section (`[gateway]`, each `[[bus]]`,
//!   each `[[meter]]` with its `[meter.sim]`, …) is read on its own, with the rest of the text blanked,
//!   so the mistakes there are found too.
//!
//! When every mistake could be blanked, the copy without them deserialises (with defaults for the
//! blanked values), and the checks across the whole configuration run on it as well, so a typo and a
//! bad address are reported together.

use std::ops::Range;

use serde::Deserialize;

use super::diagnostic::Diagnostic;
use super::model::{BusConfig, Config, GatewayConfig, LedgerSection, MeterConfig, UplinkConfig};

/// The most mistakes looked for before giving up on the rest (a file that is not a configuration).
const MAX_ROUNDS: usize = 64;

/// Every section of [`Config`], each optional, to read one section alone. The test below keeps its
/// keys equal to [`Config`]'s.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read only for its errors
struct Sections {
    gateway: Option<GatewayConfig>,
    #[serde(default)]
    bus: Vec<BusConfig>,
    #[serde(default)]
    meter: Vec<MeterConfig>,
    #[serde(default)]
    zigbee: Vec<super::zigbee::ZigbeeConfig>,
    uplink: Option<UplinkConfig>,
    ledger: Option<LedgerSection>,
    modem: Option<super::modem::ModemSection>,
    power: Option<super::power::PowerSection>,
    update: Option<super::update::UpdateSection>,
    #[serde(default)]
    plugin: Vec<super::plugins::PluginEntry>,
    web: Option<super::web::WebSection>,
    time: Option<super::time::TimeSection>,
    balance: Option<super::balance::BalanceSection>,
}

/// What reading the text found: every mistake, and the configuration without the unknown keys when
/// nothing else was wrong.
pub(super) struct Read {
    pub diagnostics: Vec<Diagnostic>,
    pub config: Option<Config>,
}

/// Reads `text` as a [`Config`], collecting every TOML mistake.
pub(super) fn read(text: &str) -> Read {
    let (mut diagnostics, config) = repair_loop::<Config>(text);
    if config.is_none() && !diagnostics.is_empty() {
        // Something could not be blanked: read each section on its own for the mistakes further on.
        let headers = match toml_edit::ImDocument::parse(text) {
            Ok(doc) => headers(&doc),
            Err(_) => {
                return Read {
                    diagnostics,
                    config,
                }
            } // a syntax error: nothing more to read
        };
        for region in regions(text, &headers) {
            if diagnostics
                .iter()
                .any(|d| d.span.as_ref().is_some_and(|s| region.contains(&s.start)))
            {
                continue;
            }
            let alone = blank_outside(text, &region);
            let (found, _) = repair_loop::<Sections>(&alone);
            for d in found {
                if !diagnostics.contains(&d) {
                    diagnostics.push(d);
                }
            }
        }
    }
    Read {
        diagnostics,
        config,
    }
}

/// Deserialises `text` as `T`, blanking each unknown key and reading again; returns the mistakes, and
/// the value when the copy without the unknown keys deserialised.
fn repair_loop<T: serde::de::DeserializeOwned>(text: &str) -> (Vec<Diagnostic>, Option<T>) {
    let mut work = text.to_string();
    let mut out = Vec::new();
    let mut blanked_keys: Vec<String> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        match toml::from_str::<T>(&work) {
            Ok(value) => return (out, Some(value)),
            Err(e) => {
                let diagnostic = Diagnostic::from_toml(&e);
                // A required key that was blanked for its wrong type is not missing.
                if blanked_keys.iter().any(|k| {
                    diagnostic
                        .message
                        .starts_with(&format!("missing field `{k}`"))
                }) || out.contains(&diagnostic)
                {
                    return (out, None);
                }
                let blank = unknown_key_extent(&work, &diagnostic);
                out.push(diagnostic);
                match blank {
                    Some(range) => {
                        let key = work[range.clone()]
                            .split('=')
                            .next()
                            .unwrap_or_default()
                            .trim()
                            .to_string();
                        if !out
                            .last()
                            .is_some_and(|d| d.message.starts_with("unknown field"))
                        {
                            blanked_keys.push(key);
                        }
                        work = blanked(&work, &range);
                    }
                    None => return (out, None),
                }
            }
        }
    }
    (out, None)
}

/// The text a mistaken key takes up (`key = value`, or a whole `[table]` with its keys), when the
/// mistake is an unknown key or a value of the wrong type that can be blanked without breaking the
/// rest.
fn unknown_key_extent(text: &str, d: &Diagnostic) -> Option<Range<usize>> {
    if !(d.message.starts_with("unknown field") || d.message.starts_with("invalid ")) {
        return None;
    }
    let span = d.span.clone()?;
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let headers = headers(&doc);
    find_key(doc.as_table(), &span, &headers, text)
}

fn find_key(
    table: &toml_edit::Table,
    span: &Range<usize>,
    headers: &[Header],
    text: &str,
) -> Option<Range<usize>> {
    for (name, item) in table.iter() {
        let key_span = table.key(name).and_then(toml_edit::Key::span);
        let value_span = item.as_value().and_then(toml_edit::Value::span);
        if key_span.as_ref() == Some(span) || (value_span.as_ref() == Some(span)) {
            return match item {
                toml_edit::Item::Value(v) => {
                    let start = key_span?.start;
                    let end = v.span()?.end;
                    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
                    // Only a key alone at the start of its line (not dotted, not inline).
                    text[line_start..start]
                        .trim()
                        .is_empty()
                        .then_some(start..end)
                }
                toml_edit::Item::Table(t) => {
                    let header = t.span()?;
                    region_of(text, headers, header.start)
                }
                toml_edit::Item::ArrayOfTables(_) | toml_edit::Item::None => None,
            };
        }
        match item {
            toml_edit::Item::Table(t) => {
                if let Some(found) = find_key(t, span, headers, text) {
                    return Some(found);
                }
            }
            toml_edit::Item::ArrayOfTables(a) => {
                for t in a.iter() {
                    if let Some(found) = find_key(t, span, headers, text) {
                        return Some(found);
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// A table header: where it starts, how deep it is (`[bus]` 1, `[meter.sim]` 2), and its first key.
#[derive(Debug, Clone)]
struct Header {
    start: usize,
    depth: usize,
    top: String,
    array: bool,
}

fn headers(doc: &toml_edit::ImDocument<&str>) -> Vec<Header> {
    fn walk(table: &toml_edit::Table, depth: usize, top: Option<&str>, out: &mut Vec<Header>) {
        for (name, item) in table.iter() {
            let top = top.unwrap_or(name);
            match item {
                toml_edit::Item::Table(t) => {
                    if let Some(span) = t.span() {
                        out.push(Header {
                            start: span.start,
                            depth,
                            top: top.to_string(),
                            array: false,
                        });
                    }
                    walk(t, depth + 1, Some(top), out);
                }
                toml_edit::Item::ArrayOfTables(a) => {
                    for t in a.iter() {
                        if let Some(span) = t.span() {
                            out.push(Header {
                                start: span.start,
                                depth,
                                top: top.to_string(),
                                array: true,
                            });
                        }
                        walk(t, depth + 1, Some(top), out);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(doc.as_table(), 1, None, &mut out);
    out.sort_by_key(|h| h.start);
    out
}

/// From the header starting at `start` to the next header (its own keys only).
fn region_of(text: &str, headers: &[Header], start: usize) -> Option<Range<usize>> {
    let end = headers
        .iter()
        .map(|h| h.start)
        .find(|&s| s > start)
        .unwrap_or(text.len());
    Some(start..end)
}

/// The text's sections: the keys before the first header, then each top-level table or array element
/// with the sub-tables that follow it (`[[meter]]` with its `[meter.sim]`).
fn regions(text: &str, headers: &[Header]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    let mut current_top: Option<&str> = None;
    let first = headers.first().map_or(text.len(), |h| h.start);
    if first > 0 {
        out.push(0..first);
    }
    for (i, h) in headers.iter().enumerate() {
        let end = headers.get(i + 1).map_or(text.len(), |n| n.start);
        let continues = h.depth > 1 && current_top == Some(h.top.as_str()) && !h.array;
        match out.last_mut() {
            Some(last) if continues => last.end = end,
            _ => {
                out.push(h.start..end);
                current_top = Some(h.top.as_str());
            }
        }
    }
    out
}

/// `text` with `range` replaced by spaces (line ends kept), so every other offset stays the same.
fn blanked(text: &str, range: &Range<usize>) -> String {
    text.char_indices()
        .map(|(i, c)| {
            if range.contains(&i) && c != '\n' && c != '\r' {
                " ".repeat(c.len_utf8())
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `text` with everything but `keep` blanked.
fn blank_outside(text: &str, keep: &Range<usize>) -> String {
    text.char_indices()
        .map(|(i, c)| {
            if !keep.contains(&i) && c != '\n' && c != '\r' {
                " ".repeat(c.len_utf8())
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected_keys<T: serde::de::DeserializeOwned>() -> String {
        let message = toml::from_str::<T>("zz_not_a_section = 1")
            .err()
            .map(|e| e.message().to_string())
            .unwrap_or_default();
        message
            .split("expected one of ")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    #[test]
    fn sections_has_the_keys_of_config() {
        let keys = expected_keys::<Config>();
        assert!(keys.contains("`gateway`"), "{keys}");
        assert_eq!(keys, expected_keys::<Sections>());
    }

    #[test]
    fn unknown_keys_across_sections_and_a_wrong_type_are_all_found() {
        let text = "[gateway]\nid = \"gw\"\nstroe = \"/tmp/x\"\nstore = \"/tmp/x\"\n\n[[bus]]\nname = \"b\"\nbackend = \"sim\"\nbaudrate = 2400\n\n[[meter]]\nbus = \"b\"\naddress = \"000000000001\"\ndriver = \"dlt645\"\ndwelling = 5\n\n[[meter]]\nbus = \"b\"\naddress = \"000000000002\"\ndriver = \"dlt645\"\ndwelling = \"A\"\n[meter.sim]\nload = 3\n";
        let read = read(text);
        let messages: Vec<&str> = read
            .diagnostics
            .iter()
            .map(|d| d.message.as_str())
            .collect();
        assert!(read.config.is_none());
        assert!(
            messages.iter().any(|m| m.contains("`stroe`")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("`baudrate`")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("invalid type")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("`load`")),
            "{messages:?}"
        );
    }

    #[test]
    fn with_only_unknown_keys_the_rest_still_deserialises() {
        let text = "[gateway]\nid = \"gw\"\nstore = \"/tmp/x\"\nflavour = 1\n[extra]\na = 1\n";
        let read = read(text);
        assert_eq!(read.diagnostics.len(), 2, "{:?}", read.diagnostics);
        assert!(read.config.is_some());
    }
}

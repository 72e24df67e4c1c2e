//! Register maps: meter models as data. A map is a TOML file naming, for each quantity, the function
//! (03 holding or 04 input), the register address, the data type, the scale and the unit. Maps for the
//! Eastron SDM120 and SDM630 and the DDS238 ship inside the crate; a user adds a model by dropping a
//! file in a directory, without recompiling.
//!
//! ```toml
//! model = "sdm120"                 # the name configs use
//! name = "Eastron SDM120"          # for people
//! function = 4                     # default for every register (3 = holding, 4 = input)
//! type = "f32be"                   # default type: u16 i16 u32be u32ws i32be i32ws f32be f32ws
//! max_registers_per_read = 40      # the meter's limit for one read (at most 125)
//! max_gap = 0                      # unmapped registers a read may span (0: contiguous only)
//!
//! [[register]]
//! quantity = "voltage_l1"          # see the vocabulary below
//! address = 0x0000                 # protocol address (register 30001 is 0x0000)
//! unit = "V"
//! decimals = 2                     # float types: decimals kept in the exact reading (default 3)
//! scale = 1                        # a power of ten the raw value is multiplied by (default 1)
//! ```
//!
//! Quantity vocabulary the scheduler and the emulator understand: `voltage_l1..3`, `current_l1..3`,
//! `active_power_l1..3`, `active_power_total`, `import_active_energy`, `export_active_energy`,
//! `total_active_energy`, `frequency`, `power_factor_l1..3`, `power_factor_total`. Others are allowed
//! and read as given.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::value::DataType;

/// The register table a register lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterKind {
    /// Holding registers, read with function 03.
    Holding,
    /// Input registers, read with function 04.
    Input,
}

impl RegisterKind {
    /// The read function code.
    pub const fn function(self) -> u8 {
        match self {
            RegisterKind::Holding => crate::frame::READ_HOLDING_REGISTERS,
            RegisterKind::Input => crate::frame::READ_INPUT_REGISTERS,
        }
    }
}

/// One quantity of a map.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Register {
    /// The quantity's name (`voltage_l1`).
    pub quantity: String,
    /// The table.
    pub kind: RegisterKind,
    /// The first register.
    pub address: u16,
    /// The data type.
    pub data_type: DataType,
    /// The raw value is multiplied by `10^scale_exponent`.
    pub scale_exponent: i8,
    /// For float types: decimals kept.
    pub decimals: u8,
    /// The unit.
    pub unit: String,
    /// The line of the map file where the register is defined.
    pub line: usize,
}

impl Register {
    /// One past the last register.
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.data_type.registers())
    }
}

/// A meter model's register map, validated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegisterMap {
    /// The model name configs use (`sdm630`).
    pub model: String,
    /// A name for people.
    pub name: String,
    /// Most registers the meter returns in one read.
    pub max_registers_per_read: u16,
    /// Unmapped registers one read may span.
    pub max_gap: u16,
    /// The registers, in file order.
    pub registers: Vec<Register>,
    /// Where the map came from (a file name, or `builtin:sdm630.toml`).
    pub source: String,
}

/// What is wrong with a register map.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapProblem {
    /// The file is not valid TOML, or a field has the wrong type or name.
    #[error("{0}")]
    Syntax(String),
    /// A function other than 3 or 4.
    #[error("register `{quantity}`: function {found} cannot read registers; use 3 (holding) or 4 (input)")]
    Function {
        /// The quantity.
        quantity: String,
        /// The function given.
        found: i64,
    },
    /// No type, neither on the register nor as the map's default.
    #[error("register `{0}` has no type; give `type` on it or at the top of the map")]
    NoType(String),
    /// A scale that is not a power of ten.
    #[error("register `{quantity}`: scale {found} is not a power of ten (use 0.01, 0.1, 1, 10, 1000 ...)")]
    Scale {
        /// The quantity.
        quantity: String,
        /// The scale given.
        found: f64,
    },
    /// Decimals above 9.
    #[error("register `{quantity}`: decimals {found} is more than 9")]
    Decimals {
        /// The quantity.
        quantity: String,
        /// Decimals given.
        found: u8,
    },
    /// The value runs past register 0xFFFF.
    #[error("register `{quantity}` at 0x{address:04X} runs past the last register 0xFFFF")]
    Range {
        /// The quantity.
        quantity: String,
        /// Its address.
        address: u16,
    },
    /// A quantity defined twice.
    #[error("quantity `{quantity}` is already defined on line {first_line}")]
    Duplicate {
        /// The quantity.
        quantity: String,
        /// Where it was first defined.
        first_line: usize,
    },
    /// Two quantities share registers.
    #[error("register `{quantity}` overlaps `{other}` (line {other_line}) in the same table")]
    Overlap {
        /// The quantity.
        quantity: String,
        /// The other quantity.
        other: String,
        /// Its line.
        other_line: usize,
    },
    /// `max_registers_per_read` outside 1..=125 or smaller than a register.
    #[error("max_registers_per_read is {0}; use 2..=125")]
    MaxRead(u16),
    /// No registers.
    #[error("the map defines no [[register]]")]
    Empty,
    /// The model name is empty or has characters a config cannot name.
    #[error("model name `{0}` must be lowercase letters, digits, `-` or `_`")]
    ModelName(String),
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(String),
}

/// A problem with a register map, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct MapError {
    /// The file.
    pub file: String,
    /// The line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub problem: MapProblem,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.problem),
            None => write!(f, "{}: {}", self.file, self.problem),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    model: String,
    name: Option<String>,
    function: Option<i64>,
    #[serde(rename = "type")]
    data_type: Option<DataType>,
    max_registers_per_read: Option<u16>,
    max_gap: Option<u16>,
    #[serde(default)]
    register: Vec<Spanned<RawRegister>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegister {
    quantity: String,
    function: Option<i64>,
    address: u16,
    #[serde(rename = "type")]
    data_type: Option<DataType>,
    scale: Option<f64>,
    decimals: Option<u8>,
    #[serde(default)]
    unit: String,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn scale_exponent(scale: f64) -> Option<i8> {
    if !(scale.is_finite() && scale > 0.0) {
        return None;
    }
    let exponent = scale.log10().round();
    let back = 10f64.powi(exponent as i32);
    ((back - scale).abs() <= back * 1e-9 && (-18.0..=18.0).contains(&exponent))
        .then_some(exponent as i8)
}

impl RegisterMap {
    /// Parses and validates a map; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<RegisterMap, MapError> {
        let error = |line: Option<usize>, problem| MapError {
            file: file.to_string(),
            line,
            problem,
        };
        let raw: RawMap = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| line_of(text, span.start));
            error(line, MapProblem::Syntax(e.message().to_string()))
        })?;
        if raw.model.is_empty()
            || !raw
                .model
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(error(None, MapProblem::ModelName(raw.model)));
        }
        let max_read = raw.max_registers_per_read.unwrap_or(crate::frame::MAX_READ);
        if !(2..=crate::frame::MAX_READ).contains(&max_read) {
            return Err(error(None, MapProblem::MaxRead(max_read)));
        }
        if raw.register.is_empty() {
            return Err(error(None, MapProblem::Empty));
        }
        let mut registers: Vec<Register> = Vec::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for spanned in raw.register {
            let line = line_of(text, spanned.span().start);
            let entry = spanned.into_inner();
            let at = |problem| error(Some(line), problem);
            let quantity = entry.quantity.clone();
            let kind = match entry.function.or(raw.function).unwrap_or(4) {
                3 => RegisterKind::Holding,
                4 => RegisterKind::Input,
                found => return Err(at(MapProblem::Function { quantity, found })),
            };
            let data_type = entry
                .data_type
                .or(raw.data_type)
                .ok_or_else(|| at(MapProblem::NoType(quantity.clone())))?;
            let scale = entry.scale.unwrap_or(1.0);
            let scale_exponent = scale_exponent(scale).ok_or_else(|| {
                at(MapProblem::Scale {
                    quantity: quantity.clone(),
                    found: scale,
                })
            })?;
            let decimals = entry.decimals.unwrap_or(3);
            if decimals > 9 {
                return Err(at(MapProblem::Decimals {
                    quantity,
                    found: decimals,
                }));
            }
            let register = Register {
                quantity: quantity.clone(),
                kind,
                address: entry.address,
                data_type,
                scale_exponent,
                decimals,
                unit: entry.unit,
                line,
            };
            if register.end() > 0x1_0000 {
                return Err(at(MapProblem::Range {
                    quantity,
                    address: entry.address,
                }));
            }
            if let Some(&first_line) = seen.get(&quantity) {
                return Err(at(MapProblem::Duplicate {
                    quantity,
                    first_line,
                }));
            }
            if let Some(other) = registers.iter().find(|o| {
                o.kind == kind
                    && u32::from(o.address) < register.end()
                    && u32::from(register.address) < o.end()
            }) {
                return Err(at(MapProblem::Overlap {
                    quantity,
                    other: other.quantity.clone(),
                    other_line: other.line,
                }));
            }
            seen.insert(quantity, line);
            registers.push(register);
        }
        Ok(RegisterMap {
            name: raw.name.unwrap_or_else(|| raw.model.clone()),
            model: raw.model,
            max_registers_per_read: max_read,
            max_gap: raw.max_gap.unwrap_or(0),
            registers,
            source: file.to_string(),
        })
    }

    /// Loads and validates a map file.
    pub fn load(path: &Path) -> Result<RegisterMap, MapError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| MapError {
            file: file.clone(),
            line: None,
            problem: MapProblem::Io(e.to_string()),
        })?;
        RegisterMap::parse(&text, &file)
    }

    /// The register of a quantity.
    pub fn register(&self, quantity: &str) -> Option<&Register> {
        self.registers.iter().find(|r| r.quantity == quantity)
    }
}

/// The maps shipped with the driver: (file name, text).
pub const BUILTIN: [(&str, &str); 3] = [
    ("sdm120.toml", include_str!("../models/sdm120.toml")),
    ("sdm630.toml", include_str!("../models/sdm630.toml")),
    ("dds238.toml", include_str!("../models/dds238.toml")),
];

/// The models a driver knows: the built-in maps, and the user's maps that add to or replace them.
#[derive(Debug, Clone, Default)]
pub struct ModelRegistry {
    maps: BTreeMap<String, RegisterMap>,
}

impl ModelRegistry {
    /// The built-in maps only.
    pub fn builtin() -> Result<Self, MapError> {
        let mut registry = ModelRegistry::default();
        for (file, text) in BUILTIN {
            registry.insert(RegisterMap::parse(text, &format!("builtin:{file}"))?);
        }
        Ok(registry)
    }

    /// Adds (or replaces) a map.
    pub fn insert(&mut self, map: RegisterMap) {
        self.maps.insert(map.model.clone(), map);
    }

    /// Loads every `*.toml` in `dir` (sorted by name); a user map replaces a built-in one of the same
    /// model. Stops at the first invalid file, naming it.
    pub fn load_dir(&mut self, dir: &Path) -> Result<Vec<String>, MapError> {
        let io = |e: std::io::Error| MapError {
            file: dir.display().to_string(),
            line: None,
            problem: MapProblem::Io(e.to_string()),
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        paths.sort();
        let mut loaded = Vec::new();
        for path in paths {
            let map = RegisterMap::load(&path)?;
            loaded.push(map.model.clone());
            self.insert(map);
        }
        Ok(loaded)
    }

    /// The map of a model.
    pub fn get(&self, model: &str) -> Option<&RegisterMap> {
        self.maps.get(model)
    }

    /// The model names, sorted.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.maps.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_maps_are_valid() {
        let registry = ModelRegistry::builtin().unwrap();
        assert_eq!(
            registry.models().collect::<Vec<_>>(),
            ["dds238", "sdm120", "sdm630"]
        );
        let sdm630 = registry.get("sdm630").unwrap();
        let import = sdm630.register("import_active_energy").unwrap();
        assert_eq!(
            (import.kind, import.address, import.data_type),
            (RegisterKind::Input, 0x0048, DataType::F32be)
        );
        let dds = registry.get("dds238").unwrap();
        let voltage = dds.register("voltage_l1").unwrap();
        assert_eq!(
            (voltage.kind, voltage.address, voltage.scale_exponent),
            (RegisterKind::Holding, 0x000C, -1)
        );
    }

    fn parse_error(text: &str) -> String {
        RegisterMap::parse(text, "user.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_file_and_line() {
        let head = "model = \"m\"\ntype = \"u16\"\n";
        assert_eq!(
            parse_error(&format!("{head}[[register]]\nquantity = \"a\"\naddress = 1\nfunction = 6\n")),
            "user.toml:3: register `a`: function 6 cannot read registers; use 3 (holding) or 4 (input)"
        );
        assert_eq!(
            parse_error(&format!("{head}[[register]]\nquantity = \"a\"\naddress = 1\nscale = 0.3\n")),
            "user.toml:3: register `a`: scale 0.3 is not a power of ten (use 0.01, 0.1, 1, 10, 1000 ...)"
        );
        assert_eq!(
            parse_error(&format!("{head}[[register]]\nquantity = \"a\"\naddress = 1\n[[register]]\nquantity = \"a\"\naddress = 2\n")),
            "user.toml:6: quantity `a` is already defined on line 3"
        );
        assert_eq!(
            parse_error("model = \"m\"\n[[register]]\nquantity = \"a\"\naddress = 1\ntype = \"u32be\"\n[[register]]\nquantity = \"b\"\naddress = 2\ntype = \"u16\"\n"),
            "user.toml:6: register `b` overlaps `a` (line 2) in the same table"
        );
        let unknown = parse_error(&format!(
            "{head}[[register]]\nquantity = \"a\"\naddress = 1\nunits = \"V\"\n"
        ));
        assert!(
            unknown.starts_with("user.toml:6: unknown field `units`"),
            "{unknown}"
        );
        let bad_type = parse_error(
            "model = \"m\"\n[[register]]\nquantity = \"a\"\naddress = 1\ntype = \"f64\"\n",
        );
        assert!(
            bad_type.starts_with("user.toml:5: unknown variant `f64`"),
            "{bad_type}"
        );
        assert_eq!(
            parse_error("model = \"m\"\n"),
            "user.toml: the map defines no [[register]]"
        );
    }

    #[test]
    fn scales() {
        assert_eq!(scale_exponent(0.01), Some(-2));
        assert_eq!(scale_exponent(1000.0), Some(3));
        assert_eq!(scale_exponent(1.0), Some(0));
        assert_eq!(scale_exponent(2.0), None);
        assert_eq!(scale_exponent(-1.0), None);
    }
}

//! Planning reads from a register map: quantities that sit next to each other in the same table are
//! read in one exchange (fewer bus turnarounds), within the meter's per-read limit and gap tolerance.

use crate::frame::{Adu, Request, RequestAdu};
use crate::model::{Register, RegisterKind, RegisterMap};
use crate::value::{to_reading, Reading, ReadingError};

/// One read covering one or more quantities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBlock {
    /// The table.
    pub kind: RegisterKind,
    /// First register.
    pub address: u16,
    /// Registers read.
    pub count: u16,
    /// The quantities inside, as indices into the map's registers.
    pub registers: Vec<usize>,
}

/// A quantity the map does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model `{model}` has no quantity `{quantity}`; it has: {known}")]
pub struct UnknownQuantity {
    /// The model.
    pub model: String,
    /// The quantity asked for.
    pub quantity: String,
    /// The quantities it has.
    pub known: String,
}

impl ReadBlock {
    /// The request for this block to `slave`.
    pub fn request(&self, slave: u8) -> RequestAdu {
        let (address, count) = (self.address, self.count);
        let pdu = match self.kind {
            RegisterKind::Holding => Request::ReadHoldingRegisters { address, count },
            RegisterKind::Input => Request::ReadInputRegisters { address, count },
        };
        Adu { slave, pdu }
    }
}

/// A quantity's value from a read.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QuantityValue {
    /// The quantity.
    pub quantity: String,
    /// Its reading, or why the register holds no usable number.
    #[serde(serialize_with = "serialize_result")]
    pub reading: Result<Reading, ReadingError>,
}

fn serialize_result<S: serde::Serializer>(
    value: &Result<Reading, ReadingError>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    match value {
        Ok(reading) => reading.serialize(serializer),
        Err(error) => serializer.collect_str(error),
    }
}

impl RegisterMap {
    /// The reads that fetch `quantities` (all of the map's when `None`), grouped.
    pub fn plan(&self, quantities: Option<&[&str]>) -> Result<Vec<ReadBlock>, UnknownQuantity> {
        let mut wanted: Vec<usize> = match quantities {
            None => (0..self.registers.len()).collect(),
            Some(names) => names
                .iter()
                .map(|name| {
                    self.registers
                        .iter()
                        .position(|r| r.quantity == *name)
                        .ok_or_else(|| UnknownQuantity {
                            model: self.model.clone(),
                            quantity: name.to_string(),
                            known: self
                                .registers
                                .iter()
                                .map(|r| r.quantity.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        wanted.sort_by_key(|&i| (self.registers[i].kind, self.registers[i].address));
        wanted.dedup();
        let mut blocks: Vec<ReadBlock> = Vec::new();
        for index in wanted {
            let register = &self.registers[index];
            if let Some(block) = blocks.last_mut().filter(|b| self.fits(b, register)) {
                block.count = (register.end() - u32::from(block.address)) as u16;
                block.registers.push(index);
                continue;
            }
            blocks.push(ReadBlock {
                kind: register.kind,
                address: register.address,
                count: register.data_type.registers(),
                registers: vec![index],
            });
        }
        Ok(blocks)
    }

    fn fits(&self, block: &ReadBlock, register: &Register) -> bool {
        let block_end = u32::from(block.address) + u32::from(block.count);
        block.kind == register.kind
            && u32::from(register.address) >= block_end
            && u32::from(register.address) - block_end <= u32::from(self.max_gap)
            && register.end() - u32::from(block.address) <= u32::from(self.max_registers_per_read)
    }

    /// The quantities of `block` from the register values a read returned.
    pub fn decode_block(&self, block: &ReadBlock, values: &[u16]) -> Vec<QuantityValue> {
        block
            .registers
            .iter()
            .filter_map(|&index| self.registers.get(index))
            .map(|register| {
                let offset = usize::from(register.address.wrapping_sub(block.address));
                let raw = values
                    .get(offset..)
                    .and_then(|words| register.data_type.decode(words));
                let reading = match raw {
                    Some(raw) => to_reading(
                        raw,
                        register.scale_exponent,
                        register.decimals,
                        &register.unit,
                    ),
                    None => Err(ReadingError::Missing),
                };
                QuantityValue {
                    quantity: register.quantity.clone(),
                    reading,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::model::ModelRegistry;

    #[test]
    fn groups_contiguous_registers() {
        let registry = ModelRegistry::builtin().unwrap();
        let sdm630 = registry.get("sdm630").unwrap();
        let blocks = sdm630
            .plan(Some(&["voltage_l1", "voltage_l2", "voltage_l3"]))
            .unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!((blocks[0].address, blocks[0].count), (0x0000, 6));
        let all = sdm630.plan(None).unwrap();
        let spans: Vec<(u16, u16)> = all.iter().map(|b| (b.address, b.count)).collect();
        assert_eq!(
            spans,
            [
                (0x0000, 18),
                (0x001E, 6),
                (0x0034, 2),
                (0x003E, 2),
                (0x0046, 10),
                (0x0156, 2)
            ]
        );

        let dds = registry.get("dds238").unwrap();
        let blocks = dds.plan(None).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!((blocks[0].address, blocks[0].count), (0x0000, 18));
    }

    #[test]
    fn unknown_quantities_are_named() {
        let registry = ModelRegistry::builtin().unwrap();
        let err = registry
            .get("dds238")
            .unwrap()
            .plan(Some(&["voltage_l2"]))
            .unwrap_err();
        assert!(err.to_string().starts_with(
            "model `dds238` has no quantity `voltage_l2`; it has: total_active_energy"
        ));
    }
}

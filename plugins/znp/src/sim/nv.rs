//! The emulated coordinator's NV memory and the requests a host stack other than ours makes of a formed
//! coordinator before it trusts it: NV items read and written by id (`osalNv*`) and extended tables by
//! system, item and sub-id (`nv*`), the IEEE address, the extended network information, the groups of
//! an endpoint, binding, route discovery, the LED and transmit power.
//!
//! A formed network lives in NV memory as a real Z-Stack 3.x stick keeps it: the network information
//! base (NIB) with the PAN ID, extended PAN ID and channel, the network key with its active and
//! alternate key information, the pre-configured key, and the "has configured" flag a host writes after
//! commissioning. A host that finds these consistent with its own configuration resumes the network
//! instead of forming a new one. Items are kept unaligned (no padding), as on the CC2652.

use std::collections::BTreeMap;

use crate::mt::{CommandType, MtFrame, Subsystem};
use crate::wire::IeeeAddress;

/// NV item ids (Z-Stack's `ZCD_NV_*`).
pub mod item {
    /// The network information base.
    pub const NIB: u16 = 0x0021;
    /// The active network key's sequence number and key.
    pub const NWK_ACTIVE_KEY_INFO: u16 = 0x003A;
    /// The alternate network key's sequence number and key.
    pub const NWK_ALTERN_KEY_INFO: u16 = 0x003B;
    /// A host's "this stick is commissioned" flag (0x55 when set).
    pub const HAS_CONFIGURED: u16 = 0x0060;
    /// The pre-configured (network) key.
    pub const PRECFGKEY: u16 = 0x0062;
    /// Whether the pre-configured key is distributed to joining devices.
    pub const PRECFGKEYS_ENABLE: u16 = 0x0063;
    /// The network key with its sequence number and frame counter (21 bytes unaligned).
    pub const NWKKEY: u16 = 0x0082;
}

/// The value of [`item::HAS_CONFIGURED`] once a network is commissioned.
const CONFIGURED: u8 = 0x55;
/// Status: success.
const SUCCESS: u8 = 0x00;
/// Status: failure (also "no such group").
const FAILURE: u8 = 0x01;
/// Status of `osalNvItemInit` for an item it created.
const NV_ITEM_INITIALIZED: u8 = 0x09;
/// Status of a read or write of an item that does not exist.
const NV_OPER_FAILED: u8 = 0x0A;
/// The most an `osalNvReadExt` answer carries.
const READ_CHUNK: usize = 240;

/// The network a formed coordinator runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkSettings {
    /// The PAN ID.
    pub pan_id: u16,
    /// The extended PAN ID, most significant byte first (as a host's configuration writes it).
    pub extended_pan_id: [u8; 8],
    /// The channel, 11–26.
    pub channel: u8,
    /// The network key.
    pub network_key: [u8; 16],
}

impl Default for NetworkSettings {
    /// The emulator's network: PAN ID 0x1A62, channel 11, a fixed extended PAN ID and key (an emulator
    /// has nothing to hide; tests and benchmarks write the same values into the host's configuration).
    fn default() -> Self {
        NetworkSettings {
            pan_id: 0x1A62,
            extended_pan_id: [0x43, 0x4F, 0x4E, 0x43, 0x2D, 0x53, 0x49, 0x4D],
            channel: 11,
            network_key: [
                0x3C, 0x91, 0x0E, 0x55, 0xA2, 0x07, 0xD4, 0x18, 0x6B, 0xF0, 0x2E, 0x99, 0x41, 0xC8,
                0x5D, 0x73,
            ],
        }
    }
}

/// NV memory, the network it holds, and the endpoints' groups.
#[derive(Debug, Clone)]
pub struct NvMemory {
    /// The network the NV items describe.
    pub network: NetworkSettings,
    /// Legacy items by id.
    items: BTreeMap<u16, Vec<u8>>,
    /// Extended table entries by (system, item, sub-id).
    tables: BTreeMap<(u8, u16, u16), Vec<u8>>,
    /// (endpoint, group) pairs.
    groups: Vec<(u8, u16)>,
}

impl NvMemory {
    /// The NV memory of a stick that formed `network` as coordinator `ieee`; with `formed` false, that
    /// of a stick fresh from flashing (only its network key item exists, with a blank key).
    pub fn new(network: NetworkSettings, ieee: IeeeAddress, formed: bool) -> Self {
        let mut nv = NvMemory {
            network,
            items: BTreeMap::new(),
            tables: BTreeMap::new(),
            groups: Vec::new(),
        };
        if !formed {
            nv.items.insert(item::NWKKEY, vec![0; 21]);
            return nv;
        }
        let key = network.network_key;
        let mut nwk_key = key.to_vec();
        nwk_key.push(0); // key sequence number
        nwk_key.extend_from_slice(&0u32.to_le_bytes()); // frame counter
        let mut key_info = vec![0u8]; // key sequence number
        key_info.extend_from_slice(&key);
        nv.items.insert(item::NWKKEY, nwk_key);
        nv.items.insert(item::NWK_ACTIVE_KEY_INFO, key_info.clone());
        nv.items.insert(item::NWK_ALTERN_KEY_INFO, key_info);
        nv.items.insert(item::PRECFGKEY, key.to_vec());
        nv.items.insert(item::PRECFGKEYS_ENABLE, vec![0]);
        nv.items.insert(item::HAS_CONFIGURED, vec![CONFIGURED]);
        nv.items.insert(item::NIB, nib(&network, ieee));
        nv
    }

    /// An item's bytes.
    pub fn item(&self, id: u16) -> Option<&[u8]> {
        self.items.get(&id).map(Vec::as_slice)
    }

    /// The answers to `frame` (an SREQ) when it is one of the requests this module serves, else `None`.
    /// `ieee` is the coordinator's address.
    pub fn answer(&mut self, frame: &MtFrame, ieee: IeeeAddress) -> Option<Vec<MtFrame>> {
        if frame.kind != CommandType::Sreq {
            return None;
        }
        let d = frame.data.as_slice();
        let srsp = |data: Vec<u8>| MtFrame::new(CommandType::Srsp, frame.subsystem, frame.id, data);
        let one = |data: Vec<u8>| Some(vec![srsp(data)]);
        match (frame.subsystem, frame.id) {
            // SYS_GET_EXTADDR
            (Subsystem::SYS, 0x04) => one(ieee.0.to_le_bytes().to_vec()),
            // SYS_STACK_TUNE: the transmit power as set
            (Subsystem::SYS, 0x0F) => one(vec![d.get(1).copied().unwrap_or(0)]),
            // SYS_OSAL_NV_ITEM_INIT: id, length, initial length, initial bytes
            (Subsystem::SYS, 0x07) => {
                let (id, len) = (u16_at(d, 0)?, u16_at(d, 2)?);
                if self.items.contains_key(&id) {
                    return one(vec![SUCCESS]);
                }
                let mut value = vec![0u8; usize::from(len)];
                let init = d.get(5..).unwrap_or_default();
                let n = init.len().min(value.len());
                value[..n].copy_from_slice(&init[..n]);
                self.items.insert(id, value);
                one(vec![NV_ITEM_INITIALIZED])
            }
            // SYS_OSAL_NV_READ: id, offset (u8)
            (Subsystem::SYS, 0x08) => {
                let (id, offset) = (u16_at(d, 0)?, usize::from(*d.get(2)?));
                one(self.read(id, offset))
            }
            // SYS_OSAL_NV_READ_EXT: id, offset (u16)
            (Subsystem::SYS, 0x1C) => {
                let (id, offset) = (u16_at(d, 0)?, usize::from(u16_at(d, 2)?));
                one(self.read(id, offset))
            }
            // SYS_OSAL_NV_WRITE: id, offset (u8), length (u8), bytes
            (Subsystem::SYS, 0x09) => {
                let (id, offset) = (u16_at(d, 0)?, usize::from(*d.get(2)?));
                one(vec![self.write(id, offset, d.get(4..).unwrap_or_default())])
            }
            // SYS_OSAL_NV_WRITE_EXT: id, offset (u16), length (u16), bytes
            (Subsystem::SYS, 0x1D) => {
                let (id, offset) = (u16_at(d, 0)?, usize::from(u16_at(d, 2)?));
                one(vec![self.write(id, offset, d.get(6..).unwrap_or_default())])
            }
            // SYS_OSAL_NV_DELETE: id, length
            (Subsystem::SYS, 0x12) => {
                let id = u16_at(d, 0)?;
                let status = if self.items.remove(&id).is_some() {
                    SUCCESS
                } else {
                    NV_ITEM_INITIALIZED
                };
                one(vec![status])
            }
            // SYS_OSAL_NV_LENGTH: id
            (Subsystem::SYS, 0x13) => {
                let len = self.items.get(&u16_at(d, 0)?).map_or(0, Vec::len);
                one((len as u16).to_le_bytes().to_vec())
            }
            // SYS_NV_CREATE: system, item, sub-id, length (u32)
            (Subsystem::SYS, 0x30) => {
                let key = table_key(d)?;
                let len = u32_at(d, 5)? as usize;
                self.tables.entry(key).or_insert_with(|| vec![0; len]);
                one(vec![SUCCESS])
            }
            // SYS_NV_DELETE: system, item, sub-id
            (Subsystem::SYS, 0x31) => {
                let key = table_key(d)?;
                let status = if self.tables.remove(&key).is_some() {
                    SUCCESS
                } else {
                    NV_OPER_FAILED
                };
                one(vec![status])
            }
            // SYS_NV_LENGTH: system, item, sub-id; the length as one byte (0: no such entry)
            (Subsystem::SYS, 0x32) => {
                let len = self.tables.get(&table_key(d)?).map_or(0, Vec::len);
                one(vec![len.min(255) as u8])
            }
            // SYS_NV_READ: system, item, sub-id, offset (u16), length (u8)
            (Subsystem::SYS, 0x33) => {
                let key = table_key(d)?;
                let (offset, len) = (usize::from(u16_at(d, 5)?), usize::from(*d.get(7)?));
                match self.tables.get(&key) {
                    Some(v) => {
                        let part = v.get(offset..).unwrap_or_default();
                        let part = &part[..part.len().min(len)];
                        let mut out = vec![SUCCESS, part.len() as u8];
                        out.extend_from_slice(part);
                        one(out)
                    }
                    None => one(vec![NV_OPER_FAILED, 0]),
                }
            }
            // SYS_NV_WRITE: system, item, sub-id, offset (u16), length (u8), bytes
            (Subsystem::SYS, 0x34) => {
                let key = table_key(d)?;
                let offset = usize::from(u16_at(d, 5)?);
                let bytes = d.get(8..).unwrap_or_default();
                let entry = self.tables.entry(key).or_default();
                if entry.len() < offset + bytes.len() {
                    entry.resize(offset + bytes.len(), 0);
                }
                entry[offset..offset + bytes.len()].copy_from_slice(bytes);
                one(vec![SUCCESS])
            }
            // UTIL_LED_CONTROL
            (Subsystem::UTIL, 0x0A) => one(vec![SUCCESS]),
            // ZDO_EXT_NWK_INFO: short address, state, PAN ID, parent, extended PAN ID, parent's
            // IEEE address, channel
            (Subsystem::ZDO, 0x50) => {
                let n = &self.network;
                let mut out = vec![0, 0, crate::mt::DEV_ZB_COORD];
                out.extend_from_slice(&n.pan_id.to_le_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend(n.extended_pan_id.iter().rev());
                out.extend_from_slice(&ieee.0.to_le_bytes());
                out.push(n.channel);
                one(out)
            }
            // ZDO_EXT_FIND_GROUP: endpoint, group
            (Subsystem::ZDO, 0x4A) => {
                let (endpoint, group) = (*d.first()?, u16_at(d, 1)?);
                let status = if self.groups.contains(&(endpoint, group)) {
                    SUCCESS
                } else {
                    FAILURE
                };
                let mut out = vec![status];
                out.extend_from_slice(&group.to_le_bytes());
                out.push(0); // no name
                one(out)
            }
            // ZDO_EXT_ADD_GROUP: endpoint, group, name
            (Subsystem::ZDO, 0x4B) => {
                let (endpoint, group) = (*d.first()?, u16_at(d, 1)?);
                if !self.groups.contains(&(endpoint, group)) {
                    self.groups.push((endpoint, group));
                }
                one(vec![SUCCESS])
            }
            // ZDO_EXT_ROUTE_DISC
            (Subsystem::ZDO, 0x45) => one(vec![SUCCESS]),
            // ZDO_BIND_REQ / ZDO_UNBIND_REQ: destination first; the device answers with
            // ZDO_BIND_RSP / ZDO_UNBIND_RSP (source address, status)
            (Subsystem::ZDO, id @ (0x21 | 0x22)) => {
                let dst = u16_at(d, 0)?;
                let mut rsp = dst.to_le_bytes().to_vec();
                rsp.push(SUCCESS);
                Some(vec![
                    srsp(vec![SUCCESS]),
                    MtFrame::new(CommandType::Areq, Subsystem::ZDO, id | 0x80, rsp),
                ])
            }
            _ => None,
        }
    }

    fn read(&self, id: u16, offset: usize) -> Vec<u8> {
        match self.items.get(&id) {
            Some(v) => {
                let part = v.get(offset..).unwrap_or_default();
                let part = &part[..part.len().min(READ_CHUNK)];
                let mut out = vec![SUCCESS, part.len() as u8];
                out.extend_from_slice(part);
                out
            }
            None => vec![NV_OPER_FAILED, 0],
        }
    }

    fn write(&mut self, id: u16, offset: usize, bytes: &[u8]) -> u8 {
        let Some(item) = self.items.get_mut(&id) else {
            return NV_OPER_FAILED;
        };
        let end = offset + bytes.len();
        if end > item.len() {
            return NV_OPER_FAILED;
        }
        item[offset..end].copy_from_slice(bytes);
        SUCCESS
    }
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn table_key(d: &[u8]) -> Option<(u8, u16, u16)> {
    Some((*d.first()?, u16_at(d, 1)?, u16_at(d, 3)?))
}

/// The NIB of a coordinator running `network` (Z-Stack 3.x, unaligned: 110 bytes).
fn nib(network: &NetworkSettings, ieee: IeeeAddress) -> Vec<u8> {
    let mut b = Vec::with_capacity(110);
    // SequenceNum, PassiveAckTimeout, MaxBroadcastRetries, MaxChildren, MaxDepth, MaxRouters,
    // dummyNeighborTable, BroadcastDeliveryTime, ReportConstantCost, RouteDiscRetries,
    // dummyRoutingTable, SecureAllFrames, SecurityLevel, SymLink, CapabilityFlags
    b.extend_from_slice(&[0, 5, 2, 20, 15, 0, 0, 30, 0, 2, 0, 1, 5, 1, 0x8F]);
    b.extend_from_slice(&7u16.to_le_bytes()); // TransactionPersistenceTime
    b.extend_from_slice(&[2, 13, 60]); // protocol version, route discovery and expiry times
    b.extend_from_slice(&0u16.to_le_bytes()); // our network address
    b.push(network.channel);
    b.extend_from_slice(&0u16.to_le_bytes()); // the coordinator's network address
    b.extend_from_slice(&ieee.0.to_le_bytes());
    b.extend_from_slice(&network.pan_id.to_le_bytes());
    b.push(crate::mt::DEV_ZB_COORD); // nwkState
    b.extend_from_slice(&(1u32 << network.channel.min(31)).to_le_bytes()); // channel list
    b.extend_from_slice(&[15, 15, 0, 0]); // beacon order, superframe order, scan duration, battery
    b.extend_from_slice(&0u32.to_le_bytes()); // allocated router addresses
    b.extend_from_slice(&0u32.to_le_bytes()); // allocated end-device addresses
    b.push(0); // node depth
    b.extend(network.extended_pan_id.iter().rev());
    b.push(1); // network key loaded
    b.extend_from_slice(&[0; 17]); // spare key descriptor 1
    b.extend_from_slice(&[0; 17]); // spare key descriptor 2
    b.extend_from_slice(&[0, 0]); // spare 3, 4
                                  // link status period, router age limit, multicast, concentrator, its discovery time and radius,
                                  // all fresh
    b.extend_from_slice(&[15, 3, 0, 1, 120, 10, 1]);
    b.extend_from_slice(&0u16.to_le_bytes()); // network manager address
    b.extend_from_slice(&0u16.to_le_bytes()); // total transmissions
    b.push(0); // network update id
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sreq(subsystem: Subsystem, id: u8, data: Vec<u8>) -> MtFrame {
        MtFrame::new(CommandType::Sreq, subsystem, id, data)
    }

    #[test]
    fn the_nib_has_the_unaligned_length_and_the_network_where_hosts_read_it() {
        let n = NetworkSettings::default();
        let nib = nib(&n, IeeeAddress(0x0012_4B00_2A3B_4C5D));
        assert_eq!(nib.len(), 110);
        assert_eq!(nib[22], n.channel);
        assert_eq!(u16::from_le_bytes([nib[33], nib[34]]), n.pan_id);
        let mut epid = nib[53..61].to_vec();
        epid.reverse();
        assert_eq!(epid, n.extended_pan_id);
    }

    #[test]
    fn items_read_in_chunks_and_write_within_their_length() {
        let ieee = IeeeAddress(0x0012_4B00_2A3B_4C5D);
        let mut nv = NvMemory::new(NetworkSettings::default(), ieee, true);
        let len = nv.answer(&sreq(Subsystem::SYS, 0x13, vec![0x21, 0x00]), ieee);
        assert_eq!(len.unwrap()[0].data, vec![110, 0]);
        let read = nv.answer(&sreq(Subsystem::SYS, 0x1C, vec![0x21, 0x00, 100, 0]), ieee);
        assert_eq!(
            read.unwrap()[0].data.len(),
            2 + 10,
            "the last ten bytes from offset 100"
        );
        let missing = nv.answer(&sreq(Subsystem::SYS, 0x13, vec![0x99, 0x09]), ieee);
        assert_eq!(missing.unwrap()[0].data, vec![0, 0]);
        let init = nv.answer(
            &sreq(Subsystem::SYS, 0x07, vec![0x99, 0x09, 2, 0, 1, 0xAB]),
            ieee,
        );
        assert_eq!(init.unwrap()[0].data, vec![NV_ITEM_INITIALIZED]);
        let write = nv.answer(
            &sreq(Subsystem::SYS, 0x1D, vec![0x99, 0x09, 1, 0, 1, 0, 0xCD]),
            ieee,
        );
        assert_eq!(write.unwrap()[0].data, vec![SUCCESS]);
        assert_eq!(nv.item(0x0999), Some(&[0xAB, 0xCD][..]));
        let past_end = nv.answer(
            &sreq(Subsystem::SYS, 0x1D, vec![0x99, 0x09, 2, 0, 1, 0, 0xEF]),
            ieee,
        );
        assert_eq!(past_end.unwrap()[0].data, vec![NV_OPER_FAILED]);
    }

    #[test]
    fn a_group_is_found_once_added_and_a_bind_is_answered_by_the_device() {
        let ieee = IeeeAddress(1);
        let mut nv = NvMemory::new(NetworkSettings::default(), ieee, true);
        let find = sreq(Subsystem::ZDO, 0x4A, vec![242, 0x4B, 0x0B]);
        assert_eq!(nv.answer(&find, ieee).unwrap()[0].data[0], FAILURE);
        nv.answer(&sreq(Subsystem::ZDO, 0x4B, vec![242, 0x4B, 0x0B, 0]), ieee);
        assert_eq!(nv.answer(&find, ieee).unwrap()[0].data[0], SUCCESS);
        let bind = nv.answer(&sreq(Subsystem::ZDO, 0x21, vec![0x01, 0x10, 1, 2]), ieee);
        let bind = bind.unwrap();
        assert_eq!(bind[1].kind, CommandType::Areq);
        assert_eq!(
            (bind[1].id, bind[1].data.clone()),
            (0xA1, vec![0x01, 0x10, 0])
        );
    }

    #[test]
    fn truncated_requests_are_not_answered_here() {
        let mut nv = NvMemory::new(NetworkSettings::default(), IeeeAddress(1), true);
        assert!(nv
            .answer(&sreq(Subsystem::SYS, 0x1C, vec![0x21]), IeeeAddress(1))
            .is_none());
    }
}

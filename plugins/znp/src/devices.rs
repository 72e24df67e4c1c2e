//! The device table: every Zigbee device the coordinator has seen, by IEEE address, with its current
//! network address, endpoints, clusters and meter mapping. The driver updates it from announcements,
//! leaves, endpoint and simple-descriptor answers and the meters' formatting attributes, and reports
//! each change as a notice; the daemon persists it (it is `serde`) and hands it back at start with
//! the `load_devices` command.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::mt::SimpleDescriptor;
use crate::wire::IeeeAddress;
use crate::zcl::{metering, prepayment, MeteringFormat};

/// Where a device's meter lives and how its values are formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MeterMapping {
    /// The endpoint with the Metering server cluster (0x0702), if any.
    pub metering_endpoint: Option<u8>,
    /// The endpoint with the Prepayment server cluster (0x0705), if any.
    pub prepayment_endpoint: Option<u8>,
    /// The metering formatting, once read from the meter.
    pub format: Option<MeteringFormat>,
}

/// One device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// Its IEEE address (permanent).
    pub ieee: IeeeAddress,
    /// Its network address (changes when it rejoins elsewhere).
    pub nwk: u16,
    /// Its MAC capability flags from the announcement.
    #[serde(default)]
    pub capabilities: u8,
    /// Its endpoints; `None` until the device answered the active-endpoint request.
    #[serde(default)]
    pub endpoints: Option<Vec<u8>>,
    /// Simple descriptors, one per endpoint, by endpoint.
    #[serde(default)]
    pub descriptors: Vec<SimpleDescriptor>,
    /// The meter on it.
    #[serde(default)]
    pub meter: MeterMapping,
}

impl DeviceEntry {
    /// A device known by its addresses only.
    pub fn new(ieee: IeeeAddress, nwk: u16) -> Self {
        DeviceEntry {
            ieee,
            nwk,
            capabilities: 0,
            endpoints: None,
            descriptors: Vec::new(),
            meter: MeterMapping::default(),
        }
    }

    /// Endpoints whose simple descriptor is still missing.
    pub fn missing_descriptors(&self) -> Vec<u8> {
        self.endpoints
            .iter()
            .flatten()
            .copied()
            .filter(|ep| !self.descriptors.iter().any(|d| d.endpoint == *ep))
            .collect()
    }

    /// Whether discovery is complete (endpoints and all their descriptors known).
    pub fn is_interviewed(&self) -> bool {
        self.endpoints.is_some() && self.missing_descriptors().is_empty()
    }

    /// The endpoint serving `cluster`, if any.
    pub fn endpoint_for(&self, cluster: u16) -> Option<u8> {
        match cluster {
            metering::CLUSTER => self.meter.metering_endpoint,
            prepayment::CLUSTER => self.meter.prepayment_endpoint,
            _ => self
                .descriptors
                .iter()
                .find(|d| d.in_clusters.contains(&cluster))
                .map(|d| d.endpoint),
        }
    }
}

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A device the table did not hold.
    Added,
    /// A known device with new facts.
    Updated,
    /// Nothing new.
    Unchanged,
}

/// The device table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceTable {
    devices: BTreeMap<IeeeAddress, DeviceEntry>,
}

impl DeviceTable {
    /// An empty table.
    pub fn new() -> Self {
        DeviceTable::default()
    }

    /// The devices, by IEEE address.
    pub fn iter(&self) -> impl Iterator<Item = &DeviceEntry> {
        self.devices.values()
    }

    /// How many devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// A device by IEEE address.
    pub fn get(&self, ieee: IeeeAddress) -> Option<&DeviceEntry> {
        self.devices.get(&ieee)
    }

    /// A device by network address.
    pub fn by_nwk(&self, nwk: u16) -> Option<&DeviceEntry> {
        self.devices.values().find(|d| d.nwk == nwk)
    }

    /// A device announced itself (joined, rejoined, or came back with a new network address). Another
    /// entry holding the same network address loses it (the address now belongs to this device).
    pub fn on_announce(&mut self, ieee: IeeeAddress, nwk: u16, capabilities: u8) -> Change {
        let stale: Vec<IeeeAddress> = self
            .devices
            .values()
            .filter(|d| d.nwk == nwk && d.ieee != ieee)
            .map(|d| d.ieee)
            .collect();
        for other in stale {
            self.devices.remove(&other);
        }
        match self.devices.get_mut(&ieee) {
            Some(d) if d.nwk == nwk && d.capabilities == capabilities => Change::Unchanged,
            Some(d) => {
                d.nwk = nwk;
                d.capabilities = capabilities;
                Change::Updated
            }
            None => {
                let mut entry = DeviceEntry::new(ieee, nwk);
                entry.capabilities = capabilities;
                self.devices.insert(ieee, entry);
                Change::Added
            }
        }
    }

    /// A device left; returns its entry.
    pub fn on_leave(&mut self, ieee: IeeeAddress) -> Option<DeviceEntry> {
        self.devices.remove(&ieee)
    }

    /// A device's active endpoints; returns the device.
    pub fn on_active_endpoints(&mut self, nwk: u16, endpoints: &[u8]) -> Option<IeeeAddress> {
        let d = self.devices.values_mut().find(|d| d.nwk == nwk)?;
        d.endpoints = Some(endpoints.to_vec());
        d.descriptors
            .retain(|desc| endpoints.contains(&desc.endpoint));
        Some(d.ieee)
    }

    /// One endpoint's simple descriptor; maps the meter's clusters. Returns the device.
    pub fn on_simple_descriptor(
        &mut self,
        nwk: u16,
        descriptor: SimpleDescriptor,
    ) -> Option<IeeeAddress> {
        let d = self.devices.values_mut().find(|d| d.nwk == nwk)?;
        let ep = descriptor.endpoint;
        if descriptor.in_clusters.contains(&metering::CLUSTER) {
            d.meter.metering_endpoint.get_or_insert(ep);
        }
        if descriptor.in_clusters.contains(&prepayment::CLUSTER) {
            d.meter.prepayment_endpoint.get_or_insert(ep);
        }
        if let Some(eps) = &mut d.endpoints {
            if !eps.contains(&ep) {
                eps.push(ep);
            }
        }
        d.descriptors.retain(|desc| desc.endpoint != ep);
        d.descriptors.push(descriptor);
        d.descriptors.sort_by_key(|desc| desc.endpoint);
        Some(d.ieee)
    }

    /// The meter's formatting attributes (any of them); returns the device when something changed.
    pub fn on_metering_format(
        &mut self,
        nwk: u16,
        unit: Option<u8>,
        multiplier: Option<u32>,
        divisor: Option<u32>,
    ) -> Option<IeeeAddress> {
        let d = self.devices.values_mut().find(|d| d.nwk == nwk)?;
        let before = d.meter.format;
        let f = d.meter.format.get_or_insert_with(MeteringFormat::default);
        if let Some(u) = unit {
            f.unit = u;
        }
        if let Some(m) = multiplier {
            f.multiplier = m;
        }
        if let Some(v) = divisor {
            f.divisor = v;
        }
        (d.meter.format != before).then_some(d.ieee)
    }

    /// Adds or replaces one device (the daemon rebuilding the table from its store).
    pub fn insert(&mut self, entry: DeviceEntry) {
        self.devices.insert(entry.ieee, entry);
    }

    /// Replaces the table (the daemon's stored copy at start).
    pub fn replace(&mut self, other: DeviceTable) {
        *self = other;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(ep: u8, clusters: &[u16]) -> SimpleDescriptor {
        SimpleDescriptor {
            endpoint: ep,
            profile: 0x0109,
            device_id: 0x0501,
            device_version: 1,
            in_clusters: clusters.to_vec(),
            out_clusters: vec![],
        }
    }

    #[test]
    fn announce_interview_rejoin_leave() {
        let a = IeeeAddress(0x00124B0000000001);
        let b = IeeeAddress(0x00124B0000000002);
        let mut t = DeviceTable::new();
        assert_eq!(t.on_announce(a, 0x1111, 0x80), Change::Added);
        assert_eq!(t.on_announce(a, 0x1111, 0x80), Change::Unchanged);
        assert_eq!(t.on_active_endpoints(0x1111, &[1, 2]), Some(a));
        assert_eq!(t.get(a).unwrap().missing_descriptors(), [1, 2]);
        t.on_simple_descriptor(0x1111, descriptor(1, &[0x0000, 0x0702, 0x0705]));
        t.on_simple_descriptor(0x1111, descriptor(2, &[0x0000]));
        let d = t.get(a).unwrap();
        assert!(d.is_interviewed());
        assert_eq!(d.endpoint_for(0x0705), Some(1));
        assert_eq!(
            t.on_metering_format(0x1111, Some(0), None, Some(1000)),
            Some(a)
        );
        assert_eq!(
            t.on_metering_format(0x1111, Some(0), None, Some(1000)),
            None
        );
        // Rejoined with a new address.
        assert_eq!(t.on_announce(a, 0x2222, 0x80), Change::Updated);
        assert_eq!(t.by_nwk(0x2222).unwrap().ieee, a);
        // Another device takes the old address of nobody; then one takes a's address.
        assert_eq!(t.on_announce(b, 0x2222, 0x80), Change::Added);
        assert!(t.get(a).is_none());
        let json = serde_json::to_string(&t).unwrap();
        let back: DeviceTable = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert!(t.on_leave(b).is_some());
        assert!(t.is_empty());
    }
}

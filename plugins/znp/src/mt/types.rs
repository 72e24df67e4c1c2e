//! The structured fields of AF and ZDO commands: endpoint and simple descriptors, the data request
//! and the incoming message.

use serde::{Deserialize, Serialize};

use crate::wire::{FieldError, FieldReader, PutLe};

/// An endpoint's simple descriptor: what a device (or the coordinator) offers on one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SimpleDescriptor {
    /// The endpoint (1–240).
    pub endpoint: u8,
    /// The application profile (0x0104 Home Automation, 0x0109 Smart Energy).
    pub profile: u16,
    /// The device id within the profile.
    pub device_id: u16,
    /// The device version.
    pub device_version: u8,
    /// Server clusters.
    pub in_clusters: Vec<u16>,
    /// Client clusters.
    pub out_clusters: Vec<u16>,
}

impl SimpleDescriptor {
    pub(crate) fn decode(r: &mut FieldReader<'_>) -> Result<Self, FieldError> {
        Ok(SimpleDescriptor {
            endpoint: r.u8("Endpoint")?,
            profile: r.u16("ProfileId")?,
            device_id: r.u16("DeviceId")?,
            device_version: r.u8("DeviceVersion")?,
            in_clusters: r.u16_list("InClusterList")?,
            out_clusters: r.u16_list("OutClusterList")?,
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut d = vec![self.endpoint];
        d.put_u16(self.profile);
        d.put_u16(self.device_id);
        d.push(self.device_version);
        put_list(&mut d, &self.in_clusters);
        put_list(&mut d, &self.out_clusters);
        d
    }
}

fn put_list(d: &mut Vec<u8>, list: &[u16]) {
    d.push(list.len().min(255) as u8);
    list.iter().take(255).for_each(|c| d.put_u16(*c));
}

/// AF_REGISTER's payload: the simple descriptor with the latency field between the version and the
/// cluster lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointDescriptor {
    /// The descriptor.
    #[serde(flatten)]
    pub descriptor: SimpleDescriptor,
    /// Latency requirement (0: none).
    pub latency: u8,
}

impl EndpointDescriptor {
    pub(crate) fn decode(r: &mut FieldReader<'_>) -> Result<Self, FieldError> {
        let endpoint = r.u8("EndPoint")?;
        let profile = r.u16("AppProfId")?;
        let device_id = r.u16("AppDeviceId")?;
        let device_version = r.u8("AppDevVer")?;
        let latency = r.u8("LatencyReq")?;
        Ok(EndpointDescriptor {
            descriptor: SimpleDescriptor {
                endpoint,
                profile,
                device_id,
                device_version,
                in_clusters: r.u16_list("AppInClusterList")?,
                out_clusters: r.u16_list("AppOutClusterList")?,
            },
            latency,
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let s = &self.descriptor;
        let mut d = vec![s.endpoint];
        d.put_u16(s.profile);
        d.put_u16(s.device_id);
        d.extend_from_slice(&[s.device_version, self.latency]);
        put_list(&mut d, &s.in_clusters);
        put_list(&mut d, &s.out_clusters);
        d
    }
}

/// AF_DATA_REQUEST: application data to a device's endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AfDataRequest {
    /// The device's network address.
    pub dst_addr: u16,
    /// Its endpoint.
    pub dst_endpoint: u8,
    /// Our endpoint.
    pub src_endpoint: u8,
    /// The cluster.
    pub cluster: u16,
    /// Matches the AF_DATA_CONFIRM.
    pub trans_id: u8,
    /// Options (0x10: APS acknowledgement).
    pub options: u8,
    /// Hops.
    pub radius: u8,
    /// The ZCL frame.
    #[serde(with = "hex_bytes")]
    pub data: Vec<u8>,
}

impl AfDataRequest {
    pub(crate) fn decode(r: &mut FieldReader<'_>) -> Result<Self, FieldError> {
        let dst_addr = r.u16("DstAddr")?;
        let dst_endpoint = r.u8("DstEndpoint")?;
        let src_endpoint = r.u8("SrcEndpoint")?;
        let cluster = r.u16("ClusterId")?;
        let trans_id = r.u8("TransId")?;
        let options = r.u8("Options")?;
        let radius = r.u8("Radius")?;
        let len = r.u8("Len")?;
        Ok(AfDataRequest {
            dst_addr,
            dst_endpoint,
            src_endpoint,
            cluster,
            trans_id,
            options,
            radius,
            data: r.take(usize::from(len), "Data")?.to_vec(),
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut d = Vec::with_capacity(10 + self.data.len());
        d.put_u16(self.dst_addr);
        d.extend_from_slice(&[self.dst_endpoint, self.src_endpoint]);
        d.put_u16(self.cluster);
        d.extend_from_slice(&[
            self.trans_id,
            self.options,
            self.radius,
            self.data.len().min(255) as u8,
        ]);
        d.extend_from_slice(
            self.data
                .get(..self.data.len().min(255))
                .unwrap_or_default(),
        );
        d
    }
}

/// AF_INCOMING_MSG: application data from a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AfIncomingMsg {
    /// Group (0: unicast).
    pub group: u16,
    /// The cluster.
    pub cluster: u16,
    /// The sender's network address.
    pub src_addr: u16,
    /// The sender's endpoint.
    pub src_endpoint: u8,
    /// Our endpoint.
    pub dst_endpoint: u8,
    /// Whether it was a broadcast.
    pub was_broadcast: u8,
    /// Link quality.
    pub lqi: u8,
    /// Whether APS security was used.
    pub security_use: u8,
    /// The coordinator's timestamp.
    pub timestamp: u32,
    /// The APS sequence number.
    pub trans_seq: u8,
    /// The ZCL frame.
    #[serde(with = "hex_bytes")]
    pub data: Vec<u8>,
    /// Bytes after the documented payload (Z-Stack 3.x: MAC source address and radius).
    #[serde(with = "hex_bytes")]
    pub trailer: Vec<u8>,
}

impl AfIncomingMsg {
    pub(crate) fn decode(r: &mut FieldReader<'_>) -> Result<Self, FieldError> {
        let group = r.u16("GroupId")?;
        let cluster = r.u16("ClusterId")?;
        let src_addr = r.u16("SrcAddr")?;
        let src_endpoint = r.u8("SrcEndpoint")?;
        let dst_endpoint = r.u8("DstEndpoint")?;
        let was_broadcast = r.u8("WasBroadcast")?;
        let lqi = r.u8("LinkQuality")?;
        let security_use = r.u8("SecurityUse")?;
        let timestamp = r.u32("TimeStamp")?;
        let trans_seq = r.u8("TransSeqNumber")?;
        let len = r.u8("Len")?;
        let data = r.take(usize::from(len), "Data")?.to_vec();
        Ok(AfIncomingMsg {
            group,
            cluster,
            src_addr,
            src_endpoint,
            dst_endpoint,
            was_broadcast,
            lqi,
            security_use,
            timestamp,
            trans_seq,
            data,
            trailer: r.remaining().to_vec(),
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut d = Vec::with_capacity(17 + self.data.len() + self.trailer.len());
        d.put_u16(self.group);
        d.put_u16(self.cluster);
        d.put_u16(self.src_addr);
        d.extend_from_slice(&[
            self.src_endpoint,
            self.dst_endpoint,
            self.was_broadcast,
            self.lqi,
            self.security_use,
        ]);
        d.put_u32(self.timestamp);
        d.extend_from_slice(&[self.trans_seq, self.data.len().min(255) as u8]);
        d.extend_from_slice(
            self.data
                .get(..self.data.len().min(255))
                .unwrap_or_default(),
        );
        d.extend_from_slice(&self.trailer);
        d
    }
}

/// Serialises bytes as a hex string in JSON.
pub(crate) mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&text)
    }
}

//! The emulator as a host stack other than ours sees a formed coordinator: the start-up reads that decide
//! whether it resumes the network (NV items by length and chunks), the coordinator's own endpoints, the
//! groups, and MT over TCP.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use concentrator_driver_znp::mt::{
    CommandType, FrameReader, MtFrame, Read as FrameRead, Subsystem,
};
use concentrator_driver_znp::sim::{
    nv_item, EmulatorThread, NetworkSettings, TcpLink, ZnpEmulator,
};

fn sreq(subsystem: Subsystem, id: u8, data: &[u8]) -> Vec<u8> {
    MtFrame::new(CommandType::Sreq, subsystem, id, data.to_vec())
        .encode()
        .unwrap()
}

/// Sends one SREQ to the sans-IO emulator and returns every frame it answers with.
fn ask(e: &mut ZnpEmulator, subsystem: Subsystem, id: u8, data: &[u8]) -> Vec<MtFrame> {
    e.on_bytes(&sreq(subsystem, id, data));
    let mut reader = FrameReader::new();
    reader.push(&e.take_output());
    let mut out = Vec::new();
    while let Some(read) = reader.next_frame() {
        if let FrameRead::Frame(f) = read {
            out.push(f);
        }
    }
    out
}

/// Reads an NV item as zigbee-herdsman does: its length, then chunks from increasing offsets.
fn read_item(e: &mut ZnpEmulator, id: u16) -> Option<Vec<u8>> {
    let len = ask(e, Subsystem::SYS, 0x13, &id.to_le_bytes());
    let len = u16::from_le_bytes([len[0].data[0], len[0].data[1]]) as usize;
    if len == 0 {
        return None;
    }
    let mut item = Vec::new();
    while item.len() < len {
        let mut req = id.to_le_bytes().to_vec();
        req.extend_from_slice(&(item.len() as u16).to_le_bytes());
        let rsp = ask(e, Subsystem::SYS, 0x1C, &req);
        assert_eq!(rsp[0].data[0], 0, "read status of item {id:#06x}");
        item.extend_from_slice(&rsp[0].data[2..]);
    }
    Some(item)
}

#[test]
fn a_formed_coordinator_holds_its_network_in_nv_as_a_host_stack_reads_it() {
    let net = NetworkSettings::default();
    let mut e = ZnpEmulator::new(true);
    assert_eq!(
        read_item(&mut e, nv_item::NWKKEY).unwrap().len(),
        21,
        "21 bytes: the unaligned layout"
    );
    assert_eq!(read_item(&mut e, nv_item::HAS_CONFIGURED), Some(vec![0x55]));
    let nib = read_item(&mut e, nv_item::NIB).unwrap();
    assert_eq!(nib.len(), 110);
    assert_eq!(u16::from_le_bytes([nib[33], nib[34]]), net.pan_id);
    for id in [nv_item::NWK_ACTIVE_KEY_INFO, nv_item::NWK_ALTERN_KEY_INFO] {
        assert_eq!(read_item(&mut e, id).unwrap()[1..], net.network_key);
    }
    assert_eq!(
        read_item(&mut e, nv_item::PRECFGKEY).unwrap(),
        net.network_key
    );
    // The extended network info names the same network; the extended PAN ID least significant first.
    let info = ask(&mut e, Subsystem::ZDO, 0x50, &[]);
    let d = &info[0].data;
    assert_eq!(u16::from_le_bytes([d[3], d[4]]), net.pan_id);
    let mut epid = d[7..15].to_vec();
    epid.reverse();
    assert_eq!(epid, net.extended_pan_id);
    assert_eq!(d[23], net.channel);
}

#[test]
fn a_stick_fresh_from_flashing_has_no_network_in_nv() {
    let mut e = ZnpEmulator::new(false);
    assert_eq!(
        read_item(&mut e, nv_item::NWKKEY).map(|k| k.len()),
        Some(21)
    );
    assert_eq!(read_item(&mut e, nv_item::HAS_CONFIGURED), None);
    assert_eq!(read_item(&mut e, nv_item::NIB), None);
}

#[test]
fn the_coordinators_own_endpoints_are_listed_once_registered() {
    let mut e = ZnpEmulator::new(true);
    let active = |e: &mut ZnpEmulator| {
        let out = ask(e, Subsystem::ZDO, 0x05, &[0, 0, 0, 0]);
        assert_eq!(out[0].kind, CommandType::Srsp);
        let rsp = out.iter().find(|f| f.kind == CommandType::Areq).unwrap();
        rsp.data.get(6..).unwrap_or_default().to_vec()
    };
    assert!(active(&mut e).is_empty());
    // AF_REGISTER endpoint 1, HA profile, no clusters.
    ask(
        &mut e,
        Subsystem::AF,
        0x00,
        &[1, 0x04, 0x01, 0x05, 0x00, 0, 0, 0, 0],
    );
    assert_eq!(active(&mut e), vec![1]);
}

#[test]
fn a_group_is_not_found_until_added() {
    let mut e = ZnpEmulator::new(true);
    let find = |e: &mut ZnpEmulator| ask(e, Subsystem::ZDO, 0x4A, &[242, 0x4B, 0x0B])[0].data[0];
    assert_eq!(find(&mut e), 1);
    assert_eq!(
        ask(&mut e, Subsystem::ZDO, 0x4B, &[242, 0x4B, 0x0B, 0])[0].data,
        [0]
    );
    assert_eq!(find(&mut e), 0);
}

#[test]
fn mt_over_tcp() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut host = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (stream, _) = listener.accept().unwrap();
    let emulator = EmulatorThread::spawn(ZnpEmulator::new(true), TcpLink::new(stream).unwrap());
    host.write_all(&sreq(Subsystem::SYS, 0x04, &[])).unwrap();
    host.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut reader = FrameReader::new();
    let until = Instant::now() + Duration::from_secs(5);
    let frame = loop {
        assert!(Instant::now() < until, "no answer over TCP");
        let mut buf = [0u8; 64];
        if let Ok(n) = host.read(&mut buf) {
            reader.push(&buf[..n]);
        }
        if let Some(FrameRead::Frame(f)) = reader.next_frame() {
            break f;
        }
    };
    assert_eq!((frame.subsystem, frame.id), (Subsystem::SYS, 0x04));
    assert_eq!(
        frame.data,
        emulator.with(|e| e.ieee.0.to_le_bytes().to_vec())
    );
    drop(host);
    emulator.stop();
}

//! The example coordinator through the plugin host, as the daemon drives one: the link comes up, a
//! device joins and reports, the host's typed commands reach the radio as its own lines and their
//! outcomes come back as typed events.

use concentrator_hal::sim::SimClock;
use concentrator_plugin_host::{
    CoordinatorCommand, CoordinatorEvent, CoordinatorRequest, DeviceAddress, PluginLoader,
    PluginPolicy, RelayCommand, StaticDriver, StreamEvent, TrustedKeys,
};

#[test]
fn a_vendor_coordinator_speaks_the_typed_api() {
    let mut loader =
        PluginLoader::new("/nonexistent", TrustedKeys::none(), PluginPolicy::default());
    let plugin = loader
        .register_static(StaticDriver::new(
            concentrator_example_coordinator::plugin_declaration(),
        ))
        .unwrap();
    let clock = SimClock::new_virtual();
    let mut session = plugin.open_stream("", &clock).unwrap();
    session.on_tick(&clock).unwrap();
    assert_eq!(session.poll_event().unwrap(), Some(StreamEvent::LinkUp));
    let up = CoordinatorEvent::from_json(&session.poll_notice().unwrap().unwrap()).unwrap();
    assert!(
        matches!(up, CoordinatorEvent::LinkUp { coordinator, .. } if coordinator == DeviceAddress::from_u64(concentrator_example_coordinator::RADIO))
    );

    let device: DeviceAddress = "00ee000000000042".parse().unwrap();
    session
        .on_bytes(b"JOIN 00ee000000000042\nREPORT 00ee000000000042 1500\n")
        .unwrap();
    let mut notices = Vec::new();
    while let Some(text) = session.poll_notice().unwrap() {
        notices.push(CoordinatorEvent::from_json(&text).unwrap());
    }
    assert!(matches!(notices[0], CoordinatorEvent::Joined { device: d } if d == device));
    assert!(matches!(&notices[1], CoordinatorEvent::Updated { info } if info.interviewed));
    assert!(matches!(notices[2], CoordinatorEvent::Interviewed { .. }));
    assert_eq!(
        session.poll_event().unwrap(),
        Some(StreamEvent::DeviceSeen {
            address: device.as_bytes().to_vec()
        })
    );
    let Some(StreamEvent::Reading { reading, .. }) = session.poll_event().unwrap() else {
        panic!("no reading");
    };
    assert_eq!(reading.to_string(), "energy-import-total = 1500 Wh");

    let trip = CoordinatorRequest {
        id: 9,
        command: CoordinatorCommand::relay(device, RelayCommand::Trip),
    };
    session.command(&trip.to_json(), &clock).unwrap();
    assert_eq!(
        session.poll_transmit().unwrap().unwrap(),
        b"RELAY 9 00ee000000000042 1\n"
    );
    session.on_bytes(b"DONE 9\n").unwrap();
    let done = CoordinatorEvent::from_json(&session.poll_notice().unwrap().unwrap()).unwrap();
    assert!(matches!(done, CoordinatorEvent::CommandDone { id: 9, .. }));

    let read = CoordinatorRequest {
        id: 10,
        command: CoordinatorCommand::Read {
            device,
            quantities: vec![String::from("energy-import-total")],
        },
    };
    let refused = session.command(&read.to_json(), &clock).unwrap_err();
    assert!(
        refused.to_string().contains("report by themselves"),
        "{refused}"
    );
}

/// A coordinator built against API 1.1 spoke notices of its own, which this host no longer reads: it
/// is refused before any call, saying to rebuild.
#[test]
fn a_coordinator_built_before_the_typed_api_is_refused() {
    let current = concentrator_example_coordinator::plugin_declaration();
    // SAFETY: a bitwise copy of a declaration whose data lives forever; only the version is changed.
    let mut old = unsafe { std::ptr::read(current) };
    old.api_version.minor = 1;
    let old: &'static _ = Box::leak(Box::new(old));
    let mut loader =
        PluginLoader::new("/nonexistent", TrustedKeys::none(), PluginPolicy::default());
    let error = loader
        .register_static(StaticDriver::new(old))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("coordinator driver built against API 1.1")
            && error.contains("rebuild it with this release's SDK"),
        "{error}"
    );
}

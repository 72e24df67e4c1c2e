//! The data link through the appliance's privileged unit: `PppUnit` (the daemon's side) against the
//! package's real helper script (image/files/ppp-link, which concentrator-ppp.service runs as root) with
//! a fake pppd. The test plays systemd's part: it starts the helper when a request appears, as
//! concentrator-ppp.path does.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use concentrator_uplink::modem::ppp_unit::{HelperState, PppUnit, PppUnitConfig};
use concentrator_uplink::modem::DataLink;

const HELPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../image/files/ppp-link");

struct Rig {
    dir: PathBuf,
    cfg: PppUnitConfig,
}

impl Rig {
    /// A directory with a fake pppd: it records its arguments, makes the interface (a directory with
    /// the kernel's `flags` file: first down, then up after IPCP), and on SIGTERM removes it and exits 5
    /// (as pppd does); with `hangup` it exits 16 by itself after 0.3 s.
    fn new(name: &str, hangup: bool) -> Rig {
        let dir =
            std::env::temp_dir().join(format!("uplink-ppp-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::create_dir_all(dir.join("helper")).unwrap();
        let iface = dir.join("ppp0");
        let body = if hangup {
            format!(
                "mkdir -p {i}; echo 0x1090 > {i}/flags; sleep 0.3; rm -rf {i}; exit 16",
                i = iface.display()
            )
        } else {
            format!(
                "mkdir -p {i}; echo 0x1090 > {i}/flags\ntrap 'rm -rf {i}; exit 5' TERM\n\
                 sleep 1.5; echo 0x1091 > {i}/flags\nwhile :; do sleep 0.05; done",
                i = iface.display()
            )
        };
        let pppd = dir.join("pppd");
        std::fs::write(
            &pppd,
            format!(
                "#!/bin/sh\necho \"$@\" >> {}\n{body}\n",
                dir.join("args").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&pppd, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cfg = PppUnitConfig::new("/dev/ttyS2", "meters.example");
        cfg.request = dir.join("run/ppp-request");
        cfg.state = dir.join("helper/state");
        cfg.interface = iface;
        cfg.dial_timeout = Duration::from_secs(5);
        Rig { dir, cfg }
    }

    /// The helper, as concentrator-ppp.service starts it.
    fn helper(&self) -> Child {
        let owner =
            String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
        Command::new("sh")
            .arg(HELPER)
            .env("PPP_LINK_REQUEST", &self.cfg.request)
            .env("PPP_LINK_STATE", &self.cfg.state)
            .env("PPP_LINK_PPPD", self.dir.join("pppd"))
            .env("PPP_LINK_IFACE", &self.cfg.interface)
            .env("PPP_LINK_OWNER", owner.trim())
            .spawn()
            .unwrap()
    }

    fn args(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("args"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn state(&self) -> HelperState {
        HelperState::parse(&std::fs::read_to_string(&self.cfg.state).unwrap_or_default())
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn exits(child: &mut Child) -> Option<i32> {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the helper did not exit");
}

#[test]
fn request_dial_redial_and_hang_up() {
    let rig = Rig::new("ok", false);
    let mut link = PppUnit::new(rig.cfg.clone());
    assert!(!link.is_up());
    assert!(!link.connecting());
    link.restart().unwrap();
    assert!(
        link.connecting(),
        "requested: dialling until the helper says otherwise"
    );
    let mut helper = rig.helper();
    wait_for("the interface", || rig.cfg.interface.exists());
    assert!(
        !link.is_up(),
        "the interface exists but is not up yet (IPCP)"
    );
    assert!(link.connecting());
    wait_for("the link to come up", || link.is_up());
    let first = rig.state().seq;
    assert_eq!(first, link.seq());
    let args = rig.args();
    assert_eq!(args.len(), 1);
    assert!(
        args[0].starts_with("/dev/ttyS2 115200 nodetach noauth"),
        "{}",
        args[0]
    );
    assert!(args[0].contains("maxfail 1"));
    assert!(args[0]
        .contains("connect /usr/sbin/chat -v -T meters.example -f /usr/lib/concentrator/ppp.chat"));
    // A new request: the same helper hangs up and dials again.
    link.restart().unwrap();
    wait_for("the second dial", || rig.args().len() == 2 && link.is_up());
    assert_eq!(rig.state().seq, first + 1);
    // Withdrawn: the helper hangs up and ends; the daemon's stop waits for it.
    link.stop();
    assert_eq!(exits(&mut helper), Some(0));
    assert_eq!(rig.state().state, "stopped");
    assert!(!rig.cfg.interface.exists(), "pppd was stopped");
    assert!(!link.is_up());
    let _ = std::fs::remove_dir_all(&rig.dir);
}

#[test]
fn a_dropped_link_is_reported_with_pppds_reason() {
    let rig = Rig::new("hangup", true);
    let mut link = PppUnit::new(rig.cfg.clone());
    link.restart().unwrap();
    let mut helper = rig.helper();
    assert_eq!(exits(&mut helper), Some(0));
    let s = rig.state();
    assert_eq!((s.state.as_str(), s.exit), ("exited", Some(16)));
    assert!(!link.is_up());
    assert!(
        !link.connecting(),
        "the helper ended: not dialling any more"
    );
    assert_eq!(
        link.problem().unwrap(),
        "pppd exited with code 16: the modem hung up"
    );
    let _ = std::fs::remove_dir_all(&rig.dir);
}

#[test]
fn the_helper_refuses_what_does_not_fit_its_patterns() {
    let rig = Rig::new("refused", false);
    let good = "SEQ=7\nDEVICE=/dev/ttyUSB3\nBAUD=115200\nAPN=meters.example\n";
    let bad = [
        good.replace("/dev/ttyUSB3", "/etc/shadow"),
        good.replace("/dev/ttyUSB3", "/dev/ttyUSB3 plugin /tmp/x.so"),
        good.replace("115200", "115200 plugin"),
        good.replace("meters.example", "x\" ABORT"),
        good.replace("meters.example", "a$(reboot)"),
        good.replace("SEQ=7", "SEQ=7;reboot"),
        good.replace("APN=meters.example\n", ""),
    ];
    for text in &bad {
        std::fs::write(&rig.cfg.request, text).unwrap();
        let mut helper = rig.helper();
        assert_eq!(exits(&mut helper), Some(1), "{text:?} was not refused");
        assert_eq!(rig.state().state, "refused", "{text:?}");
    }
    // A symbolic link is refused whatever it points at.
    let target = rig.dir.join("elsewhere");
    std::fs::write(&target, good).unwrap();
    std::fs::remove_file(&rig.cfg.request).unwrap();
    std::os::unix::fs::symlink(&target, &rig.cfg.request).unwrap();
    assert_eq!(exits(&mut rig.helper()), Some(1));
    assert!(rig.args().is_empty(), "pppd never ran: {:?}", rig.args());
    // No request at all: nothing to do.
    std::fs::remove_file(&rig.cfg.request).unwrap();
    assert_eq!(exits(&mut rig.helper()), Some(0));
    assert_eq!(rig.state().state, "stopped");
    let _ = std::fs::remove_dir_all(Path::new(&rig.dir));
}

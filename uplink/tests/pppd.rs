//! The PPP link against a fake pppd (a shell script): arguments, chat script, supervision, stop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use concentrator_uplink::link::{chat_script, LinkError, Pppd, PppdConfig};
use concentrator_uplink::modem::DataLink;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("uplink-pppd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fake_pppd(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("pppd");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn chat_script_and_apn_check() {
    let s = chat_script("meters.example").unwrap();
    assert!(s.contains("OK 'AT+CGDCONT=1,\"IP\",\"meters.example\"'\n"));
    assert!(s.contains("OK ATD*99#\nCONNECT ''\n"));
    assert!(s.starts_with("ABORT BUSY\n"));
    for bad in ["", "a'b", "x\nABORT", "a\"b", &"a".repeat(64)] {
        assert!(
            matches!(chat_script(bad), Err(LinkError::BadApn(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn supervises_a_fake_pppd() {
    let dir = temp_dir("ok");
    let marker = dir.join("ppp0");
    let args = dir.join("args");
    let pppd = fake_pppd(
        &dir,
        &format!("echo \"$@\" > {a}\ntouch {m}\ntrap 'rm -f {m}; exit 0' TERM\nwhile :; do sleep 0.05; done", a = args.display(), m = marker.display()),
    );
    let mut cfg = PppdConfig::new("/dev/ttyUSB3", "meters.example");
    cfg.pppd = pppd;
    cfg.run_dir = dir.clone();
    cfg.up_marker = marker.clone();
    let mut link = Pppd::new(cfg);
    assert!(!link.is_up());
    link.restart().unwrap();
    assert!(wait_for(|| link.is_up()));
    let a = std::fs::read_to_string(&args).unwrap();
    assert!(
        a.starts_with("/dev/ttyUSB3 115200 nodetach noauth defaultroute"),
        "{a}"
    );
    assert!(a.contains(&format!(
        "connect /usr/sbin/chat -v -f {}",
        dir.join("chat-uplink").display()
    )));
    assert!(std::fs::read_to_string(dir.join("chat-uplink"))
        .unwrap()
        .contains("meters.example"));
    link.stop();
    assert!(!marker.exists(), "SIGTERM reached pppd");
    assert!(!link.is_up());
    link.restart().unwrap();
    assert_eq!(link.starts(), 2);
    assert!(wait_for(|| link.is_up()));
}

#[test]
fn a_pppd_that_dies_is_seen_down() {
    let dir = temp_dir("dies");
    let mut cfg = PppdConfig::new("/dev/ttyUSB3", "internet");
    cfg.pppd = fake_pppd(&dir, "exit 16");
    cfg.run_dir = dir.clone();
    cfg.up_marker = dir.clone(); // exists, but pppd is gone
    let mut link = Pppd::new(cfg);
    link.restart().unwrap();
    assert!(wait_for(|| !link.running()));
    assert!(!link.is_up());

    let mut cfg = PppdConfig::new("/dev/ttyUSB3", "internet");
    cfg.pppd = dir.join("missing-pppd");
    cfg.run_dir = dir;
    let err = Pppd::new(cfg).start().unwrap_err();
    assert!(err.to_string().contains("starting pppd"), "{err}");
}

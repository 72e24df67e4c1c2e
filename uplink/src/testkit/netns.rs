//! A network namespace joined to this one by a veth pair, so a test can cut the link between the
//! gateway and the broker (link down, then up) while both run on this machine. Everything it makes is
//! removed when it is dropped. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); where the machine refuses
//! namespaces, [`LinkCut::create`] says why and the test fails with that reason (or skips visibly with
//! `CONCENTRATOR_ALLOW_SKIP=1`).

use std::process::Command;

/// The broker's address on the host side of the veth pair; the gateway reaches it from the namespace.
pub const HOST_ADDR: &str = "10.251.0.1";
/// The gateway's address inside the namespace.
pub const NS_ADDR: &str = "10.251.0.2";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A namespace with the gateway's end of a veth pair.
#[derive(Debug)]
pub struct LinkCut {
    pub namespace: String,
    pub host_side: String,
}

impl LinkCut {
    /// Makes the namespace and the link (`HOST_ADDR` here, `NS_ADDR` there), both up.
    pub fn create() -> Result<LinkCut, String> {
        let id = std::process::id() % 100_000;
        let cut = LinkCut {
            namespace: format!("cgw-{id}"),
            host_side: format!("cgwh{id}"),
        };
        let ns_side = format!("cgwn{id}");
        ip(&["netns", "add", &cut.namespace])?;
        ip(&[
            "link",
            "add",
            &cut.host_side,
            "type",
            "veth",
            "peer",
            "name",
            &ns_side,
        ])?;
        ip(&["link", "set", &ns_side, "netns", &cut.namespace])?;
        ip(&[
            "addr",
            "add",
            &format!("{HOST_ADDR}/30"),
            "dev",
            &cut.host_side,
        ])?;
        ip(&["link", "set", &cut.host_side, "up"])?;
        ip(&[
            "-n",
            &cut.namespace,
            "addr",
            "add",
            &format!("{NS_ADDR}/30"),
            "dev",
            &ns_side,
        ])?;
        ip(&["-n", &cut.namespace, "link", "set", &ns_side, "up"])?;
        ip(&["-n", &cut.namespace, "link", "set", "lo", "up"])?;
        Ok(cut)
    }

    /// Cuts the link (the host side goes down: the gateway's packets go nowhere).
    pub fn down(&self) {
        ip(&["link", "set", &self.host_side, "down"]).unwrap();
    }

    /// Restores the link.
    pub fn up(&self) {
        ip(&["link", "set", &self.host_side, "up"]).unwrap();
    }
}

/// Moves the calling thread into the network namespace `namespace`; threads it starts afterwards are
/// in it too (a thread inherits its creator's namespaces).
pub fn enter(namespace: &str) {
    {
        let path = format!("/run/netns/{namespace}");
        let file = std::fs::File::open(&path).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace file we hold open; affects only the calling thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
    }
}

impl Drop for LinkCut {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_side]);
        let _ = ip(&["netns", "del", &self.namespace]);
    }
}

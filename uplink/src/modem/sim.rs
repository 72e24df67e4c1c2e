//! A simulated 3G modem: an AT responder with injectable faults, served in-process on a
//! [`SimStreamPeer`] or to anything that opens a pseudo-terminal's slave side.
//!
//! ```
//! use std::sync::Arc;
//! use concentrator_hal::sim::SimStream;
//! use concentrator_hal::SystemClock;
//! use concentrator_uplink::modem::{sim::SimModem, AtPort};
//! use std::time::Duration;
//!
//! let (stream, peer) = SimStream::pair("modem");
//! let modem = SimModem::new();
//! modem.serve(peer);
//! let mut port = AtPort::new(stream, Arc::new(SystemClock::new()));
//! let lines = port.command("AT+CSQ", Duration::from_secs(1)).unwrap().unwrap();
//! assert_eq!(lines, ["+CSQ: 17,99"]);
//! ```

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use concentrator_hal::sim::{SimPin, SimStreamPeer};

/// What is wrong with the simulated modem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModemFault {
    /// No SIM: `+CME ERROR: SIM not inserted`.
    NoSim,
    /// The SIM wants this PIN (a wrong one is refused).
    PinRequired(String),
    /// Searching, never registers.
    NotRegistered,
    /// Registration denied.
    Denied,
    /// Signal at CSQ 2 (−109 dBm).
    WeakSignal,
    /// Answers nothing at all.
    Silent,
    /// Answers every command with noise and no final result.
    Garbage,
}

/// What clears a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cure {
    /// `AT+COPS=0` (re-registration).
    Reregister,
    /// `AT+CFUN=1,1` (modem reset) or a power cycle.
    Reset,
    /// Only a power-key pulse.
    PowerCycle,
    /// Nothing.
    Never,
}

/// What the simulated modem saw, for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimModemStats {
    /// Commands received (including ignored ones).
    pub commands: Vec<String>,
    /// `AT+CFUN=1,1` resets.
    pub resets: u32,
    /// Power-key pulses seen.
    pub power_cycles: u32,
}

/// A message the simulated modem sent (`AT+CMGS`), for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentSms {
    /// The number it went to.
    pub to: String,
    /// Its text.
    pub text: String,
}

/// The SMS side of the simulated modem: text mode only (`AT+CMGF=1`), memory `SM`.
#[derive(Debug, Default)]
struct Sms {
    text_mode: bool,
    /// The number of a message being typed after the `> ` prompt, and its text so far.
    composing: Option<(String, Vec<u8>)>,
    inbox: std::collections::BTreeMap<u32, (String, String)>,
    sent: Vec<SentSms>,
    next_ref: u32,
    /// Unsolicited result codes waiting to go out (`+CMTI`).
    urcs: Vec<String>,
}

#[derive(Debug)]
struct State {
    fault: Option<(ModemFault, Cure)>,
    pin_ok: bool,
    echo: bool,
    apn: Option<String>,
    power_key: Option<(SimPin, u32)>,
    stats: SimModemStats,
    sms: Sms,
}

/// A simulated modem, shared by cloning: the serving thread holds one clone, the test another.
#[derive(Debug, Clone)]
pub struct SimModem {
    state: Arc<Mutex<State>>,
}

impl Default for SimModem {
    fn default() -> Self {
        Self::new()
    }
}

impl SimModem {
    /// A healthy modem: SIM ready, registered at home on UTRAN, CSQ 17 (−79 dBm), echo on.
    pub fn new() -> Self {
        SimModem {
            state: Arc::new(Mutex::new(State {
                fault: None,
                pin_ok: false,
                echo: true,
                apn: None,
                power_key: None,
                stats: SimModemStats::default(),
                sms: Sms::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Injects a fault, cleared by `cure`.
    pub fn set_fault(&self, fault: ModemFault, cure: Cure) {
        let mut s = self.lock();
        s.fault = Some((fault, cure));
        s.pin_ok = false;
    }

    /// Clears any fault.
    pub fn clear_fault(&self) {
        self.lock().fault = None;
    }

    /// Watches `pin` as the modem's power key: a high-then-low pulse power-cycles the modem.
    pub fn attach_power_key(&self, pin: SimPin) {
        let edges = pin.edges();
        self.lock().power_key = Some((pin, edges));
    }

    /// What it saw.
    pub fn stats(&self) -> SimModemStats {
        self.lock().stats.clone()
    }

    /// A text message arrives from `from`: stored in the first free slot of memory `SM` and announced
    /// with `+CMTI: "SM",<slot>` (at once on an in-process stream; on a pty before the next answer).
    /// Returns the slot.
    pub fn deliver_sms(&self, from: &str, text: &str) -> u32 {
        let mut s = self.lock();
        let slot = (1..).find(|i| !s.sms.inbox.contains_key(i)).unwrap_or(1);
        s.sms
            .inbox
            .insert(slot, (from.to_string(), text.to_string()));
        s.sms.urcs.push(format!("\r\n+CMTI: \"SM\",{slot}\r\n"));
        slot
    }

    /// A message that is already in the SIM's memory, without `+CMTI` (it arrived while the host was
    /// not listening). Returns the slot.
    pub fn store_sms(&self, from: &str, text: &str) -> u32 {
        let mut s = self.lock();
        let slot = (1..).find(|i| !s.sms.inbox.contains_key(i)).unwrap_or(1);
        s.sms
            .inbox
            .insert(slot, (from.to_string(), text.to_string()));
        slot
    }

    /// The messages sent so far.
    pub fn sent_sms(&self) -> Vec<SentSms> {
        self.lock().sms.sent.clone()
    }

    /// Messages still stored in the SIM's memory (not yet deleted with `AT+CMGD`).
    pub fn stored_sms(&self) -> usize {
        self.lock().sms.inbox.len()
    }

    fn take_urcs(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().sms.urcs)
    }

    /// The APN set with AT+CGDCONT.
    pub fn apn(&self) -> Option<String> {
        self.lock().apn.clone()
    }

    /// Serves on the emulator's end of a [`concentrator_hal::sim::SimStream`], on a new thread, until the
    /// host's end is dropped.
    pub fn serve(&self, mut peer: SimStreamPeer) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        std::thread::spawn(move || {
            let mut line = Vec::new();
            let mut buf = [0u8; 256];
            while let Some(n) = peer.recv(&mut buf, Duration::from_millis(50)) {
                if n == 0 {
                    for urc in me.take_urcs() {
                        if !peer.send(urc.as_bytes()) {
                            return;
                        }
                    }
                }
                for out in me.input(&buf[..n], &mut line) {
                    if !peer.send(&out) {
                        return;
                    }
                }
            }
        })
    }

    /// Serves on a pseudo-terminal's slave side (`PtyPair::slave_path`), on a new thread, until it closes.
    pub fn serve_path(&self, path: &Path) -> std::io::Result<std::thread::JoinHandle<()>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        self.serve_file(file)
    }

    /// Serves on an open terminal: a pseudo-terminal's master (`PtyPair::master`) when the program under
    /// test opens the slave side as its modem port. On a new thread, until it closes.
    pub fn serve_file(
        &self,
        mut file: std::fs::File,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        // Answers and unsolicited codes (`+CMTI`) share the writing side; a second thread sends the
        // codes while the host sends nothing.
        let writer = Arc::new(Mutex::new(file.try_clone()?));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (me, writer, done) = (self.clone(), Arc::clone(&writer), Arc::clone(&done));
            std::thread::spawn(move || {
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                    let urcs = me.take_urcs();
                    if urcs.is_empty() {
                        continue;
                    }
                    let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
                    if urcs.iter().any(|u| w.write_all(u.as_bytes()).is_err()) {
                        return;
                    }
                }
            });
        }
        Ok(std::thread::spawn(move || {
            let mut line = Vec::new();
            let mut buf = [0u8; 256];
            while let Ok(n) = file.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let outs = me.input(&buf[..n], &mut line);
                let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
                if outs.iter().any(|out| w.write_all(out).is_err()) {
                    break;
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        }))
    }

    /// Octets from the host; returns what to send back.
    fn input(&self, bytes: &[u8], line: &mut Vec<u8>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for &b in bytes {
            if let Some(reply) = self.compose(b) {
                if !reply.is_empty() {
                    out.push(reply.into_bytes());
                }
                continue;
            }
            if b == b'\r' || b == b'\n' {
                if !line.is_empty() {
                    let cmd = String::from_utf8_lossy(line).trim().to_string();
                    line.clear();
                    if let Some(reply) = self.command(&cmd) {
                        out.push(reply.into_bytes());
                    }
                }
            } else if line.len() < 1024 {
                line.push(b);
            }
        }
        out
    }

    /// One octet of a message being typed after the `> ` prompt: `Some` (the answer, maybe empty) when
    /// one is being typed, `None` otherwise. Ctrl-Z sends it, Esc cancels it.
    fn compose(&self, b: u8) -> Option<String> {
        let mut s = self.lock();
        let (to, text) = s.sms.composing.as_mut()?;
        match b {
            0x1a => {
                let sent = SentSms {
                    to: to.clone(),
                    text: String::from_utf8_lossy(text).into_owned(),
                };
                s.sms.composing = None;
                s.sms.sent.push(sent);
                s.sms.next_ref = (s.sms.next_ref + 1) % 256;
                Some(format!("\r\n+CMGS: {}\r\n\r\nOK\r\n", s.sms.next_ref))
            }
            0x1b => {
                s.sms.composing = None;
                Some("\r\nOK\r\n".into())
            }
            _ => {
                if text.len() < 1024 {
                    text.push(b);
                }
                Some(String::new())
            }
        }
    }

    fn command(&self, cmd: &str) -> Option<String> {
        let mut s = self.lock();
        s.stats.commands.push(cmd.to_string());
        // A power-key pulse since the last command power-cycles the modem.
        if let Some((pin, seen)) = s.power_key.as_mut() {
            let edges = pin.edges();
            if edges >= *seen + 2 {
                *seen = edges;
                s.stats.power_cycles += 1;
                s.echo = true;
                s.pin_ok = false;
                if s.fault.as_ref().is_some_and(|(_, c)| *c != Cure::Never) {
                    s.fault = None;
                }
            }
        }
        let fault = s.fault.clone();
        // A hung modem's reset still works when its cure is a reset; only its answers are lost.
        let resetting = cmd.eq_ignore_ascii_case("AT+CFUN=1,1")
            && fault.as_ref().is_some_and(|(_, c)| *c == Cure::Reset);
        match fault.as_ref().map(|(f, _)| f).filter(|_| !resetting) {
            Some(ModemFault::Silent) => return None,
            Some(ModemFault::Garbage) => {
                return Some("\u{1}\u{7f}+C#%\r\n\u{fe}garbage\r\n".into())
            }
            _ => {}
        }
        let echo = if s.echo {
            format!("{cmd}\r")
        } else {
            String::new()
        };
        let reply = self.answer(&mut s, cmd, fault.as_ref().map(|(f, c)| (f, *c)));
        let urcs: String = std::mem::take(&mut s.sms.urcs).concat();
        Some(format!("{urcs}{echo}{reply}"))
    }

    fn answer(&self, s: &mut State, cmd: &str, fault: Option<(&ModemFault, Cure)>) -> String {
        const OK: &str = "\r\nOK\r\n";
        let upper = cmd.to_ascii_uppercase();
        let no_sim = matches!(fault, Some((ModemFault::NoSim, _)));
        let pin_needed = match fault {
            Some((ModemFault::PinRequired(_), _)) => !s.pin_ok,
            _ => false,
        };
        let sim_err = || "\r\n+CME ERROR: SIM not inserted\r\n".to_string();
        let pin_err = || "\r\n+CME ERROR: SIM PIN required\r\n".to_string();
        let reg_stat = match fault {
            Some((ModemFault::NotRegistered, _)) => 2,
            Some((ModemFault::Denied, _)) => 3,
            _ if no_sim || pin_needed => 0,
            _ => 1,
        };
        match upper.as_str() {
            "AT" => OK.into(),
            "ATE0" => {
                s.echo = false;
                OK.into()
            }
            "AT+CMEE=2" => OK.into(),
            "AT+CPIN?" if no_sim => sim_err(),
            "AT+CPIN?" if pin_needed => "\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n".into(),
            "AT+CPIN?" => "\r\n+CPIN: READY\r\n\r\nOK\r\n".into(),
            _ if upper.starts_with("AT+CPIN=") => {
                let given = cmd[8..].trim_matches('"');
                match fault {
                    Some((ModemFault::PinRequired(pin), _)) if pin == given => {
                        s.pin_ok = true;
                        OK.into()
                    }
                    Some((ModemFault::PinRequired(_), _)) => {
                        "\r\n+CME ERROR: incorrect password\r\n".into()
                    }
                    _ => "\r\n+CME ERROR: operation not allowed\r\n".into(),
                }
            }
            "AT+CCID" if no_sim => sim_err(),
            "AT+CCID" => "\r\n+CCID: 89490200001234567890\r\n\r\nOK\r\n".into(),
            "AT+CIMI" if no_sim => sim_err(),
            "AT+CIMI" if pin_needed => pin_err(),
            "AT+CIMI" => "\r\n001010123456789\r\n\r\nOK\r\n".into(),
            _ if upper.starts_with("AT+CGDCONT=") => {
                s.apn = cmd
                    .rsplit(',')
                    .next()
                    .map(|a| a.trim_matches('"').to_string());
                OK.into()
            }
            "AT+CREG?" | "AT+CGREG?" => format!(
                "\r\n{}: 0,{reg_stat}\r\n\r\nOK\r\n",
                &upper[2..upper.len() - 1]
            ),
            "AT+CEREG?" => "\r\nERROR\r\n".into(), // a 3G modem
            "AT+CSQ" => {
                let v = if matches!(fault, Some((ModemFault::WeakSignal, _))) {
                    2
                } else {
                    17
                };
                format!("\r\n+CSQ: {v},99\r\n\r\nOK\r\n")
            }
            "AT+CTZU=1" => OK.into(),
            // The network's time (NITZ) once registered, in the network's zone (UTC+2 here, `+08`
            // quarter hours); before, the power-on default that means "no network time".
            "AT+CCLK?" if reg_stat == 1 => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                format!("\r\n{}\r\n\r\nOK\r\n", cclk_line(now + 2 * 3600, "+08"))
            }
            "AT+CCLK?" => "\r\n+CCLK: \"80/01/06,00:00:00+00\"\r\n\r\nOK\r\n".into(),
            "AT+COPS?" if reg_stat == 1 => "\r\n+COPS: 0,0,\"Example Net\",2\r\n\r\nOK\r\n".into(),
            "AT+COPS?" => "\r\n+COPS: 0\r\n\r\nOK\r\n".into(),
            "AT+COPS=0" => {
                if fault.is_some_and(|(_, c)| c == Cure::Reregister) {
                    s.fault = None;
                }
                OK.into()
            }
            "AT+CFUN=1,1" => {
                s.stats.resets += 1;
                s.echo = true;
                s.pin_ok = false;
                if fault.is_some_and(|(_, c)| matches!(c, Cure::Reregister | Cure::Reset)) {
                    s.fault = None;
                }
                format!("{OK}\r\nRDY\r\n")
            }
            _ if upper.starts_with("ATD") => "\r\nCONNECT 7200000\r\n".into(),
            "AT+CMGF=1" | "AT+CMGF=0" => {
                s.sms.text_mode = upper.ends_with('1');
                OK.into()
            }
            _ if upper.starts_with("AT+CSCS=") => OK.into(),
            _ if upper.starts_with("AT+CMGS=") => {
                if !s.sms.text_mode {
                    // Only text mode is simulated: a PDU would need a length, not a number.
                    return "\r\n+CMS ERROR: operation not supported\r\n".into();
                }
                if reg_stat != 1 {
                    return "\r\n+CMS ERROR: no network service\r\n".into();
                }
                let to = cmd[8..].trim().trim_matches('"').to_string();
                s.sms.composing = Some((to, Vec::new()));
                "\r\n> ".into()
            }
            _ if upper.starts_with("AT+CMGR=") => {
                let slot: Option<u32> = cmd[8..].trim().parse().ok();
                match slot.and_then(|i| s.sms.inbox.get(&i)) {
                    Some((from, text)) if s.sms.text_mode => format!(
                        "\r\n+CMGR: \"REC UNREAD\",\"{from}\",,\"26/12/06,20:00:00+08\"\r\n{text}\r\n\r\nOK\r\n"
                    ),
                    Some(_) => "\r\n+CMS ERROR: operation not supported\r\n".into(),
                    None => "\r\n+CMS ERROR: invalid memory index\r\n".into(),
                }
            }
            _ if upper.starts_with("AT+CMGL") => {
                if !s.sms.text_mode {
                    return "\r\n+CMS ERROR: operation not supported\r\n".into();
                }
                let mut out = String::new();
                for (i, (from, text)) in &s.sms.inbox {
                    out.push_str(&format!(
                        "\r\n+CMGL: {i},\"REC UNREAD\",\"{from}\",,\"26/12/06,20:00:00+08\"\r\n{text}"
                    ));
                }
                format!("{out}\r\n\r\nOK\r\n")
            }
            _ if upper.starts_with("AT+CMGD=") => {
                if let Ok(i) = cmd[8..].trim().parse::<u32>() {
                    s.sms.inbox.remove(&i);
                }
                OK.into()
            }
            _ => "\r\nERROR\r\n".into(),
        }
    }
}

/// `+CCLK: "yy/MM/dd,hh:mm:ss±zz"` for local time `local` (Unix seconds shifted by the zone).
fn cclk_line(local: u64, zone: &str) -> String {
    let days = i64::try_from(local / 86_400).unwrap_or(0);
    let secs = local % 86_400;
    // Civil date from days since 1970-01-01 (March-based years).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "+CCLK: \"{:02}/{month:02}/{day:02},{:02}:{:02}:{:02}{zone}\"",
        year % 100,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_time_reads_back_as_utc() {
        let utc = 1_777_638_896; // 2026-05-01 12:34:56 UTC
        let line = cclk_line(utc + 2 * 3600, "+08");
        assert_eq!(line, "+CCLK: \"26/05/01,14:34:56+08\"");
        assert_eq!(super::super::parse::cclk(&line), Some(utc));
    }
}

//! A sans-IO AT command engine: a queue of commands, one in flight at a time, with its deadline; bytes
//! from the modem are split into lines and sorted into the in-flight command's information lines, its
//! final result, and unsolicited result codes (URCs). Time is passed in; the engine does no I/O.

use std::collections::VecDeque;
use std::time::Duration;

/// Longest line kept; the rest of a longer line (garbage, a stuck modem) is dropped.
pub const MAX_LINE: usize = 512;

/// One command to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtCommand {
    /// The command without the trailing CR, e.g. `AT+CSQ`.
    pub text: String,
    /// How long the modem may take to give the final result.
    pub timeout: Duration,
    /// Text sent after the modem's `> ` prompt and ended with Ctrl-Z (`AT+CMGS` in text mode).
    pub payload: Option<Vec<u8>>,
}

impl AtCommand {
    /// A command with a timeout.
    pub fn new(text: impl Into<String>, timeout: Duration) -> Self {
        AtCommand {
            text: text.into(),
            timeout,
            payload: None,
        }
    }

    /// A command that the modem answers with the `> ` prompt, then takes `payload` ended by Ctrl-Z
    /// (0x1A): `AT+CMGS="+49..."` and the message text.
    pub fn with_payload(text: impl Into<String>, payload: &[u8], timeout: Duration) -> Self {
        AtCommand {
            text: text.into(),
            timeout,
            payload: Some(payload.to_vec()),
        }
    }

    /// The prefix of this command's information lines: `+CSQ` for `AT+CSQ`, `+CPIN` for `AT+CPIN?`.
    fn info_prefix(&self) -> Option<String> {
        let body = self.text.get(2..)?;
        if !body.starts_with('+') {
            return None;
        }
        let end = body.find(['?', '=']).unwrap_or(body.len());
        Some(format!("{}:", &body[..end]))
    }
}

/// How a command ended when it did not end with `OK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtFailure {
    /// `ERROR`.
    Error,
    /// `+CME ERROR: n` (equipment) or `+CMS ERROR: n`, with the text after the colon.
    Cme(String),
    /// No final result within the timeout.
    Timeout,
    /// `NO CARRIER`, `BUSY`, `NO DIALTONE` or `NO ANSWER`.
    Call(String),
}

impl std::fmt::Display for AtFailure {
    /// In words, for the status and the log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AtFailure::Error => f.write_str("it answered ERROR"),
            AtFailure::Cme(text) => write!(f, "it answered +CME ERROR: {text}"),
            AtFailure::Timeout => f.write_str("no answer within the command timeout"),
            AtFailure::Call(text) => write!(f, "it answered {text}"),
        }
    }
}

/// What the engine has to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtEvent {
    /// A command finished: its information lines on success (`OK` or `CONNECT`), or why not.
    Done {
        /// The command.
        command: AtCommand,
        /// Information lines, or the failure.
        result: Result<Vec<String>, AtFailure>,
    },
    /// An unsolicited result code (e.g. `+CREG: 5`, `RING`, `RDY`).
    Urc(String),
}

#[derive(Debug)]
struct InFlight {
    command: AtCommand,
    deadline: Duration,
    lines: Vec<String>,
    /// The payload still waiting for the `> ` prompt.
    payload: Option<Vec<u8>>,
}

/// The engine.
#[derive(Debug, Default)]
pub struct AtEngine {
    queue: VecDeque<AtCommand>,
    in_flight: Option<InFlight>,
    partial: Vec<u8>,
    overlong: bool,
    events: VecDeque<AtEvent>,
    /// A payload to write now (its prompt arrived).
    prompt_out: Option<Vec<u8>>,
}

impl AtEngine {
    /// An idle engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a command.
    pub fn submit(&mut self, command: AtCommand) {
        self.queue.push_back(command);
    }

    /// Whether a command is in flight or queued.
    pub fn busy(&self) -> bool {
        self.in_flight.is_some() || !self.queue.is_empty()
    }

    /// Drops every queued and in-flight command and any partial line (after a modem reset).
    pub fn reset(&mut self) {
        self.queue.clear();
        self.in_flight = None;
        self.partial.clear();
        self.overlong = false;
        self.prompt_out = None;
    }

    /// The octets to write now, if a command can start: it is then in flight until `now + timeout`.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<Vec<u8>> {
        if let Some(out) = self.prompt_out.take() {
            return Some(out);
        }
        if self.in_flight.is_some() {
            return None;
        }
        let command = self.queue.pop_front()?;
        let mut out = command.text.clone().into_bytes();
        out.push(b'\r');
        self.in_flight = Some(InFlight {
            deadline: now + command.timeout,
            payload: command.payload.clone(),
            command,
            lines: Vec::new(),
        });
        Some(out)
    }

    /// When the in-flight command times out.
    pub fn deadline(&self) -> Option<Duration> {
        self.in_flight.as_ref().map(|f| f.deadline)
    }

    /// Octets from the modem.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\r' | b'\n' => {
                    let line = std::mem::take(&mut self.partial);
                    self.overlong = false;
                    if !line.is_empty() {
                        self.line(String::from_utf8_lossy(&line).trim().to_string());
                    }
                }
                _ if self.partial.len() >= MAX_LINE => self.overlong = true,
                _ => {
                    self.partial.push(b);
                    self.prompt();
                }
            }
        }
    }

    /// The `> ` prompt of a command with a payload: the payload and Ctrl-Z go out next.
    fn prompt(&mut self) {
        if self.partial.as_slice() != b"> " {
            return;
        }
        if let Some(payload) = self.in_flight.as_mut().and_then(|f| f.payload.take()) {
            self.partial.clear();
            let mut out = payload;
            out.push(0x1a);
            self.prompt_out = Some(out);
        }
    }

    /// Checks the in-flight command's deadline.
    pub fn tick(&mut self, now: Duration) {
        if self.in_flight.as_ref().is_some_and(|f| now >= f.deadline) {
            self.finish(Err(AtFailure::Timeout));
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<AtEvent> {
        self.events.pop_front()
    }

    fn finish(&mut self, result: Result<(), AtFailure>) {
        if let Some(f) = self.in_flight.take() {
            self.events.push_back(AtEvent::Done {
                command: f.command,
                result: result.map(|()| f.lines),
            });
        }
    }

    fn line(&mut self, line: String) {
        if line.is_empty() {
            return;
        }
        let Some(f) = self.in_flight.as_mut() else {
            self.events.push_back(AtEvent::Urc(line));
            return;
        };
        if line.eq_ignore_ascii_case(&f.command.text) {
            return; // echo (before ATE0 took effect)
        }
        match line.as_str() {
            "OK" => return self.finish(Ok(())),
            "ERROR" => return self.finish(Err(AtFailure::Error)),
            "NO CARRIER" | "BUSY" | "NO DIALTONE" | "NO ANSWER" => {
                return self.finish(Err(AtFailure::Call(line)))
            }
            _ => {}
        }
        if line.starts_with("CONNECT") {
            f.lines.push(line);
            return self.finish(Ok(()));
        }
        if let Some(rest) = line
            .strip_prefix("+CME ERROR:")
            .or_else(|| line.strip_prefix("+CMS ERROR:"))
        {
            let text = rest.trim().to_string();
            return self.finish(Err(AtFailure::Cme(text)));
        }
        // The text of a message read with AT+CMGR (or listed with AT+CMGL) follows its header line,
        // whatever it starts with.
        let upper = f.command.text.to_ascii_uppercase();
        let body = (upper.starts_with("AT+CMGR") || upper.starts_with("AT+CMGL"))
            && !f.lines.is_empty()
            && !line.starts_with("+CMTI:");
        let is_info =
            body || match f.command.info_prefix() {
                Some(p) => line.starts_with(&p),
                // Commands without a prefix (AT+CIMI answers bare digits, ATI bare text) take any line that
                // does not look like a URC.
                None => false,
            } || (!line.starts_with('+') && !is_bare_urc(&line));
        if is_info {
            f.lines.push(line);
        } else {
            self.events.push_back(AtEvent::Urc(line));
        }
    }
}

fn is_bare_urc(line: &str) -> bool {
    matches!(line, "RING" | "RDY" | "READY" | "PB DONE" | "SMS DONE") || line.starts_with('^')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn run(engine: &mut AtEngine, cmd: &str, reply: &[u8]) -> Vec<AtEvent> {
        engine.submit(AtCommand::new(cmd, ms(100)));
        assert_eq!(
            engine.poll_transmit(ms(0)).unwrap(),
            format!("{cmd}\r").into_bytes()
        );
        engine.feed(reply);
        std::iter::from_fn(|| engine.poll_event()).collect()
    }

    #[test]
    fn info_lines_urcs_and_echo_are_sorted() {
        let mut e = AtEngine::new();
        let ev = run(
            &mut e,
            "AT+CSQ",
            b"AT+CSQ\r\r\n+CREG: 5\r\n+CSQ: 17,99\r\nRING\r\n\r\nOK\r\n",
        );
        assert_eq!(
            ev,
            vec![
                AtEvent::Urc("+CREG: 5".into()),
                AtEvent::Urc("RING".into()),
                AtEvent::Done {
                    command: AtCommand::new("AT+CSQ", ms(100)),
                    result: Ok(vec!["+CSQ: 17,99".into()])
                },
            ]
        );
    }

    #[test]
    fn bare_answers_errors_and_split_input() {
        let mut e = AtEngine::new();
        e.submit(AtCommand::new("AT+CIMI", ms(100)));
        e.poll_transmit(ms(0)).unwrap();
        for b in b"\r\n001010123456789\r\n\r\nOK\r\n" {
            e.feed(&[*b]);
        }
        assert!(
            matches!(e.poll_event(), Some(AtEvent::Done { result: Ok(l), .. }) if l == ["001010123456789"])
        );
        let ev = run(&mut e, "AT+CPIN?", b"\r\n+CME ERROR: SIM not inserted\r\n");
        assert!(
            matches!(&ev[0], AtEvent::Done { result: Err(AtFailure::Cme(t)), .. } if t == "SIM not inserted")
        );
        let ev = run(&mut e, "ATD*99#", b"\r\nNO CARRIER\r\n");
        assert!(matches!(
            &ev[0],
            AtEvent::Done {
                result: Err(AtFailure::Call(_)),
                ..
            }
        ));
    }

    #[test]
    fn timeout_garbage_and_queue() {
        let mut e = AtEngine::new();
        e.submit(AtCommand::new("AT", ms(100)));
        e.submit(AtCommand::new("AT+CSQ", ms(100)));
        assert!(e.poll_transmit(ms(0)).is_some());
        assert!(e.poll_transmit(ms(1)).is_none(), "one in flight at a time");
        e.feed(&[0xff; 2000]);
        e.feed(&[0x00, 0xfe, b'\n']);
        e.tick(ms(99));
        assert!(matches!(
            e.poll_event(),
            Some(AtEvent::Done { result: Ok(_), .. }) | None
        ));
        e.tick(ms(100));
        let mut timed_out = false;
        while let Some(ev) = e.poll_event() {
            if let AtEvent::Done {
                result: Err(AtFailure::Timeout),
                ..
            } = ev
            {
                timed_out = true;
            }
        }
        assert!(timed_out);
        assert_eq!(e.poll_transmit(ms(100)).unwrap(), b"AT+CSQ\r");
    }
}

//! Parsers for the information lines of the 3GPP TS 27.007 commands the supervisor uses. Each returns
//! `None` for a line it cannot read; none panics.

/// SIM state from `+CPIN:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimState {
    /// `READY`.
    Ready,
    /// `SIM PIN`: the PIN is needed.
    PinRequired,
    /// `SIM PUK`: the SIM is blocked; someone must enter the PUK.
    PukRequired,
    /// Anything else (e.g. `PH-SIM PIN`).
    Other(String),
}

/// `+CPIN: READY`.
pub fn cpin(line: &str) -> Option<SimState> {
    let v = line.strip_prefix("+CPIN:")?.trim();
    Some(match v {
        "READY" => SimState::Ready,
        "SIM PIN" => SimState::PinRequired,
        "SIM PUK" => SimState::PukRequired,
        other => SimState::Other(other.to_string()),
    })
}

/// Network registration status (`<stat>` of +CREG/+CGREG/+CEREG).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// 0: not registered, not searching.
    Idle,
    /// 1: registered, home network.
    Home,
    /// 2: not registered, searching.
    Searching,
    /// 3: registration denied.
    Denied,
    /// 4: unknown.
    Unknown,
    /// 5: registered, roaming.
    Roaming,
}

impl Registration {
    /// Registered (home or roaming).
    pub fn registered(self) -> bool {
        matches!(self, Registration::Home | Registration::Roaming)
    }
}

/// `+CREG: <n>,<stat>[,...]` (a read answer) or `+CREG: <stat>[,...]` (a URC); also +CGREG, +CEREG.
pub fn registration(line: &str) -> Option<Registration> {
    let (_, rest) = line.split_once(':')?;
    if !matches!(line.get(..6), Some("+CREG:"))
        && !matches!(line.get(..7), Some("+CGREG:" | "+CEREG:"))
    {
        return None;
    }
    let fields: Vec<&str> = rest.split(',').map(str::trim).collect();
    // A read answer has <n> first; a URC starts with <stat>. The read answer's second field is a stat
    // number; a URC's second field (if any) is a quoted LAC.
    let stat = match fields.as_slice() {
        [_, s, ..] if !s.starts_with('"') => s,
        [s, ..] => s,
        [] => return None,
    };
    Some(match stat.parse::<u8>().ok()? {
        0 => Registration::Idle,
        1 => Registration::Home,
        2 => Registration::Searching,
        3 => Registration::Denied,
        5 => Registration::Roaming,
        _ => Registration::Unknown,
    })
}

/// `+CSQ: <rssi>,<ber>` to dBm (TS 27.007: 0 is −113 dBm or less, 31 is −51 or more, 2 dB a step);
/// `None` for 99 (not known) or an unreadable line.
pub fn csq_dbm(line: &str) -> Option<i16> {
    let rssi: i16 = line
        .strip_prefix("+CSQ:")?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()?;
    (0..=31).contains(&rssi).then(|| -113 + 2 * rssi)
}

/// `+COPS: <mode>[,<format>,"<oper>"[,<AcT>]]`: operator name and access technology.
pub fn cops(line: &str) -> Option<(String, Option<&'static str>)> {
    let rest = line.strip_prefix("+COPS:")?;
    let mut fields = rest.split(',').map(str::trim);
    let _mode = fields.next()?;
    let _format = fields.next()?;
    let oper = fields.next()?.trim_matches('"').to_string();
    let act = fields
        .next()
        .and_then(|a| a.parse::<u8>().ok())
        .map(|a| match a {
            0 | 1 | 3 => "GSM",
            2 | 4 | 5 | 6 => "UTRAN",
            7 => "E-UTRAN",
            _ => "other",
        });
    Some((oper, act))
}

/// ICCID from `+CCID: 894...`, `+QCCID: ...`, `+ICCID: ...` or a bare line of 18–22 digits (an F filler
/// allowed last).
pub fn iccid(line: &str) -> Option<String> {
    let v = match line.split_once(':') {
        Some((p, v)) if p.ends_with("CCID") => v,
        Some(_) => return None,
        None => line,
    };
    let v = v.trim().trim_matches('"');
    let ok = (18..=22).contains(&v.len())
        && v.chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_digit() || (i + 1 == v.len() && c.eq_ignore_ascii_case(&'f')));
    ok.then(|| v.to_string())
}

/// IMSI: 6 to 15 digits on a line of its own.
pub fn imsi(line: &str) -> Option<String> {
    let v = line.trim();
    ((6..=15).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit())).then(|| v.to_string())
}

/// The network's time from `+CCLK: "yy/MM/dd,hh:mm:ss±zz"` (local time and its offset from UTC in
/// quarter hours, as NITZ gives them) as Unix seconds (UTC). `None` for a line it cannot read, and for
/// a year outside 2020 to 2079: a modem that never had the network's time answers its power-on default
/// (`"80/01/06,00:00:00+00"`, `"04/01/01,…"`).
pub fn cclk(line: &str) -> Option<u64> {
    let v = line.strip_prefix("+CCLK:")?.trim().trim_matches('"');
    let (date, time) = v.split_once(',')?;
    let d: Vec<u32> = date
        .split('/')
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let (clock, zone) = match time.find(['+', '-']) {
        Some(at) => time.split_at(at),
        None => (time, "+00"),
    };
    let t: Vec<u32> = clock
        .split(':')
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let quarters: i64 = zone.parse().ok()?;
    let [yy, month, day] = <[u32; 3]>::try_from(d).ok()?;
    let [hour, minute, second] = <[u32; 3]>::try_from(t).ok()?;
    // Two-digit years: 80 to 99 are the 1980s and 1990s of power-on defaults.
    if !(20..=79).contains(&yy)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
        || quarters.abs() > 14 * 4
    {
        return None;
    }
    // Days from 1970-01-01 to the date (the civil-calendar count, March-based years).
    let (y, m) = if month <= 2 {
        (2000 + i64::from(yy) - 1, i64::from(month) + 9)
    } else {
        (2000 + i64::from(yy), i64::from(month) - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let local = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    u64::try_from(local - quarters * 15 * 60).ok()
}

/// `+CMTI: "SM",3`: a new message stored at index 3 of memory `SM`; the index.
pub fn cmti(line: &str) -> Option<u32> {
    let rest = line.strip_prefix("+CMTI:")?;
    rest.rsplit(',').next()?.trim().parse().ok()
}

/// `+CMGL: 3,"REC UNREAD","+49…",,"…"`: a message listed by `AT+CMGL`; its slot.
pub fn cmgl(line: &str) -> Option<u32> {
    line.strip_prefix("+CMGL:")?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// `+CMGS: 17`: the message reference of a sent message.
pub fn cmgs(line: &str) -> Option<u32> {
    line.strip_prefix("+CMGS:")?.trim().parse().ok()
}

/// A message read with `AT+CMGR` in text mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextMessage {
    /// The sender's number as the network gives it (`+4915123456789`).
    pub from: String,
    /// The text (lines joined with a line feed).
    pub text: String,
}

/// The information lines of `AT+CMGR=n` in text mode: `+CMGR: "REC UNREAD","+49151...",,"26/12/06,…"`
/// then the text. `None` for an empty slot or a line it cannot read.
pub fn cmgr(lines: &[String]) -> Option<TextMessage> {
    let (header, body) = lines.split_first()?;
    let fields = header.strip_prefix("+CMGR:")?;
    let from = fields
        .split(',')
        .nth(1)?
        .trim()
        .trim_matches('"')
        .to_string();
    if from.is_empty() {
        return None;
    }
    Some(TextMessage {
        from,
        text: body.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_time_is_utc_whatever_the_zone() {
        // 2026-05-01 12:34:56 UTC = 1_777_638_896.
        assert_eq!(cclk("+CCLK: \"26/05/01,12:34:56+00\""), Some(1_777_638_896));
        assert_eq!(cclk("+CCLK: \"26/05/01,14:34:56+08\""), Some(1_777_638_896));
        assert_eq!(cclk("+CCLK: \"26/05/01,07:34:56-20\""), Some(1_777_638_896));
        assert_eq!(cclk("+CCLK: \"80/01/06,00:00:00+00\""), None, "never set");
        assert_eq!(cclk("+CCLK: \"26/13/01,00:00:00+00\""), None);
        assert_eq!(cclk("+CCLK: garbage"), None);
        assert_eq!(cclk("+CSQ: 17,99"), None);
    }

    #[test]
    fn parses() {
        assert_eq!(cpin("+CPIN: READY"), Some(SimState::Ready));
        assert_eq!(cpin("+CPIN: SIM PIN"), Some(SimState::PinRequired));
        assert_eq!(registration("+CREG: 0,1"), Some(Registration::Home));
        assert_eq!(
            registration("+CGREG: 2,5,\"1A2B\",\"01C3\",2"),
            Some(Registration::Roaming)
        );
        assert_eq!(registration("+CEREG: 3"), Some(Registration::Denied));
        assert_eq!(
            registration("+CREG: 2,\"1A2B\",\"01C3\""),
            Some(Registration::Searching)
        );
        assert_eq!(registration("+CSQ: 1,2"), None);
        assert_eq!(csq_dbm("+CSQ: 17,99"), Some(-79));
        assert_eq!(csq_dbm("+CSQ: 0,0"), Some(-113));
        assert_eq!(csq_dbm("+CSQ: 31,0"), Some(-51));
        assert_eq!(csq_dbm("+CSQ: 99,99"), None);
        assert_eq!(
            cops("+COPS: 0,0,\"Example Net\",2"),
            Some(("Example Net".into(), Some("UTRAN")))
        );
        assert_eq!(cops("+COPS: 0"), None);
        assert_eq!(
            iccid("+CCID: 89490200001234567890").as_deref(),
            Some("89490200001234567890")
        );
        assert_eq!(
            iccid("+QCCID: 8949020000123456789F").as_deref(),
            Some("8949020000123456789F")
        );
        assert_eq!(iccid("+CSQ: 1"), None);
        assert_eq!(imsi("001010123456789").as_deref(), Some("001010123456789"));
        assert_eq!(imsi("OK"), None);
        for junk in [
            "",
            ":",
            "+CREG:",
            "+CREG: x,y",
            "+CSQ: -5",
            "+COPS: ,",
            "é+CPIN:",
        ] {
            let _ = (
                cpin(junk),
                registration(junk),
                csq_dbm(junk),
                cops(junk),
                iccid(junk),
                imsi(junk),
            );
        }
    }
}

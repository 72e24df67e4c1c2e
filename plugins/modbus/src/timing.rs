//! Bus timing of Modbus RTU: frames are separated by at least 3.5 character times of silence (1.75 ms
//! above 19200 baud), which the host enforces before every request at any baud; the HAL computes it
//! ([`LineSettings::modbus_silent_interval`]).

use std::time::Duration;

use concentrator_hal::{LineSettings, Rs485Timing};

/// How long a meter may take to start its reply. Eastron and DDS238 meters answer within ~100 ms; the
/// margin covers slow meters and USB adapters.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_millis(300);

/// The default line: 9600 baud 8N1.
pub const fn default_line() -> LineSettings {
    LineSettings::modbus_default()
}

/// The exchange timing on a bus at `settings`.
///
/// The silence before the request is the 3.5-character interval. Within a reply, the specification
/// allows 1.5 characters between bytes, but USB adapters deliver bytes in bursts with longer gaps, so
/// the host waits the larger of the silent interval and 20 ms before taking a reply as ended; the
/// completion check ([`crate::reply_complete`]) ends a good reply at its last byte anyway.
pub fn exchange_timing(settings: &LineSettings, reply_timeout: Duration) -> Rs485Timing {
    let silence = settings.modbus_silent_interval();
    Rs485Timing {
        preamble: None,
        min_idle_before: silence,
        turnaround: Duration::ZERO,
        first_byte_timeout: reply_timeout,
        inter_byte_timeout: silence.max(Duration::from_millis(20)),
    }
}

/// The timing of a broadcast write (slave 0): no reply; the next request still waits the silence.
pub fn broadcast_timing(settings: &LineSettings) -> Rs485Timing {
    Rs485Timing {
        first_byte_timeout: Duration::ZERO,
        ..exchange_timing(settings, Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_follows_the_baud() {
        let t = exchange_timing(&default_line(), DEFAULT_REPLY_TIMEOUT);
        assert_eq!(t.min_idle_before, Duration::from_nanos(3_645_833));
        assert_eq!(t.inter_byte_timeout, Duration::from_millis(20));
        let slow = LineSettings::with_format(1200, "8N1").unwrap();
        assert_eq!(
            exchange_timing(&slow, DEFAULT_REPLY_TIMEOUT).min_idle_before,
            Duration::from_nanos(29_166_666)
        );
        assert_eq!(
            exchange_timing(&slow, DEFAULT_REPLY_TIMEOUT).inter_byte_timeout,
            Duration::from_nanos(29_166_666)
        );
        let fast = LineSettings::with_format(115200, "8N1").unwrap();
        assert_eq!(
            exchange_timing(&fast, DEFAULT_REPLY_TIMEOUT).min_idle_before,
            Duration::from_micros(1750)
        );
    }
}

//! Bus timing of DL/T 645-2007 (§5.3 and the annex on transmission): a meter starts its reply 20 to
//! 500 ms after the request, bytes of a frame follow each other closely, and the master waits before
//! the next request. Requests go out after a `FE FE FE FE` wake-up preamble at 2400 baud 8E1 unless a bus
//! is configured otherwise.

use std::time::Duration;

use concentrator_hal::{LineSettings, Preamble, Rs485Timing};

/// A meter does not reply sooner than this after the end of a request.
pub const REPLY_WINDOW_MIN: Duration = Duration::from_millis(20);
/// A meter replies within this time, or not at all.
pub const REPLY_WINDOW_MAX: Duration = Duration::from_millis(500);
/// The longest pause between two bytes of one frame the standard allows.
pub const INTER_BYTE_GAP_MAX: Duration = Duration::from_millis(500);
/// The master waits this long after a reply (or after a broadcast, for meters to act on it) before the
/// next request.
pub const WAIT_BEFORE_NEXT: Duration = Duration::from_millis(20);
/// How many `FE` bytes precede a request.
pub const PREAMBLE_COUNT: u8 = 4;

/// The default line: 2400 baud 8E1.
pub const fn default_line() -> LineSettings {
    LineSettings::dlt645_default()
}

/// The exchange timing for one request on a bus at `settings`.
///
/// The inter-byte timeout is the larger of 20 character times and 50 ms: long enough for USB adapters
/// that deliver bytes in bursts, far shorter than the standard's 500 ms ceiling so that a truncated reply
/// does not stall the bus. The completion check ([`crate::reply_complete`]) ends a good reply without
/// waiting for it.
pub fn exchange_timing(settings: &LineSettings) -> Rs485Timing {
    Rs485Timing {
        preamble: Some(Preamble {
            byte: crate::frame::PREAMBLE,
            count: PREAMBLE_COUNT,
        }),
        min_idle_before: WAIT_BEFORE_NEXT,
        turnaround: Duration::ZERO,
        first_byte_timeout: REPLY_WINDOW_MAX,
        inter_byte_timeout: (settings.char_time() * 20)
            .max(Duration::from_millis(50))
            .min(INTER_BYTE_GAP_MAX),
    }
}

/// The timing of a broadcast (time sync, freeze to all): no reply, and a wait afterwards so meters have
/// acted before the next request.
pub fn broadcast_timing(settings: &LineSettings) -> Rs485Timing {
    Rs485Timing {
        first_byte_timeout: Duration::ZERO,
        ..exchange_timing(settings)
    }
}

/// The longest an exchange of `request_len` and `reply_len` bytes (preambles included) can take on the
/// wire, for schedulers planning a poll cycle.
pub fn worst_case_exchange(
    settings: &LineSettings,
    request_len: usize,
    reply_len: usize,
) -> Duration {
    WAIT_BEFORE_NEXT + settings.wire_time(request_len + reply_len) + REPLY_WINDOW_MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timing() {
        let t = exchange_timing(&default_line());
        assert_eq!(
            t.preamble,
            Some(Preamble {
                byte: 0xFE,
                count: 4
            })
        );
        assert_eq!(t.first_byte_timeout, Duration::from_millis(500));
        // 20 characters at 2400 8E1 are 91.7 ms.
        assert_eq!(t.inter_byte_timeout, Duration::from_nanos(91_666_660));
        let fast = LineSettings::with_format(9600, "8E1").unwrap();
        assert_eq!(
            exchange_timing(&fast).inter_byte_timeout,
            Duration::from_millis(50)
        );
    }
}

//! Time stamps for `info()` documents, formatted like the host's status server, and the
//! retry backoff shared by the host and the bundled plugins.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::time::OffsetDateTime;

/// The last millisecond of year 9999, the latest time [`rfc3339`] writes.
const LATEST: Duration = Duration::from_millis(253_402_300_799_999);

/// RFC 3339 UTC time with milliseconds, e.g. `2026-11-23T14:05:09.123Z`. Times before 1970
/// or after 9999 are written as the first or last millisecond of that range.
pub fn rfc3339(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t.clamp(UNIX_EPOCH, UNIX_EPOCH + LATEST));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Pause before the next attempt after `failures` failures in a row (counted from 1):
/// `first` doubled per further failure, capped at `max`, then "equal jitter": half of it
/// plus `jitter` (0.0–1.0, e.g. a random number) times the other half.
pub fn backoff(first: Duration, max: Duration, failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let base = first.saturating_mul(1 << doublings).min(max);
    base / 2 + (base / 2).mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_equal_jitter() {
        let ms =
            |failures, jitter| backoff(Duration::from_secs(1), Duration::from_secs(30), failures, jitter).as_millis();
        assert_eq!([0, 1, 2, 3, 5, 6, 40].map(|f| ms(f, 1.0)), [1000, 1000, 2000, 4000, 16_000, 30_000, 30_000]);
        assert_eq!((ms(3, 0.0), ms(3, 0.5), ms(3, 7.0), ms(3, -1.0)), (2000, 3000, 4000, 2000));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_secs(5)), "1970-01-01T00:00:00.000Z", "before 1970");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_nanos(86_399_999_999_999)), "1970-01-01T23:59:59.999Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(4_107_542_400)), "2100-03-01T00:00:00.000Z");
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.999Z", "after 9999");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)), "2023-11-14T22:13:20.123Z");
    }
}

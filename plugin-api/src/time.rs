//! Time stamps for `info()` documents, formatted like the host's status server, and the
//! retry backoff shared by the host and the bundled plugins.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// RFC 3339 UTC time with milliseconds, e.g. `2026-11-23T14:05:09.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
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
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)), "2023-11-14T22:13:20.123Z");
    }
}

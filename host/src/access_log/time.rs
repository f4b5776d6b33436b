//! Times as the access log writes them, in UTC: RFC 3339 with
//! milliseconds for JSON lines ([`rfc3339_millis`]), nginx's
//! `01/Dec/2026:13:18:36 +0000` for `combined` ([`time_local`]), by
//! integer arithmetic on the days since the epoch; and the wall-clock
//! time of an [`Instant`] ([`wall_time`]).

use std::cell::Cell;
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::format::push_decimal;

/// How long a thread's reading of both clocks serves [`wall_time`].
const ANCHOR_LIFE: Duration = Duration::from_secs(1);

/// The wall-clock time of `at`: from a reading of both clocks this thread
/// took less than [`ANCHOR_LIFE`] before, else from a new one. A request's
/// start is an `Instant` the pipeline reads anyway, and a
/// `SystemTime::now` per request cost 0.1 us under load here; a step of
/// the wall clock (NTP, an operator) shows in the log within a second.
pub fn wall_time(at: Instant) -> SystemTime {
    thread_local! {
        static ANCHOR: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
    }
    ANCHOR.with(|anchor| {
        if let Some((instant, wall)) = anchor.get()
            && let Some(since) = at.checked_duration_since(instant)
            && since < ANCHOR_LIFE
        {
            return wall + since;
        }
        let (instant, wall) = (Instant::now(), SystemTime::now());
        anchor.set(Some((instant, wall)));
        match at.checked_duration_since(instant) {
            Some(after) => wall + after,
            None => wall - instant.duration_since(at),
        }
    })
}

/// A UTC time broken down.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
}

impl Civil {
    fn of(time: SystemTime) -> Civil {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let of_day = secs % 86_400;
        Civil {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day % 3600 / 60,
            second: of_day % 60,
        }
    }
}

/// Year, month (1..=12) and day (1..=31) of a day counted from 1970-01-01
/// (the proleptic Gregorian calendar, by 400-year eras).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2026-12-01T13:18:36.123Z`. The text up to the second is kept per
/// thread and written again while the second lasts (a busy proxy logs
/// thousands of lines in each).
pub fn rfc3339_millis(time: SystemTime, out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
    }
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    // The last second with a four-digit year.
    let secs = since.as_secs().min(253_402_300_799);
    let prefix = SECOND.with(|kept| match kept.get() {
        (at, text) if at == secs => text,
        _ => {
            let text = rfc3339_second(secs);
            kept.set((secs, text));
            text
        }
    });
    out.extend_from_slice(&prefix);
    let millis = since.subsec_millis();
    out.extend_from_slice(&[
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
}

/// `2026-12-01T13:18:36.` for `secs` after the epoch (up to 9999).
fn rfc3339_second(secs: u64) -> [u8; 20] {
    let c = Civil::of(UNIX_EPOCH + Duration::from_secs(secs));
    let mut text = Vec::with_capacity(20);
    push_decimal(&mut text, c.year.max(0) as u64, 4);
    for (separator, value) in [
        (b'-', u64::from(c.month)),
        (b'-', u64::from(c.day)),
        (b'T', c.hour),
        (b':', c.minute),
        (b':', c.second),
    ] {
        text.push(separator);
        push_decimal(&mut text, value, 2);
    }
    text.push(b'.');
    text.try_into()
        .expect("four digits of year and five fields of two")
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `01/Dec/2026:13:18:36 +0000`.
pub(super) fn time_local(time: SystemTime, out: &mut Vec<u8>) {
    let c = Civil::of(time);
    let month = MONTHS[(c.month - 1) as usize];
    let _ = write!(
        out,
        "{:02}/{month}/{:04}:{:02}:{:02}:{:02} +0000",
        c.day, c.year, c.hour, c.minute, c.second
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_across_leap_years_and_eras() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let mut out = Vec::new();
        rfc3339_millis(UNIX_EPOCH + Duration::from_secs(951_868_799), &mut out);
        assert_eq!(out, b"2000-02-29T23:59:59.000Z");
    }

    /// An instant's wall time is the wall clock's reading then, whether it
    /// comes from the thread's kept reading or a new one.
    #[test]
    fn wall_times_follow_instants() {
        let (before, wall_before) = (Instant::now(), SystemTime::now());
        let first = wall_time(before);
        let later = wall_time(before + Duration::from_millis(300));
        assert_eq!(
            later.duration_since(first).unwrap(),
            Duration::from_millis(300)
        );
        // Past the reading's life: from a new one.
        let far = wall_time(before + 2 * ANCHOR_LIFE);
        let took = before.elapsed();
        let skew =
            |a: SystemTime, b: SystemTime| a.duration_since(b).unwrap_or_else(|e| e.duration());
        // Each reading was taken within the test's time.
        assert!(skew(first, wall_before) <= took);
        assert!(skew(far, first + 2 * ANCHOR_LIFE) <= took);
    }

    /// The kept text of a second serves only that second.
    #[test]
    fn times_in_one_second_and_the_next() {
        let second = UNIX_EPOCH + Duration::from_secs(951_868_799);
        let mut out = Vec::new();
        for time in [
            second + Duration::from_millis(5),
            second + Duration::from_millis(999),
            second + Duration::from_millis(1_000),
            second,
            UNIX_EPOCH + Duration::from_secs(u64::MAX / 2),
        ] {
            rfc3339_millis(time, &mut out);
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2000-02-29T23:59:59.005Z 2000-02-29T23:59:59.999Z 2000-03-01T00:00:00.000Z \
             2000-02-29T23:59:59.000Z 9999-12-31T23:59:59.000Z "
        );
    }
}

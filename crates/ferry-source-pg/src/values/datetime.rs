//! Dates and times in Postgres's ISO output style (`DateStyle = ISO`), read by hand:
//! proleptic Gregorian calendar arithmetic on days since 1970-01-01, no time zone
//! database (Postgres writes numeric UTC offsets).
//!
//! Forms read:
//!
//! ```text
//! date         2026-12-06            0044-03-15 BC
//! time         08:30:00              08:30:00.123456      24:00:00
//! timestamp    2026-12-06 08:30:00.5
//! timestamptz  2026-12-06 08:30:00.123456+05:30          1850-01-01 00:00:00+00:53:28
//! timetz       08:30:00+02
//! ```

/// Microseconds in a day.
const DAY_US: i64 = 86_400_000_000;
const SECOND_US: i64 = 1_000_000;

/// Days since 1970-01-01 of a `date`; BC years count backwards from 1 BC (year 0).
pub(super) fn date(text: &[u8]) -> Option<i64> {
    let mut c = Cursor(text);
    let (mut year, month, day) = c.date()?;
    if c.eat(b" BC") {
        year = 1 - year;
    }
    c.end()?;
    Some(days_from_civil(year, month, day))
}

/// Microseconds since midnight of a `time`.
pub(super) fn time(text: &[u8]) -> Option<i64> {
    let mut c = Cursor(text);
    let us = c.time()?;
    c.end()?;
    Some(us)
}

/// Microseconds since 1970-01-01 00:00:00 of a `timestamp` (AD only).
pub(super) fn timestamp(text: &[u8]) -> Option<i64> {
    let mut c = Cursor(text);
    let us = c.date_time()?;
    c.end()?;
    Some(us)
}

/// A `timestamptz` as an ISO-8601 string in UTC: `2026-12-06T03:00:00.123456Z`.
pub(super) fn timestamptz(text: &[u8]) -> Option<String> {
    let mut c = Cursor(text);
    let local_us = c.date_time()?;
    let offset_us = c.offset()?;
    c.end()?;
    let utc_us = local_us.checked_sub(offset_us)?;
    let (year, month, day) = civil_from_days(utc_us.div_euclid(DAY_US));
    if !(1..=9999).contains(&year) {
        return None;
    }
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{}Z",
        time_of_day(utc_us.rem_euclid(DAY_US))
    ))
}

/// A `timetz` as an ISO-8601 time in UTC: `06:30:00Z`.
pub(super) fn timetz(text: &[u8]) -> Option<String> {
    let mut c = Cursor(text);
    let local_us = c.time()?;
    let offset_us = c.offset()?;
    c.end()?;
    Some(format!(
        "{}Z",
        time_of_day((local_us - offset_us).rem_euclid(DAY_US))
    ))
}

/// `HH:MM:SS` with the fraction of a second, if any, without trailing zeros.
fn time_of_day(us: i64) -> String {
    debug_assert!((0..DAY_US).contains(&us));
    let seconds = us / SECOND_US;
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let fraction = us % SECOND_US;
    if fraction == 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        let digits = format!("{fraction:06}");
        format!("{h:02}:{m:02}:{s:02}.{}", digits.trim_end_matches('0'))
    }
}

fn is_leap(year: i64) -> bool {
    year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (astronomical year: 0 is 1 BC).
///
/// Counts in 400-year eras of 146,097 days, with years starting on March 1st so that
/// the leap day is the last day of its year.
pub(super) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    debug_assert!((1..=12).contains(&month) && (1..=31).contains(&day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719,468 days from 0000-03-01 to 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
pub(super) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A cursor over a value's text.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn eat(&mut self, literal: &[u8]) -> bool {
        match self.0.strip_prefix(literal) {
            Some(rest) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, literal: &[u8]) -> Option<()> {
        self.eat(literal).then_some(())
    }

    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }

    /// A number of `min..=max` ASCII digits, and how many there were.
    fn digits(&mut self, min: usize, max: usize) -> Option<(i64, usize)> {
        let n = self
            .0
            .iter()
            .take(max)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if n < min {
            return None;
        }
        let (digits, rest) = self.0.split_at(n);
        self.0 = rest;
        let value = digits
            .iter()
            .fold(0i64, |v, d| v * 10 + i64::from(d - b'0'));
        Some((value, n))
    }

    fn number(&mut self, digits: usize, max: i64) -> Option<i64> {
        let (value, _) = self.digits(digits, digits)?;
        (value <= max).then_some(value)
    }

    /// `YYYY-MM-DD` (years of 4 to 7 digits, from 1) as (year, month, day).
    fn date(&mut self) -> Option<(i64, i64, i64)> {
        let (year, _) = self.digits(4, 7)?;
        self.expect(b"-")?;
        let month = self.number(2, 12)?;
        self.expect(b"-")?;
        let day = self.number(2, 31)?;
        let valid = year >= 1 && month >= 1 && day >= 1 && day <= days_in_month(year, month);
        valid.then_some((year, month, day))
    }

    /// `HH:MM:SS[.ffffff]` (up to `24:00:00`) as microseconds since midnight.
    fn time(&mut self) -> Option<i64> {
        let hour = self.number(2, 24)?;
        self.expect(b":")?;
        let minute = self.number(2, 59)?;
        self.expect(b":")?;
        let second = self.number(2, 59)?;
        let mut fraction_us = 0;
        if self.eat(b".") {
            let (value, digits) = self.digits(1, 6)?;
            if self.0.first().is_some_and(u8::is_ascii_digit) {
                return None;
            }
            fraction_us = value * 10i64.pow(6 - u32::try_from(digits).ok()?);
        }
        let us = ((hour * 60 + minute) * 60 + second) * SECOND_US + fraction_us;
        (us <= DAY_US).then_some(us)
    }

    /// `YYYY-MM-DD HH:MM:SS[.ffffff]` as microseconds since 1970-01-01.
    fn date_time(&mut self) -> Option<i64> {
        let (year, month, day) = self.date()?;
        self.expect(b" ")?;
        let time_us = self.time()?;
        days_from_civil(year, month, day)
            .checked_mul(DAY_US)?
            .checked_add(time_us)
    }

    /// A UTC offset `+HH[:MM[:SS]]` or `-HH[:MM[:SS]]` as microseconds east of UTC.
    fn offset(&mut self) -> Option<i64> {
        let sign = if self.eat(b"+") {
            1
        } else if self.eat(b"-") {
            -1
        } else {
            return None;
        };
        let hours = self.number(2, 15)?;
        let mut minutes = 0;
        let mut seconds = 0;
        if self.eat(b":") {
            minutes = self.number(2, 59)?;
            if self.eat(b":") {
                seconds = self.number(2, 59)?;
            }
        }
        Some(sign * ((hours * 60 + minutes) * 60 + seconds) * SECOND_US)
    }
}

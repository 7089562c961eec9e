//! The clock behind `strftime_now(format)`, a function transformers gives chat templates (some
//! write today's date with it): UTC, formatted with the `strftime` directives templates use.

use minijinja::ErrorKind;

/// `strftime_now(format)`: the current time (UTC), which some chat templates write into the
/// system prompt (Llama 3.2 states today's date).
pub(super) fn strftime_now(format: String) -> Result<String, minijinja::Error> {
    format_utc(unix_time_now(), &format)
}

#[cfg(not(target_arch = "wasm32"))]
fn unix_time_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `SystemTime::now` panics on wasm32-unknown-unknown; the browser has the clock.
#[cfg(target_arch = "wasm32")]
fn unix_time_now() -> i64 {
    (js_sys::Date::now() / 1000.0) as i64
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/// C `strftime` for the directives chat templates use (`%d %b %Y`, `%B %d, %Y`, ...).
fn format_utc(unix_seconds: i64, format: &str) -> Result<String, minijinja::Error> {
    let days = unix_seconds.div_euclid(86_400);
    let second_of_day = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_date(days);
    let month_name = MONTHS[month as usize - 1];
    // 1970-01-01 was a Thursday.
    let weekday = WEEKDAYS[(days + 4).rem_euclid(7) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let field = match chars.next() {
            Some('Y') => year.to_string(),
            Some('y') => format!("{:02}", year.rem_euclid(100)),
            Some('m') => format!("{month:02}"),
            Some('d') => format!("{day:02}"),
            Some('B') => month_name.to_owned(),
            Some('b') => month_name[..3].to_owned(),
            Some('A') => weekday.to_owned(),
            Some('a') => weekday[..3].to_owned(),
            Some('H') => format!("{:02}", second_of_day / 3600),
            Some('M') => format!("{:02}", second_of_day / 60 % 60),
            Some('S') => format!("{:02}", second_of_day % 60),
            Some('%') => "%".to_owned(),
            other => {
                let directive = other.map(String::from).unwrap_or_default();
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now does not support %{directive}"),
                ));
            }
        };
        out.push_str(&field);
    }
    Ok(out)
}

/// (year, month, day) of a day count since 1970-01-01, proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 } as u32;
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_formats_utc_dates() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let time = 1_721_999_109;
        assert_eq!(format_utc(time, "%d %b %Y").unwrap(), "26 Jul 2024");
        assert_eq!(format_utc(time, "%A, %B %d, %y %H:%M:%S %%").unwrap(), "Friday, July 26, 24 13:05:09 %");
        assert_eq!(format_utc(951_782_400, "%Y-%m-%d %a").unwrap(), "2000-02-29 Tue");
        assert!(format_utc(time, "%Q").is_err());
    }
}

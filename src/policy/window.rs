//! Change windows: named weekly schedules in UTC, e.g. "Monday to Thursday,
//! 09:00 to 16:00". Conditions see whether a request falls inside each one
//! (`context.windows.<name>`).

use std::time::SystemTime;

use serde::Deserialize;

use super::CatalogueError;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MINUTES_PER_DAY: u32 = 24 * 60;

/// A named weekly schedule, in UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeWindow {
    name: String,
    /// Days it opens on, Monday first.
    days: [bool; 7],
    /// Minute of the day it opens.
    start: u32,
    /// Minute of the day it closes; below `start` when it runs past
    /// midnight into the next day.
    end: u32,
}

/// A change window as written in the catalogue (`[windows.<name>]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    days: Vec<String>,
    start: String,
    end: String,
}

impl ChangeWindow {
    /// Validates a window. Names are 1 to 64 lowercase letters, digits and
    /// `_`, so conditions can write `context.windows.<name>`.
    pub fn from_raw(name: &str, raw: RawWindow) -> Result<Self, CatalogueError> {
        let invalid = |field: &'static str, message: String| CatalogueError::Window {
            window: name.to_owned(),
            field,
            message,
        };
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !name_ok {
            return Err(invalid(
                "name",
                "must be 1 to 64 lowercase letters, digits or '_', not starting with a digit"
                    .to_owned(),
            ));
        }
        if raw.days.is_empty() {
            return Err(invalid(
                "days",
                "needs at least one of mon, tue, wed, thu, fri, sat, sun".to_owned(),
            ));
        }
        let mut days = [false; 7];
        for day in &raw.days {
            let index = DAYS
                .iter()
                .position(|known| known.eq_ignore_ascii_case(day))
                .ok_or_else(|| {
                    invalid(
                        "days",
                        format!("{day:?} is not one of mon, tue, wed, thu, fri, sat, sun"),
                    )
                })?;
            days[index] = true;
        }
        let start = parse_clock(&raw.start)
            .and_then(|start| {
                if start < MINUTES_PER_DAY {
                    Ok(start)
                } else {
                    Err("must be before 24:00".to_owned())
                }
            })
            .map_err(|m| invalid("start", m))?;
        let end = parse_clock(&raw.end).map_err(|m| invalid("end", m))?;
        if start == end {
            return Err(invalid(
                "end",
                "must differ from start (a window of a whole day is 00:00 to 24:00)".to_owned(),
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            days,
            start,
            end,
        })
    }

    /// The window's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `at` falls inside the window. A window that runs past
    /// midnight belongs to the day it opens on.
    pub fn contains(&self, at: SystemTime) -> bool {
        let seconds = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        let day = seconds / 86_400;
        let minute = u32::try_from((seconds % 86_400) / 60).unwrap_or(0);
        // 1970-01-01 was a Thursday (index 3, Monday being 0).
        let weekday = usize::try_from((day + 3) % 7).unwrap_or(0);
        let yesterday = (weekday + 6) % 7;
        if self.start < self.end {
            self.days[weekday] && (self.start..self.end).contains(&minute)
        } else {
            (self.days[weekday] && minute >= self.start)
                || (self.days[yesterday] && minute < self.end)
        }
    }
}

/// The weekday of `at` (UTC) as written in windows: `mon` to `sun`.
pub fn weekday(at: SystemTime) -> &'static str {
    let days = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() / 86_400)
        .unwrap_or(0);
    DAYS[usize::try_from((days + 3) % 7).unwrap_or(0)]
}

/// `HH:MM`, 00:00 to 24:00, as minutes of the day.
fn parse_clock(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a time of day HH:MM (UTC, 00:00 to 24:00)");
    let (hours, minutes) = text.split_once(':').ok_or_else(bad)?;
    if hours.len() != 2 || minutes.len() != 2 {
        return Err(bad());
    }
    let hours: u32 = hours.parse().map_err(|_| bad())?;
    let minutes: u32 = minutes.parse().map_err(|_| bad())?;
    if minutes >= 60 || hours * 60 + minutes > MINUTES_PER_DAY {
        return Err(bad());
    }
    Ok(hours * 60 + minutes)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn window(days: &[&str], start: &str, end: &str) -> Result<ChangeWindow, CatalogueError> {
        ChangeWindow::from_raw(
            "w",
            RawWindow {
                days: days.iter().map(|d| (*d).to_owned()).collect(),
                start: start.to_owned(),
                end: end.to_owned(),
            },
        )
    }

    /// 2026-11-23 is a Monday.
    fn monday_at(hour: u64, minute: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_392_000 + hour * 3600 + minute * 60)
    }

    #[test]
    fn weekdays_and_hours() {
        assert_eq!(weekday(monday_at(0, 0)), "mon");
        assert_eq!(weekday(monday_at(24 * 6, 0)), "sun");
        let business = window(&["mon", "tue"], "09:00", "17:00").unwrap();
        assert!(!business.contains(monday_at(8, 59)));
        assert!(business.contains(monday_at(9, 0)));
        assert!(business.contains(monday_at(16, 59)));
        assert!(!business.contains(monday_at(17, 0)));
        assert!(business.contains(monday_at(24 + 10, 0)), "tuesday");
        assert!(!business.contains(monday_at(48 + 10, 0)), "wednesday");
    }

    #[test]
    fn overnight_windows_belong_to_the_day_they_open() {
        let night = window(&["sun"], "22:00", "02:00").unwrap();
        assert!(night.contains(monday_at(1, 59)), "sunday night into monday");
        assert!(!night.contains(monday_at(2, 0)));
        assert!(
            !night.contains(monday_at(23, 0)),
            "monday night is not open"
        );
        let all_day = window(&["mon"], "00:00", "24:00").unwrap();
        assert!(all_day.contains(monday_at(23, 59)));
        assert!(!all_day.contains(monday_at(24, 0)));
    }

    #[test]
    fn errors_name_the_field() {
        let error = |days: &[&str], start, end| window(days, start, end).unwrap_err().to_string();
        assert_eq!(
            error(&["monday"], "09:00", "10:00"),
            "window \"w\": `days`: \"monday\" is not one of mon, tue, wed, thu, fri, sat, sun"
        );
        assert_eq!(
            error(&["mon"], "9:00", "10:00"),
            "window \"w\": `start`: \"9:00\" is not a time of day HH:MM (UTC, 00:00 to 24:00)"
        );
        assert_eq!(
            error(&["mon"], "10:00", "10:00"),
            "window \"w\": `end`: must differ from start (a window of a whole day is 00:00 to 24:00)"
        );
    }
}

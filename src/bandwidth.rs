//! The bandwidth uploads may use, as configured: a fixed `bandwidth_limit`, or a weekly
//! timetable (`bandwidth_schedule = "Mon-Fri 08:00,20MiB/s Mon-Fri 19:00,off"`) read in local
//! time. Pure values: what applies at a given zoned time and when that changes next, so tests
//! give it any time and zone. The limiter that paces the bytes is `vmpro::bandwidth`.

use std::fmt;

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Span, Timestamp, Zoned};

use crate::config::{format_bandwidth, parse_bandwidth};

/// A rate in bytes per second, remembering whether it was written in bits, so that it is
/// shown back the way the user wrote it (`16 Mbit/s`, not `1.91 MiB/s`).
#[derive(Debug, Clone, Copy)]
pub struct Bandwidth {
    pub bytes_per_second: u64,
    pub bits: bool,
}

impl Bandwidth {
    /// Reads `"100 Mbit/s"` or `"20 MiB/s"`; see [`parse_bandwidth`].
    pub fn parse(text: &str) -> Result<Bandwidth, String> {
        let bytes_per_second = parse_bandwidth(text).map_err(|err| err.to_string())?;
        // "bps" with a small b only: "MBps" is bytes (`parse_bandwidth` refuses "MBPS").
        Ok(Bandwidth {
            bytes_per_second,
            bits: text.to_ascii_lowercase().contains("bit") || text.contains("bps"),
        })
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_bandwidth(self.bytes_per_second, self.bits))
    }
}

/// What uploads may send at some moment.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// No limit (`off`).
    Unlimited,
    /// Quiet hours (`0`): nothing is sent. Not a pause: nothing is wrong, and no alert.
    Quiet,
    /// At most this many bytes per second across all uploads.
    Rate(Bandwidth),
}

impl Limit {
    /// Whether the two let the same bytes through (however each was written).
    pub fn same_as(&self, other: &Limit) -> bool {
        match (self, other) {
            (Limit::Unlimited, Limit::Unlimited) | (Limit::Quiet, Limit::Quiet) => true,
            (Limit::Rate(a), Limit::Rate(b)) => a.bytes_per_second == b.bytes_per_second,
            _ => false,
        }
    }

    /// Bytes per second; `None` for no limit, `Some(0)` for quiet hours.
    pub fn bytes_per_second(&self) -> Option<u64> {
        match self {
            Limit::Unlimited => None,
            Limit::Quiet => Some(0),
            Limit::Rate(rate) => Some(rate.bytes_per_second),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Unlimited => f.write_str("unlimited"),
            Limit::Quiet => f.write_str("quiet hours"),
            Limit::Rate(rate) => rate.fmt(f),
        }
    }
}

/// The limit configured for uploads: none, one rate, or a timetable.
#[derive(Debug, Clone, Default)]
pub enum BandwidthPlan {
    #[default]
    Unlimited,
    Fixed(Bandwidth),
    Scheduled(BandwidthSchedule),
}

impl BandwidthPlan {
    /// The limit at `now`, and the next time it changes with the limit from then on.
    pub fn at(&self, now: &Zoned) -> (Limit, Option<(Zoned, Limit)>) {
        match self {
            BandwidthPlan::Unlimited => (Limit::Unlimited, None),
            BandwidthPlan::Fixed(rate) => (Limit::Rate(*rate), None),
            BandwidthPlan::Scheduled(schedule) => schedule.evaluate(now),
        }
    }

    pub fn is_unlimited(&self) -> bool {
        matches!(self, BandwidthPlan::Unlimited)
    }
}

/// One problem in a `bandwidth_schedule`, naming its entry when it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", entry.as_ref().map(|(n, text)| format!("entry {n} {text:?}: ")).unwrap_or_default())]
pub struct ScheduleError {
    /// 1-based number and text of the entry.
    entry: Option<(usize, String)>,
    message: String,
}

/// A weekly timetable of limits. At any moment the latest earlier entry applies, wrapping
/// around the week: before Monday's first entry, last week's last one.
#[derive(Debug, Clone)]
pub struct BandwidthSchedule {
    /// The entries as written, for `check`.
    entries: Vec<String>,
    /// Per weekday (Monday first): minute of the day and the limit from then on, by minute.
    by_day: [Vec<(u16, Limit)>; 7],
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL_DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

impl BandwidthSchedule {
    /// Reads `"[DAYS ]HH:MM,RATE ..."`; DAYS like `Mon`, `Mon-Fri`, `Sat,Sun`, `Fri-Mon`
    /// (wrapping), none = every day; RATE `off`, `0` (quiet hours) or a bandwidth (a rate
    /// written with a space, `20 MiB/s`, is read whole). Returns every problem found.
    pub fn parse(text: &str) -> Result<BandwidthSchedule, Vec<ScheduleError>> {
        let mut problems = Vec::new();
        // (days as written, days, "HH:MM,RATE" so far)
        let mut raw_entries: Vec<(Option<String>, [bool; 7], String)> = Vec::new();
        let mut pending_days: Option<(String, [bool; 7])> = None;
        // Whether the last token was part of an entry's rate, so a following word continues it.
        let mut in_rate = false;
        for token in text.split_whitespace() {
            if looks_like_time(token) {
                let (days_text, days) = match pending_days.take() {
                    Some((text, days)) => (Some(text), days),
                    None => (None, [true; 7]),
                };
                raw_entries.push((days_text, days, token.to_owned()));
                in_rate = true;
            } else if let Some(days) = parse_days(token) {
                if let Some((previous, _)) = &pending_days {
                    problems.push(ScheduleError {
                        entry: None,
                        message: format!(
                            "days {previous:?} are followed by {token:?}, not by a time; \
                             write days like \"Sat,Sun\" in one word, then HH:MM,RATE"
                        ),
                    });
                }
                pending_days = Some((token.to_owned(), days));
                in_rate = false;
            } else if in_rate && let Some(last) = raw_entries.last_mut() {
                last.2.push(' ');
                last.2.push_str(token);
            } else {
                problems.push(ScheduleError {
                    entry: None,
                    message: format!(
                        "{token:?} is neither days (Mon, Mon-Fri, Sat,Sun) nor HH:MM,RATE; \
                         entries are written [DAYS ]HH:MM,RATE"
                    ),
                });
            }
        }
        if let Some((days, _)) = pending_days {
            problems.push(ScheduleError {
                entry: None,
                message: format!("days {days:?} at the end have no HH:MM,RATE after them"),
            });
        }
        if raw_entries.is_empty() && problems.is_empty() {
            problems.push(ScheduleError {
                entry: None,
                message: "no entries; write e.g. \"Mon-Fri 08:00,20MiB/s Mon-Fri 19:00,off\", \
                          or leave it out for no timetable"
                    .into(),
            });
        }
        let mut entries = Vec::new();
        let mut by_day: [Vec<(u16, Limit, usize)>; 7] = Default::default();
        for (index, (days_text, days, time_rate)) in raw_entries.into_iter().enumerate() {
            let number = index + 1;
            let written = match &days_text {
                Some(days) => format!("{days} {time_rate}"),
                None => time_rate.clone(),
            };
            let problem = |message: String| ScheduleError {
                entry: Some((number, written.clone())),
                message,
            };
            let Some((time, rate)) = time_rate.split_once(',') else {
                problems.push(problem("no \",RATE\" after the time".into()));
                continue;
            };
            let minute = match parse_time(time) {
                Ok(minute) => minute,
                Err(message) => {
                    problems.push(problem(message));
                    continue;
                }
            };
            let limit = match parse_limit(rate) {
                Ok(limit) => limit,
                Err(message) => {
                    problems.push(problem(message));
                    continue;
                }
            };
            for (day, on) in days.iter().enumerate() {
                if !on {
                    continue;
                }
                if let Some((_, _, other)) = by_day[day].iter().find(|(m, _, _)| *m == minute) {
                    problems.push(problem(format!(
                        "entry {} also sets {} {time}: one of them would never apply",
                        other,
                        capitalized(DAY_NAMES[day]),
                    )));
                    continue;
                }
                by_day[day].push((minute, limit, number));
            }
            entries.push(written);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let by_day = by_day.map(|mut points| {
            points.sort_by_key(|(minute, _, _)| *minute);
            points
                .into_iter()
                .map(|(minute, limit, _)| (minute, limit))
                .collect()
        });
        Ok(BandwidthSchedule { entries, by_day })
    }

    /// The entries as written.
    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// The limit in force at `now` and when it next changes (`None`: it never does).
    pub fn rate_at(&self, now: &Zoned) -> (Limit, Option<Zoned>) {
        let (limit, next) = self.evaluate(now);
        (limit, next.map(|(at, _)| at))
    }

    /// The limit at `now`, and the next change with the limit it brings.
    ///
    /// Entries are compared as instants, not as clock readings: an entry takes effect the
    /// first moment the local clock reads its time or later. So on a day the clocks go forward
    /// past it (02:30 on 2026-03-29 in Europe/Berlin), it takes effect at the jump (03:00
    /// CEST); on a day the clocks go back (02:30 happens twice on 2026-10-25), it takes effect
    /// at the first 02:30 and stays in force through the repeated hour.
    fn evaluate(&self, now: &Zoned) -> (Limit, Option<(Zoned, Limit)>) {
        let tz = now.time_zone();
        let at = now.timestamp();
        let today = now.date();
        let mut current = None;
        'back: for back in 0..=7i64 {
            let Some(date) = shifted(today, -back) else {
                break;
            };
            for (minute, limit) in self.points(date).iter().rev() {
                if occurrence(tz, date, *minute).is_some_and(|when| when <= at) {
                    current = Some(*limit);
                    break 'back;
                }
            }
        }
        let Some(current) = current else {
            // An empty timetable (parse refuses one): nothing limits.
            return (Limit::Unlimited, None);
        };
        for ahead in 0..=8i64 {
            let Some(date) = shifted(today, ahead) else {
                break;
            };
            for (minute, limit) in self.points(date) {
                if limit.same_as(&current) {
                    continue;
                }
                if let Some(when) = occurrence(tz, date, *minute)
                    && when > at
                {
                    return (current, Some((when.to_zoned(tz.clone()), *limit)));
                }
            }
        }
        (current, None)
    }

    fn points(&self, date: Date) -> &[(u16, Limit)] {
        let day = date.weekday().to_monday_zero_offset();
        self.by_day
            .get(usize::try_from(day).unwrap_or(0))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// `date` moved by `days`; `None` at the ends of the calendar.
fn shifted(date: Date, days: i64) -> Option<Date> {
    date.checked_add(Span::new().try_days(days).ok()?).ok()
}

/// The first instant at which the local clock reads `minute` on `date` or later: the instant
/// itself, the first of two (clocks going back), or the jump (clocks going forward past it).
fn occurrence(tz: &TimeZone, date: Date, minute: u16) -> Option<Timestamp> {
    let hour = i8::try_from(minute / 60).ok()?;
    let min = i8::try_from(minute % 60).ok()?;
    let clock: DateTime = date.at(hour, min, 0, 0);
    let ambiguous = tz.to_ambiguous_timestamp(clock);
    match ambiguous.offset() {
        AmbiguousOffset::Unambiguous { .. } | AmbiguousOffset::Fold { .. } => {
            ambiguous.earlier().ok()
        }
        AmbiguousOffset::Gap { .. } => {
            // Read with the offset after the gap, the time lies before the jump; the jump is
            // the next transition from there.
            let before_jump = ambiguous.earlier().ok()?;
            tz.following(before_jump)
                .next()
                .map(|transition| transition.timestamp())
        }
    }
}

fn looks_like_time(token: &str) -> bool {
    let digits = token.chars().take_while(char::is_ascii_digit).count();
    (1..=2).contains(&digits) && token[digits..].starts_with(':')
}

/// `08:00` → minutes since midnight.
fn parse_time(text: &str) -> Result<u16, String> {
    let bad = || format!("{text:?} is not a time of day; write HH:MM from 00:00 to 23:59");
    let (hours, minutes) = text.split_once(':').ok_or_else(bad)?;
    if minutes.len() != 2 {
        return Err(bad());
    }
    let hours: u16 = hours.parse().map_err(|_| bad())?;
    let minutes: u16 = minutes.parse().map_err(|_| bad())?;
    if hours > 23 || minutes > 59 {
        return Err(bad());
    }
    Ok(hours * 60 + minutes)
}

fn parse_limit(text: &str) -> Result<Limit, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(Limit::Unlimited);
    }
    if text == "0" {
        return Ok(Limit::Quiet);
    }
    if text.is_empty() {
        return Err("no rate after the comma; write a rate such as \"20 MiB/s\" or \"100 Mbit/s\", \"off\" (no limit) or \"0\" (quiet hours)".into());
    }
    match Bandwidth::parse(text) {
        Ok(rate) if rate.bytes_per_second == 0 => Err(format!(
            "{text:?} is less than 1 byte per second; write \"0\" for quiet hours"
        )),
        Ok(rate) => Ok(Limit::Rate(rate)),
        Err(message) => Err(format!(
            "{message}; or \"off\" (no limit), \"0\" (quiet hours)"
        )),
    }
}

/// `Mon`, `Mon-Fri`, `Sat,Sun`, `Fri-Mon`, `Mon,Wed-Fri` → the days; `None` if not days.
fn parse_days(text: &str) -> Option<[bool; 7]> {
    let mut days = [false; 7];
    for part in text.split(',') {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (day_index(first)?, day_index(last)?);
                let mut day = first;
                loop {
                    days[day] = true;
                    if day == last {
                        break;
                    }
                    day = (day + 1) % 7;
                }
            }
            None => days[day_index(part)?] = true,
        }
    }
    Some(days)
}

fn day_index(name: &str) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|day| *day == lower)
        .or_else(|| FULL_DAY_NAMES.iter().position(|day| *day == lower))
}

fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// When a change comes, seen from `now` (in the zone both were computed in): `today 19:00`,
/// `tomorrow 08:00`, else with its date, `Mon 7 Dec 19:00`. A weekday alone was ambiguous: a
/// change a week away falls on today's weekday.
pub fn show_change(at: &Zoned, now: &Zoned) -> String {
    let (day, today) = (at.date(), now.date());
    if day == today {
        at.strftime("today %H:%M").to_string()
    } else if today.tomorrow().is_ok_and(|tomorrow| tomorrow == day) {
        at.strftime("tomorrow %H:%M").to_string()
    } else {
        at.strftime("%a %-d %b %H:%M").to_string()
    }
}

/// The limit at `now` in words: `20 MiB/s until today 19:00, then unlimited`, `quiet hours
/// until Mon 7 Dec 08:00 (nothing is sent), then 20 MiB/s`, `unlimited`.
pub fn describe_now(plan: &BandwidthPlan, now: &Zoned) -> String {
    let (limit, next) = plan.at(now);
    let quiet = matches!(limit, Limit::Quiet);
    match next {
        Some((at, then)) if quiet => format!(
            "quiet hours until {} (nothing is sent), then {then}",
            show_change(&at, now)
        ),
        Some((at, then)) => format!("{limit} until {}, then {then}", show_change(&at, now)),
        None if quiet => "quiet hours (nothing is sent)".into(),
        None => limit.to_string(),
    }
}

/// The limit in force at some moment and its next change, for `status`.
#[derive(Debug, Clone)]
pub struct BandwidthNow {
    /// Whether any limit or timetable is configured (without, text output leaves it out).
    pub configured: bool,
    pub limit: Limit,
    pub next: Option<(Zoned, Limit)>,
    /// In words: `20 MiB/s until today 19:00, then unlimited`.
    pub text: String,
}

impl BandwidthNow {
    pub fn of(plan: &BandwidthPlan, now: &Zoned) -> BandwidthNow {
        let (limit, next) = plan.at(now);
        BandwidthNow {
            configured: !plan.is_unlimited(),
            limit,
            next,
            text: describe_now(plan, now),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "limit": self.limit.to_string(),
            "bytes_per_second": self.limit.bytes_per_second(),
            "quiet": matches!(self.limit, Limit::Quiet),
            // RFC 3339 in UTC, as every time in `status --json`.
            "next_change": self.next.as_ref().map(|(at, _)| at.timestamp().to_string()),
            "next_limit": self.next.as_ref().map(|(_, then)| then.to_string()),
            "text": self.text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn berlin(y: i16, m: i8, d: i8, h: i8, min: i8) -> Zoned {
        let tz = TimeZone::get("Europe/Berlin").expect("the tz database has Europe/Berlin");
        date(y, m, d)
            .at(h, min, 0, 0)
            .to_zoned(tz)
            .expect("a valid time")
    }

    fn schedule(text: &str) -> BandwidthSchedule {
        BandwidthSchedule::parse(text).unwrap_or_else(|errors| panic!("{text}: {errors:?}"))
    }

    fn shown(schedule: &BandwidthSchedule, now: &Zoned) -> String {
        let (limit, next) = schedule.evaluate(now);
        match next {
            Some((at, then)) => format!(
                "{limit} until {}, then {then}",
                at.strftime("%a %Y-%m-%d %H:%M %Z")
            ),
            None => limit.to_string(),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match BandwidthSchedule::parse(text) {
            Ok(_) => panic!("{text} was accepted"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    // 2026-11-30 is a Monday.
    const OFFICE: &str = "Mon-Fri 08:00,20MiB/s Mon-Fri 19:00,off Sat,Sun 00:00,0";

    #[test]
    fn the_latest_earlier_entry_applies_until_the_next_change() {
        let office = schedule(OFFICE);
        assert_eq!(
            shown(&office, &berlin(2026, 12, 1, 10, 0)),
            "20 MiB/s until Tue 2026-12-01 19:00 CET, then unlimited"
        );
        assert_eq!(
            shown(&office, &berlin(2026, 12, 1, 7, 59)),
            "unlimited until Tue 2026-12-01 08:00 CET, then 20 MiB/s"
        );
        // Friday night: unlimited until the weekend's quiet hours.
        assert_eq!(
            shown(&office, &berlin(2026, 12, 4, 23, 0)),
            "unlimited until Sat 2026-12-05 00:00 CET, then quiet hours"
        );
        // Saturday's and Sunday's entries are both quiet: the next change is Monday's.
        assert_eq!(
            shown(&office, &berlin(2026, 12, 5, 12, 0)),
            "quiet hours until Mon 2026-12-07 08:00 CET, then 20 MiB/s"
        );
    }

    #[test]
    fn an_entry_at_exactly_now_applies() {
        let office = schedule(OFFICE);
        let (limit, next) = office.rate_at(&berlin(2026, 12, 1, 8, 0));
        assert_eq!(limit.bytes_per_second(), Some(20 << 20));
        assert_eq!(next, Some(berlin(2026, 12, 1, 19, 0)));
        let just_before = berlin(2026, 12, 1, 8, 0) - Span::new().nanoseconds(1);
        assert_eq!(office.rate_at(&just_before).0.bytes_per_second(), None);
    }

    #[test]
    fn the_week_wraps_from_sunday_night_to_monday() {
        // Only weekday entries: on Monday before 08:00, last Friday's 19:00 entry applies.
        let weekdays = schedule("Mon-Fri 08:00,20MiB/s Mon-Fri 19:00,10MiB/s");
        assert_eq!(
            shown(&weekdays, &berlin(2026, 11, 30, 0, 30)),
            "10 MiB/s until Mon 2026-11-30 08:00 CET, then 20 MiB/s"
        );
        assert_eq!(
            shown(&weekdays, &berlin(2026, 11, 29, 23, 59)),
            "10 MiB/s until Mon 2026-11-30 08:00 CET, then 20 MiB/s"
        );
        // One entry a week: it applies all week, from the moment after it wraps round.
        let sundays = schedule("Sun 22:00,1MiB/s Mon 06:00,off");
        assert_eq!(
            shown(&sundays, &berlin(2026, 11, 30, 1, 0)),
            "1 MiB/s until Mon 2026-11-30 06:00 CET, then unlimited"
        );
        assert_eq!(
            shown(&sundays, &berlin(2026, 12, 2, 1, 0)),
            "unlimited until Sun 2026-12-06 22:00 CET, then 1 MiB/s"
        );
    }

    #[test]
    fn entries_without_days_apply_every_day_and_one_limit_never_changes() {
        let nightly = schedule("01:00,0 06:00,100Mbit/s");
        assert_eq!(
            shown(&nightly, &berlin(2026, 12, 5, 3, 0)),
            "quiet hours until Sat 2026-12-05 06:00 CET, then 100 Mbit/s"
        );
        let flat = schedule("00:00,16Mbit/s");
        assert_eq!(shown(&flat, &berlin(2026, 12, 5, 3, 0)), "16 Mbit/s");
    }

    #[test]
    fn a_day_range_may_wrap_around_the_week() {
        let long_weekend = schedule("Fri-Mon 09:00,0 Fri-Mon 17:00,off");
        for day in [27, 28, 29, 30] {
            // Fri 27, Sat 28, Sun 29, Mon 30 November 2026.
            assert!(matches!(
                long_weekend.rate_at(&berlin(2026, 11, day, 12, 0)).0,
                Limit::Quiet
            ));
        }
        // Tuesday to Thursday: Monday's 17:00 entry still applies.
        assert_eq!(
            shown(&long_weekend, &berlin(2026, 12, 2, 12, 0)),
            "unlimited until Fri 2026-12-04 09:00 CET, then quiet hours"
        );
        assert_eq!(
            parse_days("Fri-Mon"),
            Some([true, false, false, false, true, true, true])
        );
        assert_eq!(
            parse_days("sat,Sun"),
            Some([false, false, false, false, false, true, true])
        );
        assert_eq!(
            parse_days("Mon,Wed-Thu"),
            Some([true, false, true, true, false, false, false])
        );
        assert_eq!(parse_days("08:00,off"), None);
    }

    #[test]
    fn clocks_going_forward_past_an_entry_start_it_at_the_jump() {
        // 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST; 02:30 never happens.
        let early = schedule("Sun 02:30,0 Sun 05:00,off");
        assert_eq!(
            shown(&early, &berlin(2026, 3, 29, 1, 59)),
            "unlimited until Sun 2026-03-29 03:00 CEST, then quiet hours"
        );
        let after_jump = berlin(2026, 3, 29, 3, 0);
        assert_eq!(after_jump.offset().seconds(), 7200);
        assert!(matches!(early.rate_at(&after_jump).0, Limit::Quiet));
        assert_eq!(
            shown(&early, &after_jump),
            "quiet hours until Sun 2026-03-29 05:00 CEST, then unlimited"
        );
    }

    #[test]
    fn clocks_going_back_do_not_undo_an_entry() {
        // 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET; 02:00-02:59 happen twice. The
        // 02:30 entry takes effect at the first 02:30 and stays through the repeated hour.
        let late = schedule("Sun 00:00,1MiB/s Sun 02:30,0 Sun 05:00,off");
        let tz = TimeZone::get("Europe/Berlin").expect("Europe/Berlin");
        let first_0215 = tz
            .to_ambiguous_zoned(date(2026, 10, 25).at(2, 15, 0, 0))
            .earlier()
            .expect("a time");
        let second_0215 = tz
            .to_ambiguous_zoned(date(2026, 10, 25).at(2, 15, 0, 0))
            .later()
            .expect("a time");
        assert_eq!(
            shown(&late, &first_0215),
            "1 MiB/s until Sun 2026-10-25 02:30 CEST, then quiet hours"
        );
        assert!(matches!(late.rate_at(&second_0215).0, Limit::Quiet));
        assert_eq!(
            shown(&late, &second_0215),
            "quiet hours until Sun 2026-10-25 05:00 CET, then unlimited"
        );
    }

    #[test]
    fn the_zone_of_the_time_given_is_the_one_used() {
        let office = schedule(OFFICE);
        let tokyo = TimeZone::get("Asia/Tokyo").expect("Asia/Tokyo");
        // 09:00 in Tokyo is 01:00 in Berlin: the schedule is read in the zone given.
        let morning = date(2026, 12, 1)
            .at(9, 0, 0, 0)
            .to_zoned(tokyo)
            .expect("time");
        assert_eq!(
            shown(&office, &morning),
            "20 MiB/s until Tue 2026-12-01 19:00 JST, then unlimited"
        );
    }

    #[test]
    fn a_rate_written_with_a_space_is_read_whole() {
        let spaced = schedule("Mon-Fri 08:00,20 MiB/s Mon-Fri 19:00,off");
        assert_eq!(
            spaced.entries(),
            ["Mon-Fri 08:00,20 MiB/s", "Mon-Fri 19:00,off"]
        );
        assert_eq!(
            shown(&spaced, &berlin(2026, 12, 1, 10, 0)),
            "20 MiB/s until Tue 2026-12-01 19:00 CET, then unlimited"
        );
    }

    #[test]
    fn status_says_what_applies_and_what_comes_next() {
        let office = BandwidthPlan::Scheduled(schedule(OFFICE));
        let now = BandwidthNow::of(&office, &berlin(2026, 11, 30, 10, 0));
        assert_eq!(now.text, "20 MiB/s until today 19:00, then unlimited");
        let json = now.to_json();
        assert_eq!(json["bytes_per_second"], 20 << 20);
        assert_eq!(json["next_change"], "2026-11-30T18:00:00Z");
        assert_eq!(json["next_limit"], "unlimited");
        let weekend = BandwidthNow::of(&office, &berlin(2026, 12, 5, 10, 0));
        assert_eq!(
            weekend.text,
            "quiet hours until Mon 7 Dec 08:00 (nothing is sent), then 20 MiB/s"
        );
        let sunday = BandwidthNow::of(&office, &berlin(2026, 12, 6, 23, 0));
        assert_eq!(
            sunday.text,
            "quiet hours until tomorrow 08:00 (nothing is sent), then 20 MiB/s"
        );
        assert_eq!(weekend.to_json()["quiet"], true);
        let fixed = BandwidthPlan::Fixed(Bandwidth::parse("16 Mbit/s").expect("a rate"));
        let fixed = BandwidthNow::of(&fixed, &berlin(2026, 12, 5, 10, 0));
        assert_eq!((fixed.text.as_str(), fixed.configured), ("16 Mbit/s", true));
        assert_eq!(fixed.to_json()["next_change"], serde_json::Value::Null);
        let none = BandwidthNow::of(&BandwidthPlan::Unlimited, &berlin(2026, 12, 5, 10, 0));
        assert_eq!((none.text.as_str(), none.configured), ("unlimited", false));
    }

    /// Hostile test of issue 13: "until Mon 08:00" on a Monday at 10:00 meant a week away,
    /// and read like today.
    #[test]
    fn a_change_a_week_away_is_shown_with_its_date_not_its_weekday_alone() {
        let weekly = BandwidthPlan::Scheduled(schedule("Mon 08:00,20MiB/s Mon 09:00,off"));
        let monday = BandwidthNow::of(&weekly, &berlin(2026, 11, 30, 10, 0));
        assert_eq!(
            monday.text,
            "unlimited until Mon 7 Dec 08:00, then 20 MiB/s"
        );
        let json = monday.to_json();
        let at = json["next_change"].as_str().expect("a time");
        assert_eq!(at, "2026-12-07T07:00:00Z");
        assert!(
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).is_ok(),
            "{at} is RFC 3339"
        );
        // Just before midnight, the change at 08:00 is tomorrow's.
        let sunday = BandwidthNow::of(&weekly, &berlin(2026, 12, 6, 23, 59));
        assert_eq!(sunday.text, "unlimited until tomorrow 08:00, then 20 MiB/s");
    }

    #[test]
    fn problems_name_the_entry() {
        assert_eq!(
            errors("Mon-Fri 08:00,20MiB/s Mon-Fri 19:00,fast"),
            [
                "entry 2 \"Mon-Fri 19:00,fast\": \"fast\" does not start with a number; write a size such as \"8 MiB\"; or \"off\" (no limit), \"0\" (quiet hours)"
            ]
        );
        let bare = errors("08:00,20");
        assert!(
            bare[0].starts_with("entry 1 \"08:00,20\": \"20\" has no unit"),
            "{bare:?}"
        );
        assert!(errors("25:00,off")[0].contains("not a time of day"));
        assert!(errors("8:0,off")[0].contains("HH:MM"));
        assert!(errors("Mon 08:00")[0].contains("no \",RATE\""));
        assert!(errors("Mon 08:00,")[0].contains("no rate after the comma"));
        assert!(errors("Mon-Fri")[0].contains("no HH:MM,RATE after"));
        assert!(errors("Mo 08:00,off")[0].contains("neither days"));
        assert!(errors("Sat Sun 08:00,off")[0].contains("in one word"));
        assert!(errors("")[0].contains("no entries"));
        assert!(errors("08:00,1bit/s")[0].contains("quiet hours"));
        let twice = errors("Mon-Fri 08:00,off Mon 08:00,0");
        assert_eq!(
            twice,
            ["entry 2 \"Mon 08:00,0\": entry 1 also sets Mon 08:00: one of them would never apply"]
        );
        // Every problem at once.
        assert_eq!(errors("08:00,fast 09:00,slow").len(), 2);
    }
}

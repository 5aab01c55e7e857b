//! `AccountingMax`, `AccountingStart`, `AccountingRule`: a byte budget per
//! day, week or month, and hibernation when it runs out
//! (hibernate.c). The state machine is sans-IO: the control thread feeds
//! it the relay's counted bytes once a second and applies what it
//! returns (refuse new circuits and streams, close every connection,
//! wake up).
//!
//! As C tor: past the *soft* limit (95 % of the budget, or 500 MB before
//! it, whichever is later) the relay stops accepting connections and
//! refuses new circuits (DESTROY HIBERNATING) and streams (END
//! HIBERNATING) while open ones carry on; at the budget itself it closes
//! every connection ("dormant"); a new period wakes it. The descriptor
//! says `hibernating 1` meanwhile. Unlike C tor, oxit wakes at the start
//! of the next period rather than at a random time within it (C spreads
//! relays whose budget lasts only part of a period over it; set
//! `BandwidthRate` to stretch a budget instead).

use crate::control::status::bytes_to_usage;
use crate::dir::time::{UnixTime, format_iso, parse_iso};

/// What counts against `AccountingMax` (C: get_accounting_bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccountingRule {
    /// The larger of bytes read and bytes written (C's default).
    #[default]
    Max,
    /// Read plus written.
    Sum,
    /// Read only.
    In,
    /// Written only.
    Out,
}

impl AccountingRule {
    pub fn parse(v: &str) -> Option<Self> {
        match v.to_ascii_lowercase().as_str() {
            "max" => Some(Self::Max),
            "sum" => Some(Self::Sum),
            "in" => Some(Self::In),
            "out" => Some(Self::Out),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Max => "max",
            Self::Sum => "sum",
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

/// The period's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Month,
    Week,
    Day,
}

/// `AccountingStart day|week|month [DAY] HH:MM` (local time), default
/// `month 1 00:00` (hibernate.c:accounting_parse_options).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountingStart {
    pub unit: Unit,
    /// Day of the month (1–28) or of the week (1 = Monday … 7 = Sunday).
    pub day: u8,
    pub hour: u8,
    pub min: u8,
}

impl Default for AccountingStart {
    fn default() -> Self {
        AccountingStart {
            unit: Unit::Month,
            day: 1,
            hour: 0,
            min: 0,
        }
    }
}

impl AccountingStart {
    /// Parse C tor's syntax; the error is C's message.
    pub fn parse(v: &str) -> Result<Self, String> {
        let items: Vec<&str> = v.split_ascii_whitespace().collect();
        let (Some(name), true) = (items.first().copied(), items.len() >= 2) else {
            return Err("Too few arguments to AccountingStart".into());
        };
        let unit = match name.to_ascii_lowercase().as_str() {
            "month" => Unit::Month,
            "week" => Unit::Week,
            "day" => Unit::Day,
            other => {
                return Err(format!(
                    "Unrecognized accounting unit '{other}': only 'month', 'week', and 'day' \
                     are supported."
                ));
            }
        };
        let day = match unit {
            Unit::Week => items
                .get(1)
                .and_then(|d| d.parse::<u8>().ok())
                .filter(|d| (1..=7).contains(d))
                .ok_or("Weekly accounting must begin on a day between 1 (Monday) and 7 (Sunday)")?,
            Unit::Month => items
                .get(1)
                .and_then(|d| d.parse::<u8>().ok())
                .filter(|d| (1..=28).contains(d))
                .ok_or("Monthly accounting must begin on a day between 1 and 28")?,
            Unit::Day => 0,
        };
        let idx = if unit == Unit::Day { 1 } else { 2 };
        if items.len() != idx + 1 {
            return Err(format!(
                "Accounting unit '{name}' requires {idx} argument{}.",
                if idx > 1 { "s" } else { "" }
            ));
        }
        let hhmm = items.get(idx).copied().unwrap_or_default();
        let (h, m) = hhmm
            .split_once(':')
            .ok_or("Accounting start time not parseable: not in HH:MM format")?;
        let hour = h
            .parse::<u8>()
            .ok()
            .filter(|h| *h <= 23)
            .ok_or("Accounting start time not parseable: bad hour.")?;
        let min = m
            .parse::<u8>()
            .ok()
            .filter(|m| *m <= 59)
            .ok_or("Accounting start time not parseable: bad minute")?;
        Ok(AccountingStart {
            unit,
            day,
            hour,
            min,
        })
    }

    /// The start of the period containing `now` (`end`: of the next one),
    /// in local time as C does (edge_of_accounting_period_containing).
    pub fn edge(&self, now: UnixTime, end: bool) -> UnixTime {
        let Some(mut tm) = crate::os::local_tm(now) else {
            return now;
        };
        let (h, m) = (i32::from(self.hour), i32::from(self.min));
        let before = tm.tm_hour < h || (tm.tm_hour == h && tm.tm_min < m);
        let day = i32::from(self.day);
        match self.unit {
            Unit::Month => {
                if tm.tm_mday < day || (tm.tm_mday == day && before) {
                    tm.tm_mon -= 1;
                }
                tm.tm_mday = day;
                if end {
                    tm.tm_mon += 1;
                }
            }
            Unit::Week => {
                // We say Sunday = 7, struct tm says 0.
                let wday = day % 7;
                let mut delta = (7 + tm.tm_wday - wday) % 7;
                if delta == 0 && before {
                    delta = 7;
                }
                tm.tm_mday -= delta;
                if end {
                    tm.tm_mday += 7;
                }
            }
            Unit::Day => {
                if before {
                    tm.tm_mday -= 1;
                }
                if end {
                    tm.tm_mday += 1;
                }
            }
        }
        tm.tm_hour = h;
        tm.tm_min = m;
        tm.tm_sec = 0;
        tm.tm_isdst = -1;
        // SAFETY: tm is plain data mktime reads and normalises; the
        // pointer is valid for the call.
        let out = unsafe { libc::mktime(&mut tm) };
        UnixTime::try_from(out).unwrap_or(now)
    }
}

/// Where the relay is (C: hibernate_state_t).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hibernation {
    Awake,
    /// Soft limit: no new connections, circuits or streams.
    Soft,
    /// Budget spent: no connections at all until the period ends.
    Dormant,
}

/// Shared with the ControlPort: the control thread stores a copy each
/// second (`None`: no accounting).
pub type SharedAccounting = std::sync::Arc<std::sync::Mutex<Option<Accounting>>>;

/// `GETINFO accounting/...` (control_getinfo.c:getinfo_helper_accounting);
/// `None` for a key it does not know.
pub fn getinfo(a: Option<&Accounting>, key: &str) -> Option<String> {
    let Some(a) = a else {
        return match key {
            "accounting/enabled" => Some("0".into()),
            "accounting/hibernating" => Some("awake".into()),
            "accounting/bytes" | "accounting/bytes-left" => Some("0 0".into()),
            _ => None,
        };
    };
    let left = |used: u64| a.max.saturating_sub(used);
    Some(match key {
        "accounting/enabled" => "1".into(),
        "accounting/hibernating" => match a.state {
            Hibernation::Awake => "awake",
            Hibernation::Soft => "soft",
            Hibernation::Dormant => "hard",
        }
        .into(),
        "accounting/bytes" => format!("{} {}", a.read, a.written),
        "accounting/bytes-left" => match a.rule {
            AccountingRule::Sum => {
                let l = left(a.used());
                format!("{l} {l}")
            }
            AccountingRule::In => format!("{} {}", left(a.read), a.max),
            AccountingRule::Out => format!("{} {}", a.max, left(a.written)),
            AccountingRule::Max => format!("{} {}", left(a.read), left(a.written)),
        },
        "accounting/interval-start" | "accounting/interval-wake" => format_iso(a.period.0),
        "accounting/interval-end" => format_iso(a.period.1),
        _ => return None,
    })
}

/// The budget and what was used of it in the current period.
#[derive(Clone, Debug)]
pub struct Accounting {
    max: u64,
    rule: AccountingRule,
    start: AccountingStart,
    period: (UnixTime, UnixTime),
    read: u64,
    written: u64,
    state: Hibernation,
}

const SOFT_LIMIT_BYTES: u64 = 500 * 1024 * 1024;

impl Accounting {
    pub fn new(max: u64, rule: AccountingRule, start: AccountingStart, now: UnixTime) -> Self {
        Accounting {
            max,
            rule,
            start,
            period: (start.edge(now, false), start.edge(now, true)),
            read: 0,
            written: 0,
            state: Hibernation::Awake,
        }
    }

    /// A new budget (a reload) keeps what was used this period; the
    /// state is worked out afresh against it (a raised budget wakes a
    /// hibernating relay). The new state if it changed.
    pub fn reconfigure(
        &mut self,
        max: u64,
        rule: AccountingRule,
        start: AccountingStart,
        now: UnixTime,
    ) -> Option<Hibernation> {
        let was = self.state;
        self.max = max;
        self.rule = rule;
        if start != self.start {
            self.start = start;
            self.period = (start.edge(now, false), start.edge(now, true));
        }
        self.state = Hibernation::Awake;
        self.note(now, 0, 0);
        (self.state != was).then_some(self.state)
    }

    pub fn state(&self) -> Hibernation {
        self.state
    }

    /// What the rule counts.
    pub fn used(&self) -> u64 {
        match self.rule {
            AccountingRule::Max => self.read.max(self.written),
            AccountingRule::Sum => self.read.saturating_add(self.written),
            AccountingRule::In => self.read,
            AccountingRule::Out => self.written,
        }
    }

    /// hibernate.c:hibernate_soft_limit_reached, without the expected-usage
    /// term (oxit has no previous period's rate to go by).
    fn soft_limit(&self) -> u64 {
        let pct = self.max / 20 * 19 + self.max % 20 * 19 / 20;
        pct.max(self.max.saturating_sub(SOFT_LIMIT_BYTES))
    }

    /// Count `read`/`written` more bytes at `now`; the new state if it
    /// changed (a new period resets the counts and wakes the relay).
    pub fn note(&mut self, now: UnixTime, read: u64, written: u64) -> Option<Hibernation> {
        let was = self.state;
        if now >= self.period.1 {
            self.period = (self.start.edge(now, false), self.start.edge(now, true));
            self.read = 0;
            self.written = 0;
            self.state = Hibernation::Awake;
        }
        self.read = self.read.saturating_add(read);
        self.written = self.written.saturating_add(written);
        let used = self.used();
        if self.max > 0 && used >= self.max {
            self.state = Hibernation::Dormant;
        } else if self.max > 0 && used >= self.soft_limit() && self.state == Hibernation::Awake {
            self.state = Hibernation::Soft;
        }
        (self.state != was).then_some(self.state)
    }

    /// The period's counts from the state file, if they are this period's
    /// (C's `AccountingIntervalStart`, `AccountingBytesReadInInterval`,
    /// `AccountingBytesWrittenInInterval`).
    /// Then the state those counts put the relay in at `now`, when it
    /// is not awake: a relay restarted past its soft limit starts
    /// hibernating, not accepting for a second.
    pub fn restore<'a>(
        &mut self,
        now: UnixTime,
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Option<Hibernation> {
        let start = get("AccountingIntervalStart").and_then(parse_iso);
        if start == Some(self.period.0) {
            let n = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            self.read = n("AccountingBytesReadInInterval");
            self.written = n("AccountingBytesWrittenInInterval");
        }
        self.note(now, 0, 0)
    }

    /// The lines the state file keeps.
    pub fn state_entries(&self) -> Vec<(String, String)> {
        vec![
            ("AccountingIntervalStart".into(), format_iso(self.period.0)),
            (
                "AccountingBytesReadInInterval".into(),
                self.read.to_string(),
            ),
            (
                "AccountingBytesWrittenInInterval".into(),
                self.written.to_string(),
            ),
        ]
    }

    /// The heartbeat's accounting line (status.c:log_accounting).
    pub fn heartbeat_line(&self, now: UnixTime) -> String {
        let left = self.period.1.saturating_sub(now);
        format!(
            "Heartbeat: Accounting enabled. Sent: {}, Received: {}, Used: {} / {}, Rule: {}. \
             The current accounting interval ends on {}, in {}.",
            bytes_to_usage(self.written),
            bytes_to_usage(self.read),
            bytes_to_usage(self.used()),
            bytes_to_usage(self.max),
            self.rule.name(),
            format_iso(self.period.1),
            duration(left)
        )
    }

    /// When the period ends.
    #[cfg(test)]
    fn period_end(&self) -> UnixTime {
        self.period.1
    }
}

/// time_fmt.c:format_time_interval.
fn duration(secs: u64) -> String {
    let (day, hour, min, sec) = (
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if day > 0 {
        format!("{day} days, {hour} hours, {min} minutes")
    } else if hour > 0 {
        format!("{hour} hours, {min} minutes")
    } else if min > 0 {
        format!("{min} minutes, {sec} seconds")
    } else {
        format!("{sec} seconds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_c_tor_syntax_and_refuses_with_its_messages() {
        assert_eq!(
            AccountingStart::parse("week 1 10:00").unwrap(),
            AccountingStart {
                unit: Unit::Week,
                day: 1,
                hour: 10,
                min: 0
            }
        );
        assert_eq!(AccountingStart::parse("day 23:59").unwrap().unit, Unit::Day);
        for (bad, msg) in [
            ("month", "Too few arguments"),
            ("year 1 00:00", "Unrecognized accounting unit"),
            ("month 29 00:00", "between 1 and 28"),
            ("week 0 00:00", "1 (Monday)"),
            ("day 1 00:00", "requires 1 argument."),
            ("month 1 24:00", "bad hour"),
            ("month 1 12", "HH:MM"),
            ("month 1 12:60", "bad minute"),
        ] {
            let e = AccountingStart::parse(bad).unwrap_err();
            assert!(e.contains(msg), "{bad}: {e}");
        }
        assert_eq!(AccountingRule::parse("SUM"), Some(AccountingRule::Sum));
        assert_eq!(AccountingRule::parse("both"), None);
    }

    #[test]
    fn periods_follow_the_start() {
        let now = 1_780_000_000; // a Thursday in 2026
        for s in [
            "day 00:00",
            "day 13:30",
            "week 1 00:00",
            "week 7 06:15",
            "month 1 00:00",
            "month 28 23:59",
        ] {
            let st = AccountingStart::parse(s).unwrap();
            let (a, b) = (st.edge(now, false), st.edge(now, true));
            assert!(a <= now && now < b, "{s}: {a} {now} {b}");
            let len = b - a;
            let want = match st.unit {
                Unit::Day => 82_800..=90_000,
                Unit::Week => 601_200..=608_400,
                Unit::Month => 2_415_600..=2_682_000,
            };
            assert!(want.contains(&len), "{s}: {len}");
            // The next period starts where this one ends.
            assert_eq!(st.edge(b, false), b, "{s}");
        }
    }

    #[test]
    fn soft_then_dormant_then_a_new_period_wakes() {
        let now = 1_780_000_000;
        let start = AccountingStart::parse("day 00:00").unwrap();
        let mut a = Accounting::new(1000, AccountingRule::Max, start, now);
        assert_eq!(a.note(now, 900, 100), None);
        // 95 % of 1000.
        assert_eq!(a.note(now + 1, 50, 0), Some(Hibernation::Soft));
        assert_eq!(a.note(now + 2, 0, 800), None, "950 used, still soft");
        assert_eq!(a.note(now + 3, 50, 0), Some(Hibernation::Dormant));
        let end = a.period_end();
        assert_eq!(a.note(end, 10, 10), Some(Hibernation::Awake));
        assert_eq!(a.used(), 10);
    }

    #[test]
    fn getinfo_answers_as_c_tor() {
        let now = 1_780_000_000;
        let st = AccountingStart::parse("day 00:00").unwrap();
        assert_eq!(getinfo(None, "accounting/enabled").as_deref(), Some("0"));
        assert_eq!(getinfo(None, "accounting/nope"), None);
        let mut a = Accounting::new(1000, AccountingRule::Max, st, now);
        a.note(now, 960, 100);
        let g = |k| getinfo(Some(&a), k).unwrap();
        assert_eq!(g("accounting/enabled"), "1");
        assert_eq!(g("accounting/hibernating"), "soft");
        assert_eq!(g("accounting/bytes"), "960 100");
        assert_eq!(g("accounting/bytes-left"), "40 900");
        assert_eq!(g("accounting/interval-end"), format_iso(a.period_end()));
    }

    #[test]
    fn rules_count_what_they_say() {
        let now = 1_780_000_000;
        let st = AccountingStart::default();
        for (rule, used) in [
            (AccountingRule::Max, 70),
            (AccountingRule::Sum, 100),
            (AccountingRule::In, 30),
            (AccountingRule::Out, 70),
        ] {
            let mut a = Accounting::new(1 << 30, rule, st, now);
            a.note(now, 30, 70);
            assert_eq!(a.used(), used, "{rule:?}");
        }
        // 500 MB before a large budget, not 95 % of it.
        let a = Accounting::new(100 << 30, AccountingRule::Max, st, now);
        assert_eq!(a.soft_limit(), (100 << 30) - SOFT_LIMIT_BYTES);
    }

    #[test]
    fn the_state_file_carries_this_period_only() {
        let now = 1_780_000_000;
        let st = AccountingStart::default();
        let mut a = Accounting::new(1 << 30, AccountingRule::Sum, st, now);
        a.note(now, 5, 7);
        let lines: std::collections::HashMap<String, String> =
            a.state_entries().into_iter().collect();
        let get = |k: &str| lines.get(k).map(String::as_str);
        let mut b = Accounting::new(1 << 30, AccountingRule::Sum, st, now + 10);
        assert_eq!(b.restore(now + 10, get), None);
        assert_eq!(b.used(), 12);
        let later = a.period_end() + 1;
        let mut c = Accounting::new(1 << 30, AccountingRule::Sum, st, later);
        assert_eq!(c.restore(later, get), None);
        assert_eq!(c.used(), 0);
        // Restarted past the soft limit: hibernating from the start.
        let mut d = Accounting::new(12, AccountingRule::Sum, st, now + 10);
        assert_eq!(d.restore(now + 10, get), Some(Hibernation::Dormant));
    }
}

#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! The `DataDirectory/state` file, in C tor's format (statefile.c):
//! `Key value` lines under a comment header. oxit keeps only what it uses
//! (the bandwidth history) and carries every other line through unchanged,
//! so a data directory moved from C tor, or back to it, keeps its guards,
//! accounting and the rest (C tor keeps lines it does not know the same
//! way, in its `__extra` list).

use crate::dir::time::UnixTime;
use crate::dir::time::format_iso;

/// The file's name in `DataDirectory`.
pub const FILE: &str = "state";

/// The parsed lines, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateFile {
    lines: Vec<(String, String)>,
}

impl StateFile {
    /// Parse the file's text. Blank lines and comments are dropped (C tor
    /// rewrites its own header); a line is a key, whitespace, a value.
    pub fn parse(text: &str) -> StateFile {
        let lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| match l.split_once(|c: char| c.is_ascii_whitespace()) {
                Some((k, v)) => (k.to_string(), v.trim().to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect();
        StateFile { lines }
    }

    /// The value of the first line with `key` (keys compare as C tor's do,
    /// without case).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Replace every line with `key` by one line, where the first was (or
    /// at the end).
    pub fn set(&mut self, key: &str, value: String) {
        let mut value = Some(value);
        // The first line with `key` takes the value; the later ones go.
        self.lines.retain_mut(|(k, v)| {
            if !k.eq_ignore_ascii_case(key) {
                return true;
            }
            match value.take() {
                Some(new) => {
                    *k = key.to_string();
                    *v = new;
                    true
                }
                None => false,
            }
        });
        if let Some(value) = value {
            self.lines.push((key.to_string(), value));
        }
    }

    /// The file's text, with C tor's header and `TorVersion`/`LastWritten`
    /// brought up to date.
    pub fn render(&mut self, now: UnixTime) -> String {
        self.set("TorVersion", format!("oxit {}", env!("CARGO_PKG_VERSION")));
        self.set("LastWritten", format_iso(now));
        let mut out = format!(
            "# Tor state file last generated on {} UTC\n\
             # Other times below are in UTC\n\
             # You *do not* need to edit this file.\n\n",
            format_iso(now)
        );
        for (k, v) in &self.lines {
            out.push_str(k);
            if !v.is_empty() {
                out.push(' ');
                out.push_str(v);
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_lines_survive_and_ours_are_replaced() {
        let c_tor = "# Tor state file last generated on 2026-11-30 10:00:00 local time\n\
                     # Other times below are in UTC\n\
                     # You *do not* need to edit this file.\n\n\
                     AccountingBytesReadInInterval 0 bytes\n\
                     Guard in=default rsa_id=AAAA\n\
                     BWHistoryReadEnds 2026-11-30 09:00:00\n\
                     TorVersion Tor 0.4.9.3\n\
                     Guard in=default rsa_id=BBBB\n\
                     LastWritten 2026-11-30 10:00:00\n";
        let mut s = StateFile::parse(c_tor);
        assert_eq!(s.get("bwhistoryreadends"), Some("2026-11-30 09:00:00"));
        s.set("BWHistoryReadEnds", "2026-12-01 09:00:00".into());
        s.set("BWHistoryReadInterval", "86400".into());
        let text = s.render(1_800_000_000);
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            body,
            [
                "",
                "AccountingBytesReadInInterval 0 bytes",
                "Guard in=default rsa_id=AAAA",
                "BWHistoryReadEnds 2026-12-01 09:00:00",
                &format!("TorVersion oxit {}", env!("CARGO_PKG_VERSION")),
                "Guard in=default rsa_id=BBBB",
                "LastWritten 2027-01-15 08:00:00",
                "BWHistoryReadInterval 86400",
            ]
        );
        // What we write reads back the same.
        let mut again = StateFile::parse(&text);
        assert_eq!(again.render(1_800_000_000), text);
    }
}

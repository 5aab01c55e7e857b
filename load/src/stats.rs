//! What a run measured, and where it reads the relay's costs: CPU time and
//! memory of a process from `/proc`, the generator's own CPU from
//! `getrusage`, latencies in hdrhistograms (microseconds).

use hdrhistogram::Histogram;

/// CPU seconds (user, system) a process has used so far; zeros if it is
/// gone.
pub fn proc_cpu(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may
    // hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15: indices 11 and 12 here.
    (ticks(11) / hz, ticks(12) / hz)
}

/// A `/proc/PID/status` field in KiB (VmRSS, VmHWM).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// This process's CPU seconds, user + system.
pub fn self_cpu() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A latency histogram in microseconds, 1 µs to 100 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Counters a run adds up. Every counter is since the start of the
/// measured window once [`Counters::reset`] was called at its start.
#[derive(Default, Debug, Clone)]
pub struct Counters {
    /// Relay DATA payload bytes the client received (download).
    pub bytes_down: u64,
    /// Relay DATA payload bytes the client sent (upload).
    pub bytes_up: u64,
    /// Relay cells received / sent on circuits.
    pub cells_in: u64,
    pub cells_out: u64,
    pub streams_done: u64,
    pub streams_failed: u64,
    pub circuits_created: u64,
    pub circuits_failed: u64,
    /// Bytes compared with the pattern (sampled circuits).
    pub bytes_checked: u64,
    pub content_errors: u64,
    /// Cells no hop recognized, or that broke a rule.
    pub protocol_errors: u64,
}

impl Counters {
    pub fn reset(&mut self) {
        *self = Counters::default();
    }
}

/// One JSON object written by hand: flat keys, numbers and strings.
#[derive(Default)]
pub struct Json {
    parts: Vec<String>,
}

impl Json {
    pub fn num(&mut self, k: &str, v: f64) -> &mut Self {
        let v = if v.is_finite() { v } else { 0.0 };
        self.parts.push(format!("\"{k}\":{}", round(v)));
        self
    }

    pub fn int(&mut self, k: &str, v: u64) -> &mut Self {
        self.parts.push(format!("\"{k}\":{v}"));
        self
    }

    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        let esc: String = v
            .chars()
            .flat_map(|c| match c {
                '"' => vec!['\\', '"'],
                '\\' => vec!['\\', '\\'],
                c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).chars().collect(),
                c => vec![c],
            })
            .collect();
        self.parts.push(format!("\"{k}\":\"{esc}\""));
        self
    }

    pub fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.parts.push(format!("\"{k}\":{v}"));
        self
    }

    /// A nested object.
    pub fn obj(&mut self, k: &str, v: &Json) -> &mut Self {
        self.parts.push(format!("\"{k}\":{}", v.render()));
        self
    }

    /// p50/p99/p999/max and the count of a histogram, in microseconds.
    pub fn hist(&mut self, k: &str, h: &Histogram<u64>) -> &mut Self {
        let mut o = Json::default();
        o.int("count", h.len())
            .int("p50_us", h.value_at_quantile(0.5))
            .int("p99_us", h.value_at_quantile(0.99))
            .int("p999_us", h.value_at_quantile(0.999))
            .int("max_us", h.max());
        self.obj(k, &o)
    }

    pub fn render(&self) -> String {
        format!("{{{}}}", self.parts.join(","))
    }
}

/// Six significant digits are plenty and keep the file readable.
fn round(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_flat_and_escaped() {
        let mut j = Json::default();
        j.num("a", 1.5).int("b", 2).str("c", "x\"y").bool("d", true);
        assert_eq!(j.render(), r#"{"a":1.5,"b":2,"c":"x\"y","d":true}"#);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(proc_status_kib(pid, "VmRSS") > 0);
        let _ = proc_cpu(pid);
    }
}

//! The heartbeat's first line, in C tor's words (status.c:log_heartbeat),
//! so that operators' log watchers keep matching it: uptime, open
//! circuits, bytes sent and received, connections by family, and whether
//! the relay hibernates.

/// What the line reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heartbeat {
    pub uptime_secs: u64,
    pub circuits: u64,
    pub sent: u64,
    pub received: u64,
    /// Connections accepted, IPv4 and IPv6.
    pub incoming: [u64; 2],
    /// Connections made (links and exit streams), IPv4 and IPv6.
    pub outgoing: [u64; 2],
    pub hibernating: bool,
}

impl Heartbeat {
    pub fn line(&self) -> String {
        format!(
            "Heartbeat: Tor's uptime is {}, with {} circuits open. I've sent {} and received {}. \
             I've received {} connections on IPv4 and {} on IPv6. I've made {} connections with \
             IPv4 and {} with IPv6.{}",
            secs_to_uptime(self.uptime_secs),
            self.circuits,
            bytes_to_usage(self.sent),
            bytes_to_usage(self.received),
            self.incoming[0],
            self.incoming[1],
            self.outgoing[0],
            self.outgoing[1],
            if self.hibernating {
                " We are currently hibernating."
            } else {
                ""
            }
        )
    }
}

/// status.c:secs_to_uptime.
pub fn secs_to_uptime(secs: u64) -> String {
    let days = secs / 86400;
    let hours = secs % 86400 / 3600;
    let minutes = secs % 3600 / 60;
    match days {
        0 => format!("{hours}:{minutes:02} hours"),
        1 => format!("1 day {hours}:{minutes:02} hours"),
        d => format!("{d} days {hours}:{minutes:02} hours"),
    }
}

/// status.c:bytes_to_usage.
pub fn bytes_to_usage(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{} kB", bytes >> 10)
    } else if bytes < 1 << 30 {
        format!("{:.2} MB", bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.2} GB", bytes as f64 / f64::from(1u32 << 30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_tor_formats() {
        // The values of C tor's test_status.c.
        assert_eq!(secs_to_uptime(0), "0:00 hours");
        assert_eq!(secs_to_uptime(3599), "0:59 hours");
        assert_eq!(
            secs_to_uptime(86400 + 3600 * 2 + 60 * 5),
            "1 day 2:05 hours"
        );
        assert_eq!(secs_to_uptime(86400 * 3 + 59), "3 days 0:00 hours");
        assert_eq!(bytes_to_usage(0), "0 kB");
        assert_eq!(bytes_to_usage(1 << 20 | 1 << 10), "1.00 MB");
        assert_eq!(bytes_to_usage(3 << 29), "1.50 GB");
        let h = Heartbeat {
            uptime_secs: 3600,
            circuits: 7,
            sent: 2 << 20,
            received: 4096,
            incoming: [3, 1],
            outgoing: [5, 0],
            hibernating: true,
        };
        assert_eq!(
            h.line(),
            "Heartbeat: Tor's uptime is 1:00 hours, with 7 circuits open. I've sent 2.00 MB and \
             received 4 kB. I've received 3 connections on IPv4 and 1 on IPv6. I've made 5 \
             connections with IPv4 and 0 with IPv6. We are currently hibernating."
        );
    }
}

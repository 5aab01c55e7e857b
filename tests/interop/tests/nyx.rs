//! The ControlPort against the tools operators run: Debian's nyx (through
//! stem) shows oxit's nickname, fingerprint and bandwidth graph, and a
//! plain TCP client (no stem) checks the protocol itself: PROTOCOLINFO,
//! refusal before authentication, AUTHENTICATE with the cookie, GETINFO
//! traffic figures, BW events, SIGNAL HALT.
//!
//! nyx runs inside a detached tmux session of the test's own tmux server
//! (`tmux -L`), with HOME in a temporary directory so it writes nothing of
//! the user's; the pane is captured with `tmux capture-pane -p` and printed.
//! Traffic comes from raw clients that open links and CREATE_FAST circuits
//! on the ORPort for as long as the test runs.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use oxit_interop::harness::{
    IoBackend, OxitOptions, OxitProcess, free_tcp_port, metrics, require_program,
};
use oxit_interop::rawclient::RawClient;

const STEP: Duration = Duration::from_secs(10);
/// How long nyx gets to draw oxit with moving bandwidth figures.
const NYX_WAIT: Duration = Duration::from_secs(30);
/// How long nyx runs at least before its screen is taken.
const NYX_MIN: Duration = Duration::from_secs(6);
const NYX: &str = "/usr/bin/nyx";
const TMUX: &str = "/usr/bin/tmux";

/// A control connection: commands and their replies, events set aside.
struct Control {
    r: BufReader<TcpStream>,
    w: TcpStream,
    events: Vec<String>,
}

impl Control {
    fn connect(addr: SocketAddr) -> Control {
        let s = TcpStream::connect_timeout(&addr, STEP).expect("connect to the ControlPort");
        s.set_read_timeout(Some(STEP)).unwrap();
        Control {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            events: Vec::new(),
        }
    }

    /// One line without CRLF; None at EOF.
    fn line(&mut self) -> Option<String> {
        let mut l = String::new();
        match self.r.read_line(&mut l) {
            Ok(0) => None,
            Ok(_) => Some(l.trim_end_matches(['\r', '\n']).to_owned()),
            Err(e) => panic!("reading from the ControlPort: {e}"),
        }
    }

    /// Send `cmd`; the reply's lines (data blocks included), up to its
    /// end line. Asynchronous events (650) are kept in `events`.
    fn cmd(&mut self, cmd: &str) -> Vec<String> {
        self.w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let mut out = Vec::new();
        loop {
            let l = self
                .line()
                .unwrap_or_else(|| panic!("{cmd}: connection closed after {out:?}"));
            if l.starts_with("650") {
                self.events.push(l);
                continue;
            }
            let end = l.len() >= 4 && l.as_bytes()[3] == b' ';
            let data = l.len() >= 4 && l.as_bytes()[3] == b'+';
            out.push(l);
            if data {
                loop {
                    let d = self.line().expect("data block");
                    if d == "." {
                        break;
                    }
                    out.push(d);
                }
            }
            if end {
                return out;
            }
        }
    }

    /// The next event (in arrival order).
    fn event(&mut self) -> String {
        if self.events.is_empty() {
            self.line().expect("an event")
        } else {
            self.events.remove(0)
        }
    }

    /// The next `650 BW read written` event (other events are dropped).
    fn bw_event(&mut self) -> (u64, u64) {
        loop {
            if let Some(rest) = self.event().strip_prefix("650 BW ") {
                let mut n = rest.split(' ').map(|x| x.parse::<u64>().unwrap());
                return (n.next().unwrap(), n.next().unwrap());
            }
        }
    }

    /// Whether the server closed the connection (EOF) within the bound.
    fn closed(&mut self) -> bool {
        matches!(self.r.read_line(&mut String::new()), Ok(0))
    }
}

fn getinfo_u64(c: &mut Control, key: &str) -> u64 {
    let r = c.cmd(&format!("GETINFO {key}"));
    assert_eq!(r.last().map(String::as_str), Some("250 OK"), "{r:?}");
    r[0].strip_prefix(&format!("250-{key}="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("GETINFO {key}: {r:?}"))
}

/// Raw clients that keep links and circuits coming until dropped, so that
/// the relay's traffic counters move while nyx watches.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Traffic {
    fn start(or_addr: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                // A refused or broken link only means less traffic; the
                // assertions on the figures say whether there was enough.
                if let Ok(mut c) = RawClient::connect(or_addr) {
                    for _ in 0..20 {
                        if c.create_fast(STEP).is_err() {
                            break;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A tmux server of the test's own (`-L`), killed on drop with whatever
/// runs in it.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(TMUX)
            // CI runs without a terminal; tmux's own sessions need no TERM
            // but refuse an unknown one.
            .env("TERM", "xterm-256color")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn capture(&self) -> String {
        let o = self.run(&["capture-pane", "-p", "-t", "nyx"]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The pane as text with nyx's graph bars drawn as `#`: nyx draws
    /// them as coloured reverse-video spaces, which a plain capture loses.
    fn capture_with_bars(&self) -> String {
        let o = self.run(&["capture-pane", "-p", "-e", "-N", "-t", "nyx"]);
        bars_as_text(&String::from_utf8_lossy(&o.stdout))
    }
}

/// Drop the SGR escapes of `capture-pane -e` output, turning spaces shown
/// in reverse video with a foreground colour (nyx's bars) into `#`.
fn bars_as_text(ansi: &str) -> String {
    let mut out = String::with_capacity(ansi.len());
    let (mut reverse, mut coloured) = (false, false);
    let mut chars = ansi.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            let mut params = String::new();
            let mut end = ' ';
            for p in chars.by_ref() {
                if p.is_ascii_alphabetic() {
                    end = p;
                    break;
                }
                params.push(p);
            }
            if end != 'm' {
                continue;
            }
            let mut ps = params.split(';').map(|p| p.parse::<u32>().unwrap_or(0));
            while let Some(p) = ps.next() {
                match p {
                    0 => (reverse, coloured) = (false, false),
                    7 => reverse = true,
                    27 => reverse = false,
                    30..=37 | 90..=97 => coloured = true,
                    39 => coloured = false,
                    // 256-colour and RGB forms carry their values along.
                    38 => {
                        coloured = true;
                        let n = if ps.next() == Some(5) { 1 } else { 3 };
                        for _ in 0..n {
                            ps.next();
                        }
                    }
                    _ => {}
                }
            }
            continue;
        }
        out.push(if c == ' ' && reverse && coloured {
            '#'
        } else {
            c
        });
    }
    // `-N` keeps the bars at line ends, and every other trailing space.
    let lines: Vec<&str> = out.trim_end().lines().map(str::trim_end).collect();
    lines.join("\n") + "\n"
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The figures in nyx's `Download (1.2 KB/sec - avg: 0.8 KB/sec, total:
/// 40.1 KB):` heading: (current, average, total) as written.
fn heading(screen: &str, what: &str) -> Option<(String, String, String)> {
    let start = screen.find(&format!("{what} ("))? + what.len() + 2;
    let rest = &screen[start..];
    let inner = &rest[..rest.find("):")?];
    let (now, rest) = inner.split_once(" - avg: ")?;
    let (avg, total) = rest.split_once(", total: ")?;
    Some((
        now.trim().to_owned(),
        avg.trim().to_owned(),
        total.trim().to_owned(),
    ))
}

/// A nyx figure such as "12.3 KB" or "1.2 KB/sec" that is not zero.
fn nonzero(figure: &str) -> bool {
    figure
        .split(' ')
        .next()
        .and_then(|n| n.parse::<f64>().ok())
        .is_some_and(|n| n > 0.0)
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether process `pid` (our child) has exited (a zombie until reaped).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

fn fingerprint(data_dir: &Path) -> String {
    let f = std::fs::read_to_string(data_dir.join("fingerprint")).expect("fingerprint file");
    f.split_whitespace()
        .nth(1)
        .expect("nickname FINGERPRINT")
        .to_owned()
}

#[test]
fn nyx_shows_oxit() {
    require_program(NYX, "nyx").expect("nyx");
    require_program(TMUX, "tmux").expect("tmux");
    let port = free_tcp_port().unwrap();
    let mut opts = OxitOptions::new(IoBackend::Epoll);
    let metrics_port = free_tcp_port().unwrap();
    opts.extra_torrc = format!(
        "ControlPort {port}\nCookieAuthentication 1\nCountPrivateBandwidth 1\n{}",
        metrics::torrc_lines(metrics_port)
    );
    let oxit = OxitProcess::start(&opts).expect("start oxit");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let cookie_path: PathBuf = oxit.data_dir().join("control_auth_cookie");
    wait_for("the cookie file", STEP, || {
        std::fs::metadata(&cookie_path).is_ok_and(|m| m.len() == 32)
            && TcpStream::connect(addr).is_ok()
    });
    let cookie = std::fs::read(&cookie_path).unwrap();
    let fp = fingerprint(&oxit.data_dir());

    // The protocol, by hand.
    let mut c = Control::connect(addr);
    let r = c.cmd("PROTOCOLINFO 1");
    assert_eq!(r[0], "250-PROTOCOLINFO 1");
    assert_eq!(
        r[1],
        format!(
            "250-AUTH METHODS=COOKIE,SAFECOOKIE COOKIEFILE=\"{}\"",
            cookie_path.display()
        )
    );
    assert!(r[2].starts_with("250-VERSION Tor=\"0.4.9.0-oxit-"), "{r:?}");
    assert_eq!(r[3], "250 OK");

    let mut anon = Control::connect(addr);
    assert_eq!(
        anon.cmd("GETINFO version"),
        ["514 Authentication required."]
    );
    assert!(anon.closed(), "closed after a command before AUTHENTICATE");
    assert_eq!(
        c.cmd(&format!("AUTHENTICATE {}", hex::encode(&cookie))),
        ["250 OK"]
    );
    assert_eq!(
        c.cmd("GETINFO fingerprint"),
        [format!("250-fingerprint={fp}"), "250 OK".to_owned()]
    );
    assert_eq!(
        c.cmd("GETCONF Nickname SETCONF"),
        ["552 Unrecognized configuration key \"SETCONF\""]
    );
    assert!(c.cmd("SETCONF Nickname=x")[0].starts_with("553 "));
    let read_before = getinfo_u64(&mut c, "traffic/read");

    let traffic = Traffic::start(oxit.or_addr());
    assert_eq!(c.cmd("SETEVENTS BW WARN"), ["250 OK"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (r, w) = c.bw_event();
        if r > 0 && w > 0 {
            eprintln!("BW event: read {r}, written {w}");
            break;
        }
        assert!(Instant::now() < deadline, "no BW event with traffic");
    }
    // A failed authentication elsewhere: refused, closed, and logged as
    // a warning, which reaches this controller as a WARN event.
    let mut wrong = Control::connect(addr);
    assert_eq!(
        wrong.cmd(&format!("AUTHENTICATE {}", "00".repeat(32))),
        ["515 Authentication failed: Authentication cookie did not match expected value."]
    );
    assert!(wrong.closed(), "closed after a failed AUTHENTICATE");
    loop {
        let e = c.event();
        if e.starts_with("650 WARN ") {
            assert!(e.contains("Controller authentication failed"), "{e}");
            break;
        }
    }
    let read_after = getinfo_u64(&mut c, "traffic/read");
    assert!(read_after > read_before, "{read_before} -> {read_after}");
    assert!(getinfo_u64(&mut c, "traffic/written") > 0);

    // nyx, as an operator would start it.
    let home = tempfile::Builder::new()
        .prefix("oxit-nyx-home-")
        .tempdir()
        .unwrap();
    let tmux = Tmux {
        socket: format!("oxit-nyx-{}", std::process::id()),
    };
    let cmd = format!(
        "env HOME={home} XDG_CONFIG_HOME={home}/.config XDG_DATA_HOME={home}/.local \
         XDG_CACHE_HOME={home}/.cache {NYX} -i 127.0.0.1:{port}; echo nyx exited: $?; sleep 60",
        home = home.path().display()
    );
    let o = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "nyx",
        "-x",
        "160",
        "-y",
        "50",
        &cmd,
    ]);
    assert!(o.status.success(), "tmux: {o:?}");
    let launched = Instant::now();
    let deadline = launched + NYX_WAIT;
    let screen = loop {
        let screen = tmux.capture();
        let down = heading(&screen, "Download");
        let up = heading(&screen, "Upload");
        let moving = |h: &Option<(String, String, String)>| {
            h.as_ref()
                .is_some_and(|(now, avg, total)| nonzero(total) && (nonzero(now) || nonzero(avg)))
        };
        // A few seconds of graph make the printed screen worth reading.
        if launched.elapsed() >= NYX_MIN
            && screen.contains("oxitinterop")
            && screen.contains(&fp)
            && moving(&down)
            && moving(&up)
        {
            break screen;
        }
        assert!(
            Instant::now() < deadline && !screen.contains("nyx exited"),
            "nyx does not show oxit with traffic:\n{screen}\n--- oxit log ---\n{}",
            oxit.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let drawn = tmux.capture_with_bars();
    println!(
        "--- nyx -i 127.0.0.1:{port} (tmux 160x50; graph bars as #) ---\n{drawn}--- end of nyx screen ---"
    );
    assert!(
        screen.contains("Tor 0.4.9.0-oxit-"),
        "version in the header"
    );
    assert!(
        screen.contains("Control Port (cookie)"),
        "cookie auth shown"
    );
    assert!(
        screen.contains("[NOTICE]"),
        "oxit's log lines in the events panel"
    );
    // The MetricsPort counts the control connections as C tor does: nyx's
    // and ours open now, on the one listener.
    let page = metrics::scrape(SocketAddr::from((Ipv4Addr::LOCALHOST, metrics_port)))
        .expect("scrape the MetricsPort");
    let conn = |name: &str, ty: &str, dir: &str, state: &str| {
        let series = format!(
            "{name}{{type=\"{ty}\",direction=\"{dir}\",state=\"{state}\",family=\"ipv4\"}}"
        );
        metrics::sample(&page, &series).unwrap_or_else(|| panic!("no {series}:\n{page}"))
    };
    assert_eq!(
        conn(
            "tor_relay_connections",
            "Control listener",
            "initiated",
            "opened"
        ),
        1.0
    );
    assert!(conn("tor_relay_connections", "Control", "received", "opened") >= 2.0);
    assert!(
        conn(
            "tor_relay_connections_total",
            "Control",
            "received",
            "created"
        ) >= 3.0
    );
    drop(tmux);
    drop(traffic);

    // SIGNAL HALT is SIGTERM: a clean exit.
    let pid = oxit.pid();
    assert_eq!(c.cmd("SIGNAL HALT"), ["250 OK"]);
    wait_for("oxit to exit after SIGNAL HALT", STEP, || exited(pid));
    assert!(oxit.stop().expect("reap oxit"), "oxit exits 0 on HALT");
}

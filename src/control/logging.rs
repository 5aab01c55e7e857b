//! Logging set up from the configuration's `Log` lines, written in C tor's
//! line format (`Nov 25 15:02:14.123 [notice] message`, log.c:log_prefix_).
//!
//! This module owns turning `Vec<LogSpec>` into a `tracing` subscriber and
//! writing lines to stdout, stderr, files and syslog. It does not parse
//! `Log` lines (`crate::config` does) and does not decide what is logged.
//!
//! Severity mapping. C tor has five severities, `tracing` five levels; the
//! mapping is a shift so that `tracing::info!` is what an operator sees by
//! default, as C tor's `notice` is:
//!
//! | C tor    | tracing  |
//! |----------|----------|
//! | `err`    | `ERROR`  |
//! | `warn`   | `WARN`   |
//! | `notice` | `INFO`   |
//! | `info`   | `DEBUG`  |
//! | `debug`  | `TRACE`  |
//!
//! Log domains (`[net,~mm]`) are kept by the parser but not applied here:
//! every range of a `Log` line is checked on severity only (docs/options.md
//! says so).
//!
//! `SafeLogging`: a log line that names a client's address or a
//! destination wraps it in [`Scrub`], which prints `[scrubbed]` unless the
//! operator set `SafeLogging 0` (C: safe_str, connection_describe_peer).

use std::ffi::CString;
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use crate::config::{LogSpec, LogTarget, Severity};

static SAFE_LOGGING: AtomicBool = AtomicBool::new(true);

/// SIGUSR2: every sink logs everything, down to debug.
static DEBUG_ALL: AtomicBool = AtomicBool::new(false);

/// The installed logging: the global level filter's handle, the level the
/// `Log` lines asked for, and the sinks (swapped whole on a reload).
struct Installed {
    level: tracing_subscriber::reload::Handle<LevelFilter, tracing_subscriber::Registry>,
    configured: Mutex<LevelFilter>,
    sinks: Arc<RwLock<Arc<[Sink]>>>,
}

static INSTALLED: std::sync::OnceLock<Installed> = std::sync::OnceLock::new();

/// SIGUSR2: switch every log to debug, or back to what the `Log` lines
/// say. Returns whether debug is now on. C tor switches to debug until
/// the next SIGHUP; oxit toggles (and a SIGHUP ends it too).
pub fn toggle_debug() -> bool {
    let on = !DEBUG_ALL.fetch_xor(true, Ordering::Relaxed);
    apply_level(on);
    on
}

fn apply_level(debug: bool) {
    let Some(i) = INSTALLED.get() else {
        return;
    };
    let level = if debug {
        LevelFilter::TRACE
    } else {
        i.configured.lock().map_or(LevelFilter::INFO, |l| *l)
    };
    if let Err(e) = i.level.modify(|f| *f = level) {
        tracing::warn!("cannot change the log level: {e}");
    }
}

/// SIGHUP: open the sinks of `specs` (reopening every log file, so that a
/// file logrotate moved away is created afresh) and swap them in. If one
/// cannot be opened the old sinks stay, and the error says which.
pub fn reconfigure(specs: &[LogSpec]) -> Result<(), LoggingError> {
    let layer = CtorLogLayer::new(specs)?;
    let Some(i) = INSTALLED.get() else {
        return Err(LoggingError::NotSet);
    };
    let max = layer.max_level();
    let new = layer.current();
    match i.sinks.write() {
        Ok(mut s) => *s = new,
        Err(p) => *p.into_inner() = new,
    }
    if let Ok(mut c) = i.configured.lock() {
        *c = max;
    }
    DEBUG_ALL.store(false, Ordering::Relaxed);
    apply_level(false);
    Ok(())
}

/// Set from `SafeLogging` once at start (logging only reads it, never on
/// the per-cell path).
pub fn set_safe_logging(on: bool) {
    SAFE_LOGGING.store(on, Ordering::Relaxed);
}

/// Something a log line may show only with `SafeLogging 0`.
pub struct Scrub<T>(pub T);

impl<T: fmt::Display> fmt::Display for Scrub<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if SAFE_LOGGING.load(Ordering::Relaxed) {
            f.write_str("[scrubbed]")
        } else {
            self.0.fmt(f)
        }
    }
}

/// Setting up logging failed; startup stops.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// A `Log ... file PATH` whose file cannot be opened for appending.
    #[error("cannot open log file {path}: {source}")]
    OpenFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A global subscriber was already installed (a second `init`).
    #[error("logging is already set up: {0}")]
    AlreadySet(String),
    /// A reload before [`init`].
    #[error("logging is not set up yet")]
    NotSet,
}

/// The C tor severity a `tracing` level stands for (see the module doc).
pub fn severity_of(level: &Level) -> Severity {
    match *level {
        Level::ERROR => Severity::Err,
        Level::WARN => Severity::Warn,
        Level::INFO => Severity::Notice,
        Level::DEBUG => Severity::Info,
        Level::TRACE => Severity::Debug,
    }
}

/// The most verbose `tracing` level that still reaches `sev`.
pub fn level_filter(sev: Severity) -> LevelFilter {
    match sev {
        Severity::Err => LevelFilter::ERROR,
        Severity::Warn => LevelFilter::WARN,
        Severity::Notice => LevelFilter::INFO,
        Severity::Info => LevelFilter::DEBUG,
        Severity::Debug => LevelFilter::TRACE,
    }
}

/// Where one `Log` line writes.
enum Writer {
    Stdout,
    Stderr,
    File(Mutex<File>),
    Syslog,
    #[cfg(test)]
    Buffer(std::sync::Arc<Mutex<Vec<u8>>>),
}

struct Sink {
    /// `(min, max)` of every range on the line.
    ranges: Vec<(Severity, Severity)>,
    writer: Writer,
}

impl Sink {
    fn wants(&self, sev: Severity) -> bool {
        DEBUG_ALL.load(Ordering::Relaxed)
            || self
                .ranges
                .iter()
                .any(|&(min, max)| min <= sev && sev <= max)
    }

    fn write(&self, now: SystemTime, sev: Severity, msg: &str) {
        // A failed log write has nowhere to be reported; dropping the line
        // is what C tor does too (log.c ignores write errors).
        let _ = match &self.writer {
            Writer::Stdout => io::stdout()
                .lock()
                .write_all(format_line(now, sev, msg).as_bytes()),
            Writer::Stderr => io::stderr()
                .lock()
                .write_all(format_line(now, sev, msg).as_bytes()),
            Writer::File(f) => match f.lock() {
                Ok(mut f) => f.write_all(format_line(now, sev, msg).as_bytes()),
                Err(_) => Ok(()),
            },
            Writer::Syslog => {
                syslog(sev, msg);
                Ok(())
            }
            #[cfg(test)]
            Writer::Buffer(b) => match b.lock() {
                Ok(mut b) => b.write_all(format_line(now, sev, msg).as_bytes()),
                Err(_) => Ok(()),
            },
        };
    }
}

/// A `tracing` layer writing C tor-style lines to the configured sinks.
/// The sinks sit behind a lock so that a reload can swap them; an event
/// takes it for reading (logging is never on the per-cell path).
pub struct CtorLogLayer {
    sinks: Arc<RwLock<Arc<[Sink]>>>,
}

impl CtorLogLayer {
    /// Open every sink of `specs` (files are created 0600 and appended to).
    pub fn new(specs: &[LogSpec]) -> Result<Self, LoggingError> {
        let mut sinks = Vec::with_capacity(specs.len());
        for spec in specs {
            let writer = match &spec.target {
                LogTarget::Stdout => Writer::Stdout,
                LogTarget::Stderr => Writer::Stderr,
                LogTarget::File(path) => Writer::File(Mutex::new(open_log_file(path)?)),
                LogTarget::Syslog => {
                    open_syslog();
                    Writer::Syslog
                }
            };
            sinks.push(Sink {
                ranges: spec.ranges.iter().map(|r| (r.min, r.max)).collect(),
                writer,
            });
        }
        Ok(CtorLogLayer::from_sinks(sinks))
    }

    fn from_sinks(sinks: Vec<Sink>) -> Self {
        CtorLogLayer {
            sinks: Arc::new(RwLock::new(sinks.into())),
        }
    }

    /// The current sinks (a cheap clone; a reload does not wait for a
    /// line being written).
    fn current(&self) -> Arc<[Sink]> {
        match self.sinks.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The most verbose level any sink wants (events below it are never
    /// even built).
    pub fn max_level(&self) -> LevelFilter {
        self.current()
            .iter()
            .flat_map(|s| s.ranges.iter().map(|r| r.0))
            .min()
            .map_or(LevelFilter::OFF, level_filter)
    }
}

impl<S: Subscriber> Layer<S> for CtorLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let sev = severity_of(event.metadata().level());
        feed_controllers(sev, event);
        let sinks = self.current();
        if !sinks.iter().any(|s| s.wants(sev)) {
            return;
        }
        let mut v = MessageVisitor::default();
        event.record(&mut v);
        let msg = v.into_message();
        let now = SystemTime::now();
        for s in sinks.iter().filter(|s| s.wants(sev)) {
            s.write(now, sev, &msg);
        }
    }
}

/// Install the global subscriber for `specs`. Call once, early in `main`.
pub fn init(specs: &[LogSpec]) -> Result<(), LoggingError> {
    let layer = CtorLogLayer::new(specs)?;
    let max = layer.max_level();
    let (filter, handle) = tracing_subscriber::reload::Layer::new(max);
    let _ = INSTALLED.set(Installed {
        level: handle,
        configured: Mutex::new(max),
        sinks: layer.sinks.clone(),
    });
    let subscriber = tracing_subscriber::registry().with(filter).with(layer);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| LoggingError::AlreadySet(e.to_string()))
}

fn open_log_file(path: &PathBuf) -> Result<File, LoggingError> {
    // C tor opens log files O_WRONLY|O_CREAT|O_APPEND with mode 0600
    // (log.c:add_file_log).
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| LoggingError::OpenFile {
            path: path.clone(),
            source,
        })
}

fn open_syslog() {
    // `ident` must outlive every later syslog call: a static C string.
    // SAFETY: openlog has no preconditions; the ident pointer is 'static.
    unsafe {
        libc::openlog(
            c"oxit".as_ptr(),
            libc::LOG_PID | libc::LOG_NDELAY,
            libc::LOG_DAEMON,
        )
    };
}

fn syslog(sev: Severity, msg: &str) {
    // log.c:add_syslog_log maps severities onto syslog priorities 1:1.
    let prio = match sev {
        Severity::Debug => libc::LOG_DEBUG,
        Severity::Info => libc::LOG_INFO,
        Severity::Notice => libc::LOG_NOTICE,
        Severity::Warn => libc::LOG_WARNING,
        Severity::Err => libc::LOG_ERR,
    };
    // Interior NULs cannot cross into C; replace them.
    let Ok(c) = CString::new(msg.replace('\0', "\\0")) else {
        return;
    };
    // SAFETY: the format is a static "%s" and its one argument a valid
    // NUL-terminated string that lives across the call.
    unsafe { libc::syslog(prio, c"%s".as_ptr(), c.as_ptr()) };
}

/// One log line: `Mon DD HH:MM:SS.mmm [severity] message\n` in local time
/// (log.c:log_prefix_, with the default `LogTimeGranularity` of 1 ms).
pub fn format_line(now: SystemTime, sev: Severity, msg: &str) -> String {
    let mut s = String::with_capacity(msg.len() + 32);
    // Writing to a String cannot fail.
    let _ = write!(s, "{} [{sev}] ", LocalTime::of(now));
    // A message is one line: embedded newlines would forge log lines.
    for c in msg.chars() {
        match c {
            '\n' | '\r' => s.push(' '),
            c => s.push(c),
        }
    }
    s.push('\n');
    s
}

/// Broken-down local time to the millisecond.
struct LocalTime {
    month: usize,
    day: i32,
    hour: i32,
    min: i32,
    sec: i32,
    millis: u32,
}

impl LocalTime {
    fn of(t: SystemTime) -> LocalTime {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        // SAFETY: tm is plain data; all zeroes is a valid (if odd) time.
        let tm = crate::os::local_tm(d.as_secs()).unwrap_or(unsafe { std::mem::zeroed() });
        LocalTime {
            month: usize::try_from(tm.tm_mon).unwrap_or(0),
            day: tm.tm_mday,
            hour: tm.tm_hour,
            min: tm.tm_min,
            sec: tm.tm_sec,
            millis: d.subsec_millis(),
        }
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let mon = MONTHS.get(self.month).copied().unwrap_or("???");
        write!(
            f,
            "{mon} {:02} {:02}:{:02}:{:02}.{:03}",
            self.day, self.hour, self.min, self.sec, self.millis
        )
    }
}

/// Collects an event's `message` and appends other fields as `key=value`.
#[derive(Default)]
struct MessageVisitor {
    text: String,
    fields: String,
}

impl MessageVisitor {
    fn push_field(&mut self, name: &str, value: fmt::Arguments<'_>) {
        if name == "message" {
            let _ = write!(self.text, "{value}");
        } else {
            let _ = write!(self.fields, " {name}={value}");
        }
    }
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push_field(field.name(), format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push_field(field.name(), format_args!("{value:?}"));
    }
}

impl MessageVisitor {
    /// The message followed by the other fields.
    fn into_message(mut self) -> String {
        if self.text.is_empty() {
            return self.fields.trim_start().to_owned();
        }
        self.text.push_str(&self.fields);
        self.text
    }
}

// ---- Controllers' log events (SETEVENTS NOTICE/WARN/... on the ControlPort).
//
// A controller that subscribes registers a channel here; every event of a
// subscribed severity is offered to it without blocking (a controller that
// does not read loses lines, it never slows a logging thread). With nobody
// subscribed the cost per event is one atomic load.

/// Bit `1 << sev as u8` is set when some controller wants `sev`.
static CONTROLLER_MASK: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// One controller's subscription.
struct ControllerSink {
    id: u64,
    mask: u8,
    tx: crossbeam_channel::Sender<(Severity, String)>,
}

static CONTROLLER_SINKS: Mutex<Vec<ControllerSink>> = Mutex::new(Vec::new());
static NEXT_CONTROLLER_SINK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The bit of `sev` in a controller subscription mask.
pub fn severity_bit(sev: Severity) -> u8 {
    1 << (sev as u8)
}

/// Send log events whose severity bit is in `mask` to `tx` until
/// [`remove_controller_sink`] (or until the receiver is dropped). Returns
/// the subscription's id.
pub fn add_controller_sink(mask: u8, tx: crossbeam_channel::Sender<(Severity, String)>) -> u64 {
    let id = NEXT_CONTROLLER_SINK.fetch_add(1, Ordering::Relaxed);
    let mut sinks = CONTROLLER_SINKS.lock().unwrap_or_else(|p| p.into_inner());
    sinks.push(ControllerSink { id, mask, tx });
    update_controller_mask(&sinks);
    id
}

/// End subscription `id`.
pub fn remove_controller_sink(id: u64) {
    let mut sinks = CONTROLLER_SINKS.lock().unwrap_or_else(|p| p.into_inner());
    sinks.retain(|s| s.id != id);
    update_controller_mask(&sinks);
}

fn update_controller_mask(sinks: &[ControllerSink]) {
    let mask = sinks.iter().fold(0, |m, s| m | s.mask);
    CONTROLLER_MASK.store(mask, Ordering::Relaxed);
}

fn feed_controllers(sev: Severity, event: &Event<'_>) {
    if CONTROLLER_MASK.load(Ordering::Relaxed) & severity_bit(sev) == 0 {
        return;
    }
    let mut v = MessageVisitor::default();
    event.record(&mut v);
    let msg = v.into_message();
    // Nothing logs while holding this lock (add, remove and this function
    // only push to channels), so taking it here cannot deadlock.
    let mut sinks = CONTROLLER_SINKS.lock().unwrap_or_else(|p| p.into_inner());
    let before = sinks.len();
    sinks.retain(|s| {
        s.mask & severity_bit(sev) == 0
            || !matches!(
                s.tx.try_send((sev, msg.clone())),
                Err(crossbeam_channel::TrySendError::Disconnected(_))
            )
    });
    if sinks.len() != before {
        update_controller_mask(&sinks);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::SeverityRange;

    fn spec(min: Severity, max: Severity, target: LogTarget) -> LogSpec {
        LogSpec {
            ranges: vec![SeverityRange {
                domains: Vec::new(),
                min,
                max,
            }],
            target,
        }
    }

    fn buffered(specs: &[(Severity, Severity)]) -> (CtorLogLayer, Vec<Arc<Mutex<Vec<u8>>>>) {
        let mut bufs = Vec::new();
        let sinks = specs
            .iter()
            .map(|&(min, max)| {
                let b = Arc::new(Mutex::new(Vec::new()));
                bufs.push(b.clone());
                Sink {
                    ranges: vec![(min, max)],
                    writer: Writer::Buffer(b),
                }
            })
            .collect();
        (CtorLogLayer::from_sinks(sinks), bufs)
    }

    fn text(b: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8(b.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn line_format_is_c_tor_like() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let line = format_line(t, Severity::Notice, "hello\nworld");
        // "Nov 14 22:13:20.123 [notice] hello world\n" in UTC; the hour and
        // day depend on the local zone, so check the shape.
        let (stamp, rest) = line.split_at(19);
        assert_eq!(rest, " [notice] hello world\n");
        let b = stamp.as_bytes();
        assert!(b[..3].iter().all(u8::is_ascii_alphabetic), "{stamp}");
        assert_eq!(&stamp[3..4], " ");
        assert_eq!(&stamp[15..], ".123");
        assert_eq!(&stamp[6..7], " ");
        assert_eq!(&stamp[9..10], ":");
        assert_eq!(&stamp[12..13], ":");
    }

    #[test]
    fn severity_mapping_round_trips() {
        for (level, sev) in [
            (Level::ERROR, Severity::Err),
            (Level::WARN, Severity::Warn),
            (Level::INFO, Severity::Notice),
            (Level::DEBUG, Severity::Info),
            (Level::TRACE, Severity::Debug),
        ] {
            assert_eq!(severity_of(&level), sev);
            assert_eq!(level_filter(sev), LevelFilter::from_level(level));
        }
    }

    #[test]
    fn sinks_get_only_their_ranges() {
        let (layer, bufs) = buffered(&[
            (Severity::Notice, Severity::Err),
            (Severity::Debug, Severity::Info),
        ]);
        assert_eq!(layer.max_level(), LevelFilter::TRACE);
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || {
            tracing::info!(workers = 2, backend = "epoll", "relay running");
            tracing::warn!("careful");
            tracing::debug!("detail");
            tracing::trace!("noise");
        });
        let notice = text(&bufs[0]);
        let lines: Vec<&str> = notice.lines().map(|l| &l[20..]).collect();
        assert_eq!(
            lines,
            [
                "[notice] relay running workers=2 backend=epoll",
                "[warn] careful"
            ]
        );
        let verbose = text(&bufs[1]);
        let lines: Vec<&str> = verbose.lines().map(|l| &l[20..]).collect();
        assert_eq!(lines, ["[info] detail", "[debug] noise"]);
    }

    #[test]
    fn file_sink_appends_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("oxit-logging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notices.log");
        std::fs::write(&path, "old line\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let layer = CtorLogLayer::new(&[spec(
            Severity::Notice,
            Severity::Err,
            LogTarget::File(path.clone()),
        )])
        .unwrap();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info!("appended");
        });
        let s = std::fs::read_to_string(&path).unwrap();
        assert!(s.starts_with("old line\n"), "{s}");
        assert!(s.ends_with("[notice] appended\n"), "{s}");

        let fresh = dir.join("new.log");
        CtorLogLayer::new(&[spec(
            Severity::Warn,
            Severity::Err,
            LogTarget::File(fresh.clone()),
        )])
        .unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let bad = dir.join("no-such-dir").join("x.log");
        let err = CtorLogLayer::new(&[spec(Severity::Warn, Severity::Err, LogTarget::File(bad))])
            .err()
            .unwrap();
        assert!(err.to_string().contains("no-such-dir"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

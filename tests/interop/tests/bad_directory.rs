//! What a directory authority can send oxit, on the wire: a real authority
//! key certificate (made by C tor's `tor-gencert`), then, one after the
//! other, an answer cut off in its compressed body, a consensus whose
//! signature does not verify, an expired consensus, and finally a good one;
//! and a 400 with a reason for the descriptor. oxit also starts from a
//! corrupt cached consensus. It must log each problem, take the good
//! consensus, and keep relaying throughout. Both I/O backends.
//!
//! The authority is a small HTTP server of the test's; everything is on
//! 127.0.0.1.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use oxit::crypto::rsa::RsaPrivate;
use oxit::dir::time::format_iso;
use oxit_interop::harness::{IoBackend, free_tcp_port, oxit_binary};
use oxit_interop::rawclient::RawClient;
use sha2::Digest as _;

const REJECTION: &str = "Fingerprint is marked rejected -- test";

/// An authority: its v3 identity, certificate and signing key.
struct Authority {
    v3ident: String,
    cert: String,
    signing: RsaPrivate,
}

fn make_authority(dir: &Path, dir_port: u16) -> Authority {
    let keys = dir.join("auth");
    std::fs::create_dir_all(&keys).unwrap();
    let mut child = Command::new("/usr/bin/tor-gencert")
        .arg("--create-identity-key")
        .args(["-m", "12", "-a", &format!("127.0.0.1:{dir_port}")])
        .arg("-i")
        .arg(keys.join("id"))
        .arg("-s")
        .arg(keys.join("sk"))
        .arg("-c")
        .arg(keys.join("cert"))
        .args(["--passphrase-fd", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tor-gencert (Debian package tor)");
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert!(child.wait().unwrap().success());
    let cert = std::fs::read_to_string(keys.join("cert")).unwrap();
    let v3ident = cert
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .unwrap()
        .trim()
        .to_owned();
    let signing = RsaPrivate::from_pkcs1_pem(&std::fs::read_to_string(keys.join("sk")).unwrap())
        .expect("authority signing key");
    Authority {
        v3ident,
        cert,
        signing,
    }
}

/// A microdesc consensus valid from `valid_after`, signed by `a` (with a
/// corrupted signature when `corrupt`).
fn consensus(a: &Authority, valid_after: u64, corrupt: bool) -> String {
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let mut s = String::from(
        "network-status-version 3 microdesc\nvote-status consensus\nconsensus-method 35\n",
    );
    s += &format!(
        "valid-after {}\nfresh-until {}\nvalid-until {}\nvoting-delay 300 300\n",
        format_iso(valid_after),
        format_iso(valid_after + 3600),
        format_iso(valid_after + 3 * 3600)
    );
    s += "known-flags Exit Fast Running Valid\nparams circwindow=1000\n";
    s += &format!(
        "dir-source fake {} 127.0.0.1 127.0.0.1 1 1\ncontact x\nvote-digest {}\n",
        a.v3ident,
        "0".repeat(40)
    );
    s += &format!(
        "r other {} 2038-01-01 00:00:00 127.0.0.2 9001 0\nm {}\ns Fast Running Valid\npr Link=4-5 Relay=2-4\nw Bandwidth=20\n",
        b64.encode([0x42u8; 20]),
        b64.encode([7u8; 32])
    );
    s += "directory-footer\n";
    let digest = sha2::Sha256::digest(format!("{s}directory-signature ").as_bytes());
    let mut sig = a.signing.sign_raw(&mut rand::rng(), &digest).unwrap();
    if corrupt {
        sig[10] ^= 0xff;
    }
    s += &format!(
        "directory-signature sha256 {} {}\n-----BEGIN SIGNATURE-----\n",
        a.v3ident,
        a.signing.public().identity().hex_upper()
    );
    let enc = base64::engine::general_purpose::STANDARD.encode(&sig);
    for chunk in enc.as_bytes().chunks(64) {
        s += std::str::from_utf8(chunk).unwrap();
        s.push('\n');
    }
    s += "-----END SIGNATURE-----\n";
    s
}

/// The fake authority's answers to consensus requests, in order (the last
/// one repeats).
fn serve(listener: TcpListener, answers: Vec<Vec<u8>>, cert: String, log: Arc<Mutex<Vec<String>>>) {
    let mut next = 0;
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let mut r = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        if r.read_line(&mut line).is_err() {
            continue;
        }
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        let _ = r.read_exact(&mut body);
        log.lock().unwrap().push(line.trim().to_owned());
        let answer: Vec<u8> = if line.starts_with("POST /tor/ ") {
            format!("HTTP/1.0 400 {REJECTION}\r\n\r\n").into_bytes()
        } else if line.contains("/tor/keys/") {
            format!("HTTP/1.0 200 OK\r\n\r\n{cert}").into_bytes()
        } else if line.contains("/tor/status-vote/current/consensus-microdesc/") {
            let a = answers[next.min(answers.len() - 1)].clone();
            next += 1;
            a
        } else {
            b"HTTP/1.0 404 Not found\r\n\r\n".to_vec()
        };
        let _ = conn.write_all(&answer);
    }
}

fn deflate(data: &[u8]) -> Vec<u8> {
    use flate2::write::ZlibEncoder;
    let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

fn wait_log(log: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in oxit's log after {timeout:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bad_directory(backend: IoBackend) {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir_port = listener.local_addr().unwrap().port();
    let auth = make_authority(dir.path(), dir_port);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = consensus(&auth, now - 60, false);
    let z = deflate(good.as_bytes());
    let mut truncated = b"HTTP/1.0 200 OK\r\nContent-Encoding: deflate\r\n\r\n".to_vec();
    truncated.extend_from_slice(&z[..z.len() / 2]);
    let ok = |doc: &str| format!("HTTP/1.0 200 OK\r\n\r\n{doc}").into_bytes();
    let answers = vec![
        truncated,
        ok(&consensus(&auth, now - 60, true)),
        ok(&consensus(&auth, now - 4 * 86400, false)),
        ok(&good),
    ];
    let requests = Arc::new(Mutex::new(Vec::new()));
    {
        let (cert, requests) = (auth.cert.clone(), requests.clone());
        std::thread::spawn(move || serve(listener, answers, cert, requests));
    }

    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("cached-microdesc-consensus"),
        "garbage\x00\x01 not a consensus",
    )
    .unwrap();
    let or_addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port().unwrap()));
    let log = dir.path().join("oxit.log");
    let torrc = dir.path().join("torrc");
    std::fs::write(
        &torrc,
        format!(
            "TestingTorNetwork 1\nDirAuthority fake orport=1 v3ident={} 127.0.0.1:{dir_port} {}\n\
             ORPort {or_addr}\nDataDirectory {}\nAssumeReachable 1\nNumCPUs 2\nIOBackend {}\n\
             Log info file {}\n",
            auth.v3ident,
            "AB".repeat(20),
            data.display(),
            match backend {
                IoBackend::Uring => "uring",
                IoBackend::Epoll => "epoll",
            },
            log.display()
        ),
    )
    .unwrap();
    let mut oxit = Command::new(oxit_binary().unwrap())
        .args(["run", "-f"])
        .arg(&torrc)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = scopeguard(&mut oxit);

    let step = Duration::from_secs(60);
    let text = wait_log(
        &log,
        "ignoring the cached consensus: it does not parse",
        step,
    );
    assert!(!text.contains("panicked"), "{text}");
    wait_log(
        &log,
        &format!("rejected our descriptor: {REJECTION:?} (HTTP 400)"),
        step,
    );
    wait_log(&log, "does not decompress", step);
    wait_log(&log, "not enough good signatures", step);
    wait_log(&log, "not usable at", step);
    let text = wait_log(&log, "consensus valid from", step);
    // Relaying all along: a client's circuit is still answered.
    let mut c = RawClient::connect(or_addr).expect("link handshake with oxit");
    c.create_fast(Duration::from_secs(10))
        .expect("CREATE_FAST answered");
    assert!(!text.contains("panicked"), "{text}");
    // The cached copy is now the good consensus (written just after the
    // log line).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cached = std::fs::read_to_string(data.join("cached-microdesc-consensus")).unwrap();
        if cached == good {
            break;
        }
        assert!(Instant::now() < deadline, "cached: {cached:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let reqs = requests.lock().unwrap().clone();
    assert!(
        reqs.iter().any(|r| r.starts_with("POST /tor/ ")),
        "{reqs:?}"
    );
    drop(guard);
}

/// Kill oxit by PID when the test ends, however it ends.
struct Kill<'a>(&'a mut std::process::Child);
impl Drop for Kill<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
fn scopeguard(c: &mut std::process::Child) -> Kill<'_> {
    Kill(c)
}

#[test]
fn bad_directory_answers_io_uring() {
    bad_directory(IoBackend::Uring);
}

#[test]
fn bad_directory_answers_epoll() {
    bad_directory(IoBackend::Epoll);
}

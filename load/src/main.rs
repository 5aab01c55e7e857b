//! oxit-load: drives a Tor relay (oxit or C tor) with the load of a busy
//! exit and reports what the relay carried and what it cost.
//!
//! It connects to the relay as a relay (its own identity, CERTS and
//! AUTHENTICATE), so an exit with `RefuseUnknownExits 0` accepts its
//! one-hop circuits, or goes through a middle (`--via`). It serves the
//! destinations itself on 127.0.0.1 (`dest.rs`), and a DNS server when
//! asked (`oxit-load dns`). One run is one scenario; the result is one
//! JSON object on stdout (bench/README.md documents its fields).

mod dest;
mod dns;
mod engine;
mod fake;
mod stats;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use oxit::crypto::keys::RelayKeys;
use oxit::proto::channel::LinkKeys;
use oxit::runtime::driver::{Backend, Waker, new_driver};

use crate::engine::{Cfg, Crypto, Gen, Hop, Hs, Scenario};

#[derive(Parser)]
#[command(name = "oxit-load", about = "Load generator for Tor relays")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one scenario against a relay and print the result as JSON.
    Run(Box<RunArgs>),
    /// Serve DNS on ADDR (every A question: 127.0.0.1) until killed.
    Dns {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// ORPort of the relay under test.
    #[arg(long)]
    relay: SocketAddr,
    /// Its DataDirectory (fingerprint, fingerprint-ed25519,
    /// keys/secret_onion_key_ntor), C tor's or oxit's.
    #[arg(long)]
    relay_dir: PathBuf,
    /// A middle to go through before the relay (exit scenarios).
    #[arg(long, requires = "via_dir")]
    via: Option<SocketAddr>,
    #[arg(long)]
    via_dir: Option<PathBuf>,
    /// Its process id: CPU time and memory are read from /proc.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// TLS links to the first hop.
    #[arg(long, default_value_t = 8)]
    links: usize,
    /// Circuits, spread over the links (besides the probe circuits).
    #[arg(long, default_value_t = 8)]
    circuits: usize,
    /// Streams at once per circuit (bulk scenarios).
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Bytes per stream.
    #[arg(long, default_value_t = 64 << 20)]
    bytes: u64,
    /// Streams per second (web) or CREATE2 per second (create).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    #[arg(long, value_enum, default_value_t = Hs::Ntor)]
    handshake: Hs,
    /// What the circuits negotiate: tor1 with fixed windows, congestion
    /// control on tor1, or congestion control with CGO (ntor-v3, one hop,
    /// exit scenarios only).
    #[arg(long, value_enum, default_value_t = Crypto::Tor1)]
    crypto: Crypto,
    /// Verify every Nth circuit fully (digests and content); 0: none.
    #[arg(long, default_value_t = 16)]
    sample_every: usize,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Circuits that measure cell round trips during the run.
    #[arg(long, default_value_t = 2)]
    probes: usize,
    #[arg(long, default_value_t = 10)]
    probe_interval_ms: u64,
    /// Local addresses the links come from: the first of them and the
    /// next N-1 (a relay limits handshakes per address).
    #[arg(long, default_value = "127.0.1.1")]
    source: Ipv4Addr,
    #[arg(long, default_value_t = 32)]
    sources: u8,
    /// Web streams ask for a fresh name each (the exit resolves it).
    #[arg(long)]
    names: bool,
    /// Relay identities for the links: one per link by default, as links
    /// from many relays (C tor closes a second idle link from the same
    /// identity). Kept in --keys-dir between runs when given.
    #[arg(long)]
    identities: Option<usize>,
    #[arg(long)]
    keys_dir: Option<PathBuf>,
    /// Pin the generator to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Dns { listen } => serve_dns(listen),
        Cmd::Run(a) => run(*a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxit-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve_dns(listen: SocketAddr) -> Result<(), String> {
    let (addr, _count) = dns::spawn(listen).map_err(|e| format!("DNS on {listen}: {e}"))?;
    println!("{addr}");
    loop {
        std::thread::park();
    }
}

/// Read a relay's identity and onion key from its DataDirectory.
fn read_hop(dir: &Path, addr: SocketAddr) -> Result<Hop, String> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let second_word = |name: &str| -> Result<String, String> {
        let b = read(name)?;
        String::from_utf8_lossy(&b)
            .split_whitespace()
            .nth(1)
            .map(str::to_owned)
            .ok_or_else(|| format!("{name}: expected \"nickname KEY\""))
    };
    let rsa: [u8; 20] = hex::decode(second_word("fingerprint")?)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or("fingerprint: not 40 hex digits")?;
    use base64::Engine as _;
    let ed_b64 = second_word("fingerprint-ed25519")?;
    let ed: [u8; 32] = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(ed_b64.trim_end_matches('='))
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or("fingerprint-ed25519: not a base64 key")?;
    let ntor = read("keys/secret_onion_key_ntor")?;
    if !ntor.starts_with(b"== c25519v1: onion ==") {
        return Err("keys/secret_onion_key_ntor: missing its header".into());
    }
    let ntor_key: [u8; 32] = ntor
        .get(64..96)
        .and_then(|s| s.try_into().ok())
        .ok_or("keys/secret_onion_key_ntor: too short")?;
    Ok(Hop {
        addr,
        rsa_id: rsa,
        ed_id: ed,
        ntor_key,
    })
}

fn pin(cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity only touch it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "pinning to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn listener() -> Result<(OwnedFd, SocketAddr), String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listening on 127.0.0.1: {e}"))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    Ok((OwnedFd::from(l), addr))
}

fn run(a: RunArgs) -> Result<(), String> {
    if let Some(cpu) = a.cpu {
        pin(cpu)?;
    }
    let relay = read_hop(&a.relay_dir, a.relay)?;
    let via = match (a.via, &a.via_dir) {
        (Some(addr), Some(dir)) => Some(read_hop(dir, addr)?),
        _ => None,
    };
    if a.crypto != Crypto::Tor1
        && (via.is_some() || matches!(a.scenario, Scenario::Middle | Scenario::Create))
    {
        return Err(format!(
            "--crypto {:?} needs a one-hop exit scenario (not --via, middle or create)",
            a.crypto
        ));
    }
    let temp = std::env::temp_dir().join(format!("oxit-load-{}", std::process::id()));
    let state = a.keys_dir.clone().unwrap_or_else(|| temp.clone());
    let keys = |name: &str| {
        let dir = state.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        RelayKeys::load_or_create(&dir, "oxitload", SystemTime::now(), &mut rand::rng())
            .map_err(|e| format!("generating keys: {e}"))
    };
    let n_ids = a.identities.unwrap_or(a.links).clamp(1, a.links.max(1));
    let t = std::time::Instant::now();
    let mut link_keys = Vec::with_capacity(n_ids);
    for i in 0..n_ids {
        let k = keys(&format!("client{i}"))?;
        link_keys.push(Arc::new(LinkKeys::from_relay_keys(
            &k,
            vec![a.source.into()],
        )));
    }
    eprintln!(
        "oxit-load: {n_ids} identities ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let tls_cfg = oxit::runtime::tls::client_config().map_err(|e| format!("TLS: {e}"))?;

    let waker = Arc::new(Waker::new().map_err(|e| e.to_string())?);
    let mut drv = new_driver(Backend::Epoll, waker).map_err(|e| format!("epoll: {e}"))?;
    let (dest_fd, dest_addr) = listener()?;
    drv.listen(dest_fd).map_err(|e| e.to_string())?;
    let fake = if a.scenario == Scenario::Middle {
        let (fd, addr) = listener()?;
        drv.listen(fd).map_err(|e| e.to_string())?;
        Some(fake::FakeExit::new(&keys("fake")?, addr)?)
    } else {
        None
    };
    let [o0, o1, o2, o3] = a.source.octets();
    let source_addrs = (0..a.sources.max(1))
        .map(|i| Ipv4Addr::new(o0, o1, o2, o3.wrapping_add(i)))
        .collect();
    let cfg = Cfg {
        scenario: a.scenario,
        relay,
        via,
        links: a.links.max(1),
        circuits: a.circuits,
        streams: a.streams,
        bytes: a.bytes,
        rate: a.rate,
        handshake: a.handshake,
        crypto: a.crypto,
        sample_every: a.sample_every,
        warmup: Duration::from_secs_f64(a.warmup),
        duration: Duration::from_secs_f64(a.duration),
        probes: a.probes,
        probe_interval: Duration::from_millis(a.probe_interval_ms),
        relay_pid: a.relay_pid,
        source_addrs,
        names: a.names,
        dest_port: dest_addr.port(),
    };
    let mut g = Gen::new(cfg, link_keys, tls_cfg, fake);
    g.open_links(drv.ops())?;
    while !g.done() {
        let t = g.turn_timeout();
        drv.turn(Some(t), &mut g)
            .map_err(|e| format!("driver: {e}"))?;
    }
    let _ = std::fs::remove_dir_all(&temp);
    if let Some(r) = &g.result {
        println!("{r}");
    }
    Ok(())
}

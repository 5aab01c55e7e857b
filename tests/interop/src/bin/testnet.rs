//! `oxit-testnet`: a private Tor network on 127.0.0.1 with oxit as its
//! exit, for trying oxit without touching the live network
//! (`scripts/testnet.sh` builds and runs this).
//!
//! It starts three C tor directory authorities, three C tor relays, oxit,
//! a C tor client with a SOCKS port, a small HTTP server and dnsmasq; waits
//! until the consensus lists oxit and the client has bootstrapped; prints
//! how to use it; and runs until Ctrl-C (or SIGTERM), then stops every
//! process it started, by PID.

use std::time::{Duration, Instant};

use clap::Parser;
use oxit_interop::harness::{Dnsmasq, HttpServer, IoBackend, Testnet, TestnetOptions};

/// Run a private Tor network with oxit as its exit.
#[derive(Debug, Parser)]
#[command(name = "oxit-testnet")]
struct Args {
    /// oxit's I/O backend: uring or epoll.
    #[arg(long, default_value = "uring")]
    backend: String,
    /// Keep the network's directory (logs, data directories) after it stops.
    #[arg(long)]
    keep: bool,
    /// Stop after this many seconds instead of waiting for Ctrl-C.
    #[arg(long)]
    seconds: Option<u64>,
    /// Log oxit at debug level (what each circuit negotiated, conflux legs).
    #[arg(long)]
    debug: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let backend = match args.backend.as_str() {
        "uring" | "io_uring" => IoBackend::Uring,
        "epoll" => IoBackend::Epoll,
        other => {
            eprintln!("oxit-testnet: unknown backend {other:?}: expected uring or epoll");
            return std::process::ExitCode::from(2);
        }
    };
    match run(&args, backend) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxit-testnet: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run(args: &Args, backend: IoBackend) -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let dns = Dnsmasq::start()?;
    let http = HttpServer::start()?;
    let mut opts = TestnetOptions::new(backend);
    opts.dns = Some(dns.addr());
    opts.oxit_debug = args.debug;
    eprintln!("starting 3 authorities, 3 relays, oxit and a client on 127.0.0.1...");
    let net = Testnet::start(&opts)?;
    eprintln!("network directory: {}", net.root().display());
    // Stable too: C clients build conflux legs only to Stable exits.
    let entry = net.wait_for_oxit(
        &["Running", "Valid", "Exit", "Stable"],
        Duration::from_secs(300),
    )?;
    eprintln!(
        "the consensus lists oxit after {:.0} s:\n{entry}",
        t0.elapsed().as_secs_f64()
    );
    net.wait_for_client(Duration::from_secs(180))?;
    eprintln!(
        "\nThe client is ready after {:.0} s. Try:\n  \
         curl --socks5-hostname {} http://127.0.0.1:{}/bytes/10000000 | sha256sum\n  \
         tor-resolve -5 {} {} {}\n\
         oxit's log: {}\nPress Ctrl-C to stop.",
        t0.elapsed().as_secs_f64(),
        net.socks,
        http.addr().port(),
        Dnsmasq::NAME,
        net.socks.ip(),
        net.socks.port(),
        net.oxit.log_path().display()
    );
    wait_for_stop(args.seconds);
    eprintln!("stopping...");
    if args.keep {
        let dir = net.keep();
        eprintln!("kept {}", dir.display());
    }
    Ok(())
}

/// Block until SIGINT/SIGTERM (or the given number of seconds).
fn wait_for_stop(seconds: Option<u64>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return,
    };
    rt.block_on(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        let limit = tokio::time::sleep(Duration::from_secs(seconds.unwrap_or(u64::MAX / 4)));
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = limit => {}
        }
    });
}

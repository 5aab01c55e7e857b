//! `oxit-arti-client`: build a circuit through relays described on the command
//! line and exercise it, printing one line of `key=value` results.
//!
//! Example (two hops, GET through the second, check the digest):
//!
//! ```text
//! oxit-arti-client \
//!   --hop 127.0.0.1:5000,rsa=HEX,ed=B64,ntor=B64,hs=ntor \
//!   --hop 127.0.0.1:5001,rsa=HEX,ed=B64,ntor=B64,hs=ntor-v3 \
//!   --get 127.0.0.1:8080/bytes/1048576 --sha256 --streams 4
//! ```
//!
//! A C tor relay's hop string is printed by `--describe-ctor DATADIR,ADDR`.
//! Exit status is non-zero if any requested operation failed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use oxit_interop::client::{self, Handshake, HopSpec};
use oxit_interop::harness::sha256_hex;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Tor client on Arti's tor-proto 0.47 for oxit interop tests"
)]
struct Args {
    /// A hop: ADDR,rsa=HEX,ed=B64,ntor=B64[,hs=ntor|ntor-v3|fast]; repeat in path order.
    #[arg(long = "hop")]
    hops: Vec<String>,
    /// HTTP GET through the circuit: HOST:PORT/PATH.
    #[arg(long)]
    get: Option<String>,
    /// Print the SHA-256 of each GET body.
    #[arg(long)]
    sha256: bool,
    /// Run the GET on N concurrent streams of the same circuit.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// RESOLVE this name at the last hop.
    #[arg(long)]
    resolve: Option<String>,
    /// Open a BEGIN_DIR stream and fetch /tor/server/authority.
    #[arg(long)]
    begin_dir: bool,
    /// Print the hop string of a C tor relay: DATADIR,ADDR (no circuit is built).
    #[arg(long)]
    describe_ctor: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match tokio::time::timeout(Duration::from_secs(args.timeout), run(&args)).await {
        Ok(Ok(line)) => {
            println!("{line}");
            if line.contains("error=") {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Ok(Err(e)) => {
            println!("ok=false error={:?}", e.to_string());
            ExitCode::FAILURE
        }
        Err(_) => {
            println!("ok=false error=\"timed out after {}s\"", args.timeout);
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<String, client::Error> {
    if let Some(spec) = &args.describe_ctor {
        let (dir, addr) = spec
            .rsplit_once(',')
            .ok_or_else(|| client::Error::BadHopSpec("--describe-ctor DATADIR,ADDR".into()))?;
        let addr = addr
            .parse()
            .map_err(|e| client::Error::BadHopSpec(format!("address {addr:?}: {e}")))?;
        let hop = HopSpec::from_c_tor_data_dir(dir.as_ref(), addr, Handshake::Ntor)?;
        return Ok(hop.to_cli());
    }
    let hops = args
        .hops
        .iter()
        .map(|h| HopSpec::parse_cli(h))
        .collect::<Result<Vec<_>, _>>()?;
    let start = Instant::now();
    let tunnel = client::build_circuit(&hops).await?;
    let mut out = vec![
        "ok=true".to_owned(),
        format!("hops={}", hops.len()),
        format!("build_ms={}", start.elapsed().as_millis()),
    ];

    if let Some(get) = &args.get {
        let (hostport, path) = get.split_once('/').unwrap_or((get, ""));
        let (host, port) = hostport.rsplit_once(':').ok_or_else(|| {
            client::Error::BadHopSpec(format!("--get {get:?}: expected HOST:PORT/PATH"))
        })?;
        let port: u16 = port
            .parse()
            .map_err(|e| client::Error::BadHopSpec(format!("--get port {port:?}: {e}")))?;
        let path = format!("/{path}");
        let t = Instant::now();
        let gets = (0..args.streams.max(1)).map(|_| client::http_get(&tunnel, host, port, &path));
        let results = futures::future::join_all(gets).await;
        let ms = t.elapsed().as_millis();
        let mut total = 0usize;
        let mut digests = Vec::new();
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok(body) => {
                    total += body.len();
                    if args.sha256 {
                        digests.push(sha256_hex(&body));
                    }
                }
                Err(e) => errors.push(match e.end_reason() {
                    Some(reason) => format!("end_reason={reason}"),
                    None => e.to_string(),
                }),
            }
        }
        out.push(format!("get_bytes={total} get_ms={ms}"));
        digests.dedup();
        if args.sha256 {
            out.push(format!("sha256={}", digests.join(",")));
        }
        if !errors.is_empty() {
            out.push(format!("error={:?}", errors.join("; ")));
        }
    }
    if let Some(name) = &args.resolve {
        match client::resolve(&tunnel, name).await {
            Ok(ips) => {
                let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
                out.push(format!("resolved={}", ips.join(",")));
            }
            Err(e) => out.push(format!("error={:?}", e.to_string())),
        }
    }
    if args.begin_dir {
        match client::begin_dir(&tunnel, "/tor/server/authority").await {
            Ok(reply) => out.push(format!("begin_dir_bytes={}", reply.len())),
            Err(e) => out.push(format!("error={:?}", e.to_string())),
        }
    }
    Ok(out.join(" "))
}

//! Where the directory is: `DirAuthority`, `AlternateDirAuthority` and
//! `FallbackDir` lines in C tor's syntax, and C tor's built-in lists.
//!
//! This module owns the grammar of those lines (config.c:
//! parse_dir_authority_line, parse_dir_fallback_line) and the rules that
//! combine configured lines with the defaults (config.c:
//! consider_adding_dir_servers). The built-in lists are C tor's own
//! (auth_dirs.inc, fallback_dirs.inc), read out of Debian's `tor` binary by
//! `scripts/update-builtin-dirs.sh` into `builtin_dirs.txt`; a test keeps
//! that file equal to what the installed tor carries.
//!
//! oxit is stricter than C tor in one way: a flag C tor would warn about
//! and ignore (a malformed `orport=` or `v3ident=`, an unknown flag) is an
//! error here, because the relay would otherwise run with an authority
//! that is silently not the one the operator wrote.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

/// C tor's lists, one option line each (see the module doc).
const BUILTIN: &str = include_str!("builtin_dirs.txt");

/// One directory authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirAuthority {
    pub nickname: Option<String>,
    /// SHA-1 of the authority's v3 identity key (`v3ident=`): what signs
    /// the consensus. `None` for a bridge-only authority.
    pub v3ident: Option<[u8; 20]>,
    /// `bridge`: a bridge authority (oxit, not being a bridge, never uses it).
    pub bridge: bool,
    /// The authority's relay identity (RSA fingerprint).
    pub rsa_id: [u8; 20],
    /// Where its DirPort listens: descriptors are posted and the consensus
    /// fetched here.
    pub dir_addr: SocketAddrV4,
    /// `orport=` (0 when absent).
    pub or_port: u16,
    /// `ipv6=[addr]:port`: its IPv6 ORPort.
    pub ipv6: Option<SocketAddr>,
    /// `upload=http://addr:port/` (proposal 330): where to post descriptors
    /// instead of `dir_addr`.
    pub upload: Option<SocketAddr>,
    /// `download=http://addr:port/`: where to fetch documents instead.
    pub download: Option<SocketAddr>,
}

impl DirAuthority {
    /// A v3 directory authority (signs the consensus, takes descriptors).
    pub fn is_v3(&self) -> bool {
        self.v3ident.is_some()
    }

    /// Where descriptors are posted.
    pub fn upload_addr(&self) -> SocketAddr {
        self.upload.unwrap_or(SocketAddr::V4(self.dir_addr))
    }

    /// Where the consensus and certificates are fetched.
    pub fn download_addr(&self) -> SocketAddr {
        self.download.unwrap_or(SocketAddr::V4(self.dir_addr))
    }

    /// How logs name it: the nickname, else the DirPort address.
    pub fn name(&self) -> String {
        self.nickname
            .clone()
            .unwrap_or_else(|| self.dir_addr.to_string())
    }

    /// Parse the value of a `DirAuthority` line:
    /// `[nickname] [flags] IPv4:dirport fingerprint`.
    pub fn parse(line: &str) -> Result<DirAuthority, String> {
        let mut toks: Vec<&str> = line.split_ascii_whitespace().collect();
        if toks.is_empty() {
            return Err("no arguments".into());
        }
        let mut nickname = None;
        if is_nickname(toks[0]) {
            nickname = Some(toks.remove(0).to_owned());
        }
        let mut a = DirAuthority {
            nickname,
            v3ident: None,
            bridge: false,
            rsa_id: [0; 20],
            dir_addr: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            or_port: 0,
            ipv6: None,
            upload: None,
            download: None,
        };
        while let Some(flag) = toks.first().copied() {
            if flag.starts_with(|c: char| c.is_ascii_digit()) {
                break;
            }
            toks.remove(0);
            let lower = flag.to_ascii_lowercase();
            if let Some(v) = strip_prefix_ci(flag, "orport=") {
                a.or_port =
                    v.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                        format!("bad orport {v:?}: expected a port from 1 to 65535")
                    })?;
            } else if let Some(v) = strip_prefix_ci(flag, "v3ident=") {
                a.v3ident = Some(
                    hex20(v).ok_or_else(|| format!("bad v3ident {v:?}: expected 40 hex digits"))?,
                );
            } else if let Some(v) = strip_prefix_ci(flag, "ipv6=") {
                let sa: SocketAddr = v
                    .parse()
                    .ok()
                    .filter(|s: &SocketAddr| s.is_ipv6() && s.port() != 0)
                    .ok_or_else(|| format!("bad ipv6 {v:?}: expected [IPv6]:port"))?;
                a.ipv6.get_or_insert(sa);
            } else if let Some(v) = strip_prefix_ci(flag, "upload=") {
                a.upload = Some(http_url(v)?);
            } else if let Some(v) = strip_prefix_ci(flag, "download=") {
                a.download = Some(http_url(v)?);
            } else if let Some(v) = strip_prefix_ci(flag, "vote=") {
                // Only authorities vote; checked for syntax like C tor.
                http_url(v)?;
            } else if let Some(w) = flag.strip_prefix("weight=") {
                // Weights pick among fallbacks; oxit asks authorities directly.
                w.parse::<f64>()
                    .ok()
                    .filter(|w| *w >= 0.0)
                    .ok_or_else(|| format!("bad weight {flag:?}"))?;
            } else if lower == "bridge" {
                a.bridge = true;
            } else if matches!(lower.as_str(), "no-v2" | "hs" | "no-hs") {
                // Obsolete flags C tor accepts and ignores.
            } else {
                return Err(format!(
                    "unrecognized flag {flag:?} (expected orport=, v3ident=, ipv6=, upload=, \
                     download=, vote=, weight=, bridge or no-v2)"
                ));
            }
        }
        if toks.len() < 2 {
            return Err(
                "too few arguments: expected [nickname] [flags] IPv4:dirport fingerprint".into(),
            );
        }
        let addr = toks.remove(0);
        a.dir_addr = addr
            .parse::<SocketAddrV4>()
            .ok()
            .filter(|s| s.port() != 0)
            .ok_or_else(|| format!("bad address {addr:?}: expected IPv4:dirport"))?;
        let fp: String = toks.concat();
        a.rsa_id = hex20(&fp).ok_or_else(|| {
            format!("bad fingerprint {fp:?}: expected 40 hex digits (spaces allowed)")
        })?;
        if a.v3ident.is_none() && !a.bridge {
            return Err(
                "neither v3ident= nor bridge: the line names an authority for nothing".into(),
            );
        }
        Ok(a)
    }
}

impl fmt::Display for DirAuthority {
    /// The line in C tor's syntax (what `check-config` prints).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = &self.nickname {
            write!(f, "{n} ")?;
        }
        if self.or_port != 0 {
            write!(f, "orport={} ", self.or_port)?;
        }
        if self.bridge {
            f.write_str("bridge ")?;
        }
        if let Some(v) = &self.v3ident {
            write!(f, "v3ident={} ", hex::encode_upper(v))?;
        }
        if let Some(v6) = &self.ipv6 {
            write!(f, "ipv6={v6} ")?;
        }
        if let Some(u) = &self.upload {
            write!(f, "upload=http://{u}/ ")?;
        }
        if let Some(d) = &self.download {
            write!(f, "download=http://{d}/ ")?;
        }
        write!(f, "{} {}", self.dir_addr, hex::encode_upper(self.rsa_id))
    }
}

/// One fallback directory: a relay that caches the directory, reached on
/// its ORPort (tunnelled directory requests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackDir {
    pub addr: IpAddr,
    /// Its DirPort, when the line has one (C tor's built-in ones do not).
    pub dir_port: Option<u16>,
    pub or_port: u16,
    pub rsa_id: [u8; 20],
    pub ipv6: Option<SocketAddr>,
}

impl FallbackDir {
    /// Parse the value of a `FallbackDir` line:
    /// `addr[:dirport] orport=N id=FINGERPRINT [ipv6=[addr]:port] [weight=W]`.
    pub fn parse(line: &str) -> Result<FallbackDir, String> {
        let mut or_port = None;
        let mut rsa_id = None;
        let mut ipv6 = None;
        let mut positional = Vec::new();
        for tok in line.split_ascii_whitespace() {
            if let Some(v) = tok.strip_prefix("orport=") {
                or_port = Some(
                    v.parse::<u16>()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| format!("bad orport {v:?}"))?,
                );
            } else if let Some(v) = tok.strip_prefix("id=") {
                rsa_id =
                    Some(hex20(v).ok_or_else(|| format!("bad id {v:?}: expected 40 hex digits"))?);
            } else if let Some(v) = strip_prefix_ci(tok, "ipv6=") {
                ipv6 = Some(
                    v.parse::<SocketAddr>()
                        .ok()
                        .filter(|s| s.is_ipv6())
                        .ok_or_else(|| format!("bad ipv6 {v:?}: expected [IPv6]:port"))?,
                );
            } else if tok.contains('=') {
                // C tor ignores other key=value options (weight=, ...).
            } else {
                positional.push(tok);
            }
        }
        let [addr] = positional[..] else {
            return Err("expected exactly one address[:dirport]".into());
        };
        let (addr, dir_port) = match addr.parse::<SocketAddr>() {
            Ok(sa) => (sa.ip(), Some(sa.port())),
            Err(_) => (
                addr.parse::<IpAddr>()
                    .map_err(|_| format!("bad address {addr:?}"))?,
                None,
            ),
        };
        Ok(FallbackDir {
            addr,
            dir_port,
            or_port: or_port.ok_or("missing orport=")?,
            rsa_id: rsa_id.ok_or("missing id=")?,
            ipv6,
        })
    }

    pub fn or_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.or_port)
    }
}

impl fmt::Display for FallbackDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dir_port {
            Some(p) => write!(f, "{}:{p}", self.addr)?,
            None => write!(f, "{}", self.addr)?,
        }
        write!(
            f,
            " orport={} id={}",
            self.or_port,
            hex::encode_upper(self.rsa_id)
        )?;
        if let Some(v6) = &self.ipv6 {
            write!(f, " ipv6={v6}")?;
        }
        Ok(())
    }
}

/// The directory servers a relay uses, after combining the configured
/// lines with the defaults (config.c:consider_adding_dir_servers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirServers {
    pub authorities: Vec<DirAuthority>,
    pub fallbacks: Vec<FallbackDir>,
}

impl DirServers {
    /// `DirAuthority` lines replace the built-in authorities and drop the
    /// built-in fallbacks; `AlternateDirAuthority` lines replace only the
    /// v3 authorities (C keeps the bridge authority); `FallbackDir` lines
    /// replace the built-in fallbacks; `UseDefaultFallbackDirs 0` drops them.
    pub fn combine(
        dir_authorities: &[DirAuthority],
        alternate: &[DirAuthority],
        fallbacks: &[FallbackDir],
        use_default_fallbacks: bool,
    ) -> DirServers {
        let builtin = builtin();
        let mut authorities = Vec::new();
        let mut fb = Vec::new();
        if dir_authorities.is_empty() {
            if alternate.is_empty() {
                authorities.extend(builtin.authorities.iter().cloned());
                if fallbacks.is_empty() && use_default_fallbacks {
                    fb.extend(builtin.fallbacks.iter().cloned());
                }
            } else {
                authorities.extend(builtin.authorities.iter().filter(|a| a.bridge).cloned());
            }
        }
        authorities.extend(dir_authorities.iter().cloned());
        authorities.extend(alternate.iter().cloned());
        fb.extend(fallbacks.iter().cloned());
        DirServers {
            authorities,
            fallbacks: fb,
        }
    }

    /// The v3 authorities: the ones that sign the consensus and take
    /// descriptors.
    pub fn v3(&self) -> impl Iterator<Item = &DirAuthority> {
        self.authorities.iter().filter(|a| a.is_v3())
    }

    /// True when these are C tor's built-in authorities (the live network).
    pub fn is_default(&self) -> bool {
        self.authorities == builtin().authorities
    }
}

/// C tor's built-in lists, parsed once.
pub fn builtin() -> &'static DirServers {
    static LISTS: std::sync::OnceLock<DirServers> = std::sync::OnceLock::new();
    LISTS.get_or_init(|| {
        let mut authorities = Vec::new();
        let mut fallbacks = Vec::new();
        for line in BUILTIN.lines().filter(|l| !l.starts_with('#')) {
            // The file is generated and checked by a test: a line that does
            // not parse is a bug there, and is skipped rather than fatal.
            if let Some(v) = line.strip_prefix("DirAuthority ") {
                authorities.extend(DirAuthority::parse(v).ok());
            } else if let Some(v) = line.strip_prefix("FallbackDir ") {
                fallbacks.extend(FallbackDir::parse(v).ok());
            }
        }
        DirServers {
            authorities,
            fallbacks,
        }
    })
}

fn is_nickname(s: &str) -> bool {
    (1..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn hex20(s: &str) -> Option<[u8; 20]> {
    let mut out = [0u8; 20];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// `http://IP:PORT` with an optional trailing `/` (config.c:parse_dirauth_dirport).
fn http_url(v: &str) -> Result<SocketAddr, String> {
    let rest = v
        .strip_prefix("http://")
        .ok_or_else(|| format!("unsupported URL scheme in {v:?}: expected http://IP:PORT/"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.parse::<SocketAddr>()
        .map_err(|_| format!("cannot parse the address in {v:?}: expected http://IP:PORT/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_tor_test_vectors() {
        // src/test/test_config.c
        let a = DirAuthority::parse(
            "foobar orport=12345 v3ident=14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4 \
             1.2.3.4:54321 FDB2 FBD2 AAA5 25FA 2999 E617 5091 5A32 C777 3B17",
        )
        .unwrap();
        assert_eq!(a.nickname.as_deref(), Some("foobar"));
        assert_eq!(a.or_port, 12345);
        assert_eq!(a.dir_addr, "1.2.3.4:54321".parse().unwrap());
        assert_eq!(
            hex::encode_upper(a.rsa_id),
            "FDB2FBD2AAA525FA2999E61750915A32C7773B17"
        );
        assert!(a.is_v3());
        let a = DirAuthority::parse(
            "foobar orport=12345 v3ident=14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4 \
             ipv6=[feed::beef]:9 1.2.3.4:54321 FDB2FBD2AAA525FA2999E61750915A32C7773B17",
        )
        .unwrap();
        assert_eq!(a.ipv6, Some("[feed::beef]:9".parse().unwrap()));
        let a = DirAuthority::parse(
            "moria1 orport=9101 v3ident=D586D18309DED4CD6D57C18FDB97EFA96D330566 \
             upload=http://128.31.0.39:9131/ download=http://128.31.0.39:9131 \
             vote=http://128.31.0.39:9131/ 128.31.0.39:9131 \
             9695 DFC3 5FFE B861 329B 9F1A B04C 4639 7020 CE31",
        )
        .unwrap();
        assert_eq!(a.upload_addr(), "128.31.0.39:9131".parse().unwrap());
        for bad in [
            "",
            "foobar orport=12345 v3ident=14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4 torproject.org:54321 FDB2FBD2AAA525FA2999E61750915A32C7773B17",
            "foobar orport=12345 v3ident=14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4 0.256.3.4:54321 FDB2FBD2AAA525FA2999E61750915A32C7773B17",
            "foobar orport=12345 v3ident=14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4 1.2.3.4 FDB2FBD2AAA525FA2999E61750915A32C7773B17",
            "foobar v3ident=14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4 1.2.3.4:5 FDB2FBD2AAA525FA2999E61750915A32C7773B1",
            "foobar v3ident=14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4 upload=https://1.2.3.4:5/ 1.2.3.4:5 FDB2FBD2AAA525FA2999E61750915A32C7773B17",
            "foobar v3ident=14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4 upload=http://1.2.3.4:5/tor 1.2.3.4:5 FDB2FBD2AAA525FA2999E61750915A32C7773B17",
            "foobar orport=x v3ident=14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4 1.2.3.4:5 FDB2FBD2AAA525FA2999E61750915A32C7773B17",
            "foobar sparkly v3ident=14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4 1.2.3.4:5 FDB2FBD2AAA525FA2999E61750915A32C7773B17",
            "foobar orport=1 1.2.3.4:5 FDB2FBD2AAA525FA2999E61750915A32C7773B17",
        ] {
            assert!(DirAuthority::parse(bad).is_err(), "{bad:?}");
        }
        let f = FallbackDir::parse(
            "1.2.3.4:54321 orport=12345 id=50e643986f31ea1235bcc1af17a1c5c5cfc0ee54 ipv6=[2015:c0de::deed]:9",
        )
        .unwrap();
        assert_eq!(f.dir_port, Some(54321));
        assert_eq!(f.or_addr(), "1.2.3.4:12345".parse().unwrap());
        for bad in [
            "1.2.3.4:54321 id=50e643986f31ea1235bcc1af17a1c5c5cfc0ee54",
            "1.2.3.4:54321 orport=1",
            "1.2.3.4 5.6.7.8 orport=1 id=50e643986f31ea1235bcc1af17a1c5c5cfc0ee54",
            "host orport=1 id=50e643986f31ea1235bcc1af17a1c5c5cfc0ee54",
        ] {
            assert!(FallbackDir::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for a in &builtin().authorities {
            assert_eq!(&DirAuthority::parse(&a.to_string()).unwrap(), a);
        }
        for f in &builtin().fallbacks {
            assert_eq!(&FallbackDir::parse(&f.to_string()).unwrap(), f);
        }
    }

    #[test]
    fn builtin_and_combining() {
        let b = builtin();
        // The generated file parses whole: 9 v3 authorities and a bridge one.
        assert_eq!(
            b.authorities.len(),
            BUILTIN
                .lines()
                .filter(|l| l.starts_with("DirAuthority "))
                .count()
        );
        assert_eq!(
            b.fallbacks.len(),
            BUILTIN
                .lines()
                .filter(|l| l.starts_with("FallbackDir "))
                .count()
        );
        assert!(b.v3().count() >= 3);
        assert!(b.fallbacks.len() >= 10);

        let d = DirServers::combine(&[], &[], &[], true);
        assert!(d.is_default());
        assert_eq!(d.fallbacks.len(), b.fallbacks.len());
        assert!(
            DirServers::combine(&[], &[], &[], false)
                .fallbacks
                .is_empty()
        );

        let mine = DirAuthority::parse(
            "a orport=1 v3ident=14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4 127.0.0.1:7 FDB2FBD2AAA525FA2999E61750915A32C7773B17",
        )
        .unwrap();
        let d = DirServers::combine(std::slice::from_ref(&mine), &[], &[], true);
        assert_eq!(d.authorities, vec![mine.clone()]);
        assert!(d.fallbacks.is_empty() && !d.is_default());
        let d = DirServers::combine(&[], std::slice::from_ref(&mine), &[], true);
        assert_eq!(d.v3().cloned().collect::<Vec<_>>(), vec![mine]);
        assert!(d.authorities.iter().any(|a| a.bridge));
    }
}

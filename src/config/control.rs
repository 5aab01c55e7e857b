//! The ControlPort options (C tor's names and meanings): where the control
//! protocol listens and how controllers authenticate. The protocol itself
//! is `crate::control::controlport`.
//!
//! oxit's ControlPort is a subset for local monitoring tools (nyx, stem
//! exporters), so a TCP ControlPort must be on a loopback address: C tor
//! lets an operator put it on any address, where a controller's cookie or
//! password would cross the network in clear text.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// The options this module parses, in their canonical spelling.
pub(super) const OPTIONS: &[&str] = &[
    "ControlPort",
    "ControlSocket",
    "ControlSocketsGroupWritable",
    "CookieAuthentication",
    "CookieAuthFile",
    "CookieAuthFileGroupReadable",
    "HashedControlPassword",
];

/// Length of a decoded `HashedControlPassword`: the RFC 2440 S2K specifier
/// (8 bytes of salt and a count byte) and the SHA-1 digest
/// (crypto_s2k.h: S2K_RFC2440_SPECIFIER_LEN + DIGEST_LEN).
pub const HASHED_PASSWORD_LEN: usize = 9 + 20;

/// A `ControlSocket` (or `ControlPort unix:PATH`) line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlSocket {
    pub path: PathBuf,
    /// `GroupWritable`: the socket file is made 0660 (else 0600).
    pub group_writable: bool,
    /// `WorldWritable`: the socket file is made 0666.
    pub world_writable: bool,
    /// `RelaxDirModeCheck`: accepted (Debian's defaults torrc uses it);
    /// oxit does not check the parent directory's mode.
    pub relax_dir_mode_check: bool,
}

impl fmt::Display for ControlSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.group_writable {
            f.write_str(" GroupWritable")?;
        }
        if self.world_writable {
            f.write_str(" WorldWritable")?;
        }
        if self.relax_dir_mode_check {
            f.write_str(" RelaxDirModeCheck")?;
        }
        Ok(())
    }
}

/// One `HashedControlPassword` line: as written (GETCONF answers with it)
/// and decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct HashedPassword {
    pub text: String,
    /// S2K specifier (salt, count) then the SHA-1 digest.
    pub decoded: [u8; HASHED_PASSWORD_LEN],
}

impl fmt::Debug for HashedPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash is as good as a password to an offline guesser: keep it
        // out of debug dumps of the configuration.
        f.write_str("HashedPassword(..)")
    }
}

/// The ControlPort options. Default: no ControlPort.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlOptions {
    /// `ControlPort` TCP addresses (loopback only; a bare port is
    /// 127.0.0.1, as in C tor).
    pub ports: Vec<SocketAddr>,
    /// `ControlSocket` lines, and `ControlPort unix:PATH` ones.
    pub sockets: Vec<ControlSocket>,
    /// `ControlSocketsGroupWritable` (default 0): every control socket is
    /// made group-writable.
    pub sockets_group_writable: bool,
    /// `CookieAuthentication` (default 0).
    pub cookie_authentication: bool,
    /// `CookieAuthFile` (default `DataDirectory/control_auth_cookie`).
    pub cookie_auth_file: Option<PathBuf>,
    /// `CookieAuthFileGroupReadable` (default 0): the cookie file is 0640
    /// instead of 0600.
    pub cookie_auth_file_group_readable: bool,
    /// `HashedControlPassword` lines.
    pub hashed_control_passwords: Vec<HashedPassword>,
}

impl ControlOptions {
    /// Whether any control listener is configured.
    pub fn enabled(&self) -> bool {
        !self.ports.is_empty() || !self.sockets.is_empty()
    }

    /// The torrc lines of these options (for `Config::describe`): the
    /// switches always, the lists and paths when set.
    pub fn describe(&self, line: &mut dyn FnMut(&str, &dyn fmt::Display)) {
        for p in &self.ports {
            line("ControlPort", p);
        }
        for s in &self.sockets {
            line("ControlSocket", s);
        }
        line(
            "ControlSocketsGroupWritable",
            &u8::from(self.sockets_group_writable),
        );
        line(
            "CookieAuthentication",
            &u8::from(self.cookie_authentication),
        );
        if let Some(p) = &self.cookie_auth_file {
            line("CookieAuthFile", &p.display());
        }
        line(
            "CookieAuthFileGroupReadable",
            &u8::from(self.cookie_auth_file_group_readable),
        );
        for h in &self.hashed_control_passwords {
            line("HashedControlPassword", &h.text);
        }
    }
}

/// Apply one line of option `name` (one of [`OPTIONS`]); `first` says
/// whether it is the first line of that option (a list option's first
/// line replaces its default). The error is the expected syntax.
pub(super) fn apply(
    o: &mut ControlOptions,
    name: &str,
    value: &str,
    reset: bool,
    first: bool,
) -> Result<(), String> {
    let flag = |default: bool| super::options::boolean(value, default).ok_or("0 or 1".to_owned());
    match name {
        "ControlPort" => {
            // `ControlPort unix:PATH` lines join the ControlSocket list;
            // a first ControlPort line replaces only the TCP ports.
            if first || reset {
                o.ports.clear();
            }
            if !reset {
                match parse_control_port(value)? {
                    PortLine::Tcp(a) => o.ports.push(a),
                    PortLine::Unix(s) => o.sockets.push(s),
                    PortLine::Off => {}
                }
            }
        }
        "ControlSocket" => {
            if reset {
                o.sockets.clear();
            } else if let Some(s) = parse_control_socket(value)? {
                o.sockets.push(s);
            }
        }
        "ControlSocketsGroupWritable" => o.sockets_group_writable = flag(false)?,
        "CookieAuthentication" => o.cookie_authentication = flag(false)?,
        "CookieAuthFile" => o.cookie_auth_file = (!reset).then(|| PathBuf::from(value)),
        "CookieAuthFileGroupReadable" => o.cookie_auth_file_group_readable = flag(false)?,
        "HashedControlPassword" => {
            if first || reset {
                o.hashed_control_passwords.clear();
            }
            if !reset {
                o.hashed_control_passwords.push(HashedPassword {
                    text: value.to_owned(),
                    decoded: decode_hashed_password(value).ok_or_else(|| {
                        "\"16:\" and 58 hex digits, as `tor --hash-password PASSWORD` prints"
                            .to_owned()
                    })?,
                });
            }
        }
        _ => return Err(format!("a ControlPort option ({name} is not one)")),
    }
    Ok(())
}

enum PortLine {
    Tcp(SocketAddr),
    Unix(ControlSocket),
    Off,
}

/// `ControlPort PORT|ADDRESS:PORT|unix:PATH [flags]|0`.
fn parse_control_port(v: &str) -> Result<PortLine, String> {
    let expected = "PORT (on 127.0.0.1), a loopback ADDRESS:PORT such as 127.0.0.1:9051 or \
                    [::1]:9051, unix:PATH, or 0";
    let v = v.trim();
    if v.starts_with("unix:") {
        return Ok(parse_control_socket(v)?.map_or(PortLine::Off, PortLine::Unix));
    }
    let mut words = v.split_ascii_whitespace();
    let first = words.next().unwrap_or("");
    if words.next().is_some() {
        return Err(format!(
            "{expected} (flags are only for unix: sockets; oxit's TCP ControlPort takes none)"
        ));
    }
    if first == "0" {
        return Ok(PortLine::Off);
    }
    if first.eq_ignore_ascii_case("auto") {
        return Err(format!(
            "{expected} (auto is not supported: controllers would need ControlPortWriteToFile)"
        ));
    }
    let addr = if !first.is_empty() && first.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = first
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| expected.to_owned())?;
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    } else {
        let a: SocketAddr = first.parse().map_err(|_| expected.to_owned())?;
        if a.port() == 0 {
            return Err(expected.to_owned());
        }
        a
    };
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{expected}: {} is not a loopback address, and oxit's ControlPort is for local \
             tools only (the cookie or password would cross the network in clear text); \
             use a ControlSocket or an SSH tunnel for remote access",
            addr.ip()
        ));
    }
    Ok(PortLine::Tcp(addr))
}

/// `ControlSocket [unix:]PATH [GroupWritable] [WorldWritable]
/// [RelaxDirModeCheck]|0`. A quoted path may hold spaces (the torrc
/// lexer has already removed the quotes of a wholly quoted value).
fn parse_control_socket(v: &str) -> Result<Option<ControlSocket>, String> {
    let expected =
        "[unix:]PATH, optionally followed by GroupWritable, WorldWritable, RelaxDirModeCheck; or 0";
    let v = v.trim();
    if v == "0" {
        return Ok(None);
    }
    let v = v.strip_prefix("unix:").unwrap_or(v);
    let (path, rest) = if let Some(q) = v.strip_prefix('"') {
        let end = q.find('"').ok_or_else(|| expected.to_owned())?;
        (&q[..end], &q[end + 1..])
    } else {
        let end = v.find(|c: char| c.is_ascii_whitespace()).unwrap_or(v.len());
        (&v[..end], &v[end..])
    };
    if path.is_empty() {
        return Err(expected.to_owned());
    }
    let mut s = ControlSocket {
        path: PathBuf::from(path),
        group_writable: false,
        world_writable: false,
        relax_dir_mode_check: false,
    };
    for f in rest.split_ascii_whitespace() {
        match f.to_ascii_lowercase().as_str() {
            "groupwritable" => s.group_writable = true,
            "worldwritable" => s.world_writable = true,
            "relaxdirmodecheck" => s.relax_dir_mode_check = true,
            _ => return Err(format!("{expected}; {f:?} is not one of the flags")),
        }
    }
    if s.path.is_relative() {
        return Err(format!("{expected}, with an absolute PATH"));
    }
    Ok(Some(s))
}

/// A `HashedControlPassword` value: `16:` and hex, or base64, of the S2K
/// specifier and digest (control_auth.c:decode_hashed_passwords).
pub fn decode_hashed_password(v: &str) -> Option<[u8; HASHED_PASSWORD_LEN]> {
    use base64::Engine as _;
    let v = v.trim();
    let bytes = match v.strip_prefix("16:") {
        Some(h) => hex::decode(h).ok()?,
        None => base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        )
        .decode(v)
        .ok()?,
    };
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_all(lines: &[(&str, &str)]) -> Result<ControlOptions, String> {
        let mut o = ControlOptions::default();
        let mut seen: Vec<&str> = Vec::new();
        for (k, v) in lines {
            let first = !seen.contains(k);
            seen.push(k);
            apply(&mut o, k, v, v.is_empty(), first)?;
        }
        Ok(o)
    }

    #[test]
    fn control_ports() {
        let o = apply_all(&[("ControlPort", "9051"), ("ControlPort", "[::1]:9052")]).unwrap();
        assert_eq!(
            o.ports,
            vec![
                "127.0.0.1:9051".parse().unwrap(),
                "[::1]:9052".parse().unwrap()
            ]
        );
        assert!(o.enabled());
        let o = apply_all(&[("ControlPort", "unix:/run/oxit/control GroupWritable")]).unwrap();
        assert!(o.ports.is_empty());
        assert_eq!(o.sockets[0].path, PathBuf::from("/run/oxit/control"));
        assert!(o.sockets[0].group_writable);
        assert!(!apply_all(&[("ControlPort", "0")]).unwrap().enabled());
        for bad in [
            "0.0.0.0:9051",
            "192.0.2.1:9051",
            "[::]:9051",
            "auto",
            "70000",
            "127.0.0.1:0",
            "9051 GroupWritable",
            "localhost:9051",
        ] {
            let e = apply_all(&[("ControlPort", bad)]).unwrap_err();
            assert!(e.contains("loopback"), "{bad}: {e}");
        }
    }

    #[test]
    fn control_sockets() {
        let o = apply_all(&[(
            "ControlSocket",
            "/run/tor/control GroupWritable RelaxDirModeCheck",
        )])
        .unwrap();
        assert_eq!(
            o.sockets[0].to_string(),
            "/run/tor/control GroupWritable RelaxDirModeCheck"
        );
        assert!(apply_all(&[("ControlSocket", "relative/path")]).is_err());
        assert!(apply_all(&[("ControlSocket", "/x Bogus")]).is_err());
        assert!(!apply_all(&[("ControlSocket", "0")]).unwrap().enabled());
    }

    #[test]
    fn hashed_passwords() {
        // `tor --hash-password foo` (Debian tor 0.4.9.11).
        let h = "16:E82B59A7C58E2C6F60843E8145598B15B1D8FFA5146F0A062F05EA2A76";
        let o = apply_all(&[("HashedControlPassword", h)]).unwrap();
        assert_eq!(o.hashed_control_passwords[0].decoded[8], 0x60);
        assert!(apply_all(&[("HashedControlPassword", "16:00")]).is_err());
        assert!(apply_all(&[("HashedControlPassword", "foo")]).is_err());
        assert!(
            !format!("{o:?}").contains("E82B"),
            "no hash in debug output"
        );
    }
}

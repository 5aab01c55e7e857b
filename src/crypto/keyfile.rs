#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! C tor's key files: the tagged binary format
//! (crypto_format.c:crypto_write_tagged_contents_to_file /
//! crypto_read_tagged_contents_from_file; requirements.md §2.3) and safe
//! writing of secret files.
//!
//! This module owns bytes on disk: a 32-byte NUL-padded header
//! `"== <type>: <tag> =="` then the raw body. It does not interpret the
//! body (see `keys`). Writes never replace an existing file: a key file that
//! exists is an identity, and losing one by accident is not recoverable.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Length of the tagged header.
pub const HEADER_LEN: usize = 32;

/// Errors naming the file and what was wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file does not exist.
    #[error("key file {0} is missing")]
    Missing(PathBuf),
    /// An I/O error.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// Shorter than the header.
    #[error("key file {path} is truncated: {len} bytes, need at least {HEADER_LEN}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The header is not the expected one.
    #[error("key file {path} has header {got:?}, expected {expected:?}")]
    WrongHeader {
        /// The file.
        path: PathBuf,
        /// Header found (NULs trimmed, lossy).
        got: String,
        /// Header wanted.
        expected: String,
    },
    /// The body has the wrong length.
    #[error("key file {path} has a {got}-byte body, expected {expected} bytes")]
    WrongLength {
        /// The file.
        path: PathBuf,
        /// Body length.
        got: usize,
        /// Expected length.
        expected: usize,
    },
    /// The content is malformed in a way the caller found.
    #[error("key file {path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Refusing to overwrite an existing file.
    #[error("refusing to overwrite existing key file {0}")]
    Exists(PathBuf),
    /// A header that does not fit in 32 bytes.
    #[error("tagged header for type {typ:?} tag {tag:?} is longer than 31 bytes")]
    HeaderTooLong {
        /// Type string.
        typ: String,
        /// Tag.
        tag: String,
    },
}

impl KeyFileError {
    /// Build an [`KeyFileError::Invalid`].
    pub fn invalid(path: &Path, reason: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// The 32-byte header for `typ` and `tag`, NUL padded. C refuses headers
/// that do not fit with their terminating NUL (tor_snprintf into 32 bytes).
pub fn tagged_header(typ: &str, tag: &str) -> Result<[u8; HEADER_LEN], KeyFileError> {
    let text = format!("== {typ}: {tag} ==");
    let mut h = [0u8; HEADER_LEN];
    let dst = h
        .get_mut(..text.len())
        .filter(|_| text.len() < HEADER_LEN)
        .ok_or_else(|| KeyFileError::HeaderTooLong {
            typ: typ.to_string(),
            tag: tag.to_string(),
        })?;
    dst.copy_from_slice(text.as_bytes());
    Ok(h)
}

/// Read a whole file; a missing file is [`KeyFileError::Missing`].
pub fn read_file(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => KeyFileError::Missing(path.to_path_buf()),
        _ => KeyFileError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })
}

/// Check a tagged blob's header and body length; return the body.
pub fn parse_tagged<'a>(
    path: &Path,
    data: &'a [u8],
    typ: &str,
    tag: &str,
    body_len: usize,
) -> Result<&'a [u8], KeyFileError> {
    let expected = tagged_header(typ, tag)?;
    let (header, body) = data
        .split_at_checked(HEADER_LEN)
        .ok_or(KeyFileError::Truncated {
            path: path.to_path_buf(),
            len: data.len(),
        })?;
    if header != expected {
        let end = header.iter().position(|&b| b == 0).unwrap_or(HEADER_LEN);
        return Err(KeyFileError::WrongHeader {
            path: path.to_path_buf(),
            got: String::from_utf8_lossy(header.get(..end).unwrap_or(header)).into_owned(),
            expected: format!("== {typ}: {tag} =="),
        });
    }
    if body.len() != body_len {
        return Err(KeyFileError::WrongLength {
            path: path.to_path_buf(),
            got: body.len(),
            expected: body_len,
        });
    }
    Ok(body)
}

/// Read a tagged file with an exact body length.
pub fn read_tagged(
    path: &Path,
    typ: &str,
    tag: &str,
    body_len: usize,
) -> Result<Vec<u8>, KeyFileError> {
    let data = read_file(path)?;
    parse_tagged(path, &data, typ, tag, body_len).map(<[u8]>::to_vec)
}

/// Write a tagged file (see [`write_new_file`]).
pub fn write_tagged(path: &Path, typ: &str, tag: &str, body: &[u8]) -> Result<(), KeyFileError> {
    let mut data = Vec::with_capacity(HEADER_LEN.saturating_add(body.len()));
    data.extend_from_slice(&tagged_header(typ, tag)?);
    data.extend_from_slice(body);
    let res = write_new_file(path, &data);
    zeroize::Zeroize::zeroize(&mut data);
    res
}

/// Write `data` to `path` with mode 0600, atomically, never replacing an
/// existing file: the bytes go to a fresh temporary file that is fsynced and
/// then hard-linked to `path` (link fails if `path` exists, unlike rename).
pub fn write_new_file(path: &Path, data: &[u8]) -> Result<(), KeyFileError> {
    let io_err = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.symlink_metadata().is_ok() {
        return Err(KeyFileError::Exists(path.to_path_buf()));
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A stale temp file from a crash holds nothing we need.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(KeyFileError::Exists(path.to_path_buf()))
        }
        Err(e) => Err(io_err(e)),
    }
}

/// Replace `path` (which may exist) atomically with `data`, mode 0600:
/// for medium-term keys C tor regenerates in place (signing key and cert,
/// INIT_ED_KEY_REPLACE; onion keys, rotate_onion_key). Never use this for
/// identity keys.
pub fn replace_file(path: &Path, data: &[u8]) -> Result<(), KeyFileError> {
    let io_err = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    write_new_file(&tmp, data)?;
    fs::rename(&tmp, path).map_err(io_err)
}

/// [`replace_file`] for a tagged file.
pub fn replace_tagged(path: &Path, typ: &str, tag: &str, body: &[u8]) -> Result<(), KeyFileError> {
    let mut data = Vec::with_capacity(HEADER_LEN.saturating_add(body.len()));
    data.extend_from_slice(&tagged_header(typ, tag)?);
    data.extend_from_slice(body);
    let res = replace_file(path, &data);
    zeroize::Zeroize::zeroize(&mut data);
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("oxit-keyfile-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn header_matches_c() {
        let h = tagged_header("c25519v1", "onion").unwrap();
        assert_eq!(&h[..21], b"== c25519v1: onion ==");
        assert!(h[21..].iter().all(|&b| b == 0));
        assert!(tagged_header("ed25519v1-secret", "type0").is_ok());
        assert!(tagged_header("a-very-long-type-string", "tag").is_err());
    }

    #[test]
    fn roundtrip_mode_and_no_overwrite() {
        let d = tmpdir("rt");
        let p = d.join("k");
        write_tagged(&p, "ed25519v1-public", "type0", &[7; 32]).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            read_tagged(&p, "ed25519v1-public", "type0", 32).unwrap(),
            vec![7; 32]
        );
        assert!(matches!(
            write_tagged(&p, "ed25519v1-public", "type0", &[8; 32]),
            Err(KeyFileError::Exists(_))
        ));
        assert_eq!(read_file(&p).unwrap()[32..], [7; 32]);
        assert!(matches!(
            read_tagged(&p, "ed25519v1-public", "type0", 31),
            Err(KeyFileError::WrongLength {
                got: 32,
                expected: 31,
                ..
            })
        ));
        assert!(matches!(
            read_tagged(&p, "ed25519v1-secret", "type0", 32),
            Err(KeyFileError::WrongHeader { .. })
        ));
        fs::write(&p, [0u8; 10]).unwrap();
        let e = read_tagged(&p, "x", "y", 1).unwrap_err();
        assert!(matches!(e, KeyFileError::Truncated { len: 10, .. }));
        assert!(e.to_string().contains(&p.display().to_string()));
        assert!(matches!(
            read_tagged(&d.join("none"), "x", "y", 1),
            Err(KeyFileError::Missing(_))
        ));
        fs::remove_dir_all(&d).unwrap();
    }
}

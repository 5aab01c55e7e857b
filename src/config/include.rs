#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! Reading configuration files and expanding `%include`, with C tor's rules
//! (lib/fs/conffile.c:config_get_file_list, config_process_include;
//! lib/encoding/confline.c:config_get_lines_aux):
//!
//! * `%include PATH`: a file is read; a directory has its files (not its
//!   subdirectories, not names starting with `.`) read in lexical order;
//!   empty files are skipped. A relative PATH is taken from the process's
//!   working directory, as in C.
//! * A glob in the last component (`/etc/tor/torrc.d/*.conf`) is expanded
//!   and the matches read in lexical order (C uses glob(3); oxit supports
//!   `*` and `?` in the last component only).
//! * Nesting stops at 31 levels (MAX_INCLUDE_RECURSION_LEVEL). C has no
//!   other loop check; oxit also names the loop when a file includes itself
//!   directly or through others.

use std::fs;
use std::path::{Path, PathBuf};

use super::lexer::{self, RawLine};
use super::{ConfigError, ErrorKind};

/// C tor's MAX_INCLUDE_RECURSION_LEVEL.
const MAX_INCLUDE_DEPTH: usize = 31;

/// A configuration line and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct SourcedLine {
    pub origin: String,
    pub raw: RawLine,
}

/// Lex `text` (named `origin`) and expand its includes. `stack` holds the
/// canonical paths of the files being read, outermost first.
pub(crate) fn expand(
    text: &str,
    origin: &str,
    stack: &mut Vec<PathBuf>,
    out: &mut Vec<SourcedLine>,
) -> Result<(), ConfigError> {
    let lines = lexer::lex(text)
        .map_err(|e| ConfigError::at(origin, e.line, ErrorKind::Syntax(e.message)))?;
    for raw in lines {
        if !raw.key.eq_ignore_ascii_case("%include") {
            out.push(SourcedLine {
                origin: origin.to_owned(),
                raw,
            });
            continue;
        }
        let at = |kind| ConfigError::at(origin, raw.line, kind);
        if raw.value.is_empty() {
            return Err(at(ErrorKind::Include {
                path: String::new(),
                reason: "%include needs a file or directory".into(),
            }));
        }
        if stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(at(ErrorKind::IncludeTooDeep(MAX_INCLUDE_DEPTH)));
        }
        let files = file_list(&raw.value).map_err(|reason| {
            at(ErrorKind::Include {
                path: raw.value.clone(),
                reason,
            })
        })?;
        for file in files {
            let canon = fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
            if let Some(pos) = stack.iter().position(|p| *p == canon) {
                let mut chain: Vec<String> = stack
                    .get(pos..)
                    .unwrap_or_default()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                chain.push(canon.display().to_string());
                return Err(at(ErrorKind::IncludeLoop(chain.join(" -> "))));
            }
            let text = fs::read_to_string(&file).map_err(|e| {
                at(ErrorKind::Include {
                    path: file.display().to_string(),
                    reason: e.to_string(),
                })
            })?;
            stack.push(canon);
            let r = expand(&text, &file.display().to_string(), stack, out);
            stack.pop();
            r?;
        }
    }
    Ok(())
}

/// The files an `%include` names (config_get_file_list), or why not.
fn file_list(pattern: &str) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for path in expand_glob(pattern)? {
        let meta = fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.is_dir() {
            let mut names: Vec<String> = fs::read_dir(&path)
                .map_err(|e| format!("cannot list {}: {e}", path.display()))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect();
            names.sort();
            for n in names {
                let full = path.join(&n);
                // Only regular, non-empty files (C: FN_FILE; FN_EMPTY skipped).
                if fs::metadata(&full).is_ok_and(|m| m.is_file() && m.len() > 0) {
                    out.push(full);
                }
            }
        } else if meta.len() > 0 {
            out.push(path);
        }
    }
    Ok(out)
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expand `*`/`?` in the last path component; a pattern without them is
/// returned as is. A glob matching nothing is not an error (glob(3)'s
/// GLOB_NOMATCH, which C treats as an empty list).
fn expand_glob(pattern: &str) -> Result<Vec<PathBuf>, String> {
    if !has_glob(pattern) {
        return Ok(vec![PathBuf::from(pattern)]);
    }
    let p = Path::new(pattern);
    let (dir, name) = match (p.parent(), p.file_name()) {
        (Some(d), Some(n)) => (d, n.to_string_lossy().into_owned()),
        _ => return Err(format!("cannot expand {pattern:?}")),
    };
    let dir_s = dir.to_string_lossy();
    if has_glob(&dir_s) || name.contains('[') {
        return Err("only '*' and '?' in the last path component are supported in %include".into());
    }
    let dir = if dir_s.is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // glob(3) never lets a wildcard match a leading dot.
        .filter(|n| !n.starts_with('.') || name.starts_with('.'))
        .filter(|n| wildcard_match(name.as_bytes(), n.as_bytes()))
        .collect();
    names.sort();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// `*` matches any run, `?` one byte.
fn wildcard_match(pat: &[u8], s: &[u8]) -> bool {
    match pat.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => {
            (0..=s.len()).any(|i| wildcard_match(rest, s.get(i..).unwrap_or_default()))
        }
        Some((b'?', rest)) => s
            .split_first()
            .is_some_and(|(_, t)| wildcard_match(rest, t)),
        Some((c, rest)) => s
            .split_first()
            .is_some_and(|(d, t)| c == d && wildcard_match(rest, t)),
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard_match;

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*.conf", b"a.conf"));
        assert!(wildcard_match(b"*.conf", b".conf"));
        assert!(!wildcard_match(b"*.conf", b"a.conf~"));
        assert!(wildcard_match(b"a?c", b"abc"));
        assert!(!wildcard_match(b"a?c", b"ac"));
    }
}

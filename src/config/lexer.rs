#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! The torrc line format, as confline.c:parse_config_line_from_str_verbose
//! reads it (doc: torrc_format.txt): `Keyword value` per line, `#` comments,
//! a trailing `\` joins the next line, a value may be a C-escaped quoted
//! string. This layer knows nothing about option names or `%include`.

/// One `Keyword value` line with the line number where its keyword starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawLine {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A syntax fault and the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    pub line: usize,
    pub message: String,
}

fn is_space(b: u8) -> bool {
    // TOR_ISSPACE: C's isspace in the "C" locale.
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Split a whole file into lines. Lines with a keyword and no value are
/// kept with an empty value (C resets such options to their default).
pub(crate) fn lex(text: &str) -> Result<Vec<RawLine>, LexError> {
    let s = text.as_bytes();
    let mut out = Vec::new();
    let mut pos = 0;
    // Line number of `pos`, maintained by counting the newlines we pass.
    let mut line = 1;
    let advance = |from: usize, to: usize, line: &mut usize| {
        *line = line.saturating_add(
            s.get(from..to)
                .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count()),
        );
    };

    loop {
        // Skip whitespace and comment lines up to the next keyword.
        let start = pos;
        loop {
            while s.get(pos).is_some_and(|&b| is_space(b)) {
                pos = pos.saturating_add(1);
            }
            if s.get(pos) == Some(&b'#') {
                while s.get(pos).is_some_and(|&b| b != b'\n') {
                    pos = pos.saturating_add(1);
                }
            } else {
                break;
            }
        }
        advance(start, pos, &mut line);
        if pos >= s.len() {
            return Ok(out);
        }
        let key_line = line;

        // Keyword: up to whitespace, '#', or a backslash-newline.
        let key_start = pos;
        while let Some(&b) = s.get(pos) {
            if is_space(b)
                || b == b'#'
                || (b == b'\\' && s.get(pos.saturating_add(1)) == Some(&b'\n'))
            {
                break;
            }
            pos = pos.saturating_add(1);
        }
        let key = String::from_utf8_lossy(s.get(key_start..pos).unwrap_or_default()).into_owned();

        while matches!(s.get(pos), Some(b' ' | b'\t')) {
            pos = pos.saturating_add(1);
        }

        let value;
        if s.get(pos) == Some(&b'"') {
            let (v, end) = unescape_quoted(s, pos).ok_or_else(|| LexError {
                line: key_line,
                message: "invalid escape sequence or missing closing quote in quoted string".into(),
            })?;
            value = v;
            pos = end;
            while matches!(s.get(pos), Some(b' ' | b'\t')) {
                pos = pos.saturating_add(1);
            }
            if s.get(pos) == Some(&b'\r') && s.get(pos.saturating_add(1)) == Some(&b'\n') {
                pos = pos.saturating_add(1);
            }
            if s.get(pos).is_some_and(|&b| b != b'#' && b != b'\n') {
                return Err(LexError {
                    line: key_line,
                    message: "unexpected text after the closing quote".into(),
                });
            }
        } else {
            // Unquoted: up to the end of the line, following `\`-newline
            // continuations; a comment inside a continued value runs to the
            // end of its physical line and is dropped.
            let val_start = pos;
            let mut continuation = false;
            while let Some(&b) = s.get(pos) {
                if b == b'\n' || (b == b'#' && !continuation) {
                    break;
                }
                if b == b'\\' && s.get(pos.saturating_add(1)) == Some(&b'\n') {
                    continuation = true;
                    pos = pos.saturating_add(2);
                } else if b == b'#' {
                    while s.get(pos).is_some_and(|&c| c != b'\n') {
                        pos = pos.saturating_add(1);
                    }
                    if s.get(pos) == Some(&b'\n') {
                        pos = pos.saturating_add(1);
                    }
                } else {
                    pos = pos.saturating_add(1);
                }
            }
            let mut end = pos;
            while end > val_start && s.get(end.saturating_sub(1)).is_some_and(|&b| is_space(b)) {
                end = end.saturating_sub(1);
            }
            let raw = s.get(val_start..end).unwrap_or_default();
            let bytes = if continuation {
                strip_continuations(raw)
            } else {
                raw.to_vec()
            };
            value = String::from_utf8_lossy(&bytes).into_owned();
        }

        // Trailing comment, then on to the next line.
        if s.get(pos) == Some(&b'#') {
            while s.get(pos).is_some_and(|&b| b != b'\n') {
                pos = pos.saturating_add(1);
            }
        }
        advance(key_start, pos, &mut line);
        out.push(RawLine {
            key,
            value,
            line: key_line,
        });
    }
}

/// Remove `\`-newline pairs and `#` comments from a continued value.
fn strip_continuations(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'#' {
            while raw.get(i).is_some_and(|&c| c != b'\n') {
                i = i.saturating_add(1);
            }
            i = i.saturating_add(1);
        } else if b == b'\\' && raw.get(i.saturating_add(1)) == Some(&b'\n') {
            i = i.saturating_add(2);
        } else {
            out.push(b);
            i = i.saturating_add(1);
        }
    }
    out
}

/// cstring.c:unescape_string: `"..."` with \n \r \t \" \\ \' \? \xHH and
/// octal \ooo; a raw newline or the end of input before the closing quote
/// is an error. Returns the value and the index after the closing quote.
fn unescape_quoted(s: &[u8], open: usize) -> Option<(String, usize)> {
    let mut out = Vec::new();
    let mut i = open.saturating_add(1);
    loop {
        let b = *s.get(i)?;
        match b {
            b'\n' => return None,
            b'"' => {
                return Some((
                    String::from_utf8_lossy(&out).into_owned(),
                    i.saturating_add(1),
                ));
            }
            b'\\' => {
                let e = *s.get(i.saturating_add(1))?;
                match e {
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'"' | b'\\' | b'\'' | b'?' => out.push(e),
                    b'x' | b'X' => {
                        let h = s.get(i.saturating_add(2)..i.saturating_add(4))?;
                        let h = std::str::from_utf8(h).ok()?;
                        out.push(u8::from_str_radix(h, 16).ok()?);
                        i = i.saturating_add(2);
                    }
                    b'0'..=b'7' => {
                        let mut n = u32::from(e.saturating_sub(b'0'));
                        let mut k = i.saturating_add(2);
                        // At most three octal digits: n stays under 512.
                        while k < i.saturating_add(4)
                            && let Some(&c) = s.get(k).filter(|c| (b'0'..=b'7').contains(c))
                        {
                            n = n
                                .saturating_mul(8)
                                .saturating_add(u32::from(c.saturating_sub(b'0')));
                            k = k.saturating_add(1);
                        }
                        out.push(u8::try_from(n).ok()?);
                        i = k.saturating_sub(2);
                    }
                    _ => return None,
                }
                i = i.saturating_add(2);
            }
            _ => {
                out.push(b);
                i = i.saturating_add(1);
            }
        }
    }
}

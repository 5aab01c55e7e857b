#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]
//! The directory-document meta-format (dir-spec §1.2, "netdoc"): lines of
//! `Keyword Arg Arg...`, each optionally followed by a PEM-style object.
//!
//! This module owns splitting a document into [`Item`]s and remembering
//! where each one sits in the text, because signatures cover byte ranges
//! ("from the start through the space after `directory-signature`"). It
//! does not know any document type: the consensus and certificate parsers
//! decide which keywords they accept, how often and in what order.
//!
//! Strictness follows C tor's tokenizer (parsecommon.c:get_next_token): a
//! keyword is `[A-Za-z0-9][A-Za-z0-9-]*`, arguments are split on spaces and
//! tabs, an object's BEGIN and END tags must match, its body is base64 in
//! lines, and every line ends with `\n`. Anything else is an error naming
//! the line.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Longest object body C tor accepts (parsecommon.c `MAX_UNPARSED_OBJECT_SIZE`).
const MAX_OBJECT_LEN: usize = 128 * 1024;

/// A fault in a document's syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct SyntaxError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

/// One `-----BEGIN TAG-----` ... `-----END TAG-----` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object<'a> {
    /// The tag, e.g. `RSA PUBLIC KEY`, `SIGNATURE`, `ED25519 CERT`.
    pub tag: &'a str,
    /// The decoded body.
    pub data: Vec<u8>,
}

/// One keyword line and its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<'a> {
    pub keyword: &'a str,
    /// Everything after the keyword and the space that follows it
    /// (empty when there are no arguments).
    pub rest: &'a str,
    pub object: Option<Object<'a>>,
    /// Byte offset of the keyword in the document.
    pub start: usize,
    /// Byte offset just past this item (past the object's END line, if any).
    pub end: usize,
    /// 1-based line of the keyword.
    pub line: usize,
}

impl<'a> Item<'a> {
    /// The arguments, split on spaces and tabs.
    pub fn args(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.rest
            .split([' ', '\t'])
            .filter(|s: &&str| !s.is_empty())
    }

    /// Argument `i`, or an error naming the item.
    pub fn arg(&self, i: usize) -> Result<&'a str, SyntaxError> {
        self.args().nth(i).ok_or_else(|| {
            self.error(format!(
                "{} needs at least {} argument(s)",
                self.keyword,
                i.saturating_add(1)
            ))
        })
    }

    /// The object, if it has the expected tag.
    pub fn object_tagged(&self, tag: &str) -> Result<&[u8], SyntaxError> {
        match &self.object {
            Some(o) if o.tag == tag => Ok(&o.data),
            Some(o) => Err(self.error(format!(
                "{}: object is {:?}, expected {tag:?}",
                self.keyword, o.tag
            ))),
            None => Err(self.error(format!("{}: missing {tag:?} object", self.keyword))),
        }
    }

    /// An error at this item's line.
    pub fn error(&self, what: impl Into<String>) -> SyntaxError {
        SyntaxError {
            line: self.line,
            what: what.into(),
        }
    }
}

fn is_keyword(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

/// Split `text` into items. Empty lines are not allowed (C tor rejects
/// them in signed documents).
pub fn items(text: &str) -> Result<Vec<Item<'_>>, SyntaxError> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut line = 1;
    while pos < text.len() {
        let (kw_line, next) = take_line(text, pos, line)?;
        let (keyword, rest) = kw_line
            .split_once([' ', '\t'])
            .map_or((kw_line, ""), |(k, r)| (k, r));
        // C tor tolerates the "opt " prefix from old documents.
        let (keyword, rest) = if keyword == "opt" {
            rest.split_once([' ', '\t'])
                .map_or((rest, ""), |(k, r)| (k, r))
        } else {
            (keyword, rest)
        };
        if !is_keyword(keyword) {
            return Err(SyntaxError {
                line,
                what: format!("{:?} is not a keyword line", truncate(kw_line)),
            });
        }
        let start = pos;
        let item_line = line;
        pos = next;
        line = line.saturating_add(1);
        let mut object = None;
        if text[pos..].starts_with("-----BEGIN ") {
            let (o, after, lines) = take_object(text, pos, line)?;
            object = Some(o);
            pos = after;
            line = line.saturating_add(lines);
        }
        out.push(Item {
            keyword,
            rest,
            object,
            start,
            end: pos,
            line: item_line,
        });
    }
    Ok(out)
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

/// The line starting at `pos` (without its `\n`) and the offset after it.
fn take_line(text: &str, pos: usize, line: usize) -> Result<(&str, usize), SyntaxError> {
    let rest = &text[pos..];
    let Some(nl) = rest.find('\n') else {
        return Err(SyntaxError {
            line,
            what: "document does not end with a newline (truncated?)".into(),
        });
    };
    let l = &rest[..nl];
    if l.is_empty() {
        return Err(SyntaxError {
            line,
            what: "empty line".into(),
        });
    }
    if l.contains('\r') || l.contains('\0') {
        return Err(SyntaxError {
            line,
            what: "carriage return or NUL in line".into(),
        });
    }
    Ok((l, pos.saturating_add(nl).saturating_add(1)))
}

/// An object starting at `pos`: the decoded object, the offset after its
/// END line and how many lines it took.
fn take_object(
    text: &str,
    pos: usize,
    line: usize,
) -> Result<(Object<'_>, usize, usize), SyntaxError> {
    let (begin, mut p) = take_line(text, pos, line)?;
    let tag = begin
        .strip_prefix("-----BEGIN ")
        .and_then(|t| t.strip_suffix("-----"))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| SyntaxError {
            line,
            what: format!("malformed object start {:?}", truncate(begin)),
        })?;
    let end_line = format!("-----END {tag}-----");
    let mut b64 = String::new();
    let mut n = 1;
    loop {
        let (l, next) = take_line(text, p, line.saturating_add(n)).map_err(|e| SyntaxError {
            line: e.line,
            what: format!("object {tag:?} is not closed: {}", e.what),
        })?;
        n = n.saturating_add(1);
        p = next;
        if l == end_line {
            break;
        }
        if l.starts_with("-----") {
            return Err(SyntaxError {
                line: line.saturating_add(n).saturating_sub(1),
                what: format!("object {tag:?} ends with {:?}", truncate(l)),
            });
        }
        b64.push_str(l);
        if b64.len() > MAX_OBJECT_LEN * 4 / 3 + 4 {
            return Err(SyntaxError {
                line,
                what: format!("object {tag:?} is too long"),
            });
        }
    }
    let data = STANDARD.decode(b64.as_bytes()).map_err(|e| SyntaxError {
        line,
        what: format!("object {tag:?}: bad base64: {e}"),
    })?;
    Ok((Object { tag, data }, p, n))
}

/// `-----BEGIN tag-----`, the body in 64-column base64 lines, `-----END
/// tag-----`, each line ending in `\n` (C tor's pem_encode).
pub fn write_object(out: &mut String, tag: &str, data: &[u8]) {
    out.push_str("-----BEGIN ");
    out.push_str(tag);
    out.push_str("-----\n");
    let b64 = STANDARD.encode(data);
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(tag);
    out.push_str("-----\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_and_offsets() {
        let doc = "a 1 2\nb\n-----BEGIN X Y-----\nAAEC\n-----END X Y-----\nopt c  x\ty\n";
        let it = items(doc).unwrap();
        assert_eq!(it.len(), 3);
        assert_eq!(it[0].keyword, "a");
        assert_eq!(it[0].args().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!((it[0].start, it[0].end), (0, 6));
        assert_eq!(it[1].keyword, "b");
        let o = it[1].object.as_ref().unwrap();
        assert_eq!((o.tag, o.data.as_slice()), ("X Y", &[0u8, 1, 2][..]));
        assert_eq!(
            &doc[it[1].start..it[1].end],
            "b\n-----BEGIN X Y-----\nAAEC\n-----END X Y-----\n"
        );
        assert_eq!(it[2].keyword, "c");
        assert_eq!(it[2].args().collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(it[2].line, 6);
        assert_eq!(it[1].object_tagged("X Y").unwrap(), &[0, 1, 2]);
        assert!(it[1].object_tagged("Z").is_err());
        assert!(it[0].arg(2).is_err());
    }

    #[test]
    fn rejects() {
        for (doc, line) in [
            ("a\n\nb\n", 2),
            ("a\nb", 2),
            ("-x\n", 1),
            ("a\n-----BEGIN X-----\nAAEC\n-----END Y-----\n", 4),
            ("a\n-----BEGIN X-----\nAAEC\n", 4),
            ("a\n-----BEGIN X-----\n!!!!\n-----END X-----\n", 2),
            ("a\r\n", 1),
        ] {
            let e = items(doc).unwrap_err();
            assert_eq!(e.line, line, "{doc:?}: {e}");
        }
    }

    #[test]
    fn object_round_trip() {
        let data: Vec<u8> = (0..=200).collect();
        let mut s = String::from("k\n");
        write_object(&mut s, "SIGNATURE", &data);
        assert!(s.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
        let it = items(&s).unwrap();
        assert_eq!(it[0].object_tagged("SIGNATURE").unwrap(), data.as_slice());
    }
}

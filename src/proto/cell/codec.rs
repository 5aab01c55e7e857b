//! Byte-level reading and writing shared by the channel-cell and
//! relay-message codecs.
//!
//! Owns only bounds-checked cursors: a [`Reader`] over a borrowed slice and a
//! [`SliceWriter`] over a caller-provided buffer. It knows nothing about Tor
//! commands; the callers wrap its two small faults ([`Short`], [`Overflow`])
//! into their own errors, adding what was being parsed.

/// The input ended before a field was complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short {
    /// Bytes the field needed.
    pub wanted: usize,
    /// Bytes that were left.
    pub available: usize,
}

/// The output buffer has no room for a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    /// Bytes the field needed.
    pub wanted: usize,
    /// Room left in the buffer.
    pub room: usize,
}

/// A cursor over a borrowed byte slice. Every read is bounds-checked and
/// returns a sub-slice of the input, so decoding copies nothing.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Take the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        if n > self.buf.len() {
            return Err(Short {
                wanted: n,
                available: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, Short> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    pub fn u16(&mut self) -> Result<u16, Short> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, Short> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Take everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Take the bytes before the first NUL and consume the NUL too.
    /// `None` (and nothing consumed) if there is no NUL.
    pub fn until_nul(&mut self) -> Option<&'a [u8]> {
        let pos = self.buf.iter().position(|&b| b == 0)?;
        let (head, tail) = self.buf.split_at(pos);
        self.buf = tail.get(1..).unwrap_or_default();
        Some(head)
    }
}

/// A cursor that writes into a caller-provided buffer and refuses to run
/// past its end (relay messages are encoded straight into the 498-byte data
/// area of a relay cell, never into a fresh allocation).
#[derive(Debug)]
pub struct SliceWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> SliceWriter<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceWriter { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.pos
    }

    pub fn put(&mut self, bytes: &[u8]) -> Result<(), Overflow> {
        let room = self.buf.len().saturating_sub(self.pos);
        let end = self.pos.saturating_add(bytes.len());
        match self.buf.get_mut(self.pos..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.pos = end;
                Ok(())
            }
            None => Err(Overflow {
                wanted: bytes.len(),
                room,
            }),
        }
    }

    pub fn put_u8(&mut self, v: u8) -> Result<(), Overflow> {
        self.put(&[v])
    }

    pub fn put_u16(&mut self, v: u16) -> Result<(), Overflow> {
        self.put(&v.to_be_bytes())
    }

    pub fn put_u32(&mut self, v: u32) -> Result<(), Overflow> {
        self.put(&v.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_bounds() {
        let mut r = Reader::new(&[1, 2, 3, 0, 5]);
        assert_eq!(r.u16(), Ok(0x0102));
        assert_eq!(r.until_nul(), Some(&[3u8][..]));
        assert_eq!(r.remaining(), 1);
        assert_eq!(
            r.u32(),
            Err(Short {
                wanted: 4,
                available: 1
            })
        );
        assert_eq!(r.until_nul(), None);
        assert_eq!(r.rest(), &[5]);
        assert!(r.is_empty());
    }

    #[test]
    fn writer_bounds() {
        let mut buf = [0u8; 3];
        let mut w = SliceWriter::new(&mut buf);
        assert_eq!(w.put_u16(0xabcd), Ok(()));
        assert_eq!(w.put_u16(1), Err(Overflow { wanted: 2, room: 1 }));
        assert_eq!(w.put_u8(7), Ok(()));
        assert_eq!(w.written(), 3);
        assert_eq!(buf, [0xab, 0xcd, 7]);
    }
}

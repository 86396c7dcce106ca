//! Bounds-checked reading and plain writing of OpenFlow's big-endian
//! structures. Every read that would pass the end of its buffer is an
//! `OfError` (BAD_REQUEST/BAD_LEN unless the caller says otherwise), never
//! a panic: a peer's lengths are never trusted.

/// An OpenFlow error (`ofp_error_msg` type and code) to send back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfError {
    pub kind: u16,
    pub code: u16,
}

pub mod err {
    use super::OfError;
    pub const HELLO_INCOMPATIBLE: OfError = OfError { kind: 0, code: 0 };
    pub const BAD_VERSION: OfError = OfError { kind: 1, code: 0 };
    pub const BAD_TYPE: OfError = OfError { kind: 1, code: 1 };
    pub const BAD_MULTIPART: OfError = OfError { kind: 1, code: 2 };
    pub const BAD_LEN: OfError = OfError { kind: 1, code: 6 };
    pub const BUFFER_UNKNOWN: OfError = OfError { kind: 1, code: 8 };
    pub const BAD_TABLE_ID: OfError = OfError { kind: 1, code: 9 };
    pub const BAD_PORT: OfError = OfError { kind: 1, code: 11 };
    pub const BAD_ACTION_TYPE: OfError = OfError { kind: 2, code: 0 };
    pub const BAD_ACTION_LEN: OfError = OfError { kind: 2, code: 1 };
    pub const BAD_OUT_PORT: OfError = OfError { kind: 2, code: 4 };
    pub const BAD_ARGUMENT: OfError = OfError { kind: 2, code: 5 };
    pub const TOO_MANY_ACTIONS: OfError = OfError { kind: 2, code: 7 };
    pub const BAD_SET_TYPE: OfError = OfError { kind: 2, code: 13 };
    pub const BAD_SET_LEN: OfError = OfError { kind: 2, code: 14 };
    pub const UNSUP_INST: OfError = OfError { kind: 3, code: 1 };
    pub const BAD_INST_LEN: OfError = OfError { kind: 3, code: 7 };
    pub const BAD_MATCH_TYPE: OfError = OfError { kind: 4, code: 0 };
    pub const BAD_MATCH_LEN: OfError = OfError { kind: 4, code: 1 };
    pub const BAD_FIELD: OfError = OfError { kind: 4, code: 6 };
    pub const BAD_VALUE: OfError = OfError { kind: 4, code: 7 };
    pub const BAD_MASK: OfError = OfError { kind: 4, code: 8 };
    pub const BAD_PREREQ: OfError = OfError { kind: 4, code: 9 };
    pub const DUP_FIELD: OfError = OfError { kind: 4, code: 10 };
    pub const TABLE_FULL: OfError = OfError { kind: 5, code: 1 };
    pub const FLOW_BAD_TABLE_ID: OfError = OfError { kind: 5, code: 2 };
    pub const OVERLAP: OfError = OfError { kind: 5, code: 3 };
    pub const BAD_COMMAND: OfError = OfError { kind: 5, code: 6 };
    pub const BAD_FLAGS: OfError = OfError { kind: 5, code: 7 };
    pub const TABLE_FEATURES_EPERM: OfError = OfError { kind: 13, code: 5 };
}

pub type Res<T> = Result<T, OfError>;

/// A cursor over a peer's bytes.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
    /// The error a short read is (the structure being read decides).
    short: OfError,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, short: err::BAD_LEN }
    }

    pub fn with_short(buf: &'a [u8], short: OfError) -> Reader<'a> {
        Reader { buf, short }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn bytes(&mut self, n: usize) -> Res<&'a [u8]> {
        if n > self.buf.len() {
            return Err(self.short);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        Ok(self.bytes(N)?.try_into().expect("N bytes"))
    }

    /// The next `n` bytes as a reader of their own.
    pub fn sub(&mut self, n: usize) -> Res<Reader<'a>> {
        Ok(Reader { buf: self.bytes(n)?, short: self.short })
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub fn skip(&mut self, n: usize) -> Res<()> {
        self.bytes(n).map(drop)
    }

    pub fn u8(&mut self) -> Res<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Res<u16> {
        self.array().map(u16::from_be_bytes)
    }

    pub fn u32(&mut self) -> Res<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub fn u64(&mut self) -> Res<u64> {
        self.array().map(u64::from_be_bytes)
    }
}

/// Big-endian writing into a growing buffer.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }

    /// A fixed-size, zero-padded text field (names, descriptions).
    pub fn text(&mut self, s: &str, n: usize) -> &mut Self {
        let b = &s.as_bytes()[..s.len().min(n - 1)];
        self.bytes(b).zeros(n - b.len())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes `v` as the big-endian u16 at `at` (a length known only now).
    pub fn patch_u16(&mut self, at: usize, v: u16) {
        self.0[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Pads with zeros to a multiple of 8 from `start`.
    pub fn pad8(&mut self, start: usize) -> &mut Self {
        let n = (8 - (self.0.len() - start) % 8) % 8;
        self.zeros(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_errors() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16(), Ok(0x0102));
        assert_eq!(r.u16(), Err(err::BAD_LEN));
        assert_eq!(r.u8(), Ok(3));
        assert_eq!(Reader::with_short(&[], err::BAD_MATCH_LEN).u32(), Err(err::BAD_MATCH_LEN));
        assert!(Reader::new(&[0; 4]).sub(5).is_err());
    }

    #[test]
    fn text_is_cut_and_padded() {
        let mut w = Writer::default();
        w.text("a-very-long-port-name", 16);
        assert_eq!(w.0.len(), 16);
        assert_eq!(&w.0[..15], b"a-very-long-por");
        assert_eq!(w.0[15], 0);
        let mut w = Writer::default();
        w.u8(1).pad8(0);
        assert_eq!(w.0.len(), 8);
    }
}

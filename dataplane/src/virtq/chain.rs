//! A validated descriptor chain: its buffers translated once into spans,
//! and the reads, writes and guest-to-guest copies over them.
use pmd_bridge::guest_mem::{GuestMemory, Gpa, OutOfBounds, Span};

use super::{ChainError, Desc, Direction, MAX_DESCS, MAX_READ, MAX_SEGS, VRING_DESC_F_WRITE};

/// Spans a chain holds in place: most guest chains are one or two buffers
/// (a header and a frame, or one buffer of both).
const INLINE: usize = 4;

/// One descriptor chain, validated: its head and buffers, translated once
/// (a buffer that crosses guest memory regions is split into two spans).
/// Compact: a burst's chains stay within a few cache lines; a longer chain
/// moves its spans to room allocated with the chain, not per packet.
#[derive(Clone, Debug)]
pub struct Chain {
    pub head: u16,
    n: u16,
    descs: u16,
    total: u64,
    inline: [Span; INLINE],
    spill: Box<[Span; MAX_SEGS]>,
}

impl Default for Chain {
    fn default() -> Self {
        Chain { head: 0, n: 0, descs: 0, total: 0, inline: [Span::default(); INLINE], spill: Box::new([Span::default(); MAX_SEGS]) }
    }
}

impl Chain {
    #[inline]
    pub fn segments(&self) -> &[Span] {
        let n = self.n as usize;
        if n <= INLINE {
            &self.inline[..n]
        } else {
            &self.spill[..n]
        }
    }

    /// Always inlined: a call takes the span through the stack, written as
    /// four fields and read back as two 16-byte words (a failed store
    /// forwarding, which waits for the receive buffers' stores to land).
    #[inline(always)]
    fn push(&mut self, s: Span) {
        let n = self.n as usize;
        if n < INLINE {
            self.inline[n] = s;
        } else {
            if n == INLINE {
                self.spill[..INLINE].copy_from_slice(&self.inline);
            }
            self.spill[n] = s;
        }
        self.n += 1;
    }

    /// How many buffer descriptors the chain had (not counting an INDIRECT
    /// one): at most `MAX_DESCS`.
    pub fn descriptors(&self) -> usize {
        self.descs as usize
    }

    /// The chain `head` as one buffer, `s`, that passed every check.
    #[inline(always)]
    pub(super) fn set_single(&mut self, head: u16, s: Span) {
        self.head = head;
        self.n = 1;
        self.descs = 1;
        self.total = s.len() as u64;
        self.inline[0] = s;
    }

    pub(super) fn clear(&mut self, head: u16) {
        self.head = head;
        self.n = 0;
        self.descs = 0;
        self.total = 0;
    }

    /// Adds the buffer of descriptor `d`, translated, once it has passed
    /// every check (count, direction, length, memory). Always inlined
    /// into the walk, as `push` is into it (see there).
    #[inline(always)]
    pub(super) fn take(&mut self, mem: &GuestMemory, dir: Direction, d: &Desc) -> Result<(), ChainError> {
        if self.descs as usize == MAX_DESCS {
            return Err(ChainError::TooLong);
        }
        self.descs += 1;
        if d.has(VRING_DESC_F_WRITE) != (dir == Direction::DeviceWrites) {
            return Err(ChainError::WrongDirection);
        }
        // Empty buffers carry nothing: accepting them would let a chain cost
        // descriptor loads without adding a byte.
        if d.len == 0 {
            return Err(ChainError::BadLength);
        }
        let mut too_long = false;
        let mut add = |s: Span| match self.n as usize {
            MAX_SEGS => too_long = true,
            _ => self.push(s),
        };
        // Nearly every buffer lies in one region: one span, no walk.
        match mem.span(Gpa(d.addr), d.len) {
            Some(s) => add(s),
            None => mem.translate(Gpa(d.addr), d.len, add).map_err(|_| ChainError::OutsideMemory)?,
        }
        if too_long {
            return Err(ChainError::TooLong);
        }
        self.total += d.len as u64;
        Ok(())
    }

    /// Starts taking the lines of the chain's first `bytes` bytes for
    /// writing (a hint).
    pub fn prefetch_write(&self, mem: &GuestMemory, bytes: u64) {
        let mut left = bytes;
        for s in self.segments() {
            if left == 0 {
                break;
            }
            let n = left.min(s.len() as u64);
            mem.prefetch_write(s.gpa(), n);
            left -= n;
        }
    }

    /// Total bytes over every buffer.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f(span, offset in it, range of the caller's buffer)` for each
    /// piece of the chain's bytes `[off, off+len)`; fails (calling nothing)
    /// if the chain is shorter.
    pub(crate) fn for_range(&self, mut off: u64, len: usize, mut f: impl FnMut(&Span, usize, std::ops::Range<usize>) -> Result<(), OutOfBounds>) -> Result<(), OutOfBounds> {
        if len == 0 {
            return Ok(());
        }
        let Some(end) = off.checked_add(len as u64).filter(|&end| end <= self.len()) else {
            return Err(OutOfBounds { gpa: self.segments().first().map_or(Gpa(0), |s| s.gpa()), len: len as u64 });
        };
        // Most reads and writes (a frame's headers, a small frame whole)
        // lie in the first buffer: no walk.
        if let Some(s) = self.segments().first().filter(|s| end <= s.len() as u64) {
            return f(s, off as usize, 0..len);
        }
        let mut done = 0;
        for s in self.segments() {
            if done == len {
                break;
            }
            let seg = s.len() as u64;
            if off >= seg {
                off -= seg;
                continue;
            }
            let k = ((seg - off) as usize).min(len - done);
            f(s, off as usize, done..done + k)?;
            done += k;
            off = 0;
        }
        Ok(())
    }

    /// Copies `buf.len()` bytes of the chain from offset `off` into `buf`.
    /// Inlined, as `write_at`: a result returned through memory is read
    /// back before the burst's stores into guest memory have drained.
    #[inline]
    pub fn read_at(&self, mem: &GuestMemory, off: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.for_range(off, buf.len(), |s, so, r| mem.read_span(s, so, &mut buf[r]))
    }

    /// Copies `bytes` into the chain from offset `off` on.
    #[inline]
    pub fn write_at(&self, mem: &GuestMemory, off: u64, bytes: &[u8]) -> Result<(), OutOfBounds> {
        self.for_range(off, bytes.len(), |s, so, r| mem.write_span(s, so, &bytes[r]))
    }

    /// Copies the chain's bytes from offset `skip` on into `out` (appended),
    /// at most `MAX_READ` of them: the lengths are the guest's to choose.
    pub fn read(&self, mem: &GuestMemory, skip: u64, out: &mut Vec<u8>) -> Result<(), OutOfBounds> {
        let n = self.len().saturating_sub(skip);
        if n > MAX_READ {
            return Err(OutOfBounds { gpa: self.segments().first().map_or(Gpa(0), |s| s.gpa()), len: self.len() });
        }
        let start = out.len();
        out.resize(start + n as usize, 0);
        self.read_at(mem, skip, &mut out[start..])
    }

    /// Copies `parts`, one after the other, into the chain's buffers;
    /// returns the bytes written, or None if they do not fit.
    pub fn write(&self, mem: &GuestMemory, parts: &[&[u8]]) -> Option<u32> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total as u64 > self.len() {
            return None;
        }
        let mut at = 0u64;
        for part in parts {
            self.write_at(mem, at, part).ok()?;
            at += part.len() as u64;
        }
        Some(total as u32)
    }
}

/// Copies `len` bytes from the position `src` of a chain in guest memory
/// `from` to offset `dst_off` of chain `dst` in `to`: the single copy of a
/// VM-to-VM packet, done at once. Returns the bytes copied (less than `len`
/// if `dst` is too short); `src` is left after them.
pub fn copy_chain(from: &GuestMemory, src: &mut Cursor, to: &GuestMemory, dst: &Chain, dst_off: u64, len: u64) -> Result<u64, OutOfBounds> {
    pieces(src, dst, dst_off, len, |s, so, d, dof, n| GuestMemory::copy_span(from, s, so as usize, to, d, dof as usize, n as usize))
}

/// Walks `len` bytes from the position `src` of a chain beside offset
/// `dst_off` of chain `dst`, calling `f(source span, offset, destination
/// span, offset, bytes)` for each piece between the buffers' boundaries;
/// returns the bytes covered (less than `len` if `dst` is too short) and
/// leaves `src` after them, so that a frame spread over many destination
/// chains is not sought from its start for each.
pub fn pieces(
    src: &mut Cursor,
    dst: &Chain,
    dst_off: u64,
    len: u64,
    mut f: impl FnMut(&Span, u64, &Span, u64, u64) -> Result<(), OutOfBounds>,
) -> Result<u64, OutOfBounds> {
    let mut d = Cursor::new(dst, dst_off);
    let mut done = 0;
    while done < len {
        let (Some((ss, soff, sroom)), Some((ds, doff, droom))) = (src.here(), d.here()) else { break };
        let n = sroom.min(droom).min(len - done);
        f(ss, soff, ds, doff, n)?;
        src.advance(n);
        d.advance(n);
        done += n;
    }
    Ok(done)
}

/// A position inside a chain: segment and offset.
pub struct Cursor<'a> {
    segs: &'a [Span],
    seg: usize,
    off: u64,
}

impl<'a> Cursor<'a> {
    pub fn new(c: &'a Chain, mut skip: u64) -> Cursor<'a> {
        let segs = c.segments();
        let mut seg = 0;
        while seg < segs.len() && skip >= segs[seg].len() as u64 {
            skip -= segs[seg].len() as u64;
            seg += 1;
        }
        Cursor { segs, seg, off: skip }
    }

    /// Where the cursor is (span, offset in it) and how many bytes its
    /// segment has left.
    fn here(&self) -> Option<(&'a Span, u64, u64)> {
        let s = self.segs.get(self.seg)?;
        Some((s, self.off, s.len() as u64 - self.off))
    }

    fn advance(&mut self, n: u64) {
        self.off += n;
        if let Some(s) = self.segs.get(self.seg) {
            if self.off == s.len() as u64 {
                self.seg += 1;
                self.off = 0;
            }
        }
    }
}

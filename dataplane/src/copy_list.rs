//! A burst's guest-to-guest payload copies, listed while frames are
//! delivered and run together afterwards (VPP's model). Delivering a frame
//! into a copy-once guest takes its receive buffers and writes their used
//! entries at once, but the payload copy is only listed; after the burst the
//! list runs in one pass, prefetching the next entries while it copies, and
//! only then are the guests' used indices published and the senders' chains
//! returned, each of which takes the `CopiesDone` that running the list
//! makes: no guest sees an entry before its bytes, and no sender gets a
//! buffer back still unread.
use pmd_bridge::guest_mem::{GuestMemory, OutOfBounds, Span};

/// Entries per list: a burst of 32 frames of up to 4 pieces each to up to 4
/// guests. A full list does not stop delivery: the caller copies at once.
pub const CAPACITY: usize = 512;

/// Bytes of the entry two ahead that the pass starts taking before each
/// copy, on both sides: the sender's lines to read, the receiver's for
/// writing. Both are lines the guests' core holds, and a copy that meets
/// them one by one waits for each; the rest of a longer entry the
/// hardware prefetcher streams once the copy runs.
const PREFETCH_MAX: usize = 1024;

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The output port whose guest memory `dst` lies in.
    out: u16,
    src: Span,
    soff: u32,
    dst: Span,
    doff: u32,
    len: u32,
}

pub struct CopyList {
    entries: Vec<Entry>,
}

impl Default for CopyList {
    fn default() -> Self {
        CopyList { entries: Vec::with_capacity(CAPACITY) }
    }
}

impl CopyList {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Lists `len` bytes at `soff` in `src` for `doff` in `dst` (in output
    /// `out`'s guest); false if the list is full (copy them now instead).
    #[inline]
    pub fn push(&mut self, out: u16, src: &Span, soff: u64, dst: &Span, doff: u64, len: u64) -> bool {
        if self.entries.len() == CAPACITY {
            return false;
        }
        self.entries.push(Entry { out, src: *src, soff: soff as u32, dst: *dst, doff: doff as u32, len: len as u32 });
        true
    }

    /// Runs and empties the list: each entry from `from` (the burst's
    /// sender; None for a burst of mbufs, which lists nothing) into the
    /// memory `to(out)` of its output. A span checked against the wrong
    /// memory is refused by `GuestMemory` (never followed); the quiesce
    /// protocol keeps every memory in place for the burst, so none fails.
    /// The proof it returns keeps the list borrowed while it lives.
    pub fn run<'m>(&mut self, from: Option<&GuestMemory>, to: impl Fn(u16) -> Option<&'m GuestMemory>) -> (CopiesDone<'_>, Result<(), OutOfBounds>) {
        let result = match from {
            Some(from) => self.copy_all(from, to),
            None if self.entries.is_empty() => Ok(()),
            None => Err(OutOfBounds { gpa: self.entries[0].src.gpa(), len: self.entries[0].len as u64 }),
        };
        self.entries.clear();
        (CopiesDone { _list: &*self }, result)
    }

    fn copy_all<'m>(&self, from: &GuestMemory, to: impl Fn(u16) -> Option<&'m GuestMemory>) -> Result<(), OutOfBounds> {
        const AHEAD: usize = 2;
        // Entries come in runs of one output (a segment's 32 buffers, a
        // burst to one guest): its memory is looked up once a run.
        let mut last: Option<(u16, Option<&'m GuestMemory>)> = None;
        let mut mem_of = |out: u16| match last {
            Some((o, m)) if o == out => m,
            _ => {
                let m = to(out);
                last = Some((out, m));
                m
            }
        };
        let mut result = Ok(());
        for (i, e) in self.entries.iter().enumerate() {
            if let Some(next) = self.entries.get(i + AHEAD) {
                let n = (next.len as usize).min(PREFETCH_MAX);
                from.prefetch_span(&next.src, next.soff as usize, n, false);
                if let Some(m) = mem_of(next.out) {
                    m.prefetch_span(&next.dst, next.doff as usize, n, true);
                }
            }
            let copied = match mem_of(e.out) {
                Some(dst_mem) => GuestMemory::copy_span(from, &e.src, e.soff as usize, dst_mem, &e.dst, e.doff as usize, e.len as usize),
                None => Err(OutOfBounds { gpa: e.dst.gpa(), len: e.len as u64 }),
            };
            result = result.and(copied);
        }
        result
    }
}

/// That a burst's listed copies have run: what publishing a used index
/// and returning a sender's chains take. Only `CopyList::run` makes one,
/// and it holds the list, so nothing can be listed while it lives.
pub struct CopiesDone<'l> {
    _list: &'l CopyList,
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmd_bridge::guest_mem::Gpa;

    #[test]
    fn listed_copies_land_only_when_run_and_a_full_list_says_so() {
        let a = GuestMemory::new_owned(&[(0, 0x10000)]);
        let b = GuestMemory::new_owned(&[(0, 0x10000)]);
        a.write(Gpa(0x100), b"hello, guest b").unwrap();
        let (s, d) = (a.span(Gpa(0x100), 14).unwrap(), b.span(Gpa(0x800), 14).unwrap());
        let mut list = CopyList::default();
        assert!(list.push(3, &s, 0, &d, 0, 7) && list.push(3, &s, 7, &d, 7, 7));
        let mut out = [0u8; 14];
        b.read(Gpa(0x800), &mut out).unwrap();
        assert_eq!(out, [0; 14], "nothing copied before the list runs");
        list.run(Some(&a), |out| (out == 3).then_some(&b)).1.unwrap();
        b.read(Gpa(0x800), &mut out).unwrap();
        assert_eq!(&out, b"hello, guest b");
        assert!(list.is_empty());
        for _ in 0..CAPACITY {
            assert!(list.push(3, &s, 0, &d, 0, 1));
        }
        assert!(!list.push(3, &s, 0, &d, 0, 1), "full");
        assert!(list.run(Some(&a), |_| Some(&a)).1.is_err(), "a span of another memory is refused");
        assert!(list.is_empty());
    }
}

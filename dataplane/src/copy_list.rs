//! A burst's guest-to-guest payload copies, listed while frames are
//! delivered and run together afterwards (VPP's model). Delivering a frame
//! into a copy-once guest takes its receive buffers and writes their used
//! entries at once, but the payload copy is only listed; after the burst the
//! list runs in one pass, loading the entries ahead while it copies, and
//! only then are the guests' used indices published and the senders' chains
//! returned, each of which takes the `CopiesDone` that running the list
//! makes: no guest sees an entry before its bytes, and no sender gets a
//! buffer back still unread.
use pmd_bridge::guest_mem::{GuestMemory, OutOfBounds, Span};

/// Entries per list: a burst of 32 frames of up to 4 pieces each to up to 4
/// guests. A full list does not stop delivery: the caller copies at once.
pub const CAPACITY: usize = 512;

/// How far ahead of the copy the pass keeps the sender's bytes loading
/// into the second-level cache. A copy that meets the sender's lines one
/// by one waits for each (they are in the sender's core, or in memory: at
/// 9000 B the bench's sender cycles through 78 MB of buffers), and the
/// hardware prefetcher, which starts over at every 4 KB page, does not run
/// far enough ahead of a long copy to hide that. `vswitch-bench`,
/// copy-once, alternated runs: 9000 B 1271 -> 1039 cycles a packet (12 KB
/// ahead: 1043), 1518 B 212 -> 205, 64 B level. Lines already in our cache
/// pay a request each: +6% at 1514 and 9000 B in `--bench vm2vm`, where
/// sender and switch share a core.
///
/// Into the second level, not the first. `poll_ab`, 2vm, against all of
/// it into the first level: in slow states of the bench machine (an AMD
/// EPYC; a line from the other core about 800 cycles away) 0.80-0.86 at
/// 1518 B and 0.70-0.88 at 9000 B, in fast ones (about 160) 1.003-1.006
/// at 1518 B; 64 B level (its frames list no copy). Our reading, not
/// measured (no PMU): asked into the first level, 6 KB of lines (96) are
/// far more than its few miss buffers hold, and each request waits for a
/// free one as long as a line takes to come.
const SOURCE_AHEAD: usize = 6 * 1024;

/// How far ahead of the copy the pass also takes the sender's bytes into
/// the first level, from the second: without it, the copy's loads waited
/// on the second level's latency in fast states (`poll_ab`, 1518 B,
/// 1.009-1.017 with the second level only).
const NEAR_AHEAD: usize = 1024;

/// The most one request of the sender's bytes covers, so that an entry
/// longer than `SOURCE_AHEAD` is loaded in steps, never all at once.
const SOURCE_STEP: usize = 1024;

/// Bytes of the entry `DEST_AHEAD` ahead that the pass takes for writing
/// before each copy: the receiver's lines, which its guest's core holds.
/// The rest of a longer entry the hardware prefetcher streams once the
/// copy runs (taking whole entries ahead for writing cost more than it
/// saved).
const DEST_PREFETCH: usize = 1024;

/// `DEST_PREFETCH` while lines from the guests' cores are slow to come
/// (the sender's `LineClock`): the whole payload of a 1518 B frame, whose
/// last lines the hardware prefetcher streamed too late then. `poll_ab`
/// 2vm 1518 B, against 1 KB in every state: slow 0.941-0.945 split,
/// 0.946 packed; fast 0.993-1.003. 9000 B level (0.999-1.003); the whole
/// 4 KB entry there cost 1.00-1.02, and at 1518 B in the fast state
/// 1.007-1.021.
const DEST_PREFETCH_SLOW: usize = 1536;
const DEST_AHEAD: usize = 2;

/// The sender a burst's copies read from.
#[derive(Clone, Copy)]
pub struct Sender<'m> {
    pub mem: &'m GuestMemory,
    /// Whether lines from the guests' cores are slow to come now (the
    /// sender ring's `LineClock`).
    pub lines_slow: bool,
}

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
    pub fn run<'m>(&mut self, from: Option<Sender>, to: impl Fn(u16) -> Option<&'m GuestMemory>) -> (CopiesDone<'_>, Result<(), OutOfBounds>) {
        let result = match from {
            Some(from) => self.copy_all(from, to),
            None if self.entries.is_empty() => Ok(()),
            None => Err(OutOfBounds { gpa: self.entries[0].src.gpa(), len: self.entries[0].len as u64 }),
        };
        self.entries.clear();
        (CopiesDone { _list: &*self }, result)
    }

    fn copy_all<'m>(&self, Sender { mem: from, lines_slow }: Sender, to: impl Fn(u16) -> Option<&'m GuestMemory>) -> Result<(), OutOfBounds> {
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
        let dest_bytes = if lines_slow { DEST_PREFETCH_SLOW } else { DEST_PREFETCH };
        let (mut far, mut near) = (SourceAhead::default(), SourceAhead::default());
        for (i, e) in self.entries.iter().enumerate() {
            far.reach(&self.entries, SOURCE_AHEAD, |c, off, n| from.prefetch_span_l2(&c.src, c.soff as usize + off, n));
            near.reach(&self.entries, NEAR_AHEAD, |c, off, n| from.prefetch_span(&c.src, c.soff as usize + off, n, false));
            if let Some(next) = self.entries.get(i + DEST_AHEAD) {
                if let Some(m) = mem_of(next.out) {
                    m.prefetch_span(&next.dst, next.doff as usize, (next.len as usize).min(dest_bytes), true);
                }
            }
            let copied = match mem_of(e.out) {
                Some(dst_mem) => GuestMemory::copy_span(from, &e.src, e.soff as usize, dst_mem, &e.dst, e.doff as usize, e.len as usize),
                None => Err(OutOfBounds { gpa: e.dst.gpa(), len: e.len as u64 }),
            };
            result = result.and(copied);
            far.copied(i, e.len as usize);
            near.copied(i, e.len as usize);
        }
        result
    }
}

/// How far the loading of the senders' bytes has got: `off` bytes into
/// entry `at`, `ahead` bytes past the start of the entry being copied.
#[derive(Default)]
struct SourceAhead {
    at: usize,
    off: usize,
    ahead: usize,
}

impl SourceAhead {
    /// Asks `load` for the next steps of the entries' sources (an entry,
    /// an offset in it, a length) until `bytes` past the start of the
    /// entry about to be copied are asked for, or none are left.
    #[inline]
    fn reach(&mut self, entries: &[Entry], bytes: usize, mut load: impl FnMut(&Entry, usize, usize)) {
        while self.ahead < bytes {
            let Some(e) = entries.get(self.at) else { return };
            let n = (e.len as usize - self.off).min(SOURCE_STEP);
            load(e, self.off, n);
            self.ahead += n;
            self.off += n;
            if self.off == e.len as usize {
                self.at += 1;
                self.off = 0;
            }
        }
    }

    /// Entry `i`, of `len` bytes, has been copied. If the loading had not
    /// got past it (an entry longer than it reaches), it goes on from
    /// the next one: the copy has read the rest.
    #[inline]
    fn copied(&mut self, i: usize, len: usize) {
        if self.at > i {
            self.ahead -= len;
        } else {
            *self = SourceAhead { at: i + 1, off: 0, ahead: 0 };
        }
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
        list.run(Some(Sender { mem: &a, lines_slow: false }), |out| (out == 3).then_some(&b)).1.unwrap();
        b.read(Gpa(0x800), &mut out).unwrap();
        assert_eq!(&out, b"hello, guest b");
        assert!(list.is_empty());
        // The same bytes while lines are slow: only the prefetching differs.
        b.write(Gpa(0x800), &[0; 14]).unwrap();
        assert!(list.push(3, &s, 0, &d, 0, 7) && list.push(3, &s, 7, &d, 7, 7));
        list.run(Some(Sender { mem: &a, lines_slow: true }), |out| (out == 3).then_some(&b)).1.unwrap();
        b.read(Gpa(0x800), &mut out).unwrap();
        assert_eq!(&out, b"hello, guest b");
        for _ in 0..CAPACITY {
            assert!(list.push(3, &s, 0, &d, 0, 1));
        }
        assert!(!list.push(3, &s, 0, &d, 0, 1), "full");
        assert!(list.run(Some(Sender { mem: &a, lines_slow: false }), |_| Some(&a)).1.is_err(), "a span of another memory is refused");
        assert!(list.is_empty());
    }

    #[test]
    fn each_source_byte_is_loaded_once_in_order_and_far_enough_ahead_of_its_copy() {
        for ahead in [SOURCE_AHEAD, NEAR_AHEAD] {
            let a = GuestMemory::new_owned(&[(0, 0x1000)]);
            let s = a.span(Gpa(0), 1).unwrap();
            let lens = [76, 4032, 4108, 792, 0, 60, 3 * ahead as u32 + 5, 1514, 9000, 64, 12];
            let entries: Vec<Entry> = (0..lens.len()).map(|i| Entry { out: i as u16, src: s, soff: 0, dst: s, doff: 0, len: lens[i] }).collect();
            let mut loaded = vec![0usize; lens.len()];
            let mut source = SourceAhead::default();
            for (i, e) in entries.iter().enumerate() {
                source.reach(&entries, ahead, |c, off, n| {
                    let k = c.out as usize;
                    assert!(k >= i, "entry {k} loaded after it was copied");
                    assert_eq!(off, loaded[k], "entry {k}: its bytes in order, each once");
                    assert!(n <= SOURCE_STEP && off + n <= c.len as usize);
                    loaded[k] += n;
                });
                let rest: usize = lens[i..].iter().map(|&l| l as usize).sum();
                let past: usize = loaded[i..].iter().sum();
                assert!(past >= ahead.min(rest), "{ahead} ahead, entry {i}: {past} bytes loaded ahead of its copy");
                source.copied(i, e.len as usize);
            }
            assert!(loaded[6] < lens[6] as usize, "the rest of a long entry is left to its copy");
            assert!(loaded.iter().zip(lens).all(|(&l, n)| n as usize > ahead || l == n as usize), "{ahead} ahead: every shorter entry loaded whole");
        }
    }
}

//! A guest's memory as the switch sees it: regions of guest physical
//! addresses mapped somewhere in our address space.
//!
//! The guest may write any byte of it at any time, so no Rust reference into
//! it ever exists: every access copies bytes in or out through raw pointers,
//! after a bounds check against the regions (the rules of rust-vmm's
//! volatile_memory.rs). A range that crosses regions is split; one that
//! leaves guest memory is an error, never an access. Translation is done
//! here, in Rust, from our own copy of the region table: no C call per buffer.
//!
//! The fast path translates once: a `Span` is a piece of one region, found
//! when a descriptor or a ring is first seen, and every later access through
//! it is a length check and a pointer add. A span names the `GuestMemory`
//! that made it (by a process-unique id), and only that one accepts it, so
//! a span kept past a memory-table change is refused, never followed.
use std::sync::atomic::{fence, AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::lend_map::LendMap;

mod prefetch;
mod reader;
mod small_copy;

use prefetch::{prefetch_lines, prefetchr, prefetchw, READ, READ_L2, WRITE};
pub use reader::{Reader, Writer};

/// A guest physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gpa(pub u64);

/// A range that does not lie inside guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfBounds {
    pub gpa: Gpa,
    pub len: u64,
}

#[derive(Clone, Copy, Debug)]
struct Region {
    gpa: u64,
    len: u64,
    host: *mut u8,
}

/// What keeps a mapping alive: our own buffers (tests, plain memory), or a
/// token from whoever owns the mapping (a vhost device lease: rte_vhost
/// unmaps a device's memory only after destroy_device, which waits for it).
enum Backing {
    Owned(#[allow(dead_code)] Arc<Vec<Box<[u8]>>>),
    Borrowed(#[allow(dead_code)] Box<dyn std::any::Any + Send + Sync>),
}

pub struct GuestMemory {
    id: u64,
    regions: Vec<Region>,
    log: Option<DirtyLog>,
    /// The same memory as NICs read it (`lend_map`), if it can be lent.
    lend: Option<Arc<LendMap>>,
    _backing: Backing,
}

/// The dirty-page bitmap QEMU shares during live migration (VHOST_F_LOG_ALL
/// and SET_LOG_BASE): one bit per 4 KB guest page, bit `page % 8` of byte
/// `page / 8`, as rte_vhost's vhost_log_page writes it. Every page the
/// switch writes is marked, or QEMU would not copy it again.
struct DirtyLog {
    base: *mut u8,
    bytes: u64,
}

const LOG_PAGE: u64 = 4096;

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `len` bytes at `gpa`, contiguous in one region of the `GuestMemory` that
/// translated them (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    mem: u64,
    host: usize,
    len: u32,
    gpa: Gpa,
}

impl Default for Span {
    /// An empty span that no memory accepts.
    fn default() -> Span {
        Span { mem: 0, host: 0, len: 0, gpa: Gpa(0) }
    }
}

impl Span {
    pub fn gpa(&self) -> Gpa {
        self.gpa
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

// SAFETY: the regions are plain memory; all access goes through raw copies
// that tolerate concurrent writers, so sharing across threads is as sound
// as sharing it with the guest.
unsafe impl Send for GuestMemory {}
// SAFETY: as above.
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    /// Zeroed memory of our own at the given guest addresses: a guest's
    /// memory for tests and fuzzing, with the same access paths.
    pub fn new_owned(layout: &[(u64, usize)]) -> GuestMemory {
        Self::new_owned_logged(layout, 0)
    }

    /// Like `new_owned`, with a dirty log of `bytes` bytes of our own (none
    /// if 0). Its frames are lent where they are.
    pub fn new_owned_logged(layout: &[(u64, usize)], bytes: usize) -> GuestMemory {
        let mut bufs: Vec<Box<[u8]>> = layout.iter().map(|&(_, len)| len).chain([bytes]).map(|len| vec![0u8; len].into_boxed_slice()).collect();
        let regions: Vec<Region> = layout.iter().zip(bufs.iter_mut()).map(|(&(gpa, len), b)| Region { gpa, len: len as u64, host: b.as_mut_ptr() }).collect();
        let log = bufs.last_mut().filter(|_| bytes > 0).map(|l| DirtyLog { base: l.as_mut_ptr(), bytes: bytes as u64 });
        let bufs = Arc::new(bufs);
        let lend = LendMap::shared(regions.iter().map(|r| (r.host as usize, r.len as usize)), bufs.clone());
        GuestMemory { id: next_id(), regions, log, lend: Some(Arc::new(lend)), _backing: Backing::Owned(bufs) }
    }

    /// Memory mapped by someone else (rte_vhost's copy of the guest's table),
    /// kept mapped while `keepalive` lives.
    ///
    /// `log`, while the guest is being migrated: the dirty bitmap's address
    /// and size in bytes. `lend`: the same memory as NICs read it.
    ///
    /// # Safety
    /// Each `(gpa, len, host)` must describe `len` bytes mapped at `host`,
    /// readable and writable, and the log its bytes likewise, for as long as
    /// `keepalive` is alive.
    // SAFETY: nothing is dereferenced here; the caller's contract above is
    // what makes every later span access sound.
    pub unsafe fn from_mapped(regions: &[(u64, u64, *mut u8)], log: Option<(*mut u8, u64)>, lend: Option<LendMap>, keepalive: Box<dyn std::any::Any + Send + Sync>) -> GuestMemory {
        let regions = regions.iter().map(|&(gpa, len, host)| Region { gpa, len, host }).collect();
        let log = log.filter(|&(base, bytes)| !base.is_null() && bytes > 0).map(|(base, bytes)| DirtyLog { base, bytes });
        GuestMemory { id: next_id(), regions, log, lend: lend.map(Arc::new), _backing: Backing::Borrowed(keepalive) }
    }

    /// This memory as NICs read it (None: it cannot be lent).
    pub fn lend_map(&self) -> Option<&Arc<LendMap>> {
        self.lend.as_ref()
    }

    /// Whether writes are being logged (a migration is under way).
    pub fn logging(&self) -> bool {
        self.log.is_some()
    }

    /// Marks the pages of `[gpa, gpa+len)` dirty, if a migration is logging
    /// them; called by every write below, after the bytes are stored.
    #[inline]
    fn log_write(&self, gpa: u64, len: u64) {
        let Some(log) = &self.log else { return };
        if len == 0 {
            return;
        }
        // Release: QEMU, seeing the bit, must see the bytes it covers.
        fence(Ordering::Release);
        for page in gpa / LOG_PAGE..=gpa.saturating_add(len - 1) / LOG_PAGE {
            if page / 8 >= log.bytes {
                break; // beyond what QEMU tracks
            }
            // SAFETY: inside the log's `bytes` (checked), mapped while we
            // live; QEMU and other threads update it atomically too.
            unsafe { AtomicU8::from_ptr(log.base.add((page / 8) as usize)) }.fetch_or(1 << (page % 8), Ordering::Relaxed);
        }
    }

    /// Whether the page holding `gpa` is marked dirty (tests, diagnostics).
    pub fn is_dirty(&self, gpa: Gpa) -> bool {
        let page = gpa.0 / LOG_PAGE;
        match &self.log {
            Some(log) if page / 8 < log.bytes => {
                // SAFETY: as in log_write.
                let byte = unsafe { AtomicU8::from_ptr(log.base.add((page / 8) as usize)) };
                byte.load(Ordering::Relaxed) & (1 << (page % 8)) != 0
            }
            _ => false,
        }
    }

    /// The guest address of a host address inside guest memory (rte_vhost
    /// hands out ring addresses already translated to host addresses).
    pub fn gpa_of(&self, host: u64) -> Option<Gpa> {
        self.regions
            .iter()
            .find(|r| host >= r.host as u64 && host - (r.host as u64) < r.len)
            .map(|r| Gpa(r.gpa + (host - r.host as u64)))
    }

    /// The contiguous host span holding `gpa`: (pointer, bytes to the end of
    /// its region).
    #[inline]
    fn locate(&self, gpa: u64) -> Option<(*mut u8, u64)> {
        self.regions.iter().find(|r| gpa >= r.gpa && gpa - r.gpa < r.len).map(|r| {
            let off = gpa - r.gpa;
            // SAFETY: off < r.len, so the result stays inside the region.
            (unsafe { r.host.add(off as usize) }, r.len - off)
        })
    }

    /// Whether `[gpa, gpa+len)` lies wholly in guest memory (across regions).
    pub fn contains(&self, gpa: Gpa, len: u64) -> bool {
        self.chunks(gpa, len, |_, _| ()).is_ok()
    }

    /// Calls `f(host pointer, offset into the range)` for each contiguous
    /// piece of `[gpa, gpa+len)` with the piece's length; fails (touching
    /// nothing) if any part lies outside guest memory.
    fn chunks(&self, gpa: Gpa, len: u64, mut f: impl FnMut(*mut u8, (usize, usize))) -> Result<(), OutOfBounds> {
        let err = OutOfBounds { gpa, len };
        gpa.0.checked_add(len).ok_or(err)?;
        // Nearly every buffer lies in one region: one lookup.
        let (p, room) = self.locate(gpa.0).ok_or(err)?;
        if room >= len {
            f(p, (0, len as usize));
            return Ok(());
        }
        // Check the whole range first, so a failure has no side effect.
        let mut at = gpa.0;
        let end = gpa.0 + len;
        while at < end {
            let (_, room) = self.locate(at).ok_or(err)?;
            at += room.min(end - at);
        }
        let mut at = gpa.0;
        while at < end {
            let (p, room) = self.locate(at).ok_or(err)?;
            let n = room.min(end - at);
            f(p, ((at - gpa.0) as usize, n as usize));
            at += n;
        }
        Ok(())
    }

    /// Copies guest bytes at `gpa` into `buf`.
    pub fn read(&self, gpa: Gpa, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        self.chunks(gpa, buf.len() as u64, |p, (off, n)| {
            // SAFETY: `p` has n bytes inside a live region (checked by
            // chunks); buf[off..off+n] is ours. The guest may write the
            // source concurrently: we copy bytes, never form a reference.
            unsafe { std::ptr::copy_nonoverlapping(p, buf[off..off + n].as_mut_ptr(), n) }
        })
    }

    /// Copies `data` into guest memory at `gpa`.
    pub fn write(&self, gpa: Gpa, data: &[u8]) -> Result<(), OutOfBounds> {
        self.chunks(gpa, data.len() as u64, |p, (off, n)| {
            // SAFETY: as in read, with the destination in guest memory.
            unsafe { std::ptr::copy_nonoverlapping(data[off..off + n].as_ptr(), p, n) }
        })?;
        self.log_write(gpa.0, data.len() as u64);
        Ok(())
    }

    pub fn read_u16(&self, gpa: Gpa) -> Result<u16, OutOfBounds> {
        let mut b = [0u8; 2];
        self.read(gpa, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    pub fn read_u32(&self, gpa: Gpa) -> Result<u32, OutOfBounds> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Publishes a ring index (`used->idx`) with release ordering, so the
    /// entries it covers are visible before it.
    pub fn store_u16_release(&self, gpa: Gpa, v: u16) -> Result<(), OutOfBounds> {
        let p = self.aligned_u16(gpa)?;
        // SAFETY: an aligned u16 inside a live region; the guest accesses it
        // atomically too (virtio ring indices are naturally aligned).
        unsafe { AtomicU16::from_ptr(p) }.store(v.to_le(), Ordering::Release);
        self.log_write(gpa.0, 2);
        Ok(())
    }

    fn aligned_u16(&self, gpa: Gpa) -> Result<*mut u16, OutOfBounds> {
        let err = OutOfBounds { gpa, len: 2 };
        match self.locate(gpa.0) {
            Some((p, room)) if room >= 2 && (p as usize).is_multiple_of(2) => Ok(p.cast()),
            _ => Err(err),
        }
    }

    /// Translates `[gpa, gpa+len)` into spans, one per region it crosses,
    /// passed to `f` in order; fails (passing none) if any part lies
    /// outside guest memory.
    pub fn translate(&self, gpa: Gpa, len: u32, mut f: impl FnMut(Span)) -> Result<(), OutOfBounds> {
        self.chunks(gpa, len as u64, |p, (off, n)| f(Span { mem: self.id, host: p as usize, len: n as u32, gpa: Gpa(gpa.0 + off as u64) }))
    }

    /// `[gpa, gpa+len)` as one span, if it lies in one region (a ring,
    /// nearly every buffer).
    #[inline]
    pub fn span(&self, gpa: Gpa, len: u32) -> Option<Span> {
        match self.locate(gpa.0) {
            Some((p, room)) if room >= len as u64 => Some(Span { mem: self.id, host: p as usize, len, gpa }),
            _ => None,
        }
    }

    /// The host address of `n` bytes at `off` in `s`, if `s` is ours and
    /// they lie inside it. This check is all a span access costs.
    #[inline]
    fn at(&self, s: &Span, off: usize, n: usize) -> Result<*mut u8, OutOfBounds> {
        if s.mem == self.id && off.checked_add(n).is_some_and(|end| end <= s.len as usize) {
            Ok((s.host + off) as *mut u8)
        } else {
            Err(OutOfBounds { gpa: Gpa(s.gpa.0.wrapping_add(off as u64)), len: n as u64 })
        }
    }

    /// The host address of `n` bytes at `off` in `s` (checked as every
    /// access is), for a device to read them where they are.
    pub(crate) fn host_range(&self, s: &Span, off: usize, n: usize) -> Result<*mut u8, OutOfBounds> {
        self.at(s, off, n)
    }

    /// Starts loading the cache line at `off` in `s` (a hint; nothing if
    /// the span is not ours).
    #[inline]
    pub fn prefetch(&self, s: &Span, off: usize) {
        if let Ok(p) = self.at(s, off, 1) {
            prefetchr(p as usize);
        }
    }

    /// Starts taking the lines of `[gpa, gpa+len)` for writing (a hint:
    /// nothing outside guest memory). The switch's stores into a guest's
    /// buffers and used ring hit lines the guest's core holds; waiting for
    /// each there fills the store buffer and stalls the whole burst, so a
    /// burst takes its lines before it writes them.
    #[inline]
    pub fn prefetch_write(&self, gpa: Gpa, len: u64) {
        if let Some((p, room)) = self.locate(gpa.0) {
            prefetch_lines::<WRITE>(p as usize, len.min(room) as usize);
        }
    }

    /// Starts loading every line of `n` bytes at `off` in `s`, for
    /// writing if `write` (a hint; nothing outside the span).
    #[inline]
    pub fn prefetch_span(&self, s: &Span, off: usize, n: usize, write: bool) {
        if let Ok(p) = self.at(s, off, n) {
            if write {
                prefetch_lines::<WRITE>(p as usize, n)
            } else {
                prefetch_lines::<READ>(p as usize, n)
            }
        }
    }

    /// Starts loading every line of `n` bytes at `off` in `s` into the
    /// second-level cache, not the first (PREFETCHT2): for lines wanted
    /// later than the first level's few miss buffers could wait for them
    /// (see `copy_list`'s `SOURCE_AHEAD`).
    #[inline]
    pub fn prefetch_span_l2(&self, s: &Span, off: usize, n: usize) {
        if let Ok(p) = self.at(s, off, n) {
            prefetch_lines::<READ_L2>(p as usize, n)
        }
    }

    /// `prefetch_write` of the line at `off` in `s`.
    #[inline]
    pub fn prefetch_write_at(&self, s: &Span, off: usize) {
        if let Ok(p) = self.at(s, off, 1) {
            prefetchw(p as usize);
        }
    }

    /// Copies `buf.len()` bytes at `off` in `s` into `buf`.
    #[inline]
    pub fn read_span(&self, s: &Span, off: usize, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        let p = self.at(s, off, buf.len())?;
        // SAFETY: `at` checked the bytes lie in a span this live memory made
        // (inside one of its regions). The guest may write them meanwhile:
        // a byte copy, never a reference.
        unsafe { small_copy::copy(p, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` to `off` in `s`.
    #[inline]
    pub fn write_span(&self, s: &Span, off: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        let p = self.at(s, off, data.len())?;
        // SAFETY: as in read_span, with guest memory as the destination.
        unsafe { small_copy::copy(data.as_ptr(), p, data.len()) };
        self.log_write(s.gpa.0 + off as u64, data.len() as u64);
        Ok(())
    }

    /// `N` bytes at `off` in `s`, read as one fixed-size load (a ring entry,
    /// a flags word): no call, no loop. Volatile, as rust-vmm reads memory
    /// another party writes: the compiler may neither read the guest's
    /// bytes twice (a check and a use seeing different values) nor elide it.
    #[inline]
    pub fn load<const N: usize>(&self, s: &Span, off: usize) -> Result<[u8; N], OutOfBounds> {
        let p = self.at(s, off, N)?;
        Ok(load_volatile(p))
    }

    /// `W` little-endian words at `off` in `s` (a descriptor), read as
    /// `load` reads, but not through a byte array, which the compiler took
    /// apart and put back together: 30 instructions a descriptor.
    #[inline]
    pub fn load_words<const W: usize>(&self, s: &Span, off: usize) -> Result<[u64; W], OutOfBounds> {
        let p = self.at(s, off, 8 * W)?;
        let aligned = (p as usize).is_multiple_of(8);
        let word = |i: usize| p.wrapping_add(8 * i);
        // SAFETY: an aligned u64 inside the 8 * W bytes `at` checked.
        Ok(std::array::from_fn(|i| u64::from_le(if aligned { unsafe { std::ptr::read_volatile(word(i).cast::<u64>()) } } else { u64::from_ne_bytes(load_volatile(word(i))) })))
    }

    /// `s` checked once for a pass of reads that each check only their
    /// offset (a ring's entries and descriptors, taken many at a time), if
    /// it is ours and its start is `align`-aligned (what the ring's layout
    /// asks: a misaligned one is left to the checked loads).
    #[inline]
    pub fn reader(&self, s: &Span, align: usize) -> Option<Reader<'_>> {
        (s.mem == self.id && s.host.is_multiple_of(align)).then(|| Reader::new(self, s.host as *const u8, s.len as usize))
    }

    /// `s` checked once for a pass of stores that each check only their
    /// offset (a batch of used descriptors), if it is ours.
    #[inline]
    pub fn writer(&self, s: &Span) -> Option<Writer<'_>> {
        (s.mem == self.id).then(|| Writer::new(self, s))
    }

    /// Stores `N` bytes at `off` in `s` in one go (volatile, as `load`).
    #[inline]
    pub fn store<const N: usize>(&self, s: &Span, off: usize, v: [u8; N]) -> Result<(), OutOfBounds> {
        match self.writer(s) {
            Some(w) if w.store(off, v) => Ok(()),
            _ => Err(OutOfBounds { gpa: Gpa(s.gpa.0.wrapping_add(off as u64)), len: N as u64 }),
        }
    }

    /// A ring index the other side publishes (`avail->idx`): an atomic load
    /// with acquire ordering, so the entries it covers are seen after it.
    #[inline]
    pub fn span_u16_acquire(&self, s: &Span, off: usize) -> Result<u16, OutOfBounds> {
        let p = self.at(s, off, 2)?;
        if !(p as usize).is_multiple_of(2) {
            return Err(OutOfBounds { gpa: s.gpa, len: 2 });
        }
        // SAFETY: an aligned u16 inside a live region (checked above).
        Ok(u16::from_le(unsafe { AtomicU16::from_ptr(p.cast()) }.load(Ordering::Acquire)))
    }

    /// `store_u16_release` through a span.
    #[inline]
    pub fn span_u16_release(&self, s: &Span, off: usize, v: u16) -> Result<(), OutOfBounds> {
        let p = self.at(s, off, 2)?;
        if !(p as usize).is_multiple_of(2) {
            return Err(OutOfBounds { gpa: s.gpa, len: 2 });
        }
        // SAFETY: as in span_u16_acquire.
        unsafe { AtomicU16::from_ptr(p.cast()) }.store(v.to_le(), Ordering::Release);
        self.log_write(s.gpa.0 + off as u64, 2);
        Ok(())
    }

    /// Copies `n` bytes from `soff` in span `s` of `from` to `doff` in span
    /// `d` of `to`: the one copy VM to VM, with no translation left to do.
    #[inline]
    pub fn copy_span(from: &GuestMemory, s: &Span, soff: usize, to: &GuestMemory, d: &Span, doff: usize, n: usize) -> Result<(), OutOfBounds> {
        let src = from.at(s, soff, n)?;
        let dst = to.at(d, doff, n)?;
        debug_assert!(from.holds(src, n) && to.holds(dst, n), "a copy outside the guests' regions");
        // SAFETY: both ranges lie in live regions (checked by `at`); the
        // guests may write them meanwhile: a byte copy, no references.
        // They overlap only if a guest points both at its own memory.
        unsafe { std::ptr::copy(src, dst, n) };
        to.log_write(d.gpa.0 + doff as u64, n as u64);
        Ok(())
    }

    /// Whether `n` bytes at host address `p` lie in one of our regions (the
    /// debug-build check on every guest-to-guest copy).
    fn holds(&self, p: *mut u8, n: usize) -> bool {
        let p = p as u64;
        self.regions.iter().any(|r| p >= r.host as u64 && p + n as u64 <= r.host as u64 + r.len)
    }
}

/// A full fence: orders our used-ring stores before reading whether the
/// guest wants a notification (the race the virtio spec's 2.7.7.2 describes).
#[inline]
pub fn full_fence() {
    fence(Ordering::SeqCst);
}

/// `N` bytes at `p`, each read once: as one aligned u32 or u16 where it
/// can, else byte by byte (as a volatile byte array is read).
#[inline(always)]
fn load_volatile<const N: usize>(p: *const u8) -> [u8; N] {
    let mut out = [0u8; N];
    let a = p as usize;
    if N == 4 && a.is_multiple_of(4) {
        // SAFETY: an aligned u32, the N bytes the caller checked.
        out.copy_from_slice(&unsafe { std::ptr::read_volatile(p.cast::<u32>()) }.to_ne_bytes());
    } else if N == 2 && a.is_multiple_of(2) {
        // SAFETY: an aligned u16, the N bytes the caller checked.
        out.copy_from_slice(&unsafe { std::ptr::read_volatile(p.cast::<u16>()) }.to_ne_bytes());
    } else {
        // SAFETY: the N bytes the caller checked; a [u8; N] has alignment 1.
        out = unsafe { std::ptr::read_volatile(p.cast::<[u8; N]>()) };
    }
    out
}

/// `v` stored at `p` (`N` bytes the caller checked) in 8-, 4-, 2- and
/// 1-byte volatile stores: a volatile byte array of a size that is not a
/// power of two (a 12-byte virtio-net header) is otherwise stored a byte at
/// a time, twelve store-buffer entries where two do.
#[inline(always)]
fn store_volatile<const N: usize>(p: *mut u8, v: [u8; N]) {
    let mut at = 0;
    for k in [8, 4, 2, 1] {
        while N - at >= k {
            let bytes = &v[at..at + k];
            let q = p.wrapping_add(at);
            // SAFETY: k of the N bytes the caller checked; byte arrays have alignment 1.
            unsafe {
                match k {
                    8 => std::ptr::write_volatile(q.cast::<[u8; 8]>(), bytes.try_into().unwrap_or_default()),
                    4 => std::ptr::write_volatile(q.cast::<[u8; 4]>(), bytes.try_into().unwrap_or_default()),
                    2 => std::ptr::write_volatile(q.cast::<[u8; 2]>(), bytes.try_into().unwrap_or_default()),
                    _ => std::ptr::write_volatile(q, bytes[0]),
                }
            }
            at += k;
        }
    }
}

#[cfg(test)]
mod tests;

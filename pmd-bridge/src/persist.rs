//! Words in a file mapped shared: what the switch stores there outlives it
//! (a kill included: the page cache keeps every store that was made), for
//! the next switch to read. A packed virtqueue keeps its position here,
//! since neither guest memory nor QEMU does (dataplane's
//! `virtq::packed::resume`). A store is a plain memory write: no system
//! call, so a PMD thread may make one per burst.
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct SharedWords {
    base: *mut AtomicU64,
    n: usize,
}

// SAFETY: the mapping is only reached through atomics, and lives until drop.
unsafe impl Send for SharedWords {}
// SAFETY: as for Send: every access is an atomic load or store.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    /// `n` words of the file at `path`, created (mode 0600, all words 0) if
    /// absent, grown if shorter; what it held is kept.
    pub fn open(path: &Path, n: usize) -> io::Result<SharedWords> {
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)?;
        let bytes = n.max(1) * 8;
        if f.metadata()?.len() < bytes as u64 {
            f.set_len(bytes as u64)?;
        }
        // SAFETY: a fresh shared mapping of `bytes` bytes of a file at least
        // that long; nothing else in this process maps it.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, f.as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedWords { base: p.cast(), n: n.max(1) })
    }

    pub fn load(&self, i: usize) -> u64 {
        self.word(i).load(Ordering::Relaxed)
    }

    pub fn store(&self, i: usize, v: u64) {
        self.word(i).store(v, Ordering::Relaxed)
    }

    /// Words `at..at + n`, for a caller that stores many in a row.
    pub fn slice(&self, at: usize, n: usize) -> &[AtomicU64] {
        assert!(at.checked_add(n).is_some_and(|end| end <= self.n), "words {at}+{n} of {}", self.n);
        // SAFETY: n words inside the mapping (checked), which lives with
        // self; reached only through atomics.
        unsafe { std::slice::from_raw_parts(self.base.add(at), n) }
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.n, "word {i} of {}", self.n);
        // SAFETY: i < n words of a page-aligned mapping that lives with self.
        unsafe { &*self.base.add(i) }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped once; no reference
        // into it outlives self.
        unsafe { libc::munmap(self.base.cast(), self.n * 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_outlive_their_mapping_and_a_reopen_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("words");
        let w = SharedWords::open(&path, 4).unwrap();
        assert_eq!((0..4).map(|i| w.load(i)).collect::<Vec<_>>(), [0; 4], "a new file reads 0");
        w.store(3, 0xdead_beef);
        drop(w);
        let w = SharedWords::open(&path, 8).unwrap();
        assert_eq!((w.load(3), w.load(7)), (0xdead_beef, 0), "kept, and grown with zeros");
        w.slice(6, 2)[1].store(5, Ordering::Relaxed);
        assert_eq!((w.slice(3, 1)[0].load(Ordering::Relaxed), w.load(7)), (0xdead_beef, 5), "a slice is the same words");
    }

    #[test]
    #[should_panic(expected = "words 7+2 of 8")]
    fn a_slice_past_the_words_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _ = SharedWords::open(&dir.path().join("words"), 8).unwrap().slice(7, 2);
    }
}

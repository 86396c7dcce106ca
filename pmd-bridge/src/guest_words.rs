//! Guest bytes read as 8-byte words where they lie, for a sum over a
//! guest's payload (a checksum the NIC cannot fill) without first copying
//! it into a buffer of our own.
use crate::guest_mem::{GuestMemory, OutOfBounds, Span};

impl GuestMemory {
    /// Folds `f` over the `n` bytes at `off` in `s` as 8-byte words in
    /// order, each copied out of guest memory once (the guest may rewrite
    /// them meanwhile: a sum over them is then its own frame's loss, never
    /// ours), the last padded with zeros.
    #[inline]
    pub fn fold_words<T>(&self, s: &Span, off: usize, n: usize, init: T, mut f: impl FnMut(T, [u8; 8]) -> T) -> Result<T, OutOfBounds> {
        let p = self.host_range(s, off, n)?;
        let mut acc = init;
        let mut at = 0;
        // Four words a step: the loop's own work is shared by 32 bytes.
        while at + 32 <= n {
            // SAFETY: `host_range` checked that the n bytes at p lie in one
            // of this live memory's regions; unaligned copies of 32 of them.
            let ws: [[u8; 8]; 4] = unsafe { std::array::from_fn(|k| std::ptr::read_unaligned(p.add(at + 8 * k) as *const [u8; 8])) };
            acc = ws.into_iter().fold(acc, &mut f);
            at += 32;
        }
        while at + 8 <= n {
            // SAFETY: `host_range` checked that the n bytes at p lie in one
            // of this live memory's regions; an unaligned copy of 8 of them.
            let w = unsafe { std::ptr::read_unaligned(p.add(at) as *const [u8; 8]) };
            acc = f(acc, w);
            at += 8;
        }
        if at < n {
            let mut w = [0u8; 8];
            for (k, b) in w.iter_mut().enumerate().take(n - at) {
                // SAFETY: as above, one byte of the n.
                *b = unsafe { p.add(at + k).read() };
            }
            acc = f(acc, w);
        }
        Ok(acc)
    }
}

#[cfg(test)]
mod tests {
    use crate::guest_mem::{GuestMemory, Gpa};

    #[test]
    fn words_in_order_the_last_padded_and_never_past_the_span() {
        let m = GuestMemory::new_owned(&[(0, 0x1000)]);
        let bytes: Vec<u8> = (1..=19).collect();
        m.write(Gpa(0x100), &bytes).unwrap();
        let s = m.span(Gpa(0x100), 19).unwrap();
        let words = m.fold_words(&s, 1, 18, Vec::new(), |mut v, w| {
            v.push(w);
            v
        });
        assert_eq!(words.unwrap(), [[2, 3, 4, 5, 6, 7, 8, 9], [10, 11, 12, 13, 14, 15, 16, 17], [18, 19, 0, 0, 0, 0, 0, 0]]);
        assert_eq!(m.fold_words(&s, 0, 0, 0, |n, _| n + 1).unwrap(), 0);
        let long: Vec<u8> = (0..77).collect();
        m.write(Gpa(0x200), &long).unwrap();
        let l = m.span(Gpa(0x200), 77).unwrap();
        let words = m.fold_words(&l, 3, 74, Vec::new(), |mut v, w| {
            v.extend(w);
            v
        });
        let mut want = long[3..].to_vec();
        want.resize(80, 0);
        assert_eq!(words.unwrap(), want, "blocks of four words, then words, then the padded rest");
        assert!(m.fold_words(&s, 12, 8, (), |(), _| ()).is_err(), "past the span");
    }
}

//! Eventfds a PMD thread sleeps on when every ring it polls can wake it: a
//! guest's kick eventfd (our own duplicate of it, `VringInfo::kick`) and
//! the thread's doorbell, which the control thread rings with each new
//! plan. `Waiter` waits on a set of them with a timeout of microseconds.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// An eventfd: ours, or our duplicate of another party's.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A fresh eventfd, for the control thread to wake a PMD thread with.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes plain integers and returns a new descriptor.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Our own descriptor for another party's eventfd (`fd`, open for the
    /// call): it stays valid whatever they do with theirs. None for -1.
    pub(crate) fn dup(fd: RawFd) -> Option<EventFd> {
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` is open for the duration of the call (the caller's
        // guarantee); dup returns an independent descriptor.
        let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        // SAFETY: `d` is a fresh descriptor that nothing else owns.
        (d >= 0).then(|| EventFd(unsafe { OwnedFd::from_raw_fd(d) }))
    }

    /// Adds 1: wakes whoever waits on it. Never blocks (only a count of
    /// 2^64 - 1 would); false if the write failed.
    #[inline]
    pub fn signal(&self) -> bool {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to a descriptor we own.
        unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), 8) == 8 }
    }

    /// Resets the count to 0 if it is not (a kick that came after the last
    /// sleep, which would end the next one at once). Asks poll first, so
    /// the read never blocks, whatever the descriptor's flags.
    pub fn clear(&self) {
        let mut p = libc::pollfd { fd: self.0.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one live pollfd, a zero timeout.
        if unsafe { libc::poll(&mut p, 1, 0) } == 1 && p.revents & libc::POLLIN != 0 {
            self.drain();
        }
    }

    /// Resets the count to 0; called only once poll said it is readable,
    /// so the read never blocks, whatever the descriptor's flags.
    fn drain(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer of 8.
        unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
    }
}

/// A set of eventfds to sleep on, kept between sleeps (no allocation once
/// it has held as many as a plan has). It holds each one it waits on, so
/// none closes under the wait.
#[derive(Default)]
pub struct Waiter {
    fds: Vec<libc::pollfd>,
    held: Vec<Arc<EventFd>>,
}

impl Waiter {
    pub fn clear(&mut self) {
        self.fds.clear();
        self.held.clear();
    }

    /// Waits on `fd` too, until the next `clear`.
    pub fn add(&mut self, fd: &Arc<EventFd>) {
        self.fds.push(libc::pollfd { fd: fd.0.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        self.held.push(Arc::clone(fd));
    }

    /// How many eventfds it waits on.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Whether the `i`th eventfd added was signalled in the last `wait`.
    pub fn fired(&self, i: usize) -> bool {
        self.fds.get(i).is_some_and(|p| p.revents & libc::POLLIN != 0)
    }

    /// Sleeps until one of the eventfds is signalled or `timeout` passes;
    /// resets those signalled. Whether one was.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
        // SAFETY: `fds` is an array of `len` pollfds and `ts` a timespec,
        // both alive for the call; no signal mask is changed.
        let n = unsafe { libc::ppoll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
        if n <= 0 {
            return false;
        }
        for (p, fd) in self.fds.iter().zip(&self.held) {
            if p.revents & libc::POLLIN != 0 {
                fd.drain();
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_signal_ends_the_wait_once_and_the_timeout_ends_it_otherwise() {
        let (a, b) = (Arc::new(EventFd::new().unwrap()), Arc::new(EventFd::new().unwrap()));
        let mut w = Waiter::default();
        w.add(&a);
        w.add(&b);
        assert!(!w.wait(Duration::from_millis(20)), "nothing signalled");
        assert!(b.signal() && b.signal());
        let t = Instant::now();
        assert!(w.wait(Duration::from_secs(10)), "b was signalled");
        assert!(!w.fired(0) && w.fired(1) && !w.fired(2));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(!w.wait(Duration::from_millis(20)), "and reset by the wait");
        let dup = Arc::new(EventFd::dup(a.0.as_raw_fd()).unwrap());
        w.clear();
        w.add(&dup);
        assert!(a.signal());
        assert!(w.wait(Duration::from_secs(10)), "a signal of the original wakes a waiter on the duplicate");
        assert!(EventFd::dup(-1).is_none());
    }

    /// A stale count is cleared before a sleep; clearing an empty one, even
    /// on a blocking eventfd, returns at once.
    #[test]
    fn clear_resets_a_stale_count_and_never_blocks() {
        // SAFETY: eventfd takes plain integers; the fd is ours to own.
        let blocking = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(blocking >= 0);
        // SAFETY: a fresh descriptor nothing else owns.
        let b = Arc::new(EventFd(unsafe { OwnedFd::from_raw_fd(blocking) }));
        b.clear();
        assert!(b.signal());
        b.clear();
        let mut w = Waiter::default();
        w.add(&b);
        assert!(!w.wait(Duration::from_millis(20)), "the count was cleared");
    }
}

//! Operating-system calls std lacks, for the switch's scenario tests and
//! their helper threads (a packet socket on an interface, CPU pinning and a
//! real-time priority, poll, entering a network namespace): small safe
//! wrappers, so that no other crate calls libc itself.
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A raw packet socket bound to one interface: every frame the kernel sees
/// there, both ways.
pub struct PacketSocket(OwnedFd);

impl PacketSocket {
    /// Bound to `iface`; a receive waits at most `timeout`.
    pub fn open(iface: &str, timeout: Duration) -> io::Result<PacketSocket> {
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket creation; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, all as i32) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = CString::new(iface).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a zeroed sockaddr_ll is valid; its fields are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = all;
        sll.sll_ifindex = index as i32;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: binds our socket to a sockaddr_ll of the size given.
        if unsafe { libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval { tv_sec: timeout.as_secs() as libc::time_t, tv_usec: timeout.subsec_micros() as libc::suseconds_t };
        let tl = std::mem::size_of::<libc::timeval>() as u32;
        // SAFETY: sets a receive timeout from a live timeval of the size given.
        if unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&tv as *const libc::timeval).cast(), tl) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket(fd))
    }

    /// Sends `frame` out of the interface; the bytes sent.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: reads `frame.len()` bytes from a live buffer.
        let n = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// The next frame the interface received (not one sent from this
    /// host) into `buf`: its length, or None when the timeout passed first.
    pub fn recv_incoming(&self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: a zeroed sockaddr_ll is valid for recvfrom to fill.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: writes at most `buf.len()` bytes into a live buffer and
        // the sender's address into `from`, of the size given.
        let r = unsafe { libc::recvfrom(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0, (&mut from as *mut libc::sockaddr_ll).cast(), &mut len) };
        (r >= 0 && from.sll_pkttype != libc::PACKET_OUTGOING).then_some(r as usize)
    }
}

/// Waits up to `timeout` until one of `fds` is readable (a descriptor that
/// is not open only ends the wait: poll reports it, touching nothing).
pub fn poll_readable(fds: impl IntoIterator<Item = RawFd>, timeout: Duration) {
    let mut p: Vec<libc::pollfd> = fds.into_iter().map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `p` is an array of `p.len()` pollfds, alive for the call.
    unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout.as_millis().min(i32::MAX as u128) as i32) };
}

/// Pins the calling thread to CPU `cpu`; whether it could.
pub fn pin_current_thread(cpu: usize) -> bool {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return false;
    }
    // SAFETY: `cpu` lies inside the set (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size given, alive for the call.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 }
}

/// Sets the calling thread's timer slack (how much later than asked the
/// kernel may end its sleeps, 50 us by default); whether it could.
pub fn set_timer_slack(slack: std::time::Duration) -> bool {
    let ns = slack.as_nanos().clamp(1, libc::c_ulong::MAX as u128) as libc::c_ulong;
    // SAFETY: PR_SET_TIMERSLACK takes a number and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) == 0 }
}

/// Runs the calling thread under SCHED_FIFO at `priority`; whether it could.
pub fn set_fifo_priority(priority: i32) -> bool {
    let param = libc::sched_param { sched_priority: priority };
    // SAFETY: `param` is a valid sched_param, alive for the call.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// Moves the calling thread alone (not the process) into the network
/// namespace `ns` is open on (a file under /run/netns).
pub fn enter_net_namespace(ns: &impl AsFd) -> io::Result<()> {
    // SAFETY: setns on a descriptor borrowed for the call changes only this
    // thread's network namespace.
    if unsafe { libc::setns(ns.as_fd().as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

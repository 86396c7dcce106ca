//! DPDK's log stream, captured.
//!
//! DPDK explains most failures only in its log (`EAL: ...`, `VHOST_CONFIG: ...`).
//! The stream is pointed at a cookie stream whose writes land here: each
//! chunk goes to stderr (unless silenced), to a bounded ring of recent lines,
//! and to the calling thread's capture buffer while `capture` runs, so an
//! `Error` can carry DPDK's own words for the call that failed.
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::Write;
use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};

const RECENT_LINES: usize = 512;

static INSTALL: Once = Once::new();
static ECHO: AtomicBool = AtomicBool::new(true);
static RECENT: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

thread_local! {
    static CAPTURE: RefCell<Option<String>> = const { RefCell::new(None) };
}

extern "C" fn sink(buf: *const c_char, len: usize) {
    if buf.is_null() || len == 0 {
        return;
    }
    // SAFETY: the C shim passes a buffer of `len` bytes that stdio owns for
    // the duration of this call.
    let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    // A panic must not unwind into C: swallow it (logging is best effort).
    let _ = std::panic::catch_unwind(|| {
        let text = String::from_utf8_lossy(bytes);
        if ECHO.load(Ordering::Relaxed) {
            let _ = std::io::stderr().write_all(bytes);
        }
        let _ = CAPTURE.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                if let Some(buf) = c.as_mut() {
                    buf.push_str(&text);
                }
            }
        });
        if let Ok(mut recent) = RECENT.lock() {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                if recent.len() == RECENT_LINES {
                    recent.pop_front();
                }
                recent.push_back(line.to_string());
            }
        }
    });
}

/// Points DPDK's log stream here. Idempotent; `Eal::init` calls it first.
pub fn install() {
    INSTALL.call_once(|| {
        // SAFETY: `sink` is a valid extern "C" function for the whole process;
        // the shim only stores it and opens a stdio stream.
        let ret = unsafe { crate::ffi::vsw_log_capture_open(Some(sink)) };
        if ret != 0 {
            eprintln!("pmd-bridge: cannot capture the DPDK log stream; errors will carry less detail");
        }
    });
}

/// Whether DPDK's log lines are also written to stderr (the default).
pub fn set_echo(on: bool) {
    ECHO.store(on, Ordering::Relaxed);
}

/// Runs `f`, returning its result and what DPDK logged on this thread meanwhile.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, String) {
    let outer = CAPTURE.with(|c| c.borrow_mut().replace(String::new()));
    let value = f();
    let logged = CAPTURE.with(|c| {
        let mut c = c.borrow_mut();
        let mine = c.take().unwrap_or_default();
        // Nested captures: the outer one sees the inner one's lines too.
        *c = outer.map(|o| o + &mine);
        mine
    });
    (value, logged)
}

/// The most recent DPDK log lines from any thread, oldest first.
pub fn recent() -> Vec<String> {
    RECENT.lock().map(|r| r.iter().cloned().collect()).unwrap_or_default()
}

/// Runs `f` with file descriptor 2 pointed at a memory file, returning what
/// was written to it (which is echoed to the real stderr afterwards). For C
/// code that reports on stderr instead of the log stream (getopt in the EAL).
pub fn capture_stderr<T>(f: impl FnOnce() -> T) -> (T, String) {
    let _ = std::io::stderr().flush();
    // SAFETY: memfd_create with a static NUL-terminated name; dup/dup2 on fds
    // we own or on fd 2; every fd opened here is closed before returning.
    let redirect = unsafe {
        let mem = libc::memfd_create(c"pmd-bridge-stderr".as_ptr(), libc::MFD_CLOEXEC);
        let saved = libc::dup(2);
        if mem < 0 || saved < 0 || libc::dup2(mem, 2) < 0 {
            for fd in [mem, saved] {
                if fd >= 0 {
                    libc::close(fd);
                }
            }
            None
        } else {
            Some((mem, saved))
        }
    };
    let value = f();
    let Some((mem, saved)) = redirect else { return (value, String::new()) };
    let mut text = Vec::new();
    // SAFETY: restores fd 2 from our saved copy, then reads our memfd from the
    // start into a Vec we own; both fds are closed afterwards.
    unsafe {
        libc::fflush(std::ptr::null_mut());
        libc::dup2(saved, 2);
        libc::close(saved);
        libc::lseek(mem, 0, libc::SEEK_SET);
        let mut buf = [0u8; 4096];
        loop {
            let n = libc::read(mem, buf.as_mut_ptr().cast(), buf.len());
            if n <= 0 {
                break;
            }
            text.extend_from_slice(&buf[..n as usize]);
        }
        libc::close(mem);
    }
    let _ = std::io::stderr().write_all(&text);
    (value, String::from_utf8_lossy(&text).into_owned())
}

//! The DPDK Environment Abstraction Layer: once per process.
use std::ffi::{c_char, CString};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::error::{cstring, rte_errno, Error, Result};
use crate::{ffi, log};

const DOWN: u8 = 0;
const STARTING: u8 = 1;
const UP: u8 = 2;
const CLEANED: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(DOWN);

/// Proof that the EAL is up. Cheap to clone; every object that needs DPDK
/// alive (pools, ports, vhost sockets) keeps a clone, and `rte_eal_cleanup`
/// runs when the last clone is dropped. After that, DPDK cannot be used again
/// in this process and `Eal::init` says so.
#[derive(Clone)]
pub struct Eal(#[allow(dead_code)] Arc<EalUp>);

impl std::fmt::Debug for Eal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Eal")
    }
}

struct EalUp;

impl Eal {
    /// Initialises the EAL with `args` (without a program name; one is added).
    ///
    /// A second call in the same process returns `Error::EalAlreadyInitialized`
    /// instead of reaching DPDK. A failure carries DPDK's log lines.
    #[cold]
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal> {
        if STATE.compare_exchange(DOWN, STARTING, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Err(Error::EalAlreadyInitialized);
        }
        log::install();
        let mut owned: Vec<CString> = vec![cstring("EAL argument", "vswitch")?];
        for a in args {
            match cstring("EAL argument", a.as_ref()) {
                Ok(c) => owned.push(c),
                Err(e) => {
                    STATE.store(DOWN, Ordering::Release);
                    return Err(e);
                }
            }
        }
        // The EAL may keep pointers into argv (and permutes the array), so
        // both live for the rest of the process: a few bytes, once.
        let argv: &'static mut [*mut c_char] =
            Vec::leak(owned.into_iter().map(CString::into_raw).collect());
        let argc = argv.len() as i32;
        // Argument errors come from getopt on stderr, not the log stream.
        let ((ret, stderr), logged) = log::capture(|| {
            log::capture_stderr(|| {
                // SAFETY: argv holds argc valid NUL-terminated strings that are
                // never freed; STATE keeps every other thread out of rte_eal_init.
                unsafe { ffi::rte_eal_init(argc, argv.as_mut_ptr()) }
            })
        });
        if ret < 0 {
            let logged = format!("{stderr}{logged}");
            let errno = rte_errno();
            // DPDK keeps its own run-once guard and reports EALREADY if this
            // process may not try again; let it decide.
            STATE.store(DOWN, Ordering::Release);
            return Err(Error::dpdk("rte_eal_init", errno, &logged));
        }
        STATE.store(UP, Ordering::Release);
        Ok(Eal(Arc::new(EalUp)))
    }

    /// Whether the EAL is up in this process right now.
    pub fn is_up() -> bool {
        STATE.load(Ordering::Acquire) == UP
    }

    /// Whether the EAL was initialised and has since been cleaned up.
    pub fn is_cleaned_up() -> bool {
        STATE.load(Ordering::Acquire) == CLEANED
    }
}

impl Drop for EalUp {
    fn drop(&mut self) {
        // Every Eal clone is gone, so nothing built on DPDK is still alive
        // (each such object holds a clone).
        // SAFETY: the EAL is up and no object of this crate uses it any more.
        unsafe { ffi::rte_eal_cleanup() };
        STATE.store(CLEANED, Ordering::Release);
    }
}

//! One error type for every DPDK call the bridge makes.
use std::fmt;

/// What went wrong in a call into DPDK. Setup and control paths return it;
/// the fast path never does (it counts failures instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// `Eal::init` was called again in a process whose EAL is (or was) up:
    /// DPDK cannot initialise twice, so the second call is refused here.
    EalAlreadyInitialized,
    /// A DPDK function failed. `errno` is `rte_errno` or the negated return
    /// code; `message` is `rte_strerror` plus what DPDK logged during the call.
    Dpdk { call: &'static str, errno: i32, message: String },
    /// An argument was refused before reaching DPDK (interior NUL, size out
    /// of range, a name that names nothing).
    InvalidArgument(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds the error for a failed `call` from an errno value and the log
    /// lines DPDK wrote while the call ran.
    #[cold]
    pub(crate) fn dpdk(call: &'static str, errno: i32, logged: &str) -> Error {
        let mut message = strerror(errno);
        let logged = logged.trim();
        if !logged.is_empty() {
            message.push_str(": ");
            message.push_str(&logged.lines().collect::<Vec<_>>().join("; "));
        }
        Error::Dpdk { call, errno, message }
    }

    /// The errno of a DPDK failure, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Dpdk { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::EalAlreadyInitialized => {
                write!(f, "the DPDK EAL is already initialised in this process")
            }
            Error::Dpdk { call, errno, message } => write!(f, "{call} failed (errno {errno}): {message}"),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
        }
    }
}

impl std::error::Error for Error {}

/// DPDK's text for an errno value (covers both libc and `E_RTE_*` codes).
pub fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string that stays valid until the next call on this thread;
    // it is copied out at once.
    unsafe {
        let p = crate::ffi::rte_strerror(errno);
        if p.is_null() {
            return format!("error {errno}");
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// The calling thread's `rte_errno`.
pub fn rte_errno() -> i32 {
    // SAFETY: a plain read of a thread-local int through the C shim.
    unsafe { crate::ffi::vsw_rte_errno() }
}

/// Converts a DPDK return code (negative errno on failure) into a Result.
pub(crate) fn check(call: &'static str, ret: i32, logged: &str) -> Result<i32> {
    if ret < 0 {
        Err(Error::dpdk(call, -ret, logged))
    } else {
        Ok(ret)
    }
}

pub(crate) fn cstring(what: &str, s: &str) -> Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| Error::InvalidArgument(format!("{what} contains a NUL byte: {s:?}")))
}

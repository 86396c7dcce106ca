//! Logical cores: launching poll loops on EAL lcores, and registering Rust
//! threads with the EAL so that mempool per-lcore caches work for them.
use std::any::Any;
use std::os::raw::{c_int, c_void};
use std::sync::{Arc, Mutex};

use crate::error::{check, rte_errno, Error, Result};
use crate::ffi;

/// `LCORE_ID_ANY`: what `rte_lcore_id` returns on a thread DPDK does not know.
const LCORE_ID_ANY: u32 = u32::MAX;

/// The calling thread's lcore id, if it has one.
pub fn current() -> Option<u32> {
    // SAFETY: reads a thread-local variable.
    let id = unsafe { ffi::rte_lcore_id() };
    (id != LCORE_ID_ANY).then_some(id)
}

/// The main lcore (the thread that ran `Eal::init`).
pub fn main_lcore() -> u32 {
    // SAFETY: reads EAL configuration set at init.
    unsafe { ffi::rte_get_main_lcore() }
}

/// The enabled worker lcores, in order.
pub fn workers() -> Vec<u32> {
    let mut out = Vec::new();
    let mut i = u32::MAX; // -1: start from the first lcore
    loop {
        // SAFETY: iterates EAL configuration; skip_main = 1, wrap = 0.
        i = unsafe { ffi::rte_get_next_lcore(i, 1, 0) };
        if i >= ffi::RTE_MAX_LCORE {
            return out;
        }
        out.push(i);
    }
}

type Outcome = std::thread::Result<i32>;

struct Task {
    f: Box<dyn FnOnce() -> i32 + Send>,
    outcome: Arc<Mutex<Option<Outcome>>>,
}

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<Task> leaked by `launch`, handed over exactly once.
    let task = unsafe { Box::from_raw(arg.cast::<Task>()) };
    // A panic must not unwind into C: catch it here and report it on wait.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task.f));
    let code = *outcome.as_ref().unwrap_or(&-1);
    *task.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    code
}

/// A function running on a worker lcore.
pub struct LcoreJob {
    lcore: u32,
    outcome: Arc<Mutex<Option<Outcome>>>,
}

/// Runs `f` on worker lcore `lcore` (`rte_eal_remote_launch`). Fails if the
/// lcore is not an idle worker.
pub fn launch(lcore: u32, f: impl FnOnce() -> i32 + Send + 'static) -> Result<LcoreJob> {
    let outcome = Arc::new(Mutex::new(None));
    let task = Box::into_raw(Box::new(Task { f: Box::new(f), outcome: Arc::clone(&outcome) }));
    // SAFETY: the trampoline takes ownership of `task` if the launch succeeds.
    let ret = unsafe { ffi::rte_eal_remote_launch(Some(trampoline), task.cast(), lcore) };
    if ret < 0 {
        // SAFETY: the launch failed, so the task was not handed over; reclaim it.
        drop(unsafe { Box::from_raw(task) });
        return check("rte_eal_remote_launch", ret, "").map(|_| unreachable!());
    }
    Ok(LcoreJob { lcore, outcome })
}

impl LcoreJob {
    pub fn lcore(&self) -> u32 {
        self.lcore
    }

    /// Whether the function has returned (or panicked).
    pub fn is_finished(&self) -> bool {
        self.outcome.lock().map(|o| o.is_some()).unwrap_or(true)
    }

    /// How the function ended, without waiting: None while it runs, its
    /// return value, or the message of the panic it raised. Cheap (one
    /// uncontended lock): a control loop may call it every iteration to
    /// notice a worker that died.
    pub fn status(&self) -> Option<std::result::Result<i32, String>> {
        let outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        outcome.as_ref().map(|o| o.as_ref().copied().map_err(|p| panic_message(p.as_ref())))
    }

    /// Waits for the function; its return value, or the panic it raised.
    pub fn wait(self) -> std::result::Result<i32, Box<dyn Any + Send>> {
        // SAFETY: waits for a worker lcore we launched on.
        unsafe { ffi::rte_eal_wait_lcore(self.lcore) };
        let outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner()).take();
        outcome.unwrap_or(Ok(-1))
    }
}

/// The text of a panic payload (`panic!` with a literal or a format).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// While alive, the thread that created it has an lcore id (and so a
/// mempool cache). Not Send: it must be dropped on the thread it registered.
pub struct ThreadRegistration {
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Registers the calling Rust thread with the EAL (`rte_thread_register`).
pub fn register_thread() -> Result<ThreadRegistration> {
    if current().is_some() {
        return Err(Error::InvalidArgument("this thread already has an lcore id".into()));
    }
    // SAFETY: registers the calling thread; the EAL is up (callers hold an Eal).
    if unsafe { ffi::rte_thread_register() } != 0 {
        return Err(Error::dpdk("rte_thread_register", rte_errno(), ""));
    }
    Ok(ThreadRegistration { _not_send: std::marker::PhantomData })
}

impl Drop for ThreadRegistration {
    fn drop(&mut self) {
        // SAFETY: unregisters the calling thread, which registered (not Send).
        unsafe { ffi::rte_thread_unregister() }
    }
}

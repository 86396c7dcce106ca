//! Child processes that never outlive the test that started them.
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::deadline::wait_until;

/// A child in its own process group whose output is collected in memory (and
/// echoed to the test's stderr when `VSW_TEST_VERBOSE` is set). Dropping it
/// kills the whole group; the kernel kills it too if the test process dies
/// (`PR_SET_PDEATHSIG`), so a panicking or killed test leaves nothing behind.
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<String>>,
    /// The threads collecting stdout and stderr: done at their EOF.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Proc {
    /// Starts `cmd` with piped stdin, stdout and stderr.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Proc, String> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: the closure runs between fork and exec and calls only
        // prctl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{name}: cannot start {:?}: {e}", cmd.get_program()))?;
        let output = Arc::new(Mutex::new(String::new()));
        let verbose = std::env::var_os("VSW_TEST_VERBOSE").is_some();
        let readers: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("piped stdout")),
            Box::new(child.stderr.take().expect("piped stderr")),
        ];
        let mut threads = Vec::new();
        for mut r in readers {
            let out = Arc::clone(&output);
            let tag = name.to_string();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if verbose {
                        eprint!("[{tag}] {text}");
                    }
                    out.lock().unwrap().push_str(&text);
                }
            }));
        }
        let stdin = child.stdin.take();
        Ok(Proc { name: name.to_string(), child, stdin, output, readers: threads })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child printed so far, stdout and stderr interleaved.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Length of the output so far: a mark to search after with `wait_for_after`.
    pub fn output_len(&self) -> usize {
        self.output.lock().unwrap().len()
    }

    /// Waits until `needle` appears in the output, failing early if the child exits.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        self.wait_for_after(0, needle, timeout).map(|_| ())
    }

    /// Waits until `needle` appears in the output after byte `mark`; returns
    /// the output from `mark` to the end of the match.
    pub fn wait_for_after(
        &mut self,
        mark: usize,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let what = format!("{:?} in the output of {}", needle, self.name);
        let output = Arc::clone(&self.output);
        let mut exited = None;
        let res = wait_until(timeout, &what, || {
            let out = output.lock().unwrap();
            if let Some(pos) = out.get(mark..).and_then(|s| s.find(needle)) {
                return Some(Ok(out[mark..mark + pos + needle.len()].to_string()));
            }
            drop(out);
            if let Ok(Some(status)) = self.child.try_wait() {
                exited = Some(status);
                return Some(Err(()));
            }
            None
        });
        match res {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(())) => Err(format!(
                "{} exited ({:?}) before printing {needle:?}; output:\n{}",
                self.name,
                exited,
                self.output()
            )),
            Err(e) => Err(format!("{e}; output:\n{}", self.tail(4000))),
        }
    }

    /// The last `n` bytes of output, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let out = self.output();
        let mut start = out.len().saturating_sub(n);
        while !out.is_char_boundary(start) {
            start += 1;
        }
        out[start..].to_string()
    }

    pub fn write_stdin(&mut self, data: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        stdin
            .write_all(data.as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("write to {}: {e}", self.name))
    }

    /// Has the child exited? Returns its status if so, once its output is
    /// all in `output` (what is still in the pipes when it exits is read
    /// after; a grandchild that keeps them open is waited for 5 s at most).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.try_wait().ok().flatten()?;
        let _ = wait_until(Duration::from_secs(5), "the child's last output", || self.readers.iter().all(|r| r.is_finished()).then_some(()));
        Some(status)
    }

    /// Sends `sig` to the child and waits up to `timeout` for it to exit.
    pub fn signal_and_wait(
        &mut self,
        sig: i32,
        timeout: Duration,
    ) -> Result<std::process::ExitStatus, String> {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        let child = &mut self.child;
        wait_until(timeout, &format!("{} to exit", self.name), || {
            child.try_wait().ok().flatten()
        })
    }

    /// Kills the whole process group and reaps the child.
    pub fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: a negative pid names the child's own process group
            // (process_group(0) above); kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin.take();
        self.kill();
    }
}


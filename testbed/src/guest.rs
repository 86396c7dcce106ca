//! Real Linux guests for end-to-end tests: a Debian cloud kernel and a
//! busybox initramfs, built from Debian packages into a cache, booted under
//! QEMU (TCG) with one virtio-net device on a vhost-user socket.
//!
//! The recipe (memfd-shared memory, `vectors=0`, module order) is the one
//! verified in shared/docs/dpdk-notes.md. The guest's serial console is its
//! stdio; `Guest::run` types a shell command there and waits for its status.
//!
//! Every guest also has QEMU's human monitor (HMP) on a unix socket in a
//! directory of its own (`Guest::monitor`), through which a test can live-
//! migrate it (`Guest::migrate`) to a guest started with `Guest::boot_incoming`.
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::deadline::wait_until;
use crate::proc::Proc;

const KERNEL_META_PACKAGE: &str = "linux-image-cloud-amd64";
/// Loaded in this order: each needs the ones before it.
const MODULES: &[(&str, &str)] = &[
    ("virtio_ring", "drivers/virtio/virtio_ring.ko"),
    ("virtio", "drivers/virtio/virtio.ko"),
    ("virtio_pci_modern_dev", "drivers/virtio/virtio_pci_modern_dev.ko"),
    ("virtio_pci_legacy_dev", "drivers/virtio/virtio_pci_legacy_dev.ko"),
    ("virtio_pci", "drivers/virtio/virtio_pci.ko"),
    ("failover", "net/core/failover.ko"),
    ("net_failover", "drivers/net/net_failover.ko"),
    ("virtio_net", "drivers/net/virtio_net.ko"),
];
const READY: &str = "VSW-GUEST-READY";

/// A bootable kernel and initramfs in the cache directory.
#[derive(Clone, Debug)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl GuestImage {
    /// Returns the cached image, building it first if needed. The cache is
    /// `$VSW_GUEST_CACHE`, or `target/guest`; it is keyed by kernel version.
    pub fn get() -> Result<GuestImage, String> {
        let cache = std::env::var_os("VSW_GUEST_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::target_dir().join("guest"));
        let version = kernel_package()?;
        // Keyed by kernel and init script: a changed recipe builds anew.
        let recipe = init_script().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        let dir = cache.join(format!("{version}-{recipe:016x}"));
        let image = GuestImage { kernel: dir.join("vmlinuz"), initrd: dir.join("initrd.img") };
        if image.kernel.exists() && image.initrd.exists() {
            return Ok(image);
        }
        std::fs::create_dir_all(&cache).map_err(|e| format!("create {cache:?}: {e}"))?;
        // Build in a scratch directory and rename it into place, so a build
        // that dies half-way never leaves a cache entry that looks whole.
        let work = tempfile::tempdir_in(&cache).map_err(|e| format!("tempdir: {e}"))?;
        build_image(&version, work.path())?;
        let staged = work.path().join("image");
        match std::fs::rename(&staged, &dir) {
            Ok(()) => Ok(image),
            Err(_) if image.kernel.exists() => Ok(image), // another build won
            Err(e) => Err(format!("rename {staged:?} to {dir:?}: {e}")),
        }
    }
}

/// The versioned kernel package the meta package depends on.
fn kernel_package() -> Result<String, String> {
    let depends = || -> Option<String> {
        let out = Command::new("apt-cache").args(["depends", KERNEL_META_PACKAGE]).output().ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.trim().strip_prefix("Depends: ").map(str::to_owned))
            .filter(|p| p.starts_with("linux-image-"))
    };
    if let Some(p) = depends() {
        return Ok(p);
    }
    // A fresh machine may have no package lists yet.
    run(Command::new("apt-get").args(["update", "-qq"]), "apt-get update")?;
    depends().ok_or_else(|| format!("apt-cache finds no dependency of {KERNEL_META_PACKAGE}"))
}

fn build_image(package: &str, work: &Path) -> Result<(), String> {
    run(Command::new("apt-get").args(["download", "-qq", package]).current_dir(work), "apt-get download")?;
    let deb = std::fs::read_dir(work)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    let root = work.join("root");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root), "dpkg -x")?;
    let kver = package.trim_start_matches("linux-image-");
    let image = work.join("image");
    let initramfs = work.join("initramfs");
    for d in ["bin", "modules", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(initramfs.join(d)).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(&image).map_err(|e| e.to_string())?;
    copy(&root.join(format!("boot/vmlinuz-{kver}")), &image.join("vmlinuz"))?;
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        return Err("/bin/busybox missing: install busybox-static (make deps)".into());
    }
    copy(busybox, &initramfs.join("bin/busybox"))?;
    for (name, rel) in MODULES {
        let src = root.join(format!("lib/modules/{kver}/kernel/{rel}"));
        copy(&src, &initramfs.join(format!("modules/{name}.ko")))?;
    }
    let init = initramfs.join("init");
    std::fs::write(&init, init_script()).map_err(|e| e.to_string())?;
    run(Command::new("chmod").arg("755").arg(&init), "chmod")?;
    let cpio = format!(
        "cd '{}' && find . | cpio --quiet -o -H newc | gzip -1 > '{}'",
        initramfs.display(),
        image.join("initrd.img").display()
    );
    run(Command::new("sh").args(["-c", &cpio]), "cpio")
}

fn init_script() -> String {
    let modules: Vec<&str> = MODULES.iter().map(|(n, _)| *n).collect();
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
dmesg -n 1
for m in {modules}; do insmod /modules/$m.ko || echo "insmod $m failed"; done
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vsw.ip=*) IP="${{arg#vsw.ip=}}" ;;
    vsw.mtu=*) MTU="${{arg#vsw.mtu=}}" ;;
  esac
done
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ip link set eth0 up
[ -n "$MTU" ] && ip link set eth0 mtu "$MTU"
[ -n "$IP" ] && ip addr add "$IP" dev eth0
stty -echo
export PS1=''
echo {READY}
exec sh
"#,
        modules = modules.join(" ")
    )
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to).map(|_| ()).map_err(|e| format!("copy {from:?} to {to:?}: {e}"))
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// Which side of the vhost-user socket QEMU takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketRole {
    /// QEMU listens (`server=on,wait=off`); the switch connects as client.
    QemuServer,
    /// QEMU connects to the switch's socket, reconnecting if it goes away.
    QemuClient,
}

/// The guest's one network interface.
#[derive(Clone, Debug)]
pub struct GuestNet {
    pub socket: PathBuf,
    pub role: SocketRole,
    pub mac: String,
    /// Address with prefix, e.g. `10.0.0.1/24`.
    pub ip: String,
    pub mtu: Option<u32>,
    /// A packed virtqueue (`packed=on`) rather than split rings.
    pub packed: bool,
}

/// A running guest. Dropping it kills QEMU.
pub struct Guest {
    // Fields drop in order: QEMU dies before its monitor directory goes.
    proc: Proc,
    /// Where the output of the last typed command starts.
    typed_at: usize,
    monitor: Option<Monitor>,
    monitor_path: PathBuf,
    _monitor_dir: tempfile::TempDir,
}

impl Guest {
    /// Starts QEMU; returns once QEMU runs (use `wait_ready` for the shell).
    pub fn boot(name: &str, image: &GuestImage, net: &GuestNet) -> Result<Guest, String> {
        Self::start(name, image, net, false)
    }

    /// Starts QEMU as the destination of a live migration: the machine of
    /// `boot` (same memory, device and, from `net`, MAC) waiting with
    /// `-incoming defer`; then has it listen on `uri` (`migrate_incoming`,
    /// e.g. `unix:/dir/mig.sock`) and returns once it does. Its shell is the
    /// migrated guest's: `wait_ready` does not apply, and `run` works once
    /// the migration has completed (`wait_running`), as does `wait_typed`
    /// for a command typed on the source.
    ///
    /// QEMU serves its monitor only after the vhost-user backend has
    /// connected to `net.socket`, so the switch must be up within `timeout`.
    pub fn boot_incoming(name: &str, image: &GuestImage, net: &GuestNet, uri: &str, timeout: Duration) -> Result<Guest, String> {
        let mut g = Self::start(name, image, net, true)?;
        let out = g.monitor(&format!("migrate_incoming {uri}"), timeout)?;
        if !out.trim().is_empty() {
            return Err(format!("{name}: migrate_incoming {uri}: {out}"));
        }
        // The output of a command typed on the source starts here.
        g.typed_at = g.proc.output_len();
        Ok(g)
    }

    fn start(
        name: &str,
        image: &GuestImage,
        net: &GuestNet,
        incoming: bool,
    ) -> Result<Guest, String> {
        let chardev = match net.role {
            SocketRole::QemuServer => format!("socket,id=c0,path={},server=on,wait=off", net.socket.display()),
            SocketRole::QemuClient => format!("socket,id=c0,path={},reconnect=1", net.socket.display()),
        };
        let mut append = format!("console=ttyS0 quiet loglevel=1 panic=-1 vsw.ip={}", net.ip);
        if let Some(mtu) = net.mtu {
            append.push_str(&format!(" vsw.mtu={mtu}"));
        }
        // A directory of its own keeps the monitor's path short (unix
        // sockets allow 107 bytes) and free of commas (QEMU's separator).
        let monitor_dir = tempfile::Builder::new()
            .prefix("vsw-qemu-")
            .tempdir()
            .map_err(|e| format!("{name}: monitor directory: {e}"))?;
        let monitor_path = monitor_dir.path().join("monitor.sock");
        let device = format!("virtio-net-pci,netdev=n0,mac={},vectors=0{}", net.mac, if net.packed { ",packed=on" } else { "" });
        // A named CPU model, not `max`: QEMU does not promise that `max`
        // migrates (its features follow the build), and migration tests
        // start two of these machines.
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio"])
            .args(["-accel", "tcg", "-cpu", "qemu64", "-smp", "1", "-m", "256M", "-no-reboot"])
            .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
            .args(["-numa", "node,memdev=mem"])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .args(["-append", &append])
            .args(["-chardev", &chardev])
            .args(["-netdev", "vhost-user,id=n0,chardev=c0"])
            .args(["-device", &device])
            .args(["-monitor", &format!("unix:{},server=on,wait=off", monitor_path.display())]);
        if incoming {
            cmd.args(["-incoming", "defer"]);
        }
        Ok(Guest { proc: Proc::spawn(name, cmd)?, typed_at: 0, monitor: None, monitor_path, _monitor_dir: monitor_dir })
    }

    /// Waits until the guest's init has configured eth0 and started a shell.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        self.proc.wait_for(READY, timeout)
    }

    /// Runs `cmd` in the guest's shell; returns its exit status and output.
    ///
    /// No child of the shell may end while the shell waits for input: that
    /// ends the shell, and the guest with it (the shell is init). After
    /// init's `stty -echo`, busybox's line editing reads with fgets, which
    /// the SIGCHLD interrupts, and ash takes the EINTR for end of input.
    /// The shell's children are its background jobs (`cmd &`), and every
    /// orphan, which init inherits: e.g. an httpd CGI script that outlives
    /// the httpd process that started it. End background jobs inside a
    /// command (`kill $P; wait $P`), run long commands in the foreground
    /// with `type_command`, and serve files rather than CGI output.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Result<(i32, String), String> {
        self.type_command(cmd)?;
        self.wait_typed(timeout)
    }

    /// Types `cmd` into the guest's shell and returns at once; `wait_typed`
    /// collects its exit status and output. The shell reads nothing else
    /// meanwhile. A command typed before a live migration finishes on the
    /// destination: collect it there (the shell moves with the guest).
    pub fn type_command(&mut self, cmd: &str) -> Result<(), String> {
        self.typed_at = self.proc.output_len();
        // The marker is split in the command so that an echoed input line
        // (the console echoes until init's `stty -echo`) never matches.
        self.proc.write_stdin(&format!("{{ {cmd} ; }} 2>&1; echo \"@@END\"\"@@$?@@\"\n"))
    }

    /// Waits for the command of `type_command` (typed here, or on the
    /// source of a migration to this guest) to finish; returns its exit
    /// status and output.
    pub fn wait_typed(&mut self, timeout: Duration) -> Result<(i32, String), String> {
        let mark = self.typed_at;
        let upto = self.proc.wait_for_after(mark, "@@END@@", timeout)?;
        let status_at = mark + upto.len();
        let status = self.proc.wait_for_after(status_at, "@@", timeout)?;
        self.typed_at = status_at + status.len();
        let code = status.trim_end_matches("@@").trim().parse::<i32>().map_err(|e| {
            format!("{}: unreadable status {status:?}: {e}", self.proc.name())
        })?;
        let out = upto.trim_end_matches("@@END@@").replace('\r', "");
        Ok((code, out))
    }

    /// Runs `cmd` and fails unless it exits 0.
    pub fn run_ok(&mut self, cmd: &str, timeout: Duration) -> Result<String, String> {
        match self.run(cmd, timeout)? {
            (0, out) => Ok(out),
            (code, out) => Err(format!("{}: `{cmd}` exited {code}:\n{out}", self.proc.name())),
        }
    }

    /// Runs one HMP command (e.g. `info status`) on QEMU's monitor and
    /// returns its output, without the echoed command line and the prompt.
    /// HMP reports a failed command in its output (`Error: ...`), not here.
    pub fn monitor(&mut self, cmd: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let res = match self.monitor.as_mut() {
            Some(m) => m.command(cmd, deadline),
            None => Monitor::connect(&self.monitor_path, &mut self.proc, deadline).and_then(|m| {
                self.monitor.insert(m).command(cmd, deadline)
            }),
        };
        res.map_err(|e| {
            // The next command starts on a fresh connection.
            self.monitor = None;
            format!("{}: monitor `{cmd}`: {e}; output:\n{}", self.proc.name(), self.proc.tail(2000))
        })
    }

    /// Live-migrates the guest to `uri`, where a `boot_incoming` guest
    /// listens (`migrate -d`), and polls `info migrate` until QEMU reports
    /// `completed`; returns that last `info migrate`. Fails at once if QEMU
    /// refuses (e.g. a migration blocker) or the migration fails. This QEMU
    /// then stays paused (`postmigrate`) until dropped.
    pub fn migrate(&mut self, uri: &str, timeout: Duration) -> Result<String, String> {
        let out = self.monitor(&format!("migrate -d {uri}"), timeout)?;
        if !out.trim().is_empty() {
            return Err(format!("{}: migrate -d {uri}: {}", self.proc.name(), out.trim()));
        }
        let mut last = String::new();
        let what = format!("{}: migration to {uri} to complete", self.proc.name());
        let res = wait_until(timeout, &what, || {
            let info = match self.monitor("info migrate", MONITOR_REPLY) {
                Ok(info) => info,
                Err(e) => return Some(Err(e)),
            };
            let status = info
                .lines()
                .find_map(|l| l.trim().strip_prefix("Migration status:"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            if status == "completed" {
                return Some(Ok(info));
            }
            if status.starts_with("failed") || status.starts_with("cancelled") {
                return Some(Err(format!("migration {status}:\n{info}")));
            }
            last = info;
            None
        });
        match res {
            Ok(r) => r,
            Err(e) => Err(format!("{e}; last `info migrate`:\n{last}")),
        }
    }

    /// Waits until `info status` says the guest runs (a migration
    /// destination, once the migration has completed).
    pub fn wait_running(&mut self, timeout: Duration) -> Result<(), String> {
        let mut last = String::new();
        let what = format!("{} to run", self.proc.name());
        let res = wait_until(timeout, &what, || match self.monitor("info status", MONITOR_REPLY) {
            Ok(s) if s.contains("VM status: running") => Some(Ok(())),
            Ok(s) => {
                last = s;
                None
            }
            Err(e) => Some(Err(e)),
        });
        match res {
            Ok(r) => r,
            Err(e) => Err(format!("{e}; last `info status`: {}", last.trim())),
        }
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// A connection to QEMU's human monitor. It echoes what it is sent (with
/// line-editing escapes), then prints the output and the `(qemu) ` prompt.
struct Monitor {
    stream: UnixStream,
}

const PROMPT: &str = "(qemu) ";
/// For one poll of a running QEMU's monitor (replies take milliseconds).
const MONITOR_REPLY: Duration = Duration::from_secs(30);

impl Monitor {
    /// Connects, retrying until the socket exists, and reads the banner
    /// (which comes once QEMU's main loop runs). Fails early if QEMU exits.
    fn connect(path: &Path, proc: &mut Proc, deadline: Instant) -> Result<Monitor, String> {
        let mut exited = None;
        let stream = wait_until(deadline.saturating_duration_since(Instant::now()), "the monitor socket", || {
            if let Some(status) = proc.try_wait() {
                exited = Some(status);
                return Some(None);
            }
            UnixStream::connect(path).ok().map(Some)
        })?
        .ok_or_else(|| format!("QEMU exited ({exited:?})"))?;
        let mut m = Monitor { stream };
        m.read_reply(deadline)?;
        Ok(m)
    }

    fn command(&mut self, cmd: &str, deadline: Instant) -> Result<String, String> {
        self.stream
            .write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let reply = self.read_reply(deadline)?;
        // Everything up to the first newline is the echo of `cmd`.
        Ok(reply.split_once('\n').map(|(_, out)| out.to_string()).unwrap_or_default())
    }

    /// Reads up to the prompt; returns the text before it, without escape
    /// sequences and carriage returns.
    fn read_reply(&mut self, deadline: Instant) -> Result<String, String> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.ends_with(PROMPT.as_bytes()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no prompt in time; got {:?}", String::from_utf8_lossy(&buf)));
            }
            self.stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(format!("monitor closed; got {:?}", String::from_utf8_lossy(&buf))),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        buf.truncate(buf.len() - PROMPT.len());
        Ok(strip_escapes(&String::from_utf8_lossy(&buf)))
    }
}

/// Removes ANSI CSI sequences (`ESC [ ... final`) and carriage returns.
fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::strip_escapes;

    #[test]
    fn monitor_escapes_are_stripped() {
        let echo = "i\x1b[K\x1b[Din\x1b[K\x1b[D\x1b[Dinfo status\x1b[K\r\nVM status: running\r\n";
        assert_eq!(strip_escapes(echo), "iininfo status\nVM status: running\n");
    }
}

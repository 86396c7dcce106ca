//! Real Linux guests for end-to-end tests: a Debian cloud kernel and a
//! busybox initramfs, built from Debian packages into a cache, booted under
//! QEMU (TCG) with one virtio-net device on a vhost-user socket.
//!
//! The recipe (memfd-shared memory, `vectors=0`, module order) is the one
//! verified in shared/docs/dpdk-notes.md. The guest's serial console is its
//! stdio; `Guest::run` types a shell command there and waits for its status.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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
}

/// A running guest. Dropping it kills QEMU.
pub struct Guest {
    proc: Proc,
}

impl Guest {
    /// Starts QEMU; returns once QEMU runs (use `wait_ready` for the shell).
    pub fn boot(name: &str, image: &GuestImage, net: &GuestNet) -> Result<Guest, String> {
        let chardev = match net.role {
            SocketRole::QemuServer => format!("socket,id=c0,path={},server=on,wait=off", net.socket.display()),
            SocketRole::QemuClient => format!("socket,id=c0,path={},reconnect=1", net.socket.display()),
        };
        let mut append = format!("console=ttyS0 quiet loglevel=1 panic=-1 vsw.ip={}", net.ip);
        if let Some(mtu) = net.mtu {
            append.push_str(&format!(" vsw.mtu={mtu}"));
        }
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio"])
            .args(["-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "256M", "-no-reboot"])
            .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
            .args(["-numa", "node,memdev=mem"])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .args(["-append", &append])
            .args(["-chardev", &chardev])
            .args(["-netdev", "vhost-user,id=n0,chardev=c0"])
            .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={},vectors=0", net.mac)]);
        Ok(Guest { proc: Proc::spawn(name, cmd)? })
    }

    /// Waits until the guest's init has configured eth0 and started a shell.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        self.proc.wait_for(READY, timeout)
    }

    /// Runs `cmd` in the guest's shell; returns its exit status and output.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Result<(i32, String), String> {
        let mark = self.proc.output_len();
        // The marker is split in the command so that an echoed input line
        // (the console echoes until init's `stty -echo`) never matches.
        self.proc.write_stdin(&format!("{{ {cmd} ; }} 2>&1; echo \"@@END\"\"@@$?@@\"\n"))?;
        let upto = self.proc.wait_for_after(mark, "@@END@@", timeout)?;
        let status_at = mark + upto.len();
        let status = self.proc.wait_for_after(status_at, "@@", timeout)?;
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

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

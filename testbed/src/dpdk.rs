//! DPDK file prefixes that clean up after themselves.
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

static AT_EXIT: std::sync::Mutex<Vec<FilePrefix>> = std::sync::Mutex::new(Vec::new());

/// A unique `--file-prefix` for one DPDK process. Dropping it removes the
/// runtime directory and hugepage files a process under this prefix may have
/// left (a killed process leaves both, and the files hold hugepages).
pub struct FilePrefix(String);

impl FilePrefix {
    pub fn new(tag: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        FilePrefix(format!("vsw-{tag}-{}-{n}", std::process::id()))
    }

    /// A prefix for a DPDK instance that lives as long as the test process
    /// (a shared EAL fixture): its files are removed at process exit.
    pub fn for_process(tag: &str) -> &'static FilePrefix {
        extern "C" fn remove_all() {
            if let Ok(list) = AT_EXIT.lock() {
                list.iter().for_each(FilePrefix::remove_files);
            }
        }
        let prefix: &'static FilePrefix = Box::leak(Box::new(FilePrefix::new(tag)));
        let mut list = AT_EXIT.lock().unwrap();
        if list.is_empty() {
            // SAFETY: registers a plain extern "C" function with no captured state.
            unsafe { libc::atexit(remove_all) };
        }
        list.push(FilePrefix(prefix.0.clone()));
        prefix
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// EAL arguments for a process that needs no hugepages and shares nothing
    /// with other DPDK processes (see shared/docs/dpdk-notes.md).
    pub fn eal_args(&self, mem_mb: u32) -> Vec<String> {
        [
            "--no-huge",
            "-m",
            &mem_mb.to_string(),
            "--no-shconf",
            "--no-pci",
            "--file-prefix",
            &self.0,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn remove_files(&self) {
        let _ = std::fs::remove_dir_all(Path::new("/run/dpdk").join(&self.0));
        if let Ok(dir) = std::fs::read_dir("/dev/hugepages") {
            for entry in dir.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&self.0) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

impl Drop for FilePrefix {
    fn drop(&mut self) {
        self.remove_files();
    }
}

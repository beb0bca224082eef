//! Free space on the store's filesystem, and the reserve that keeps a full disk from stopping
//! acknowledgements.
//!
//! At start the store writes a reserve file of `reserve_bytes` into its directory. Twice a
//! second (and at once when RocksDB reports that a write found no space) it looks at the
//! filesystem's free space:
//!
//! - below `min_free_bytes` (or after a write found no space), the disk is **full**: new
//!   messages are refused with `disk-full`, and the reserve file is deleted, so that what
//!   frees space (acknowledgements, expiry, compaction) and RocksDB's own recovery from a
//!   failed write have room to work;
//! - once the free space is back above `min_free_bytes + reserve_bytes`, the reserve is written
//!   again and new messages are taken again. The gap between the two thresholds keeps the
//!   state from flapping.
//!
//! Nothing needs a restart: RocksDB resumes writing by itself once space returns (its error
//! handler polls the free space after a failed write).

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

/// The reserve file's name in the store's directory (RocksDB leaves files it does not know).
pub const RESERVE_FILE: &str = "switchboard-reserve";

/// The free-space state of the store's filesystem.
pub(crate) struct Space {
    dir: PathBuf,
    min_free: u64,
    reserve: u64,
    full: AtomicBool,
    free: AtomicU64,
    /// Whether the reserve file is in place; held while it is written or deleted.
    reserved: Mutex<bool>,
}

impl Space {
    /// Watches the filesystem of `dir` with the thresholds; writes the reserve if missing.
    pub(crate) fn new(dir: &Path, min_free: u64, reserve: u64) -> Self {
        let space = Self {
            dir: dir.to_path_buf(),
            min_free,
            reserve,
            full: AtomicBool::new(false),
            free: AtomicU64::new(u64::MAX),
            reserved: Mutex::new(dir.join(RESERVE_FILE).exists()),
        };
        space.check();
        space
    }

    /// Whether new messages are refused for want of space.
    pub(crate) fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// Free bytes as last measured.
    pub(crate) fn free(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// Measures the free space and moves between the states (see the module's text).
    pub(crate) fn check(&self) {
        if self.min_free == 0 && self.reserve == 0 {
            return;
        }
        let Some(free) = free_bytes(&self.dir) else { return };
        self.free.store(free, Ordering::Relaxed);
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        if free < self.min_free {
            self.become_full(&mut reserved, free);
        } else if self.is_full() && free >= self.min_free.saturating_add(self.reserve) {
            if !*reserved {
                *reserved = self.write_reserve();
            }
            self.full.store(false, Ordering::Release);
            tracing::info!(free_bytes = free, "disk space returned: new messages are taken again");
        } else if !self.is_full() && !*reserved && self.reserve > 0 {
            // At start, or after someone removed it: put the reserve (back) in place.
            *reserved = self.write_reserve();
        }
    }

    /// A write found no space: full at once, whatever the last measurement said.
    pub(crate) fn no_space(&self) {
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        let free = free_bytes(&self.dir).unwrap_or(0);
        self.free.store(free, Ordering::Relaxed);
        self.become_full(&mut reserved, free);
    }

    fn become_full(&self, reserved: &mut bool, free: u64) {
        if *reserved {
            match std::fs::remove_file(self.dir.join(RESERVE_FILE)) {
                Ok(()) => *reserved = false,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => *reserved = false,
                Err(error) => tracing::error!(%error, "cannot delete the disk reserve"),
            }
        }
        if !self.full.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                free_bytes = free,
                min_free_bytes = self.min_free,
                reserve_bytes = self.reserve,
                "the disk is nearly full: new messages are refused (disk-full) until space returns; \
                 the reserve is released for acknowledgements"
            );
        }
    }

    /// Puts the reserve file in place with real blocks, not a sparse file: allocated where the
    /// filesystem can, written with zeros where it cannot. Whether it is in place.
    fn write_reserve(&self) -> bool {
        if self.reserve == 0 {
            return false;
        }
        let path = self.dir.join(RESERVE_FILE);
        let written = (|| {
            let mut file = std::fs::File::create(&path)?;
            let flags = rustix::fs::FallocateFlags::empty();
            if rustix::fs::fallocate(&file, flags, 0, self.reserve).is_ok() {
                return file.sync_all();
            }
            let chunk = vec![0u8; 1 << 20];
            let mut left = self.reserve;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                file.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            file.sync_all()
        })();
        match written {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "cannot write the disk reserve");
                let _ = std::fs::remove_file(&path);
                false
            }
        }
    }
}

/// Bytes an unprivileged process may still write on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Whether a RocksDB error says the disk is full.
pub(crate) fn is_no_space(text: &str) -> bool {
    text.contains("No space left on device") || text.contains("NoSpace")
}

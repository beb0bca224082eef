//! Backups of a live hub and their restore.
//!
//! A backup is a directory under `[backup] dir` (`<data_dir>/backups` by default):
//!
//! - `store/`: a RocksDB checkpoint, a consistent copy of the whole store at one instant
//!   (queues, cursors, users, devices, organisations, peers added at run time). The memtables
//!   are flushed first, so the copy needs no WAL of its own; on the same filesystem its table
//!   files are hard links, so a backup takes a moment and little space until compaction
//!   replaces the live files.
//! - `tls/`: the hub's certificate and private key (devices and peers pin the certificate).
//! - `admin.token`: the operator token.
//! - `hub.toml`: the configuration file the hub was started with, if any.
//! - `BACKUP`: what this is, when it was taken and by which hub; written last, so a directory
//!   without it is an interrupted backup.
//!
//! Every file and directory is fsynced before the backup is reported done. `restore` copies a
//! backup into an empty data directory (never over a store), opens the restored store once to
//! check it, and leaves `hub.toml` for the operator to put in place.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{fanout::Hub, store::StoreError};

/// The first line of a backup's `BACKUP` file.
const MAGIC: &str = "switchboard backup 1";

/// Why a backup or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The name is not a plain directory name.
    #[error("a backup name is 1-100 of A-Z a-z 0-9 . _ -, not starting with a dot: {0:?}")]
    BadName(String),
    /// A backup of that name exists.
    #[error("a backup named {0} exists already")]
    Exists(String),
    /// The directory is not a complete backup.
    #[error("{0} is not a complete Switchboard backup (no BACKUP file)")]
    NotABackup(PathBuf),
    /// The data directory already holds a store.
    #[error("{0} already holds a store: restore only into an empty data directory")]
    NotEmpty(PathBuf),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.to_path_buf(), source }
}

/// What a backup holds.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupReport {
    /// The backup's directory.
    pub dir: String,
    /// When it was taken, Unix milliseconds.
    pub taken_ms: u64,
    /// The hub it was taken from.
    pub hub: String,
    /// Bytes of the store's files in it.
    pub store_bytes: u64,
    /// Whether the configuration file was copied (the hub was started with `--config`).
    pub config: bool,
    /// How long the backup took, milliseconds.
    pub took_ms: u64,
}

/// Whether `name` may name a backup.
pub fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A default backup name: the UTC time, `20261205T083000Z`.
pub fn default_name(now_ms: u64) -> String {
    let [y, m, d, h, min, s] = utc(now_ms);
    format!("{y:04}{m:02}{d:02}T{h:02}{min:02}{s:02}Z")
}

/// Unix milliseconds as UTC year, month, day, hour, minute, second.
pub fn utc(ms: u64) -> [i64; 6] {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, (secs % 86_400) as i64);
    let (y, m, d) = civil_from_days(days as i64);
    [y, i64::from(m), i64::from(d), rest / 3600, rest / 60 % 60, rest % 60]
}

/// The calendar date of a day count since 1970-01-01 (proleptic Gregorian; Howard Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The directory backups are written under.
pub fn backup_root(config: &crate::config::Config) -> PathBuf {
    match config.backup.dir.as_os_str().is_empty() {
        true => config.data_dir().join("backups"),
        false => config.backup.dir.clone(),
    }
}

/// Takes a backup of the running `hub` named `name` under the backup directory. Blocks on
/// RocksDB and the disk: call it where blocking is allowed.
pub fn backup(hub: &Hub, name: &str) -> Result<BackupReport, BackupError> {
    if !valid_name(name) {
        return Err(BackupError::BadName(name.into()));
    }
    let started = std::time::Instant::now();
    let config = hub.config();
    let root = backup_root(&config);
    private_dir(&root)?;
    let dir = root.join(name);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(BackupError::Exists(name.into()));
        }
        Err(e) => return Err(io(&dir)(e)),
    }
    set_private(&dir)?;
    hub.store().checkpoint(&dir.join("store"))?;
    let data_dir = config.data_dir();
    copy_tree(&data_dir.join("tls"), &dir.join("tls"))?;
    copy_file(&data_dir.join("admin.token"), &dir.join("admin.token"))?;
    let with_config = match &config.source {
        Some(source) => {
            copy_file(source, &dir.join("hub.toml"))?;
            true
        }
        None => false,
    };
    sync_tree(&dir.join("store"))?;
    let taken_ms = crate::store::system_clock_ms();
    let manifest = format!(
        "{MAGIC}\ntaken_ms = {taken_ms}\nhub = {:?}\nversion = {:?}\n",
        config.hub.name,
        env!("CARGO_PKG_VERSION")
    );
    crate::net::tls::write_durable(&dir.join("BACKUP"), manifest.as_bytes(), 0o600)
        .map_err(io(&dir))?;
    sync_dir(&root)?;
    let report = BackupReport {
        dir: dir.display().to_string(),
        taken_ms,
        hub: config.hub.name.clone(),
        store_bytes: tree_bytes(&dir.join("store")),
        config: with_config,
        took_ms: started.elapsed().as_millis() as u64,
    };
    tracing::info!(dir = %report.dir, store_bytes = report.store_bytes, took_ms = report.took_ms, "backup taken");
    Ok(report)
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    /// Users in the restored store.
    pub users: usize,
    /// Where the backup's configuration file was put, if it had one.
    pub config: Option<PathBuf>,
}

/// Restores the backup in `backup` into `data_dir`, which must hold no store. Opens the
/// restored store once to check it. The hub must not be running on `data_dir`.
pub fn restore(backup: &Path, data_dir: &Path) -> Result<Restored, BackupError> {
    let manifest = std::fs::read_to_string(backup.join("BACKUP")).unwrap_or_default();
    if manifest.lines().next() != Some(MAGIC) || !backup.join("store").is_dir() {
        return Err(BackupError::NotABackup(backup.to_path_buf()));
    }
    let store = data_dir.join("store");
    let occupied = std::fs::read_dir(&store).map(|mut d| d.next().is_some()).unwrap_or(false);
    if occupied {
        return Err(BackupError::NotEmpty(data_dir.to_path_buf()));
    }
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    set_private(data_dir)?;
    copy_tree(&backup.join("store"), &store)?;
    copy_tree(&backup.join("tls"), &data_dir.join("tls"))?;
    copy_file(&backup.join("admin.token"), &data_dir.join("admin.token"))?;
    let config = match backup.join("hub.toml").exists() {
        true => {
            let to = data_dir.join("hub.toml.restored");
            copy_file(&backup.join("hub.toml"), &to)?;
            Some(to)
        }
        false => None,
    };
    sync_tree(data_dir)?;
    // Open it once: a backup RocksDB cannot read is found now, not at the next start.
    let opened = crate::store::Store::open(crate::store::StoreConfig::new(&store))?;
    let users = opened.users()?.len();
    opened.close();
    Ok(Restored { users, config })
}

fn private_dir(dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))
}

fn set_private(dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))
}

/// Copies the file `from` to `to` (mode 0600) and fsyncs it.
fn copy_file(from: &Path, to: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut source = std::fs::File::open(from).map_err(io(from))?;
    let mut target = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(io(to))?;
    std::io::copy(&mut source, &mut target).map_err(io(to))?;
    target.flush().map_err(io(to))?;
    target.sync_all().map_err(io(to))
}

/// Copies the directory `from` into a new directory `to`, file by file.
fn copy_tree(from: &Path, to: &Path) -> Result<(), BackupError> {
    private_dir(to)?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(io(&path))?.is_dir() {
            copy_tree(&path, &target)?;
        } else {
            copy_file(&path, &target)?;
        }
    }
    sync_dir(to)
}

/// Fsyncs every file and directory under `dir` (a checkpoint's hard links and new files).
fn sync_tree(dir: &Path) -> Result<(), BackupError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(io(&path))?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn tree_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => tree_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_directory_names() {
        for good in ["a", "20261205T083000Z", "before-upgrade_2.1"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "../x", "/abs", "a b", &"x".repeat(101)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn default_names_are_the_utc_time() {
        assert_eq!(default_name(0), "19700101T000000Z");
        // 2026-12-05 08:30:15 UTC.
        assert_eq!(default_name(1_796_459_415_000), "20261205T083015Z");
        // A leap day.
        assert_eq!(default_name(951_782_400_000), "20000229T000000Z");
    }
}

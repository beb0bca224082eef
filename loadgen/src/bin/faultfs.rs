//! `faultfs BACKING MOUNTPOINT`: a FUSE file system over the directory BACKING that holds
//! every write in its own memory until the file is synced, the way a disk's volatile cache and
//! the kernel's page cache hold them until `fsync`. Killing this process (SIGKILL) is a power
//! loss for whatever runs on MOUNTPOINT: what it wrote and never synced is gone, what it synced
//! is in BACKING. Mount it again over the same BACKING to "power on".
//!
//! What it models, and what not:
//! - File data (writes, truncations, extensions by `fallocate`) reaches BACKING only on
//!   `fsync`/`fdatasync` of that file; closing the file keeps it unsynced, as the page cache
//!   does. Nothing is ever written back on its own: the worst case, every time.
//! - Names (create, rename, unlink, mkdir) reach BACKING at once, as a journalling file system
//!   that commits metadata promptly would; a file created and never synced survives with no
//!   data, which is what ext4 leaves after a crash in its default mode.
//! - Reads see the unsynced data, so the program sees one consistent file system until the
//!   power goes.
//!
//! Used by the power-loss crash loop (`loadgen/tests/crash_loop.rs`, root only: mounting FUSE
//! needs it). Foreground only; unmount with `umount -l MOUNTPOINT`.

use std::{
    collections::HashMap,
    ffi::OsStr,
    fs::{File, OpenOptions},
    os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// Attributes are never cached by the kernel: a file's size is what this process says now.
const TTL: Duration = Duration::ZERO;

/// A change to a file's data not synced yet.
#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Default)]
struct State {
    /// Inode to path under BACKING (the root is the empty path).
    paths: HashMap<u64, PathBuf>,
    inos: HashMap<PathBuf, u64>,
    next_ino: u64,
    /// Unsynced changes per inode, in the order they were made.
    dirty: HashMap<u64, Vec<Op>>,
    /// Open files: their inode and BACKING's file, opened for reading and writing.
    handles: HashMap<u64, (u64, Arc<File>)>,
    next_fh: u64,
}

impl State {
    fn ino(&mut self, path: &Path) -> u64 {
        if let Some(&ino) = self.inos.get(path) {
            return ino;
        }
        self.next_ino += 1;
        let ino = self.next_ino;
        self.paths.insert(ino, path.to_path_buf());
        self.inos.insert(path.to_path_buf(), ino);
        ino
    }

    fn forget_path(&mut self, path: &Path) {
        if let Some(ino) = self.inos.remove(path) {
            self.paths.remove(&ino);
            self.dirty.remove(&ino);
        }
    }
}

struct FaultFs {
    backing: PathBuf,
    state: Mutex<State>,
}

/// The length of a file whose synced length is `base` after `ops`.
fn length(base: u64, ops: &[Op]) -> u64 {
    ops.iter().fold(base, |len, op| match op {
        Op::Write(offset, data) => len.max(offset + data.len() as u64),
        Op::SetLen(to) => *to,
    })
}

/// Reads `[offset, offset + size)` of BACKING's `file` as `ops` change it.
fn read_through(file: &File, offset: u64, size: usize, ops: &[Op]) -> std::io::Result<Vec<u8>> {
    let base = file.metadata()?.len();
    let mut out = vec![0u8; size];
    let mut done = 0;
    while done < size && offset + (done as u64) < base {
        let n = file.read_at(&mut out[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    let end = offset + size as u64;
    for op in ops {
        match op {
            Op::Write(at, data) => {
                let (from, to) = ((*at).max(offset), (at + data.len() as u64).min(end));
                if from < to {
                    let src = &data[(from - at) as usize..(to - at) as usize];
                    out[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
                }
            }
            Op::SetLen(len) if *len < end => {
                let from = (*len).max(offset);
                out[(from - offset) as usize..].fill(0);
            }
            Op::SetLen(_) => {}
        }
    }
    let len = length(base, ops);
    out.truncate(len.saturating_sub(offset).min(size as u64) as usize);
    Ok(out)
}

fn kind_of(meta: &std::fs::Metadata) -> FileType {
    let file_type = meta.file_type();
    if file_type.is_dir() {
        FileType::Directory
    } else if file_type.is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    }
}

fn time(secs: i64, nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32)
}

fn errno(error: std::io::Error) -> Errno {
    Errno::from(error)
}

impl FaultFs {
    fn full(&self, path: &Path) -> PathBuf {
        self.backing.join(path)
    }

    fn path_of(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        let state = self.state.lock().expect("faultfs state");
        state.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path_of(parent)?.join(name))
    }

    /// The attributes of `path` (inode `ino`) with its unsynced changes.
    fn attr(&self, ino: u64, path: &Path) -> Result<FileAttr, Errno> {
        let meta = std::fs::symlink_metadata(self.full(path)).map_err(errno)?;
        let size = {
            let state = self.state.lock().expect("faultfs state");
            match state.dirty.get(&ino) {
                Some(ops) => length(meta.len(), ops),
                None => meta.len(),
            }
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: time(meta.ctime(), meta.ctime_nsec()),
            kind: kind_of(&meta),
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn entry(&self, path: PathBuf, reply: ReplyEntry) {
        let ino = self.state.lock().expect("faultfs state").ino(&path);
        match self.attr(ino, &path) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => {
                self.state.lock().expect("faultfs state").forget_path(&path);
                reply.error(e)
            }
        }
    }

    fn open_backing(&self, ino: u64, path: &Path) -> Result<u64, Errno> {
        let file = OpenOptions::new().read(true).write(true).open(self.full(path));
        // A file without write permission (a read-only key, say) is opened for reading.
        let file = match file {
            Ok(file) => file,
            Err(_) => File::open(self.full(path)).map_err(errno)?,
        };
        let mut state = self.state.lock().expect("faultfs state");
        state.next_fh += 1;
        let fh = state.next_fh;
        state.handles.insert(fh, (ino, Arc::new(file)));
        Ok(fh)
    }

    fn handle(&self, fh: FileHandle) -> Result<(u64, Arc<File>), Errno> {
        let state = self.state.lock().expect("faultfs state");
        state.handles.get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    /// Writes the unsynced changes of `ino` through `file` and syncs it.
    fn sync(&self, ino: u64, file: &File, data_only: bool) -> std::io::Result<()> {
        let ops = self.state.lock().expect("faultfs state").dirty.remove(&ino).unwrap_or_default();
        for op in &ops {
            match op {
                Op::Write(at, data) => file.write_all_at(data, *at)?,
                Op::SetLen(len) => file.set_len(*len)?,
            }
        }
        if data_only { file.sync_data() } else { file.sync_all() }
    }

    /// Removes a name at once (`remove` is `remove_file` or `remove_dir`) and forgets its inode.
    fn remove(
        &self,
        parent: INodeNo,
        name: &OsStr,
        remove: fn(&Path) -> std::io::Result<()>,
        reply: ReplyEmpty,
    ) {
        let path = match self.child(parent, name) {
            Ok(path) => path,
            Err(e) => return reply.error(e),
        };
        match remove(&self.full(&path)) {
            Ok(()) => {
                self.state.lock().expect("faultfs state").forget_path(&path);
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn push(&self, ino: u64, op: Op) {
        self.state.lock().expect("faultfs state").dirty.entry(ino).or_default().push(op);
    }
}

impl Filesystem for FaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name) {
            Ok(path) => self.entry(path, reply),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.path_of(ino).and_then(|path| self.attr(ino.0, &path)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let path = match self.path_of(ino) {
            Ok(path) => path,
            Err(e) => return reply.error(e),
        };
        if let Some(mode) = mode {
            let permissions = std::fs::Permissions::from_mode(mode & 0o7777);
            if let Err(e) = std::fs::set_permissions(self.full(&path), permissions) {
                return reply.error(errno(e));
            }
        }
        if let Some(size) = size {
            self.push(ino.0, Op::SetLen(size));
        }
        match self.attr(ino.0, &path) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let path = match self.child(parent, name) {
            Ok(path) => path,
            Err(e) => return reply.error(e),
        };
        let made = std::fs::create_dir(self.full(&path)).and_then(|()| {
            std::fs::set_permissions(
                self.full(&path),
                std::fs::Permissions::from_mode(mode & 0o7777),
            )
        });
        match made {
            Ok(()) => self.entry(path, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, |p| std::fs::remove_file(p), reply)
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, |p| std::fs::remove_dir(p), reply)
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (from, to) = match (self.child(parent, name), self.child(newparent, newname)) {
            (Ok(from), Ok(to)) => (from, to),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        if let Err(e) = std::fs::rename(self.full(&from), self.full(&to)) {
            return reply.error(errno(e));
        }
        let mut state = self.state.lock().expect("faultfs state");
        // What was at the new name is gone; what was under the old one moves with it.
        state.forget_path(&to);
        let moved: Vec<(PathBuf, u64)> = state
            .inos
            .iter()
            .filter(|(p, _)| p.starts_with(&from))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        for (old, ino) in moved {
            // (Joining an empty rest would add a trailing slash.)
            let rest = old.strip_prefix(&from).expect("under the old name");
            let new = if rest.as_os_str().is_empty() { to.clone() } else { to.join(rest) };
            state.inos.remove(&old);
            state.inos.insert(new.clone(), ino);
            state.paths.insert(ino, new);
        }
        reply.ok()
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.path_of(ino).and_then(|path| self.open_backing(ino.0, &path)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let path = match self.child(parent, name) {
            Ok(path) => path,
            Err(e) => return reply.error(e),
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).mode(mode & 0o7777);
        if flags & libc::O_EXCL != 0 {
            options.create_new(true);
        }
        if let Err(e) = options.open(self.full(&path)) {
            return reply.error(errno(e));
        }
        let ino = self.state.lock().expect("faultfs state").ino(&path);
        if flags & libc::O_TRUNC != 0 {
            self.push(ino, Op::SetLen(0));
        }
        let opened = self.open_backing(ino, &path).and_then(|fh| Ok((fh, self.attr(ino, &path)?)));
        match opened {
            Ok((fh, attr)) => {
                reply.created(&TTL, &attr, Generation(0), FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let (ino, file) = match self.handle(fh) {
            Ok(handle) => handle,
            Err(e) => return reply.error(e),
        };
        let ops = self.state.lock().expect("faultfs state").dirty.get(&ino).cloned();
        match read_through(&file, offset, size as usize, ops.as_deref().unwrap_or_default()) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.handle(fh) {
            Ok((ino, _)) => {
                self.push(ino, Op::Write(offset, data.to_vec()));
                reply.written(data.len() as u32)
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // A close is no sync: the data stays unsynced, as in the page cache.
        reply.ok()
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state.lock().expect("faultfs state").handles.remove(&fh.0);
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.handle(fh) {
            Ok((ino, file)) => match self.sync(ino, &file, datasync) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            },
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let path = match self.path_of(ino) {
            Ok(path) => path,
            Err(e) => return reply.error(e),
        };
        let entries = match std::fs::read_dir(self.full(&path)) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(e)),
        };
        let mut all = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        for entry in entries.flatten() {
            let child = path.join(entry.file_name());
            let kind = entry.metadata().map(|m| kind_of(&m)).unwrap_or(FileType::RegularFile);
            let child_ino = self.state.lock().expect("faultfs state").ino(&child);
            all.push((child_ino, kind, entry.file_name()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let synced = self.path_of(ino).and_then(|path| {
            File::open(self.full(&path)).and_then(|dir| dir.sync_all()).map_err(errno)
        });
        match synced {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::statvfs(&self.backing) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let (ino, file) = match self.handle(fh) {
            Ok(handle) => handle,
            Err(e) => return reply.error(e),
        };
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        // Space is not modelled; a size change is data like any other.
        if mode & libc::FALLOC_FL_KEEP_SIZE == 0 {
            let base = file.metadata().map(|m| m.len()).unwrap_or(0);
            let now = {
                let state = self.state.lock().expect("faultfs state");
                length_of(&state, ino, base)
            };
            if offset + length > now {
                self.push(ino, Op::SetLen(offset + length));
            }
        }
        reply.ok()
    }
}

fn length_of(state: &State, ino: u64, base: u64) -> u64 {
    state.dirty.get(&ino).map_or(base, |ops| length(base, ops))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, backing, mountpoint] = args.as_slice() else {
        eprintln!("usage: faultfs BACKING MOUNTPOINT");
        std::process::exit(2);
    };
    let backing = match std::fs::canonicalize(backing) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("faultfs: {backing}: {e}");
            std::process::exit(1);
        }
    };
    let mut state = State::default();
    state.paths.insert(INodeNo::ROOT.0, PathBuf::new());
    state.inos.insert(PathBuf::new(), INodeNo::ROOT.0);
    state.next_ino = INodeNo::ROOT.0;
    let fs = FaultFs { backing, state: Mutex::new(state) };
    let mut config = Config::default();
    config.mount_options = vec![MountOption::FSName("faultfs".into())];
    if let Err(e) = fuser::mount(fs, mountpoint, &config) {
        eprintln!("faultfs: mounting on {mountpoint}: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_unsynced_writes_truncations_and_extensions_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = File::open(&path).unwrap();
        let ops = vec![Op::Write(2, b"ab".to_vec()), Op::SetLen(6), Op::Write(8, b"xy".to_vec())];
        assert_eq!(length(10, &ops), 10);
        let all = read_through(&file, 0, 64, &ops).unwrap();
        assert_eq!(all, b"01ab45\0\0xy");
        assert_eq!(read_through(&file, 5, 2, &ops).unwrap(), b"5\0");
        // Past the end, nothing.
        assert!(read_through(&file, 10, 4, &ops).unwrap().is_empty());
        // With nothing unsynced, the file as it is.
        assert_eq!(read_through(&file, 3, 3, &[]).unwrap(), b"345");
    }
}

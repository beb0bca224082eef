//! faultfs, the power-loss test's disk, does what that test relies on: after a power cut
//! (SIGKILL of faultfs, then a new mount over the same directory) a file holds exactly what was
//! synced of it, while before the cut every read saw every write. Root only (mounting FUSE).

use std::{
    fs::OpenOptions,
    io::{Read, Write},
    os::unix::fs::{FileExt, MetadataExt},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn mounted(mount: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mount = mount.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(mount.as_ref()))
}

fn power_on(backing: &Path, mount: &Path) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_faultfs"))
        .arg(backing)
        .arg(mount)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mounted(mount) {
        assert!(Instant::now() < deadline, "faultfs did not mount");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn power_off(mut child: Child, mount: &Path) {
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(Command::new("umount").arg("-l").arg(mount).status().unwrap().success());
}

fn read(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    std::fs::File::open(path).unwrap().read_to_end(&mut out).unwrap();
    out
}

#[test]
fn a_power_cut_keeps_what_was_synced_and_loses_the_rest() {
    if !is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: mounting faultfs needs root and /dev/fuse");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (backing, mount) = (dir.path().join("disk"), dir.path().join("mnt"));
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(&mount).unwrap();
    let power = power_on(&backing, &mount);

    // A synced file, then more written to it and not synced: an overwrite, an append.
    let log = mount.join("log");
    let mut file =
        OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&log).unwrap();
    file.write_all(b"synced line\n").unwrap();
    file.sync_data().unwrap();
    file.write_all_at(b"S", 0).unwrap();
    file.write_all_at(b"lost line\n", 12).unwrap();
    drop(file);
    // A file never synced, and one truncated without a sync.
    std::fs::write(mount.join("never"), b"gone").unwrap();
    let cut = mount.join("cut");
    let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(&cut).unwrap();
    file.write_all(b"0123456789").unwrap();
    file.sync_all().unwrap();
    file.set_len(4).unwrap();
    drop(file);
    // Before the cut, reads see everything.
    assert_eq!(read(&log), b"Synced line\nlost line\n");
    assert_eq!(read(&mount.join("never")), b"gone");
    assert_eq!(read(&cut), b"0123");
    // A directory made and a file renamed are names, kept at once.
    std::fs::create_dir(mount.join("sub")).unwrap();
    std::fs::rename(&cut, mount.join("sub/cut")).unwrap();

    power_off(power, &mount);
    let power = power_on(&backing, &mount);
    assert_eq!(read(&log), b"synced line\n");
    assert_eq!(read(&mount.join("never")), b"", "a name without its unsynced data");
    assert_eq!(read(&mount.join("sub/cut")), b"0123456789", "the truncation was not synced");
    power_off(power, &mount);
}

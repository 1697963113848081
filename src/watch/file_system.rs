//! Which file system a watched folder is on, and whether writes made elsewhere reach it without
//! an event here.
//!
//! Native events (inotify, FSEvents) are raised by this machine's kernel for changes made
//! through it. On a network file system (NFS, SMB/CIFS, 9p, Ceph, AFS...) or a FUSE mount
//! (sshfs, rclone, s3fs...), a file written by another machine, or on the far side of the
//! mount, changes with no event at all: such folders must be walked on a timer too (see
//! [`WatchMode`](super::WatchMode)). Their attributes may also be cached (NFS `actimeo`,
//! sshfs's attribute cache, FUSE's `attr_timeout`), which is why the completeness check looks at
//! their files afresh (`ready::inspect_fresh`).
//!
//! Linux tells the file system by `fstatfs`'s `f_type` (the magic numbers of `statfs(2)`) and
//! names it from `/proc/self/mountinfo` (`fuse.sshfs`, `nfs4`, `ext4`), matched by device
//! number; macOS by `f_fstypename`. The folder is opened without following a link (see
//! `nofollow`), as every other look at it is.

use std::fmt;
use std::io;
use std::path::Path;

/// A folder's file system, as far as watching it is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSystem {
    /// What the system calls it: `ext4`, `nfs4`, `fuse.sshfs`, `smbfs`, `apfs`.
    pub name: String,
    /// Files can change without an event here: written by another machine, or behind a FUSE
    /// mount. Such folders are polled as well as watched, and looked at with fresh attributes.
    pub remote: bool,
}

impl fmt::Display for FileSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The file system the folder at `dir` is on (blocking: on a share that hangs, so does this).
pub fn file_system_of(dir: &Path) -> io::Result<FileSystem> {
    let fd = crate::nofollow::open_dir(dir).map_err(crate::nofollow::NoFollowError::into_io)?;
    platform::of(&fd)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod platform {
    use std::io;
    use std::os::fd::OwnedFd;

    use super::{FileSystem, classify_linux};

    pub(super) fn of(fd: &OwnedFd) -> io::Result<FileSystem> {
        let fs = rustix::fs::fstatfs(fd)?;
        // The magic numbers are 32-bit; `f_type` is a signed long on some targets, so a value
        // such as CIFS's 0xFF534D42 may come sign-extended.
        #[allow(clippy::unnecessary_cast, clippy::cast_sign_loss)]
        let magic = (fs.f_type as i64 as u64 & 0xFFFF_FFFF) as u32;
        let dev = rustix::fs::fstat(fd)?.st_dev;
        let mount_type = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|table| {
                mount_type_of(&table, rustix::fs::major(dev), rustix::fs::minor(dev))
            });
        Ok(classify_linux(magic, mount_type.as_deref()))
    }

    /// The file system type `/proc/self/mountinfo` gives the mount with this device number.
    /// A line: `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
    /// (`proc(5)`): the device is the third field, the type the first after the ` - `.
    pub(super) fn mount_type_of(table: &str, major: u32, minor: u32) -> Option<String> {
        let wanted = format!("{major}:{minor}");
        table.lines().find_map(|line| {
            let mut fields = line.split(' ');
            if fields.nth(2) != Some(wanted.as_str()) {
                return None;
            }
            let mut after = line.split(" - ").nth(1)?.split(' ');
            after.next().map(str::to_owned)
        })
    }
}

#[cfg(target_os = "macos")]
mod platform {
    use std::io;
    use std::os::fd::OwnedFd;

    use super::{FileSystem, classify_macos};

    pub(super) fn of(fd: &OwnedFd) -> io::Result<FileSystem> {
        let fs = rustix::fs::fstatfs(fd)?;
        #[allow(clippy::unnecessary_cast)]
        let bytes: Vec<u8> = fs
            .f_fstypename
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        Ok(classify_macos(&String::from_utf8_lossy(&bytes)))
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "macos")))]
mod platform {
    use std::io;
    use std::os::fd::OwnedFd;

    use super::FileSystem;

    pub(super) fn of(_fd: &OwnedFd) -> io::Result<FileSystem> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "telling the file system is done on Linux and macOS only",
        ))
    }
}

// `statfs(2)` and <linux/magic.h>. FUSE's number covers every FUSE file system; the mount table
// says which one.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
const FUSE: u32 = 0x6573_5546;

/// The magic numbers of file systems whose files other machines write, with their usual name.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
const REMOTE_MAGIC: &[(u32, &str)] = &[
    (0x6969, "nfs"),
    (0x517B, "smb"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb3"),
    (0x564C, "ncpfs"),
    (0x0102_1997, "9p"),
    (0x00C3_6400, "ceph"),
    (0x5346_414F, "afs"),
    (0x6B41_4653, "afs"),
    (0x7375_7245, "coda"),
    (0x0BD0_0BD0, "lustre"),
    (0x4750_4653, "gpfs"),
    (0x1983_0326, "beegfs"),
    (0xAAD7_AAEA, "panfs"),
    // Cluster file systems on a shared disk: other nodes write without an event here.
    (0x0116_1970, "gfs2"),
    (0x7461_636F, "ocfs2"),
    // VirtualBox shared folders: the host writes without an event in the guest.
    (0x786F_4256, "vboxsf"),
];

/// A few local names for when the mount table cannot be read.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
const LOCAL_MAGIC: &[(u32, &str)] = &[
    (0xEF53, "ext4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x0102_1994, "tmpfs"),
    (0x794C_7630, "overlay"),
    (0x2FC1_2FC1, "zfs"),
    (0xF2F5_2010, "f2fs"),
    (0x4D44, "vfat"),
    (0x2011_BAB0, "exfat"),
    (0x5346_544E, "ntfs"),
];

/// Linux: what the magic number `f_type` and the mount table's type (when known) say.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
pub(crate) fn classify_linux(magic: u32, mount_type: Option<&str>) -> FileSystem {
    let known = |table: &[(u32, &'static str)]| {
        table
            .iter()
            .find(|(number, _)| *number == magic)
            .map(|(_, name)| *name)
    };
    let remote_name = known(REMOTE_MAGIC);
    let name = mount_type
        .map(str::to_owned)
        .or_else(|| {
            remote_name
                .or_else(|| known(LOCAL_MAGIC))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            if magic == FUSE {
                "fuse".to_owned()
            } else {
                format!("file system {magic:#x}")
            }
        });
    let remote = if magic == FUSE {
        // ntfs-3g, exfat-fuse and the like serve a local disk that nothing else writes
        // ("fuseblk"); every other FUSE mount has a far side (a server, a bucket, a backing
        // folder written directly) whose changes send no event through the mount. virtiofs
        // shows FUSE's number and is a host folder the host writes.
        mount_type != Some("fuseblk")
    } else {
        remote_name.is_some()
    };
    FileSystem { name, remote }
}

/// macOS: what `f_fstypename` says (`apfs`, `smbfs`, `nfs`, `macfuse`...).
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub(crate) fn classify_macos(type_name: &str) -> FileSystem {
    const REMOTE: &[&str] = &[
        "nfs", "smbfs", "afpfs", "webdav", "cifs", "ftp", "macfuse", "osxfuse", "fusefs",
    ];
    let remote = REMOTE.contains(&type_name)
        || type_name.starts_with("fuse")
        || type_name.starts_with("osxfuse")
        || type_name.starts_with("macfuse");
    FileSystem {
        name: type_name.to_owned(),
        remote,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux(magic: u32, mount_type: Option<&str>) -> (String, bool) {
        let fs = classify_linux(magic, mount_type);
        (fs.name, fs.remote)
    }

    #[test]
    fn network_and_fuse_file_systems_are_remote_on_linux() {
        assert_eq!(linux(0x6969, Some("nfs4")), ("nfs4".into(), true));
        assert_eq!(linux(0x6969, None), ("nfs".into(), true));
        assert_eq!(linux(0x517B, None), ("smb".into(), true));
        assert_eq!(linux(0xFF53_4D42, Some("cifs")), ("cifs".into(), true));
        assert_eq!(linux(0xFE53_4D42, Some("smb3")), ("smb3".into(), true));
        assert_eq!(linux(0x0102_1997, Some("9p")), ("9p".into(), true));
        assert_eq!(linux(0x00C3_6400, Some("ceph")), ("ceph".into(), true));
        assert_eq!(linux(0x5346_414F, None), ("afs".into(), true));
        assert_eq!(linux(FUSE, Some("fuse.sshfs")), ("fuse.sshfs".into(), true));
        assert_eq!(
            linux(FUSE, Some("fuse.rclone")),
            ("fuse.rclone".into(), true)
        );
        assert_eq!(linux(FUSE, Some("virtiofs")), ("virtiofs".into(), true));
        assert_eq!(linux(FUSE, None), ("fuse".into(), true));
    }

    #[test]
    fn local_file_systems_are_not_remote_on_linux() {
        assert_eq!(linux(0xEF53, Some("ext4")), ("ext4".into(), false));
        assert_eq!(linux(0xEF53, None), ("ext4".into(), false));
        assert_eq!(linux(0x0102_1994, Some("tmpfs")), ("tmpfs".into(), false));
        assert_eq!(linux(0x9123_683E, Some("btrfs")), ("btrfs".into(), false));
        assert_eq!(
            linux(0x794C_7630, Some("overlay")),
            ("overlay".into(), false)
        );
        // A FUSE driver for a local disk (ntfs-3g): nothing else writes that disk.
        assert_eq!(linux(FUSE, Some("fuseblk")), ("fuseblk".into(), false));
        // Unknown numbers are named by their number and taken as local.
        assert_eq!(
            linux(0x1234_5678, None),
            ("file system 0x12345678".into(), false)
        );
    }

    #[test]
    fn macos_type_names() {
        for remote in ["nfs", "smbfs", "afpfs", "webdav", "macfuse", "osxfuse"] {
            assert!(classify_macos(remote).remote, "{remote}");
        }
        for local in ["apfs", "hfs", "msdos", "exfat"] {
            assert!(!classify_macos(local).remote, "{local}");
        }
        assert_eq!(classify_macos("smbfs").to_string(), "smbfs");
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn the_mount_table_names_the_mount_by_device() {
        let table = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
42 27 0:39 / /tmp/x/mnt rw,nosuid,nodev,relatime - fuse.sshfs root@127.0.0.1:/srv rw,user_id=0
43 22 0:40 / /mnt/nas rw,relatime shared:7 master:3 - nfs4 nas:/exports rw,vers=4.2
";
        assert_eq!(
            platform::mount_type_of(table, 0, 39).as_deref(),
            Some("fuse.sshfs")
        );
        assert_eq!(
            platform::mount_type_of(table, 0, 40).as_deref(),
            Some("nfs4")
        );
        assert_eq!(
            platform::mount_type_of(table, 259, 2).as_deref(),
            Some("ext4")
        );
        assert_eq!(platform::mount_type_of(table, 8, 1), None);
    }

    #[test]
    fn a_temp_folder_is_told_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let fs = file_system_of(dir.path()).unwrap();
        assert!(!fs.name.is_empty());
        assert!(file_system_of(&dir.path().join("missing")).is_err());
    }
}

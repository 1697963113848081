//! A folder served over SFTP by an sshd of its own on 127.0.0.1 and mounted with sshfs, as
//! often as a test needs (several "machines" on one share). Needs root, FUSE, sshd and sshfs;
//! [`LoopbackShare::start`] says which is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::text;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A temp folder served over SFTP by an sshd of its own on 127.0.0.1, mounted with sshfs:
/// `server` is the folder on the server side, `mount` the sshfs mount of it. Dropping it
/// unmounts the share and stops sshd, also when the test failed.
pub struct LoopbackShare {
    _dir: tempfile::TempDir,
    pub server: PathBuf,
    pub mount: PathBuf,
    sshd: Child,
    mounted: bool,
    /// The options and remote of the first mount, for [`LoopbackShare::mount_again`].
    how: (String, String),
    /// Further mounts of the same folder, unmounted on drop.
    more: Vec<PathBuf>,
}

impl LoopbackShare {
    /// [`LoopbackShare::start`], or `None` after saying (for the test's output) why the test
    /// skips.
    pub fn start_or_skip() -> Option<LoopbackShare> {
        match LoopbackShare::start() {
            Ok(share) => Some(share),
            Err(why) => {
                hotfolder::test_skipped(format_args!("no loopback sshfs share: {why}"));
                None
            }
        }
    }

    /// `Err` says why it cannot be had here (not root, no FUSE, no sshd or sshfs).
    pub fn start() -> Result<LoopbackShare, String> {
        if !is_root() {
            return Err("not running as root (sshd and FUSE mounts need it)".into());
        }
        if !Path::new("/dev/fuse").exists() {
            return Err("no /dev/fuse".into());
        }
        for tool in ["/usr/sbin/sshd", "/usr/bin/ssh-keygen"] {
            if !Path::new(tool).exists() {
                return Err(format!("{tool} is not installed (Debian: openssh-server)"));
            }
        }
        if which("sshfs").is_none() {
            return Err("sshfs is not installed (Debian: sshfs)".into());
        }
        if which("fusermount3").is_none() && which("fusermount").is_none() {
            return Err("neither fusermount3 nor fusermount is installed (Debian: fuse3)".into());
        }
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let (server, mount) = (base.join("server"), base.join("mount"));
        std::fs::create_dir_all(&server).unwrap();
        std::fs::create_dir_all(&mount).unwrap();
        for key in ["host_key", "user_key"] {
            let made = Command::new("/usr/bin/ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(base.join(key))
                .status()
                .unwrap();
            assert!(made.success(), "ssh-keygen made {key}");
        }
        std::fs::copy(base.join("user_key.pub"), base.join("authorized_keys")).unwrap();
        // Privilege separation wants this folder to exist (a package's unit makes it).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let config = base.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {b}/host_key\n\
                 AuthorizedKeysFile {b}/authorized_keys\nPidFile {b}/sshd.pid\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\n",
                b = base.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(base.join("sshd.log")).unwrap();
        let sshd = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|err| format!("cannot start sshd: {err}"))?;
        let mut share = LoopbackShare {
            server,
            mount,
            sshd,
            mounted: false,
            _dir: dir,
            how: (String::new(), String::new()),
            more: Vec::new(),
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = share.sshd.try_wait() {
                let log = std::fs::read_to_string(base.join("sshd.log")).unwrap_or_default();
                panic!("sshd exited ({status}): {log}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "sshd did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The listing is cached for 1 s at most, so a new file shows soon; attributes are
        // cached for 60 s, so a growing file read through `lstat` would keep its old size
        // between two listings: the agent must not be fooled by that.
        let options = format!(
            "port={port},IdentityFile={}/user_key,StrictHostKeyChecking=no,\
             UserKnownHostsFile=/dev/null,BatchMode=yes,dir_cache=yes,\
             dcache_dir_timeout=1,dcache_stat_timeout=60",
            base.display()
        );
        let mounted = Command::new("sshfs")
            .arg("-o")
            .arg(&options)
            .arg(format!("root@127.0.0.1:{}", share.server.display()))
            .arg(&share.mount)
            .output()
            .map_err(|err| format!("cannot run sshfs: {err}"))?;
        if !mounted.status.success() {
            return Err(format!(
                "sshfs could not mount the share: {}",
                text(&mounted.stderr)
            ));
        }
        share.mounted = true;
        share.how = (
            options,
            format!("root@127.0.0.1:{}", share.server.display()),
        );
        Ok(share)
    }

    /// One more sshfs mount of the same folder (another "machine" seeing the share), at a
    /// new mount point beside the first.
    pub fn mount_again(&mut self) -> PathBuf {
        let mount = self
            .mount
            .with_file_name(format!("mount{}", self.more.len() + 2));
        std::fs::create_dir_all(&mount).unwrap();
        let mounted = Command::new("sshfs")
            .arg("-o")
            .arg(&self.how.0)
            .arg(&self.how.1)
            .arg(&mount)
            .output()
            .unwrap();
        assert!(
            mounted.status.success(),
            "sshfs mounted the share again: {}",
            text(&mounted.stderr)
        );
        self.more.push(mount.clone());
        mount
    }

    /// Stops (`true`) or continues (`false`) the server side: sshd and its sessions' sftp
    /// servers. Stopped, the share hangs as a network share whose server went away does:
    /// every access through the mount waits.
    pub fn freeze(&self, stop: bool) {
        let signal = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        for pid in descendants_and_self(self.sshd.id() as i32) {
            // SAFETY: kill(2) with a pid of a process this share started, and a valid signal.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Drops the share's connection as a network outage does: sshd's sessions (and their sftp
    /// servers) are killed, sshd itself keeps listening. sshfs then exits and every access
    /// through the mount fails ("Transport endpoint is not connected") until
    /// [`LoopbackShare::remount`].
    pub fn cut(&self) {
        let sshd = self.sshd.id() as i32;
        for pid in descendants_and_self(sshd) {
            if pid != sshd {
                // SAFETY: kill(2) of a process below this share's sshd.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// Mounts the share again at the same mount point after [`LoopbackShare::cut`] (the dead
    /// mount is detached first).
    pub fn remount(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let (options, remote) = &self.how;
        let mounted = Command::new("sshfs")
            .arg("-o")
            .arg(options)
            .arg(remote)
            .arg(&self.mount)
            .output()
            .expect("sshfs runs");
        assert!(
            mounted.status.success(),
            "sshfs mounted the share again: {}",
            text(&mounted.stderr)
        );
        self.mounted = true;
    }

    /// Unmounts the share (`fusermount3`, or `fusermount`); `false` when neither could.
    pub fn unmount(&mut self) -> bool {
        let unmounted = ["fusermount3", "fusermount"].iter().any(|tool| {
            Command::new(tool)
                .arg("-u")
                .arg(&self.mount)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if unmounted {
            self.mounted = false;
        }
        unmounted
    }
}

/// `root` and every process below it, from `/proc/*/stat` (parent pid: the field after the
/// command name, which may itself hold spaces and parentheses).
fn descendants_and_self(root: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| {
                    let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
                    let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                    let after = &stat[stat.rfind(')')? + 1..];
                    let ppid: i32 = after.split_whitespace().nth(1)?.parse().ok()?;
                    Some((pid, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        next += 1;
    }
    found
}

impl Drop for LoopbackShare {
    fn drop(&mut self) {
        self.freeze(false);
        for mount in &self.more {
            let _ = Command::new("umount").arg("-l").arg(mount).status();
        }
        if self.mounted && !self.unmount() {
            // Still busy (a process of the failed test holds it): detach it lazily.
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|path| path.is_file())
    })
}

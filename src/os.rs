//! What the process does to itself before it reads anything a peer sends:
//! raise its file-descriptor limit, give up root for `User` once the ports
//! are bound, and make sure its private directories (`DataDirectory`,
//! `keys/`) are its own (C tor: set_max_file_descriptors, switch_id,
//! check_private_dir).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Below this many descriptors an exit runs out of sockets under an
/// ordinary day's load (Debian's tor unit sets 65536).
pub const FD_LIMIT_WANTED: u64 = 65536;

#[derive(Debug, Error)]
pub enum ProcessError {
    #[error("cannot read the file descriptor limit: {0}")]
    FdLimit(io::Error),
    #[error("User {0}: no such user")]
    NoSuchUser(String),
    #[error("User {user}: cannot look the user up: {source}")]
    UserLookup { user: String, source: io::Error },
    #[error("User {user}: cannot switch to it ({step}: {source}); to use User, start oxit as root")]
    Switch {
        user: String,
        step: &'static str,
        source: io::Error,
    },
    #[error("User {0}: root privileges could be regained after switching; refusing to run")]
    Regained(String),
    #[error("directory {path} cannot be used: {source}")]
    DirIo { path: PathBuf, source: io::Error },
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error(
        "{path} is not owned by this user ({running}, {running_uid}) but by {owner} ({owner_uid}); \
         perhaps oxit runs as the wrong user (chown it, or set User)"
    )]
    WrongOwner {
        path: PathBuf,
        running: String,
        running_uid: u32,
        owner: String,
        owner_uid: u32,
    },
}

/// The descriptor limit before and after [`raise_fd_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

impl FdLimit {
    pub fn is_low(&self) -> bool {
        self.soft < FD_LIMIT_WANTED
    }
}

/// `secs` (since the epoch) in local time, as C's tor_localtime_r.
pub fn local_tm(secs: u64) -> Option<libc::tm> {
    let t = libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX);
    // SAFETY: tm is plain data; localtime_r only writes into it and is
    // the thread-safe form; both pointers are valid for the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = !unsafe { libc::localtime_r(&t, &mut tm) }.is_null();
    ok.then_some(tm)
}

/// The machine's physical memory in bytes, if the kernel says
/// (for C tor's default `MaxMemInQueues`).
pub fn total_ram() -> Option<u64> {
    // SAFETY: an all-zero sysinfo is a valid value of the plain C struct,
    // and sysinfo(2) only writes into the one it is given.
    let (rc, si) = unsafe {
        let mut si: libc::sysinfo = std::mem::zeroed();
        (libc::sysinfo(&mut si), si)
    };
    if rc != 0 {
        return None;
    }
    #[allow(clippy::useless_conversion)] // c_ulong is u32 on 32-bit targets
    let total = u64::from(si.totalram);
    total.checked_mul(u64::from(si.mem_unit.max(1)))
}

/// The soft `RLIMIT_NOFILE`: how many descriptors the process may open.
pub fn nofile_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0).then_some(rl.rlim_cur)
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (C raises it to what
/// it may; a soft limit of 1024, systemd's default, is far too few for an
/// exit).
pub fn raise_fd_limit() -> Result<FdLimit, ProcessError> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(ProcessError::FdLimit(io::Error::last_os_error()));
    }
    let soft_before = rl.rlim_cur;
    if rl.rlim_cur < rl.rlim_max {
        let want = libc::rlimit {
            rlim_cur: rl.rlim_max,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            rl.rlim_cur = rl.rlim_max;
        } else {
            tracing::warn!(
                "cannot raise the file descriptor limit from {} to {}: {}",
                rl.rlim_cur,
                rl.rlim_max,
                io::Error::last_os_error()
            );
        }
    }
    Ok(FdLimit {
        soft_before,
        soft: rl.rlim_cur,
        hard: rl.rlim_max,
    })
}

/// A user's ids, from the password database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserIds {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// getpwnam_r, without the static buffer of getpwnam.
pub fn lookup_user(name: &str) -> Result<UserIds, ProcessError> {
    let c = CString::new(name).map_err(|_| ProcessError::NoSuchUser(name.to_owned()))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: passwd is plain data; getpwnam_r fills it, pointing into
        // `buf`, which outlives every use below.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; buf.len() is its size.
        let rc = unsafe {
            libc::getpwnam_r(
                c.as_ptr(),
                &mut pw,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut out,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(ProcessError::UserLookup {
                user: name.to_owned(),
                source: io::Error::from_raw_os_error(rc),
            });
        }
        if out.is_null() {
            return Err(ProcessError::NoSuchUser(name.to_owned()));
        }
        return Ok(UserIds {
            name: name.to_owned(),
            uid: pw.pw_uid,
            gid: pw.pw_gid,
        });
    }
}

/// A uid's name, for messages.
fn user_name(uid: u32) -> String {
    user_name_of(uid).unwrap_or_else(|| "<unknown>".to_owned())
}

/// The name of user `uid`, if the user database has one.
pub(crate) fn user_name_of(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: as in lookup_user.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call.
    let rc =
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// switch_id: supplementary groups, gid and uid of `user`, for every
/// thread (glibc applies set*id to all of them), then a check that root
/// cannot be regained. Capabilities go with root; oxit does not rebind
/// ports, so it keeps none (C's KeepBindCapabilities).
pub fn switch_user(user: &str) -> Result<UserIds, ProcessError> {
    let ids = lookup_user(user)?;
    let step_err = |step: &'static str| ProcessError::Switch {
        user: user.to_owned(),
        step,
        source: io::Error::last_os_error(),
    };
    // SAFETY: plain syscalls on our own credentials.
    unsafe {
        let old_uid = libc::getuid();
        let old_gid = libc::getgid();
        if libc::setgroups(1, &ids.gid) != 0 {
            return Err(step_err("setgroups"));
        }
        if libc::setresgid(ids.gid, ids.gid, ids.gid) != 0 {
            return Err(step_err("setgid"));
        }
        if libc::setresuid(ids.uid, ids.uid, ids.uid) != 0 {
            return Err(step_err("setuid"));
        }
        if ids.uid != 0 {
            let regained_gid =
                ids.gid != old_gid && (libc::setgid(old_gid) == 0 || libc::setegid(old_gid) == 0);
            let regained_uid =
                ids.uid != old_uid && (libc::setuid(old_uid) == 0 || libc::seteuid(old_uid) == 0);
            if regained_gid || regained_uid {
                return Err(ProcessError::Regained(user.to_owned()));
            }
        }
    }
    Ok(ids)
}

/// check_private_dir with CPD_CREATE: create `dir` (mode 0700) if it is
/// missing; refuse a symbolic link, a non-directory, or a directory owned
/// by another user than the one we run as; and take group and other
/// permissions off one that has them, with a warning.
pub fn check_private_dir(dir: &Path) -> Result<(), ProcessError> {
    let io_err = |source| ProcessError::DirIo {
        path: dir.to_path_buf(),
        source,
    };
    let fd = match open_nofollow(dir) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(ProcessError::NotADirectory(dir.to_path_buf()));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::info!("Creating directory {}", dir.display());
            fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(dir)
                .map_err(io_err)?;
            open_nofollow(dir).map_err(io_err)?
        }
        Err(e) => return Err(io_err(e)),
    };
    let file = fs::File::from(fd);
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_dir() {
        return Err(ProcessError::NotADirectory(dir.to_path_buf()));
    }
    // SAFETY: geteuid cannot fail.
    let running_uid = unsafe { libc::geteuid() };
    if meta.uid() != running_uid {
        return Err(ProcessError::WrongOwner {
            path: dir.to_path_buf(),
            running: user_name(running_uid),
            running_uid,
            owner: user_name(meta.uid()),
            owner_uid: meta.uid(),
        });
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!("Fixing permissions on directory {}", dir.display());
        file.set_permissions(fs::Permissions::from_mode((mode | 0o700) & !0o077 & 0o7777))
            .map_err(io_err)?;
    }
    Ok(())
}

/// open(O_NOFOLLOW) as C does: a symbolic link fails (ELOOP).
fn open_nofollow(dir: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    // SAFETY: c is a valid C string; the fd returned is ours to own.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_DIRECTORY,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory for one test, removed when it ends.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let d = std::env::temp_dir().join(format!("oxit-os-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            Scratch(d)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn private_dir_is_created_tightened_and_checked() {
        let root = Scratch::new("private");
        let d = root.path().join("data/keys");
        check_private_dir(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );

        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        check_private_dir(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );

        let file = root.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(matches!(
            check_private_dir(&file),
            Err(ProcessError::NotADirectory(_))
        ));

        let link = root.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        let e = check_private_dir(&link).unwrap_err();
        assert!(e.to_string().contains("link"), "{e}");
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        // As root, a fresh directory given away to nobody; otherwise /,
        // which is root's.
        let root = Scratch::new("owner");
        let d = root.path().join("theirs");
        fs::create_dir(&d).unwrap();
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        let other = if me == 0 { 65534 } else { 0 };
        if me == 0 {
            std::os::unix::fs::chown(&d, Some(other), None).unwrap();
            let e = check_private_dir(&d).unwrap_err();
            assert!(
                matches!(e, ProcessError::WrongOwner { owner_uid, .. } if owner_uid == other),
                "{e}"
            );
        } else {
            let e = check_private_dir(Path::new("/")).unwrap_err();
            assert!(
                matches!(e, ProcessError::WrongOwner { owner_uid: 0, .. }),
                "{e}"
            );
        }
    }

    #[test]
    fn users_are_looked_up() {
        assert_eq!(lookup_user("root").unwrap().uid, 0);
        assert!(matches!(
            lookup_user("no-such-user-oxit"),
            Err(ProcessError::NoSuchUser(_))
        ));
    }

    #[test]
    fn fd_limit_goes_to_the_hard_limit() {
        let l = raise_fd_limit().unwrap();
        assert_eq!(l.soft, l.hard);
        assert!(l.soft >= l.soft_before);
    }
}

//! The compile sandbox's OS isolation (Linux): rustc runs in namespaces of its own, in a root file
//! system that holds nothing but the toolchain (read-only at `/rust`), the guest prelude
//! (read-only at `/prelude`), its job directory (at `/snippet`, the only place it may write), the
//! shared libraries the toolchain's binaries load, and `/dev/null`; no `/proc`, no network (a
//! network namespace with no interface up), and an unprivileged user: the gateway's own uid in a
//! user namespace, or `nobody` when the gateway runs as root.
//!
//! This is what makes a snippet's compile time harmless: whatever path a snippet gets rustc to
//! open (`#[path]`, `include_str!`, a macro that builds either where the guard cannot see it),
//! the host's files, other processes and other sessions' job directories are simply not there.
//!
//! Everything the child does between fork and exec is prepared before the fork ([`Jail`] holds
//! C strings only), so the child makes raw system calls and allocates nothing.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How rustc is isolated from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Namespaces: as root, mount and network namespaces and the `nobody` user; otherwise a user
    /// namespace (which needs no privilege) holding the same.
    #[default]
    Namespaces,
    /// Namespaces through a user namespace even when running as root (what a gateway that is not
    /// root gets; lets tests cover that path on root CI machines).
    UserNamespace,
    /// No OS isolation: only the guard, the cleared environment and the limits. For a gateway
    /// that only trusted users reach, on hosts that refuse namespaces.
    None,
}

/// Where rustc sees the toolchain inside the jail.
pub const SYSROOT: &str = "/rust";
/// Where rustc sees the prelude rlib inside the jail.
pub const PRELUDE: &str = "/prelude";
/// Where rustc sees its job directory (and works) inside the jail.
pub const WORK: &str = "/snippet";

/// The user rustc runs as when the gateway is root.
const NOBODY: u32 = 65534;

/// The shared libraries outside `sysroot` that `binaries` load, as `ldd` resolves them: (the path
/// the loader asks for, the file it is). Found once per toolchain.
///
/// # Errors
/// When `ldd` cannot run.
pub fn libraries(binaries: &[PathBuf], sysroot: &Path) -> Result<Vec<(PathBuf, PathBuf)>, String> {
    let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
    for binary in binaries {
        let output = Command::new("ldd")
            .arg(binary)
            .env_clear()
            .output()
            .map_err(|e| format!("cannot run ldd to find the libraries rustc loads: {e}"))?;
        if !output.status.success() {
            // Not a dynamic executable (a script, a static binary): nothing to load.
            continue;
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`.
            let path = line.split("=>").last().unwrap_or_default().split_whitespace().next().unwrap_or_default();
            let path = Path::new(path);
            if !path.is_absolute() || path.starts_with(sysroot) || found.iter().any(|(p, _)| p == path) {
                continue;
            }
            let file = path.canonicalize().map_err(|e| format!("{}: {e}", path.display()))?;
            if file.starts_with(sysroot.canonicalize().unwrap_or_default()) {
                continue;
            }
            found.push((path.to_path_buf(), file));
        }
    }
    // The loader's cache lets it find them at the same paths; it lists library paths only.
    let cache = Path::new("/etc/ld.so.cache");
    if cache.is_file() {
        found.push((cache.to_path_buf(), cache.to_path_buf()));
    }
    Ok(found)
}

/// One bind mount into the jail.
#[derive(Debug)]
struct Bind {
    source: CString,
    target: CString,
    /// Flags of the read-only (or, for the work directory, nosuid/nodev) remount, including the
    /// flags of the source's mount that a user namespace may not drop.
    remount: libc::c_ulong,
}

/// Who rustc runs as.
#[derive(Debug)]
enum User {
    /// Root drops to `nobody` after mounting.
    Drop { uid: libc::uid_t, gid: libc::gid_t },
    /// A user namespace mapping the gateway's uid and gid to themselves.
    Namespace { uid_map: CString, gid_map: CString },
}

/// Everything the child does to enter its jail, prepared before the fork.
#[derive(Debug)]
pub struct Jail {
    /// The empty host directory the jail's root (a tmpfs) is mounted on.
    root: CString,
    /// Directories to make inside the tmpfs (parents first), then files to make as mount points.
    dirs: Vec<CString>,
    files: Vec<CString>,
    binds: Vec<Bind>,
    user: User,
    /// The jail's `WORK`, to `chdir` into.
    work: CString,
}

impl Jail {
    /// A jail on the empty directory `root` with the toolchain at `sysroot`, `libraries` (from
    /// [`libraries`]), the work directory `work` (writable) and the prelude directory `prelude`
    /// (read-only) when given.
    ///
    /// # Errors
    /// A path that cannot be a C string or inspected.
    pub fn new(
        isolation: Isolation,
        root: &Path,
        sysroot: &Path,
        libraries: &[(PathBuf, PathBuf)],
        work: &Path,
        prelude: Option<&Path>,
    ) -> io::Result<Self> {
        let mut jail = Self {
            root: c_path(root)?,
            dirs: Vec::new(),
            files: Vec::new(),
            binds: Vec::new(),
            user: if isolation == Isolation::Namespaces && is_root() {
                User::Drop { uid: NOBODY, gid: NOBODY }
            } else {
                // SAFETY: getuid/getgid cannot fail.
                let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
                User::Namespace {
                    uid_map: cstring(format!("{uid} {uid} 1"))?,
                    gid_map: cstring(format!("{gid} {gid} 1"))?,
                }
            },
            work: cstring(WORK.to_owned())?,
        };
        jail.bind(root, sysroot, Path::new(SYSROOT), false, false)?;
        jail.bind(root, work, Path::new(WORK), true, false)?;
        if let Some(prelude) = prelude {
            jail.bind(root, prelude, Path::new(PRELUDE), false, false)?;
        }
        jail.bind(root, Path::new("/dev/null"), Path::new("/dev/null"), true, true)?;
        for (inside, file) in libraries {
            jail.bind(root, file, inside, false, true)?;
        }
        Ok(jail)
    }

    /// Whether the jail makes rustc `nobody` (its writable directory must then be `nobody`'s).
    pub fn drops_to_nobody(&self) -> bool {
        matches!(self.user, User::Drop { .. })
    }

    fn bind(&mut self, root: &Path, source: &Path, inside: &Path, writable: bool, file: bool) -> io::Result<()> {
        let target = root.join(inside.strip_prefix("/").unwrap_or(inside));
        let mut parents: Vec<&Path> = target.ancestors().skip(1).take_while(|p| *p != root).collect();
        parents.reverse();
        for dir in parents.into_iter().chain((!file).then_some(target.as_path())) {
            let dir = c_path(dir)?;
            if !self.dirs.contains(&dir) {
                self.dirs.push(dir);
            }
        }
        if file {
            self.files.push(c_path(&target)?);
        }
        let mut remount = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | locked_flags(source)?;
        if !writable {
            remount |= libc::MS_RDONLY;
        }
        if source != Path::new("/dev/null") {
            remount |= libc::MS_NODEV;
        }
        self.binds.push(Bind { source: c_path(source)?, target: c_path(&target)?, remount });
        Ok(())
    }

    /// Makes `command` enter the jail between fork and exec.
    pub fn apply(self, command: &mut Command) {
        use std::os::unix::process::CommandExt;
        // SAFETY: `enter` only makes system calls on memory prepared before the fork; it
        // allocates nothing and takes no lock.
        unsafe {
            command.pre_exec(move || self.enter());
        }
    }

    /// In the child: namespaces, the tmpfs root with its binds, `pivot_root`, the user.
    fn enter(&self) -> io::Result<()> {
        let mut namespaces = libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        if matches!(self.user, User::Namespace { .. }) {
            namespaces |= libc::CLONE_NEWUSER;
        }
        check(unsafe { libc::unshare(namespaces) })?;
        if let User::Namespace { uid_map, gid_map } = &self.user {
            write_file(c"/proc/self/setgroups", c"deny")?;
            write_file(c"/proc/self/uid_map", uid_map)?;
            write_file(c"/proc/self/gid_map", gid_map)?;
        }
        let none = std::ptr::null::<libc::c_char>();
        // Nothing mounted here propagates to the host.
        check(unsafe { libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) })?;
        check(unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                self.root.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"size=64k,mode=755".as_ptr().cast(),
            )
        })?;
        for dir in &self.dirs {
            let made = unsafe { libc::mkdir(dir.as_ptr(), 0o755) };
            if made != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                return Err(io::Error::last_os_error());
            }
        }
        for file in &self.files {
            let fd =
                check(unsafe { libc::open(file.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644) })?;
            unsafe { libc::close(fd) };
        }
        for bind in &self.binds {
            let flags = libc::MS_BIND | libc::MS_REC;
            check(unsafe { libc::mount(bind.source.as_ptr(), bind.target.as_ptr(), none, flags, std::ptr::null()) })?;
            check(unsafe { libc::mount(none, bind.target.as_ptr(), none, bind.remount, std::ptr::null()) })?;
        }
        // The tmpfs becomes `/`; the host's root is detached and gone from view.
        check(unsafe { libc::chdir(self.root.as_ptr()) })?;
        check(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } as libc::c_int)?;
        check(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) })?;
        let root_flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
        check(unsafe { libc::mount(none, c"/".as_ptr(), none, root_flags, std::ptr::null()) })?;
        check(unsafe { libc::chdir(self.work.as_ptr()) })?;
        if let User::Drop { uid, gid } = self.user {
            check(unsafe { libc::setgroups(0, std::ptr::null()) })?;
            check(unsafe { libc::setresgid(gid, gid, gid) })?;
            check(unsafe { libc::setresuid(uid, uid, uid) })?;
        }
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
        Ok(())
    }
}

/// Gives `dir` and everything in it to `nobody`, so a jail that drops to it can write there.
///
/// # Errors
/// When a `chown` fails.
pub fn give_to_nobody(dir: &Path) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(NOBODY), Some(NOBODY))?;
    if dir.is_dir() && !dir.is_symlink() {
        for entry in std::fs::read_dir(dir)? {
            give_to_nobody(&entry?.path())?;
        }
    }
    Ok(())
}

/// Whether the gateway runs as root (and so drops rustc to `nobody`).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The flags of the mount `path` is on that a bind of it must keep (a user namespace may not
/// clear them: `nosuid`, `nodev`, `noexec` and the access-time ones).
fn locked_flags(path: &Path) -> io::Result<libc::c_ulong> {
    let c = c_path(path)?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid C string and a pointer to space for one statvfs.
    check(unsafe { libc::statvfs(c.as_ptr(), stat.as_mut_ptr()) })?;
    // SAFETY: statvfs succeeded and filled it.
    let flag = unsafe { stat.assume_init() }.f_flag;
    let pairs = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    let flags = pairs.iter().filter(|(st, _)| flag & st != 0).fold(0, |flags, (_, ms)| flags | ms);
    // None of the access-time flags means strictatime, which a remount must then ask for.
    let atime = libc::MS_NOATIME | libc::MS_RELATIME;
    Ok(if flags & atime == 0 { flags | libc::MS_STRICTATIME } else { flags })
}

fn write_file(path: &std::ffi::CStr, text: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: valid C strings; the descriptor is closed on every path.
    unsafe {
        let fd = check(libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC))?;
        let bytes = text.to_bytes();
        let written = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        libc::close(fd);
        if written != bytes.len() as isize {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(result) }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other(format!("{} has a NUL byte", path.display())))
}

fn cstring(text: String) -> io::Result<CString> {
    CString::new(text).map_err(io::Error::other)
}

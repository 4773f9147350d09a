//! Dropping root: `--run-as USER` switches to that user after the listeners are bound, keeping
//! only CAP_NET_RAW, and only when raw sockets are still needed.
//!
//! Owns the user lookup, the setgroups/setgid/setuid sequence with `PR_SET_KEEPCAPS`, and the
//! final capability set (`capset`). It decides whether CAP_NET_RAW is needed from
//! `net.ipv4.ping_group_range`: if the new group may open ping sockets, every probe except
//! IPv4 `dont_fragment` works without it. Nothing here opens sockets.

use std::ffi::CString;
use std::io;

/// CAP_NET_RAW's bit number (linux/capability.h).
const CAP_NET_RAW: u32 = 13;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// What `--run-as` ended up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub kept_net_raw: bool,
}

/// Looks up `user` (a name or a numeric uid) in the password database: (uid, primary gid).
fn lookup_user(user: &str) -> io::Result<(u32, u32)> {
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = if let Ok(uid) = user.parse::<u32>() {
        // SAFETY: all pointers are valid for the duration of the call; buffer length matches.
        unsafe {
            libc::getpwuid_r(
                uid,
                &mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut result,
            )
        }
    } else {
        let name = CString::new(user).map_err(|_| io::Error::other("user name contains NUL"))?;
        // SAFETY: as above; name is NUL-terminated.
        unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut result,
            )
        }
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if result.is_null() {
        return Err(io::Error::other(format!("no such user {user:?}")));
    }
    Ok((entry.pw_uid, entry.pw_gid))
}

/// Whether `gid` lies inside `net.ipv4.ping_group_range` (so ping sockets work for it).
pub fn ping_sockets_allowed_for(gid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range") else {
        return false;
    };
    let mut bounds = text
        .split_whitespace()
        .filter_map(|v| v.parse::<u64>().ok());
    match (bounds.next(), bounds.next()) {
        (Some(low), Some(high)) => low <= u64::from(gid) && u64::from(gid) <= high,
        _ => false,
    }
}

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let error = io::Error::last_os_error();
        Err(io::Error::new(error.kind(), format!("{what}: {error}")))
    }
}

/// Switches the whole process to `user`. Call it before any other thread exists that must keep
/// root (Tokio's workers are fine: setuid/capset below go through the C library, which applies
/// set*id to all threads; capset is per-thread, so call this before the runtime starts).
pub fn drop_to(user: &str) -> io::Result<Dropped> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(io::Error::other(
            "--run-as needs meshprobe to be started as root",
        ));
    }
    let (uid, gid) = lookup_user(user)?;
    if uid == 0 {
        return Err(io::Error::other(format!(
            "--run-as {user:?} is root; name an unprivileged user"
        )));
    }
    let keep_net_raw = !ping_sockets_allowed_for(gid);
    // SAFETY: plain system calls on this process with valid arguments.
    unsafe {
        check(
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0),
            "prctl(PR_SET_KEEPCAPS)",
        )?;
        let groups = [gid];
        check(libc::setgroups(1, groups.as_ptr()), "setgroups")?;
        check(libc::setresgid(gid, gid, gid), "setresgid")?;
        check(libc::setresuid(uid, uid, uid), "setresuid")?;
        check(
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0),
            "prctl(PR_SET_KEEPCAPS)",
        )?;
    }
    let mask = if keep_net_raw { 1u32 << CAP_NET_RAW } else { 0 };
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: mask,
            permitted: mask,
            inheritable: 0,
        },
        CapData::default(),
    ];
    // SAFETY: header and data are valid v3 capability structures (two data words).
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    check(rc as libc::c_int, "capset")?;
    // SAFETY: prctl with constant arguments.
    check(
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
        "prctl(PR_SET_NO_NEW_PRIVS)",
    )?;
    Ok(Dropped {
        user: user.to_string(),
        uid,
        gid,
        kept_net_raw: keep_net_raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_missing_users_are_looked_up_or_refused() {
        assert_eq!(lookup_user("root").map(|(uid, _)| uid).ok(), Some(0));
        assert_eq!(lookup_user("0").map(|(uid, _)| uid).ok(), Some(0));
        assert!(lookup_user("no-such-user-meshprobe").is_err());
        assert!(lookup_user("bad\0name").is_err());
    }
}

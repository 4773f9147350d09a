//! Dropping root: `--run-as USER` switches to that user after the listeners are bound, keeping
//! only CAP_NET_RAW, and only when raw sockets are still needed.
//!
//! Owns the user lookup, the switch to the user (`initgroups`, then `setresgid`/`setresuid`
//! with `PR_SET_KEEPCAPS`, through `nix`), and the capability sets afterwards (through `caps`):
//! the bounding set is cut to what is kept before the switch, the permitted and effective sets
//! to the same after it, the inheritable and ambient sets are emptied, and `no_new_privs` is
//! set. It decides whether CAP_NET_RAW is needed from `net.ipv4.ping_group_range`: if the
//! user's group may open ping sockets, every probe except IPv4 `dont_fragment` works without
//! it. Nothing here opens sockets, and nothing here needs `unsafe`.

use std::ffi::CString;
use std::io;

use caps::{CapSet, Capability, CapsHashSet};
use nix::sys::prctl;
use nix::unistd::{self, Uid, User};

/// What `--run-as` ended up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub kept_net_raw: bool,
}

/// Looks up `user` (a name or a numeric uid) in the password database.
fn lookup_user(user: &str) -> io::Result<User> {
    let found = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(user),
    };
    found
        .map_err(|errno| io::Error::other(format!("cannot look up user {user:?}: {errno}")))?
        .ok_or_else(|| io::Error::other(format!("no such user {user:?}")))
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

/// Names the step that failed: "setresuid: Operation not permitted".
fn step<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> io::Error {
    move |error| io::Error::other(format!("{what}: {error}"))
}

/// Cuts the bounding set down to `kept`. Needs CAP_SETPCAP, so call it while still root.
fn limit_bounding_set(kept: &CapsHashSet) -> io::Result<()> {
    for capability in caps::all().difference(kept) {
        if caps::has_cap(None, CapSet::Bounding, *capability).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, *capability).map_err(step("PR_CAPBSET_DROP"))?;
        }
    }
    Ok(())
}

/// Switches the whole process to `user`. Call it before any other thread exists: the C
/// library applies set*id to every thread, but the capability sets are per thread, so
/// threads started earlier would keep root's.
pub fn drop_to(user: &str) -> io::Result<Dropped> {
    if !unistd::geteuid().is_root() {
        return Err(io::Error::other(
            "--run-as needs meshprobe to be started as root",
        ));
    }
    let account = lookup_user(user)?;
    if account.uid.is_root() {
        return Err(io::Error::other(format!(
            "--run-as {user:?} is root; name an unprivileged user"
        )));
    }
    let (uid, gid) = (account.uid, account.gid);
    let keep_net_raw = !ping_sockets_allowed_for(gid.as_raw());
    let kept: CapsHashSet = if keep_net_raw {
        CapsHashSet::from([Capability::CAP_NET_RAW])
    } else {
        CapsHashSet::new()
    };
    limit_bounding_set(&kept)?;
    prctl::set_keepcaps(true).map_err(step("prctl(PR_SET_KEEPCAPS)"))?;
    let name = CString::new(account.name.as_str()).map_err(step("user name"))?;
    // The primary group plus every group that lists the user, as login(1) would set them.
    unistd::initgroups(&name, gid).map_err(step("initgroups"))?;
    unistd::setresgid(gid, gid, gid).map_err(step("setresgid"))?;
    unistd::setresuid(uid, uid, uid).map_err(step("setresuid"))?;
    prctl::set_keepcaps(false).map_err(step("prctl(PR_SET_KEEPCAPS)"))?;
    // Permitted before effective: the effective set must stay a subset of the permitted one.
    caps::set(None, CapSet::Permitted, &kept).map_err(step("capset(permitted)"))?;
    caps::set(None, CapSet::Effective, &kept).map_err(step("capset(effective)"))?;
    caps::clear(None, CapSet::Inheritable).map_err(step("capset(inheritable)"))?;
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, CapSet::Ambient).map_err(step("PR_CAP_AMBIENT_CLEAR_ALL"))?;
    }
    prctl::set_no_new_privs().map_err(step("prctl(PR_SET_NO_NEW_PRIVS)"))?;
    Ok(Dropped {
        user: user.to_string(),
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        kept_net_raw: keep_net_raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_missing_users_are_looked_up_or_refused() {
        assert_eq!(lookup_user("root").map(|u| u.uid.as_raw()).ok(), Some(0));
        assert_eq!(
            lookup_user("0").map(|u| u.name).ok().as_deref(),
            Some("root")
        );
        assert!(lookup_user("no-such-user-meshprobe").is_err());
        assert!(lookup_user("bad\0name").is_err());
    }
}

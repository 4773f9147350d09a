//! The process's own calls into the C library: the open-file limit, malloc tuning and trimming,
//! `sysconf` values, interface indexes and the sockets of systemd socket activation.
//!
//! Owns every such call outside the ICMP sockets (`icmp::socket`) and `--run-as`
//! (`privileges`, which goes through `nix` and `caps`). Where `nix` wraps a call safely it is
//! used; what it lacks (glibc's malloc controls, `if_nametoindex` without nix's socket
//! feature) is called through `libc` here. This and the ICMP socket code are the only places
//! the crate allows `unsafe` (the crate roots deny it), and every `unsafe` block says why it is
//! sound. Safe wrappers only: nothing here hands out raw pointers or descriptors.

#![allow(unsafe_code)]

use std::ffi::CStr;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::unistd::{SysconfVar, sysconf};

/// Raises the soft open-file limit to the hard limit (as Go does at startup), so that
/// thousands of concurrent scrapes do not run out of descriptors. Best effort: on failure the
/// limit stays as it was.
pub fn raise_open_file_limit() {
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Caps glibc's malloc arenas at `arenas`. More arenas than threads that allocate only
/// fragment the heap and raise RSS.
pub fn limit_malloc_arenas(arenas: i32) {
    // SAFETY: mallopt only changes a malloc tuning parameter; it takes no pointers and has no
    // memory-safety preconditions.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

/// Gives memory freed after a large scrape back to the operating system, so RSS does not stay
/// at its high-water mark (glibc keeps freed heap otherwise).
pub fn release_freed_memory() {
    // SAFETY: malloc_trim takes no pointers and may be called at any time, from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Clock ticks per second (`_SC_CLK_TCK`), the unit of the times in `/proc/self/stat`.
pub fn clock_ticks_per_second() -> Option<u64> {
    sysconf_value(SysconfVar::CLK_TCK)
}

/// The page size in bytes (`_SC_PAGESIZE`), the unit of RSS in `/proc/self/stat`.
pub fn page_size() -> Option<u64> {
    sysconf_value(SysconfVar::PAGE_SIZE)
}

fn sysconf_value(variable: SysconfVar) -> Option<u64> {
    sysconf(variable)
        .ok()
        .flatten()
        .and_then(|value| u64::try_from(value).ok())
        .filter(|value| *value > 0)
}

/// The index of the interface named `name`, or `None` if there is no such interface.
pub fn interface_index(name: &CStr) -> Option<u32> {
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call, which only reads
    // it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The TCP listening sockets systemd passed by socket activation (`LISTEN_PID`, `LISTEN_FDS`,
/// descriptors from 3), for `--web.systemd-socket`. Taken at most once per process; each is
/// set non-blocking and close-on-exec.
pub fn systemd_listeners() -> Result<Vec<std::net::TcpListener>, String> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::sync::atomic::{AtomicBool, Ordering};
    static TAKEN: AtomicBool = AtomicBool::new(false);
    const FIRST_FD: i32 = 3;
    let pid = std::env::var("LISTEN_PID").map_err(|_| {
        "--web.systemd-socket: LISTEN_PID is not set (start meshprobe from a systemd .socket unit)"
            .to_string()
    })?;
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Err(format!(
            "--web.systemd-socket: LISTEN_PID={pid} is not this process ({})",
            std::process::id()
        ));
    }
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .filter(|count| (1..=1024).contains(count))
        .ok_or("--web.systemd-socket: LISTEN_FDS names no sockets")?;
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err("--web.systemd-socket: the sockets were already taken".into());
    }
    let mut listeners = Vec::new();
    for fd in FIRST_FD..FIRST_FD + count {
        // SAFETY: F_GETFD only reads the descriptor's flags; it fails with EBADF for a
        // descriptor that is not open, which is how we check it before taking it.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(format!("--web.systemd-socket: descriptor {fd} is not open"));
        }
        // SAFETY: systemd passed descriptors FIRST_FD..FIRST_FD+LISTEN_FDS to this process
        // (LISTEN_PID matched) and nothing else in it owns them: TAKEN makes sure they are
        // wrapped at most once, and the wrapper becomes their only owner.
        let socket = socket2::Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let is_tcp_listener = socket.r#type().is_ok_and(|t| t == socket2::Type::STREAM)
            && socket.is_listener().unwrap_or(false)
            && socket.local_addr().is_ok_and(|a| a.as_socket().is_some());
        if !is_tcp_listener {
            return Err(format!(
                "--web.systemd-socket: descriptor {fd} is not a listening TCP socket"
            ));
        }
        socket
            .set_nonblocking(true)
            .and_then(|()| socket.set_cloexec(true))
            .map_err(|e| format!("--web.systemd-socket: descriptor {fd}: {e}"))?;
        listeners.push(socket.into());
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysconf_values_and_interface_indexes() {
        assert!(clock_ticks_per_second().is_some_and(|ticks| ticks > 0));
        assert!(page_size().is_some_and(|page| page.is_power_of_two()));
        assert_eq!(interface_index(c"lo"), Some(1));
        assert_eq!(interface_index(c"no-such-if0"), None);
    }

    #[test]
    fn malloc_controls_and_the_file_limit_do_not_fail() {
        limit_malloc_arenas(2);
        release_freed_memory();
        raise_open_file_limit();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        assert_eq!(soft, hard);
    }
}

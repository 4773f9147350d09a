//! Per-unit network namespaces for the charm simulator.
//!
//! Owns creating, re-addressing and deleting the `mpc-*` namespaces that give each simulated unit
//! its own interface layout (what the charm sees through getifaddrs), and starting a hook inside
//! one (`apply_fd`). Every interface is a veth pair whose two ends both live in the unit's
//! namespace and are up, so the kernel reports it operationally up. Only 198.18.0.0/15 and
//! 2001:2::/48 are used (DESIGN.md "Test network rules"). Namespaces are deleted on drop. It
//! knows nothing about Juju.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// One interface of a unit: a name (the end the charm sees; its veth peer is `<name>p`) and the
/// addresses with their prefix, e.g. `198.18.10.5/24`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub addrs: Vec<ipnet::IpNet>,
}

impl Iface {
    pub fn new(name: &str, addrs: &[&str]) -> Iface {
        let addrs = addrs
            .iter()
            .map(|a| {
                let net: ipnet::IpNet =
                    a.parse().unwrap_or_else(|e| panic!("bad address {a}: {e}"));
                assert!(in_test_ranges(net.addr()), "{a} is outside the test ranges");
                net
            })
            .collect();
        Iface {
            name: name.to_string(),
            addrs,
        }
    }
}

/// True for addresses in 198.18.0.0/15 or 2001:2::/48.
pub fn in_test_ranges(ip: std::net::IpAddr) -> bool {
    let v4: ipnet::IpNet = "198.18.0.0/15".parse().expect("literal");
    let v6: ipnet::IpNet = "2001:2::/48".parse().expect("literal");
    v4.contains(&ip) || v6.contains(&ip)
}

/// Runs `ip [-n ns] -batch -` with `lines`, panicking with stderr on failure.
pub fn ip_batch(namespace: Option<&str>, lines: &str) {
    if lines.is_empty() {
        return;
    }
    let mut cmd = Command::new("ip");
    if let Some(ns) = namespace {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot spawn ip -batch (is iproute2 installed?)");
    child
        .stdin
        .take()
        .expect("ip stdin")
        .write_all(lines.as_bytes())
        .expect("write ip -batch input");
    let out = child.wait_with_output().expect("wait for ip -batch");
    assert!(
        out.status.success(),
        "ip -batch failed: {}\ninput:\n{lines}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A set of unit namespaces, created and deleted in batches.
pub struct UnitNet {
    /// The namespace name, `mpc-<pid>-<sim>-<unit>`.
    pub name: String,
    /// An open handle on /run/netns/<name>, used by `setns` in hook children.
    handle: File,
    pub layout: Vec<Iface>,
}

impl UnitNet {
    pub fn fd(&self) -> RawFd {
        self.handle.as_raw_fd()
    }

    /// Replaces the interface layout: deletes the old interfaces and creates the new ones.
    pub fn relayout(&mut self, layout: Vec<Iface>) {
        let mut lines = String::new();
        for iface in &self.layout {
            lines.push_str(&format!("link del {}\n", iface.name));
        }
        lines.push_str(&layout_lines(&layout));
        ip_batch(Some(&self.name), &lines);
        self.layout = layout;
    }

    /// Removes `addr` from interface `from` and adds it to interface `to` (both must exist).
    pub fn move_address(&mut self, addr: &str, from: &str, to: &str) {
        let net: ipnet::IpNet = addr.parse().expect("address");
        let flag = if net.addr().is_ipv6() { " nodad" } else { "" };
        ip_batch(
            Some(&self.name),
            &format!("addr del {addr} dev {from}\naddr add {addr} dev {to}{flag}\n"),
        );
        for iface in &mut self.layout {
            if iface.name == from {
                iface.addrs.retain(|a| *a != net);
            }
            if iface.name == to {
                iface.addrs.push(net);
            }
        }
    }

    /// Replaces address `old` by `new` on the same interface.
    pub fn change_address(&mut self, old: &str, new: &str) {
        let old_net: ipnet::IpNet = old.parse().expect("address");
        let new_net: ipnet::IpNet = new.parse().expect("address");
        assert!(
            in_test_ranges(new_net.addr()),
            "{new} is outside the test ranges"
        );
        let iface = self
            .layout
            .iter_mut()
            .find(|i| i.addrs.contains(&old_net))
            .unwrap_or_else(|| panic!("{old} is not in the layout of {}", self.name));
        let flag = if new_net.addr().is_ipv6() {
            " nodad"
        } else {
            ""
        };
        let lines = format!(
            "addr del {old} dev {0}\naddr add {new} dev {0}{flag}\n",
            iface.name
        );
        iface.addrs.retain(|a| *a != old_net);
        iface.addrs.push(new_net);
        ip_batch(Some(&self.name), &lines);
    }
}

/// Makes `cmd` run inside the namespace behind `fd` (the process's own when `fd < 0`), in its
/// own process group so a timed-out hook can be killed with its children.
///
/// The calling thread itself enters the namespace (a network namespace is per thread, and a
/// child starts in its parent thread's), so `cmd` needs no `pre_exec` and the standard library
/// spawns it with `posix_spawn` instead of `fork`: at ~80 000 hooks, forking the test process
/// was a large share of the simulator's CPU time. Only the simulator's worker threads call it.
pub fn apply_fd(cmd: &mut Command, fd: RawFd) {
    static OWN: OnceLock<File> = OnceLock::new();
    let own = OWN.get_or_init(|| File::open("/proc/self/ns/net").expect("open /proc/self/ns/net"));
    let target = if fd >= 0 { fd } else { own.as_raw_fd() };
    // SAFETY: setns on a namespace fd that stays open (the model owns unit namespace handles
    // until the unit's `remove` hook ran); it moves only this thread.
    let rc = unsafe { libc::setns(target, libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    cmd.process_group(0);
}

fn layout_lines(layout: &[Iface]) -> String {
    let mut lines = String::new();
    for iface in layout {
        assert!(
            iface.name.len() <= 14,
            "interface name {} too long",
            iface.name
        );
        lines.push_str(&format!(
            "link add {0} type veth peer name {0}p\nlink set {0}p up\nlink set {0} up\n",
            iface.name
        ));
        for addr in &iface.addrs {
            let flag = if addr.addr().is_ipv6() { " nodad" } else { "" };
            lines.push_str(&format!("addr add {addr} dev {}{flag}\n", iface.name));
        }
    }
    lines
}

/// Creates namespaces `names[i]` with `layouts[i]`. Uses one `ip -batch` for all the
/// `netns add`s, sets the sysctls from a thread that entered each namespace, then one
/// `ip -n <ns> -batch` per namespace for its links and addresses.
pub fn create(names: &[String], layouts: Vec<Vec<Iface>>) -> Vec<UnitNet> {
    let adds: String = names.iter().map(|n| format!("netns add {n}\n")).collect();
    ip_batch(None, &adds);
    let mut nets = Vec::new();
    for (name, layout) in names.iter().zip(layouts) {
        let path = format!("/run/netns/{name}");
        let handle = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        set_sysctls(handle.as_raw_fd());
        let mut lines = String::from("link set lo up\n");
        lines.push_str(&layout_lines(&layout));
        ip_batch(Some(name), &lines);
        nets.push(UnitNet {
            name: name.clone(),
            handle,
            layout,
        });
    }
    nets
}

/// Deletes the namespaces in one `ip -batch` (errors ignored: best effort in Drop paths).
pub fn delete(names: &[String]) {
    if names.is_empty() {
        return;
    }
    let lines: String = names.iter().map(|n| format!("netns del {n}\n")).collect();
    let child = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Ok(mut child) = child {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(lines.as_bytes());
        }
        let _ = child.wait();
    }
}

/// Writes accept_dad=0 (all, default) inside the namespace behind `fd`, from a thread that
/// entered it: /proc/sys/net belongs to the reading thread's namespace.
fn set_sysctls(fd: RawFd) {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this short-lived thread only; fd is a valid netns handle.
            let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            for key in ["all", "default"] {
                let path = format!("/proc/sys/net/ipv6/conf/{key}/accept_dad");
                std::fs::write(&path, "0").unwrap_or_else(|e| panic!("write {path}: {e}"));
            }
        })
        .join()
        .expect("sysctl thread");
    });
}

/// Unit n of a large model: 198.18.1.0/24-style addresses on two /16 networks every unit shares.
pub fn two_nets(n: usize) -> Vec<Iface> {
    let (hi, lo) = (n / 250 + 1, n % 250 + 1);
    vec![
        Iface::new("eth0", &[&format!("198.18.{hi}.{lo}/16")]),
        Iface::new("eth1", &[&format!("198.19.{hi}.{lo}/16")]),
    ]
}

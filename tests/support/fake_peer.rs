//! A fake ICMP peer for hostile-network tests: a TUN device inside a test namespace, and a
//! background thread that answers every echo request routed into it however the test says.
//!
//! Owns the device (`/dev/net/tun`, `TUNSETIFF` with `IFF_TUN | IFF_NO_PI`, opened on a thread
//! that entered the namespace), the routes to the fake-peer ranges [`FAKE_V4_NET`] and
//! [`FAKE_V6_NET`] (through the addresses it puts on the device), the per-destination
//! [`Behaviour`]s, the timer queue for delayed replies and the per-address counters. The packets
//! themselves are built in [`wire`]. It never sends anything but replies to requests it read from
//! its own device, so every packet stays inside the test's namespace; malformed packets are
//! skipped, never unwrapped. Dropping the peer stops the thread and closes the device, which
//! removes it and its routes.
//!
//! ```text
//!  meshprobe (in namespace) --route 198.18.64.0/24, 2001:2:0:64::/64--> mpfake0 (TUN)
//!                                                                          | read request
//!  meshprobe <---- reply / forged / duplicate / ICMP error, after a delay --+ fake peer thread
//! ```

mod behaviour;
mod wire;

// Re-exported for the test files; not every test binary uses every one.
#[allow(unused_imports)]
pub use behaviour::{Action, Behaviour, ErrorKind, Reply};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Namespace, in_namespace};

/// The TUN device's name inside its namespace.
pub const DEVICE: &str = "mpfake0";
/// IPv4 range routed to the fake peer.
pub const FAKE_V4_NET: &str = "198.18.64.0/24";
/// IPv6 range routed to the fake peer.
pub const FAKE_V6_NET: &str = "2001:2:0:64::/64";
/// The prober's own address on the device (source of the requests); never a target.
pub const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 64, 1);
/// The prober's own IPv6 address on the device; never a target.
pub const LOCAL_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x64, 0, 0, 0, 1);
/// Hop limit of every packet the fake peer writes; the prober sees it unchanged.
pub const REPLY_TTL: u8 = 64;
/// Longest the thread sleeps before it looks at the stop flag again.
const POLL_CAP: Duration = Duration::from_millis(20);

/// 198.18.64.`host`: an IPv4 address the fake peer answers for (use 2..=253).
pub fn v4(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 64, host))
}

/// 2001:2:0:64::`host`: an IPv6 address the fake peer answers for (use 2..=0xfd).
pub fn v6(host: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0x64, 0, 0, 0, host))
}

/// A router-like address of `target`'s family inside the fake range (198.18.64.254 or
/// 2001:2:0:64::fe), the usual source of ICMP errors.
pub fn router_for(target: IpAddr) -> IpAddr {
    match target {
        IpAddr::V4(_) => v4(254),
        IpAddr::V6(_) => v6(0xfe),
    }
}

/// What the fake peer did for one destination address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Valid echo requests received.
    pub requests: u64,
    /// Requests ignored by `drop_share`.
    pub dropped: u64,
    /// Packets written in answer (replies, forgeries and errors).
    pub sent: u64,
}

#[derive(Default)]
struct State {
    behaviours: HashMap<IpAddr, Behaviour>,
    default: Behaviour,
    counts: HashMap<IpAddr, Counts>,
    /// Requests per address since its behaviour was last set (indexes `per_request`).
    scripted: HashMap<IpAddr, usize>,
    /// How long each reply written for an address was really held, in write order.
    held: HashMap<IpAddr, Vec<Duration>>,
    malformed: u64,
    write_errors: u64,
    /// Packets in the timer queue or held for reordering.
    pending: usize,
}

/// The running fake peer; see the module docs.
pub struct FakePeer {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakePeer {
    /// Creates the device in `namespace`, routes the fake ranges to it and starts answering.
    /// Addresses without a behaviour are silent until [`FakePeer::set_default`] says otherwise.
    /// One fake peer per namespace (the device name and the ranges are fixed).
    pub fn start(namespace: &Namespace) -> FakePeer {
        FakePeer::start_with_seed(namespace, 0x6d65_7368)
    }

    /// Like [`FakePeer::start`], with the seed of the generator behind drops and jitter.
    pub fn start_with_seed(namespace: &Namespace, seed: u64) -> FakePeer {
        // Forged sources arrive on a device that is not the route back to them.
        namespace.sysctl("net.ipv4.conf.all.rp_filter", "0");
        namespace.sysctl("net.ipv4.conf.default.rp_filter", "0");
        let tun = in_namespace(&namespace.name, || open_tun(DEVICE))
            .unwrap_or_else(|error| panic!("cannot create TUN device {DEVICE}: {error}"));
        namespace.sysctl(&format!("net.ipv4.conf.{DEVICE}.rp_filter"), "0");
        // The addresses' prefix routes send both fake ranges into the device.
        namespace.ip_batch(&format!(
            "link set {DEVICE} up\naddr add {LOCAL_V4}/24 dev {DEVICE}\n\
             addr add {LOCAL_V6}/64 dev {DEVICE} nodad\n"
        ));
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut engine = Engine {
            tun,
            state: Arc::clone(&state),
            rng: fastrand::Rng::with_seed(seed),
            queue: BinaryHeap::new(),
            order: 0,
            held: HashMap::new(),
            ip_id: 0,
        };
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("fake-peer".into())
            .spawn(move || engine.run(&thread_stop))
            .expect("spawn fake peer thread");
        FakePeer {
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets how requests to `address` are answered (from the next request on).
    pub fn set(&self, address: IpAddr, behaviour: Behaviour) {
        let mut state = self.state();
        state.behaviours.insert(address, behaviour);
        state.scripted.remove(&address);
    }

    /// Sets how requests to addresses without their own behaviour are answered.
    pub fn set_default(&self, behaviour: Behaviour) {
        self.state().default = behaviour;
    }

    /// What the peer did for `address` so far.
    pub fn counts(&self, address: IpAddr) -> Counts {
        self.state()
            .counts
            .get(&address)
            .copied()
            .unwrap_or_default()
    }

    pub fn requests(&self, address: IpAddr) -> u64 {
        self.counts(address).requests
    }

    /// Packets that looked like echo requests but had bad lengths or checksums.
    pub fn malformed_requests(&self) -> u64 {
        self.state().malformed
    }

    /// Packets the device refused to take.
    pub fn write_errors(&self) -> u64 {
        self.state().write_errors
    }

    /// How long each reply written for `address` was really held after its request was read
    /// (the scripted delay plus this thread's timer and scheduling latency), in write order.
    pub fn held_times(&self, address: IpAddr) -> Vec<Duration> {
        self.state().held.get(&address).cloned().unwrap_or_default()
    }

    /// Waits until no reply is queued or held; false on timeout.
    pub fn wait_until_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.state().pending > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Waits until `address` has had `sent` packets written for it; false on timeout.
    pub fn wait_for_sent(&self, address: IpAddr, sent: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.counts(address).sent >= sent {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread owns the device; joining it closes the device and removes it.
            let _ = thread.join();
        }
    }
}

/// Opens `/dev/net/tun` and attaches a new non-blocking TUN device without packet information,
/// in the calling thread's network namespace.
fn open_tun(name: &str) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is a plain C struct for which all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= request.ifr_name.len() {
        return Err(io::Error::other("interface name too long"));
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call; the fd is open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Waits until `file` is readable or `timeout` passes; true when readable.
fn poll_readable(file: &File, timeout: Duration) -> bool {
    let mut fds = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd and a valid timespec, both outliving the call; no signal mask.
    let rc = unsafe { libc::ppoll(&mut fds, 1, &timeout, std::ptr::null()) };
    rc > 0 && fds.revents & libc::POLLIN != 0
}

/// A packet waiting in the timer queue; ordered by due time, then by scheduling order.
struct Scheduled {
    due: Instant,
    /// When the request this answers was read.
    requested: Instant,
    order: u64,
    target: IpAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.order).cmp(&(other.due, other.order))
    }
}

/// The background thread's state: the device, the generator and the timer queue.
struct Engine {
    tun: File,
    state: Arc<Mutex<State>>,
    rng: fastrand::Rng,
    queue: BinaryHeap<Reverse<Scheduled>>,
    order: u64,
    /// Replies of a reordering address waiting for the next request, with their delays.
    held: HashMap<IpAddr, Vec<(Duration, Vec<u8>)>>,
    ip_id: u16,
}

impl Engine {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut buffer = vec![0u8; 65_536];
        while !stop.load(Ordering::Relaxed) {
            self.send_due();
            let now = Instant::now();
            let wait = self
                .queue
                .peek()
                .map_or(POLL_CAP, |next| next.0.due.saturating_duration_since(now))
                .min(POLL_CAP);
            if !poll_readable(&self.tun, wait) {
                continue;
            }
            loop {
                match (&self.tun).read(&mut buffer) {
                    Ok(0) => break,
                    Ok(len) => self.handle(&buffer[..len]),
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        }
    }

    fn send_due(&mut self) {
        let now = Instant::now();
        while self.queue.peek().is_some_and(|next| next.0.due <= now) {
            let Some(Reverse(packet)) = self.queue.pop() else {
                break;
            };
            let written = (&self.tun).write(&packet.bytes);
            let held = packet.requested.elapsed();
            let mut state = self.state();
            state.pending = state.pending.saturating_sub(1);
            match written {
                Ok(_) => {
                    state.counts.entry(packet.target).or_default().sent += 1;
                    state.held.entry(packet.target).or_default().push(held);
                }
                Err(_) => state.write_errors += 1,
            }
        }
    }

    fn handle(&mut self, packet: &[u8]) {
        let request = match wire::parse_request(packet) {
            Ok(request) => request,
            Err(wire::Skip::Malformed) => {
                self.state().malformed += 1;
                return;
            }
            Err(wire::Skip::NotEcho) => return,
        };
        let target = request.destination;
        let (behaviour, index) = {
            let mut state = self.state();
            state.counts.entry(target).or_default().requests += 1;
            let index = state.scripted.entry(target).or_default();
            let this = *index;
            *index += 1;
            let behaviour = state.behaviours.get(&target).unwrap_or(&state.default);
            (behaviour.clone(), this)
        };
        let actions = if behaviour.per_request.is_empty() {
            &behaviour.actions
        } else {
            &behaviour.per_request[index % behaviour.per_request.len()]
        };
        if behaviour.drop_share > 0.0 && self.rng.f64() < behaviour.drop_share {
            self.state().counts.entry(target).or_default().dropped += 1;
            return;
        }
        let jitter = if behaviour.jitter.is_zero() {
            Duration::ZERO
        } else {
            let nanos = u64::try_from(behaviour.jitter.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(self.rng.u64(0..=nanos))
        };
        let built: Vec<(Duration, Vec<u8>)> = actions
            .iter()
            .filter_map(|action| {
                let bytes = self.build(&request, &action.reply)?;
                Some((action.after + jitter, bytes))
            })
            .collect();
        self.state().pending += built.len();
        if behaviour.reorder {
            match self.held.remove(&target) {
                None => {
                    self.held.insert(target, built);
                }
                Some(previous) => {
                    self.schedule(target, built);
                    self.schedule(target, previous);
                }
            }
        } else {
            self.schedule(target, built);
        }
    }

    fn schedule(&mut self, target: IpAddr, packets: Vec<(Duration, Vec<u8>)>) {
        let now = Instant::now();
        for (delay, bytes) in packets {
            self.order += 1;
            self.queue.push(Reverse(Scheduled {
                due: now + delay,
                requested: now,
                order: self.order,
                target,
                bytes,
            }));
        }
    }

    fn build(&mut self, request: &wire::Request, reply: &Reply) -> Option<Vec<u8>> {
        self.ip_id = self.ip_id.wrapping_add(1);
        let ip_id = self.ip_id;
        let (id, seq, target) = (request.id, request.seq, request.destination);
        let payload = &request.payload;
        match reply {
            Reply::Echo => wire::echo_reply(request, target, id, seq, payload, false, ip_id),
            Reply::BadChecksum => wire::echo_reply(request, target, id, seq, payload, true, ip_id),
            Reply::CorruptPayload => {
                let mut corrupted = payload.clone();
                if let Some(last) = corrupted.last_mut() {
                    *last ^= 0x01;
                }
                wire::echo_reply(request, target, id, seq, &corrupted, false, ip_id)
            }
            Reply::WrongId => {
                wire::echo_reply(request, target, id ^ 0x8000, seq, payload, false, ip_id)
            }
            Reply::WrongSeq => {
                wire::echo_reply(request, target, id, seq ^ 0x8000, payload, false, ip_id)
            }
            Reply::FromSource(source) => {
                wire::echo_reply(request, *source, id, seq, payload, false, ip_id)
            }
            Reply::Error { kind, from } => {
                wire::icmp_error(request, *from, *kind, &request.datagram, ip_id)
            }
            Reply::ForeignError { kind, from } => {
                let quoted = wire::foreign_request(request, ip_id)?;
                wire::icmp_error(request, *from, *kind, &quoted, ip_id)
            }
            Reply::ShortError { kind, from, quote } => {
                let quoted = request.datagram.get(..*quote)?;
                wire::icmp_error(request, *from, *kind, quoted, ip_id)
            }
            Reply::Oversized(len) => {
                let mut padded = payload.clone();
                padded.resize((*len).max(payload.len()), 0);
                wire::echo_reply(request, target, id, seq, &padded, false, ip_id)
            }
        }
    }
}

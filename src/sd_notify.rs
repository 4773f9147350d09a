//! The systemd notification protocol (`sd_notify(3)`), for running under `Type=notify`.
//!
//! Owns the datagrams meshprobe sends to `$NOTIFY_SOCKET`: `READY=1` once the listeners are
//! bound and probing can start, `RELOADING=1`/`READY=1` around a SIGHUP reload, `STATUS=` lines
//! for `systemctl status`, `STOPPING=1` on shutdown, and `WATCHDOG=1` keep-alives at half of
//! `$WATCHDOG_USEC` (every 1 ms at the most). The keep-alives come from a task
//! ([`keep_watchdog_fed`]) on the same runtime that serves HTTP and paces mesh probes, so a
//! wedged runtime stops them and systemd restarts the service. Sends never block that runtime.
//! Without `$NOTIFY_SOCKET` (not started by systemd) every call is a no-op.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where notifications go: a filesystem path or a Linux abstract socket name (`@name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAddress {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl NotifyAddress {
    /// Parses a `$NOTIFY_SOCKET` value; `None` for an empty or unusable one.
    pub fn parse(value: &str) -> Option<NotifyAddress> {
        if let Some(name) = value.strip_prefix('@') {
            return (!name.is_empty()).then(|| NotifyAddress::Abstract(name.as_bytes().to_vec()));
        }
        value
            .starts_with('/')
            .then(|| NotifyAddress::Path(PathBuf::from(value)))
    }

    fn socket_address(&self) -> io::Result<SocketAddr> {
        match self {
            NotifyAddress::Path(path) => SocketAddr::from_pathname(path),
            NotifyAddress::Abstract(name) => SocketAddr::from_abstract_name(name),
        }
    }
}

/// Sends notifications to systemd (or to nothing, when not started by it).
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET`, if set and usable. A bad value is logged, not fatal:
    /// the service still runs, and systemd reports the missing READY itself.
    pub fn from_env() -> Notifier {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(value) => match NotifyAddress::parse(&value) {
                Some(address) => Notifier::to_address(&address).unwrap_or_else(|error| {
                    tracing::warn!(socket = %value, %error, "cannot use NOTIFY_SOCKET");
                    Notifier::disabled()
                }),
                None => {
                    tracing::warn!(socket = %value, "ignoring malformed NOTIFY_SOCKET");
                    Notifier::disabled()
                }
            },
            Err(_) => Notifier::disabled(),
        }
    }

    /// A notifier sending to `address`. The socket never blocks: it is written from the async
    /// runtime, and a receiver that stops reading fills its queue (`net.unix.max_dgram_qlen`).
    pub fn to_address(address: &NotifyAddress) -> io::Result<Notifier> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            target: Some((socket, address.socket_address()?)),
        })
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one notification (newline-separated `KEY=value` assignments). Failures are logged
    /// at debug level: systemd going away must not take the exporter with it.
    pub fn notify(&self, assignments: &str) {
        if let Some((socket, address)) = &self.target
            && let Err(error) = socket.send_to_addr(assignments.as_bytes(), address)
        {
            tracing::debug!(%error, "sd_notify failed");
        }
    }

    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    pub fn reloading(&self) {
        self.notify("RELOADING=1\nSTATUS=Reloading configuration");
    }

    pub fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=Shutting down");
    }

    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={}", one_line(status)));
    }

    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, if the watchdog is meant for this
/// process (`$WATCHDOG_PID` unset or equal to our pid).
pub fn watchdog_interval_from_env() -> Option<Duration> {
    watchdog_interval(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// The shortest keep-alive period. A `$WATCHDOG_USEC` below twice this cannot be honoured
/// anyway; sending faster would only burn the core the watchdog is meant to guard (and a zero
/// period, from `WATCHDOG_USEC=1`, made `tokio::time::interval` panic).
const MIN_WATCHDOG_PERIOD: Duration = Duration::from_millis(1);

fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|usec| *usec > 0)?;
    // Halving cannot overflow, and any u64 of microseconds fits a Duration.
    Some(Duration::from_micros(usec / 2).max(MIN_WATCHDOG_PERIOD))
}

/// Sends `WATCHDOG=1` every `period`, forever. Run it on the runtime that serves HTTP and paces
/// mesh probes, so that a wedged runtime misses the deadline and systemd restarts the service.
pub async fn keep_watchdog_fed(notifier: Arc<Notifier>, period: Duration) {
    let mut ticks = tokio::time::interval(period.max(MIN_WATCHDOG_PERIOD));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        notifier.watchdog();
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_notify_socket_values() {
        assert_eq!(
            NotifyAddress::parse("/run/systemd/notify"),
            Some(NotifyAddress::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            NotifyAddress::parse("@/org/freedesktop/systemd1/notify/123"),
            Some(NotifyAddress::Abstract(
                b"/org/freedesktop/systemd1/notify/123".to_vec()
            ))
        );
        assert_eq!(NotifyAddress::parse(""), None);
        assert_eq!(NotifyAddress::parse("@"), None);
        assert_eq!(NotifyAddress::parse("relative/path"), None);
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_and_only_for_this_process() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    /// `WATCHDOG_USEC=1` asked for a keep-alive every 0 µs, and `tokio::time::interval` panics on
    /// a zero period, which took the watchdog task down with it.
    #[tokio::test]
    async fn a_tiny_watchdog_timeout_still_feeds_the_watchdog() {
        for usec in ["1", "2", "3"] {
            let period = watchdog_interval(Some(usec), None, 7).expect("a watchdog period");
            assert_eq!(period, MIN_WATCHDOG_PERIOD, "WATCHDOG_USEC={usec}");
            let name = format!("meshprobe-watchdog-{}-{usec}", std::process::id());
            let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
            let receiver = UnixDatagram::bind_addr(&address).expect("bind abstract socket");
            receiver.set_nonblocking(true).expect("nonblocking");
            let notifier = Notifier::to_address(&NotifyAddress::Abstract(name.into_bytes()))
                .expect("notifier");
            let task = tokio::spawn(keep_watchdog_fed(Arc::new(notifier), period));
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(!task.is_finished(), "the watchdog task ended (panicked?)");
            task.abort();
            let mut buffer = [0u8; 32];
            let length = receiver.recv(&mut buffer).expect("a keep-alive");
            assert_eq!(&buffer[..length], b"WATCHDOG=1");
        }
        // The largest value systemd could pass does not overflow either.
        let longest = watchdog_interval(Some(&u64::MAX.to_string()), None, 7).expect("period");
        assert_eq!(longest, Duration::from_micros(u64::MAX / 2));
        tokio::time::interval(longest).tick().await;
    }

    #[test]
    fn sends_datagrams_to_a_path_and_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("meshprobe-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).expect("bind path socket");
        let notifier = Notifier::to_address(&NotifyAddress::Path(path.clone())).expect("notifier");
        notifier.ready("serving on :9115\nand more");
        let mut buffer = [0u8; 256];
        let length = receiver.recv(&mut buffer).expect("datagram");
        assert_eq!(
            &buffer[..length],
            b"READY=1\nSTATUS=serving on :9115 and more"
        );
        let _ = std::fs::remove_dir_all(&dir);

        let name = format!("meshprobe-test-{}", std::process::id());
        let abstract_address =
            SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
        let receiver = UnixDatagram::bind_addr(&abstract_address).expect("bind abstract socket");
        let notifier = Notifier::to_address(&NotifyAddress::parse(&format!("@{name}")).expect("@"))
            .expect("notifier");
        notifier.watchdog();
        let length = receiver.recv(&mut buffer).expect("datagram");
        assert_eq!(&buffer[..length], b"WATCHDOG=1");
    }

    /// A receiver that stops reading must not block the runtime that sends the keep-alives.
    #[test]
    fn a_receiver_that_does_not_read_never_blocks_the_sender() {
        let name = format!("meshprobe-full-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
        let _receiver = UnixDatagram::bind_addr(&address).expect("bind abstract socket");
        let notifier =
            Notifier::to_address(&NotifyAddress::Abstract(name.into_bytes())).expect("notifier");
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..1000 {
                notifier.watchdog();
            }
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("1000 notifications to a full queue return at once");
    }

    #[test]
    fn disabled_notifier_sends_nothing_and_does_not_fail() {
        let notifier = Notifier::disabled();
        assert!(!notifier.enabled());
        notifier.ready("x");
        notifier.stopping();
    }
}

//! The physical floor of a pinger on this machine: the least a process can do to send one ICMP
//! echo per target per second and read every reply, so `bench/pinger_bench.sh` can say how far
//! meshprobe is from it (`PROGRAMS=floor`).
//!
//! One thread, one raw IPv4 socket, no async runtime, no per-target state beyond a prebuilt
//! packet: every tick (meshprobe's: about 64 targets' worth, between 1 and 10 ms) it sends the targets due since the last tick with `sendmmsg`
//! (chunks of 1 024), drains the replies with non-blocking `recvmmsg` (no timestamps, no
//! matching beyond the identifier), and sleeps. What it costs is the kernel's send and receive
//! of each echo plus a wakeup per tick: what meshprobe's cores are compared with. Every second
//! it prints `sent=N received=N` (cumulative) on standard output.
//!
//! Run as root inside a test namespace: `echo_floor TARGETS_FILE`, where the file holds one IPv4
//! address per line; it runs until killed.

use std::io::{self, BufRead, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const CHUNK: usize = 1024;
const IDENTIFIER: u16 = 0x4d46;

fn main() {
    if let Err(error) = run() {
        eprintln!("echo_floor: {error}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        return Err(io::Error::other("usage: echo_floor TARGETS_FILE"));
    };
    let targets = read_targets(&path)?;
    if targets.is_empty() {
        return Err(io::Error::other(format!("{path}: no target")));
    }
    // meshprobe's pacing tick (`mesh/scheduler.rs` `tick_for`): 64 slots, within 1..10 ms.
    let tick = (Duration::from_secs(64) / targets.len() as u32)
        .clamp(Duration::from_millis(1), Duration::from_millis(10));
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    socket.set_nonblocking(true)?;
    socket.set_recv_buffer_size(8 << 20)?;
    let addresses: Vec<SockAddr> = targets
        .iter()
        .map(|ip| SockAddr::from(SocketAddrV4::new(*ip, 0)))
        .collect();
    let mut packets: Vec<[u8; 8]> = vec![[0; 8]; targets.len()];
    let mut receive_buffers = vec![[0u8; 128]; 256];
    let (mut sent, mut received, mut sequence) = (0u64, 0u64, 0u16);
    let start = Instant::now();
    let mut next_report = start + Duration::from_secs(1);
    loop {
        // Every target once per second, evenly: the targets due by now, from where we left off.
        let due = (start.elapsed().as_secs_f64() * targets.len() as f64) as u64;
        while sent < due {
            let count = ((due - sent) as usize).min(CHUNK);
            let first = (sent % targets.len() as u64) as usize;
            let indexes: Vec<usize> = (0..count).map(|i| (first + i) % targets.len()).collect();
            for &index in &indexes {
                sequence = sequence.wrapping_add(1);
                packets[index] = echo_request(sequence);
            }
            let taken = send_many(&socket, &indexes, &packets, &addresses)?;
            sent += taken as u64;
            if taken == 0 {
                break; // the device queue is full: the rest goes out next tick
            }
        }
        received += drain(&socket, &mut receive_buffers)?;
        if Instant::now() >= next_report {
            println!("sent={sent} received={received}");
            io::stdout().flush()?;
            next_report += Duration::from_secs(1);
        }
        std::thread::sleep(tick);
    }
}

fn read_targets(path: &str) -> io::Result<Vec<Ipv4Addr>> {
    let file = std::fs::File::open(path)?;
    let mut targets = Vec::new();
    for (number, line) in io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        targets.push(line.parse().map_err(|_| {
            io::Error::other(format!(
                "{path}:{}: {line:?} is not an IPv4 address",
                number + 1
            ))
        })?);
    }
    Ok(targets)
}

/// An echo request with no payload: type 8, code 0, checksum, identifier, sequence.
fn echo_request(sequence: u16) -> [u8; 8] {
    let mut packet = [8, 0, 0, 0, 0, 0, 0, 0];
    packet[4..6].copy_from_slice(&IDENTIFIER.to_be_bytes());
    packet[6..8].copy_from_slice(&sequence.to_be_bytes());
    let sum = packet
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !(((folded & 0xffff) + (folded >> 16)) as u16);
    packet[2..4].copy_from_slice(&checksum.to_be_bytes());
    packet
}

/// One `sendmmsg` of the packets at `indexes`; answers how many the kernel took.
fn send_many(
    socket: &Socket,
    indexes: &[usize],
    packets: &[[u8; 8]],
    addresses: &[SockAddr],
) -> io::Result<usize> {
    let mut iovecs: Vec<libc::iovec> = indexes
        .iter()
        .map(|&index| libc::iovec {
            iov_base: packets[index].as_ptr() as *mut libc::c_void,
            iov_len: packets[index].len(),
        })
        .collect();
    let mut messages: Vec<libc::mmsghdr> = indexes
        .iter()
        .zip(iovecs.iter_mut())
        .map(|(&index, iovec)| {
            // SAFETY: mmsghdr is plain data; every field the kernel reads is set below.
            let mut message: libc::mmsghdr = unsafe { std::mem::zeroed() };
            message.msg_hdr.msg_name = addresses[index].as_ptr() as *mut libc::c_void;
            message.msg_hdr.msg_namelen = addresses[index].len();
            message.msg_hdr.msg_iov = iovec;
            message.msg_hdr.msg_iovlen = 1;
            message
        })
        .collect();
    // SAFETY: `messages` points at `iovecs`, `packets` and `addresses`, all alive for the call.
    let taken = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            messages.as_mut_ptr(),
            messages.len() as libc::c_uint,
            0,
        )
    };
    if taken < 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::WouldBlock || error.raw_os_error() == Some(libc::ENOBUFS)
        {
            return Ok(0);
        }
        return Err(error);
    }
    Ok(taken as usize)
}

/// Reads every queued datagram; answers how many were echo replies to this process.
fn drain(socket: &Socket, buffers: &mut [[u8; 128]]) -> io::Result<u64> {
    let mut replies = 0;
    loop {
        let mut iovecs: Vec<libc::iovec> = buffers
            .iter_mut()
            .map(|buffer| libc::iovec {
                iov_base: buffer.as_mut_ptr() as *mut libc::c_void,
                iov_len: buffer.len(),
            })
            .collect();
        let mut messages: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iovec| {
                // SAFETY: plain data; the kernel fills what it needs.
                let mut message: libc::mmsghdr = unsafe { std::mem::zeroed() };
                message.msg_hdr.msg_iov = iovec;
                message.msg_hdr.msg_iovlen = 1;
                message
            })
            .collect();
        // SAFETY: every message points at a live buffer of the length it states.
        let count = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                messages.as_mut_ptr(),
                messages.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if count < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::WouldBlock {
                return Ok(replies);
            }
            return Err(error);
        }
        for (message, buffer) in messages.iter().zip(buffers.iter()).take(count as usize) {
            let length = message.msg_len as usize;
            // A raw IPv4 socket hands over the IP header: skip it (IHL words of 4 bytes).
            let header = usize::from(buffer[0] & 0x0f) * 4;
            let icmp = &buffer[header.min(length)..length];
            if icmp.len() >= 8
                && icmp[0] == 0
                && u16::from_be_bytes([icmp[4], icmp[5]]) == IDENTIFIER
            {
                replies += 1;
            }
        }
        if (count as usize) < buffers.len() {
            return Ok(replies);
        }
    }
}

//! The ICMP engine: wire format ([`packet`]), sockets ([`socket`]), the shared-socket
//! demultiplexer ([`pinger`]) and its counters ([`stats`]).
//!
//! Callers use [`Pinger::echo`]; nothing outside this module touches a socket.

mod demux;
pub mod packet;
pub mod pinger;
pub mod socket;
pub mod stats;
mod table;

pub use packet::{Family, IcmpErrorKind};
pub use pinger::{
    Answer, EchoFailure, EchoRequest, EchoResult, Pinger, ReplyObserver, SocketOpenError,
    check_permissions,
};
pub use socket::SocketKind;

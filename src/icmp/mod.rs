//! The ICMP engine: the vocabulary callers use ([`echo`]), wire format ([`packet`]), sockets
//! ([`socket`], the engine's only `unsafe` code; `system.rs` registers them with Tokio) behind
//! the [`transport`] seam, the probe table
//! ([`table`]), receiving channels and their loop (`channel.rs`, `demux.rs`), the engine itself
//! ([`pinger`]), Paris-traceroute flows for path tracing ([`flow`]), and its counters ([`stats`]).
//!
//! Dependencies run one way: `echo` ← `table` ← `channel` ← `demux` ← `pinger`. Callers use
//! [`Pinger::echo`]; nothing outside this module touches a socket.

mod channel;
mod demux;
pub mod echo;
#[cfg(test)]
pub(crate) mod fake;
pub mod flow;
pub mod packet;
pub mod pinger;
pub mod socket;
pub mod stats;
mod system;
mod table;
pub mod transport;

pub use echo::{
    Answer, AnswerSink, EchoFailure, EchoRequest, EchoResult, ReplyObserver, SocketOpenError,
};
pub use flow::EchoFlow;
pub use packet::{Family, IcmpErrorKind};
pub use pinger::{BatchProbe, Pinger, Ticket, check_permissions};
pub use socket::SocketKind;

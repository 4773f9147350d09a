//! The production [`Transport`]: real ICMP sockets registered with Tokio's reactor.
//!
//! Owns the readiness handling of each socket; the system calls themselves (and the one
//! `unsafe` reactor registration) are in [`super::socket`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::Socket;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::socket::receive::{self, QueuedError, ReceiveBatch};
use super::socket::{self, Role, SocketKey, SocketKind};
use super::transport::{Endpoint, OutDatagram, Transport, Wait};

/// Opens real sockets (raw or ping) on the current Tokio runtime.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemTransport;

struct SystemEndpoint {
    fd: AsyncFd<Socket>,
    ident: Option<u16>,
}

impl Transport for SystemTransport {
    fn open(&self, key: &SocketKey, role: Role) -> io::Result<Arc<dyn Endpoint>> {
        let opened = socket::open(key, role)?;
        let ident = match key.kind {
            SocketKind::Dgram => Some(socket::ping_socket_ident(&opened)?),
            SocketKind::Raw => None,
        };
        let fd = socket::register(opened)?;
        Ok(Arc::new(SystemEndpoint { fd, ident }))
    }
}

impl Endpoint for SystemEndpoint {
    fn ident(&self) -> Option<u16> {
        self.ident
    }

    fn try_send(&self, bytes: &[u8], destination: SocketAddr, ttl: Option<u8>) -> io::Result<()> {
        socket::send_to(self.fd.get_ref(), bytes, destination, ttl).map(|_| ())
    }

    fn try_send_many(&self, datagrams: &[OutDatagram<'_>]) -> io::Result<usize> {
        socket::send_many::send_many(self.fd.get_ref(), datagrams)
    }

    fn writable(&self) -> Wait<'_> {
        Box::pin(async move {
            let mut ready = self.fd.writable().await?;
            ready.clear_ready();
            Ok(())
        })
    }

    fn readable(&self) -> Wait<'_> {
        Box::pin(async move {
            let mut ready = self.fd.ready(Interest::READABLE | Interest::ERROR).await?;
            // Clearing before the caller reads is safe because it reads until the queue is
            // empty: anything that arrives after that read raises readiness again.
            let readiness = ready.ready();
            ready.clear_ready_matching(readiness);
            Ok(())
        })
    }

    fn try_receive(&self, batch: &mut ReceiveBatch) -> io::Result<usize> {
        batch.receive(std::os::fd::AsFd::as_fd(self.fd.get_ref()))
    }

    fn try_receive_error(&self, buffer: &mut [u8]) -> io::Result<Option<QueuedError>> {
        receive::receive_queued_error(std::os::fd::AsFd::as_fd(self.fd.get_ref()), buffer)
    }

    fn take_error(&self) -> Option<io::Error> {
        socket::take_socket_error(self.fd.get_ref())
    }
}

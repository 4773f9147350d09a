//! Response bodies, whole or streamed: a streamed body is rendered on the blocking pool in bounded
//! chunks and handed to hyper through a bounded channel, gzip-compressed chunk by chunk when the
//! client accepts it, so no full copy of a large `/metrics` body ever exists.
//!
//! Owns [`ResponseBody`] (what every route answers with), the render side's [`ChunkSink`], the
//! back-pressure (at most [`QUEUED_CHUNKS`] chunks wait for a slow client; the renderer blocks
//! beyond that, and gives up after [`STALL_TIMEOUT`] without progress), the cap on streamed
//! renders running at once ([`MAX_RENDERS`]), and ending a body that could not be finished with
//! an error, so the client sees a broken transfer, never a silently truncated one. What is
//! rendered belongs to the caller.

use std::io::Write;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use flate2::write::GzEncoder;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc};

/// Chunks that may wait in the channel for a slow client before the renderer blocks.
pub const QUEUED_CHUNKS: usize = 4;
/// Compressed bytes collected before they are handed on (gzip shrinks the mesh's text ~20×,
/// so one such chunk stands for ~0.5 MB of text).
pub const GZIP_CHUNK: usize = 32 * 1024;
/// How long a client may leave a chunk untaken before the render stops and the transfer is
/// broken off (a scrape that slow has timed out on Prometheus's side long before).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Streamed renders at once; more wait for a turn. Each holds a snapshot of every target's
/// counters while it runs, so this bounds what slow or stalled scrapers can pin.
pub const MAX_RENDERS: usize = 4;

static RENDERS: Semaphore = Semaphore::const_new(MAX_RENDERS);

/// Every route's response body: a whole one (most routes), or one streamed from a renderer.
pub enum ResponseBody {
    Whole(Full<Bytes>),
    Streamed(StreamedBody),
}

impl From<Full<Bytes>> for ResponseBody {
    fn from(body: Full<Bytes>) -> ResponseBody {
        ResponseBody::Whole(body)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            ResponseBody::Whole(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(|never| match never {}))),
            ResponseBody::Streamed(body) => body.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Whole(body) => body.is_end_stream(),
            ResponseBody::Streamed(body) => body.ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Whole(body) => body.size_hint(),
            ResponseBody::Streamed(_) => SizeHint::default(),
        }
    }
}

/// What the renderer sends: a chunk, or the mark that the body is complete.
enum Piece {
    Data(Bytes),
    End,
}

/// The receiving end of a streamed render.
pub struct StreamedBody {
    pieces: mpsc::Receiver<Piece>,
    ended: bool,
}

impl StreamedBody {
    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.pieces.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Piece::Data(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(Some(Piece::End)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            // The renderer went away without marking the end (it panicked or gave up).
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err(std::io::Error::other(
                    "the response was not rendered to its end",
                ))))
            }
        }
    }
}

/// The render side of a streamed body: takes the renderer's chunks, compresses them when the
/// client accepts gzip, and sends them on, blocking while the client is behind.
pub struct ChunkSink {
    sender: mpsc::Sender<Piece>,
    gzip: Option<GzEncoder<Vec<u8>>>,
    runtime: Handle,
}

impl ChunkSink {
    /// Hands a text chunk on and leaves `chunk` empty (its capacity kept for the next one).
    /// `Break` means the client is gone or stalled: stop rendering.
    pub fn send_text(&mut self, chunk: &mut String) -> ControlFlow<()> {
        if self.gzip.is_some() {
            let flow = self.compress(chunk.as_bytes());
            chunk.clear();
            return flow;
        }
        let fresh = String::with_capacity(chunk.capacity());
        let bytes = std::mem::replace(chunk, fresh).into_bytes();
        self.deliver(Bytes::from(bytes))
    }

    /// [`ChunkSink::send_text`] for binary chunks (the protobuf exposition).
    pub fn send_bytes(&mut self, chunk: &mut Vec<u8>) -> ControlFlow<()> {
        if self.gzip.is_some() {
            let flow = self.compress(chunk);
            chunk.clear();
            return flow;
        }
        let fresh = Vec::with_capacity(chunk.capacity());
        self.deliver(Bytes::from(std::mem::replace(chunk, fresh)))
    }

    fn compress(&mut self, data: &[u8]) -> ControlFlow<()> {
        let Some(encoder) = &mut self.gzip else {
            return ControlFlow::Continue(());
        };
        if encoder.write_all(data).is_err() {
            return ControlFlow::Break(());
        }
        if encoder.get_ref().len() < GZIP_CHUNK {
            return ControlFlow::Continue(());
        }
        let compressed = std::mem::take(encoder.get_mut());
        self.deliver(Bytes::from(compressed))
    }

    /// Sends `bytes`, waiting (at most [`STALL_TIMEOUT`]) while the channel is full.
    fn deliver(&mut self, bytes: Bytes) -> ControlFlow<()> {
        if bytes.is_empty() {
            return ControlFlow::Continue(());
        }
        self.send(Piece::Data(bytes))
    }

    fn send(&mut self, piece: Piece) -> ControlFlow<()> {
        let piece = match self.sender.try_send(piece) {
            Ok(()) => return ControlFlow::Continue(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return ControlFlow::Break(()),
            Err(mpsc::error::TrySendError::Full(piece)) => piece,
        };
        let waiting = tokio::time::timeout(STALL_TIMEOUT, self.sender.send(piece));
        match self.runtime.block_on(waiting) {
            Ok(Ok(())) => ControlFlow::Continue(()),
            // The client disconnected: hyper dropped the body.
            Ok(Err(_)) => ControlFlow::Break(()),
            Err(_) => {
                tracing::info!(
                    timeout = ?STALL_TIMEOUT,
                    "a streamed response's client stopped reading; breaking off the transfer"
                );
                ControlFlow::Break(())
            }
        }
    }

    /// Completes the gzip stream (when compressing) and marks the body complete.
    fn finish(mut self) -> ControlFlow<()> {
        if let Some(encoder) = self.gzip.take() {
            match encoder.finish() {
                Ok(rest) => self.deliver(Bytes::from(rest))?,
                Err(_) => return ControlFlow::Break(()),
            }
        }
        self.send(Piece::End)
    }
}

/// Starts `render` on the blocking pool (once one of the [`MAX_RENDERS`] turns is free) and
/// returns the body it streams into. `render` hands its chunks to the [`ChunkSink`] and stops
/// when that answers `Break`; when it returns `Continue` the body is completed. Memory freed by
/// the render is given back to the operating system afterwards.
pub async fn render_streamed<F>(gzip: bool, render: F) -> StreamedBody
where
    F: FnOnce(&mut ChunkSink) -> ControlFlow<()> + Send + 'static,
{
    // The semaphore is never closed, so acquiring only waits.
    let turn = RENDERS.acquire().await.ok();
    let (sender, pieces) = mpsc::channel(QUEUED_CHUNKS);
    let mut sink = ChunkSink {
        sender,
        gzip: gzip.then(|| GzEncoder::new(Vec::new(), flate2::Compression::fast())),
        runtime: Handle::current(),
    };
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        if render(&mut sink).is_continue() {
            let _ = sink.finish();
        } else {
            drop(sink);
        }
        crate::sys::release_freed_memory();
    });
    StreamedBody {
        pieces,
        ended: false,
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;

//! Body types and the guard that streams a body while enforcing a size limit,
//! an idle timeout and an absolute deadline. Bodies are never buffered here.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

use crate::clock::deadline::Wait;
use crate::clock::Tick;

/// Errors carried inside bodies; any error type may appear in the chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of requests sent upstream.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// An empty upstream request body (a zero-sized box: no allocation).
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body with fixed contents, for responses the gateway makes itself.
pub fn full(data: impl Into<Bytes>) -> ResponseBody {
    ResponseBody::Full {
        body: Full::new(data.into()),
    }
}

pin_project_lite::pin_project! {
    /// The body of every response sent to clients: either made by the gateway
    /// or streamed from an upstream. A concrete enum rather than a boxed
    /// trait object, so the hot path allocates nothing for it.
    #[project = ResponseBodyProj]
    pub enum ResponseBody {
        /// Made by the gateway (errors, `respond`, `redirect`).
        Full { #[pin] body: Full<Bytes> },
        /// Streamed from an upstream, with its read and total timeouts; the
        /// target counts the request in flight until this body is dropped.
        Upstream {
            #[pin] body: GuardedBody<crate::upstream::pool::PooledBody>,
            held: Option<crate::upstream::limits::Held>,
        },
        /// Another body, with things plugins keep until the response is
        /// done (concurrency slots): dropped with the body, when it is sent,
        /// fails or the client goes away.
        Holding {
            body: Pin<Box<ResponseBody>>,
            holds: Vec<crate::plugins::context::Hold>,
        },
        /// Another body whose bytes are counted; the request is recorded
        /// (metrics, access log, spans) when this is dropped.
        Observed { inner: Pin<Box<ObservedBody>> },
        /// An upstream's gRPC body as gRPC-Web (trailers as a last frame).
        GrpcWeb { inner: Pin<Box<super::grpc_web::EncodeWeb>> },
    }
}

pin_project_lite::pin_project! {
    /// A response body with the record of its request, in one allocation.
    /// Fields drop in order: the body (and what it holds) first, then the
    /// record, which is written out as it drops.
    pub struct ObservedBody {
        #[pin]
        body: ResponseBody,
        finish: crate::observability::request::Finish,
    }
}

impl ResponseBody {
    /// This body, keeping `holds` until it is dropped.
    pub fn holding(self, holds: Vec<crate::plugins::context::Hold>) -> ResponseBody {
        if holds.is_empty() {
            return self;
        }
        ResponseBody::Holding {
            body: Box::pin(self),
            holds,
        }
    }
}

impl ObservedBody {
    /// The record of a request that has just arrived, in the allocation its
    /// response body will be kept in (made once: the record is filled in
    /// place rather than moved from the pipeline's stack when it is done).
    /// Until [`ResponseBody::observed`] gives it the response's body, it
    /// holds an empty one; dropped then, it records an abandoned request.
    pub fn new(finish: crate::observability::request::Finish) -> Box<ObservedBody> {
        Box::new(ObservedBody {
            body: ResponseBody::Full {
                body: Full::new(Bytes::new()),
            },
            finish,
        })
    }

    /// What the pipeline learns about the request, filled in as it runs.
    pub fn record(&mut self) -> &mut crate::observability::request::Record {
        &mut self.finish.record
    }

    /// Notes the response's status and the time to its headers.
    pub fn responded(&mut self, status: u16) {
        self.finish.responded(status);
    }
}

impl ResponseBody {
    /// This body, counted and recorded by `inner`'s record when it is dropped.
    pub fn observed(self, mut inner: Box<ObservedBody>) -> ResponseBody {
        inner.body = self;
        ResponseBody::Observed {
            inner: Box::into_pin(inner),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ResponseBodyProj::Full { body } => body.poll_frame(cx).map_err(|never| match never {}),
            ResponseBodyProj::Upstream { body, .. } => body.poll_frame(cx),
            ResponseBodyProj::Holding { body, .. } => body.as_mut().poll_frame(cx),
            ResponseBodyProj::Observed { inner } => {
                let this = inner.as_mut().project();
                let polled = this.body.poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    if let Some(data) = frame.data_ref() {
                        this.finish.bytes_out += data.len() as u64;
                    }
                }
                polled
            }
            ResponseBodyProj::GrpcWeb { inner } => inner.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full { body } => body.is_end_stream(),
            ResponseBody::Upstream { body, .. } => body.is_end_stream(),
            ResponseBody::Holding { body, .. } => body.is_end_stream(),
            ResponseBody::Observed { inner } => inner.body.is_end_stream(),
            ResponseBody::GrpcWeb { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full { body } => body.size_hint(),
            ResponseBody::Upstream { body, .. } => body.size_hint(),
            ResponseBody::Holding { body, .. } => body.size_hint(),
            ResponseBody::Observed { inner } => inner.body.size_hint(),
            ResponseBody::GrpcWeb { inner } => inner.size_hint(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A client's request body: streamed as it arrives, or already read
    /// whole by a plugin that needed it (`request_validation`).
    #[project = ClientBodyProj]
    pub enum ClientBody {
        /// Still arriving from the client; bytes are added to `count` when set.
        Stream {
            #[pin] body: hyper::body::Incoming,
            count: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
        },
        /// Read whole (within the route's limit).
        Buffered { data: Option<Bytes> },
    }
}

impl ClientBody {
    /// A body that streams from the client.
    pub fn stream(body: hyper::body::Incoming) -> ClientBody {
        ClientBody::Stream { body, count: None }
    }

    /// A body that streams from the client, adding its bytes to `count`.
    pub fn counted(
        body: hyper::body::Incoming,
        count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> ClientBody {
        ClientBody::Stream {
            body,
            count: Some(count),
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            ClientBodyProj::Stream { body, count } => {
                let polled = body.poll_frame(cx);
                if let (Some(c), Poll::Ready(Some(Ok(frame)))) = (count.as_ref(), &polled) {
                    if let Some(data) = frame.data_ref() {
                        c.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                polled
            }
            ClientBodyProj::Buffered { data } => Poll::Ready(
                data.take()
                    .filter(|d| !d.is_empty())
                    .map(|d| Ok(Frame::data(d))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Stream { body, .. } => body.is_end_stream(),
            ClientBody::Buffered { data } => data.as_ref().is_none_or(|d| d.is_empty()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Stream { body, .. } => body.size_hint(),
            ClientBody::Buffered { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// Why a guarded body stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// More bytes arrived than the configured limit allows.
    #[error("body is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// No bytes arrived for the idle timeout.
    #[error("no body data for {0:?}")]
    Idle(Duration),
    /// The exchange's deadline passed while the body was streaming.
    #[error("deadline passed while streaming the body")]
    Deadline,
    /// The client's body cannot be translated for the upstream (a gRPC-Web
    /// text body that is not base64).
    #[error("{0}")]
    Malformed(&'static str),
}

impl BodyError {
    /// Finds a `BodyError` in an error's source chain.
    pub fn find(mut err: &(dyn std::error::Error + 'static)) -> Option<BodyError> {
        loop {
            if let Some(b) = err.downcast_ref::<BodyError>() {
                return Some(*b);
            }
            err = err.source()?;
        }
    }
}

/// Where a request body keeps the reason it failed, for the forward step.
/// An HTTP/2 upstream connection reports a failed request body only as a
/// reset stream, without the cause, so the error chain cannot tell a body
/// over its limit from a broken upstream; the body records it here too.
#[derive(Debug, Clone, Default)]
pub struct FailureSlot(Arc<OnceLock<BodyError>>);

impl FailureSlot {
    /// Keeps `e` (the first failure wins) and returns it as a body error.
    pub fn record(&self, e: BodyError) -> BoxError {
        let _ = self.0.set(e);
        e.into()
    }

    /// Why the body failed, if it did.
    pub fn get(&self) -> Option<BodyError> {
        self.0.get().copied()
    }
}

pin_project_lite::pin_project! {
    /// Streams `inner`, failing with a [`BodyError`] when a limit is crossed.
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        limit: Option<u64>,
        seen: u64,
        idle: Option<Duration>,
        deadline: Option<Tick>,
        // Without a tokio timer per body (see `clock::deadline`). Boxed:
        // responses move several times on their way to the client, and
        // each move copies the body inline (measured: +430 instructions
        // per request unboxed).
        timer: Option<Box<Wait>>,
        armed: bool,
        failure: Option<FailureSlot>,
    }
}

/// `e` as a body error, kept in `slot` too when there is one.
pub fn fail(slot: Option<&FailureSlot>, e: BodyError) -> BoxError {
    match slot {
        Some(s) => s.record(e),
        None => e.into(),
    }
}

impl<B> GuardedBody<B> {
    /// Wraps `inner`. `limit` caps the total bytes, `idle` the pause between
    /// chunks, `deadline` the moment by which the body must be complete.
    pub fn new(
        inner: B,
        limit: Option<u64>,
        idle: Option<Duration>,
        deadline: Option<Tick>,
    ) -> Self {
        GuardedBody {
            inner,
            limit,
            seen: 0,
            idle,
            deadline,
            timer: None,
            armed: false,
            failure: None,
        }
    }

    /// Also records a failure in `slot` (see [`FailureSlot`]).
    pub fn recording(mut self, slot: Option<FailureSlot>) -> Self {
        self.failure = slot;
        self
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.armed = false;
                if let (Some(limit), Some(data)) = (*this.limit, frame.data_ref()) {
                    *this.seen += data.len() as u64;
                    if *this.seen > limit {
                        return Poll::Ready(Some(Err(fail(
                            this.failure.as_ref(),
                            BodyError::TooLarge(limit),
                        ))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.idle.is_none() && this.deadline.is_none() {
                    return Poll::Pending;
                }
                if !*this.armed {
                    // The idle window starts when we first wait after progress.
                    let idle_at = this.idle.map(|d| Tick::now() + d);
                    let at = match (idle_at, *this.deadline) {
                        (Some(a), Some(b)) => a.min(b),
                        (Some(a), None) => a,
                        (None, Some(b)) => b,
                        (None, None) => return Poll::Pending,
                    };
                    let wait = Wait::until(at);
                    match this.timer {
                        // The old deadline leaves the table as it drops.
                        Some(t) => **t = wait,
                        None => *this.timer = Some(Box::new(wait)),
                    }
                    *this.armed = true;
                }
                let Some(timer) = this.timer.as_mut() else {
                    return Poll::Pending;
                };
                ready!(timer.poll_elapsed(cx));
                let err = if this.deadline.is_some_and(|d| Tick::now() >= d) {
                    BodyError::Deadline
                } else {
                    BodyError::Idle(this.idle.unwrap_or_default())
                };
                Poll::Ready(Some(Err(fail(this.failure.as_ref(), err))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

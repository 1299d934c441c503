//! An open watch: the stream of `WatchResponse`s on its own HTTP/2
//! connection, turned into [`WatchEvent`]s.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::*;

/// The request body of a watch: frames sent through the channel; it stays
/// open (the stream is not half-closed) while the sender lives.
pub(super) struct ChannelBody(pub(super) mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// An open watch on one key, from [`EtcdClient::watch`]; its own HTTP/2
/// connection, closed when this is dropped.
pub struct Watch {
    pub(super) body: Incoming,
    pub(super) decoder: FrameDecoder,
    pub(super) pending: VecDeque<WatchEvent>,
    pub(super) url: String,
    pub(super) _requests: mpsc::Sender<Bytes>,
    pub(super) _sender: SendRequest<ChannelBody>,
    pub(super) connection: JoinHandle<()>,
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("endpoint", &self.url)
            .finish()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Watch {
    /// Next event, waiting as long as needed; `Ok(None)` when the server
    /// closed the stream; `Err` when the connection is lost
    /// ([`EtcdError::Unreachable`]) or the watch was canceled
    /// ([`EtcdError::Compacted`] when its start revision was compacted).
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, EtcdError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            match self.read_response().await? {
                Some(response) => self.absorb(response)?,
                None => return Ok(None),
            }
        }
    }

    /// Queues the response's events; progress and `created` answers carry none.
    pub(super) fn absorb(&mut self, response: pb::WatchResponse) -> Result<(), EtcdError> {
        self.pending.extend(response_events(response)?);
        Ok(())
    }

    /// The next whole `WatchResponse`; `None` at the end of the stream.
    pub(super) async fn read_response(&mut self) -> Result<Option<pb::WatchResponse>, EtcdError> {
        loop {
            if let Some(message) = self.decoder.next_message()? {
                return pb::WatchResponse::decode(message).map(Some).map_err(|e| {
                    EtcdError::Protocol(format!("cannot decode a watch answer: {e}"))
                });
            }
            let frame = match self.body.frame().await {
                None if self.decoder.is_empty() => return Ok(None),
                None => {
                    return Err(EtcdError::Protocol(
                        "the watch stream ended inside a message".into(),
                    ))
                }
                Some(Err(e)) => {
                    return Err(unreachable(
                        &self.url,
                        format!("the watch connection was lost: {e}"),
                    ))
                }
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => self.decoder.push(&data),
                Err(frame) => {
                    if let Some(status) = frame.trailers_ref().and_then(grpc_status) {
                        status?;
                        return Ok(None);
                    }
                }
            }
        }
    }
}

/// The events of one `WatchResponse`, or why the watch ended.
pub(super) fn response_events(response: pb::WatchResponse) -> Result<Vec<WatchEvent>, EtcdError> {
    if response.compact_revision > 0 {
        return Err(EtcdError::Compacted {
            revision: response.compact_revision,
        });
    }
    if response.canceled {
        let reason = match response.cancel_reason {
            r if r.is_empty() => "no reason given".to_string(),
            r => r,
        };
        return Err(EtcdError::WatchCanceled { reason });
    }
    response.events.into_iter().map(watch_event).collect()
}

fn watch_event(event: pb::Event) -> Result<WatchEvent, EtcdError> {
    let kv = event
        .kv
        .ok_or_else(|| EtcdError::Protocol("watch event without its key-value".into()))?;
    match pb::EventType::try_from(event.r#type) {
        Ok(pb::EventType::Put) => Ok(WatchEvent::Put(stored(kv))),
        Ok(pb::EventType::Delete) => Ok(WatchEvent::Deleted {
            revision: kv.mod_revision,
        }),
        Err(_) => Err(EtcdError::Protocol(format!(
            "unknown watch event type {}",
            event.r#type
        ))),
    }
}

//! What a handler answers: a response frame as the buffers it is made of.

use bytes::Bytes;

use crate::protocol::ProtocolError;
use crate::shard::fetch_memory::FetchReservation;

/// A response frame as the buffers it is made of, and the memory charged for them.
#[derive(Debug)]
pub struct Response {
    /// The frame (size prefix included), in order; written with one vectored send.
    pub parts: Vec<Bytes>,
    /// Fetch memory charged for `parts`; released when the response is dropped, that is once
    /// the writer has sent it or the connection has died. Held for its `Drop` only.
    #[allow(dead_code)]
    pub hold: Option<FetchReservation>,
}

impl Response {
    /// Bytes of the frame.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }
}

impl From<Vec<Bytes>> for Response {
    fn from(parts: Vec<Bytes>) -> Self {
        Response { parts, hold: None }
    }
}

/// A handler's answer: the response, or nothing (acks=0 Produce).
pub type Reply = Result<Option<Response>, ProtocolError>;

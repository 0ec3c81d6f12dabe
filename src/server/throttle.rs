//! The socket side of client quotas (`security::quota`): what one request of a connection
//! costs against its client's quotas, the `throttle_time_ms` it is answered with, and how
//! long the connection is then muted.
//!
//! As Kafka since KIP-219: the response goes out at once carrying the throttle time, and the
//! broker reads nothing more from the connection until that time has passed; the client is
//! never disconnected for it. A Produce is measured by its request bytes before it is served
//! (so its own response carries the throttle), a Fetch by its response bytes after (its
//! `throttle_time_ms` is written into the encoded response), and every request by the time
//! the shard spent polling it (`request_percentage`). As in Kafka a Fetch under a
//! `consumer_byte_rate` asks for at most one quota window's worth of bytes; unlike Kafka, a
//! Fetch over its quota still carries its records (Kafka answers it empty and un-records
//! them): the mute that follows holds the consumer to its rate all the same.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::response::Reply;
use crate::security::quota::{QuotaStore, QuotaType};

/// One request's account against its client's quotas; `None` from [`Account::open`] when
/// the broker has no quota at all (nothing is measured then).
pub struct Account {
    quotas: Arc<QuotaStore>,
    user: String,
    client_id: String,
}

impl Account {
    /// The account of a request from `principal` (`User:<name>`, asked only when some quota
    /// is set) with `client_id`.
    pub fn open(
        quotas: &Arc<QuotaStore>,
        principal: impl FnOnce() -> String,
        client_id: &str,
    ) -> Option<Account> {
        if quotas.is_empty() {
            return None;
        }
        let principal = principal();
        Some(Account {
            quotas: quotas.clone(),
            user: principal
                .strip_prefix("User:")
                .unwrap_or(&principal)
                .to_string(),
            client_id: client_id.to_string(),
        })
    }

    /// The most bytes a Fetch of this client may ask for (`usize::MAX` without a
    /// `consumer_byte_rate`): one quota window's worth, as Kafka bounds `fetch.max.bytes`.
    pub fn fetch_allowance(&self) -> usize {
        self.quotas
            .window_allowance(QuotaType::Fetch, &self.user, &self.client_id)
            .map_or(usize::MAX, |b| (b as usize).max(1))
    }

    /// Records a Produce request of `bytes`; its throttle time in ms.
    pub fn produce(&self, bytes: usize) -> u64 {
        self.quotas.record(
            QuotaType::Produce,
            &self.user,
            &self.client_id,
            bytes as f64,
        )
    }

    /// After the request was served in `busy` shard time: records its time and, for a
    /// Fetch, its response bytes; writes the Fetch's `throttle_time_ms`. Returns the longest
    /// throttle of the request (`earlier`: the one found before it was served).
    pub fn finish(
        &self,
        reply: &mut Reply,
        fetch_version: Option<i16>,
        busy: Duration,
        earlier: u64,
    ) -> u64 {
        // Kafka's request time unit: percent of one thread for one second.
        let percent_seconds = busy.as_secs_f64() * 100.0;
        let mut throttle = earlier.max(self.quotas.record(
            QuotaType::Request,
            &self.user,
            &self.client_id,
            percent_seconds,
        ));
        if let (Some(version), Ok(Some(response))) = (fetch_version, reply.as_mut()) {
            let bytes = response.len();
            throttle = throttle.max(self.quotas.record(
                QuotaType::Fetch,
                &self.user,
                &self.client_id,
                bytes as f64,
            ));
            if throttle > 0 {
                set_fetch_throttle(&mut response.parts, version, throttle);
            }
        }
        throttle
    }
}

/// Writes `throttle_ms` into an encoded Fetch response frame: `throttle_time_ms` is the
/// body's first field, after the size, the correlation id and (v12+) the header's empty
/// tagged fields.
fn set_fetch_throttle(parts: &mut [Bytes], version: i16, throttle_ms: u64) {
    let at = 8 + usize::from(version >= 12);
    let Some(first) = parts.first_mut() else {
        return;
    };
    if first.len() < at + 4 {
        return;
    }
    let mut patched = BytesMut::from(&first[..]);
    let ms = i32::try_from(throttle_ms).unwrap_or(i32::MAX);
    patched[at..at + 4].copy_from_slice(&ms.to_be_bytes());
    *first = patched.freeze();
}

/// A future with the time spent polling it (the shard's time on the request, not its waits).
pub struct Timed<F> {
    inner: Pin<Box<F>>,
    busy: Duration,
}

impl<F: Future> Timed<F> {
    /// `inner`, timed.
    pub fn new(inner: F) -> Self {
        Timed {
            inner: Box::pin(inner),
            busy: Duration::ZERO,
        }
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let started = Instant::now();
        let polled = self.inner.as_mut().poll(cx);
        self.busy += started.elapsed();
        match polled {
            Poll::Ready(out) => Poll::Ready((out, self.busy)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_throttle_lands_on_the_field() {
        use crate::protocol::fetch_response::encode_fetch_response;
        use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
        use kafka_protocol::protocol::Decodable;
        for version in [4i16, 11, 12, 16] {
            let mut parts = encode_fetch_response(version, 7, 0, 0, &[], &[]).expect("encode");
            set_fetch_throttle(&mut parts, version, 1234);
            let frame: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            let mut b = Bytes::from(frame).split_off(4);
            let h = ResponseHeader::decode(&mut b, ApiKey::Fetch.response_header_version(version))
                .expect("header");
            assert_eq!(h.correlation_id, 7);
            let r = FetchResponse::decode(&mut b, version).expect("body");
            assert_eq!(r.throttle_time_ms, 1234, "v{version}");
        }
    }
}

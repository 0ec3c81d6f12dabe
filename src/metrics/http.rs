//! A minimal HTTP/1.1 server for Prometheus scrapes, on the glommio executor it is spawned on.
//!
//! One request per connection: read the head (bounded by [`HTTP_REQUEST_BYTES_MAX`] and
//! [`HTTP_TIMEOUT`]), answer, close. `GET /metrics` (any query string) gets the rendered
//! snapshots; `HEAD /metrics` the same head without body; another path 404, another method
//! on `/metrics` 405, a malformed or oversized head 400/431. At most
//! [`HTTP_CONNECTIONS_MAX`] scrapes are served at once; further connections are closed.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::{render_prometheus, MetricsSnapshot, CONTENT_TYPE};

/// Largest request head read; longer ones get 431 and the connection is closed.
pub const HTTP_REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Scrape connections served at once; more are closed at accept.
pub const HTTP_CONNECTIONS_MAX: usize = 16;
/// How long a client may take to send its request head, and each write may block.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A scrape's future: the snapshots of every shard.
pub type GatherFuture = Pin<Box<dyn Future<Output = Vec<MetricsSnapshot>>>>;

/// Serves `GET /metrics` on `listener` until the task is dropped. `gather` collects the
/// snapshots of every shard (over the mesh) for each scrape.
pub async fn serve_http(
    listener: TcpListener,
    gather: impl Fn() -> Pin<Box<dyn Future<Output = Vec<MetricsSnapshot>>>> + 'static,
) {
    let gather: Rc<dyn Fn() -> GatherFuture> = Rc::new(gather);
    let active = Rc::new(Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if active.get() >= HTTP_CONNECTIONS_MAX {
            tracing::warn!(
                limit = HTTP_CONNECTIONS_MAX,
                "metrics: too many scrapes at once; closing connection"
            );
            drop(stream);
            continue;
        }
        active.set(active.get() + 1);
        let (gather, active) = (gather.clone(), active.clone());
        glommio::spawn_local(async move {
            if let Err(e) = serve_one(stream, &*gather).await {
                tracing::debug!(error = %e, "metrics: connection ended with an error");
            }
            active.set(active.get() - 1);
        })
        .detach();
    }
}

/// What the request head asked for.
#[derive(Debug, PartialEq)]
enum Route {
    Metrics { head_only: bool },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Parses the request line of a complete head (`GET /metrics HTTP/1.1`).
fn route(head: &[u8]) -> Route {
    let Ok(head) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    let line = head.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return Route::NotFound;
    }
    match method {
        "GET" => Route::Metrics { head_only: false },
        "HEAD" => Route::Metrics { head_only: true },
        _ => Route::MethodNotAllowed,
    }
}

/// Reads until the blank line that ends the head; `None` when it exceeds the limit.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before the end of the request head",
            ));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if end + 4 > HTTP_REQUEST_BYTES_MAX {
                return Ok(None);
            }
            head.truncate(end);
            return Ok(Some(head));
        }
        if head.len() >= HTTP_REQUEST_BYTES_MAX {
            return Ok(None);
        }
    }
}

async fn serve_one(
    mut stream: TcpStream,
    gather: &dyn Fn() -> GatherFuture,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let route = match read_head(&mut stream).await? {
        Some(head) => route(&head),
        None => {
            respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request head too large\n",
                false,
            )
            .await?;
            // Closing with unread input would reset the connection and could destroy the
            // response before the client reads it: read (a bounded amount) to the client's end.
            stream.shutdown(std::net::Shutdown::Write).await?;
            stream.set_read_timeout(Some(Duration::from_secs(1)))?;
            let mut sink = [0u8; 1024];
            let mut drained = 0;
            while drained < 8 * HTTP_REQUEST_BYTES_MAX {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
            return stream.close().await;
        }
    };
    let (status, content_type, body, head_only) = match route {
        Route::Metrics { head_only } => {
            let body = render_prometheus(&gather().await).into_bytes();
            ("200 OK", CONTENT_TYPE, body, head_only)
        }
        Route::NotFound => (
            "404 Not Found",
            "text/plain",
            b"not found; try /metrics\n".to_vec(),
            false,
        ),
        Route::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain",
            b"GET or HEAD only\n".to_vec(),
            false,
        ),
        Route::BadRequest => (
            "400 Bad Request",
            "text/plain",
            b"bad request\n".to_vec(),
            false,
        ),
    };
    respond(&mut stream, status, content_type, &body, head_only).await?;
    stream.close().await
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        response.push_str("Allow: GET, HEAD\r\n");
    }
    response.push_str("\r\n");
    let mut bytes = response.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    stream.write_all(&bytes).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ShardMetrics;

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            route(b"GET /metrics?name[]=x HTTP/1.0"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1"),
            Route::Metrics { head_only: true }
        );
        assert_eq!(route(b"GET / HTTP/1.1"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1"), Route::MethodNotAllowed);
        assert_eq!(route(b"GET /metrics"), Route::BadRequest);
        assert_eq!(route(b"GET metrics HTTP/1.1"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics SPDY/3"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
    }

    /// Sends `request` to a fresh `serve_http` on loopback and returns the whole response.
    fn exchange(requests: &[&[u8]]) -> Vec<String> {
        let requests: Vec<Vec<u8>> = requests.iter().map(|r| r.to_vec()).collect();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
                let addr = listener.local_addr().expect("addr");
                let metrics = Rc::new(ShardMetrics::new(0));
                metrics.partition("t", 0).record_produce(10, 1);
                let server = glommio::spawn_local(serve_http(listener, move || {
                    let m = metrics.clone();
                    Box::pin(async move { vec![m.snapshot()] })
                }));
                let mut out = Vec::new();
                for r in requests {
                    let mut c = TcpStream::connect(addr).await.expect("connect");
                    c.write_all(&r).await.expect("write");
                    let mut resp = Vec::new();
                    c.read_to_end(&mut resp).await.expect("read to the close");
                    out.push(String::from_utf8_lossy(&resp).into_owned());
                }
                drop(server);
                out
            })
            .expect("executor")
            .join()
            .expect("join")
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let big = [
            b"GET /metrics HTTP/1.1\r\nX: ".as_slice(),
            &[b'a'; HTTP_REQUEST_BYTES_MAX],
            b"\r\n\r\n",
        ]
        .concat();
        let r = exchange(&[
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
            b"GET /other HTTP/1.1\r\n\r\n",
            b"DELETE /metrics HTTP/1.1\r\n\r\n",
            b"HEAD /metrics HTTP/1.1\r\n\r\n",
            &big,
        ]);
        let (head, body) = r[0].split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("Connection: close"));
        assert!(
            body.contains("shardlog_partition_produced_bytes_total{shard=\"0\",topic=\"t\",partition=\"0\"} 10"),
            "{body}"
        );
        assert!(r[1].starts_with("HTTP/1.1 404 "), "{}", r[1]);
        assert!(
            r[2].starts_with("HTTP/1.1 405 ") && r[2].contains("Allow: GET, HEAD"),
            "{}",
            r[2]
        );
        assert!(
            r[3].starts_with("HTTP/1.1 200 ") && r[3].ends_with("\r\n\r\n"),
            "{}",
            r[3]
        );
        assert!(r[4].starts_with("HTTP/1.1 431 "), "{}", r[4]);
    }
}

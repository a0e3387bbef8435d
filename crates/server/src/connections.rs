//! The server's connections: accepting them, bounding how many are open
//! and how long a client may take to send a request, and closing them at
//! shutdown. No number of connections a client opens, and nothing it
//! sends or leaves unsent, may keep the server from others.
//!
//! - A request's headers must arrive within
//!   [`ConnectionLimits::header_timeout`] from the moment the server is
//!   ready for them: on a new connection, or on a kept-alive one after its
//!   last answer. (This is hyper's header-read timer, which starts when the
//!   connection waits for a request; so it is also how long an idle
//!   kept-alive connection stays open.)
//! - Its body within [`ConnectionLimits::body_timeout`] (408), and within
//!   the body limit (413; from `Content-Length`, at once, before any
//!   `100 Continue`): see [`read_body`].
//! - At most [`ConnectionLimits::max_connections`] are open, fewer if the
//!   process's open-file limit would not hold them. A connection past the
//!   bound makes room by closing the oldest one that is not being answered
//!   (idle, or still sending its request); only if every one is being
//!   answered is it refused, with a 503 written straight to the socket. So
//!   connections that send nothing cannot keep a probe or a command out.
//! - With TLS (see [`crate::tls`]), the handshake must finish within the
//!   header timeout too; past the bound a TLS connection is closed without
//!   an answer (a plain 503 would mean nothing to a TLS client).
//! - Connections are accepted from a queue of [`DEFAULT_LISTEN_BACKLOG`]
//!   (see [`listen`]): a load balancer that opens hundreds at once must
//!   not find it full, or the kernel drops its handshakes and each waits
//!   out a one-second retransmission.
//! - At shutdown the server stops accepting, closes at once every
//!   connection that is idle or still sending, and lets those being
//!   answered finish.

use crate::error::ApiError;
use crate::tls::Tls;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Connections served at once, unless configured otherwise (and unless the
/// open-file limit holds fewer: see [`effective_max_connections`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How long a request's headers may take, unless configured otherwise.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a request's body may take, unless configured otherwise.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections the kernel completes and queues for the server to accept,
/// unless configured otherwise. Linux caps it at `net.core.somaxconn`
/// (4096 by default since 5.4). tokio's `TcpListener::bind` asks for 128,
/// as std's does; a load balancer opening a connection per waiting client
/// to the host that owns a hot aggregate overflowed that (see decision
/// record 0057).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;

/// Open files kept for everything but client connections: the database
/// pool, the modules and their cache, the watcher, logs.
const FILES_FOR_THE_REST: u64 = 128;

/// The bounds on clients' connections (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// `configured`, or fewer if the process's open-file limit (`limit`, if
/// known) would run out first: accepting past it fails for every client,
/// probes included.
pub fn effective_max_connections(configured: usize, limit: Option<u64>) -> usize {
    let Some(limit) = limit else {
        return configured;
    };
    let room = usize::try_from(limit.saturating_sub(FILES_FOR_THE_REST))
        .unwrap_or(usize::MAX)
        .max(1);
    configured.min(room)
}

/// A listener on `address` whose accept queue holds `backlog` connections
/// (capped by the kernel: see [`kernel_backlog_cap`]). Like tokio's
/// `TcpListener::bind`, it reuses an address left in TIME_WAIT, so a
/// restarted server can listen again at once.
pub fn listen(address: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match address {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// The most a listen backlog can be (`net.core.somaxconn`, Linux): a larger
/// one is silently cut to it. `None` where it cannot be read.
pub fn kernel_backlog_cap() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The soft limit on open files (`/proc/self/limits`, Linux); `None` where
/// it cannot be read, or is unlimited.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// What one connection is doing, as its requests pass [`read_body`].
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Requests whose headers arrived and whose body is still coming.
    sending: AtomicUsize,
    /// Requests read whole and not yet answered to the last byte (a
    /// follower's stream stays here while it lasts).
    answering: AtomicUsize,
}

/// Where a connection stands, for choosing which to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Waiting for a request, or for the rest of its headers.
    Idle,
    /// Sending a request's body.
    Sending,
    Answering,
}

impl Activity {
    fn phase(&self) -> Phase {
        if self.answering.load(Ordering::Acquire) > 0 {
            Phase::Answering
        } else if self.sending.load(Ordering::Acquire) > 0 {
            Phase::Sending
        } else {
            Phase::Idle
        }
    }

    fn enter(self: &Arc<Self>, counter: fn(&Self) -> &AtomicUsize) -> Counted {
        counter(self).fetch_add(1, Ordering::AcqRel);
        Counted {
            activity: self.clone(),
            counter,
        }
    }
}

/// One count in an [`Activity`], taken back when dropped.
struct Counted {
    activity: Arc<Activity>,
    counter: fn(&Activity) -> &AtomicUsize,
}

impl Drop for Counted {
    fn drop(&mut self) {
        (self.counter)(&self.activity).fetch_sub(1, Ordering::AcqRel);
    }
}

/// One open connection, as the registry sees it.
struct Open {
    activity: Arc<Activity>,
    /// Cancelled to close the connection at once.
    close: CancellationToken,
}

/// The open connections, oldest first.
struct Registry {
    open: Mutex<BTreeMap<u64, Open>>,
    max: usize,
}

impl Registry {
    fn new(max: usize) -> Self {
        Self {
            open: Mutex::new(BTreeMap::new()),
            max,
        }
    }

    /// Room for one more, closing the oldest connection that is not being
    /// answered if the bound is reached; `None` if every one is.
    fn admit(&self, id: u64) -> Option<(Arc<Activity>, CancellationToken)> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= self.max {
            let victim = open
                .iter()
                .map(|(id, o)| (o.activity.phase(), *id))
                .filter(|(phase, _)| *phase != Phase::Answering)
                .min()?;
            if let Some(closed) = open.remove(&victim.1) {
                debug!(phase = ?victim.0, "at the connection bound: closing the oldest connection not being answered");
                closed.close.cancel();
            }
        }
        let activity = Arc::new(Activity::default());
        let close = CancellationToken::new();
        open.insert(
            id,
            Open {
                activity: activity.clone(),
                close: close.clone(),
            },
        );
        Some((activity, close))
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Closes every connection that is idle or still sending.
    fn close_unanswered(&self) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut closed = 0;
        for o in open.values() {
            if o.activity.phase() != Phase::Answering {
                o.close.cancel();
                closed += 1;
            }
        }
        closed
    }
}

/// Serves `router` on `listener` until `stop` is cancelled, then closes
/// what is not being answered and waits for the rest (the caller bounds
/// that wait).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<Tls>,
    stop: CancellationToken,
) {
    let registry = Arc::new(Registry::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut next_id = 0u64;
    // Accepting failed last time: said once, not a hundred times a second.
    let mut failing = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        // Reap finished connections as we go: the set stays as small as
        // what is open.
        while connections.try_join_next().is_some() {}
        let tcp = match accepted {
            Ok((tcp, _)) => {
                failing = false;
                tcp
            }
            Err(e) => {
                // Out of files or memory: the bound is meant to keep this
                // from happening; if something else holds the files, wait
                // a moment rather than spin.
                if !failing {
                    warn!(error = %e, "cannot accept connections; retrying every 10 ms");
                }
                failing = true;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
        next_id += 1;
        let Some((activity, close)) = registry.admit(next_id) else {
            if tls.is_none() {
                refuse(tcp);
            }
            continue;
        };
        let (registry, router, tls, stop, id) = (
            registry.clone(),
            router.clone(),
            tls.clone(),
            stop.clone(),
            next_id,
        );
        connections.spawn(async move {
            let connection = Connection {
                router,
                limits,
                activity,
                close,
                stop,
            };
            match tls {
                None => connection.serve(tcp).await,
                Some(tls) => connection.serve_tls(tcp, &tls).await,
            }
            registry.remove(id);
        });
    }
    let closed = registry.close_unanswered();
    debug!(
        closed,
        "stopped accepting; closed the connections not being answered"
    );
    while connections.join_next().await.is_some() {}
}

/// One connection, until it ends, is closed (`close`), or the server stops
/// (`stop`: it then finishes the request it is answering, if any).
struct Connection {
    router: Router,
    limits: ConnectionLimits,
    activity: Arc<Activity>,
    close: CancellationToken,
    stop: CancellationToken,
}

impl Connection {
    /// The TLS handshake, within the header deadline, then HTTP over it.
    async fn serve_tls(self, tcp: TcpStream, tls: &Tls) {
        let handshake =
            tokio::time::timeout(self.limits.header_timeout, tls.acceptor().accept(tcp));
        let handshake = tokio::select! {
            handshake = handshake => handshake,
            () = self.close.cancelled() => return,
            () = self.stop.cancelled() => return,
        };
        match handshake {
            Ok(Ok(stream)) => self.serve(stream).await,
            Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
            Err(_elapsed) => debug!("TLS handshake not finished within the header timeout"),
        }
    }

    async fn serve<Io>(self, io: Io)
    where
        Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            router,
            limits,
            activity,
            close,
            stop,
        } = self;
        let service = hyper::service::service_fn(
            move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(activity.clone());
                let mut router = router.clone();
                async move { tower_service::Service::call(&mut router, request.map(Body::new)).await }
            },
        );
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let served = tokio::select! {
            served = connection.as_mut() => served,
            () = close.cancelled() => return,
            () = stop.cancelled() => {
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    served = connection.as_mut() => served,
                    () = close.cancelled() => return,
                }
            }
        };
        if let Err(e) = served {
            debug!(error = %e, "connection ended with an error");
        }
    }
}

/// The problem [`refuse`] answers, written out once (a test checks it is
/// what an `ApiError` of its kind would say).
const TOO_MANY_CONNECTIONS: &str = r#"{"type":"/v1/problems/too_many_connections","title":"every connection the server holds is being answered; resend after Retry-After","status":503,"detail":"every connection the server holds is being answered; resend after Retry-After","kind":"too_many_connections"}"#;

/// Past the bound with every connection being answered: a 503 written
/// to the socket without reading the request, and the socket closed, all
/// at once (no task, so a flood of refusals holds no files).
fn refuse(tcp: TcpStream) {
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{TOO_MANY_CONNECTIONS}",
        TOO_MANY_CONNECTIONS.len()
    );
    // A new socket's send buffer takes this whole; if not, the client
    // sees the connection close, which says the same.
    let _ = tcp.try_write(answer.as_bytes());
}

/// What [`read_body`] needs to know.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    pub max_bytes: usize,
    /// For a component deployed (`PUT /v1/modules/{name}`,
    /// `PUT /v1/projections/{name}`, `PUT /v1/reactors/{name}`): the route
    /// is for admin tokens (or, without tokens, this server's own origin),
    /// and components are megabytes.
    pub max_component_bytes: usize,
    pub timeout: Duration,
}

/// Reads each request's body whole before its handler runs, within the
/// size limit and the body timeout, and counts the request in its
/// connection's [`Activity`] while it is sent and while it is answered.
/// A body over the limit by its `Content-Length` is refused before it is
/// read, so a client that asked `Expect: 100-continue` gets the 413, not a
/// `100 Continue`.
pub(crate) async fn read_body(
    axum::extract::State(limits): axum::extract::State<BodyLimits>,
    request: Request,
    next: Next,
) -> Response {
    let activity = request.extensions().get::<Arc<Activity>>().cloned();
    let sending = activity.as_ref().map(|a| a.enter(|a| &a.sending));
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    // `PUT /v1/reactors/{name}` deploys; `.../policy` is a small JSON body.
    let reactor_deploy = path
        .strip_prefix("/v1/reactors/")
        .is_some_and(|name| !name.contains('/'));
    let max_bytes = match parts.method == axum::http::Method::PUT
        && (path.starts_with("/v1/modules/")
            || path.starts_with("/v1/projections/")
            || reactor_deploy)
    {
        true => limits.max_component_bytes,
        false => limits.max_bytes,
    };
    // A refusal answers for the command the key names, if it names one.
    let unread = |error: ApiError| {
        let error = match parts.headers.get(eshost_api::IDEMPOTENCY_KEY) {
            Some(key) => match key.to_str() {
                Ok(key) => error.with_command_id(key),
                Err(_) => error,
            },
            None => error,
        };
        let mut response = error.into_response();
        // The rest of the body is never read: the connection cannot be
        // used again.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over the limit of {} bytes", max_bytes),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes as u64) {
        return unread(too_large());
    }
    let read = http_body_util::Limited::new(body, max_bytes).collect();
    let bytes: Bytes = match tokio::time::timeout(limits.timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return unread(too_large()),
        Ok(Err(e)) => {
            return unread(ApiError::bad_request(format!(
                "the body could not be read: {e}"
            )));
        }
        Err(_) => {
            return unread(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the body did not arrive within {} ms",
                    limits.timeout.as_millis()
                ),
            ));
        }
    };
    drop(sending);
    let answering = activity.as_ref().map(|a| a.enter(|a| &a.answering));
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    match answering {
        // Counted until the answer's last byte is written (or the client
        // goes): a follower's stream is being answered all along.
        Some(answering) => response.map(|body| {
            Body::new(Answering {
                body,
                _counted: answering,
            })
        }),
        None => response,
    }
}

/// A response body that keeps its request counted as being answered.
struct Answering {
    body: Body,
    _counted: Counted,
}

impl http_body::Body for Answering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_refusal_is_the_problem_an_api_error_would_be() {
        let error = crate::error::ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            crate::error::title("too_many_connections"),
        );
        let written: serde_json::Value = serde_json::from_str(super::TOO_MANY_CONNECTIONS).unwrap();
        assert_eq!(written, serde_json::to_value(error.problem()).unwrap());
    }

    use super::*;

    #[test]
    fn the_bound_leaves_room_for_the_rest_of_the_open_files() {
        assert_eq!(effective_max_connections(4096, Some(1024)), 896);
        assert_eq!(effective_max_connections(100, Some(1024)), 100);
        assert_eq!(effective_max_connections(4096, None), 4096);
        assert_eq!(effective_max_connections(4096, Some(10)), 1);
    }

    #[test]
    fn the_oldest_connection_not_being_answered_makes_room() {
        let registry = Registry::new(3);
        let (first, _) = registry.admit(1).unwrap();
        let _answering = first.enter(|a| &a.answering);
        let (second, second_closed) = registry.admit(2).unwrap();
        let _sending = second.enter(|a| &a.sending);
        let (_, third_closed) = registry.admit(3).unwrap();
        // An idle one goes first, though it is the youngest.
        let (fourth, fourth_closed) = registry.admit(4).unwrap();
        assert!(third_closed.is_cancelled() && !second_closed.is_cancelled());
        // With none idle, the oldest one still sending.
        let _answering_too = fourth.enter(|a| &a.answering);
        registry.admit(5).unwrap();
        assert!(second_closed.is_cancelled() && !fourth_closed.is_cancelled());

        let full = Registry::new(1);
        let (only, only_closed) = full.admit(1).unwrap();
        let _busy = only.enter(|a| &a.answering);
        assert!(
            full.admit(2).is_none(),
            "every connection is being answered"
        );
        assert!(!only_closed.is_cancelled());
    }
}

//! The load driver's HTTP side: one keep-alive HTTP/1.1 connection per
//! caller, one request in flight on it at a time.
//!
//! It is deliberately as lean as wrk or h2load rather than a general client
//! (the command line's reqwest client has a pool, URL parsing and a task
//! per connection): the driver shares the two cores with the server it
//! measures, so every microsecond it spends is taken from the server. A
//! request is one write; the answer is read until its `Content-Length` is
//! in, with `httparse` (hyper's own parser) reading the head.
//!
//! [`Resending`] is the client behind a load balancer: it resends through
//! lost connections, 502/503/504, 429 and 409 `conflict` with the same
//! Idempotency-Key.

use eshost::dispatch::CommandRequest;
use eshost_api::Problem;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One caller's connection.
pub struct Connection {
    stream: TcpStream,
    host: String,
    /// `Authorization: Bearer ...\r\n`, or nothing.
    authorization: String,
    /// Bytes read and not yet consumed.
    buffer: Vec<u8>,
}

/// The fields of a command's answer the driver reads.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct Answered {
    /// Conflict retries the host needed.
    pub retries: u32,
    /// The command id was recorded before: this is the recorded outcome.
    pub replayed: bool,
}

/// A 2xx answer's fields, or the error an answer carries, as one line.
fn answered(status: u16, body: &[u8]) -> Result<Answered, String> {
    if (200..300).contains(&status) {
        serde_json::from_slice::<Answered>(body).map_err(|e| format!("{status}: {e}"))
    } else {
        Err(match serde_json::from_slice::<Problem>(body) {
            Ok(problem) => format!("{status} {}: {}", problem.kind, problem.detail),
            Err(_) => format!("{status}: {}", String::from_utf8_lossy(body)),
        })
    }
}

impl Connection {
    pub async fn open(server: SocketAddr) -> std::io::Result<Self> {
        Self::open_with_token(server, None).await
    }

    /// A connection whose requests carry `token` as their bearer token.
    pub async fn open_with_token(server: SocketAddr, token: Option<&str>) -> std::io::Result<Self> {
        let stream = TcpStream::connect(server).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            host: server.to_string(),
            authorization: token
                .map(|token| format!("Authorization: Bearer {token}\r\n"))
                .unwrap_or_default(),
            buffer: Vec::with_capacity(16 << 10),
        })
    }

    /// Sends one command; the conflict retries it took, or why it failed.
    /// Ids and names must be path-safe (the driver makes its own).
    pub async fn execute(&mut self, command: &CommandRequest) -> Result<u32, String> {
        let (status, body) = self.send(command).await.map_err(|e| e.to_string())?;
        answered(status, &body).map(|answer| answer.retries)
    }

    /// Sends one command and reads its answer: status and body.
    async fn send(&mut self, command: &CommandRequest) -> std::io::Result<(u16, Vec<u8>)> {
        let key = format!("Idempotency-Key: {}\r\n", command.command_id);
        let request = format!(
            "POST /v1/aggregates/{}/{}/commands/{} HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n{}{key}\r\n{}",
            command.aggregate,
            command.id,
            command.command,
            self.host,
            command.payload.len(),
            self.authorization,
            command.payload
        );
        self.stream.write_all(request.as_bytes()).await?;
        self.read_answer().await
    }

    /// Reads one answer: its status and body.
    async fn read_answer(&mut self) -> std::io::Result<(u16, Vec<u8>)> {
        let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut head = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = head
                .parse(&self.buffer)
                .map_err(|e| invalid(e.to_string()))?
            {
                let status = head.code.unwrap_or(0);
                let length = head
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| {
                        std::str::from_utf8(h.value)
                            .ok()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    })
                    .ok_or_else(|| invalid("an answer without Content-Length".into()))?;
                if self.buffer.len() >= head_len + length {
                    let body = self.buffer[head_len..head_len + length].to_vec();
                    self.buffer.drain(..head_len + length);
                    return Ok((status, body));
                }
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Err(invalid("the server closed the connection".into()));
            }
        }
    }
}

/// How many times a command is sent at most, the first time included.
pub const MAX_ATTEMPTS: u32 = 50;

/// True for an answer the book tells clients to resend: 502, 503 and 504
/// (the outcome unknown, or nothing done), 429 (the queue was full) and 409
/// `conflict` (other writers kept winning; nothing was recorded).
fn resendable(status: u16, body: &[u8]) -> bool {
    match status {
        429 | 502..=504 => true,
        409 => serde_json::from_slice::<Problem>(body).is_ok_and(|p| p.kind == "conflict"),
        _ => false,
    }
}

/// A caller that resends as the book tells clients to: a command whose
/// connection failed, or whose answer is [`resendable`], is sent again with
/// the same Idempotency-Key, after a short pause, up to [`MAX_ATTEMPTS`]
/// times. A command without an
/// id gets one before its first send, so a resend can never run it twice.
pub struct Resending {
    server: SocketAddr,
    token: Option<String>,
    connection: Option<Connection>,
    /// Sends after the first, over this caller's life.
    pub resends: u64,
}

impl Resending {
    pub fn new(server: SocketAddr) -> Self {
        Self {
            server,
            token: None,
            connection: None,
            resends: 0,
        }
    }

    /// This caller sends `token` as its bearer token.
    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_string);
        self.connection = None;
        self
    }

    /// A caller with its connection already open.
    pub async fn connect(server: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            connection: Some(Connection::open(server).await?),
            ..Self::new(server)
        })
    }

    /// Sends `command` until it has a final answer.
    pub async fn execute(&mut self, command: &CommandRequest) -> Result<Answered, String> {
        let mut last = String::new();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                self.resends += 1;
                let pause = 20 * u64::from(attempt.min(10));
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            let sent = match self.connection.as_mut() {
                Some(connection) => connection.send(command).await,
                None => match Connection::open_with_token(self.server, self.token.as_deref()).await
                {
                    Ok(connection) => self.connection.insert(connection).send(command).await,
                    Err(e) => Err(e),
                },
            };
            match sent {
                Ok((status, body)) if resendable(status, &body) => {
                    last = answered(status, &body).err().unwrap_or_default();
                }
                Ok((status, body)) => return answered(status, &body),
                Err(e) => {
                    // The connection is gone, or in an unknown state.
                    self.connection = None;
                    last = e.to_string();
                }
            }
        }
        Err(format!(
            "no final answer after {MAX_ATTEMPTS} sends: {last}"
        ))
    }
}

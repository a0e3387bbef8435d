//! The load driver's HTTP side: one keep-alive HTTP/1.1 connection per
//! caller, one request in flight on it at a time.
//!
//! It is deliberately as lean as wrk or h2load rather than a general client
//! (the command line's reqwest client has a pool, URL parsing and a task
//! per connection): the driver shares the two cores with the server it
//! measures, so every microsecond it spends is taken from the server. A
//! request is one write; the answer is read until its `Content-Length` is
//! in, with `httparse` (hyper's own parser) reading the head.

use crate::dispatch::CommandRequest;
use crate::server::error::ErrorBody;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One caller's connection.
pub struct Connection {
    stream: TcpStream,
    host: String,
    /// Bytes read and not yet consumed.
    buffer: Vec<u8>,
}

/// The only field of a command's answer the driver reads.
#[derive(serde::Deserialize)]
struct Retries {
    retries: u32,
}

impl Connection {
    pub async fn open(server: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(server).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            host: server.to_string(),
            buffer: Vec::with_capacity(16 << 10),
        })
    }

    /// Sends one command; the conflict retries it took, or why it failed.
    /// Ids and names must be path-safe (the driver makes its own).
    pub async fn execute(&mut self, command: &CommandRequest) -> Result<u32, String> {
        let key = command
            .command_id
            .as_deref()
            .map(|id| format!("Idempotency-Key: {id}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST /v1/aggregates/{}/{}/commands/{} HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n{key}\r\n{}",
            command.aggregate,
            command.id,
            command.command,
            self.host,
            command.payload.len(),
            command.payload
        );
        self.stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let (status, body) = self.read_answer().await.map_err(|e| e.to_string())?;
        if (200..300).contains(&status) {
            serde_json::from_slice::<Retries>(&body)
                .map(|answer| answer.retries)
                .map_err(|e| format!("{status}: {e}"))
        } else {
            Err(match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(error) => format!("{status} {}: {}", error.error.kind, error.error.message),
                Err(_) => format!("{status}: {}", String::from_utf8_lossy(&body)),
            })
        }
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

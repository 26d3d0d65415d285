//! Just enough HTTP/1.1 by hand: a thread-per-connection server on $STRATA_IP:$PORT and a
//! one-shot GET client; every response closes its connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// How long a connection may take to send its request or to answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the client waits to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest request head the server reads.
const MAX_HEAD: usize = 16 * 1024;

/// A response: status code and plain-text body.
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    /// A response with `status` and `body`.
    pub fn new(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            body: body.into(),
        }
    }
}

/// Serves `handler(path)` on $STRATA_IP:$PORT (the address the catalog publishes for this
/// node, where checks and balancers dial; 127.0.0.1 when run outside Strata) until the
/// process ends.
pub fn serve(handler: impl Fn(&str) -> Response + Send + Sync + 'static) -> Result<(), String> {
    let port = std::env::var("PORT").map_err(|_| "$PORT is not set".to_string())?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("$PORT is not a port number: {port:?}"))?;
    let ip = match std::env::var("STRATA_IP") {
        Ok(text) => text
            .parse()
            .map_err(|_| format!("$STRATA_IP is not an IP address: {text:?}"))?,
        Err(_) => std::net::IpAddr::from([127, 0, 0, 1]),
    };
    let addr = std::net::SocketAddr::new(ip, port);
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!("serving http://{addr} as {}", crate::identity());
    let handler = Arc::new(handler);
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept on {addr}: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let handler = Arc::clone(&handler);
        std::thread::spawn(move || {
            if let Err(e) = answer(stream, handler.as_ref()) {
                eprintln!("connection: {e}");
            }
        });
    }
    Ok(())
}

/// Reads one request head from `stream` and writes the handler's response.
fn answer(stream: TcpStream, handler: &dyn Fn(&str) -> Response) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?).take(MAX_HEAD as u64);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut words = request_line.split_whitespace();
    let response = match (words.next(), words.next()) {
        (Some("GET"), Some(path)) => handler(path),
        (Some(_), Some(_)) => Response::new(405, "only GET\n"),
        _ => Response::new(400, "bad request\n"),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        response.status,
        reason(response.status),
        response.body.len(),
        response.body
    )?;
    stream.flush()
}

/// The reason phrase of the status codes the demo uses.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        502 => "Bad Gateway",
        _ => "Unknown",
    }
}

/// `GET path` from `addr` (HOST:PORT): the status code and the body.
pub fn get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let target = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let io = |e: std::io::Error| format!("{addr}: {e}");
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(io)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: the response has no end of headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{addr}: no status code in the response"))?;
    Ok((status, body.to_string()))
}

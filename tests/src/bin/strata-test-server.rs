//! A small HTTP service for the end-to-end tests: serves any path on $BIND_ADDR:$PORT
//! (`BIND_ADDR` defaults to 127.0.0.1; tests in network namespaces use 0.0.0.0),
//! answering with the status code written in `$HEALTH_FILE` (200 when the file is missing),
//! and logs one line per request. When the file says `down`, it closes its listening socket
//! until the file says otherwise, so TCP checks fail too. A real program under supervision,
//! with no dependency on Python or anything else.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "0".into());
    let bind = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1".into());
    let health_file = std::env::var("HEALTH_FILE").ok();
    let wanted = || -> String {
        health_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|| "200".into())
    };
    println!("serving {bind}:{port} pid {}", std::process::id());
    let mut listener: Option<TcpListener> = None;
    loop {
        let status = wanted();
        if status == "down" {
            if listener.take().is_some() {
                println!("listener closed");
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        if listener.is_none() {
            match TcpListener::bind(format!("{bind}:{port}")) {
                Ok(l) => {
                    let _ = l.set_nonblocking(true);
                    listener = Some(l);
                }
                Err(e) => {
                    eprintln!("cannot listen on {bind}:{port}: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        }
        let Some(l) = &listener else { continue };
        match l.accept() {
            Ok((stream, _)) => answer(stream, &status),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
}

fn answer(mut stream: TcpStream, status: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = String::new();
    let mut reader = BufReader::new(&stream);
    let _ = reader.read_line(&mut request);
    // The whole request head is read before answering: closing a socket with unread data
    // sends a reset, which may destroy the response before the client (or a proxy) reads it.
    let mut header = String::new();
    while matches!(reader.read_line(&mut header), Ok(n) if n > 0) && header.trim() != "" {
        header.clear();
    }
    let code: u16 = status.parse().unwrap_or(200);
    let body = format!("status {code}\n");
    let _ = write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    println!("{} -> {code}", request.trim());
}

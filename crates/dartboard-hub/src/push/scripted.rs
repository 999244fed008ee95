//! A server on 127.0.0.1 that answers as a test scripts it, for the answers no Hub
//! (and not the stand-in) gives: malformed, endless, or none at all. The push must
//! end on each with an error that names it, never a panic or a hang.
//!
//! It reads a request's head and its `Content-Length` body, hands them to the script,
//! and writes the reply on a connection it then closes. Every connection's thread ends
//! within [`HOLD`], and the listener stops when the server is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a stalled connection is held open.
const HOLD: Duration = Duration::from_secs(20);

/// A request as it arrived.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) method: String,
    /// Path and query, as sent.
    pub(crate) target: String,
    pub(crate) authorization: Option<String>,
    pub(crate) body: Vec<u8>,
}

/// What the script answers.
pub(crate) enum Reply {
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Answers nothing, holding the connection open.
    Stall,
    /// A 200 whose body never ends (until the client hangs up, or [`HOLD`]).
    Endless,
}

impl Reply {
    pub(crate) fn json(status: u16, value: serde_json::Value) -> Reply {
        Reply::Answer {
            status,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: value.to_string().into_bytes(),
        }
    }

    pub(crate) fn status(status: u16) -> Reply {
        Reply::Answer { status, headers: Vec::new(), body: Vec::new() }
    }
}

type Script = dyn Fn(&Seen) -> Reply + Send + Sync;

pub(crate) struct Scripted {
    pub(crate) endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Scripted {
    /// Serves `script`; a request whose head it cannot read is dropped.
    pub(crate) fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (script, seen, stop) = (script.clone(), seen2.clone(), stop2.clone());
                        std::thread::spawn(move || serve(stream, &*script, &seen, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Scripted { endpoint, seen, stop }
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(stream: TcpStream, script: &Script, seen: &Mutex<Vec<Seen>>, stop: &AtomicBool) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(HOLD)).unwrap();
    stream.set_write_timeout(Some(HOLD)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or("").to_owned(), words.next().unwrap_or("").to_owned());
    let (mut length, mut authorization) = (0usize, None);
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => authorization = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request = Seen { method, target, authorization, body };
    let reply = script(&request);
    seen.lock().unwrap().push(request);
    let mut stream = stream;
    match reply {
        Reply::Answer { status, headers, body } => {
            let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
        }
        Reply::Endless => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n[";
            let start = Instant::now();
            let block = vec![b' '; 1 << 20];
            let mut result = stream.write_all(head.as_bytes());
            while result.is_ok() && !stop.load(Ordering::SeqCst) && start.elapsed() < HOLD {
                result = stream.write_all(&block);
            }
        }
        Reply::Stall => {
            let start = Instant::now();
            while !stop.load(Ordering::SeqCst) && start.elapsed() < HOLD {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

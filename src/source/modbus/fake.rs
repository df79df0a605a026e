//! A minimal in-process Modbus TCP server for the unit tests of the link, the poll and the
//! task: each request is answered by a closure (registers, bits, an exception, nothing, a
//! late answer, garbage, or a closed connection). Not a simulator: the integration tests use
//! the real one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as the server saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub unit: u8,
    pub function: u8,
    pub address: u16,
    pub count: u16,
}

/// How the server answers a request.
#[derive(Clone, Debug)]
pub enum Reply {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
    Exception(u8),
    /// No answer at all.
    Silent,
    /// The right answer, after this delay.
    Late(Duration, Box<Reply>),
    /// Bytes that are not a Modbus answer (bad protocol id).
    Garbage,
    /// Close the connection.
    Close,
}

type Handler = dyn Fn(Request) -> Reply + Send + Sync;

pub struct FakeServer {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<std::sync::Mutex<Vec<Request>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    pub async fn start(handler: impl Fn(Request) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (c, r) = (connections.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, handler.clone(), r.clone()));
            }
        });
        FakeServer {
            port,
            connections,
            requests,
            task,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    handler: Arc<Handler>,
    log: Arc<std::sync::Mutex<Vec<Request>>>,
) {
    let mut header = [0u8; 7];
    loop {
        if stream.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        let mut pdu = vec![0u8; len.saturating_sub(1)];
        if stream.read_exact(&mut pdu).await.is_err() || pdu.len() < 5 {
            return;
        }
        let request = Request {
            unit: header[6],
            function: pdu[0],
            address: u16::from_be_bytes([pdu[1], pdu[2]]),
            count: u16::from_be_bytes([pdu[3], pdu[4]]),
        };
        log.lock().unwrap().push(request);
        let mut reply = handler(request);
        if let Reply::Late(delay, inner) = reply {
            tokio::time::sleep(delay).await;
            reply = *inner;
        }
        let body: Vec<u8> = match reply {
            Reply::Registers(regs) => {
                let mut b = vec![request.function, (regs.len() * 2) as u8];
                for r in regs {
                    b.extend_from_slice(&r.to_be_bytes());
                }
                b
            }
            Reply::Bits(bits) => {
                let mut bytes = vec![0u8; bits.len().div_ceil(8)];
                for (i, bit) in bits.iter().enumerate() {
                    if *bit {
                        bytes[i / 8] |= 1 << (i % 8);
                    }
                }
                let mut b = vec![request.function, bytes.len() as u8];
                b.extend(bytes);
                b
            }
            Reply::Exception(code) => vec![request.function | 0x80, code],
            Reply::Silent => continue,
            Reply::Garbage => {
                let _ = stream
                    .write_all(&[header[0], header[1], 0xFF, 0xFF, 0, 3, header[6], 3, 0])
                    .await;
                continue;
            }
            Reply::Close => return,
            Reply::Late(..) => unreachable!("unwrapped above"),
        };
        let mut frame = vec![header[0], header[1], 0, 0];
        frame.extend_from_slice(&((body.len() + 1) as u16).to_be_bytes());
        frame.push(header[6]);
        frame.extend(body);
        if stream.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// `count` registers from `address`, each holding its own address.
pub fn identity(request: Request) -> Vec<u16> {
    (0..request.count)
        .map(|i| request.address.wrapping_add(i))
        .collect()
}

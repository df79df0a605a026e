//! The link to a Modbus TCP server or an RTU serial bus: one tokio-modbus context, opened on
//! demand and thrown away whenever its state can no longer be trusted.
//!
//! tokio-modbus 0.17 has sharp edges that this module files off:
//! - no timeouts: every connect and every request runs under `tokio::time::timeout`;
//! - a late answer to a timed-out request desynchronises the context (RTU has no
//!   transaction id), and garbage frames leave it in an unknown state: after a timeout, a
//!   decode error, a mismatched answer or any I/O error the context is dropped, and the next
//!   request connects (TCP) or opens the port (RTU) again;
//! - RTU does not keep the 3.5-character silence between frames: the link waits
//!   `inter_frame_silence` after the end of every exchange before it sends the next request.
//! - RTU answers carry no transaction id, so an answer that comes after its request timed out
//!   looks like the answer to the next request of the same shape; once taken, every later
//!   answer is one request off. The input buffer is therefore emptied before every request
//!   (whatever arrived since the last answer is stale), and a unit whose request timed out is
//!   not asked again until one more timeout has passed ([`Link::ready_for`]), so that its late
//!   answer lands while nobody waits for it and is thrown away. The scheduler skips the unit
//!   until then instead of waiting: the other units on the bus keep their schedule.
//!
//! Errors are classified ([`LinkError`]) into what a technician reads in the health details
//! and what the metrics count by `reason`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_modbus::Slave;
use tokio_modbus::client::{Context, Reader, rtu, tcp};
use tokio_modbus::prelude::SlaveContext;

pub use tokio_serial::{DataBits, Parity, StopBits};

use crate::modbus::{ReadData, Table};

/// Where the link goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    Serial(SerialSettings),
}

/// An RTU serial port and its line settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialSettings {
    pub device: String,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: DataBits,
    pub stop_bits: StopBits,
    /// Quiet time on the bus between the end of one exchange and the next request.
    pub inter_frame_silence: Duration,
}

impl fmt::Display for Endpoint {
    /// `127.0.0.1:502` or `/dev/ttyUSB0 19200 8N1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
            Endpoint::Serial(s) => {
                let data = match s.data_bits {
                    DataBits::Five => 5,
                    DataBits::Six => 6,
                    DataBits::Seven => 7,
                    DataBits::Eight => 8,
                };
                let parity = match s.parity {
                    Parity::None => 'N',
                    Parity::Even => 'E',
                    Parity::Odd => 'O',
                };
                let stop = match s.stop_bits {
                    StopBits::One => 1,
                    StopBits::Two => 2,
                };
                write!(f, "{} {} {data}{parity}{stop}", s.device, s.baud)
            }
        }
    }
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// No answer within the timeout.
    #[error("timeout after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The TCP connection was not established within the timeout.
    #[error("connect timeout after {} ms", .0.as_millis())]
    ConnectTimeout(Duration),
    /// The device answered with a Modbus exception.
    #[error("exception {0} ({name})", name = crate::modbus::exception_name(*.0))]
    Exception(u8),
    #[error("connection refused")]
    Refused,
    /// The peer reset or closed the connection (or the serial line went away) mid-request.
    #[error("connection reset")]
    Reset,
    /// The TCP peer closed the connection while a request was waiting for its answer.
    #[error("connection closed by the peer")]
    Closed,
    /// A frame that does not parse, a bad CRC, or an answer that does not match the request.
    #[error("decode error: {0}")]
    Decode(String),
    /// Anything else: an address that does not resolve, a serial port that cannot be opened.
    #[error("{0}")]
    Io(String),
}

impl LinkError {
    /// The `reason` label of `edgewatch_modbus_request_failures_total`.
    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            LinkError::Timeout(_) | LinkError::ConnectTimeout(_) => "timeout".into(),
            LinkError::Exception(code) => format!("exception_{code}").into(),
            LinkError::Refused => "refused".into(),
            LinkError::Reset | LinkError::Closed => "reset".into(),
            LinkError::Decode(_) => "decode".into(),
            LinkError::Io(_) => "io".into(),
        }
    }

    /// The Modbus exception code, when the device answered with one.
    pub fn exception(&self) -> Option<u8> {
        match self {
            LinkError::Exception(code) => Some(*code),
            _ => None,
        }
    }

    /// True when the device itself answered (an exception): the link is in sync and stays.
    /// Every other failure drops the context.
    pub fn device_answered(&self) -> bool {
        matches!(self, LinkError::Exception(_))
    }
}

/// Classifies an I/O error from connecting, opening or a request.
pub fn classify_io(e: &io::Error) -> LinkError {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => LinkError::Refused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            LinkError::Reset
        }
        K::InvalidData => LinkError::Decode(e.to_string()),
        _ => LinkError::Io(e.to_string()),
    }
}

/// Classifies the failure of a request on an open context. tokio-modbus reports the end of a
/// TCP stream as `io::Error::last_os_error()`, whose text is whatever errno held ("Operation
/// now in progress"): on TCP, a transport error that is not one of the known kinds is the
/// peer closing the connection.
fn classify(e: tokio_modbus::Error, tcp: bool) -> LinkError {
    match e {
        tokio_modbus::Error::Transport(e) => match classify_io(&e) {
            LinkError::Io(_) if tcp => LinkError::Closed,
            other => other,
        },
        tokio_modbus::Error::Protocol(p) => LinkError::Decode(p.to_string()),
    }
}

/// One link: a context opened on demand, dropped after any failure that may have left it out
/// of step. Owned by exactly one task, which sends one request at a time.
pub struct Link {
    endpoint: Endpoint,
    timeout: Duration,
    context: Option<Context>,
    /// RTU: the earliest time the next request may go on the bus.
    quiet_until: Option<Instant>,
    /// RTU: per unit whose request timed out, until when a late answer may still come.
    late_until: HashMap<u8, Instant>,
    /// How many times the context was opened (connects or port opens).
    opens: u64,
    /// Round trip of the last request that was sent (a timeout counts as the timeout).
    last_round_trip: Option<Duration>,
}

impl Link {
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        Link {
            endpoint,
            timeout,
            context: None,
            quiet_until: None,
            late_until: HashMap::new(),
            opens: 0,
            last_round_trip: None,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn is_open(&self) -> bool {
        self.context.is_some()
    }

    /// Connections made or ports opened so far.
    pub fn opens(&self) -> u64 {
        self.opens
    }

    /// Round trip of the last request sent; `None` when the last call failed before sending.
    pub fn last_round_trip(&self) -> Option<Duration> {
        self.last_round_trip
    }

    /// Whether `unit` may be asked at `now`: not while an answer to its last, timed-out
    /// request may still arrive (RTU only; one timeout after the timeout).
    pub fn ready_for(&self, unit: u8, now: Instant) -> bool {
        self.late_until.get(&unit).is_none_or(|until| now >= *until)
    }

    /// Drops the context; the next request opens a new one.
    pub fn close(&mut self) {
        self.context = None;
    }

    /// Reads `count` registers or bits of `table` from `unit` at `address`, under the timeout.
    /// Any failure other than a Modbus exception drops the context.
    pub async fn read(
        &mut self,
        unit: u8,
        table: Table,
        address: u16,
        count: u16,
    ) -> Result<ReadData, LinkError> {
        self.last_round_trip = None;
        let result = self.request(unit, table, address, count).await;
        if let Err(e) = &result
            && !e.device_answered()
        {
            self.close();
        }
        result
    }

    async fn request(
        &mut self,
        unit: u8,
        table: Table,
        address: u16,
        count: u16,
    ) -> Result<ReadData, LinkError> {
        self.open().await?;
        // Only a wait still to come goes to the timer (whose ticks are 1 ms).
        if let Some(quiet) = self.quiet_until.filter(|q| *q > Instant::now()) {
            sleep_until(quiet).await;
        }
        let silence = self.silence();
        let tcp = matches!(self.endpoint, Endpoint::Tcp { .. });
        let limit = self.timeout;
        let context = self.context.as_mut().expect("opened above");
        context.set_slave(Slave(unit));
        let sent = Instant::now();
        let answer = timeout(limit, call(context, table, address, count)).await;
        let done = Instant::now();
        self.last_round_trip = Some(done - sent);
        if let Some(silence) = silence {
            self.quiet_until = Some(done + silence);
        }
        if silence.is_some() {
            match answer {
                Err(_) => self.late_until.insert(unit, done + limit),
                Ok(_) => self.late_until.remove(&unit),
            };
        }
        let data = match answer {
            Err(_elapsed) => return Err(LinkError::Timeout(limit)),
            Ok(Err(e)) => return Err(classify(e, tcp)),
            Ok(Ok(Err(code))) => return Err(LinkError::Exception(u8::from(code))),
            Ok(Ok(Ok(data))) => data,
        };
        let got = data.len();
        if got != usize::from(count) {
            return Err(LinkError::Decode(format!(
                "asked for {count} values, the answer holds {got}"
            )));
        }
        Ok(data)
    }

    fn silence(&self) -> Option<Duration> {
        match &self.endpoint {
            Endpoint::Tcp { .. } => None,
            Endpoint::Serial(s) => Some(s.inter_frame_silence),
        }
    }

    /// Connects (TCP) or opens the port (RTU) unless a context is open.
    async fn open(&mut self) -> Result<(), LinkError> {
        if self.context.is_some() {
            return Ok(());
        }
        let context = match &self.endpoint {
            Endpoint::Tcp { host, port } => {
                let connect = TcpStream::connect((host.as_str(), *port));
                let stream = match timeout(self.timeout, connect).await {
                    Err(_) => return Err(LinkError::ConnectTimeout(self.timeout)),
                    Ok(Err(e)) => {
                        return Err(match classify_io(&e) {
                            LinkError::Io(text) => LinkError::Io(format!("connect: {text}")),
                            other => other,
                        });
                    }
                    Ok(Ok(stream)) => stream,
                };
                // Requests are small and answered one at a time: no Nagle delay.
                let _ = stream.set_nodelay(true);
                tcp::attach(stream)
            }
            Endpoint::Serial(s) => {
                let port = open_serial(s)?;
                // The line settles; a request sent at once could meet a half frame.
                self.quiet_until = Some(Instant::now() + s.inter_frame_silence);
                rtu::attach(FreshInput(port))
            }
        };
        self.opens += 1;
        self.context = Some(context);
        Ok(())
    }
}

fn open_serial(s: &SerialSettings) -> Result<tokio_serial::SerialStream, LinkError> {
    use tokio_serial::SerialPort;
    let builder = tokio_serial::new(s.device.as_str(), s.baud)
        .parity(s.parity)
        .data_bits(s.data_bits)
        .stop_bits(s.stop_bits)
        .flow_control(tokio_serial::FlowControl::None);
    let port = tokio_serial::SerialStream::open(&builder)
        .map_err(|e| LinkError::Io(format!("cannot open {}: {e}", s.device)))?;
    // Whatever a device sent after our last timeout must not be read as the next answer.
    let _ = port.clear(tokio_serial::ClearBuffer::All);
    Ok(port)
}

/// A serial port that empties its input buffer before each request is written: bytes that
/// arrived since the last answer (a late answer, line noise) are never read as the answer.
#[derive(Debug)]
struct FreshInput(tokio_serial::SerialStream);

impl AsyncRead for FreshInput {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for FreshInput {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        use tokio_serial::SerialPort;
        // A request is written only while no answer is awaited, so this never drops an answer.
        let _ = self.0.clear(tokio_serial::ClearBuffer::Input);
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

async fn call(
    context: &mut Context,
    table: Table,
    address: u16,
    count: u16,
) -> tokio_modbus::Result<ReadData> {
    Ok(match table {
        Table::Coil => context
            .read_coils(address, count)
            .await?
            .map(ReadData::Bits),
        Table::DiscreteInput => context
            .read_discrete_inputs(address, count)
            .await?
            .map(ReadData::Bits),
        Table::Holding => context
            .read_holding_registers(address, count)
            .await?
            .map(ReadData::Registers),
        Table::Input => context
            .read_input_registers(address, count)
            .await?
            .map(ReadData::Registers),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified() {
        use io::ErrorKind as K;
        let e = |k| classify_io(&io::Error::from(k));
        assert_eq!(e(K::ConnectionRefused), LinkError::Refused);
        assert_eq!(e(K::ConnectionReset), LinkError::Reset);
        assert_eq!(e(K::BrokenPipe), LinkError::Reset);
        assert!(matches!(e(K::InvalidData), LinkError::Decode(_)));
        assert!(matches!(e(K::NotFound), LinkError::Io(_)));
        assert_eq!(
            LinkError::Exception(11).to_string(),
            "exception 11 (gateway target device failed to respond)"
        );
    }
}

//! Tests of the link: TCP against the in-process fake server, RTU over a pty pair.

use super::super::fake::{FakeServer, Reply, Request, identity};
use super::*;

const TIMEOUT: Duration = Duration::from_millis(150);

fn link(port: u16) -> Link {
    Link::new(
        Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
        TIMEOUT,
    )
}

#[tokio::test]
async fn reads_every_table_over_one_connection() {
    let server = FakeServer::start(|r: Request| match r.function {
        1 | 2 => Reply::Bits((0..r.count).map(|i| i % 2 == 0).collect()),
        _ => Reply::Registers(identity(r)),
    })
    .await;
    let mut link = link(server.port);
    assert_eq!(
        link.read(1, Table::Holding, 10, 3).await,
        Ok(ReadData::Registers(vec![10, 11, 12]))
    );
    assert_eq!(
        link.read(2, Table::Input, 0, 1).await,
        Ok(ReadData::Registers(vec![0]))
    );
    assert_eq!(
        link.read(1, Table::Coil, 0, 3).await,
        Ok(ReadData::Bits(vec![true, false, true]))
    );
    assert_eq!(
        link.read(1, Table::DiscreteInput, 0, 2).await,
        Ok(ReadData::Bits(vec![true, false]))
    );
    assert!(link.last_round_trip().is_some());
    assert_eq!((link.opens(), server.connections()), (1, 1));
    let units: Vec<(u8, u8)> = server
        .requests()
        .iter()
        .map(|r| (r.unit, r.function))
        .collect();
    assert_eq!(units, [(1, 3), (2, 4), (1, 1), (1, 2)]);
}

#[tokio::test]
async fn an_exception_is_named_and_keeps_the_connection() {
    let server = FakeServer::start(|r: Request| {
        if r.address >= 100 {
            Reply::Exception(2)
        } else {
            Reply::Registers(identity(r))
        }
    })
    .await;
    let mut link = link(server.port);
    let e = link.read(1, Table::Holding, 100, 2).await.unwrap_err();
    assert_eq!(e, LinkError::Exception(2));
    assert_eq!(e.to_string(), "exception 2 (illegal data address)");
    assert_eq!(e.reason(), "exception_2");
    assert!(link.is_open());
    assert!(link.read(1, Table::Holding, 0, 2).await.is_ok());
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn after_a_timeout_the_late_answer_is_never_taken_for_the_next_one() {
    // The first request is answered after twice the timeout, with the wrong values.
    let first = std::sync::atomic::AtomicBool::new(true);
    let server = FakeServer::start(move |r: Request| {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            Reply::Late(
                TIMEOUT * 2,
                Box::new(Reply::Registers(vec![0xDEAD; usize::from(r.count)])),
            )
        } else {
            Reply::Registers(identity(r))
        }
    })
    .await;
    let mut link = link(server.port);
    let e = link.read(1, Table::Holding, 0, 2).await.unwrap_err();
    assert_eq!(e, LinkError::Timeout(TIMEOUT));
    assert_eq!(e.to_string(), "timeout after 150 ms");
    assert_eq!(link.last_round_trip().map(|d| d >= TIMEOUT), Some(true));
    assert!(!link.is_open(), "a timeout drops the context");
    tokio::time::sleep(TIMEOUT * 2).await;
    assert_eq!(
        link.read(1, Table::Holding, 5, 2).await,
        Ok(ReadData::Registers(vec![5, 6]))
    );
    assert_eq!((link.opens(), server.connections()), (2, 2));
}

#[tokio::test]
async fn garbage_and_a_closed_connection_reconnect() {
    let n = std::sync::atomic::AtomicUsize::new(0);
    let server = FakeServer::start(move |r: Request| {
        match n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => Reply::Garbage,
            1 => Reply::Close,
            _ => Reply::Registers(identity(r)),
        }
    })
    .await;
    let mut link = link(server.port);
    let e = link.read(1, Table::Holding, 0, 1).await.unwrap_err();
    assert!(matches!(e, LinkError::Decode(_)), "{e:?}");
    assert_eq!(e.reason(), "decode");
    let e = link.read(1, Table::Holding, 0, 1).await.unwrap_err();
    assert!(matches!(e, LinkError::Closed | LinkError::Reset), "{e:?}");
    assert_eq!(e.reason(), "reset");
    assert!(link.read(1, Table::Holding, 0, 1).await.is_ok());
    assert_eq!(server.connections(), 3);
}

#[tokio::test]
async fn a_closed_port_is_connection_refused() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut link = link(port);
    let e = link.read(1, Table::Holding, 0, 1).await.unwrap_err();
    assert_eq!(e, LinkError::Refused);
    assert_eq!(e.to_string(), "connection refused");
    assert_eq!(link.last_round_trip(), None, "nothing was sent");
}

#[tokio::test]
async fn a_serial_port_that_does_not_exist_is_an_io_error_naming_it() {
    let mut link = Link::new(
        Endpoint::Serial(SerialSettings {
            device: "/dev/edgewatch-no-such-tty".into(),
            baud: 19200,
            parity: Parity::None,
            data_bits: DataBits::Eight,
            stop_bits: StopBits::One,
            inter_frame_silence: Duration::from_micros(2000),
        }),
        TIMEOUT,
    );
    let e = link.read(1, Table::Holding, 0, 1).await.unwrap_err();
    assert!(
        matches!(&e, LinkError::Io(text) if text.contains("/dev/edgewatch-no-such-tty")),
        "{e:?}"
    );
    assert_eq!(
        link.endpoint().to_string(),
        "/dev/edgewatch-no-such-tty 19200 8N1"
    );
}

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

/// RTU over a pseudo-terminal pair: a responder on the master side, the link on the slave.
#[cfg(unix)]
mod rtu {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_serial::SerialPort;

    use super::super::*;

    fn crc(data: &[u8]) -> u16 {
        let mut crc = 0xFFFFu16;
        for &b in data {
            crc ^= u16::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xA001
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    /// When each request arrived and each answer was written, by the responder's clock.
    #[derive(Default)]
    struct Timeline {
        requests: Vec<Instant>,
        answers: Vec<Instant>,
    }

    /// Answers read-holding requests with registers = address + `offset`; the requests listed
    /// in `late` (by index) are answered after `delay` with wrong values instead.
    fn responder(
        mut master: tokio_serial::SerialStream,
        late: Vec<usize>,
        delay: Duration,
    ) -> Arc<Mutex<Timeline>> {
        let timeline = Arc::new(Mutex::new(Timeline::default()));
        let t = timeline.clone();
        tokio::spawn(async move {
            let mut frame = [0u8; 8];
            let mut n = 0;
            loop {
                // With no slave side open (the link closed it), the master reads EIO.
                if master.read_exact(&mut frame).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                n += 1;
                let n = n - 1;
                t.lock().unwrap().requests.push(Instant::now());
                let address = u16::from_be_bytes([frame[2], frame[3]]);
                let count = u16::from_be_bytes([frame[4], frame[5]]);
                let wrong = late.contains(&n);
                if wrong {
                    tokio::time::sleep(delay).await;
                }
                let mut answer = vec![frame[0], frame[1], (count * 2) as u8];
                for i in 0..count {
                    let value = if wrong { 0xDEAD } else { address + i };
                    answer.extend_from_slice(&value.to_be_bytes());
                }
                let c = crc(&answer);
                answer.extend_from_slice(&c.to_le_bytes());
                // A late answer to a closed slave side may fail: it is lost either way.
                let _ = master.write_all(&answer).await;
                t.lock().unwrap().answers.push(Instant::now());
            }
        });
        timeline
    }

    fn pty_link(silence: Duration) -> (tokio_serial::SerialStream, Link) {
        let (master, slave) = tokio_serial::SerialStream::pair().expect("a pty pair");
        let device = slave.name().expect("the pty has a name");
        drop(slave);
        let link = Link::new(
            Endpoint::Serial(SerialSettings {
                device,
                baud: 19200,
                parity: Parity::None,
                data_bits: DataBits::Eight,
                stop_bits: StopBits::One,
                inter_frame_silence: silence,
            }),
            Duration::from_millis(150),
        );
        (master, link)
    }

    #[tokio::test]
    async fn requests_keep_the_inter_frame_silence_after_each_answer() {
        let silence = Duration::from_millis(30);
        let (master, mut link) = pty_link(silence);
        let timeline = responder(master, Vec::new(), Duration::ZERO);
        for address in [0u16, 10, 20, 30] {
            assert_eq!(
                link.read(7, Table::Holding, address, 2).await,
                Ok(ReadData::Registers(vec![address, address + 1]))
            );
        }
        let t = timeline.lock().unwrap();
        assert_eq!(t.requests.len(), 4);
        for i in 1..4 {
            let gap = t.requests[i] - t.answers[i - 1];
            assert!(
                gap >= silence,
                "request {i} came {gap:?} after the answer before it"
            );
        }
        assert_eq!(link.opens(), 1);
    }

    #[tokio::test]
    async fn after_a_timeout_the_port_is_reopened_and_the_late_answer_discarded() {
        let (master, mut link) = pty_link(Duration::from_millis(2));
        // The first answer comes after the timeout, with wrong values.
        let _timeline = responder(master, vec![0], Duration::from_millis(250));
        let e = link.read(1, Table::Holding, 100, 2).await.unwrap_err();
        assert_eq!(e, LinkError::Timeout(Duration::from_millis(150)));
        assert!(!link.is_open());
        // Let the late answer arrive while the port is closed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            link.read(1, Table::Holding, 5, 2).await,
            Ok(ReadData::Registers(vec![5, 6]))
        );
        assert_eq!(link.opens(), 2);
    }
}

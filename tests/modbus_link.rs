//! The daemon's Modbus link (`edgewatch::source::modbus::link`) against the real simulator
//! (tests/support/modbus_sim.py): reads of every table over one connection, exceptions,
//! timeouts whose late answers must never be taken for the next request, corrupt answers,
//! a restarted and a stopped simulator, and RTU over the simulator's socat pty (inter-frame
//! silence, reopening after a timeout). Every test is bounded by
//! [`TEST_TIMEOUT`](support::modbus_link::TEST_TIMEOUT).

mod support;

use std::time::{Duration, Instant};

use edgewatch::modbus::{ReadData, Table};
use edgewatch::source::modbus::link::{
    DataBits, Endpoint, Link, LinkError, Parity, SerialSettings, StopBits,
};
use support::modbus::{self, Fault, Kind, ModbusSim, Order, SimOptions};
use support::modbus_link::{bounded, rtu_link, tcp_link};

const TIMEOUT: Duration = Duration::from_millis(300);

fn registers(words: &[u16]) -> Result<ReadData, LinkError> {
    Ok(ReadData::Registers(words.to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_every_table_over_one_connection() {
    bounded(async {
        let sim = ModbusSim::tcp(SimOptions::default().request_log());
        let mut link = tcp_link(&sim, TIMEOUT);
        let cdab = Order::Cdab;
        assert_eq!(
            link.read(1, Table::Holding, Kind::U32.address(cdab), 2)
                .await,
            registers(&Kind::U32.words(cdab))
        );
        assert_eq!(
            link.read(2, Table::Input, modbus::IR_UNIT_ID, 2).await,
            registers(&[2, modbus::IR_MARKER_VALUE])
        );
        let bits = |discrete| (0..3).map(|a| modbus::bit_value(discrete, a, 0)).collect();
        assert_eq!(
            link.read(1, Table::Coil, 0, 3).await,
            Ok(ReadData::Bits(bits(false)))
        );
        assert_eq!(
            link.read(3, Table::DiscreteInput, 0, 3).await,
            Ok(ReadData::Bits(bits(true)))
        );
        assert!(link.last_round_trip().is_some());
        assert_eq!(link.opens(), 1, "one connection");
        let seen: Vec<(u8, u8, u16, u16)> = sim
            .requests()
            .iter()
            .map(|r| (r.unit, r.function, r.address, r.count))
            .collect();
        assert_eq!(
            seen,
            [(1, 3, 202, 2), (2, 4, 0, 2), (1, 1, 0, 3), (3, 2, 0, 3)]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_is_named_and_keeps_the_connection() {
    bounded(async {
        let sim = ModbusSim::tcp(SimOptions::default());
        let mut link = tcp_link(&sim, TIMEOUT);
        // An undefined address: the simulator answers exception 2.
        let e = link
            .read(1, Table::Holding, modbus::UNDEFINED_HOLDING, 1)
            .await
            .unwrap_err();
        assert_eq!(e, LinkError::Exception(2));
        assert_eq!(e.to_string(), "exception 2 (illegal data address)");
        assert_eq!(e.reason(), "exception_2");
        assert!(link.is_open());
        // An injected one, by function.
        sim.set_faults(&[Fault::exception(6).function(4)]);
        let e = link.read(1, Table::Input, 0, 1).await.unwrap_err();
        assert_eq!(e.to_string(), "exception 6 (server device busy)");
        assert!(link.is_open());
        assert_eq!(link.read(1, Table::Holding, 0, 1).await, registers(&[1]));
        assert_eq!(link.opens(), 1, "the connection was kept");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_timeout_the_late_answer_is_never_taken_for_the_next_one() {
    bounded(async {
        let sim = ModbusSim::tcp(SimOptions::default().request_log());
        // The typed block answers after twice the timeout; the bulk block at once.
        let abcd = Order::Abcd.block();
        sim.set_faults(&[
            Fault::delay(TIMEOUT * 2).addresses(u32::from(abcd)..u32::from(abcd) + 20)
        ]);
        let mut link = tcp_link(&sim, TIMEOUT);
        let e = link.read(1, Table::Holding, abcd, 2).await.unwrap_err();
        assert_eq!(e, LinkError::Timeout(TIMEOUT));
        assert_eq!(e.to_string(), "timeout after 300 ms");
        assert_eq!(link.last_round_trip().map(|d| d >= TIMEOUT), Some(true));
        assert!(!link.is_open(), "a timeout drops the context");
        // Once while the late answer is still on its way, once after it came.
        let bulk = modbus::BULK_START;
        assert_eq!(
            link.read(1, Table::Holding, bulk, 2).await,
            registers(&[bulk, bulk + 1])
        );
        tokio::time::sleep(TIMEOUT * 2).await;
        assert_eq!(
            link.read(1, Table::Holding, bulk + 2, 2).await,
            registers(&[bulk + 2, bulk + 3])
        );
        assert_eq!(link.opens(), 2);
        assert_eq!(sim.requests().len(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_answer_is_a_decode_error_and_the_link_reconnects() {
    bounded(async {
        let sim = ModbusSim::tcp(SimOptions::default());
        sim.set_faults(&[Fault::corrupt().unit(2)]);
        let mut link = tcp_link(&sim, TIMEOUT);
        let e = link.read(2, Table::Holding, 0, 1).await.unwrap_err();
        assert!(matches!(e, LinkError::Decode(_)), "{e:?}");
        assert_eq!(e.reason(), "decode");
        assert!(!link.is_open(), "a decode error drops the context");
        assert_eq!(link.read(1, Table::Holding, 0, 1).await, registers(&[1]));
        assert_eq!(link.opens(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_simulator_is_reconnected_and_a_stopped_one_refuses() {
    bounded(async {
        let mut sim = ModbusSim::tcp(SimOptions::default());
        let mut link = tcp_link(&sim, TIMEOUT);
        assert_eq!(link.read(1, Table::Holding, 0, 1).await, registers(&[1]));
        // The restart closes the connection under the link.
        sim.restart();
        let e = link.read(1, Table::Holding, 0, 1).await.unwrap_err();
        assert!(matches!(e, LinkError::Closed | LinkError::Reset), "{e:?}");
        assert_eq!(e.reason(), "reset");
        assert!(!link.is_open());
        assert_eq!(link.read(2, Table::Holding, 0, 1).await, registers(&[2]));
        assert_eq!(link.opens(), 2);

        sim.stop();
        let e = link.read(1, Table::Holding, 0, 1).await.unwrap_err();
        assert!(matches!(e, LinkError::Closed | LinkError::Reset), "{e:?}");
        let e = link.read(1, Table::Holding, 0, 1).await.unwrap_err();
        assert_eq!(e, LinkError::Refused);
        assert_eq!(e.to_string(), "connection refused");
        assert_eq!(link.last_round_trip(), None, "nothing was sent");
    })
    .await;
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
    let e = tokio::time::timeout(Duration::from_secs(10), link.read(1, Table::Holding, 0, 1))
        .await
        .expect("bounded")
        .unwrap_err();
    assert!(
        matches!(&e, LinkError::Io(text) if text.contains("/dev/edgewatch-no-such-tty")),
        "{e:?}"
    );
    assert_eq!(
        link.endpoint().to_string(),
        "/dev/edgewatch-no-such-tty 19200 8N1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_requests_keep_the_inter_frame_silence_after_each_answer() {
    bounded(async {
        let sim = ModbusSim::rtu(SimOptions::default().request_log());
        // Far longer than a round trip over the pty (a few ms), so that a link that did not
        // wait would show gaps well below it.
        let silence = Duration::from_millis(60);
        let mut link = rtu_link(&sim, silence, Duration::from_secs(1));
        let mut ends: Vec<Instant> = Vec::new();
        for unit in [1u8, 2, 3, 1, 2] {
            assert_eq!(
                link.read(unit, Table::Holding, 0, 1).await,
                registers(&[u16::from(unit)])
            );
            ends.push(Instant::now());
        }
        assert_eq!(link.opens(), 1);
        let log = sim.requests();
        assert_eq!(log.len(), 5, "{log:?}");
        // The simulator logs a request before it answers it, so the gap between two logged
        // requests is at least the answer's way back plus the silence the link kept.
        for pair in log.windows(2) {
            let gap = pair[1]
                .time
                .duration_since(pair[0].time)
                .unwrap_or_default();
            assert!(
                gap >= silence,
                "a request came {gap:?} after the one before it (silence {silence:?}): {log:?}"
            );
        }
        // Seen from the client: each read after the first waited out the silence before it
        // sent its request.
        for pair in ends.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= silence, "{gap:?} between the ends of two reads");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_after_a_timeout_the_port_is_reopened_and_the_late_answer_discarded() {
    bounded(async {
        let sim = ModbusSim::rtu(SimOptions::default().request_log());
        let timeout = Duration::from_millis(300);
        let abcd = Order::Abcd.block();
        sim.set_faults(&[Fault::delay(Duration::from_millis(500))
            .addresses(u32::from(abcd)..u32::from(abcd) + 20)]);
        let mut link = rtu_link(&sim, Duration::from_millis(2), timeout);
        let e = link.read(1, Table::Holding, abcd, 2).await.unwrap_err();
        assert_eq!(e, LinkError::Timeout(timeout));
        assert!(!link.is_open());
        // The late answer (the typed block's first registers) arrives while the port is
        // closed; a link that kept the port open would take it for the next answer.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let bulk = modbus::BULK_START;
        assert_eq!(
            link.read(1, Table::Holding, bulk, 2).await,
            registers(&[bulk, bulk + 1])
        );
        assert_eq!(
            link.read(1, Table::Holding, bulk + 2, 2).await,
            registers(&[bulk + 2, bulk + 3])
        );
        assert_eq!(link.opens(), 2);
        assert_eq!(sim.requests().len(), 3);
    })
    .await;
}

//! The Modbus simulator harness works, seen through tokio-modbus (the client the daemon uses):
//! the layout over TCP (unit ids, typed blocks word for word, counter and toggling bits),
//! exception 2 on undefined addresses, RTU over the socat pty pair, each fault kind
//! (delay, silent, exception, corrupt), the request log, and a restart on the same port.
//! Every request is bounded by a timeout, and every test by [`TEST_TIMEOUT`].

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use support::modbus::{self, Fault, Kind, ModbusSim, Order, SimOptions};
use tokio_modbus::client::{Context, Reader, rtu, tcp};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

/// Bound of one request that should be answered.
const ANSWER: Duration = Duration::from_secs(5);
/// Bound of a whole test.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs a test body with a bound on its duration.
async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("the test did not finish within its time bound");
}

async fn connect_tcp(sim: &ModbusSim, unit: u8) -> Context {
    tokio::time::timeout(ANSWER, tcp::connect_slave(sim.addr(), Slave(unit)))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", sim.log_tail()))
}

fn open_rtu(sim: &ModbusSim, unit: u8) -> Context {
    let path = sim.client_tty();
    let builder = tokio_serial::new(path.to_str().expect("UTF-8 path"), sim.options().baud);
    let port = tokio_serial::SerialStream::open(&builder)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    rtu::attach_slave(port, Slave(unit))
}

/// Holding registers, which must be answered (no exception) within [`ANSWER`].
async fn holding(ctx: &mut Context, address: u16, count: u16) -> Vec<u16> {
    tokio::time::timeout(ANSWER, ctx.read_holding_registers(address, count))
        .await
        .unwrap_or_else(|_| panic!("holding {address}+{count}: timed out"))
        .unwrap_or_else(|e| panic!("holding {address}+{count}: {e}"))
        .unwrap_or_else(|e| panic!("holding {address}+{count}: exception {e}"))
}

/// The exception a holding read answers within [`ANSWER`].
async fn holding_exception(ctx: &mut Context, address: u16, count: u16) -> ExceptionCode {
    match tokio::time::timeout(ANSWER, ctx.read_holding_registers(address, count))
        .await
        .unwrap_or_else(|_| panic!("holding {address}+{count}: timed out"))
        .unwrap_or_else(|e| panic!("holding {address}+{count}: {e}"))
    {
        Ok(words) => panic!("holding {address}+{count}: answered {words:?}, not an exception"),
        Err(code) => code,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_unit_ids_markers_and_typed_blocks() {
    bounded(async {
        let sim = ModbusSim::tcp(SimOptions::default());
        let mut ctx = connect_tcp(&sim, 1).await;
        for unit in modbus::UNITS {
            ctx.set_slave(Slave(unit));
            assert_eq!(
                holding(&mut ctx, modbus::HR_UNIT_ID, 2).await,
                [u16::from(unit), modbus::HR_BITS_VALUE]
            );
            let input = tokio::time::timeout(ANSWER, ctx.read_input_registers(0, 2))
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(input, [u16::from(unit), modbus::IR_MARKER_VALUE]);
            for order in Order::ALL {
                let words = holding(&mut ctx, order.block(), modbus::TYPED_BLOCK_LEN).await;
                assert_eq!(words, order.block_words(), "{order:?} block of unit {unit}");
            }
        }
        // The Rust-side encoding decodes back (independent of the simulator): ABCD f32 and
        // DCBA u64 by hand.
        let f32_words = Kind::F32.words(Order::Abcd);
        let bits = u32::from(f32_words[0]) << 16 | u32::from(f32_words[1]);
        assert_eq!(f32::from_bits(bits), modbus::F32_VALUE);
        let dcba = Kind::U64.words(Order::Dcba);
        let le: Vec<u8> = dcba.iter().flat_map(|w| w.to_be_bytes()).collect();
        assert_eq!(
            u64::from_le_bytes(le.try_into().unwrap()),
            modbus::U64_VALUE
        );
        // The bulk block.
        let bulk = holding(&mut ctx, modbus::BULK_START, 125).await;
        assert_eq!(bulk, (1000..1125).collect::<Vec<u16>>());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_undefined_addresses_answer_exception_2() {
    bounded(async {
        let sim = ModbusSim::tcp(SimOptions::default());
        let mut ctx = connect_tcp(&sim, 2).await;
        for (address, count) in [
            (modbus::UNDEFINED_HOLDING, 1),
            (modbus::HR_COUNTER, 6), // 10..16 spans 13
            (2, 1),
            (119, 2), // past the end of the ABCD block
            (modbus::BULK_START + modbus::BULK_LEN - 1, 2),
            (5000, 10),
        ] {
            assert_eq!(
                holding_exception(&mut ctx, address, count).await,
                ExceptionCode::IllegalDataAddress,
                "holding {address}+{count}"
            );
        }
        let input = tokio::time::timeout(ANSWER, ctx.read_input_registers(2, 1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(input, Err(ExceptionCode::IllegalDataAddress));
        let coils = tokio::time::timeout(ANSWER, ctx.read_coils(0, modbus::BIT_COUNT + 1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(coils, Err(ExceptionCode::IllegalDataAddress));
        // The connection still works.
        assert_eq!(holding(&mut ctx, 0, 1).await, [2]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_counter_tick_and_toggling_bits_follow_the_tick() {
    bounded(async {
        let sim = ModbusSim::tcp(SimOptions::default().tick(Duration::from_millis(50)));
        let mut ctx = connect_tcp(&sim, 3).await;
        let words = holding(&mut ctx, modbus::HR_COUNTER, 3).await;
        let tick = u64::from(words[2]);
        let counter = u32::from(words[0]) << 16 | u32::from(words[1]);
        assert_eq!(counter, modbus::counter(tick));
        let f = holding(&mut ctx, modbus::HR_TICK_F32, 2).await;
        let value = f32::from_bits(u32::from(f[0]) << 16 | u32::from(f[1]));
        assert!(
            value >= modbus::tick_f32(tick) && value.fract() == 0.0,
            "{value}"
        );

        let coils = tokio::time::timeout(ANSWER, ctx.read_coils(0, modbus::BIT_COUNT))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for address in 0..16 {
            assert_eq!(
                coils[usize::from(address)],
                modbus::bit_value(false, address, 0)
            );
        }
        let discrete = tokio::time::timeout(ANSWER, ctx.read_discrete_inputs(0, 16))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for address in 0..16 {
            assert_eq!(
                discrete[usize::from(address)],
                modbus::bit_value(true, address, 0)
            );
        }
        // Bit 16 takes both values within a few ticks, and matches the tick read with it.
        let (mut on, mut off) = (false, false);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(on && off) {
            assert!(Instant::now() < deadline, "coil 16 did not toggle");
            let bit = tokio::time::timeout(ANSWER, ctx.read_coils(modbus::TOGGLE_BIT, 1))
                .await
                .unwrap()
                .unwrap()
                .unwrap()[0];
            on |= bit;
            off |= !bit;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_reads_over_the_pty() {
    bounded(async {
        let sim = ModbusSim::rtu(SimOptions::default().baud(19200).request_log());
        let mut ctx = open_rtu(&sim, 1);
        for unit in modbus::UNITS {
            ctx.set_slave(Slave(unit));
            assert_eq!(holding(&mut ctx, 0, 2).await[0], u16::from(unit));
        }
        ctx.set_slave(Slave(2));
        for order in Order::ALL {
            assert_eq!(
                holding(&mut ctx, order.block(), modbus::TYPED_BLOCK_LEN).await,
                order.block_words()
            );
        }
        assert_eq!(
            holding_exception(&mut ctx, modbus::UNDEFINED_HOLDING, 1).await,
            ExceptionCode::IllegalDataAddress
        );
        let bulk = holding(&mut ctx, modbus::BULK_START, 125).await;
        assert_eq!(bulk[124], modbus::BULK_START + 124);
        // A second open of the pty after closing the first works too.
        drop(ctx);
        let mut again = open_rtu(&sim, 3);
        assert_eq!(holding(&mut again, 0, 1).await, [3]);
        let requests = sim.requests();
        assert!(requests.len() >= 9, "{requests:?}");
        // After a restart, the same client tty path answers again (reopened).
        drop(again);
        let mut sim = sim;
        sim.restart();
        let mut reopened = open_rtu(&sim, 1);
        assert_eq!(holding(&mut reopened, 0, 1).await, [1]);
        assert_eq!(
            (
                requests[0].unit,
                requests[0].function,
                requests[0].address,
                requests[0].count
            ),
            (1, 3, 0, 2)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_delay_makes_a_request_time_out_only_where_selected() {
    bounded(async {
        let sim = ModbusSim::tcp(SimOptions::default());
        sim.set_faults(&[Fault::delay(Duration::from_millis(1500))
            .unit(1)
            .function(3)
            .addresses(100..120)]);
        let mut ctx = connect_tcp(&sim, 1).await;
        let started = Instant::now();
        let late = tokio::time::timeout(
            Duration::from_millis(500),
            ctx.read_holding_registers(Order::Abcd.block(), 2),
        )
        .await;
        assert!(late.is_err(), "answered within 500 ms: {late:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        // A fresh connection (the old one may still get the late answer): other addresses,
        // units and tables answer at once.
        let mut ctx = connect_tcp(&sim, 1).await;
        let t = Instant::now();
        assert_eq!(holding(&mut ctx, 0, 1).await, [1]);
        assert_eq!(
            holding(&mut ctx, Order::Cdab.block(), 1).await,
            [modbus::U16_VALUE]
        );
        ctx.set_slave(Slave(2));
        assert_eq!(
            holding(&mut ctx, Order::Abcd.block(), 1).await,
            [modbus::U16_VALUE]
        );
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t.elapsed()
        );
        // Waiting long enough, the delayed answer comes.
        ctx.set_slave(Slave(1));
        let t = Instant::now();
        assert_eq!(
            holding(&mut ctx, Order::Abcd.block(), 1).await,
            [modbus::U16_VALUE]
        );
        assert!(
            t.elapsed() >= Duration::from_millis(1400),
            "{:?}",
            t.elapsed()
        );
        sim.clear_faults();
        let t = Instant::now();
        assert_eq!(
            holding(&mut ctx, Order::Abcd.block(), 1).await,
            [modbus::U16_VALUE]
        );
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t.elapsed()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_silent_unit_never_answers() {
    bounded(async {
        let sim = ModbusSim::tcp(SimOptions::default());
        sim.set_faults(&[Fault::silent().unit(2)]);
        let mut ctx = connect_tcp(&sim, 2).await;
        let answer =
            tokio::time::timeout(Duration::from_millis(700), ctx.read_holding_registers(0, 1))
                .await;
        assert!(answer.is_err(), "a silent unit answered: {answer:?}");
        let mut ctx = connect_tcp(&sim, 1).await;
        assert_eq!(holding(&mut ctx, 0, 1).await, [1]);
        // A unit the simulator does not have is silent too.
        let mut ctx = connect_tcp(&sim, 9).await;
        let answer =
            tokio::time::timeout(Duration::from_millis(700), ctx.read_holding_registers(0, 1))
                .await;
        assert!(answer.is_err(), "unknown unit 9 answered: {answer:?}");
        sim.clear_faults();
        let mut ctx = connect_tcp(&sim, 2).await;
        assert_eq!(holding(&mut ctx, 0, 1).await, [2]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_exception_answers_the_code_for_the_selected_range() {
    bounded(async {
        let sim = ModbusSim::tcp(SimOptions::default());
        sim.set_faults(&[
            Fault::exception(6).unit(1).addresses(1000..1010),
            Fault::exception(4).unit(3),
        ]);
        let mut ctx = connect_tcp(&sim, 1).await;
        // Overlapping the range.
        assert_eq!(
            holding_exception(&mut ctx, 995, 10).await,
            ExceptionCode::ServerDeviceBusy
        );
        // Outside it.
        assert_eq!(holding(&mut ctx, 1010, 2).await, [1010, 1011]);
        ctx.set_slave(Slave(3));
        assert_eq!(
            holding_exception(&mut ctx, 0, 1).await,
            ExceptionCode::ServerDeviceFailure
        );
        ctx.set_slave(Slave(2));
        assert_eq!(holding(&mut ctx, 1000, 1).await, [1000]);
        sim.clear_faults();
        ctx.set_slave(Slave(1));
        assert_eq!(holding(&mut ctx, 1000, 1).await, [1000]);
    })
    .await;
}

/// A corrupt answer is never a good answer: an error or no answer at all.
async fn assert_corrupt(ctx: &mut Context) {
    let answer = tokio::time::timeout(
        Duration::from_millis(1000),
        ctx.read_holding_registers(0, 1),
    )
    .await;
    assert!(
        !matches!(answer, Ok(Ok(Ok(_)))),
        "a corrupt answer decoded fine: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_corrupt_breaks_the_answer_on_tcp_and_rtu() {
    bounded(async {
        let sim = ModbusSim::tcp(SimOptions::default());
        sim.set_faults(&[Fault::corrupt().unit(1)]);
        let mut ctx = connect_tcp(&sim, 1).await;
        assert_corrupt(&mut ctx).await;
        sim.clear_faults();
        let mut ctx = connect_tcp(&sim, 1).await;
        assert_eq!(holding(&mut ctx, 0, 1).await, [1]);

        let sim = ModbusSim::rtu(SimOptions::default());
        sim.set_faults(&[Fault::corrupt().unit(2).function(3)]);
        let mut ctx = open_rtu(&sim, 2);
        assert_corrupt(&mut ctx).await;
        drop(ctx);
        sim.clear_faults();
        let mut ctx = open_rtu(&sim, 2);
        assert_eq!(holding(&mut ctx, 0, 1).await, [2]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_log_records_every_request() {
    bounded(async {
        let sim = ModbusSim::tcp(SimOptions::default().request_log());
        let before = std::time::SystemTime::now();
        let mut ctx = connect_tcp(&sim, 2).await;
        holding(&mut ctx, 100, 20).await;
        let _ = tokio::time::timeout(ANSWER, ctx.read_coils(3, 14))
            .await
            .unwrap();
        let _ = tokio::time::timeout(ANSWER, ctx.read_input_registers(0, 2))
            .await
            .unwrap();
        holding_exception(&mut ctx, 13, 1).await;
        let got: Vec<_> = sim
            .requests()
            .iter()
            .map(|r| (r.unit, r.function, r.address, r.count))
            .collect();
        assert_eq!(
            got,
            [(2, 3, 100, 20), (2, 1, 3, 14), (2, 4, 0, 2), (2, 3, 13, 1)]
        );
        assert!(sim.requests()[0].time >= before - Duration::from_secs(1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_comes_back_on_the_same_port_and_stop_refuses() {
    bounded(async {
        let mut sim = ModbusSim::tcp(SimOptions::default());
        let port = sim.port();
        let mut ctx = connect_tcp(&sim, 1).await;
        assert_eq!(holding(&mut ctx, 0, 1).await, [1]);

        sim.restart();
        assert_eq!(sim.port(), port);
        let mut ctx = connect_tcp(&sim, 3).await;
        assert_eq!(holding(&mut ctx, 0, 1).await, [3]);

        sim.stop();
        let refused = tokio::time::timeout(ANSWER, tcp::connect(sim.addr()))
            .await
            .expect("connect timed out");
        assert!(refused.is_err(), "connected to a stopped simulator");
        sim.restart();
        assert_eq!(sim.port(), port);
        let mut ctx = connect_tcp(&sim, 2).await;
        assert_eq!(holding(&mut ctx, 0, 1).await, [2]);
    })
    .await;
}

//! Links of the daemon (`edgewatch::source::modbus::link`) to a [`ModbusSim`], and the time
//! bound of the Modbus integration tests that drive the link, the poll and the source task.

use std::future::Future;
use std::time::Duration;

use edgewatch::source::modbus::link::{DataBits, Endpoint, Link, Parity, SerialSettings, StopBits};

use super::modbus::ModbusSim;

/// Bound of a whole test (the simulator's start included).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs a test body with a bound on its duration.
pub async fn bounded<F: Future<Output = ()>>(body: F) {
    super::modbus_daemon::bounded(TEST_TIMEOUT, body).await;
}

/// The endpoint of a TCP simulator.
pub fn tcp_endpoint(sim: &ModbusSim) -> Endpoint {
    Endpoint::Tcp {
        host: "127.0.0.1".into(),
        port: sim.port(),
    }
}

/// The endpoint of an RTU simulator's client pty, at the simulator's baud rate, 8N1.
pub fn rtu_endpoint(sim: &ModbusSim, inter_frame_silence: Duration) -> Endpoint {
    Endpoint::Serial(SerialSettings {
        device: sim
            .client_tty()
            .to_str()
            .expect("a UTF-8 temp path")
            .to_string(),
        baud: sim.options().baud,
        parity: Parity::None,
        data_bits: DataBits::Eight,
        stop_bits: StopBits::One,
        inter_frame_silence,
    })
}

/// A link to a TCP simulator.
pub fn tcp_link(sim: &ModbusSim, timeout: Duration) -> Link {
    Link::new(tcp_endpoint(sim), timeout)
}

/// A link to an RTU simulator.
pub fn rtu_link(sim: &ModbusSim, inter_frame_silence: Duration, timeout: Duration) -> Link {
    Link::new(rtu_endpoint(sim, inter_frame_silence), timeout)
}

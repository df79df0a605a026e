//! A Modbus TCP / RTU device simulator (tests/support/modbus_sim.py, pymodbus 3.16.1) for the
//! integration tests, and the simulator's register layout as constants, so that a test can
//! compare decoded values exactly.
//!
//! [`ModbusSim::tcp`] serves Modbus TCP on a `127.0.0.1` port the simulator binds itself (port
//! 0); [`ModbusSim::rtu`] serves Modbus RTU on one end of a socat pty pair made in the sim's
//! temp dir, the client opens [`ModbusSim::client_tty`]. Each simulator has its own temp dir
//! (ready file, `faults.json`, `requests.log`, `sim.log`), so any number run side by side.
//! Everything is killed when the [`ModbusSim`] is dropped.
//!
//! The Python comes from `EDGEWATCH_MODBUS_PYTHON` (set by `./scripts/test`), else from
//! `target/modbus-venv/bin/python` in the repository, which `./scripts/test` creates.
//!
//! Layout, per unit (units 1, 2 and 3 unless [`SimOptions::units`] says otherwise; 0-based
//! addresses):
//!
//! | table | address | value |
//! |---|---|---|
//! | holding | 0 ([`HR_UNIT_ID`]) | the unit id |
//! | holding | 1 ([`HR_BITS`]) | [`HR_BITS_VALUE`] `0x8025` |
//! | holding | 10-11 ([`HR_COUNTER`]) | u32 ABCD, [`counter`]`(tick)` = `0xFFFA + tick` |
//! | holding | 12 ([`HR_TICK`]) | `tick & 0xFFFF` |
//! | holding | 14-15 ([`HR_TICK_F32`]) | f32 ABCD, `tick as f32` |
//! | holding | 100/200/300/400 ([`Order::block`]) | typed block ([`Kind`]) in order ABCD/CDAB/BADC/DCBA |
//! | holding | 1000-1999 ([`BULK_START`]) | the address |
//! | input | 0 ([`IR_UNIT_ID`]) | the unit id |
//! | input | 1 ([`IR_MARKER`]) | [`IR_MARKER_VALUE`] `0x4952` |
//! | coil | 0-15 | bits of [`COIL_PATTERN`] (coil i = bit i), 16 ([`TOGGLE_BIT`]): tick is odd |
//! | discrete input | 0-15 | bits of [`DISCRETE_PATTERN`], 16: tick is odd |
//!
//! Anything else (e.g. holding 2-9 and 13, [`UNDEFINED_HOLDING`]) answers exception 2, and so
//! does any read that touches it, and every write. The tick is the number of whole
//! [`SimOptions::tick`] periods since the simulator became ready (restarts begin at 0).

#![allow(dead_code)]

use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

/// Environment variable naming the Python (of a venv with pymodbus 3.16.1) to run.
pub const PYTHON_ENV: &str = "EDGEWATCH_MODBUS_PYTHON";
/// How long a start may take (Python + pymodbus import on a busy 2-core machine).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(25);
const START_ATTEMPTS: u32 = 5;

// ---- layout -------------------------------------------------------------------------------

/// The units a simulator answers by default.
pub const UNITS: [u8; 3] = [1, 2, 3];
/// Holding register holding the unit id.
pub const HR_UNIT_ID: u16 = 0;
/// Input register holding the unit id.
pub const IR_UNIT_ID: u16 = 0;
/// Holding register with a fixed bit pattern, for `bit` points.
pub const HR_BITS: u16 = 1;
/// Its value: bits 0, 2, 5 and 15 set.
pub const HR_BITS_VALUE: u16 = 0x8025;
/// Input register with a fixed marker.
pub const IR_MARKER: u16 = 1;
/// Its value ("IR").
pub const IR_MARKER_VALUE: u16 = 0x4952;
/// Holding registers 10-11: u32 ABCD counter, [`counter`].
pub const HR_COUNTER: u16 = 10;
/// The counter at tick 0: it carries into the high word at tick 6.
pub const COUNTER_BASE: u32 = 0xFFFA;
/// Holding register 12: the tick (low 16 bits).
pub const HR_TICK: u16 = 12;
/// Holding registers 14-15: the tick as f32 ABCD.
pub const HR_TICK_F32: u16 = 14;
/// An undefined holding register between defined ones (a merged read over 10..16 fails).
pub const UNDEFINED_HOLDING: u16 = 13;
/// Coils 0-15 are the bits of this pattern (coil i = bit i).
pub const COIL_PATTERN: u16 = 0x8025;
/// Discrete inputs 0-15 are the bits of this pattern.
pub const DISCRETE_PATTERN: u16 = 0x4952;
/// Coil and discrete input that is on while the tick is odd; the last defined bit.
pub const TOGGLE_BIT: u16 = 16;
/// Number of defined coils and discrete inputs (0..=16).
pub const BIT_COUNT: u16 = 17;
/// Holding registers `BULK_START..BULK_START + BULK_LEN` hold their own address.
pub const BULK_START: u16 = 1000;
/// Length of the bulk block.
pub const BULK_LEN: u16 = 1000;
/// Registers per typed block: u16, i16, u32, i32, u64, i64, f32, f64.
pub const TYPED_BLOCK_LEN: u16 = 20;

/// The typed blocks' values.
pub const U16_VALUE: u16 = 0x1234;
pub const I16_VALUE: i16 = -12345;
pub const U32_VALUE: u32 = 0x1234_5678;
pub const I32_VALUE: i32 = -123_456_789;
pub const U64_VALUE: u64 = 0x0123_4567_89AB_CDEF;
pub const I64_VALUE: i64 = -1_234_567_890_123_456_789;
pub const F32_VALUE: f32 = -273.15;
pub const F64_VALUE: f64 = -1_234_567.891;

/// The counter at `tick`.
pub fn counter(tick: u64) -> u32 {
    COUNTER_BASE.wrapping_add(tick as u32)
}

/// The f32 at [`HR_TICK_F32`] at `tick`.
pub fn tick_f32(tick: u64) -> f32 {
    tick as f32
}

/// Coil or discrete input `address` at `tick` (`discrete`: the discrete input).
pub fn bit_value(discrete: bool, address: u16, tick: u64) -> bool {
    let pattern = if discrete {
        DISCRETE_PATTERN
    } else {
        COIL_PATTERN
    };
    match address {
        0..=15 => pattern >> address & 1 == 1,
        TOGGLE_BIT => tick % 2 == 1,
        _ => panic!("bit {address} is not defined in the simulator"),
    }
}

/// Word (and byte) order of a typed block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Order {
    /// Big-endian words and bytes.
    Abcd,
    /// Registers in reverse order, bytes big-endian in each.
    Cdab,
    /// Registers in order, bytes swapped in each.
    Badc,
    /// Fully reversed (little-endian).
    Dcba,
}

impl Order {
    pub const ALL: [Order; 4] = [Order::Abcd, Order::Cdab, Order::Badc, Order::Dcba];

    /// Base holding address of this order's typed block.
    pub fn block(self) -> u16 {
        match self {
            Order::Abcd => 100,
            Order::Cdab => 200,
            Order::Badc => 300,
            Order::Dcba => 400,
        }
    }

    /// The name in the config (`"ABCD"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Order::Abcd => "ABCD",
            Order::Cdab => "CDAB",
            Order::Badc => "BADC",
            Order::Dcba => "DCBA",
        }
    }

    /// The registers holding the big-endian bytes `be` (2, 4 or 8 bytes) in this order. A
    /// single register is the same in every order.
    pub fn encode(self, be: &[u8]) -> Vec<u16> {
        assert!(be.len().is_multiple_of(2), "an odd number of bytes");
        let words: Vec<u16> = be
            .chunks(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
            .collect();
        if words.len() == 1 {
            return words;
        }
        match self {
            Order::Abcd => words,
            Order::Cdab => words.into_iter().rev().collect(),
            Order::Badc => words.into_iter().map(u16::swap_bytes).collect(),
            Order::Dcba => words.into_iter().rev().map(u16::swap_bytes).collect(),
        }
    }

    /// The whole typed block's [`TYPED_BLOCK_LEN`] registers as the simulator holds them.
    pub fn block_words(self) -> Vec<u16> {
        let mut words = vec![0; usize::from(TYPED_BLOCK_LEN)];
        for kind in Kind::ALL {
            let at = usize::from(kind.offset());
            let encoded = kind.words(self);
            words[at..at + encoded.len()].copy_from_slice(&encoded);
        }
        words
    }
}

/// A value type of the typed blocks, with its offset in a block and its known value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::U16,
        Kind::I16,
        Kind::U32,
        Kind::I32,
        Kind::U64,
        Kind::I64,
        Kind::F32,
        Kind::F64,
    ];

    /// The name in the config (`"u16"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Kind::U16 => "u16",
            Kind::I16 => "i16",
            Kind::U32 => "u32",
            Kind::I32 => "i32",
            Kind::U64 => "u64",
            Kind::I64 => "i64",
            Kind::F32 => "f32",
            Kind::F64 => "f64",
        }
    }

    /// Offset of this value in a typed block.
    pub fn offset(self) -> u16 {
        match self {
            Kind::U16 => 0,
            Kind::I16 => 1,
            Kind::U32 => 2,
            Kind::I32 => 4,
            Kind::U64 => 6,
            Kind::I64 => 10,
            Kind::F32 => 14,
            Kind::F64 => 16,
        }
    }

    /// Width in registers.
    pub fn width(self) -> u16 {
        match self {
            Kind::U16 | Kind::I16 => 1,
            Kind::U32 | Kind::I32 | Kind::F32 => 2,
            Kind::U64 | Kind::I64 | Kind::F64 => 4,
        }
    }

    /// Holding address of this value in `order`'s block.
    pub fn address(self, order: Order) -> u16 {
        order.block() + self.offset()
    }

    /// The known value's big-endian bytes.
    pub fn be_bytes(self) -> Vec<u8> {
        match self {
            Kind::U16 => U16_VALUE.to_be_bytes().to_vec(),
            Kind::I16 => I16_VALUE.to_be_bytes().to_vec(),
            Kind::U32 => U32_VALUE.to_be_bytes().to_vec(),
            Kind::I32 => I32_VALUE.to_be_bytes().to_vec(),
            Kind::U64 => U64_VALUE.to_be_bytes().to_vec(),
            Kind::I64 => I64_VALUE.to_be_bytes().to_vec(),
            Kind::F32 => F32_VALUE.to_be_bytes().to_vec(),
            Kind::F64 => F64_VALUE.to_be_bytes().to_vec(),
        }
    }

    /// The registers of this value in `order`'s block.
    pub fn words(self, order: Order) -> Vec<u16> {
        order.encode(&self.be_bytes())
    }

    /// The known value as f64 (what a decoder with scale 1, offset 0 yields; u64/i64 rounded
    /// by `as f64`).
    pub fn value(self) -> f64 {
        match self {
            Kind::U16 => f64::from(U16_VALUE),
            Kind::I16 => f64::from(I16_VALUE),
            Kind::U32 => f64::from(U32_VALUE),
            Kind::I32 => f64::from(I32_VALUE),
            Kind::U64 => U64_VALUE as f64,
            Kind::I64 => I64_VALUE as f64,
            Kind::F32 => f64::from(F32_VALUE),
            Kind::F64 => F64_VALUE,
        }
    }
}

// ---- faults and the request log -----------------------------------------------------------

/// One fault of `faults.json`: what happens (delay, silent, exception, corrupt; they combine)
/// and which requests it applies to (unit, function code, address range overlapping the
/// request's; each selector optional).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fault {
    pub unit: Option<u8>,
    pub function: Option<u8>,
    pub addresses: Option<Range<u32>>,
    pub delay: Option<Duration>,
    pub silent: bool,
    pub exception: Option<u8>,
    pub corrupt: bool,
}

impl Fault {
    /// Answer late by `delay`.
    pub fn delay(delay: Duration) -> Fault {
        Fault {
            delay: Some(delay),
            ..Fault::default()
        }
    }

    /// Never answer.
    pub fn silent() -> Fault {
        Fault {
            silent: true,
            ..Fault::default()
        }
    }

    /// Answer exception `code` (1-8, 10, 11: what pymodbus can send).
    pub fn exception(code: u8) -> Fault {
        assert!(
            matches!(code, 1..=8 | 10 | 11),
            "the simulator can answer exceptions 1-8, 10 and 11, not {code}"
        );
        Fault {
            exception: Some(code),
            ..Fault::default()
        }
    }

    /// Answer with a broken frame (RTU: bad CRC; TCP: MBAP protocol id 0xFFFF).
    pub fn corrupt() -> Fault {
        Fault {
            corrupt: true,
            ..Fault::default()
        }
    }

    /// Only requests to `unit`.
    pub fn unit(mut self, unit: u8) -> Fault {
        self.unit = Some(unit);
        self
    }

    /// Only requests with function code `function` (3 holding, 4 input, 1 coils, 2 discrete).
    pub fn function(mut self, function: u8) -> Fault {
        self.function = Some(function);
        self
    }

    /// Only requests whose address range overlaps `addresses` (end exclusive).
    pub fn addresses(mut self, addresses: Range<u32>) -> Fault {
        self.addresses = Some(addresses);
        self
    }

    fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        if let Some(unit) = self.unit {
            map.insert("unit".into(), unit.into());
        }
        if let Some(function) = self.function {
            map.insert("function".into(), function.into());
        }
        if let Some(range) = &self.addresses {
            map.insert("start".into(), range.start.into());
            map.insert("end".into(), range.end.into());
        }
        if let Some(delay) = self.delay {
            map.insert("delay_ms".into(), (delay.as_millis() as u64).into());
        }
        if self.silent {
            map.insert("silent".into(), true.into());
        }
        if let Some(code) = self.exception {
            map.insert("exception".into(), code.into());
        }
        if self.corrupt {
            map.insert("corrupt".into(), true.into());
        }
        serde_json::Value::Object(map)
    }
}

/// One line of the request log: a request the simulator received (also unknown units, and
/// requests then delayed, silenced or faulted).
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub time: SystemTime,
    pub unit: u8,
    pub function: u8,
    pub address: u16,
    /// Registers or bits (1 for single writes).
    pub count: u16,
}

// ---- the simulator ------------------------------------------------------------------------

/// Serial parity of the RTU mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

impl Parity {
    fn letter(self) -> &'static str {
        match self {
            Parity::None => "N",
            Parity::Even => "E",
            Parity::Odd => "O",
        }
    }
}

/// How to start a simulator.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Unit ids answered (default 1, 2, 3); others get no answer.
    pub units: Vec<u8>,
    /// Length of a tick (default 1 s).
    pub tick: Duration,
    /// Write `requests.log` (default off).
    pub request_log: bool,
    /// Unknown units answer exception 11 instead of nothing (default off).
    pub unknown_unit_exception: bool,
    /// RTU line settings (a pty ignores them, but both ends must agree): default 19200 8N1.
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            units: UNITS.to_vec(),
            tick: Duration::from_secs(1),
            request_log: false,
            unknown_unit_exception: false,
            baud: 19200,
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1,
        }
    }
}

impl SimOptions {
    pub fn units(mut self, units: &[u8]) -> Self {
        self.units = units.to_vec();
        self
    }
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }
    pub fn request_log(mut self) -> Self {
        self.request_log = true;
        self
    }
    pub fn unknown_unit_exception(mut self) -> Self {
        self.unknown_unit_exception = true;
        self
    }
    pub fn baud(mut self, baud: u32) -> Self {
        self.baud = baud;
        self
    }
    pub fn parity(mut self, parity: Parity) -> Self {
        self.parity = parity;
        self
    }
    pub fn data_bits(mut self, data_bits: u8) -> Self {
        self.data_bits = data_bits;
        self
    }
    pub fn stop_bits(mut self, stop_bits: u8) -> Self {
        self.stop_bits = stop_bits;
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Tcp,
    Rtu,
}

/// A running simulator; dropping it kills the simulator (and socat) and removes its dir.
pub struct ModbusSim {
    transport: Transport,
    options: SimOptions,
    child: Option<Child>,
    socat: Option<Child>,
    port: u16,
    // Last: the dir goes after the processes are killed.
    dir: TempDir,
}

impl ModbusSim {
    /// Modbus TCP on a free `127.0.0.1` port.
    pub fn tcp(options: SimOptions) -> ModbusSim {
        Self::start(Transport::Tcp, options)
    }

    /// Modbus RTU on a socat pty pair: the client opens [`ModbusSim::client_tty`].
    pub fn rtu(options: SimOptions) -> ModbusSim {
        Self::start(Transport::Rtu, options)
    }

    fn start(transport: Transport, options: SimOptions) -> ModbusSim {
        let dir = tempfile::Builder::new()
            .prefix("edgewatch-modbus-")
            .tempdir()
            .expect("create the simulator's temp dir");
        let mut sim = ModbusSim {
            transport,
            options,
            child: None,
            socat: None,
            port: 0,
            dir,
        };
        sim.launch(None);
        sim
    }

    /// The TCP port (TCP mode only).
    pub fn port(&self) -> u16 {
        assert_eq!(self.transport, Transport::Tcp, "port() of an RTU simulator");
        self.port
    }

    /// `127.0.0.1:port` (TCP mode only).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// The pty the client opens (RTU mode only): a symlink to a `/dev/pts/N`.
    pub fn client_tty(&self) -> PathBuf {
        assert_eq!(
            self.transport,
            Transport::Rtu,
            "client_tty() of a TCP simulator"
        );
        self.dir.path().join("client.tty")
    }

    /// The simulator's dir (`faults.json`, `requests.log`, `sim.log`, `socat.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn options(&self) -> &SimOptions {
        &self.options
    }

    /// Replaces the faults; the simulator applies them from its next request on.
    pub fn set_faults(&self, faults: &[Fault]) {
        let json = serde_json::json!({
            "faults": faults.iter().map(Fault::to_json).collect::<Vec<_>>()
        });
        let tmp = self.dir.path().join("faults.json.tmp");
        fs::write(&tmp, json.to_string()).expect("write faults.json.tmp");
        // A rename: the simulator never sees a half-written file, and the new inode shows
        // the change even within the same mtime tick.
        fs::rename(&tmp, self.dir.path().join("faults.json")).expect("rename faults.json");
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.set_faults(&[]);
    }

    /// The requests received so far (needs [`SimOptions::request_log`]).
    pub fn requests(&self) -> Vec<Request> {
        assert!(
            self.options.request_log,
            "requests() needs SimOptions::request_log()"
        );
        let text = fs::read_to_string(self.dir.path().join("requests.log")).unwrap_or_default();
        text.lines()
            .filter(|line| line.ends_with(|c: char| c.is_ascii_digit()))
            .map(|line| parse_request(line).unwrap_or_else(|| panic!("bad log line {line:?}")))
            .collect()
    }

    /// Kills and starts the simulator again (TCP: on the same port; RTU: on the same pty
    /// pair). The tick starts again at 0; faults stay.
    pub fn restart(&mut self) {
        self.kill_sim();
        let port = (self.transport == Transport::Tcp).then_some(self.port);
        self.launch(port);
    }

    /// Kills the simulator (TCP: connections are then refused; RTU: the pty stays, nothing
    /// answers). [`ModbusSim::restart`] brings it back.
    pub fn stop(&mut self) {
        self.kill_sim();
    }

    /// The last lines of the simulator's output (and socat's), for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["sim.log", "socat.log"] {
            if let Ok(text) = fs::read_to_string(self.dir.path().join(name)) {
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                out.push_str(&format!("--- {name} ---\n{tail}\n"));
            }
        }
        out
    }

    fn launch(&mut self, fixed_port: Option<u16>) {
        if self.transport == Transport::Rtu && !self.socat_alive() {
            self.start_socat();
        }
        let python = python();
        for attempt in 1..=START_ATTEMPTS {
            let ready = self.dir.path().join("ready");
            let _ = fs::remove_file(&ready);
            let log = self.open_log("sim.log");
            let mut command = Command::new(&python);
            command
                .arg(script())
                .arg("--dir")
                .arg(self.dir.path())
                .arg("--tick-ms")
                .arg(format!("{}", self.options.tick.as_secs_f64() * 1000.0))
                .arg("--units")
                .arg(
                    self.options
                        .units
                        .iter()
                        .map(u8::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                );
            if self.options.request_log {
                command.arg("--request-log");
            }
            if self.options.unknown_unit_exception {
                command.args(["--unknown-unit", "exception"]);
            }
            match self.transport {
                Transport::Tcp => {
                    command
                        .args(["--tcp", &fixed_port.unwrap_or(0).to_string()])
                        .args(["--host", "127.0.0.1"]);
                }
                Transport::Rtu => {
                    command
                        .arg("--rtu")
                        .arg(self.dir.path().join("server.tty"))
                        .args(["--baud", &self.options.baud.to_string()])
                        .args(["--parity", self.options.parity.letter()])
                        .args(["--bytesize", &self.options.data_bits.to_string()])
                        .args(["--stopbits", &self.options.stop_bits.to_string()]);
                }
            }
            let child = command
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|error| {
                    panic!(
                        "cannot run {}: {error}; run ./scripts/test once (it makes the venv \
                         target/modbus-venv) or set {PYTHON_ENV}",
                        python.display()
                    )
                });
            self.child = Some(child);
            match self.wait_ready(&ready) {
                Ok(()) => return,
                Err(why) => {
                    self.kill_sim();
                    let log = self.log_tail();
                    let bind_race = log.contains("Address already in use");
                    if bind_race && attempt < START_ATTEMPTS {
                        // Restart on the same port: a client's socket may linger briefly.
                        sleep(Duration::from_millis(200));
                        continue;
                    }
                    self.fail(format!(
                        "the Modbus simulator did not become ready (attempt {attempt}): {why}"
                    ));
                }
            }
        }
        unreachable!("the last attempt returns or panics");
    }

    /// Waits for the ready file (and, for TCP, an accepted connection), bounded by
    /// [`READY_TIMEOUT`].
    fn wait_ready(&mut self, ready: &Path) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("wait_ready needs a child");
            if let Some(status) = child.try_wait().expect("poll the simulator") {
                self.child = None;
                return Err(format!("it exited ({status})"));
            }
            if let Ok(text) = fs::read_to_string(ready) {
                let fields: Vec<&str> = text.split_whitespace().collect();
                match (self.transport, fields.as_slice()) {
                    (Transport::Tcp, ["tcp", _, port]) => {
                        let port: u16 = port.parse().map_err(|_| format!("ready file {text:?}"))?;
                        if TcpStream::connect_timeout(
                            &SocketAddr::from(([127, 0, 0, 1], port)),
                            Duration::from_secs(1),
                        )
                        .is_ok()
                        {
                            self.port = port;
                            return Ok(());
                        }
                    }
                    (Transport::Rtu, ["rtu", _]) => return Ok(()),
                    _ => return Err(format!("unexpected ready file {text:?}")),
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready within {READY_TIMEOUT:?}"));
            }
            sleep(POLL_INTERVAL);
        }
    }

    fn start_socat(&mut self) {
        self.kill_socat();
        let server = self.dir.path().join("server.tty");
        let client = self.dir.path().join("client.tty");
        let _ = fs::remove_file(&server);
        let _ = fs::remove_file(&client);
        let log = self.open_log("socat.log");
        let child = Command::new("socat")
            .arg("-d")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", server.display()))
            .arg(format!("pty,raw,echo=0,link={}", client.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot run socat: {error}; run ./scripts/test once (it installs socat)")
            });
        self.socat = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while !(server.exists() && client.exists()) {
            if !self.socat_alive() {
                self.fail("socat exited before making the pty pair");
            }
            if Instant::now() >= deadline {
                self.fail(format!("socat made no pty pair within {READY_TIMEOUT:?}"));
            }
            sleep(POLL_INTERVAL);
        }
    }

    fn socat_alive(&mut self) -> bool {
        self.socat
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    fn kill_sim(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn kill_socat(&mut self) {
        if let Some(mut child) = self.socat.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn open_log(&self, name: &str) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(name))
            .unwrap_or_else(|error| panic!("open {name}: {error}"))
    }

    fn fail(&mut self, what: impl Display) -> ! {
        let tail = self.log_tail();
        self.kill_sim();
        self.kill_socat();
        panic!("{what}\n{tail}")
    }
}

impl Drop for ModbusSim {
    fn drop(&mut self) {
        self.kill_sim();
        self.kill_socat();
    }
}

/// The Python to run: `EDGEWATCH_MODBUS_PYTHON`, else the repository's
/// `target/modbus-venv/bin/python`; panics saying how to make it when it is missing.
pub fn python() -> PathBuf {
    if let Some(path) = std::env::var_os(PYTHON_ENV) {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/modbus-venv/bin/python");
    assert!(
        venv.exists(),
        "no Python for the Modbus simulator: {PYTHON_ENV} is unset and {} does not exist; \
         run ./scripts/test once (it makes that venv with pymodbus from \
         tests/support/requirements-modbus.txt)",
        venv.display()
    );
    venv
}

/// The simulator script.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/modbus_sim.py")
}

/// `"UNIX_TIME UNIT FUNCTION ADDRESS COUNT"`.
fn parse_request(line: &str) -> Option<Request> {
    let mut fields = line.split_whitespace();
    let seconds: f64 = fields.next()?.parse().ok()?;
    let request = Request {
        time: UNIX_EPOCH + Duration::from_secs_f64(seconds),
        unit: fields.next()?.parse().ok()?,
        function: fields.next()?.parse().ok()?,
        address: fields.next()?.parse().ok()?,
        count: fields.next()?.parse().ok()?,
    };
    fields.next().is_none().then_some(request)
}

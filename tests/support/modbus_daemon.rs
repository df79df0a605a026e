//! The daemon in this process (`app::start`) with Modbus sources polling a [`ModbusSim`], and
//! what the end-to-end Modbus tests read back from it over HTTP: the live values
//! (`/api/v1/sensors`), the source health details (`/api/v1/status`) and `/metrics`. Shared by
//! `tests/modbus_decode.rs`, `tests/modbus_faults.rs` and `tests/modbus_probe.rs`.
//!
//! Also the register map of every typed point of the simulator ([`typed_registers`]) with the
//! values it must decode to ([`typed_expected`]), so the decode and probe tests compare the
//! same thing.
//!
//! Every wait is bounded ([`wait_for`]); every test body too ([`bounded`]). The daemon has its
//! own temp dir (store) and listens on `127.0.0.1:0`.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use edgewatch::app::{self, Running};
use edgewatch::config;
use edgewatch::model::{Quality, SeriesKey};
use serde_json::Value;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::modbus::{self, Kind, ModbusSim, Order};

/// Upper bound of one HTTP request to the daemon.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a test body with a bound on its duration.
pub async fn bounded<F: Future<Output = ()>>(limit: Duration, body: F) {
    tokio::time::timeout(limit, body)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {limit:?}"));
}

/// Polls `probe` every 50 ms until it yields a value, at most `within`; panics with `what`
/// and the last error `probe` gave otherwise.
pub async fn wait_for<T>(
    what: &str,
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => {
                if Instant::now() >= deadline {
                    panic!("timed out after {within:?} waiting for {what}; last seen: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `[[sources]]` entry of type `modbus_tcp` polling `sim`; `body` holds the other keys
/// (units, registers or profile, timings), one per line.
pub fn tcp_source(name: &str, sim: &ModbusSim, body: &str) -> String {
    format!(
        "[[sources]]\ntype = \"modbus_tcp\"\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\n{body}\n",
        sim.port()
    )
}

/// A `[[sources]]` entry of type `modbus_rtu` on `sim`'s client pty, at the sim's baud.
pub fn rtu_source(name: &str, sim: &ModbusSim, body: &str) -> String {
    format!(
        "[[sources]]\ntype = \"modbus_rtu\"\nname = \"{name}\"\ndevice = \"{}\"\nbaud = {}\n{body}\n",
        sim.client_tty().display(),
        sim.options().baud
    )
}

/// The field name of a typed point: `abcd_u32`, ...
pub fn typed_name(order: Order, kind: Kind) -> String {
    format!("{}_{}", order.name().to_ascii_lowercase(), kind.name())
}

/// Scale and offset of the scaled points (applied to the ABCD u16 and the DCBA i32).
pub const SCALE: f64 = 0.5;
pub const OFFSET: f64 = -100.0;
pub const SCALE_I32: f64 = 0.001;
pub const OFFSET_I32: f64 = 1.0;

/// Register map (TOML inline tables, one per line, without the brackets) of every typed
/// point of the simulator (8 types in 4 orders), the unit id, bits 0, 1 and 15 of
/// [`modbus::HR_BITS`], the input marker, coils 0 and 1, discrete inputs 0 and 1, and two
/// scaled points.
pub fn typed_registers() -> String {
    let mut lines = Vec::new();
    for order in Order::ALL {
        for kind in Kind::ALL {
            lines.push(format!(
                "{{ name = \"{}\", table = \"holding\", address = {}, type = \"{}\", order = \"{}\" }},",
                typed_name(order, kind),
                kind.address(order),
                kind.name(),
                order.name()
            ));
        }
    }
    lines.push(format!(
        "{{ name = \"unit_id\", table = \"holding\", address = {}, type = \"u16\" }},",
        modbus::HR_UNIT_ID
    ));
    for bit in [0, 1, 15] {
        lines.push(format!(
            "{{ name = \"bit{bit}\", table = \"holding\", address = {}, type = \"bit\", bit = {bit} }},",
            modbus::HR_BITS
        ));
    }
    lines.push(format!(
        "{{ name = \"marker\", table = \"input_register\", address = {}, type = \"u16\" }},",
        modbus::IR_MARKER
    ));
    lines.push(format!(
        "{{ name = \"ir_unit_id\", table = \"input\", address = {}, type = \"u16\" }},",
        modbus::IR_UNIT_ID
    ));
    for address in [0, 1] {
        lines.push(format!(
            "{{ name = \"coil{address}\", table = \"coil\", address = {address}, type = \"bool\" }},"
        ));
        lines.push(format!(
            "{{ name = \"di{address}\", table = \"discrete_input\", address = {address}, type = \"bool\" }},"
        ));
    }
    lines.push(format!(
        "{{ name = \"scaled_u16\", table = \"holding\", address = {}, type = \"u16\", scale = {SCALE:?}, offset = {OFFSET:?}, unit = \"degC\" }},",
        Kind::U16.address(Order::Abcd)
    ));
    lines.push(format!(
        "{{ name = \"scaled_i32\", table = \"holding_register\", address = {}, type = \"i32\", order = \"DCBA\", scale = {SCALE_I32:?}, offset = {OFFSET_I32:?} }},",
        Kind::I32.address(Order::Dcba)
    ));
    lines.join("\n")
}

/// What a point of [`typed_registers`] must read on `unit`: the exact value, or `F32` for an
/// f32, stored as the f64 of its shortest decimal form.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expected {
    Exact(f64),
    F32(f32),
}

impl Expected {
    /// Whether `got` is this value (exactly; an f32 as f32).
    pub fn matches(self, got: f64) -> bool {
        match self {
            Expected::Exact(v) => got == v,
            // Stored as the f32's shortest decimal form (-273.15, not -273.1499938964844).
            Expected::F32(v) => got as f32 == v && Ok(got) == v.to_string().parse::<f64>(),
        }
    }
}

/// Field → the value of every point of [`typed_registers`] on `unit`.
pub fn typed_expected(unit: u8) -> BTreeMap<String, Expected> {
    let mut out = BTreeMap::new();
    for order in Order::ALL {
        for kind in Kind::ALL {
            let value = match kind {
                Kind::F32 => Expected::F32(modbus::F32_VALUE),
                _ => Expected::Exact(kind.value()),
            };
            out.insert(typed_name(order, kind), value);
        }
    }
    let bit = |n: u16| Expected::Exact(f64::from(modbus::HR_BITS_VALUE >> n & 1));
    out.insert("unit_id".into(), Expected::Exact(f64::from(unit)));
    out.insert("ir_unit_id".into(), Expected::Exact(f64::from(unit)));
    out.insert("bit0".into(), bit(0));
    out.insert("bit1".into(), bit(1));
    out.insert("bit15".into(), bit(15));
    out.insert(
        "marker".into(),
        Expected::Exact(f64::from(modbus::IR_MARKER_VALUE)),
    );
    for address in [0, 1] {
        let coil = modbus::bit_value(false, address, 0);
        let di = modbus::bit_value(true, address, 0);
        out.insert(
            format!("coil{address}"),
            Expected::Exact(f64::from(u8::from(coil))),
        );
        out.insert(
            format!("di{address}"),
            Expected::Exact(f64::from(u8::from(di))),
        );
    }
    out.insert(
        "scaled_u16".into(),
        Expected::Exact(f64::from(modbus::U16_VALUE) * SCALE + OFFSET),
    );
    out.insert(
        "scaled_i32".into(),
        Expected::Exact(f64::from(modbus::I32_VALUE) * SCALE_I32 + OFFSET_I32),
    );
    out
}

/// The samples of `name` in a Prometheus text exposition whose labels include every pair of
/// `labels` (in any order), summed; `None` when there is none.
pub fn metric_sum(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = if let Some(inner) = rest.strip_prefix('{') {
            let Some((inner, value)) = inner.split_once('}') else {
                continue;
            };
            (inner, value)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // another metric with this prefix
        };
        let pairs: Vec<(&str, &str)> = label_text
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k.trim(), v.trim().trim_matches('"')))
            })
            .collect();
        if !labels.iter().all(|l| pairs.contains(l)) {
            continue;
        }
        if let Ok(v) = value.trim().parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// The daemon, started in this process on a config made of a fixed head (gateway, store in a
/// temp dir, web on port 0, fast snapshots) and the given sources and profiles.
pub struct MbDaemon {
    running: Option<Running>,
    shutdown: CancellationToken,
    base: String,
    client: reqwest::Client,
    _dir: TempDir,
}

/// Latest value and time (RFC 3339) of each field of each sensor.
pub type Live = BTreeMap<String, BTreeMap<String, (f64, String)>>;

impl MbDaemon {
    /// The config text for `sources` (with `store` as the store path).
    pub fn config_text(store: &std::path::Path, sources: &str) -> String {
        format!(
            "[gateway]\nid = \"gw-modbus\"\n[store]\npath = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n\
             [pipeline]\nsnapshot_interval_ms = 50\n\n{sources}\n",
            store.display()
        )
    }

    pub async fn start(sources: &str) -> MbDaemon {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::Builder::new()
            .prefix("edgewatch-mb-e2e-")
            .tempdir()
            .expect("temp dir");
        let text = Self::config_text(&dir.path().join("edgewatch.redb"), sources);
        let config = config::load_str(&text)
            .unwrap_or_else(|e| panic!("the test config is refused: {e}\n{text}"));
        let shutdown = CancellationToken::new();
        let running = app::start(config, shutdown.clone())
            .await
            .expect("start the daemon");
        let base = format!("http://{}", running.web_addr);
        MbDaemon {
            running: Some(running),
            shutdown,
            base,
            client: reqwest::Client::builder()
                .timeout(HTTP_TIMEOUT)
                .build()
                .expect("HTTP client"),
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> Result<String, String> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {path}: {}", response.status()));
        }
        response
            .text()
            .await
            .map_err(|e| format!("GET {path}: {e}"))
    }

    pub async fn status(&self) -> Value {
        let text = self.get("/api/v1/status").await.expect("status");
        serde_json::from_str(&text).expect("status JSON")
    }

    /// The health record of source `name` in `/api/v1/status`.
    pub async fn source(&self, name: &str) -> Value {
        let status = self.status().await;
        status["sources"]
            .as_array()
            .expect("sources array")
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no source {name} in {status:#}"))
            .clone()
    }

    /// The health details of source `name`.
    pub async fn details(&self, name: &str) -> BTreeMap<String, String> {
        let source = self.source(name).await;
        source["details"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until detail `key` of source `name` satisfies `ok`; returns all details then.
    pub async fn wait_detail(
        &self,
        name: &str,
        key: &str,
        within: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> BTreeMap<String, String> {
        wait_for(&format!("{name} {key}"), within, async || {
            let details = self.details(name).await;
            match details.get(key) {
                Some(v) if ok(v) => Ok(details),
                _ => Err(format!("{details:#?}")),
            }
        })
        .await
    }

    /// The live view: sensor → field → (value, time).
    pub async fn live(&self) -> Live {
        let text = self.get("/api/v1/sensors").await.expect("sensors");
        let sensors: Value = serde_json::from_str(&text).expect("sensors JSON");
        let mut out = Live::new();
        for sensor in sensors.as_array().expect("sensors array") {
            let id = sensor["id"].as_str().expect("sensor id").to_string();
            let fields = sensor["fields"].as_object().expect("fields");
            let entry = out.entry(id).or_default();
            for (name, field) in fields {
                let value = field["value"].as_f64().unwrap_or(f64::NAN);
                let time = field["time"].as_str().unwrap_or_default().to_string();
                entry.insert(name.clone(), (value, time));
            }
        }
        out
    }

    /// Waits until `sensor` has a value for every one of `fields`; returns its fields.
    pub async fn wait_fields(
        &self,
        sensor: &str,
        fields: &[&str],
        within: Duration,
    ) -> BTreeMap<String, (f64, String)> {
        wait_for(
            &format!("fields {fields:?} of {sensor}"),
            within,
            async || {
                let live = self.live().await;
                match live.get(sensor) {
                    Some(f) if fields.iter().all(|name| f.contains_key(*name)) => Ok(f.clone()),
                    _ => Err(format!("{live:#?}")),
                }
            },
        )
        .await
    }

    /// Every stored raw reading of `sensor`/`field` (committed so far): (time ns, value,
    /// quality), oldest first.
    pub fn raw(&self, sensor: &str, field: &str) -> Vec<(i64, f64, Quality)> {
        self.raw_before(sensor, field, i64::MAX)
    }

    /// The stored raw readings of `sensor`/`field` before time `to` (ns). With `to` no later
    /// than a reading already seen, several calls see the same polls (commits go on).
    pub fn raw_before(&self, sensor: &str, field: &str, to: i64) -> Vec<(i64, f64, Quality)> {
        let running = self.running.as_ref().expect("the daemon runs");
        running
            .store
            .raw(&SeriesKey::new(sensor, field), 0, to, usize::MAX)
            .expect("read raw readings")
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.expect("metrics")
    }

    /// Stops the daemon (sources, pipeline, store, web) and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(20), running.wait())
                .await
                .expect("the daemon stops within 20 s")
                .expect("the daemon stops cleanly");
        }
    }
}

impl Drop for MbDaemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

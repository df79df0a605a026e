//! The InfluxDB test harness works, and the InfluxDB 1.x behaviours the forwarder relies on
//! hold on the real server: exact nanosecond timestamps, last-write-wins on duplicates (so a
//! replayed batch is harmless), partial writes on a 400 (so a 400 must not be retried), 404
//! for an unknown database, Basic auth, gzip bodies, and data that survives a restart.

mod support;

use std::collections::BTreeMap;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use support::influxd::{Influxd, basic_auth};

const DB: &str = "edge";

/// The rows of the first series of the first result, each as column name → value.
fn rows(answer: &Value) -> Vec<BTreeMap<String, Value>> {
    let series = &answer["results"][0]["series"][0];
    let columns: Vec<String> = series["columns"]
        .as_array()
        .unwrap_or_else(|| panic!("no series in {answer}"))
        .iter()
        .map(|c| c.as_str().expect("column name").to_owned())
        .collect();
    series["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|row| {
            columns
                .iter()
                .cloned()
                .zip(row.as_array().expect("row").iter().cloned())
                .collect()
        })
        .collect()
}

fn server_with_db() -> Influxd {
    let server = Influxd::start();
    server.create_database(DB);
    server
}

#[test]
fn written_point_reads_back_with_its_exact_nanosecond_timestamp() {
    let server = server_with_db();
    // Above 2^53, so a float anywhere on the way would lose the last digits.
    let ts: u64 = 1_700_000_000_123_456_789;
    let (status, body) = server.write_lines(
        DB,
        &format!("rollup,gateway=gw-1,sensor=plc-1/temp mean=21.5,count=60i {ts}\n"),
    );
    assert_eq!((status, body.as_str()), (204, ""));

    let rows = rows(&server.query(DB, "SELECT * FROM rollup"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["time"], json!(ts));
    assert_eq!(row["mean"], json!(21.5));
    assert_eq!(row["count"], json!(60));
    assert_eq!(row["gateway"], json!("gw-1"));
    assert_eq!(row["sensor"], json!("plc-1/temp"));
}

#[test]
fn rewriting_a_point_keeps_one_point_where_the_last_write_wins_and_fields_merge() {
    let server = server_with_db();
    let first = "rollup,sensor=s1 mean=1.0,max=5.0 1000000000\n";
    let second = "rollup,sensor=s1 mean=2.0 1000000000\n";
    assert_eq!(server.write_lines(DB, first).0, 204);
    assert_eq!(server.write_lines(DB, second).0, 204);

    assert_eq!(server.count(DB, "SELECT COUNT(mean) FROM rollup"), 1);
    let rows = rows(&server.query(DB, "SELECT mean, max FROM rollup"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    // InfluxDB prints a float field with an integral value as a JSON integer (`2`).
    assert_eq!(rows[0]["mean"].as_f64(), Some(2.0), "last write wins");
    assert_eq!(
        rows[0]["max"].as_f64(),
        Some(5.0),
        "a field the rewrite left out stays"
    );
}

#[test]
fn batch_with_one_malformed_line_answers_400_partial_write_and_stores_the_good_lines() {
    let server = server_with_db();
    let body = "rollup,sensor=a mean=1 1000\n\
                rollup,sensor=b mean=2 2000\n\
                this is not line protocol\n\
                rollup,sensor=c mean=3 3000\n";
    let mut response = server
        .write_request(DB)
        .send(body)
        .expect("an answer to the write");
    let header = response
        .headers()
        .get("X-Influxdb-Error")
        .map(|v| v.to_str().expect("ASCII header").to_owned());
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("body");

    assert_eq!(status, 400, "{text}");
    assert!(text.contains("partial write"), "{text}");
    assert!(text.contains("unable to parse"), "{text}");
    assert!(
        header
            .as_deref()
            .is_some_and(|h| h.contains("partial write")),
        "X-Influxdb-Error: {header:?}"
    );
    assert_eq!(server.count(DB, "SELECT COUNT(mean) FROM rollup"), 3);
}

#[test]
fn write_to_an_unknown_database_answers_404() {
    let server = server_with_db();
    let (status, body) = server.write_lines("no_such_db", "rollup mean=1 1000\n");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("database not found"), "{body}");
}

#[test]
fn auth_server_answers_401_without_credentials_and_accepts_basic_auth() {
    // A quote and a backslash check that the admin's password is escaped in CREATE USER.
    let password = r"s3cr'et\pw";
    let server = Influxd::start_with_auth("admin", password);
    server.create_database(DB);
    let write_url = format!("{}/write?db={DB}&precision=ns", server.url());
    let line = "rollup,sensor=a mean=1 1000\n";

    let anonymous = server
        .agent()
        .post(&write_url)
        .send(line)
        .expect("an answer");
    assert_eq!(anonymous.status().as_u16(), 401);
    assert!(
        anonymous
            .headers()
            .get("WWW-Authenticate")
            .is_some_and(|v| v.as_bytes().starts_with(b"Basic")),
        "{:?}",
        anonymous.headers()
    );
    let wrong = server
        .agent()
        .post(&write_url)
        .header("Authorization", basic_auth("admin", "wrong"))
        .send(line)
        .expect("an answer");
    assert_eq!(wrong.status().as_u16(), 401);
    assert_eq!(server.count(DB, "SELECT COUNT(mean) FROM rollup"), 0);

    let right = server
        .agent()
        .post(&write_url)
        .header("Authorization", basic_auth("admin", password))
        .send(line)
        .expect("an answer");
    assert_eq!(right.status().as_u16(), 204);
    assert_eq!(server.count(DB, "SELECT COUNT(mean) FROM rollup"), 1);

    let ping = server
        .agent()
        .get(format!("{}/ping", server.url()))
        .call()
        .expect("an answer");
    assert_eq!(ping.status().as_u16(), 204, "/ping needs no credentials");
}

#[test]
fn gzip_encoded_write_is_accepted() {
    let server = server_with_db();
    let body: String = (0..100)
        .map(|i| format!("rollup,sensor=s{} mean={i} {}\n", i % 7, 1_000 + i))
        .collect();
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(body.as_bytes()).expect("gzip");
    let gzipped = encoder.finish().expect("gzip");

    let mut response = server
        .write_request(DB)
        .header("Content-Encoding", "gzip")
        .send(&gzipped[..])
        .expect("an answer");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("body");
    assert_eq!(status, 204, "{text}");
    assert_eq!(server.count(DB, "SELECT COUNT(mean) FROM rollup"), 100);
}

#[test]
fn gzip_header_on_a_plain_body_answers_400() {
    let server = server_with_db();
    let mut response = server
        .write_request(DB)
        .header("Content-Encoding", "gzip")
        .send("rollup mean=1 1000\n")
        .expect("an answer");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("body");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("gzip"), "{text}");
    assert_eq!(server.count(DB, "SELECT COUNT(mean) FROM rollup"), 0);
}

#[test]
fn restart_on_the_same_port_keeps_the_data_and_accepts_writes_again() {
    let mut server = server_with_db();
    let port = server.port();
    assert_eq!(server.write_lines(DB, "rollup mean=1 1000\n").0, 204);

    server.stop();
    let during_outage = server
        .agent()
        .post(format!("{}/write?db={DB}", server.url()))
        .send("rollup mean=2 2000\n");
    assert!(
        during_outage.is_err(),
        "a stopped server still answered: {during_outage:?}"
    );

    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(server.count(DB, "SELECT COUNT(mean) FROM rollup"), 1);
    assert_eq!(server.write_lines(DB, "rollup mean=3 3000\n").0, 204);
    assert_eq!(server.count(DB, "SELECT COUNT(mean) FROM rollup"), 2);
}

#[test]
fn several_servers_run_side_by_side_with_their_own_ports_and_data() {
    let servers: Vec<Influxd> = std::thread::scope(|scope| {
        let starting: Vec<_> = (0..3).map(|_| scope.spawn(server_with_db)).collect();
        starting
            .into_iter()
            .map(|s| s.join().expect("start"))
            .collect()
    });
    for (i, server) in servers.iter().enumerate() {
        let body: String = (0..=i).map(|n| format!("rollup mean={n} {n}\n")).collect();
        assert_eq!(server.write_lines(DB, &body).0, 204);
    }

    let ports: std::collections::BTreeSet<u16> = servers.iter().map(Influxd::port).collect();
    assert_eq!(ports.len(), 3, "{ports:?}");
    for (i, server) in servers.iter().enumerate() {
        assert_eq!(
            server.count(DB, "SELECT COUNT(mean) FROM rollup"),
            i as u64 + 1
        );
    }
}

#[test]
fn dropping_the_handle_stops_the_server_and_deletes_its_dir() {
    let server = server_with_db();
    let url = format!("{}/ping", server.url());
    let dir = server.dir().to_owned();
    assert!(dir.join("influxd.log").exists());
    let agent = server.agent().clone();

    drop(server);
    assert!(!dir.exists(), "{} is left behind", dir.display());
    let answer = agent.get(&url).call();
    assert!(answer.is_err(), "the server still answers: {answer:?}");
}

#[test]
fn basic_auth_header_matches_the_rfc_7617_example() {
    assert_eq!(
        basic_auth("Aladdin", "open sesame"),
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    );
    assert_eq!(basic_auth("a", ""), "Basic YTo=");
    assert_eq!(basic_auth("ab", ""), "Basic YWI6");
}

//! Every connection mode of the MQTT source delivers readings from a real Mosquitto
//! (tests/support/mosquitto.rs): plain, username with a password file, TLS with the broker's
//! CA, and mutual TLS with a client certificate. The daemon runs in-process (`app::start`).

mod mqtt_common;
mod support;

use std::path::Path;
use std::time::Duration;

use edgewatch::model::{NS_PER_SEC, Quality};
use mqtt_common::{
    daemon_config, eventually, now_secs_ns, publisher, reference_payload, source_status, start,
    stop, stored_series, subscribed,
};
use support::mosquitto::{self, Mode, Mosquitto};

/// Starts a broker in `mode` and a daemon whose source has `connection` (the keys beside
/// host and port); one reference payload published through the broker is stored.
async fn delivers_over(mode: Mode, connection: impl FnOnce(&Mosquitto, &Path) -> String) {
    let broker = Mosquitto::start(mode);
    let dir = tempfile::tempdir().unwrap();
    let client_id = format!("it-{mode:?}-daemon").to_lowercase();
    let source = format!(
        "port = {}\nclient_id = \"{client_id}\"\ntopics = [\"conn/#\"]\n{}",
        broker.port(),
        connection(&broker, dir.path())
    );
    let (running, shutdown) = start(daemon_config(dir.path(), "gw-conn", &source)).await;
    let base = format!("http://{}", running.web_addr);
    subscribed(&broker, &client_id, &["conn/#"]).await;

    let t = now_secs_ns() - 10 * NS_PER_SEC;
    let mut client = publisher(&broker, &format!("it-{mode:?}-pub").to_lowercase()).await;
    let payload = reference_payload("c-1", t, [71.2, 3.91, 0.42]);
    assert_eq!(
        client
            .publish_all([("conn/c-1".to_string(), payload.into_bytes())], 1)
            .await,
        1
    );
    eventually(Duration::from_secs(10), "the reading stored", || async {
        let stored = stored_series(&running.store, "c-1", "pressure");
        if stored.is_empty() {
            Err(source_status(&base, "m").await.to_string())
        } else {
            Ok(())
        }
    })
    .await;
    for (field, value) in [
        ("temperature", 71.2),
        ("pressure", 3.91),
        ("vibration", 0.42),
    ] {
        assert_eq!(
            stored_series(&running.store, "c-1", field),
            [(t, value, Quality::GOOD)],
            "{mode:?}: c-1/{field}"
        );
    }
    let health = source_status(&base, "m").await;
    assert_eq!(health["state"], "up", "{health:#}");
    assert_eq!(health["errors"], 0, "{health:#}");
    client.disconnect().await;
    stop(running, shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_connection_delivers_readings() {
    delivers_over(Mode::Plain, |_, _| String::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_connection_with_a_password_file_delivers_readings() {
    delivers_over(Mode::Auth, |_, dir| {
        let file = dir.join("mqtt-password");
        // A trailing newline, as editors and `echo` write it, is not part of the password.
        std::fs::write(&file, format!("{}\n", mosquitto::PASSWORD)).unwrap();
        format!(
            "username = \"{}\"\npassword_file = \"{}\"\n",
            mosquitto::USER,
            file.display()
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connection_delivers_readings() {
    delivers_over(Mode::Tls, |broker, _| {
        format!("tls = {{ ca_file = \"{}\" }}\n", broker.ca_file().display())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_connection_with_a_client_certificate_delivers_readings() {
    delivers_over(Mode::Mtls, |broker, _| {
        format!(
            "tls = {{ ca_file = \"{}\", client_cert_file = \"{}\", client_key_file = \"{}\" }}\n",
            broker.ca_file().display(),
            broker.client_cert().display(),
            broker.client_key().display()
        )
    })
    .await;
}

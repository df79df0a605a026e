//! The Mosquitto test harness works, with the client the daemon uses (rumqttc, rustls with
//! ring): a QoS 1 publish/subscribe round trip in every mode, auth mode refuses a wrong or
//! missing password, mtls refuses a client without a certificate, and a persistent session's
//! QoS 1 message queued while its subscriber was offline survives a broker restart.

mod support;

use std::sync::Arc;

use rumqttc::{ConnectReturnCode, ConnectionError, MqttOptions, QoS, TlsConfiguration, Transport};
use support::mosquitto::{self, Mode, Mosquitto};
use support::mqtt::connect;

/// A QoS 1 message from one client reaches another through the broker.
async fn round_trip(broker: &Mosquitto) {
    let topic = format!("harness/{:?}", broker.mode());
    let (mut subscriber, _) = connect(broker.mqtt_options("harness-sub"))
        .await
        .unwrap_or_else(|e| panic!("subscriber: {e}\n{}", broker.log_tail()));
    subscriber.subscribe(&topic).await;
    let (mut publisher, _) = connect(broker.mqtt_options("harness-pub"))
        .await
        .unwrap_or_else(|e| panic!("publisher: {e}\n{}", broker.log_tail()));
    publisher.publish(&topic, b"hello").await;

    let message = subscriber.next_message().await;
    assert_eq!(message.topic, topic);
    assert_eq!(&message.payload[..], b"hello");
    assert_eq!(message.qos, QoS::AtLeastOnce);
    publisher.disconnect().await;
    subscriber.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_mode_round_trip() {
    let broker = Mosquitto::start(Mode::Plain);
    round_trip(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_mode_round_trip_and_wrong_or_missing_password_refused() {
    let broker = Mosquitto::start(Mode::Auth);
    round_trip(&broker).await;

    let mut wrong = broker.mqtt_options("harness-wrong");
    wrong.set_credentials(mosquitto::USER, "not-the-password");
    let anonymous = MqttOptions::new("harness-anonymous", broker.host(), broker.port());
    for (what, options) in [("wrong password", wrong), ("no credentials", anonymous)] {
        match connect(options).await {
            // Mosquitto answers MQTT 3.1.1 return code 5 for both.
            Err(ConnectionError::ConnectionRefused(
                ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword,
            )) => {}
            Err(other) => panic!("{what}: expected a refusal, got {other}"),
            Ok(_) => panic!("{what}: the broker accepted the connection"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_mode_round_trip_with_a_certificate_rustls_accepts() {
    let broker = Mosquitto::start(Mode::Tls);
    round_trip(&broker).await;

    // Plain MQTT on the TLS port gets nowhere.
    let mut plain = broker.mqtt_options("harness-plain");
    plain.set_transport(Transport::Tcp);
    assert!(
        connect(plain).await.is_err(),
        "plain MQTT accepted on the TLS port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_mode_round_trip_and_client_without_certificate_refused() {
    let broker = Mosquitto::start(Mode::Mtls);
    round_trip(&broker).await;

    let mut no_cert = broker.mqtt_options("harness-no-cert");
    no_cert.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(
        broker.tls_client_config(false),
    ))));
    // TLS 1.3 reports a missing client certificate after the handshake, so the refusal may
    // come as a TLS alert or as an I/O error on the CONNECT: any error will do.
    assert!(
        connect(no_cert).await.is_err(),
        "mtls broker accepted a client without a certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_gets_a_message_queued_while_offline_after_a_broker_restart() {
    let mut broker = Mosquitto::start(Mode::Plain);
    let topic = "harness/persist";
    let session = |broker: &Mosquitto| {
        let mut options = broker.mqtt_options("harness-persistent");
        options.set_clean_session(false);
        options
    };

    let (mut subscriber, _) = connect(session(&broker))
        .await
        .expect("subscriber connects");
    subscriber.subscribe(topic).await;
    subscriber.disconnect().await;

    let (mut publisher, _) = connect(broker.mqtt_options("harness-pub"))
        .await
        .expect("publisher connects");
    publisher.publish(topic, b"queued while offline").await;
    publisher.disconnect().await;

    let port = broker.port();
    broker.stop();
    assert!(!broker.is_running());
    assert!(
        broker.dir().join("mosquitto.db").is_file(),
        "no persistence file after a graceful stop\n{}",
        broker.log_tail()
    );
    broker.restart();
    assert_eq!(broker.port(), port, "restart keeps the port");

    let (mut subscriber, connack) = connect(session(&broker))
        .await
        .expect("subscriber reconnects after the restart");
    assert!(
        connack.session_present,
        "the session did not survive the restart\n{}",
        broker.log_tail()
    );
    // No new SUBSCRIBE: the subscription and the queued message come from the session.
    let message = subscriber.next_message().await;
    assert_eq!(message.topic, topic);
    assert_eq!(&message.payload[..], b"queued while offline");
    subscriber.disconnect().await;

    assert!(broker.log().contains("=== harness: mosquitto ready"));
}

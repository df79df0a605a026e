//! The Mosquitto test harness works, with the client the daemon uses (rumqttc, rustls with
//! ring): a QoS 1 publish/subscribe round trip in every mode, auth mode refuses a wrong or
//! missing password, mtls refuses a client without a certificate, and a persistent session's
//! QoS 1 message queued while its subscriber was offline survives a broker restart.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, MqttOptions, Outgoing,
    Packet, Publish, QoS, TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use support::mosquitto::{self, Mode, Mosquitto};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Upper bound of every wait on the broker; generous for a loaded CI machine.
const WAIT: Duration = Duration::from_secs(10);

/// A rustls config trusting the broker's throw-away CA, with the client certificate in mtls
/// mode when `client_cert` is set.
fn tls_config(broker: &Mosquitto, client_cert: bool) -> ClientConfig {
    // Fails only when a provider is already installed (another test did it): fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(broker.ca_file()).expect("read ca.crt") {
        roots.add(cert.expect("parse ca.crt")).expect("add the CA");
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    if client_cert {
        let chain = CertificateDer::pem_file_iter(broker.client_cert())
            .expect("read client.crt")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse client.crt");
        let key = PrivateKeyDer::from_pem_file(broker.client_key()).expect("read client.key");
        builder
            .with_client_auth_cert(chain, key)
            .expect("client certificate and key match")
    } else {
        builder.with_no_client_auth()
    }
}

/// Options that connect to `broker` with everything its mode asks for.
fn options(broker: &Mosquitto, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, broker.host(), broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    match broker.mode() {
        Mode::Plain => {}
        Mode::Auth => {
            options.set_credentials(mosquitto::USER, mosquitto::PASSWORD);
        }
        Mode::Tls | Mode::Mtls => {
            let config = tls_config(broker, broker.mode() == Mode::Mtls);
            options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))));
        }
    }
    options
}

/// A connected client whose event loop runs in its own task (never await a publish from the
/// polling task: rumqttc can deadlock).
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Event>,
    poller: JoinHandle<Result<(), ConnectionError>>,
}

/// Connects and returns the client and the broker's CONNACK, or the connection error. The
/// event loop stops at the first error instead of reconnecting.
async fn connect(options: MqttOptions) -> Result<(Client, ConnAck), ConnectionError> {
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let connack = loop {
        let event = timeout(WAIT, eventloop.poll())
            .await
            .expect("no CONNACK and no error in time")?;
        if let Event::Incoming(Packet::ConnAck(connack)) = event {
            break connack;
        }
    };
    let (tx, events) = mpsc::unbounded_channel();
    let poller = tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await?;
            let done = matches!(event, Event::Outgoing(Outgoing::Disconnect));
            let _ = tx.send(event);
            if done {
                return Ok(());
            }
        }
    });
    Ok((
        Client {
            client,
            events,
            poller,
        },
        connack,
    ))
}

impl Client {
    /// Waits for the first event `pick` maps to `Some`; panics after [`WAIT`] or when the
    /// connection ends.
    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(Event) -> Option<T>) -> T {
        let found = timeout(WAIT, async {
            while let Some(event) = self.events.recv().await {
                if let Some(found) = pick(event) {
                    return Some(found);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(found)) => found,
            Ok(None) => panic!("connection ended while waiting for {what}"),
            Err(_) => panic!("no {what} within {WAIT:?}"),
        }
    }

    async fn subscribe(&mut self, topic: &str) {
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .expect("queue SUBSCRIBE");
        self.wait_for("SUBACK", |event| {
            matches!(event, Event::Incoming(Packet::SubAck(_))).then_some(())
        })
        .await;
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK.
    async fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .await
            .expect("queue PUBLISH");
        self.wait_for("PUBACK", |event| {
            matches!(event, Event::Incoming(Packet::PubAck(_))).then_some(())
        })
        .await;
    }

    async fn next_message(&mut self) -> Publish {
        self.wait_for("message", |event| match event {
            Event::Incoming(Packet::Publish(publish)) => Some(publish),
            _ => None,
        })
        .await
    }

    /// Sends DISCONNECT and waits until it is written, so the broker sees a clean end.
    async fn disconnect(self) {
        self.client.disconnect().await.expect("queue DISCONNECT");
        timeout(WAIT, self.poller)
            .await
            .expect("DISCONNECT written in time")
            .expect("poller task")
            .expect("connection open until DISCONNECT");
    }
}

/// A QoS 1 message from one client reaches another through the broker.
async fn round_trip(broker: &Mosquitto) {
    let topic = format!("harness/{:?}", broker.mode());
    let (mut subscriber, _) = connect(options(broker, "harness-sub"))
        .await
        .unwrap_or_else(|e| panic!("subscriber: {e}\n{}", broker.log_tail()));
    subscriber.subscribe(&topic).await;
    let (mut publisher, _) = connect(options(broker, "harness-pub"))
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

    let mut wrong = options(&broker, "harness-wrong");
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
    let mut plain = options(&broker, "harness-plain");
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

    let mut no_cert = options(&broker, "harness-no-cert");
    no_cert.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(
        tls_config(&broker, false),
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
        let mut options = options(broker, "harness-persistent");
        options.set_clean_session(false);
        options
    };

    let (mut subscriber, _) = connect(session(&broker)).await.expect("subscriber connects");
    subscriber.subscribe(topic).await;
    subscriber.disconnect().await;

    let (mut publisher, _) = connect(options(&broker, "harness-pub"))
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


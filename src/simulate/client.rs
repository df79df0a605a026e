//! The publisher's MQTT client: options and TLS from the command line, and connection errors
//! in words an installer can act on.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, StateError,
    TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{INFLIGHT, KEEP_ALIVE, MqttArgs, SimulateError};

/// The client's options from the command line: credentials, TLS, in-flight window.
pub(super) fn mqtt_options(args: &MqttArgs) -> Result<MqttOptions, SimulateError> {
    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| format!("edgewatch-simulate-{}", std::process::id()));
    let mut options = MqttOptions::new(client_id, args.host.clone(), args.port);
    options.set_keep_alive(KEEP_ALIVE);
    options.set_clean_session(true);
    options.set_inflight(INFLIGHT);
    if let Some(user) = &args.username {
        let password = match &args.password_env {
            Some(var) => std::env::var(var).map_err(|_| {
                SimulateError::Usage(format!(
                    "--password-env {var}: the environment variable {var} is not set (or not UTF-8)"
                ))
            })?,
            None => String::new(),
        };
        options.set_credentials(user.clone(), password);
    }
    if let Some(ca) = &args.tls_ca {
        let config = tls_config(ca, args.tls_cert.as_deref(), args.tls_key.as_deref())?;
        options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))));
    }
    Ok(options)
}

/// A rustls client config (ring) trusting the CA certificates in `ca`, with a client
/// certificate when given.
pub(super) fn tls_config(
    ca: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<rustls::ClientConfig, SimulateError> {
    let usage = SimulateError::Usage;
    let read_certs = |option: &str, path: &Path| {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| usage(format!("{option} {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(usage(format!(
                "{option} {}: no PEM certificate in the file",
                path.display()
            )));
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs("--tls-ca", ca)? {
        roots
            .add(cert)
            .map_err(|e| usage(format!("--tls-ca {}: {e}", ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| usage(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("--tls-cert", cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| usage(format!("--tls-key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| usage(format!("--tls-cert/--tls-key: {e}")))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Polls until the broker's CONNACK, or fails with a sentence an installer can act on.
pub(super) async fn connect(
    eventloop: &mut EventLoop,
    args: &MqttArgs,
) -> Result<(), SimulateError> {
    let target = format!("{}:{}", args.host, args.port);
    let timeout = Duration::from_secs(args.connect_timeout_secs.max(1));
    // rumqttc bounds the TCP connect + CONNACK by the same timeout; this one is the backstop.
    let result = tokio::time::timeout(timeout + Duration::from_secs(2), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SimulateError::Connect(connect_error(&target, args, &e))),
        Err(_) => Err(SimulateError::Connect(format!(
            "cannot connect to {target}: no answer within {} s",
            timeout.as_secs()
        ))),
    }
}

/// The message for a failed connection attempt.
pub(super) fn connect_error(target: &str, args: &MqttArgs, e: &ConnectionError) -> String {
    if let ConnectionError::ConnectionRefused(code) = e {
        let why = match code {
            ConnectReturnCode::NotAuthorized => {
                "not authorised (check --username and --password-env)"
            }
            ConnectReturnCode::BadUserNamePassword => "bad user name or password",
            ConnectReturnCode::BadClientId => "client id rejected (try another --client-id)",
            ConnectReturnCode::ServiceUnavailable => "service unavailable",
            ConnectReturnCode::RefusedProtocolVersion => "MQTT 3.1.1 not supported",
            ConnectReturnCode::Success => "no reason given",
        };
        return format!("the broker at {target} refused the connection: {why}");
    }
    if let ConnectionError::Tls(tls) = e {
        return format!("TLS handshake with {target} failed: {tls}");
    }
    if matches!(e, ConnectionError::NetworkTimeout) {
        return format!(
            "cannot connect to {target}: no answer within {} s",
            args.connect_timeout_secs.max(1)
        );
    }
    // rumqttc reports what happens while it waits for the CONNACK (a TLS alert, a reset)
    // wrapped in its state errors.
    let io = match e {
        ConnectionError::Io(io)
        | ConnectionError::MqttState(StateError::Io(io))
        | ConnectionError::MqttState(StateError::Deserialization(rumqttc::Error::Io(io))) => {
            Some(io)
        }
        _ => None,
    };
    let Some(io) = io else {
        return format!("cannot connect to {target}: {e}");
    };
    let text = io.to_string();
    if io.kind() == std::io::ErrorKind::ConnectionRefused {
        format!("cannot connect to {target}: connection refused")
    } else if text.contains("CertificateRequired") {
        format!(
            "cannot connect to {target}: the broker requires a client certificate (add \
             --tls-cert and --tls-key): {text}"
        )
    } else if args.tls_ca.is_none() && is_eof(io) {
        format!(
            "cannot connect to {target}: the broker closed the connection (does it expect \
             TLS? then add --tls-ca): {text}"
        )
    } else {
        format!("cannot connect to {target}: {text}")
    }
}

pub(super) fn is_eof(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
    )
}

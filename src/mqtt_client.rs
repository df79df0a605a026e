//! How to reach a broker: `rumqttc` options from an [`MqttConnection`], shared by the `mqtt`
//! source and the MQTT alert publisher. TLS is rustls with ring (never the platform roots: an
//! edge broker has its own CA, so `ca_file` is required), built here rather than through
//! rumqttc's `TlsConfiguration::Simple` so that the key formats, the error messages and the
//! `server_name` override are ours.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rumqttc::{MqttOptions, NetworkOptions, TlsConfiguration, Transport};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{MqttConnection, TlsConfig};

/// Largest packet accepted in either direction unless the caller raises it. rumqttc drops the
/// connection on a larger incoming packet (and the broker would redeliver a QoS 1 one
/// forever), so the limit must stay well above any payload a mapping refuses as too large:
/// see [`incoming_packet_limit`].
pub const DEFAULT_MAX_PACKET_BYTES: usize = 1 << 20;

/// The incoming packet limit for subscriptions whose largest `max_payload_bytes` is
/// `max_payload`: twice that plus room for the longest topic, and at least 1 MiB. A payload
/// over `max_payload_bytes` must still arrive, so that the decoder refuses it as `too_large`
/// (counted, acknowledged) instead of the connection failing on it.
pub fn incoming_packet_limit(max_payload: usize) -> usize {
    max_payload
        .saturating_mul(2)
        .saturating_add(usize::from(u16::MAX) + 16)
        .max(DEFAULT_MAX_PACKET_BYTES)
}

/// Options for one client of the broker `conn` describes: keep-alive, session, credentials,
/// TLS, and packet limits of [`DEFAULT_MAX_PACKET_BYTES`] (change them with
/// `set_max_packet_size`). With `manual_acks`, rumqttc acknowledges no QoS 1 message by itself:
/// the caller does, with `AsyncClient::ack`, when the message is safe.
///
/// Fails with a message naming the file when a TLS file cannot be read or holds no usable
/// certificate or key, or when the password cannot be resolved.
pub fn options(
    conn: &MqttConnection,
    client_id: &str,
    clean_session: bool,
    manual_acks: bool,
) -> anyhow::Result<MqttOptions> {
    if client_id.is_empty() && !clean_session {
        bail!("a persistent session (clean_session = false) needs a client id");
    }
    let mut o = MqttOptions::new(client_id, conn.host.clone(), conn.port);
    o.set_keep_alive(Duration::from_secs(conn.keepalive_secs))
        .set_clean_session(clean_session)
        .set_manual_acks(manual_acks)
        .set_max_packet_size(DEFAULT_MAX_PACKET_BYTES, DEFAULT_MAX_PACKET_BYTES);
    if let Some(user) = &conn.username {
        let password = conn.password().map_err(anyhow::Error::msg)?;
        o.set_credentials(user.clone(), password.0);
    }
    if let Some(tls) = &conn.tls {
        let config = client_config(tls, &conn.host)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )));
    }
    Ok(o)
}

/// Socket options: the connection timeout (`connect_timeout_secs`, which rumqttc also applies
/// to each flush) and no Nagle delay, so that acknowledgements leave at once.
pub fn network_options(conn: &MqttConnection) -> NetworkOptions {
    let mut n = NetworkOptions::new();
    n.set_connection_timeout(conn.connect_timeout_secs.max(1));
    n.set_tcp_nodelay(true);
    n
}

/// `host:port (tls)` or `host:port (plain)`, for logs and the status page.
pub fn describe(conn: &MqttConnection) -> String {
    let transport = if conn.tls.is_some() { "tls" } else { "plain" };
    format!("{}:{} ({transport})", conn.host, conn.port)
}

/// A rustls client configuration (ring, TLS 1.2 and 1.3) trusting only the CA file, with the
/// client certificate when one is configured. rumqttc checks the broker's certificate against
/// `host`; a `server_name` that differs from it is checked instead, by a verifier that
/// substitutes the name and leaves every other check to webpki.
pub fn client_config(tls: &TlsConfig, host: &str) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in read_certs(&tls.ca_file, "tls.ca_file")? {
        roots.add(cert).with_context(|| {
            format!(
                "tls.ca_file {}: a certificate is not a usable CA",
                tls.ca_file.display()
            )
        })?;
    }
    let roots = Arc::new(roots);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("rustls has no usable protocol version")?;
    let builder = match tls.server_name.as_deref().filter(|name| *name != host) {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let name = ServerName::try_from(name.to_string())
                .with_context(|| format!("tls.server_name `{name}` is not a DNS name or IP"))?;
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .context("cannot build the certificate verifier")?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NameOverride { name, inner }))
        }
    };
    let config = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "tls.client_cert_file")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                anyhow::anyhow!(
                    "tls.client_key_file {}: no PKCS#8, PKCS#1 or SEC1 private key ({e})",
                    key.display()
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .context("the client certificate and key do not fit together")?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => bail!("tls.client_cert_file and tls.client_key_file go together"),
    };
    Ok(config)
}

/// Every certificate in a PEM file; an error names `key` and the file when there is none.
fn read_certs(path: &Path, key: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("{key} {}: no PEM certificate in it", path.display());
    }
    Ok(certs)
}

/// Verifies the broker's certificate for a configured name instead of the host connected to
/// (a broker reached by IP address whose certificate names its DNS name).
#[derive(Debug)]
struct NameOverride {
    name: ServerName<'static>,
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for NameOverride {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether a connection failure needs a person rather than time: refused credentials, a
/// rejected client id or protocol, or a certificate the CA file does not vouch for.
pub fn needs_a_person(error: &rumqttc::ConnectionError) -> bool {
    use rumqttc::{ConnectReturnCode as Code, ConnectionError as E, TlsError};
    match error {
        E::ConnectionRefused(code) => matches!(
            code,
            Code::BadUserNamePassword
                | Code::NotAuthorized
                | Code::BadClientId
                | Code::RefusedProtocolVersion
        ),
        E::Tls(TlsError::TLS(e)) => is_certificate_error(e),
        E::Tls(TlsError::DNSName(_) | TlsError::NoValidCertInChain) => true,
        _ => io_error(error)
            .and_then(|e| e.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(is_certificate_error),
    }
}

/// The I/O error under a connection error, wherever rumqttc wrapped it: a TLS alert from the
/// broker (such as "certificate required", which TLS 1.3 delivers only on the first read)
/// arrives as one.
fn io_error(error: &rumqttc::ConnectionError) -> Option<&std::io::Error> {
    use rumqttc::{ConnectionError as E, StateError, TlsError};
    match error {
        E::Io(e) | E::Tls(TlsError::Io(e)) => Some(e),
        E::MqttState(StateError::Io(e))
        | E::MqttState(StateError::Deserialization(rumqttc::Error::Io(e))) => Some(e),
        _ => None,
    }
}

fn is_certificate_error(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate
                    | rustls::AlertDescription::CertificateRequired
                    | rustls::AlertDescription::UnknownCA
                    | rustls::AlertDescription::CertificateUnknown
            )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> MqttConnection {
        let text = "[gateway]\nid = \"gw\"\n\n[[sources]]\nname = \"m\"\ntype = \"mqtt\"\n\
                    host = \"127.0.0.1\"\nport = 1884\ntopics = [\"a/#\"]\nusername = \"u\"\n\
                    password = \"p\"\nkeepalive_secs = 15\n";
        let config = crate::config::load_str(text).expect("mqtt config loads");
        match config.sources.into_iter().next().map(|s| s.kind) {
            Some(crate::config::SourceKind::Mqtt(m)) => m.connection,
            other => panic!("expected an mqtt source, got {other:?}"),
        }
    }

    #[test]
    fn options_carry_the_connection_settings() {
        let conn = connection();
        let o = options(&conn, "edgewatch-gw-m", false, true).unwrap();
        assert_eq!(o.broker_address(), ("127.0.0.1".to_string(), 1884));
        assert_eq!(o.keep_alive(), Duration::from_secs(15));
        assert!(!o.clean_session());
        assert!(o.manual_acks());
        assert_eq!(o.client_id(), "edgewatch-gw-m");
        let login = o.credentials().expect("credentials");
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("u", "p")
        );
        assert_eq!(o.max_packet_size(), DEFAULT_MAX_PACKET_BYTES);
        assert!(matches!(o.transport(), Transport::Tcp));
        assert_eq!(describe(&conn), "127.0.0.1:1884 (plain)");
    }

    #[test]
    fn a_persistent_session_without_client_id_is_refused_not_a_panic() {
        assert!(options(&connection(), "", false, true).is_err());
        assert!(options(&connection(), "", true, true).is_ok());
    }

    #[test]
    fn incoming_limit_leaves_room_for_payloads_the_mapping_refuses() {
        assert_eq!(incoming_packet_limit(1024), DEFAULT_MAX_PACKET_BYTES);
        let big = 4 << 20;
        assert!(incoming_packet_limit(big) >= 2 * big + usize::from(u16::MAX));
        assert_eq!(incoming_packet_limit(usize::MAX), usize::MAX);
    }

    #[test]
    fn unreadable_or_empty_tls_files_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        for (file, expect) in [(&empty, "no PEM certificate"), (&missing, "missing.pem")] {
            let tls = TlsConfig {
                ca_file: file.clone(),
                ..TlsConfig::default()
            };
            let e = client_config(&tls, "127.0.0.1").unwrap_err().to_string();
            assert!(e.starts_with("tls.ca_file"), "{e}");
            assert!(e.contains(expect), "{e}");
        }
    }

    #[test]
    fn refused_credentials_need_a_person_and_a_dead_broker_does_not() {
        use rumqttc::{ConnectReturnCode as Code, ConnectionError as E};
        assert!(needs_a_person(&E::ConnectionRefused(Code::NotAuthorized)));
        assert!(needs_a_person(&E::ConnectionRefused(
            Code::BadUserNamePassword
        )));
        assert!(!needs_a_person(&E::ConnectionRefused(
            Code::ServiceUnavailable
        )));
        assert!(!needs_a_person(&E::NetworkTimeout));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!needs_a_person(&E::Io(refused)));
        let bad_cert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(needs_a_person(&E::Io(bad_cert)));
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        let late = E::MqttState(rumqttc::StateError::Deserialization(rumqttc::Error::Io(
            alert,
        )));
        assert!(needs_a_person(&late), "an alert on the first read");
    }
}

//! TLS to etcd: the CA, client certificate and key of a profile's `[etcd]` section (or of
//! `ringway register --cacert/--cert/--key`) read and checked once per connect, handed to
//! etcd-client, and a handshake of ringway's own that says why a TLS etcd could not be used.
//!
//! etcd-client's balanced channel retries a failed handshake quietly until the deadline, so
//! without [`EtcdTls::diagnose`] a wrong CA and a missing client certificate would both read
//! as "cannot reach etcd".

use std::net::{TcpStream, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, ClientConnection, RootCertStore};

use super::EtcdError;
use crate::config::EtcdConfig;

/// How long a finished handshake is watched for the server's verdict on the client
/// certificate: in TLS 1.3 it arrives as an alert after the client's last handshake message.
const VERDICT_WAIT: Duration = Duration::from_millis(500);

/// Checked TLS settings for one connect: what etcd-client is given and the same trust and
/// identity as a rustls configuration for [`EtcdTls::diagnose`].
pub struct EtcdTls {
    options: etcd_client::TlsOptions,
    config: Arc<ClientConfig>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
}

fn file_error(file: &Path, reason: impl Into<String>) -> EtcdError {
    EtcdError::TlsFile {
        file: file.to_path_buf(),
        reason: reason.into(),
    }
}

fn read(file: &Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(file).map_err(|e| file_error(file, format!("cannot read it: {e}")))
}

/// Every certificate of a PEM file; a file with none (a key, DER, garbage) is an error.
fn certificates(file: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, EtcdError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(file, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(
            file,
            "no certificate in it (expected PEM blocks \"-----BEGIN CERTIFICATE-----\")",
        ));
    }
    Ok(certs)
}

fn system_roots() -> Result<RootCertStore, EtcdError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(EtcdError::TlsSetup(
            "no etcd.ca_file (--cacert) given and no CA certificates in the system store".into(),
        ));
    }
    Ok(roots)
}

/// The host of an `https://` URL (as written, IPv6 in brackets) and `host:port` to connect to
/// (port 443 when the URL has none).
fn host_and_port(endpoint: &str) -> Option<(&str, String)> {
    let rest = endpoint.strip_prefix("https://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            Some((host, authority.to_string()))
        }
        _ => Some((authority, format!("{authority}:443"))),
    }
}

impl EtcdTls {
    /// Read and check the TLS files; `None` when the endpoints are `http://`. Every error names
    /// the file and the reason; endpoints whose schemes do not fit are refused first.
    pub fn load(cfg: &EtcdConfig) -> Result<Option<EtcdTls>, EtcdError> {
        if let Some(reason) = cfg.scheme_error() {
            return Err(EtcdError::TlsSetup(format!("endpoints {reason}")));
        }
        if !cfg.uses_tls() {
            return Ok(None);
        }
        let provider = Arc::new(aws_lc_rs::default_provider());
        let mut options = etcd_client::TlsOptions::new();
        let roots = match &cfg.ca_file {
            Some(file) => {
                let pem = read(file)?;
                let mut roots = RootCertStore::empty();
                for (i, cert) in certificates(file, &pem)?.into_iter().enumerate() {
                    roots.add(cert).map_err(|e| {
                        file_error(file, format!("certificate {} is not usable: {e}", i + 1))
                    })?;
                }
                options = options.ca_certificate(etcd_client::Certificate::from_pem(pem));
                roots
            }
            None => {
                options = options.with_native_roots();
                system_roots()?
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| EtcdError::TlsSetup(format!("no TLS version available: {e}")))?
            .with_root_certificates(roots);
        let mut config = match (&cfg.cert_file, &cfg.key_file) {
            (Some(cert_file), Some(key_file)) => {
                let cert_pem = read(cert_file)?;
                let chain = certificates(cert_file, &cert_pem)?;
                let key_pem = read(key_file)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    file_error(
                        key_file,
                        format!("no private key in it (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
                    )
                })?;
                let config = builder.with_client_auth_cert(chain, key).map_err(|e| {
                    let reason = match e {
                        rustls::Error::InconsistentKeys(_) => format!(
                            "the key does not belong to the certificate in {}",
                            cert_file.display()
                        ),
                        e => format!("the key is not usable: {e}"),
                    };
                    file_error(key_file, reason)
                })?;
                options = options.identity(etcd_client::Identity::from_pem(cert_pem, key_pem));
                config
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(EtcdTls {
            options,
            config: Arc::new(config),
            ca_file: cfg.ca_file.clone(),
            cert_file: cfg.cert_file.clone(),
        }))
    }

    /// The options etcd-client connects with.
    pub fn options(&self) -> etcd_client::TlsOptions {
        self.options.clone()
    }

    /// Handshake with each endpoint as etcd-client would and explain the first TLS failure
    /// (in endpoint order): an untrusted or misnamed server certificate, a client certificate
    /// etcd asks for and did not get or refused, a server that does not speak TLS. `None` when
    /// every endpoint that answers completes the handshake (the failure was not TLS's).
    /// Blocking; the endpoints are tried at once, so an unreachable cluster costs one
    /// `deadline`, not one per member.
    pub fn diagnose(&self, endpoints: &[String], deadline: Duration) -> Option<EtcdError> {
        std::thread::scope(|scope| {
            let tries: Vec<_> = endpoints
                .iter()
                .map(|endpoint| scope.spawn(move || self.handshake(endpoint, deadline)))
                .collect();
            let reasons: Vec<_> = tries.into_iter().map(|t| t.join().ok().flatten()).collect();
            endpoints
                .iter()
                .zip(reasons)
                .find_map(|(endpoint, reason)| {
                    Some(EtcdError::Tls {
                        endpoint: endpoint.clone(),
                        reason: reason?,
                    })
                })
        })
    }

    /// The reason a handshake with `endpoint` failed for TLS reasons, if it did.
    fn handshake(&self, endpoint: &str, deadline: Duration) -> Option<String> {
        let (host, with_port) = host_and_port(endpoint)?;
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .ok()?
            .to_owned();
        let addr = with_port.to_socket_addrs().ok()?.next()?;
        let mut sock = TcpStream::connect_timeout(&addr, deadline).ok()?;
        sock.set_read_timeout(Some(deadline)).ok()?;
        sock.set_write_timeout(Some(deadline)).ok()?;
        let mut conn = ClientConnection::new(self.config.clone(), name).ok()?;
        let started = Instant::now();
        while conn.is_handshaking() {
            if started.elapsed() > deadline {
                return None;
            }
            if let Err(e) = conn.complete_io(&mut sock) {
                return self.explain(&e, host);
            }
        }
        // The handshake is done on our side; etcd may still refuse the client certificate.
        let verdict_by = Instant::now() + VERDICT_WAIT.min(deadline);
        sock.set_read_timeout(Some(VERDICT_WAIT.min(deadline)))
            .ok()?;
        while Instant::now() < verdict_by {
            match conn.complete_io(&mut sock) {
                // The server closed the connection (or there is nothing more to do).
                Ok((0, 0)) => return None,
                Ok(_) => {}
                Err(e) => return self.explain(&e, host),
            }
        }
        None
    }

    /// A failed handshake step in words an operator can act on; `None` for failures that are
    /// not about TLS (timeouts, resets while etcd is going away).
    fn explain(&self, e: &std::io::Error, host: &str) -> Option<String> {
        let tls = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<rustls::Error>())?;
        let trusted = match &self.ca_file {
            Some(f) => format!("the CA in {}", f.display()),
            None => "a CA in the system store (set etcd.ca_file / --cacert)".into(),
        };
        Some(match tls {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!("etcd's certificate is not valid for {host:?} ({tls})"),
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            ) => format!(
                "certificate verify failed: etcd's certificate is not signed by {trusted} ({tls})"
            ),
            rustls::Error::InvalidCertificate(_) => {
                format!("certificate verify failed: etcd's certificate is refused ({tls})")
            }
            rustls::Error::AlertReceived(alert) => match (&self.cert_file, alert) {
                (None, _) => format!(
                    "etcd requires a client certificate and none was given \
                     (set etcd.cert_file and etcd.key_file / --cert and --key) ({tls})"
                ),
                (Some(cert), AlertDescription::CertificateRequired) => format!(
                    "etcd did not accept the client certificate in {} ({tls})",
                    cert.display()
                ),
                (Some(cert), _) => format!(
                    "etcd refused the client certificate in {}: is it signed by a CA in etcd's \
                     --trusted-ca-file? ({tls})",
                    cert.display()
                ),
            },
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                format!("the server does not speak TLS there: does etcd listen with https:// on this port? ({tls})")
            }
            _ => format!("TLS handshake failed: {tls}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_give_the_name_to_verify_and_the_address_to_dial() {
        let parts = |e| host_and_port(e).map(|(h, a)| (h.to_string(), a));
        let own = |h: &str, a: &str| Some((h.to_string(), a.to_string()));
        assert_eq!(
            parts("https://127.0.0.1:2379"),
            own("127.0.0.1", "127.0.0.1:2379")
        );
        assert_eq!(
            parts("https://etcd-1.internal"),
            own("etcd-1.internal", "etcd-1.internal:443")
        );
        assert_eq!(parts("https://[::1]:2379/"), own("[::1]", "[::1]:2379"));
        assert_eq!(parts("https://[::1]"), own("[::1]", "[::1]:443"));
        assert_eq!(parts("http://127.0.0.1:2379"), None);
    }

    #[test]
    fn http_endpoints_need_no_tls_and_tls_files_need_https() {
        let mut cfg = EtcdConfig::default();
        assert!(EtcdTls::load(&cfg).unwrap().is_none());
        cfg.ca_file = Some("/nonexistent/ca.pem".into());
        let err = EtcdTls::load(&cfg).err().unwrap().to_string();
        assert!(err.contains("https://"), "{err}");
        cfg.endpoints = vec!["https://127.0.0.1:2379".into()];
        let err = EtcdTls::load(&cfg).err().unwrap().to_string();
        assert!(
            err.contains("/nonexistent/ca.pem") && err.contains("cannot read"),
            "{err}"
        );
    }
}

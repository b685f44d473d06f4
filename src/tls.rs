//! TLS termination on a listener: certificates loaded from PEM files and chosen by SNI, client
//! certificates verified against a CA, session resumption shared by every worker of the node.
//!
//! A [`Terminator`] is built per TLS listener when the node starts and shared (`Arc`) by all
//! workers. Its [`TlsState`] is swapped whole on SIGHUP: new handshakes use the new
//! certificates, established connections keep theirs. The session ticket keys (rotated every
//! six hours) and the session cache outlive a reload, so a ticket issued by one worker, or
//! before a reload, resumes on any worker.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{ClientAuth, ConfigError, TlsConfig, TlsMinVersion};
use crate::control::TableHandle;

pub mod hosts;
pub mod stream;

/// The crypto provider of every TLS context ringway builds (aws-lc-rs: ECDSA and RSA keys,
/// TLS 1.2 and 1.3).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The TLS side of one listener, shared by every worker.
pub struct Terminator {
    state: ArcSwap<TlsState>,
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
    routes: Option<TableHandle>,
}

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminator")
            .field("certificates", &self.state.load().certificates)
            .finish_non_exhaustive()
    }
}

/// What new handshakes on a listener use.
pub struct TlsState {
    pub config: Arc<ServerConfig>,
    /// Time from the first byte of a handshake to its end.
    pub handshake: Duration,
    /// Handshakes a worker runs at once on this listener; more are closed at once.
    pub max_handshakes: usize,
    pub certificates: Vec<CertificateInfo>,
}

/// What `ringway check` and the logs say about a loaded certificate.
#[derive(Clone, Debug)]
pub struct CertificateInfo {
    pub file: PathBuf,
    /// The names it is chosen for by SNI (its DNS SANs, or its common name when it has none).
    pub names: Vec<String>,
    pub not_after: SystemTime,
}

/// Sessions remembered for stateful (TLS 1.2 session id) resumption, node-wide.
const SESSION_CACHE_ENTRIES: usize = 4096;

impl Terminator {
    /// Load listener `i`'s certificates; `file` is the profile (for error messages).
    /// `routes`: the node's route table, whose TLS hosts (from etcd) are chosen by SNI too.
    pub fn load(
        i: usize,
        cfg: &TlsConfig,
        file: &Path,
        routes: Option<&TableHandle>,
    ) -> Result<Terminator, ConfigError> {
        let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| invalid(file, format!("listener[{i}].tls"), e.to_string()))?;
        let sessions: Arc<dyn StoresServerSessions> =
            rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
        let routes = routes.cloned();
        let state = build(i, cfg, file, &ticketer, &sessions, routes.clone())?;
        Ok(Terminator {
            state: ArcSwap::from_pointee(state),
            ticketer,
            sessions,
            routes,
        })
    }

    /// Re-read the files; on any error the running certificates stay.
    pub fn reload(&self, i: usize, cfg: &TlsConfig, file: &Path) -> Result<(), ConfigError> {
        let state = build(
            i,
            cfg,
            file,
            &self.ticketer,
            &self.sessions,
            self.routes.clone(),
        )?;
        self.state.store(Arc::new(state));
        Ok(())
    }

    /// What a new handshake uses.
    pub fn current(&self) -> Arc<TlsState> {
        self.state.load_full()
    }
}

fn invalid(file: &Path, key: String, reason: String) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_path_buf(),
        key,
        reason,
    }
}

fn build(
    i: usize,
    cfg: &TlsConfig,
    file: &Path,
    ticketer: &Arc<dyn ProducesTickets>,
    sessions: &Arc<dyn StoresServerSessions>,
    routes: Option<TableHandle>,
) -> Result<TlsState, ConfigError> {
    let provider = provider();
    let mut resolver = SniResolver {
        routes,
        ..SniResolver::default()
    };
    let mut certificates = Vec::new();
    for (j, c) in cfg.certificates.iter().enumerate() {
        let key_of = |k: &str| format!("listener[{i}].tls.certificates[{j}].{k}");
        let (certified, info) = load_pair(&c.cert, &c.key, &provider).map_err(|e| match e {
            PairError::Cert(reason) => invalid(file, key_of("cert"), reason),
            PairError::Key(reason) => invalid(file, key_of("key"), reason),
        })?;
        resolver.add(Arc::new(certified), &info.names);
        certificates.push(info);
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match cfg.min_version {
        TlsMinVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsMinVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| {
            invalid(
                file,
                format!("listener[{i}].tls.min_version"),
                e.to_string(),
            )
        })?;
    let builder = match (cfg.client_auth(), &cfg.client_ca) {
        (ClientAuth::Off, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let key = format!("listener[{i}].tls.client_ca");
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca).map_err(|r| invalid(file, key.clone(), r))? {
                roots
                    .add(cert)
                    .map_err(|e| invalid(file, key.clone(), format!("{}: {e}", ca.display())))?;
            }
            let mut v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            );
            if auth == ClientAuth::Optional {
                v = v.allow_unauthenticated();
            }
            let verifier = v
                .build()
                .map_err(|e| invalid(file, key, format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = cfg.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.ticketer = ticketer.clone();
    config.session_storage = sessions.clone();
    config.max_early_data_size = 0;
    Ok(TlsState {
        config: Arc::new(config),
        handshake: Duration::from_millis(cfg.handshake_ms),
        max_handshakes: cfg.max_handshakes,
        certificates,
    })
}

enum PairError {
    Cert(String),
    Key(String),
}

/// A certificate chain and its key, checked to belong together.
fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, CertificateInfo), PairError> {
    let chain = read_certs(cert).map_err(PairError::Cert)?;
    let info = describe(cert, &chain[0]).map_err(PairError::Cert)?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        PairError::Key(match e {
            rustls::pki_types::pem::Error::NoItemsFound => format!(
                "{}: no PKCS#8, PKCS#1 or SEC1 private key in the file",
                key.display()
            ),
            e => pem_error(key, e),
        })
    })?;
    let certified = CertifiedKey::from_der(chain, der, provider).map_err(|e| {
        PairError::Key(match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "{}: this key does not belong to the certificate in {}",
                key.display(),
                cert.display()
            ),
            e => format!("{}: {e}", key.display()),
        })
    })?;
    Ok((certified, info))
}

/// Every certificate in a PEM file, at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| pem_error(path, e))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => format!("{}: cannot read: {io}", path.display()),
        e => format!("{}: not valid PEM: {e:?}", path.display()),
    }
}

/// Names and expiry of an end-entity certificate.
fn describe(file: &Path, der: &CertificateDer<'_>) -> Result<CertificateInfo, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("{}: not an X.509 certificate: {e}", file.display()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let secs = cert.validity().not_after.timestamp();
    let not_after = if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH
    };
    Ok(CertificateInfo {
        file: file.to_path_buf(),
        names,
        not_after,
    })
}

/// The identity a verified client certificate carries, as header values.
pub struct ClientIdentity {
    /// The subject's distinguished name (RFC 4514 text).
    pub subject: Box<[u8]>,
    /// Its subject alternative names: `DNS:a, IP:10.0.0.1, URI:spiffe://...`.
    pub san: Box<[u8]>,
}

impl ClientIdentity {
    pub fn of(der: &CertificateDer<'_>) -> Option<ClientIdentity> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
        let mut san = String::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for n in &ext.value.general_names {
                let (kind, value) = match n {
                    GeneralName::DNSName(d) => ("DNS", d.to_string()),
                    GeneralName::RFC822Name(e) => ("email", e.to_string()),
                    GeneralName::URI(u) => ("URI", u.to_string()),
                    GeneralName::IPAddress(b) => ("IP", ip_text(b)),
                    _ => continue,
                };
                if !san.is_empty() {
                    san.push_str(", ");
                }
                san.push_str(kind);
                san.push(':');
                san.push_str(&value);
            }
        }
        Some(ClientIdentity {
            subject: field_safe(cert.subject().to_string()),
            san: field_safe(san),
        })
    }
}

fn ip_text(b: &[u8]) -> String {
    match b.len() {
        4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => String::from("?"),
    }
}

/// Text that is safe in a header field value: control characters become `?`.
fn field_safe(s: String) -> Box<[u8]> {
    s.into_bytes()
        .into_iter()
        .map(|b| if b < 0x20 || b == 0x7f { b'?' } else { b })
        .collect()
}

/// Picks a certificate by SNI: an exact SAN name, then a wildcard one (`*.example.com` for
/// `api.example.com`), then the first certificate.
#[derive(Default)]
struct SniResolver {
    keys: Vec<Arc<CertifiedKey>>,
    names: SniNames,
    /// The node's routes, whose table carries vulcand's TLS hosts (`None` in `ringway check`).
    routes: Option<TableHandle>,
}

/// Values by server name: exact names, and wildcards (`*.example.com`) by the part after
/// `*.`. Names are held as [`normalize`] gives them.
#[derive(Debug)]
pub struct NameMap<V> {
    exact: HashMap<String, V>,
    wildcard: HashMap<String, V>,
}

impl<V> Default for NameMap<V> {
    fn default() -> Self {
        NameMap {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<V> NameMap<V> {
    /// Map `name` to `v`; with `keep_first`, a name already mapped keeps its value.
    pub fn insert(&mut self, name: &str, v: V, keep_first: bool) {
        let (map, key) = match name.strip_prefix("*.") {
            Some(parent) => (&mut self.wildcard, parent),
            None => (&mut self.exact, name),
        };
        if !(keep_first && map.contains_key(key)) {
            map.insert(key.to_string(), v);
        }
    }

    pub fn exact(&self, name: &str) -> Option<&V> {
        self.exact.get(name)
    }

    /// A wildcard covering `name` (one label).
    pub fn wildcard(&self, name: &str) -> Option<&V> {
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent)
    }
}

/// Which certificate (by position) each name selects.
type SniNames = NameMap<usize>;

impl SniNames {
    fn add(&mut self, index: usize, names: &[String]) {
        for n in names {
            // The first certificate naming a host keeps it.
            self.insert(n, index, true);
        }
    }

    /// The certificate for `sni`; 0 (the default) when no name matches.
    #[cfg(test)]
    fn pick(&self, sni: Option<&str>) -> usize {
        sni.map(normalize)
            .and_then(|n| self.exact(&n).or_else(|| self.wildcard(&n)).copied())
            .unwrap_or(0)
    }
}

/// An SNI name as the maps hold names: lowercase, no root dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl SniResolver {
    fn add(&mut self, key: Arc<CertifiedKey>, names: &[String]) {
        self.names.add(self.keys.len(), names);
        self.keys.push(key);
    }
}

impl ResolvesServerCert for SniResolver {
    /// The profile's certificates by exact name, then vulcand's TLS hosts from the route table
    /// by exact name, then both by wildcard, then the profile's first certificate.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let default = || self.keys.first().cloned();
        let Some(name) = hello.server_name().map(normalize) else {
            return default();
        };
        if let Some(&k) = self.names.exact(&name) {
            return self.keys.get(k).cloned();
        }
        let table = self.routes.as_ref().map(TableHandle::load);
        let hosts = table.as_ref().map(|t| t.tls_hosts());
        if let Some(k) = hosts.and_then(|h| h.exact(&name)) {
            return Some(k.clone());
        }
        if let Some(&k) = self.names.wildcard(&name) {
            return self.keys.get(k).cloned();
        }
        if let Some(k) = hosts.and_then(|h| h.wildcard(&name)) {
            return Some(k.clone());
        }
        default()
    }
}

/// Everything TLS of a node, loaded at start-up.
pub struct NodeTls {
    /// Each listener's terminator, in profile order (`None` for plain listeners).
    pub listeners: Vec<Option<Arc<Terminator>>>,
    /// The client side for `https://` servers.
    pub upstream: Arc<ClientConfig>,
}

impl NodeTls {
    /// `file` is the profile, for error messages.
    pub fn load(
        profile: &crate::config::Profile,
        file: &Path,
        routes: &TableHandle,
    ) -> Result<NodeTls, ConfigError> {
        let mut listeners = Vec::new();
        for (i, l) in profile.listeners.iter().enumerate() {
            listeners.push(match &l.tls {
                Some(t) => Some(Arc::new(Terminator::load(i, t, file, Some(routes))?)),
                None => None,
            });
        }
        let upstream = upstream_client(profile.upstream.ca_file.as_deref(), file)?;
        Ok(NodeTls {
            listeners,
            upstream,
        })
    }
}

/// The client side for `https://` upstream servers, shared by every worker (so sessions resume
/// on any of them): verified against `ca_file`, or the system's CA store without one.
pub fn upstream_client(
    ca_file: Option<&Path>,
    file: &Path,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(ca) => {
            let key = "upstream.ca_file".to_string();
            for cert in read_certs(ca).map_err(|r| invalid(file, key.clone(), r))? {
                roots
                    .add(cert)
                    .map_err(|e| invalid(file, key.clone(), format!("{}: {e}", ca.display())))?;
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                tracing::warn!("no CA certificates in the system store: https:// servers will fail verification unless [upstream] ca_file is set");
            }
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(file, "upstream".into(), e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `ringway check`: the listener's certificates load, each key matches its certificate; the
/// lines to print, with a warning for a certificate that expires within 14 days.
pub fn check(i: usize, cfg: &TlsConfig, file: &Path) -> Result<Vec<String>, ConfigError> {
    let t = Terminator::load(i, cfg, file, None)?;
    let now = SystemTime::now();
    let soon = Duration::from_secs(14 * 24 * 3600);
    let mut lines = Vec::new();
    for c in &t.current().certificates {
        let names = c.names.join(", ");
        let line = match c.not_after.duration_since(now) {
            Err(_) => format!(
                "warning: certificate {} ({names}) has expired",
                c.file.display()
            ),
            Ok(left) if left < soon => format!(
                "warning: certificate {} ({names}) expires in {} days",
                c.file.display(),
                left.as_secs() / 86_400
            ),
            Ok(left) => format!(
                "certificate {} ({names}): ok, {} days left",
                c.file.display(),
                left.as_secs() / 86_400
            ),
        };
        lines.push(line);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_prefers_exact_then_wildcard_then_the_first_certificate() {
        let mut n = SniNames::default();
        n.add(0, &["default.test".into()]);
        n.add(1, &["*.example.com".into(), "example.com".into()]);
        n.add(2, &["api.example.com".into()]);
        n.add(3, &["api.example.com".into(), "*.example.com".into()]);
        assert_eq!(n.pick(Some("api.example.com")), 2, "exact beats wildcard");
        assert_eq!(
            n.pick(Some("API.Example.COM.")),
            2,
            "case and a root dot are ignored"
        );
        assert_eq!(n.pick(Some("www.example.com")), 1, "the first wildcard");
        assert_eq!(n.pick(Some("example.com")), 1);
        assert_eq!(
            n.pick(Some("a.b.example.com")),
            0,
            "a wildcard covers one label"
        );
        assert_eq!(n.pick(Some("other.test")), 0);
        assert_eq!(n.pick(None), 0, "no SNI: the default");
    }
}

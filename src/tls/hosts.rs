//! vulcand's TLS hosts: `<prefix>/hosts/<name>/host` documents
//! (`{"Name": "api.example.com", "Settings": {"KeyPair": "<base64>", "Default": false}}`) whose
//! key pair is sealed with NaCl secretbox (XSalsa20-Poly1305) under the key given to vulcand's
//! `--sealKey` (64 hex digits). The sealed value is vulcand's JSON
//! `{"Encryption": "secretbox.v1", "Value": {"Val": "<base64>", "Nonce": "<base64>"}}`, and the
//! opened one `{"Cert": "<base64 PEM>", "Key": "<base64 PEM>"}`.
//!
//! Hosts that parse are compiled into the route table; every TLS listener's SNI resolver looks
//! names up there after the profile's own certificates (exact names first, then wildcards).

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::Deserialize;

use super::{normalize, NameMap};

/// The key that opens sealed key pairs (`[etcd] seal_key_file`).
pub struct SealKey([u8; 32]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// Read a key file: 64 hex digits (vulcand's `--sealKey` value), surrounding whitespace
    /// ignored.
    pub fn load(path: &Path) -> Result<SealKey, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        SealKey::from_hex(text.trim()).map_err(|reason| format!("{}: {reason}", path.display()))
    }

    pub fn from_hex(hex: &str) -> Result<SealKey, String> {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("a seal key is 64 hex digits (32 bytes), as vulcand's --sealKey".into());
        }
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(SealKey(key))
    }

    /// Open vulcand's sealed-value JSON.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Sealed {
            encryption: String,
            value: Bytes,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Bytes {
            val: String,
            nonce: String,
        }
        let s: Sealed = serde_json::from_slice(sealed)
            .map_err(|e| format!("the sealed key pair is not vulcand's sealed JSON: {e}"))?;
        if s.encryption != "secretbox.v1" {
            return Err(format!("unsupported encryption {:?}", s.encryption));
        }
        let val = b64(&s.value.val, "Val")?;
        let nonce = b64(&s.value.nonce, "Nonce")?;
        if nonce.len() != 24 {
            return Err(format!("a nonce is 24 bytes, this one {}", nonce.len()));
        }
        let cipher = XSalsa20Poly1305::new(&self.0.into());
        cipher
            .decrypt(nonce.as_slice().into(), val.as_slice())
            .map_err(|_| {
                "cannot open the key pair: wrong seal key, or the value was altered".into()
            })
    }

    /// Seal `plain` as vulcand does (for tests and tools).
    pub fn seal(&self, plain: &[u8], nonce: [u8; 24]) -> Vec<u8> {
        let cipher = XSalsa20Poly1305::new(&self.0.into());
        let val = cipher
            .encrypt(&nonce.into(), plain)
            .expect("sealing a buffer in memory cannot fail");
        let std = base64::engine::general_purpose::STANDARD;
        serde_json::json!({
            "Encryption": "secretbox.v1",
            "Value": {"Val": std.encode(val), "Nonce": std.encode(nonce)},
        })
        .to_string()
        .into_bytes()
    }
}

fn b64(text: &str, what: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("{what} is not base64: {e}"))
}

/// The certificates of vulcand's hosts, by name.
#[derive(Default)]
pub struct TlsHosts {
    by_name: NameMap<Arc<CertifiedKey>>,
    names: Vec<String>,
}

impl std::fmt::Debug for TlsHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.names).finish()
    }
}

impl TlsHosts {
    /// A later host with the same name replaces an earlier one.
    pub fn insert(&mut self, name: &str, key: Arc<CertifiedKey>) {
        let name = normalize(name);
        self.by_name.insert(&name, key, false);
        self.names.push(name);
    }

    /// The names that have a certificate, in the order they were added.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn exact(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        self.by_name.exact(name)
    }

    /// A wildcard host covering `name` (one label).
    pub fn wildcard(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        self.by_name.wildcard(name)
    }
}

/// One host document. `Ok(None)`: the host has no key pair (nothing for TLS to do).
pub fn host(
    value: &str,
    seal: Option<&SealKey>,
) -> Result<Option<(String, Arc<CertifiedKey>)>, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct HostDoc {
        name: String,
        #[serde(default)]
        settings: Option<HostSettings>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct HostSettings {
        key_pair: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct KeyPair {
        cert: String,
        key: String,
    }
    let doc: HostDoc =
        serde_json::from_str(value).map_err(|e| format!("invalid host document: {e}"))?;
    let Some(sealed) = doc.settings.and_then(|s| s.key_pair) else {
        return Ok(None);
    };
    let Some(seal) = seal else {
        return Err(
            "the key pair is sealed with vulcand's --sealKey: set [etcd] seal_key_file to use it"
                .into(),
        );
    };
    let opened = seal.open(&b64(&sealed, "Settings.KeyPair")?)?;
    let pair: KeyPair = serde_json::from_slice(&opened)
        .map_err(|e| format!("the opened key pair is not {{\"Cert\", \"Key\"}}: {e}"))?;
    let cert_pem = b64(&pair.cert, "KeyPair.Cert")?;
    let key_pem = b64(&pair.key, "KeyPair.Key")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("KeyPair.Cert is not PEM: {e:?}"))?;
    if chain.is_empty() {
        return Err("KeyPair.Cert holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("KeyPair.Key is not a PEM private key: {e:?}"))?;
    let certified =
        CertifiedKey::from_der(chain, key, &super::provider()).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                "KeyPair.Key does not belong to KeyPair.Cert".to_string()
            }
            e => format!("KeyPair: {e}"),
        })?;
    Ok(Some((doc.name, Arc::new(certified))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "1c4a2eef7e1e6d0f2e43f7a1f2d0c9b8a7e6d5c4b3a291807f6e5d4c3b2a1908";

    #[test]
    fn seal_keys_are_64_hex_digits() {
        assert!(SealKey::from_hex(KEY).is_ok());
        for bad in ["", "abc", &KEY[..62], &format!("{}zz", &KEY[..62])] {
            assert!(SealKey::from_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sealed_values_open_with_their_key_only() {
        let key = SealKey::from_hex(KEY).unwrap();
        let sealed = key.seal(b"{\"Cert\":\"\",\"Key\":\"\"}", [7; 24]);
        assert_eq!(key.open(&sealed).unwrap(), b"{\"Cert\":\"\",\"Key\":\"\"}");
        let other = SealKey::from_hex(&KEY.replace('1', "2")).unwrap();
        assert!(other.open(&sealed).unwrap_err().contains("wrong seal key"));
        let mut altered: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        altered["Encryption"] = "aes".into();
        let err = key.open(altered.to_string().as_bytes()).unwrap_err();
        assert!(err.contains("unsupported encryption"), "{err}");
    }

    #[test]
    fn hosts_without_a_key_pair_are_not_tls_hosts_and_sealed_ones_need_the_key() {
        assert!(host(r#"{"Name":"a.test","Settings":{}}"#, None)
            .unwrap()
            .is_none());
        assert!(host(r#"{"Name":"a.test"}"#, None).unwrap().is_none());
        let err = host(r#"{"Name":"a.test","Settings":{"KeyPair":"eyJ9"}}"#, None).unwrap_err();
        assert!(err.contains("seal_key_file"), "{err}");
        let key = SealKey::from_hex(KEY).unwrap();
        let err = host(
            r#"{"Name":"a.test","Settings":{"KeyPair":"%%%"}}"#,
            Some(&key),
        )
        .unwrap_err();
        assert!(err.contains("not base64"), "{err}");
    }
}

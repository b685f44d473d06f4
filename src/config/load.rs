//! Reading a profile: TOML into the typed structs, relative paths resolved, and every value
//! checked, with errors naming the file, the key and the reason.

use std::path::Path;

use super::*;

impl Profile {
    /// Read and validate a profile. Relative paths inside it are resolved against its directory.
    pub fn load(path: &Path) -> Result<Profile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let mut profile = Profile::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(f) = profile.routes.file.as_mut() {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        let etcd = &mut profile.etcd;
        for f in [
            profile.node.handover_socket.as_mut(),
            profile.routes.snapshot.as_mut(),
            etcd.ca_file.as_mut(),
            etcd.cert_file.as_mut(),
            etcd.key_file.as_mut(),
            profile.upstream.ca_file.as_mut(),
            etcd.seal_key_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        for tls in profile.listeners.iter_mut().filter_map(|l| l.tls.as_mut()) {
            let files = tls
                .certificates
                .iter_mut()
                .flat_map(|c| [&mut c.cert, &mut c.key]);
            for f in files.chain(tls.client_ca.as_mut()) {
                if f.is_relative() {
                    *f = base.join(&*f);
                }
            }
        }
        if let Some(f) = &profile.etcd.seal_key_file {
            crate::tls::hosts::SealKey::load(f).map_err(|reason| ConfigError::Invalid {
                file: path.to_path_buf(),
                key: "etcd.seal_key_file".into(),
                reason,
            })?;
        }
        if let AccessLogTarget::File(f) = &mut profile.log.access_log {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        Ok(profile)
    }

    /// Parse and validate profile text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Profile, ConfigError> {
        let profile: Profile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        profile.validate(file)?;
        Ok(profile)
    }

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        if self.listeners.is_empty() {
            return Err(invalid(
                "listener",
                "at least one [[listener]] is required".into(),
            ));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.name.is_empty() {
                return Err(invalid(
                    &format!("listener[{i}].name"),
                    "must not be empty".into(),
                ));
            }
            if self.listeners[..i].iter().any(|o| o.name == l.name) {
                return Err(invalid(
                    &format!("listener[{i}].name"),
                    format!("duplicate listener name {:?}", l.name),
                ));
            }
            if self.listeners[..i].iter().any(|o| o.addr == l.addr) {
                return Err(invalid(
                    &format!("listener[{i}].addr"),
                    format!("{} is already used by another listener", l.addr),
                ));
            }
            if l.backlog < 1 {
                return Err(invalid(
                    &format!("listener[{i}].backlog"),
                    "must be at least 1".into(),
                ));
            }
            self.validate_listener(i, l, file)?;
        }
        if self.node.handover_linger_ms == 0 {
            return Err(invalid(
                "node.handover_linger_ms",
                "must be at least 1".into(),
            ));
        }
        match self.routes.source {
            RouteSourceKind::File if self.routes.file.is_none() => {
                return Err(invalid(
                    "routes.file",
                    "required when routes.source = \"file\"".into(),
                ))
            }
            RouteSourceKind::Etcd if self.etcd.endpoints.is_empty() => {
                return Err(invalid(
                    "etcd.endpoints",
                    "at least one endpoint is required".into(),
                ))
            }
            _ => {}
        }
        if !self.etcd.prefix.starts_with('/') {
            return Err(invalid("etcd.prefix", "must start with '/'".into()));
        }
        let etcd = &self.etcd;
        for (i, e) in etcd.endpoints.iter().enumerate() {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(invalid(
                    &format!("etcd.endpoints[{i}]"),
                    format!("must be an http:// or https:// URL, got {e:?}"),
                ));
            }
        }
        if let Some(reason) = etcd.scheme_error() {
            return Err(invalid("etcd.endpoints", reason));
        }
        if etcd.username.is_some() != etcd.password.is_some() {
            return Err(invalid(
                "etcd.password",
                "etcd.username and etcd.password go together".into(),
            ));
        }
        if etcd.cert_file.is_some() != etcd.key_file.is_some() {
            return Err(invalid(
                "etcd.key_file",
                "etcd.cert_file and etcd.key_file go together".into(),
            ));
        }
        if etcd.dial_timeout_ms == 0 {
            return Err(invalid("etcd.dial_timeout_ms", "must be at least 1".into()));
        }
        if self.routes.file_poll_ms == 0 {
            return Err(invalid("routes.file_poll_ms", "must be at least 1".into()));
        }
        for (from, to) in &self.routes.host_aliases {
            let valid =
                |h: &str| crate::http::fields::is_valid_host(h.as_bytes()) && !h.contains(':');
            if !valid(from) || !valid(to) {
                return Err(invalid(
                    &format!("routes.host_aliases.{from}"),
                    format!("{from:?} = {to:?}: both sides must be host names without port"),
                ));
            }
        }
        if !(2..=32768).contains(&self.node.ring_entries)
            || !self.node.ring_entries.is_power_of_two()
        {
            return Err(invalid(
                "node.ring_entries",
                "must be a power of two between 2 and 32768".into(),
            ));
        }
        if self.node.ring_registered_files > 1 << 20 {
            return Err(invalid(
                "node.ring_registered_files",
                "must be at most 1048576 (io_uring's limit; 0 turns registered files off)".into(),
            ));
        }
        let lim = &self.limits;
        if lim.max_head_bytes < 1024 {
            return Err(invalid(
                "limits.max_head_bytes",
                "must be at least 1024".into(),
            ));
        }
        if lim.max_target_bytes < 64 {
            return Err(invalid(
                "limits.max_target_bytes",
                "must be at least 64".into(),
            ));
        }
        if lim.max_headers == 0 {
            return Err(invalid("limits.max_headers", "must be at least 1".into()));
        }
        if lim.buffer_bytes < 1024 {
            return Err(invalid(
                "limits.buffer_bytes",
                "must be at least 1024".into(),
            ));
        }
        if lim.body_buffer_bytes < lim.buffer_bytes || lim.body_buffer_bytes > 16 << 20 {
            return Err(invalid(
                "limits.body_buffer_bytes",
                "must be at least limits.buffer_bytes and at most 16 MiB".into(),
            ));
        }
        let t = &self.timeouts;
        for (key, v) in [
            ("timeouts.header_ms", t.header_ms),
            ("timeouts.keepalive_ms", t.keepalive_ms),
            ("timeouts.idle_hot_ms", t.idle_hot_ms),
            ("timeouts.body_ms", t.body_ms),
            ("timeouts.connect_ms", t.connect_ms),
            ("timeouts.upstream_read_ms", t.upstream_read_ms),
            ("timeouts.send_ms", t.send_ms),
            ("timeouts.tunnel_idle_ms", t.tunnel_idle_ms),
            ("upstream.idle_timeout_ms", self.upstream.idle_timeout_ms),
            ("upstream.ejection_max_ms", self.upstream.ejection_max_ms),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if !matches!(self.throttle.reject_status, 429 | 503) {
            return Err(invalid(
                "throttle.reject_status",
                format!("must be 429 or 503, got {}", self.throttle.reject_status),
            ));
        }
        if self.throttle.idle_key_secs == 0 {
            return Err(invalid(
                "throttle.idle_key_secs",
                "must be at least 1".into(),
            ));
        }
        if !(1..=10_000_000).contains(&self.throttle.max_keys) {
            return Err(invalid(
                "throttle.max_keys",
                "must be between 1 and 10000000".into(),
            ));
        }
        let up = &self.upstream;
        for (key, new_key, both) in [
            (
                "upstream.max_fails",
                "consecutive_failures",
                up.max_fails.is_some() && up.consecutive_failures.is_some(),
            ),
            (
                "upstream.fail_timeout_ms",
                "ejection_base_ms",
                up.fail_timeout_ms.is_some() && up.ejection_base_ms.is_some(),
            ),
        ] {
            if both {
                return Err(invalid(
                    key,
                    format!("is the older spelling of upstream.{new_key}; give one of them"),
                ));
            }
        }
        if up.max_fails == Some(0) {
            return Err(invalid(
                "upstream.max_fails",
                "must be at least 1 (consecutive_failures = 0 turns ejection off)".into(),
            ));
        }
        for (key, v) in [
            ("upstream.ejection_base_ms", up.ejection_base_ms),
            ("upstream.fail_timeout_ms", up.fail_timeout_ms),
        ] {
            if v == Some(0) {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if !(1..=100).contains(&up.max_ejection_percent) {
            return Err(invalid(
                "upstream.max_ejection_percent",
                format!("must be between 1 and 100, got {}", up.max_ejection_percent),
            ));
        }
        if up.max_retries > MAX_RETRIES {
            return Err(invalid(
                "upstream.max_retries",
                format!(
                    "must be at most {MAX_RETRIES} (vulcand's cap), got {}",
                    up.max_retries
                ),
            ));
        }
        if up.retry_body_bytes > 64 << 20 {
            return Err(invalid(
                "upstream.retry_body_bytes",
                "must be at most 67108864 (64 MiB): every request that may be retried can hold \
                 this much"
                    .into(),
            ));
        }
        if !(0.0..=10.0).contains(&up.retry_budget_ratio) {
            return Err(invalid(
                "upstream.retry_budget_ratio",
                format!("must be between 0 and 10, got {}", up.retry_budget_ratio),
            ));
        }
        if up.retry_budget_min_per_sec > 1_000_000 {
            return Err(invalid(
                "upstream.retry_budget_min_per_sec",
                "must be at most 1000000".into(),
            ));
        }
        match self.log.level.as_str() {
            "error" | "warn" | "info" | "debug" | "trace" => {}
            other => {
                return Err(invalid(
                    "log.level",
                    format!("must be error, warn, info, debug or trace, got {other:?}"),
                ))
            }
        }
        Ok(())
    }

    fn validate_listener(
        &self,
        i: usize,
        l: &ListenerConfig,
        file: &Path,
    ) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            key,
            reason,
        };
        match l.role {
            ListenerRole::Mesh if !l.expose.is_empty() => {
                return Err(invalid(
                    format!("listener[{i}].expose"),
                    "expose rules need role = \"edge\"; a mesh listener serves every route".into(),
                ))
            }
            ListenerRole::Mesh if !l.trusted_proxies.is_empty() => {
                return Err(invalid(
                    format!("listener[{i}].trusted_proxies"),
                    "only for role = \"edge\"; a mesh listener trusts every peer".into(),
                ))
            }
            ListenerRole::Edge if l.expose.is_empty() => {
                return Err(invalid(
                    format!("listener[{i}].expose"),
                    "an edge listener needs at least one [[listener.expose]] rule".into(),
                ))
            }
            _ => {}
        }
        if let Err(e) = crate::edge::EdgePolicy::compile(&l.name, &l.expose) {
            return Err(invalid(
                format!("listener[{i}].expose[{}].{}", e.index, e.key),
                e.reason,
            ));
        }
        for (j, t) in l.trusted_proxies.iter().enumerate() {
            if let Err(reason) = crate::edge::Cidr::parse(t) {
                return Err(invalid(
                    format!("listener[{i}].trusted_proxies[{j}]"),
                    reason,
                ));
            }
        }
        if let Some(tls) = &l.tls {
            let key = |k: &str| format!("listener[{i}].tls.{k}");
            if tls.certificates.is_empty() {
                return Err(invalid(
                    key("certificates"),
                    "at least one { cert, key } is required".into(),
                ));
            }
            if tls.client_auth.is_some_and(|a| a != ClientAuth::Off) && tls.client_ca.is_none() {
                return Err(invalid(
                    key("client_auth"),
                    "verifying client certificates needs client_ca".into(),
                ));
            }
            if tls.alpn.is_empty() {
                return Err(invalid(
                    key("alpn"),
                    "must list at least \"http/1.1\"".into(),
                ));
            }
            if let Some(p) = tls
                .alpn
                .iter()
                .find(|p| !matches!(p.as_str(), "http/1.1" | "http/1.0"))
            {
                return Err(invalid(
                    key("alpn"),
                    format!("{p:?}: ringway speaks HTTP/1.1 only (\"http/1.1\", \"http/1.0\")"),
                ));
            }
            if tls.handshake_ms == 0 {
                return Err(invalid(key("handshake_ms"), "must be at least 1".into()));
            }
            if tls.max_handshakes == 0 {
                return Err(invalid(key("max_handshakes"), "must be at least 1".into()));
            }
        }
        let lim = &l.limits;
        for (key, v, min) in [
            ("max_head_bytes", lim.max_head_bytes, 1024),
            ("max_target_bytes", lim.max_target_bytes, 64),
            ("max_headers", lim.max_headers, 1),
        ] {
            if v.is_some_and(|v| v < min) {
                return Err(invalid(
                    format!("listener[{i}].limits.{key}"),
                    format!("must be at least {min}"),
                ));
            }
        }
        if lim.header_ms == Some(0) {
            return Err(invalid(
                format!("listener[{i}].limits.header_ms"),
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Head limits for the codec.
    pub fn head_limits(&self) -> crate::http::HeadLimits {
        crate::http::HeadLimits {
            max_head_bytes: self.limits.max_head_bytes,
            // A target can never be longer than the head that carries it.
            max_target_bytes: self.limits.max_target_bytes.min(self.limits.max_head_bytes),
            max_headers: self.limits.max_headers,
        }
    }
}

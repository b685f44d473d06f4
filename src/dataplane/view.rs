//! The parsed request as the route table sees it.

use crate::http::{HeaderField, RequestHead};
use crate::route::RouteRequest;

pub struct RequestView<'a> {
    pub buf: &'a [u8],
    pub head: &'a RequestHead,
    pub fields: &'a [HeaderField],
    /// The path after an edge listener's prefix rewrite: routing sees the rewritten path.
    pub path_override: Option<&'a [u8]>,
}

/// Host without its port: `example.com:80` -> `example.com`, `[::1]:80` -> `[::1]`.
pub fn host_without_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match memchr::memchr(b']', host) {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match memchr::memrchr(b':', host) {
        Some(i) => &host[..i],
        None => host,
    }
}

impl RouteRequest for RequestView<'_> {
    fn method(&self) -> &[u8] {
        self.head.method_span.of(self.buf)
    }

    fn host(&self) -> &[u8] {
        host_without_port(self.head.host.of(self.buf))
    }

    fn path(&self) -> &[u8] {
        match self.path_override {
            Some(p) => p,
            None => self.head.path.of(self.buf),
        }
    }

    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.name.of(self.buf).eq_ignore_ascii_case(name))
            .map(|f| f.value.of(self.buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(host_without_port(b"example.com:8080"), b"example.com");
        assert_eq!(host_without_port(b"example.com"), b"example.com");
        assert_eq!(host_without_port(b"[::1]:80"), b"[::1]");
        assert_eq!(host_without_port(b"[::1]"), b"[::1]");
    }
}

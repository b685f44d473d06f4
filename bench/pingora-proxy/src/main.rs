//! Minimal Pingora forwarder for bench/run: one listener, every request to one origin,
//! upstream connections reused from Pingora's keep-alive pool.
//!
//! Usage: pingora-proxy-bench LISTEN_ADDR ORIGIN_ADDR CONF_YAML

use async_trait::async_trait;
use pingora::prelude::*;

struct Forward {
    origin: String,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.origin.as_str(), false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: {} LISTEN_ADDR ORIGIN_ADDR CONF_YAML", args[0]);
        std::process::exit(2);
    }
    let opt = Opt {
        conf: Some(args[3].clone()),
        ..Default::default()
    };
    let mut server = Server::new(Some(opt)).expect("pingora server");
    server.bootstrap();
    let mut svc = http_proxy_service(
        &server.configuration,
        Forward {
            origin: args[2].clone(),
        },
    );
    svc.add_tcp(&args[1]);
    server.add_service(svc);
    server.run_forever();
}

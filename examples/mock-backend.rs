//! A Strapi v5-like backend for trying sessiongate by hand:
//!
//!     cargo run --example mock-backend            # listens on 127.0.0.1:1337
//!     cargo run --example mock-backend -- 0.0.0.0:1337
//!
//! Users alice, bob and carol (e-mail <name>@example.com), password `Password1!`.
//! The same code serves as the upstream of the integration tests.

#[path = "../tests/support/strapi.rs"]
mod strapi;

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:1337".into());
    let addr = match addr.parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!("usage: mock-backend [ADDR:PORT]");
            std::process::exit(64);
        }
    };
    let mock = strapi::MockStrapi::start_on(addr).await;
    println!("mock Strapi v5 backend on {} (users alice, bob, carol; password {})", mock.url(), strapi::PASSWORD);
    let _ = tokio::signal::ctrl_c().await;
}

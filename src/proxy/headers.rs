//! Header rules for both directions: hop-by-hop removal (RFC 9110 §7.6.1), the client IP from
//! `X-Forwarded-For` only through trusted proxies, and the forwarding headers sent upstream.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use std::net::IpAddr;

/// Connection-specific headers never forwarded (RFC 9110 §7.6.1, plus the legacy ones).
/// `HeaderName` constants, so checks compare names instead of parsing strings per request.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Forwarding headers a client outside the trusted proxies may not set.
static CLIENT_FORWARDING: [HeaderName; 5] = [
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-real-ip"),
    header::FORWARDED,
];

/// The options a `Connection` header lists (`keep-alive`, `upgrade`, header names), trimmed.
pub fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

/// Removes hop-by-hop headers and every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names, no removals, no allocation.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let named: Vec<HeaderName> =
        connection_options(headers).filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect();
    for n in named {
        headers.remove(n);
    }
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
}

/// Removes every `x-sessiongate-*` header. Only the gateway speaks in that namespace: a client
/// cannot send one to the backend (where `x-sessiongate-internal` marks the gateway's own
/// calls), and a backend cannot send one to a client (a forged `x-sessiongate-reason` denial).
pub fn strip_gateway_headers(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| k.as_str().starts_with("x-sessiongate-")) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().starts_with("x-sessiongate-")).cloned().collect();
    for n in names {
        headers.remove(n);
    }
}

/// Whether `ip` is one of `server.trusted_proxies` — the one check of it (forwarding headers,
/// request ids, per-address connection limits). An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`,
/// what a dual-stack listener reports) counts as the IPv4 address.
pub fn trusted(ip: IpAddr, nets: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|n| n.contains(&ip))
}

/// The client's address. `X-Forwarded-For` is read only when the peer is a trusted proxy; it is
/// walked from the right, skipping trusted hops, so a client cannot inject an address by sending
/// its own header.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted(peer, trusted_proxies) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim())
        .map_while(|s| s.parse::<IpAddr>().ok())
        .map(|ip: IpAddr| ip.to_canonical())
        .collect();
    hops.iter().rev().find(|ip| !trusted(**ip, trusted_proxies)).or(hops.first()).copied().unwrap_or(peer)
}

/// Prepares request headers for the upstream: hop-by-hop removed, client-sent forwarding and
/// gateway headers dropped unless the peer is a trusted proxy, `X-Forwarded-For/-Proto/-Host`
/// set.
pub fn forward_request_headers(
    headers: &mut HeaderMap,
    peer: IpAddr,
    trusted_proxies: &[IpNet],
    tls: bool,
    host: Option<&HeaderValue>,
) {
    strip_hop_by_hop(headers);
    let peer = peer.to_canonical();
    let from_trusted = trusted(peer, trusted_proxies);
    strip_gateway_headers(headers);
    let prior_xff = if from_trusted {
        let joined: Vec<&str> = headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
        (!joined.is_empty()).then(|| joined.join(", "))
    } else {
        None
    };
    if !from_trusted {
        for n in &CLIENT_FORWARDING {
            headers.remove(n);
        }
    }
    headers.remove(&X_FORWARDED_FOR);
    let xff = match prior_xff {
        Some(p) => format!("{p}, {peer}"),
        None => peer.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(if tls { "https" } else { "http" }));
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(h) = host {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_reads_ipv4_mapped_addresses_as_ipv4() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        assert!(trusted("10.1.2.3".parse().expect("ip"), &nets));
        assert!(trusted("::ffff:10.1.2.3".parse().expect("ip"), &nets));
        assert!(!trusted("::ffff:11.1.2.3".parse().expect("ip"), &nets));
        assert!(!trusted("2001:db8::1".parse().expect("ip"), &nets));
    }

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn nets(xs: &[&str]) -> Vec<IpNet> {
        xs.iter().map(|s| s.parse().expect("net")).collect()
    }

    #[test]
    fn hop_by_hop_table() {
        let mut h = hm(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("authorization", "Bearer t"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["authorization", "content-type"]);
    }

    #[test]
    fn gateway_headers_are_stripped_either_way() {
        let mut h = hm(&[
            ("x-sessiongate-reason", "session_terminated"),
            ("X-Sessiongate-Internal", "revocation"),
            ("x-sessiongate", "kept: not the namespace"),
            ("content-type", "application/json"),
        ]);
        strip_gateway_headers(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["content-type", "x-sessiongate"]);
    }

    #[test]
    fn client_ip_table() {
        let peer_untrusted: IpAddr = "203.0.113.9".parse().expect("ip");
        let proxy: IpAddr = "10.0.0.2".parse().expect("ip");
        let trusted = nets(&["10.0.0.0/8"]);
        type Case<'a> = (IpAddr, &'a [(&'a str, &'a str)], &'a str);
        let cases: Vec<Case> = vec![
            // Untrusted peer: its own X-Forwarded-For is ignored.
            (peer_untrusted, &[("x-forwarded-for", "1.2.3.4")], "203.0.113.9"),
            // Trusted peer: rightmost untrusted hop wins.
            (proxy, &[("x-forwarded-for", "1.2.3.4, 198.51.100.7")], "198.51.100.7"),
            // A client-injected left entry cannot win over the real one appended by the proxy.
            (proxy, &[("x-forwarded-for", "9.9.9.9, 198.51.100.7, 10.0.0.5")], "198.51.100.7"),
            // All hops trusted: leftmost.
            (proxy, &[("x-forwarded-for", "10.1.1.1, 10.0.0.5")], "10.1.1.1"),
            // Trusted peer without header: the peer.
            (proxy, &[], "10.0.0.2"),
            // Garbage stops the walk.
            (proxy, &[("x-forwarded-for", "nonsense")], "10.0.0.2"),
        ];
        for (peer, headers, want) in cases {
            assert_eq!(client_ip(peer, &hm(headers), &trusted).to_string(), want, "{headers:?}");
        }
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().expect("ip");
        assert_eq!(client_ip(mapped, &hm(&[("x-forwarded-for", "1.2.3.4")]), &trusted).to_string(), "1.2.3.4");
    }

    #[test]
    fn forwarding_headers_table() {
        let trusted = nets(&["10.0.0.0/8"]);
        let host = HeaderValue::from_static("app.example");
        // Untrusted client: spoofed forwarding and gateway headers are dropped and replaced.
        let mut h = hm(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
            ("forwarded", "for=1.1.1.1"),
            ("x-sessiongate-user", "admin"),
        ]);
        forward_request_headers(&mut h, "203.0.113.9".parse().expect("ip"), &trusted, false, Some(&host));
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example");
        assert!(h.get("forwarded").is_none() && h.get("x-sessiongate-user").is_none());
        // Trusted proxy: the chain is extended, its proto and host are kept.
        let mut h =
            hm(&[("x-forwarded-for", "198.51.100.7"), ("x-forwarded-proto", "https"), ("x-forwarded-host", "front")]);
        forward_request_headers(&mut h, "10.0.0.2".parse().expect("ip"), &trusted, false, Some(&host));
        assert_eq!(h["x-forwarded-for"], "198.51.100.7, 10.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "front");
    }
}

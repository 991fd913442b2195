//! Plain-text CIDR lists: one network or address per line, `#` starts a comment.

use ipnet::IpNet;
use std::net::IpAddr;
use std::path::Path;

#[derive(Debug, Default)]
pub struct CidrList {
    nets: Vec<IpNet>,
}

impl CidrList {
    pub fn parse(text: &str) -> Result<CidrList, String> {
        let mut nets = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("line {}: {entry:?} is not a network or address", n + 1))?;
            nets.push(net.trunc());
        }
        // Sorted and merged, so a lookup is a binary search.
        Ok(CidrList { nets: IpNet::aggregate(&nets) })
    }

    pub fn load(path: &Path) -> Result<CidrList, String> {
        Self::parse(&std::fs::read_to_string(path).map_err(|e| e.to_string())?)
    }

    pub fn len(&self) -> usize {
        self.nets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // Aggregated networks are sorted and disjoint: the candidate is the last one starting at
        // or before the address.
        let i = self.nets.partition_point(|n| n.network() <= ip);
        i > 0 && self.nets[i - 1].contains(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comments_and_matches() {
        let l =
            CidrList::parse("# tor exits\n1.2.3.0/24\n\n5.6.7.8 # single\n2001:db8::/32\n10.0.0.0/8\n10.1.0.0/16\n")
                .expect("parse");
        for ip in ["1.2.3.4", "5.6.7.8", "2001:db8::5", "10.200.0.1", "10.1.2.3"] {
            assert!(l.contains(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["1.2.4.1", "5.6.7.9", "2001:db9::1", "11.0.0.1", "0.0.0.1"] {
            assert!(!l.contains(ip.parse().expect("ip")), "{ip}");
        }
        assert_eq!(l.len(), 4, "10.1.0.0/16 merged into 10.0.0.0/8");
        assert!(CidrList::parse("nonsense").expect_err("bad").contains("line 1"));
    }
}

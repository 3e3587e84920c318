//! Re-IP rules: where a VM's addresses move at the recovery site.

use std::net::Ipv4Addr;

use super::{parse_ipv4, ReIpRule};

/// A parsed re-IP rule: addresses with `addr & mask == source` move to `target | host`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Mapping {
    source: u32,
    target: u32,
    mask: u32,
    /// The seed's `*` is 1 to 254: a /24's own address and its broadcast are no hosts.
    hosts_only: bool,
}

impl Mapping {
    fn apply(&self, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        let addr = u32::from(ip);
        if addr & self.mask != self.source {
            return None;
        }
        let host = addr & !self.mask;
        if self.hosts_only && !(1..=254).contains(&host) {
            return None;
        }
        Some(Ipv4Addr::from(self.target | host))
    }
}

enum Network {
    /// `a.b.c.*`: the network's address.
    LastOctet(u32),
    /// `a.b.c.d/len`.
    Cidr(u32, u32),
}

fn prefix_mask(len: u32) -> u32 {
    u32::MAX.checked_shl(32 - len).unwrap_or(0)
}

fn parse_network(s: &str) -> Result<Network, String> {
    if let Some(head) = s.strip_suffix(".*") {
        // "10.10.*.*" fails here: only the last octet may be a wildcard.
        let base: Ipv4Addr = format!("{head}.0")
            .parse()
            .map_err(|_| format!("{s:?}: only the last octet may be '*', after three numbers"))?;
        return Ok(Network::LastOctet(u32::from(base)));
    }
    if let Some((addr, len)) = s.split_once('/') {
        let addr = parse_ipv4(addr).map_err(|e| format!("{s:?}: {e}"))?;
        let len: u32 = match len.parse() {
            Ok(l) if l <= 32 && !len.starts_with('+') => l,
            _ => return Err(format!("{s:?}: the prefix length is not 0 to 32")),
        };
        let mask = prefix_mask(len);
        let net = u32::from(addr);
        if net & !mask != 0 {
            return Err(format!(
                "{s:?} has host bits set; the network is {}/{len}",
                Ipv4Addr::from(net & mask)
            ));
        }
        return Ok(Network::Cidr(net, len));
    }
    Err(format!(
        "{s:?} is neither a last-octet wildcard (10.10.10.*) nor a CIDR network (10.10.0.0/16)"
    ))
}

pub(super) fn parse_rules(rules: &[ReIpRule]) -> Result<Vec<Mapping>, String> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let n = i + 1;
            let source = parse_network(&r.source).map_err(|e| format!("re-IP rule {n}: {e}"))?;
            let target = parse_network(&r.target).map_err(|e| format!("re-IP rule {n}: {e}"))?;
            match (source, target) {
                (Network::LastOctet(source), Network::LastOctet(target)) => Ok(Mapping {
                    source,
                    target,
                    mask: prefix_mask(24),
                    hosts_only: true,
                }),
                (Network::Cidr(source, a), Network::Cidr(target, b)) if a == b => Ok(Mapping {
                    source,
                    target,
                    mask: prefix_mask(a),
                    hosts_only: false,
                }),
                (Network::Cidr(_, a), Network::Cidr(_, b)) => Err(format!(
                    "re-IP rule {n}: the prefix lengths differ (/{a} → /{b}); the host part \
                     is kept, so both networks must be the same size"
                )),
                _ => Err(format!(
                    "re-IP rule {n}: source and target must use the same notation"
                )),
            }
        })
        .collect()
}

pub(super) fn remap(rules: &[Mapping], ip: Ipv4Addr) -> Option<Ipv4Addr> {
    rules.iter().find_map(|m| m.apply(ip))
}

/// Where `ip` moves under `rules`: the first matching rule's target, or `None` when no
/// rule matches and the address is kept. Errors when a rule does not parse.
#[cfg(test)]
pub fn map_ip(rules: &[ReIpRule], ip: Ipv4Addr) -> Result<Option<Ipv4Addr>, String> {
    Ok(remap(&parse_rules(rules)?, ip))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{ip, rule};
    use super::*;

    #[test]
    fn a_wildcard_rule_keeps_the_last_octet() {
        let rules = [rule("10.10.10.*", "192.168.10.*")];
        for last in [1, 96, 222, 254] {
            assert_eq!(
                map_ip(&rules, ip(&format!("10.10.10.{last}"))),
                Ok(Some(ip(&format!("192.168.10.{last}"))))
            );
        }
        // `*` is 1 to 254: the network's own address and its broadcast are no hosts.
        assert_eq!(map_ip(&rules, ip("10.10.10.0")), Ok(None));
        assert_eq!(map_ip(&rules, ip("10.10.10.255")), Ok(None));
        assert_eq!(map_ip(&rules, ip("10.10.11.5")), Ok(None));
    }

    #[test]
    fn a_cidr_rule_keeps_the_host_bits() {
        let rules = [rule("10.10.0.0/16", "172.16.0.0/16")];
        assert_eq!(
            map_ip(&rules, ip("10.10.3.77")),
            Ok(Some(ip("172.16.3.77")))
        );
        assert_eq!(
            map_ip(&rules, ip("10.10.255.255")),
            Ok(Some(ip("172.16.255.255")))
        );
        let rules = [rule("192.168.5.0/24", "10.0.9.0/24")];
        assert_eq!(
            map_ip(&rules, ip("192.168.5.12")),
            Ok(Some(ip("10.0.9.12")))
        );
        assert_eq!(map_ip(&rules, ip("192.168.6.12")), Ok(None));
        let rules = [rule("10.0.0.8/29", "10.1.0.16/29")];
        assert_eq!(map_ip(&rules, ip("10.0.0.13")), Ok(Some(ip("10.1.0.21"))));
        assert_eq!(map_ip(&rules, ip("10.0.0.16")), Ok(None));
    }

    #[test]
    fn unmatched_addresses_are_kept_and_the_first_matching_rule_wins() {
        let rules = [
            rule("10.10.10.0/24", "192.168.10.0/24"),
            rule("10.10.0.0/16", "172.16.0.0/16"),
            rule("10.10.10.*", "10.99.99.*"),
        ];
        assert_eq!(
            map_ip(&rules, ip("10.10.10.7")),
            Ok(Some(ip("192.168.10.7")))
        );
        assert_eq!(
            map_ip(&rules, ip("10.10.20.7")),
            Ok(Some(ip("172.16.20.7")))
        );
        assert_eq!(map_ip(&rules, ip("10.11.0.1")), Ok(None));
        assert_eq!(map_ip(&[], ip("10.11.0.1")), Ok(None));
    }

    #[test]
    fn broken_reip_rules_are_refused() {
        let cases = [
            (
                rule("10.10.0.0/16", "172.16.0.0/24"),
                "prefix lengths differ",
            ),
            (rule("10.10.*.*", "192.168.*.*"), "only the last octet"),
            (rule("*", "192.168.10.*"), "neither a last-octet wildcard"),
            (
                rule("garbage", "192.168.10.*"),
                "neither a last-octet wildcard",
            ),
            (
                rule("10.10.10.*", "garbage"),
                "neither a last-octet wildcard",
            ),
            (rule("10.10.10.*", "172.16.0.0/24"), "same notation"),
            (rule("10.10.1.0/16", "172.16.0.0/16"), "host bits set"),
            (rule("10.10.0.0/33", "172.16.0.0/33"), "prefix length"),
            (rule("10.10.0.0/+8", "172.16.0.0/8"), "prefix length"),
            (
                rule("10.10.300.0/24", "172.16.0.0/24"),
                "not an IPv4 address",
            ),
            (rule("fd00::/64", "fd01::/64"), "not an IPv4 address"),
        ];
        for (r, expected) in cases {
            let err = map_ip(
                &[rule("10.0.0.0/8", "11.0.0.0/8"), r.clone()],
                ip("1.2.3.4"),
            )
            .expect_err(&format!("{r:?} is refused"));
            assert!(err.contains("re-IP rule 2"), "{err}");
            assert!(err.contains(expected), "{r:?}: {err}");
        }
    }
}

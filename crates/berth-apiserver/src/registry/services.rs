//! Services' strategy: the cluster IP a Service needs (asked for, checked against the service
//! range, or drawn at random) and its node ports (asked-for ones refused with 422 when held,
//! random ones drawn again). The range keys themselves are `crate::ranges`'; they are written
//! in the Service's own transaction by `generic.rs`.

use berth_api::cidr::Ipv4Net;
use berth_api::kinds::{self, ResourceKind};
use berth_api::object::Object;
use serde_json::Value;

use super::Registry;
use crate::error::{ApiError, ApiResult};
use crate::ranges;

impl Registry {
    /// The cluster IP a Service needs allocated: the one it asks for, or a free one (`None`
    /// asked: any). `Err` for one outside the range. Headless and ExternalName Services get
    /// none (`Ok(None)` with `wants` false).
    pub(super) fn wanted_cluster_ip(
        &self,
        svc: &Object,
    ) -> ApiResult<(bool, Option<std::net::Ipv4Addr>)> {
        let spec = svc.get("spec");
        let ty = spec
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        let asked = spec
            .and_then(|s| s.get("clusterIP"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if ty == "ExternalName" || asked == "None" {
            return Ok((false, None));
        }
        if asked.is_empty() {
            return Ok((true, None));
        }
        let range = self.service_range;
        let ip: std::net::Ipv4Addr = asked.parse().map_err(|_| {
            ApiError::invalid(
                kinds::resolve("services").unwrap_or(&kinds::KINDS[0]),
                svc.name(),
                &[berth_api::FieldError::invalid(
                    "spec.clusterIP",
                    format!("\"{asked}\""),
                    "must be empty, 'None', or a valid IPv4 address",
                )],
            )
        })?;
        if !range.contains(ip) {
            return Err(ApiError::invalid(
                kinds::resolve("services").unwrap_or(&kinds::KINDS[0]),
                svc.name(),
                &[berth_api::FieldError::invalid(
                    "spec.clusterIPs",
                    format!("[]string{{\"{asked}\"}}"),
                    &format!(
                        "failed to allocate IP {asked}: the provided IP ({asked}) is not in the valid range. The range of valid IPs is {range}"
                    ),
                )],
            ));
        }
        Ok((true, Some(ip)))
    }

    /// A free-looking address of the service range, at random from its upper part (the lower
    /// 256 are left for Services that name theirs, as Kubernetes' static band).
    pub(super) fn random_service_ip(&self) -> std::net::Ipv4Addr {
        let Ipv4Net { addr: base, prefix } = self.service_range;
        let size = 1u32 << (32 - prefix);
        let low = if size > 1024 { 256 } else { 2 };
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        let offset = low + u32::from_le_bytes(b) % (size - low - 1);
        std::net::Ipv4Addr::from(u32::from(base) + offset)
    }

    /// 422 naming the port when one of the `taken` range keys is a node port the Service asked
    /// for (not one of the `random` ports given it).
    pub(super) fn check_node_ports_free(
        &self,
        kind: &ResourceKind,
        obj: &Object,
        taken: &[&[u8]],
        random: &[usize],
    ) -> ApiResult<()> {
        for k in taken {
            let Some(port) = std::str::from_utf8(k)
                .ok()
                .and_then(|k| k.strip_prefix(ranges::NODE_PORTS))
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            if let Some(i) = ranges::port_index(obj, port).filter(|i| !random.contains(i)) {
                return Err(ApiError::invalid(
                    kind,
                    obj.name(),
                    &[berth_api::FieldError::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        port,
                        "provided port is already allocated",
                    )],
                ));
            }
        }
        Ok(())
    }

    /// Before a Service's update: its newly wanted node ports that someone holds. Asked-for
    /// ones are refused (422); random ones are drawn again.
    pub(super) fn settle_node_ports(
        &self,
        kind: &ResourceKind,
        old: &Object,
        obj: &mut Object,
        random: &[usize],
    ) -> ApiResult<()> {
        for _ in 0..32 {
            let before = ranges::held(old);
            let mut taken = Vec::new();
            for k in ranges::held(obj) {
                if !before.contains(&k) && self.store.get(&k)?.is_some() {
                    taken.push(k);
                }
            }
            if taken.is_empty() {
                return Ok(());
            }
            let taken: Vec<&[u8]> = taken.iter().map(Vec::as_slice).collect();
            self.check_node_ports_free(kind, obj, &taken, random)?;
            ranges::reroll(obj, random);
        }
        Err(ApiError::internal(
            "failed to allocate a node port: the range is (nearly) full",
        ))
    }
}

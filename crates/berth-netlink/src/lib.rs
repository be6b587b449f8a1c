//! A small synchronous rtnetlink client: the link, address and route requests a node's
//! networking needs: for the pod network (bridge, veth pair, move into a namespace, addresses,
//! routes; `berth-runtime`'s sandboxes), and for service traffic (labelled cluster IPs on the
//! loopback, routes to other nodes' pods, VXLAN links, neighbours and FDB entries;
//! `berth-net`).
//!
//! API boundary: [`Netlink`] (one socket, one method per request), [`RouteTo`] and
//! [`NetlinkError`]. It is its own crate so both the container runtime and the traffic crate
//! use it without depending on each other; it depends on nothing of berth's.
//!
//! Invariant: a `Netlink` socket talks to the network namespace it was created in, whatever
//! namespace its thread enters later. The sandbox code relies on that to move a link out of
//! the host's namespace from a thread that already sits in the pod's.

use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_ROUTE;

/// A netlink request the kernel refused, with what was asked.
#[derive(Debug, thiserror::Error)]
#[error("netlink: {what}: {source}")]
pub struct NetlinkError {
    pub what: String,
    #[source]
    pub source: std::io::Error,
}

impl NetlinkError {
    /// The errno, when the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

type Result<T> = std::result::Result<T, NetlinkError>;

/// The kernel seam of routing between nodes: the route, neighbour, forwarding-database and
/// tunnel operations it makes. [`Netlink`] is the real one; a unit test gives a recording
/// double, so the logic that picks direct routes or the tunnel runs without root (the root
/// tests still prove the real calls). Errors carry the kernel's errno, as `Netlink`'s do.
pub trait RouteTable {
    fn add_route(&mut self, dst: Ipv4Addr, prefix: u8, to: RouteTo) -> Result<()>;
    fn del_route(&mut self, dst: Ipv4Addr, prefix: u8, to: RouteTo) -> Result<()>;
    fn set_neighbour(&mut self, add: bool, index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()>;
    fn set_fdb(&mut self, add: bool, index: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<()>;
    fn ensure_vxlan(
        &mut self,
        name: &str,
        vni: u32,
        local: Ipv4Addr,
        port: u16,
        mac: [u8; 6],
    ) -> Result<u32>;
    fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()>;
}

impl RouteTable for Netlink {
    fn add_route(&mut self, dst: Ipv4Addr, prefix: u8, to: RouteTo) -> Result<()> {
        Netlink::add_route(self, dst, prefix, to)
    }
    fn del_route(&mut self, dst: Ipv4Addr, prefix: u8, to: RouteTo) -> Result<()> {
        Netlink::del_route(self, dst, prefix, to)
    }
    fn set_neighbour(&mut self, add: bool, index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
        Netlink::set_neighbour(self, add, index, ip, mac)
    }
    fn set_fdb(&mut self, add: bool, index: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<()> {
        Netlink::set_fdb(self, add, index, mac, dst)
    }
    fn ensure_vxlan(
        &mut self,
        name: &str,
        vni: u32,
        local: Ipv4Addr,
        port: u16,
        mac: [u8; 6],
    ) -> Result<u32> {
        Netlink::ensure_vxlan(self, name, vni, local, port, mac)
    }
    fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        Netlink::add_address(self, index, addr, prefix)
    }
}

pub struct Netlink {
    socket: Socket,
    seq: u32,
}

/// What a route sends packets to.
#[derive(Debug, Clone, Copy)]
pub enum RouteTo {
    /// Through a gateway.
    Gateway(Ipv4Addr),
    /// Directly out of a link (by index).
    Link(u32),
    /// Nowhere: dropped, so nothing addressed to the range leaves the machine.
    Blackhole,
    /// Through a gateway taken to be on the link (by index) whatever its address: a tunnel's
    /// far end.
    Onlink { gateway: Ipv4Addr, link: u32 },
}

impl Netlink {
    /// A socket in the calling thread's current network namespace.
    pub fn new() -> Result<Netlink> {
        let fail = |source| NetlinkError {
            what: "open a socket".into(),
            source,
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(fail)?;
        socket.bind_auto().map_err(fail)?;
        socket.set_ext_ack(true).ok();
        Ok(Netlink { socket, seq: 0 })
    }

    /// Sends one request and collects the replies up to its ACK (or the end of a dump).
    /// A request for a state that may hold already: the kernel's refusal with `settled`
    /// (EEXIST on an add, a not-found errno on a delete) is success.
    fn request_settled(
        &mut self,
        what: impl Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
        settled: i32,
    ) -> Result<()> {
        match self.request(what, msg, flags) {
            Err(e) if e.errno() == Some(settled) => Ok(()),
            r => r.map(drop),
        }
    }

    fn request(
        &mut self,
        what: impl Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let fail = |source| NetlinkError {
            what: what(),
            source,
        };
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(fail)?;
        let mut replies = Vec::new();
        let mut rx = vec![0u8; 64 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut rx[..], 0).map_err(fail)?;
            let mut off = 0;
            while off < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[off..n])
                    .map_err(|e| fail(std::io::Error::other(e.to_string())))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(fail(std::io::Error::other("a reply of length 0")));
                }
                off += len.next_multiple_of(4);
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(code) => Err(fail(std::io::Error::from_raw_os_error(-code.get()))),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => {
                        replies.push(m);
                        if flags & NLM_F_DUMP != NLM_F_DUMP && flags & NLM_F_ACK == 0 {
                            return Ok(replies);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The index of the link called `name`, if there is one.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        match self.request(
            || format!("find link {name}"),
            RouteNetlinkMessage::GetLink(msg),
            0,
        ) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn new_link(&mut self, what: String, msg: LinkMessage) -> Result<()> {
        self.request(
            || what.clone(),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Creates a bridge.
    pub fn add_bridge(&mut self, name: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.new_link(format!("create bridge {name}"), msg)
    }

    /// Creates a veth pair; `peer` is put into the namespace `peer_netns` (an open nsfs fd).
    pub fn add_veth(&mut self, name: &str, peer: &str, peer_netns: RawFd) -> Result<()> {
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes.push(LinkAttribute::IfName(peer.into()));
        peer_msg.attributes.push(LinkAttribute::NetNsFd(peer_netns));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.new_link(format!("create veth pair {name}/{peer}"), msg)
    }

    fn set_link(
        &mut self,
        what: String,
        index: u32,
        edit: impl FnOnce(&mut LinkMessage),
    ) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        edit(&mut msg);
        self.request(
            || what.clone(),
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Brings a link up.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.set_link(format!("bring link {index} up"), index, |m| {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        })
    }

    /// Attaches a link to a bridge.
    pub fn set_master(&mut self, index: u32, bridge: u32) -> Result<()> {
        self.set_link(
            format!("attach link {index} to bridge {bridge}"),
            index,
            |m| m.attributes.push(LinkAttribute::Controller(bridge)),
        )
    }

    /// Deletes a link (for a veth, both ends).
    pub fn del_link(&mut self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(
            || format!("delete link {index}"),
            RouteNetlinkMessage::DelLink(msg),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Adds `addr/prefix` to a link; an address it already has is fine.
    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        self.add_labelled_address(index, addr, prefix, None)
    }

    fn address_msg(index: u32, addr: Ipv4Addr, prefix: u8) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(addr.into()));
        msg.attributes.push(AddressAttribute::Address(addr.into()));
        msg
    }

    /// Adds `addr/prefix` to a link with a label (at most 15 bytes, by convention the link's
    /// name, a colon and a tag), so its owner can find its addresses again.
    pub fn add_labelled_address(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
        label: Option<&str>,
    ) -> Result<()> {
        let mut msg = Self::address_msg(index, addr, prefix);
        if let Some(l) = label {
            msg.attributes.push(AddressAttribute::Label(l.into()));
        }
        self.request_settled(
            || format!("add address {addr}/{prefix} to link {index}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            libc::EEXIST,
        )
    }

    /// Removes `addr/prefix` from a link; a missing one is fine.
    pub fn del_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        self.request_settled(
            || format!("delete address {addr}/{prefix} from link {index}"),
            RouteNetlinkMessage::DelAddress(Self::address_msg(index, addr, prefix)),
            NLM_F_ACK,
            libc::EADDRNOTAVAIL,
        )
    }

    /// The IPv4 addresses of a link: (address, prefix length, label).
    pub fn addresses(&mut self, index: u32) -> Result<Vec<(Ipv4Addr, u8, String)>> {
        let mut q = AddressMessage::default();
        q.header.family = AddressFamily::Inet;
        let replies = self.request(
            || format!("list addresses of link {index}"),
            RouteNetlinkMessage::GetAddress(q),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    let mut addr = None;
                    let mut label = String::new();
                    for at in &a.attributes {
                        match at {
                            AddressAttribute::Local(std::net::IpAddr::V4(ip)) => addr = Some(*ip),
                            AddressAttribute::Address(std::net::IpAddr::V4(ip))
                                if addr.is_none() =>
                            {
                                addr = Some(*ip)
                            }
                            AddressAttribute::Label(l) => label = l.clone(),
                            _ => {}
                        }
                    }
                    Some((addr?, a.header.prefix_len, label))
                }
                _ => None,
            })
            .collect())
    }

    fn route_msg(dst: Ipv4Addr, prefix: u8, to: RouteTo) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = prefix;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        if prefix > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        }
        match to {
            RouteTo::Gateway(gw) => msg
                .attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw))),
            RouteTo::Link(index) => {
                msg.header.scope = RouteScope::Link;
                msg.attributes.push(RouteAttribute::Oif(index));
            }
            RouteTo::Blackhole => msg.header.kind = RouteType::BlackHole,
            RouteTo::Onlink { gateway, link } => {
                msg.header.flags = RouteFlags::Onlink;
                msg.attributes
                    .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
                msg.attributes.push(RouteAttribute::Oif(link));
            }
        }
        msg
    }

    /// Adds a route; one that exists already is fine.
    pub fn add_route(&mut self, dst: Ipv4Addr, prefix: u8, to: RouteTo) -> Result<()> {
        self.request_settled(
            || format!("add route {dst}/{prefix} {to:?}"),
            RouteNetlinkMessage::NewRoute(Self::route_msg(dst, prefix, to)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            libc::EEXIST,
        )
    }

    /// Deletes a route; a missing one is fine.
    pub fn del_route(&mut self, dst: Ipv4Addr, prefix: u8, to: RouteTo) -> Result<()> {
        self.request_settled(
            || format!("delete route {dst}/{prefix}"),
            RouteNetlinkMessage::DelRoute(Self::route_msg(dst, prefix, to)),
            NLM_F_ACK,
            libc::ESRCH,
        )
    }

    /// The VXLAN device `name` (VNI `vni`, UDP `port`, sending from `local`, no learning: its
    /// forwarding entries are set by hand), with the MAC `mac`, up; made if missing. Its
    /// index.
    pub fn ensure_vxlan(
        &mut self,
        name: &str,
        vni: u32,
        local: Ipv4Addr,
        port: u16,
        mac: [u8; 6],
    ) -> Result<u32> {
        let index = match self.link_index(name)? {
            Some(i) => i,
            None => {
                let mut msg = LinkMessage::default();
                msg.attributes.push(LinkAttribute::IfName(name.into()));
                msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
                msg.attributes.push(LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Vxlan),
                    LinkInfo::Data(InfoData::Vxlan(vec![
                        InfoVxlan::Id(vni),
                        InfoVxlan::Local(local),
                        InfoVxlan::Port(port),
                        InfoVxlan::Learning(false),
                    ])),
                ]));
                match self.new_link(format!("create vxlan {name}"), msg) {
                    Err(e) if e.errno() == Some(libc::EEXIST) => {}
                    r => r?,
                }
                self.link_index(name)?.ok_or_else(|| NetlinkError {
                    what: format!("vxlan {name} vanished after creation"),
                    source: std::io::Error::from_raw_os_error(libc::ENODEV),
                })?
            }
        };
        self.set_up(index)?;
        Ok(index)
    }

    fn neighbour(
        &mut self,
        what: String,
        add: bool,
        family: AddressFamily,
        index: u32,
        flags: NeighbourFlags,
        attrs: Vec<NeighbourAttribute>,
    ) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.header.flags = flags;
        msg.attributes = attrs;
        let r = if add {
            self.request(
                || what.clone(),
                RouteNetlinkMessage::NewNeighbour(msg),
                NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            )
        } else {
            self.request(
                || what.clone(),
                RouteNetlinkMessage::DelNeighbour(msg),
                NLM_F_ACK,
            )
        };
        match r {
            Err(e) if !add && e.errno() == Some(libc::ENOENT) => Ok(()),
            r => r.map(drop),
        }
    }

    /// Sets (or with `add` false removes) the permanent neighbour entry `ip` → `mac` on a link.
    pub fn set_neighbour(
        &mut self,
        add: bool,
        index: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> Result<()> {
        self.neighbour(
            format!("neighbour {ip} on link {index}"),
            add,
            AddressFamily::Inet,
            index,
            NeighbourFlags::empty(),
            vec![
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)),
                NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
            ],
        )
    }

    /// Sets (or removes) a VXLAN forwarding entry: frames for `mac` go to the node `dst`.
    pub fn set_fdb(&mut self, add: bool, index: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<()> {
        self.neighbour(
            format!("forwarding entry for {dst} on link {index}"),
            add,
            AddressFamily::Bridge,
            index,
            NeighbourFlags::Own,
            vec![
                NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
                NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)),
            ],
        )
    }
}

//! Node-local cluster DNS: every agent answers the cluster's names from its own watch of
//! Services and Endpoints, on its pods' gateway address (UDP and TCP, port 53), as CoreDNS's
//! kubernetes plugin answers them:
//!
//! - `SVC.NS.svc.cluster.local` A: the Service's cluster IP; for a headless Service, the
//!   addresses of its ready endpoints;
//! - `_PORT._PROTO.SVC.NS.svc.cluster.local` SRV: the named port, on the Service's name (or on
//!   each ready endpoint of a headless one, `A-B-C-D.SVC.NS.svc.cluster.local`, which has an A
//!   record too);
//! - `A-B-C-D.NS.pod.cluster.local` A: that address;
//! - any other name under `cluster.local`: NXDOMAIN; a name that exists but has no records of
//!   the asked type: an empty answer (NOERROR);
//! - names outside the cluster domain go to the upstream resolvers, or get REFUSED when there
//!   are none (`--dns-upstream none`). Each forwarded query goes from a new socket with a
//!   random ID, and only a datagram from the resolver asked, with that ID and the same
//!   question, is taken as its answer.
//!
//! Over TCP each connection is accepted within the node's connection limits
//! ([`berth_tls::limits`]); a query must come whole within `--request-head-timeout` of its
//! first byte, and a connection that sends nothing for `--idle-timeout` is closed.
//!
//! Pods of the default DNS policy (ClusterFirst) get it in their resolv.conf, with the search
//! list `NS.svc.cluster.local svc.cluster.local cluster.local` and `ndots:5`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// The cluster's domain.
pub const DOMAIN: &str = "cluster.local";
/// Seconds answers may be cached (CoreDNS's kubernetes plugin's default).
const TTL: u32 = 5;

use crate::catalog::{Catalog, Shared};

/// An answer: the code, and the records.
#[derive(Debug, PartialEq)]
pub(crate) struct Answer {
    pub code: ResponseCode,
    pub records: Vec<Record>,
}

fn dashed(label: &str) -> Option<Ipv4Addr> {
    label.replace('-', ".").parse().ok()
}

fn a(name: &Name, ip: Ipv4Addr) -> Record {
    Record::from_rdata(name.clone(), TTL, RData::A(A(ip)))
}

/// Answers one question about the cluster domain; `None` when the name is not in it.
pub(crate) fn answer(zone: &Catalog, name: &Name, qtype: RecordType) -> Option<Answer> {
    let text = name.to_lowercase().to_ascii();
    let text = text.trim_end_matches('.');
    let rest = text.strip_suffix(DOMAIN)?.strip_suffix('.').or_else(|| {
        // The domain itself.
        (text == DOMAIN).then_some("")
    })?;
    let labels: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('.').collect()
    };
    let nx = || {
        Some(Answer {
            code: ResponseCode::NXDomain,
            records: Vec::new(),
        })
    };
    let found = |records: Vec<Record>| {
        // A name that exists with nothing of the type asked: NOERROR, no records.
        let records = records
            .into_iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .collect();
        Some(Answer {
            code: ResponseCode::NoError,
            records,
        })
    };
    match labels.as_slice() {
        // The zone and its two subtrees exist (empty non-terminals).
        [] | ["svc"] | ["pod"] | [_, "svc"] | [_, "pod"] => found(Vec::new()),
        [ip, _ns, "pod"] => match dashed(ip) {
            Some(ip) => found(vec![a(name, ip)]),
            None => nx(),
        },
        [svc, ns, "svc"] => {
            let k = (ns.to_string(), svc.to_string());
            let Some(s) = zone.services.get(&k) else {
                return nx();
            };
            let ips = match s.cluster_ip {
                Some(ip) => vec![ip],
                None => zone.ready_ips(&k),
            };
            found(ips.into_iter().map(|ip| a(name, ip)).collect())
        }
        [host, svc, ns, "svc"] if !host.starts_with('_') => {
            let k = (ns.to_string(), svc.to_string());
            let s = zone.services.get(&k)?;
            let ip =
                dashed(host).filter(|ip| s.cluster_ip.is_none() && zone.ready_ips(&k).contains(ip));
            match ip {
                Some(ip) => found(vec![a(name, ip)]),
                None => nx(),
            }
        }
        [port, proto, svc, ns, "svc"] => {
            let k = (ns.to_string(), svc.to_string());
            let Some(s) = zone.services.get(&k) else {
                return nx();
            };
            let (port, proto) = (port.trim_start_matches('_'), proto.trim_start_matches('_'));
            let Some(number) = s
                .ports
                .iter()
                .find(|p| p.name == port && p.protocol == proto)
                .map(|p| p.port)
            else {
                return nx();
            };
            let svc_name = Name::from_ascii(format!("{svc}.{ns}.svc.{DOMAIN}.")).ok()?;
            let targets: Vec<Name> = match s.cluster_ip {
                Some(_) => vec![svc_name],
                None => zone
                    .ready_ips(&k)
                    .into_iter()
                    .filter_map(|ip| {
                        let d = ip.to_string().replace('.', "-");
                        Name::from_ascii(format!("{d}.{svc}.{ns}.svc.{DOMAIN}.")).ok()
                    })
                    .collect(),
            };
            found(
                targets
                    .into_iter()
                    .map(|t| {
                        Record::from_rdata(
                            name.clone(),
                            TTL,
                            RData::SRV(SRV::new(0, 100, number, t)),
                        )
                    })
                    .collect(),
            )
        }
        _ => nx(),
    }
}

/// The reply to one query message (raw bytes in, raw bytes out); `None` for garbage not
/// worth an answer.
pub(crate) async fn reply(zone: &Shared, upstream: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    let msg = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => {
            // A header at least: say FORMERR.
            if query.len() < 12 {
                return None;
            }
            let mut r = Message::new();
            r.set_id(u16::from_be_bytes([query[0], query[1]]))
                .set_message_type(MessageType::Response)
                .set_response_code(ResponseCode::FormErr);
            return r.to_vec().ok();
        }
    };
    if msg.message_type() != MessageType::Query {
        return None;
    }
    let mut r = Message::new();
    r.set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(msg.op_code())
        .set_recursion_desired(msg.recursion_desired())
        .set_recursion_available(!upstream.is_empty());
    r.add_queries(msg.queries().to_vec());
    let Some(q) = msg
        .queries()
        .first()
        .filter(|_| msg.op_code() == OpCode::Query)
    else {
        r.set_response_code(ResponseCode::NotImp);
        return r.to_vec().ok();
    };
    let found = { answer(&zone.read(), q.name(), q.query_type()) };
    match found {
        Some(ans) => {
            r.set_authoritative(true).set_response_code(ans.code);
            r.add_answers(ans.records);
            r.to_vec().ok()
        }
        None if upstream.is_empty() => {
            r.set_response_code(ResponseCode::Refused);
            r.to_vec().ok()
        }
        None => match forward(upstream, query).await {
            Some(bytes) => Some(bytes),
            None => {
                r.set_response_code(ResponseCode::ServFail);
                r.to_vec().ok()
            }
        },
    }
}

/// How long each upstream resolver has to answer.
const UPSTREAM_WAIT: Duration = Duration::from_secs(2);

/// Asks the upstream resolvers in turn (2 s each) and passes their answer on.
///
/// Each query goes out with a random ID from a new socket (a fresh port the kernel picks at
/// random) connected to the one resolver asked, and a datagram is taken as the answer only
/// when it comes from that address, with that ID, as a response to the same question;
/// anything else (a forged answer from elsewhere, a guess at the ID, an answer to another
/// question) is dropped and the wait goes on. The client gets the answer under its own ID.
async fn forward(upstream: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    let asked = Message::from_vec(query).ok()?;
    for up in upstream {
        let bind: SocketAddr = if up.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
            continue;
        };
        // Connected: the kernel passes on only datagrams from the resolver's address.
        if sock.connect(up).await.is_err() {
            continue;
        }
        let mut id = [0u8; 2];
        if getrandom::fill(&mut id).is_err() {
            return None;
        }
        let mut ours = query.to_vec();
        ours[..2].copy_from_slice(&id);
        if sock.send(&ours).await.is_err() {
            continue;
        }
        let deadline = tokio::time::Instant::now() + UPSTREAM_WAIT;
        let mut buf = vec![0u8; 4096];
        while let Ok(Ok((n, from))) =
            tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await
        {
            if from != *up {
                continue;
            }
            let Ok(answer) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let same_question = answer.queries().len() == asked.queries().len()
                && answer.queries().iter().zip(asked.queries()).all(|(a, q)| {
                    a.name() == q.name()
                        && a.query_type() == q.query_type()
                        && a.query_class() == q.query_class()
                });
            if answer.id() != u16::from_be_bytes(id)
                || answer.message_type() != MessageType::Response
                || !same_question
            {
                tracing::debug!(resolver = %up, "a datagram that does not answer the query was dropped");
                continue;
            }
            let mut out = buf[..n].to_vec();
            out[..2].copy_from_slice(&query[..2]);
            return Some(out);
        }
    }
    None
}

/// Serves cluster DNS on `addr` (UDP and TCP) until `stop`.
pub async fn serve(
    zone: Arc<Shared>,
    addr: SocketAddr,
    upstream: Vec<SocketAddr>,
    limits: berth_tls::ConnLimits,
    stop: watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<bool>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let bound = async {
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot serve cluster DNS on {addr}/udp"))?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve cluster DNS on {addr}/tcp"))?;
        anyhow::Ok((udp, tcp))
    }
    .await;
    let _ = ready.send(bound.is_ok());
    let (udp, tcp) = bound?;
    let upstream = Arc::new(upstream);
    let udp = Arc::new(udp);
    {
        let (zone, upstream, mut stop) = (zone.clone(), upstream.clone(), stop.clone());
        let udp = udp.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, peer) = tokio::select! {
                    r = udp.recv_from(&mut buf) => match r {
                        Ok(x) => x,
                        Err(_) => continue,
                    },
                    _ = stop.changed() => return,
                };
                let query = buf[..n].to_vec();
                let (zone, upstream, udp) = (zone.clone(), upstream.clone(), udp.clone());
                tokio::spawn(async move {
                    if let Some(mut out) = reply(&zone, &upstream, &query).await {
                        // Too long for UDP: truncated, the client asks again over TCP.
                        if out.len() > 512
                            && let Ok(mut m) = Message::from_vec(&out)
                        {
                            m.take_answers();
                            m.set_truncated(true);
                            out = m.to_vec().unwrap_or(out);
                        }
                        let _ = udp.send_to(&out, peer).await;
                    }
                });
            }
        });
    }
    let tcp =
        berth_tls::limits::Listener::new(tcp, "dns-tcp", limits, berth_tls::limits::Refusal::Close);
    accept_tcp(tcp, zone, upstream, stop).await;
    Ok(())
}

/// Serves DNS over TCP on `tcp` until `stop`: a task per connection within its limits.
async fn accept_tcp(
    tcp: berth_tls::limits::Listener,
    zone: Arc<Shared>,
    upstream: Arc<Vec<SocketAddr>>,
    mut stop: watch::Receiver<bool>,
) {
    let limits = *tcp.limits();
    loop {
        let (conn, peer, permit) = tokio::select! {
            c = tcp.accept() => c,
            _ = stop.changed() => return,
        };
        let (zone, upstream) = (zone.clone(), upstream.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_tcp(conn, &zone, &upstream, &limits).await {
                tracing::debug!(%peer, error = %e, "a DNS-over-TCP connection ended");
            }
        });
    }
}

/// Answers the queries of one TCP connection (RFC 7766: each a two-byte length, then the
/// message), in turn. A query must come whole within the head timeout of its first byte; the
/// connection is closed when idle for the idle timeout, or when a reply is not taken in it.
async fn serve_tcp(
    mut conn: tokio::net::TcpStream,
    zone: &Shared,
    upstream: &[SocketAddr],
    limits: &berth_tls::ConnLimits,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let whole = |b: &[u8]| b.len() >= 2 && b.len() >= 2 + u16::from_be_bytes([b[0], b[1]]) as usize;
    loop {
        if !berth_tls::limits::read_message(&mut conn, &mut buf, limits, whole).await? {
            return Ok(());
        }
        let end = 2 + u16::from_be_bytes([buf[0], buf[1]]) as usize;
        let query: Vec<u8> = buf.drain(..end).skip(2).collect();
        let Some(out) = reply(zone, upstream, &query).await else {
            return Ok(());
        };
        let framed = tcp_framed(out);
        tokio::time::timeout(limits.idle_timeout, conn.write_all(&framed))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "the client took no reply")
            })??;
    }
}

/// A reply as DNS over TCP sends it: its two-byte length, then the message. A message
/// longer than a length can say goes without its records and with TC set; one that cannot
/// even be read back for that goes as a bare SERVFAIL under its ID. Never a length that does
/// not match what follows (hickory stops the messages it encodes at 65535 bytes, and
/// forwarded answers are at most 4096, but the framing does not lean on either).
fn tcp_framed(out: Vec<u8>) -> Vec<u8> {
    let max = usize::from(u16::MAX);
    let out = if out.len() <= max {
        out
    } else {
        Message::from_vec(&out)
            .ok()
            .and_then(|mut m| {
                m.take_answers();
                m.take_name_servers();
                m.take_additionals();
                m.set_truncated(true);
                m.to_vec().ok()
            })
            .filter(|m| m.len() <= max)
            .unwrap_or_else(|| {
                let mut r = Message::new();
                r.set_id(u16::from_be_bytes([out[0], out[1]]))
                    .set_message_type(MessageType::Response)
                    .set_response_code(ResponseCode::ServFail);
                // A header alone always encodes.
                r.to_vec().unwrap_or_default()
            })
    };
    let mut framed = Vec::with_capacity(2 + out.len());
    framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
    framed.extend_from_slice(&out);
    framed
}

/// The upstream resolvers of `/etc/resolv.conf` (port 53).
pub fn host_upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next()?.parse::<std::net::IpAddr>().ok())
                .flatten()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashSet;

    fn zone() -> Catalog {
        let mut z = Catalog::default();
        z.put_service(&json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}));
        z.put_service(&json!({"metadata": {"name": "db", "namespace": "prod"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}));
        z.put_endpoints(&json!({"metadata": {"name": "db", "namespace": "prod"},
            "subsets": [{"addresses": [{"ip": "10.42.1.7"}, {"ip": "10.42.0.9"}],
                         "notReadyAddresses": [{"ip": "10.42.0.10"}]}]}));
        z
    }

    fn ask(z: &Catalog, name: &str, t: RecordType) -> Option<(ResponseCode, Vec<String>)> {
        let a = answer(z, &Name::from_ascii(name).unwrap(), t)?;
        let mut data: Vec<String> = a.records.iter().map(|r| r.data().to_string()).collect();
        data.sort();
        Some((a.code, data))
    }

    #[test]
    fn services_pods_srv_and_the_rest() {
        let z = zone();
        let ok = ResponseCode::NoError;
        assert_eq!(
            ask(&z, "web.default.svc.cluster.local.", RecordType::A),
            Some((ok, vec!["10.43.0.20".into()]))
        );
        assert_eq!(
            ask(&z, "WEB.Default.svc.cluster.local", RecordType::A),
            Some((ok, vec!["10.43.0.20".into()]))
        );
        // Headless: the ready endpoints only.
        assert_eq!(
            ask(&z, "db.prod.svc.cluster.local.", RecordType::A),
            Some((ok, vec!["10.42.0.9".into(), "10.42.1.7".into()]))
        );
        assert_eq!(
            ask(&z, "10-42-1-7.db.prod.svc.cluster.local.", RecordType::A),
            Some((ok, vec!["10.42.1.7".into()]))
        );
        assert_eq!(
            ask(&z, "10-42-0-10.db.prod.svc.cluster.local.", RecordType::A)
                .unwrap()
                .0,
            ResponseCode::NXDomain
        );
        // SRV for named ports.
        assert_eq!(
            ask(
                &z,
                "_http._tcp.web.default.svc.cluster.local.",
                RecordType::SRV
            ),
            Some((ok, vec!["0 100 80 web.default.svc.cluster.local.".into()]))
        );
        assert_eq!(
            ask(&z, "_pg._tcp.db.prod.svc.cluster.local.", RecordType::SRV)
                .unwrap()
                .1
                .len(),
            2
        );
        // Pods by address.
        assert_eq!(
            ask(&z, "10-42-0-5.default.pod.cluster.local.", RecordType::A),
            Some((ok, vec!["10.42.0.5".into()]))
        );
        // Exists, nothing of that type: NOERROR and empty.
        assert_eq!(
            ask(&z, "web.default.svc.cluster.local.", RecordType::AAAA),
            Some((ok, vec![]))
        );
        assert_eq!(
            ask(&z, "svc.cluster.local.", RecordType::A),
            Some((ok, vec![]))
        );
        // Unknown in the zone: NXDOMAIN; outside it: not ours.
        assert_eq!(
            ask(&z, "nope.default.svc.cluster.local.", RecordType::A)
                .unwrap()
                .0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask(&z, "a.b.c.d.e.f.cluster.local.", RecordType::A)
                .unwrap()
                .0,
            ResponseCode::NXDomain
        );
        assert_eq!(ask(&z, "example.com.", RecordType::A), None);
        assert_eq!(ask(&z, "notcluster.local.", RecordType::A), None);
    }

    proptest::proptest! {
        // PROPTEST_CASES sets the count: 256 in the test command, a million in
        // `scripts/bench fuzz`.
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]
        /// No datagram makes the server panic: random bytes, and valid queries with bytes
        /// flipped, truncated or appended.
        #[test]
        fn any_datagram_gets_an_answer_or_nothing(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            flips in proptest::collection::vec((0usize..64, proptest::prelude::any::<u8>()), 0..6),
            cut in 0usize..80,
        ) {
            let z = Shared::holding(zone());
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let _ = reply(&z, &[], &bytes).await;
                let mut q = Message::new();
                q.set_id(3);
                q.add_query(hickory_proto::op::Query::query(
                    Name::from_ascii("_http._tcp.web.default.svc.cluster.local.").unwrap(),
                    RecordType::SRV,
                ));
                let mut v = q.to_vec().unwrap();
                for (i, b) in &flips {
                    let n = v.len();
                    v[i % n] = *b;
                }
                v.truncate(cut.max(1));
                if let Some(out) = reply(&z, &[], &v).await {
                    // Whatever it says is a well-formed DNS message.
                    proptest::prop_assert!(Message::from_vec(&out).is_ok());
                }
                Ok(())
            })?;
        }
    }

    fn query(id: u16, name: &str) -> Message {
        let mut q = Message::new();
        q.set_id(id).set_recursion_desired(true);
        q.add_query(hickory_proto::op::Query::query(
            Name::from_ascii(name).unwrap(),
            RecordType::A,
        ));
        q
    }

    fn answer_to(q: &Message, ip: [u8; 4]) -> Vec<u8> {
        let mut r = Message::new();
        r.set_id(q.id()).set_message_type(MessageType::Response);
        r.add_queries(q.queries().to_vec());
        let name = q.queries()[0].name().clone();
        r.add_answer(a(&name, ip.into()));
        r.to_vec().unwrap()
    }

    /// A real UDP resolver on loopback that, for each query, first has forgeries sent (from
    /// another address with the right ID; from its own address with a wrong ID, and with the
    /// right ID for another question), then answers itself unless `genuine` is false. It
    /// reports each query's ID and source address.
    async fn resolver(
        genuine: bool,
    ) -> (
        SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<(u16, SocketAddr)>,
    ) {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        // Another loopback address: a forger elsewhere.
        let forger = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let q = Message::from_vec(&buf[..n]).unwrap();
                let _ = tx.send((q.id(), from));
                forger
                    .send_to(&answer_to(&q, [6, 6, 6, 1]), from)
                    .await
                    .unwrap();
                let mut wrong_id = q.clone();
                wrong_id.set_id(q.id().wrapping_add(1));
                sock.send_to(&answer_to(&wrong_id, [6, 6, 6, 2]), from)
                    .await
                    .unwrap();
                let other = query(q.id(), "other.example.");
                sock.send_to(&answer_to(&other, [6, 6, 6, 3]), from)
                    .await
                    .unwrap();
                let mut not_answer = Message::from_vec(&answer_to(&q, [6, 6, 6, 4])).unwrap();
                not_answer.set_message_type(MessageType::Query);
                sock.send_to(&not_answer.to_vec().unwrap(), from)
                    .await
                    .unwrap();
                sock.send_to(b"\x00garbage", from).await.unwrap();
                if genuine {
                    sock.send_to(&answer_to(&q, [1, 2, 3, 4]), from)
                        .await
                        .unwrap();
                }
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn forwarded_queries_take_only_the_genuine_answer() {
        let z = Shared::holding(zone());
        let (up, mut asked) = resolver(true).await;
        let mut ids = HashSet::new();
        let mut ports = HashSet::new();
        for _ in 0..4 {
            let q = query(0x4242, "example.com.");
            let out = reply(&z, &[up], &q.to_vec().unwrap()).await.unwrap();
            let out = Message::from_vec(&out).unwrap();
            assert_eq!(out.id(), 0x4242, "the client gets its own ID back");
            assert_eq!(out.response_code(), ResponseCode::NoError);
            let got: Vec<String> = out.answers().iter().map(|r| r.data().to_string()).collect();
            assert_eq!(got, ["1.2.3.4"], "only the genuine answer");
            let (id, from) = asked.recv().await.unwrap();
            ids.insert(id);
            ports.insert(from.port());
        }
        // Random IDs (not the client's), from fresh ports.
        assert!(ids.len() > 1 && !ids.contains(&0x4242), "{ids:?}");
        assert!(ports.len() > 1, "{ports:?}");
    }

    #[tokio::test]
    async fn forgeries_alone_are_no_answer() {
        let z = Shared::holding(zone());
        let (up, mut asked) = resolver(false).await;
        let q = query(9, "example.com.");
        let out = reply(&z, &[up], &q.to_vec().unwrap()).await.unwrap();
        let out = Message::from_vec(&out).unwrap();
        assert!(asked.recv().await.is_some());
        assert_eq!(out.id(), 9);
        assert_eq!(out.response_code(), ResponseCode::ServFail);
        assert!(out.answers().is_empty());
    }

    #[tokio::test]
    async fn replies_and_refusals_on_the_wire() {
        let z = Shared::holding(zone());
        let mut q = Message::new();
        q.set_id(7).set_recursion_desired(true);
        q.add_query(hickory_proto::op::Query::query(
            Name::from_ascii("web.default.svc.cluster.local.").unwrap(),
            RecordType::A,
        ));
        let out = Message::from_vec(&reply(&z, &[], &q.to_vec().unwrap()).await.unwrap()).unwrap();
        assert_eq!(out.id(), 7);
        assert!(out.authoritative());
        assert_eq!(out.answers().len(), 1);
        let mut q2 = Message::new();
        q2.set_id(8);
        q2.add_query(hickory_proto::op::Query::query(
            Name::from_ascii("example.com.").unwrap(),
            RecordType::A,
        ));
        let out = Message::from_vec(&reply(&z, &[], &q2.to_vec().unwrap()).await.unwrap()).unwrap();
        assert_eq!(out.response_code(), ResponseCode::Refused);
        // Garbage with a header: FORMERR; shorter: nothing.
        let out = Message::from_vec(
            &reply(&z, &[], &[0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff])
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(out.response_code(), ResponseCode::FormErr);
        assert!(reply(&z, &[], &[1, 2, 3]).await.is_none());
    }

    #[test]
    fn a_reply_too_long_for_tcp_goes_truncated_or_as_servfail() {
        let framed_len = |f: &[u8]| usize::from(u16::from_be_bytes([f[0], f[1]]));
        // Fits: as it is.
        let small = query(3, "web.default.svc.cluster.local.").to_vec().unwrap();
        let f = tcp_framed(small.clone());
        assert_eq!((framed_len(&f), &f[2..]), (small.len(), &small[..]));
        // 5000 addresses (16 bytes each, past 65535), written by hand: hickory's encoder
        // itself stops at 65535. The records go, TC is set.
        let mut big = query(4, "db.prod.svc.cluster.local.");
        big.set_message_type(MessageType::Response);
        let mut big = big.to_vec().unwrap();
        big[6..8].copy_from_slice(&5000u16.to_be_bytes());
        for i in 0..5000u32 {
            // The question's name (a pointer to offset 12), A, IN, TTL 5, 4 bytes.
            big.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
            big.extend_from_slice(&(0x0a2a_0000 + i).to_be_bytes());
        }
        assert!(big.len() > 65535, "{}", big.len());
        assert_eq!(Message::from_vec(&big).unwrap().answers().len(), 5000);
        let f = tcp_framed(big);
        assert_eq!(framed_len(&f), f.len() - 2);
        let m = Message::from_vec(&f[2..]).unwrap();
        assert_eq!(m.id(), 4);
        assert!(m.truncated());
        assert!(m.answers().is_empty());
        assert_eq!(m.queries().len(), 1, "the question stays");
        // Unreadable and too long: a bare SERVFAIL under its ID.
        let mut junk = vec![0xffu8; 70_000];
        junk[..2].copy_from_slice(&[0x12, 0x34]);
        let f = tcp_framed(junk);
        assert_eq!(framed_len(&f), f.len() - 2);
        let m = Message::from_vec(&f[2..]).unwrap();
        assert_eq!(m.id(), 0x1234);
        assert_eq!(m.response_code(), ResponseCode::ServFail);
    }

    /// DNS over TCP on a loopback port of the test's own, through the node's accept loop.
    async fn tcp_server(limits: berth_tls::ConnLimits) -> (SocketAddr, watch::Sender<bool>) {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let l = berth_tls::limits::Listener::new(
            tcp,
            "dns-tcp",
            limits,
            berth_tls::limits::Refusal::Close,
        );
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept_tcp(
            l,
            Shared::holding(zone()),
            Arc::new(Vec::new()),
            stopped,
        ));
        (addr, stop)
    }

    /// Waits (5 s at most) for the server to close `c`; how long it took.
    async fn closed(c: &mut tokio::net::TcpStream) -> Duration {
        use tokio::io::AsyncReadExt;
        let started = std::time::Instant::now();
        let mut b = [0u8; 512];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), c.read(&mut b)).await {
                Err(_) => panic!("still open after 5 s"),
                Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
                Ok(Ok(_)) => {}
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_clients_that_send_nothing_useful_are_closed_and_real_ones_answered() {
        use tokio::io::AsyncReadExt;
        let limits = berth_tls::ConnLimits {
            head_timeout: Duration::from_millis(800),
            idle_timeout: Duration::from_millis(800),
            ..berth_tls::ConnLimits::default()
        };
        let (addr, _stop) = tcp_server(limits).await;
        let mut q = Message::new();
        q.set_id(9);
        q.add_query(hickory_proto::op::Query::query(
            Name::from_ascii("web.default.svc.cluster.local.").unwrap(),
            RecordType::A,
        ));
        let q = q.to_vec().unwrap();
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        // Two queries in one write, answered in turn on one connection.
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(&[framed.clone(), framed.clone()].concat())
            .await
            .unwrap();
        for _ in 0..2 {
            let mut len = [0u8; 2];
            c.read_exact(&mut len).await.unwrap();
            let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
            c.read_exact(&mut m).await.unwrap();
            let m = Message::from_vec(&m).unwrap();
            assert_eq!(m.id(), 9);
            assert_eq!(m.answers()[0].data().to_string(), "10.43.0.20");
        }
        // Then idle: closed after the idle timeout.
        let took = closed(&mut c).await;
        assert!(took >= Duration::from_millis(700), "closed after {took:?}");
        // Nothing at all.
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let took = closed(&mut silent).await;
        assert!(took >= Duration::from_millis(700), "closed after {took:?}");
        // A length prefix, then nothing.
        let mut prefix = tokio::net::TcpStream::connect(addr).await.unwrap();
        prefix.write_all(&framed[..2]).await.unwrap();
        let took = closed(&mut prefix).await;
        assert!(took < Duration::from_secs(3), "closed after {took:?}");
        // The message trickled a byte at a time: closed at the head timeout, not kept by it.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        let (mut rd, mut wr) = slow.split();
        let trickle = async {
            for b in &framed[..framed.len() - 1] {
                if wr.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            std::future::pending::<()>().await;
        };
        let mut sink = Vec::new();
        tokio::select! {
            _ = trickle => {}
            r = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut sink)) => {
                assert!(r.is_ok(), "the trickling client is still connected after 5 s");
            }
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_secs(3),
            "closed after {took:?}, not at the 800 ms head timeout"
        );
        assert!(sink.is_empty(), "an answer to a partial query");
    }
}

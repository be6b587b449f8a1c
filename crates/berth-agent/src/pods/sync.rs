//! One pass of a worker: make the runtime match the pod's spec (sandbox, volumes, init
//! containers in order, then containers), restarting those that stopped as the restart
//! policy says, after their back-off.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_runtime::pod::{PodConfig, RuntimeError};
use berth_runtime::shim::{ContainerState, Status};
use serde_json::Value;

use super::Options;
use super::container::{container_config, host_network, hostname_of, pod_dns, quantity};
use super::image::Image;
use super::status::terminated;
use super::volumes::PodVolumes;
use super::{BACKOFF_MAX, containers, s};

/// What the worker remembers of one container between passes.
#[derive(Debug, Default, Clone)]
pub(super) struct Track {
    pub(super) restarts: u32,
    /// Not restarted before this.
    pub(super) backoff_until: Option<Instant>,
    pub(super) backoff: Duration,
    /// The previous run's `terminated` state.
    pub(super) last_state: Option<Value>,
    /// Why it is not running (image, creation errors).
    pub(super) waiting: Option<(String, String)>,
    pub(super) image_id: String,
    /// Events to record: (type, reason, message).
    pub(super) events: Vec<(&'static str, String, String)>,
}

pub(super) fn should_restart(policy: &str, st: &ContainerState) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => st.exit_code != Some(0),
        _ => true,
    }
}

/// One pass: the runtime made to match the spec. Blocking.
#[allow(clippy::too_many_arguments)]
pub(super) fn sync_blocking(
    cfg: &Options,
    pod: &Value,
    images: &HashMap<String, Result<Image, (String, String)>>,
    projected_files: &HashMap<String, Vec<berth_runtime::volumes::File>>,
    files_refreshed: bool,
    refs: &HashMap<String, Value>,
    tracks: &mut HashMap<String, Track>,
    backoff_initial: Duration,
) -> Result<(String, Vec<ContainerState>), String> {
    let rt = &cfg.runtime;
    let uid = s(pod, "/metadata/uid").to_string();
    let record = match rt.pod(&uid) {
        Ok(r) => r,
        Err(RuntimeError::NoPod(_)) => {
            let hostname = hostname_of(pod);
            rt.run_pod(&PodConfig {
                id: uid.clone(),
                name: s(pod, "/metadata/name").to_string(),
                namespace: s(pod, "/metadata/namespace").to_string(),
                hostname: hostname.to_string(),
                dns: pod_dns(cfg, pod),
                annotations: Default::default(),
                host_network: host_network(pod),
            })
            .map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    // A pod on the node's network has the node's address.
    let pod_ip = record
        .network
        .as_ref()
        .map_or_else(|| cfg.node_ip.to_string(), |n| n.ip.to_string());
    // Volumes: made once per pod, refreshed projections every pass.
    let dir = rt.pod_dir(&uid);
    let mut volumes = PodVolumes {
        dir: dir.clone(),
        by_name: HashMap::new(),
        per_user: HashSet::new(),
    };
    // The pod's fsGroup owns its emptyDirs and projected volumes (hostPaths stay as they are).
    let fs_group = pod
        .pointer("/spec/securityContext/fsGroup")
        .and_then(Value::as_u64)
        .and_then(|g| u32::try_from(g).ok());
    for v in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s(v, "/name").to_string();
        let mut read_only = false;
        let path = if let Some(ed) = v.get("emptyDir") {
            let memory = s(ed, "/medium") == "Memory";
            let limit = quantity(ed, "/sizeLimit").map_or(0, |q| q.units_ceil().max(0) as u64);
            let p = berth_runtime::volumes::empty_dir(&dir, &name, memory, limit)
                .map_err(|e| e.to_string())?;
            match fs_group {
                Some(g) => berth_runtime::volumes::set_group(&p, g, false, false)
                    .map_err(|e| e.to_string())?,
                None => {
                    volumes.per_user.insert(name.clone());
                }
            }
            p
        } else if let Some(hp) = v.get("hostPath") {
            let p = PathBuf::from(s(hp, "/path"));
            if matches!(s(hp, "/type"), "DirectoryOrCreate") {
                let _ = std::fs::create_dir_all(&p);
            }
            p
        } else if let Some(files) = projected_files.get(&name) {
            let p = dir.join("volumes").join(&name);
            // Written when the files were read again from the API (or never yet), not on
            // every pass: between reads they are the same.
            if files_refreshed || std::fs::symlink_metadata(p.join("..data")).is_err() {
                berth_runtime::volumes::project(&p, files, fs_group).map_err(|e| e.to_string())?;
            }
            read_only = true;
            p
        } else {
            continue;
        };
        volumes.by_name.insert(name, (path, read_only));
    }
    let policy = s(pod, "/spec/restartPolicy").to_string();
    let node = s(pod, "/spec/nodeName").to_string();
    let mut states: HashMap<String, ContainerState> = rt
        .containers(&uid)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|c| (c.name.clone(), c))
        .collect();
    let now = Instant::now();
    // Makes one container match its spec: started, or restarted when `restart` says so
    // (after its back-off), or left as it is.
    let mut step = |states: &mut HashMap<String, ContainerState>,
                    c: &Value,
                    restart: &dyn Fn(&ContainerState) -> bool|
     -> Result<(), String> {
        let name = s(c, "/name").to_string();
        let track = tracks.entry(name.clone()).or_default();
        let image = match images.get(&name) {
            Some(Ok(i)) => i.clone(),
            Some(Err((reason, msg))) => {
                track.waiting = Some((reason.clone(), msg.clone()));
                return Ok(());
            }
            None => return Ok(()),
        };
        track.image_id = image.id.clone();
        let start = match states.get(&name) {
            None => true,
            Some(st) if st.status == Status::Exited && restart(st) => {
                if track.backoff_until.is_some_and(|t| now < t) {
                    if track
                        .waiting
                        .as_ref()
                        .is_none_or(|(r, _)| r != "CrashLoopBackOff")
                    {
                        track.events.push((
                            "Warning",
                            "BackOff".into(),
                            format!(
                                "Back-off restarting failed container {name} in pod {}_{}",
                                s(pod, "/metadata/name"),
                                s(pod, "/metadata/namespace")
                            ),
                        ));
                    }
                    track.waiting = Some((
                        "CrashLoopBackOff".into(),
                        format!(
                            "back-off {}s restarting failed container={name} pod={}_{}({uid})",
                            track.backoff.as_secs(),
                            s(pod, "/metadata/name"),
                            s(pod, "/metadata/namespace"),
                        ),
                    ));
                    false
                } else {
                    // It ran long enough: the back-off starts over.
                    let ran = st
                        .finished_at
                        .unwrap_or(0)
                        .saturating_sub(st.started_at.unwrap_or(0));
                    if Duration::from_nanos(ran) >= BACKOFF_MAX * 2 {
                        track.backoff = Duration::ZERO;
                    }
                    track.last_state = Some(terminated(&uid, st));
                    track.restarts += 1;
                    track.backoff = if track.backoff.is_zero() {
                        backoff_initial
                    } else {
                        (track.backoff * 2).min(BACKOFF_MAX)
                    };
                    rt.remove_container(&uid, &name)
                        .map_err(|e| e.to_string())?;
                    states.remove(&name);
                    true
                }
            }
            Some(_) => false,
        };
        if !start {
            return Ok(());
        }
        let made = container_config(
            pod,
            c,
            &image,
            &pod_ip,
            &node,
            &volumes,
            refs,
            track.restarts,
        )
        .and_then(|mut cc| crate::security::apply(&cfg.data_dir, pod, c, &mut cc).map(|()| cc))
        .map_err(|m| ("CreateContainerConfigError".to_string(), m))
        .and_then(|cc| {
            rt.create_container(&uid, &cc)
                .map_err(|e| ("CreateContainerError".to_string(), e.to_string()))
        })
        .and_then(|_| {
            rt.start_container(&uid, &name)
                .map_err(|e| ("RunContainerError".to_string(), e.to_string()))
        });
        match made {
            Ok(()) => {
                track.waiting = None;
                track.events.push((
                    "Normal",
                    "Created".into(),
                    format!("Created container {name}"),
                ));
                track.events.push((
                    "Normal",
                    "Started".into(),
                    format!("Started container {name}"),
                ));
                if let Ok(st) = rt.container(&uid, &name) {
                    states.insert(name.clone(), st);
                }
                if track.restarts > 0 {
                    track.backoff_until = Some(now + track.backoff);
                }
            }
            Err((reason, msg)) => {
                let _ = rt.remove_container(&uid, &name);
                if track
                    .waiting
                    .as_ref()
                    .is_none_or(|(r, m)| *r != reason || *m != msg)
                {
                    track
                        .events
                        .push(("Warning", "Failed".into(), format!("Error: {msg}")));
                }
                track.waiting = Some((reason, msg));
            }
        }
        Ok(())
    };
    // Init containers run one at a time, each to success, before the others start.
    let mut init_failed = false;
    let mut initialized = true;
    for c in pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s(c, "/name").to_string();
        let done = states
            .get(&name)
            .is_some_and(|st| st.status == Status::Exited && st.exit_code == Some(0));
        if done {
            continue;
        }
        initialized = false;
        let failed = states
            .get(&name)
            .is_some_and(|st| st.status == Status::Exited && st.exit_code != Some(0));
        if failed && policy == "Never" {
            init_failed = true;
            break;
        }
        step(&mut states, c, &|st: &ContainerState| {
            st.exit_code != Some(0)
        })?;
        break;
    }
    if initialized && !init_failed {
        for c in containers(pod) {
            step(&mut states, c, &|st: &ContainerState| {
                should_restart(&policy, st)
            })?;
        }
    }
    let mut list: Vec<ContainerState> = states.into_values().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((pod_ip, list))
}
